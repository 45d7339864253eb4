//! zonegate: IEC 62443 zones and conduits enforced on an industrial gateway.
//!
//! A request flows: nftables -> listener -> parser -> policy input -> decision -> forward or
//! refuse -> audit + metrics. This crate so far holds the model ([`config`]), its enforcement in
//! the kernel ([`nft`]) and its picture ([`diagram`]).

pub mod config;
pub mod diagram;
pub mod nft;
