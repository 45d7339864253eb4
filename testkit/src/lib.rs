//! zonegate's test kit, shared by the integration tests (`tests/*.rs`) and the examples (bench,
//! soak, demo): it owns the plant in network namespaces ([`plant`]), the daemon launcher
//! ([`daemon`]), the BESS bench with its Python peers ([`bess`]), the management API client
//! ([`mgmt`]), audit log checks ([`audit`]), an rsyslog receiver ([`rsyslog`]), the kernel's
//! counters ([`nft`]) and Modbus frames ([`modbus`]).
//!
//! Dev-only: nothing in zonegate depends on it. The peers stay in `tests/peers/` and are found by
//! path from the workspace root ([`REPO`]); the zonegate binary is found next to the test or
//! example that runs ([`zonegate_bin`]).
#![allow(
    missing_debug_implementations,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod audit;
pub mod bess;
pub mod daemon;
pub mod mgmt;
pub mod modbus;
pub mod nft;
pub mod plant;
pub mod rsyslog;

use std::path::PathBuf;
use std::sync::LazyLock;

/// The workspace root (zonegate's repository): where zones.yaml, policies/, profiles/, schema/
/// and tests/peers/ are.
pub const REPO: &str = workspace_root(env!("CARGO_MANIFEST_DIR"));

/// `dir` without its last component (the kit's own directory, `testkit`).
const fn workspace_root(dir: &'static str) -> &'static str {
    let bytes = dir.as_bytes();
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] != b'/' {
        end -= 1;
    }
    let (root, _) = bytes.split_at(end.saturating_sub(1));
    match std::str::from_utf8(root) {
        Ok(root) => root,
        Err(_) => panic!("the kit's directory is not UTF-8"),
    }
}

/// The shipped example, which the kernel tests enforce as a user would.
pub fn shipped_zones() -> PathBuf {
    PathBuf::from(format!("{REPO}/zones.yaml"))
}

/// The zonegate binary the tests and examples run: `ZONEGATE_BIN` if set, otherwise the one
/// cargo built next to the running executable (`target/<profile>/zonegate` for a test in
/// `target/<profile>/deps/` or an example in `target/<profile>/examples/`), which is the binary
/// of the same build as the test (`cargo test` builds it for the integration tests).
pub fn zonegate_bin() -> &'static str {
    static BIN: LazyLock<String> = LazyLock::new(|| {
        if let Ok(bin) = std::env::var("ZONEGATE_BIN") {
            return bin;
        }
        let me = std::env::current_exe().expect("the running executable's path");
        let mut dir = me
            .parent()
            .expect("the executable's directory")
            .to_path_buf();
        if dir.ends_with("deps") || dir.ends_with("examples") {
            dir.pop();
        }
        let bin = dir.join("zonegate");
        assert!(
            bin.is_file(),
            "{} is missing: build it (cargo build --bin zonegate) or set ZONEGATE_BIN",
            bin.display()
        );
        bin.to_str().expect("a UTF-8 path").to_owned()
    });
    &BIN
}
