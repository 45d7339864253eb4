//! Audit events as a SOC tool would take them: every event the tests read is checked against
//! the published JSON Schema (schema/audit-event.schema.json), and whole logs against the hash
//! chain with `zonegate audit verify`.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::zonegate_bin;

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text =
            std::fs::read_to_string(format!("{}/schema/audit-event.schema.json", crate::REPO))
                .unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

/// Panics naming every way `event` breaks the schema.
pub fn assert_valid(event: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "audit event does not match schema/audit-event.schema.json:\n{}\nevent: {event:#}",
        errors.join("\n")
    );
}

/// The complete lines of a log that may still be written to.
fn complete_lines(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.rfind('\n') {
        Some(end) => text[..=end].to_owned(),
        None => String::new(),
    }
}

/// Every event in an audit log, each checked against the schema.
pub fn events(path: &Path) -> Vec<Value> {
    complete_lines(path)
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l)
                .unwrap_or_else(|err| panic!("audit line is not JSON ({err}): {l}"));
            assert_valid(&e);
            e
        })
        .collect()
}

/// Waits until the log holds an event matching `pred` (the writer is asynchronous); panics
/// with the log after 5 s.
pub fn wait_for_event(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = events(path).into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no audit event: {what}; log:\n{:#?}",
            events(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `zonegate audit verify` on the log's complete lines (and its rotated files): the chain holds.
/// The log may still be written to: it need not end at a stop checkpoint.
pub fn assert_chain_intact(path: &Path) {
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), complete_lines(path)).unwrap();
    let out = std::process::Command::new(zonegate_bin())
        .args(["audit", "verify", "--allow-open-end"])
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed on {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a test does with its log when it is done: every event valid, the chain intact.
pub fn check_log(path: &Path) {
    if std::thread::panicking() || !path.exists() {
        return;
    }
    let events = events(path);
    // A keyed chain needs its key: the test that made it checks it.
    if events
        .first()
        .is_some_and(|e| e["zonegate"]["chain"]["alg"] == "sha256")
    {
        assert_chain_intact(path);
    }
}
