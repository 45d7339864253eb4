//! zonegate: IEC 62443 zones and conduits enforced on an industrial gateway.
//!
//! A request flows: nftables -> listener -> parser -> policy input -> decision -> forward or
//! refuse -> audit + metrics. This crate so far holds the model ([`config`]), its enforcement in
//! the kernel ([`nft`]) kept in force by the daemon ([`control`]), and its picture ([`diagram`]).

pub mod audit;
pub mod config;
pub mod control;
pub mod diagram;
pub mod nft;
pub mod policy;
pub mod proto;
pub mod proxy;

/// Entry points for the `fuzz/` targets: each is the whole path that untrusted input takes.
#[doc(hidden)]
pub mod fuzz {
    /// zones.yaml text through validation and, when valid, every rendering of it.
    pub fn zones_yaml(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(model) = crate::config::parse(text) {
            let rs = crate::nft::render(&model);
            let _ = crate::nft::text::render(&rs);
            let _ = serde_json::to_vec(&crate::nft::json::transaction(&rs));
            let _ = crate::diagram::mermaid(&model);
            let _ = model.warnings();
        }
    }
}
