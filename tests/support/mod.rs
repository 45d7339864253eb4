//! Shared by the integration tests: namespaces, probes, the zonegate binary.
#![allow(
    dead_code,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod audit;
pub mod bess;
pub mod mgmt;
pub mod plant;
pub mod rsyslog;

use std::path::PathBuf;

/// The shipped example, which the kernel tests enforce as a user would.
pub fn shipped_zones() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/zones.yaml"))
}

pub const ZONEGATE: &str = env!("CARGO_BIN_EXE_zonegate");
