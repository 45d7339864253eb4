//! nftables: the ruleset derived from the model ([`ruleset::render`], pure), its two renderings
//! ([`text`], [`json`]), and the kernel side: one atomic `nft -j -f -` transaction, read back to
//! verify, and the per-conduit counters. [`liveness`] keeps the kernel's "zonegate is up" signal
//! fresh, on which the ruleset's failure mode turns; [`quarantine`] adds a source to the
//! quarantine sets at runtime. [`droplog`] reads back what the ruleset's drop-log rules send
//! (the packets it drops), as typed records the daemon turns into audit events.

pub mod droplog;
pub mod json;
pub mod liveness;
pub mod quarantine;
pub mod ruleset;
pub mod text;

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

pub use ruleset::{Liveness, Quarantined, Ruleset, TABLE, early_block, render};

/// Largest `nft` output we parse (a listing of our own table is kilobytes).
const MAX_NFT_OUTPUT: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the kernel refused the ruleset; the previous ruleset stays in force:\n{stderr}")]
    Refused { stderr: String },
    #[error("`nft {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("cannot read `nft` output: {0}")]
    Output(String),
    #[error("the ruleset read back from the kernel differs from the one applied: {0}")]
    Verify(String),
    #[error("cannot encode the ruleset as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A named counter as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Replaces table `inet zonegate` in one transaction, then reads it back and checks that the
/// kernel holds what was sent. On any error from the kernel nothing has changed.
pub fn apply(rs: &Ruleset) -> Result<(), NftError> {
    let doc = serde_json::to_vec(&json::transaction(rs)?)?;
    match run_nft(&["-j", "-f", "-"], Some(&doc)) {
        Ok(_) => verify(rs),
        Err(NftError::Command { stderr, .. }) => {
            // nft's JSON parser reports errors without saying where; a dry run of the same ruleset
            // as text points at the offending line and object.
            let detail = match run_nft(&["-c", "-f", "-"], Some(text::render(rs).as_bytes())) {
                Err(NftError::Command {
                    stderr: text_err, ..
                }) => {
                    format!("{stderr}\nthe same ruleset as text (zonegate plan) says:\n{text_err}")
                }
                _ => stderr,
            };
            Err(NftError::Refused { stderr: detail })
        }
        Err(other) => Err(other),
    }
}

/// Removes table `inet zonegate` (and with it every rule zonegate installed).
pub fn remove() -> Result<(), NftError> {
    let doc = br#"{"nftables":[{"add":{"table":{"family":"inet","name":"zonegate"}}},{"delete":{"table":{"family":"inet","name":"zonegate"}}}]}"#;
    run_nft(&["-j", "-f", "-"], Some(doc)).map(|_| ())
}

/// The table as the kernel lists it, in `nft` text.
pub fn list_text() -> Result<String, NftError> {
    run_nft(&["list", "table", "inet", TABLE], None)
}

/// Reads the table back and compares its structure with what was applied: chains with their hooks
/// and policies, counters, sets, and every rule (by its comment) in order.
pub fn verify(rs: &Ruleset) -> Result<(), NftError> {
    let listing = list_json()?;
    let mut chains: Vec<(String, String, String, Vec<String>)> = Vec::new();
    let mut counters = Vec::new();
    let mut sets = Vec::new();
    for obj in objects(&listing)? {
        if let Some(c) = obj.get("chain") {
            chains.push((
                str_field(c, "name"),
                str_field(c, "hook"),
                str_field(c, "policy"),
                Vec::new(),
            ));
        } else if let Some(r) = obj.get("rule") {
            let chain = str_field(r, "chain");
            if let Some(entry) = chains.iter_mut().find(|c| c.0 == chain) {
                entry.3.push(str_field(r, "comment"));
            } else {
                return Err(NftError::Verify(format!("rule in unknown chain `{chain}`")));
            }
        } else if let Some(c) = obj.get("counter") {
            counters.push(str_field(c, "name"));
        } else if let Some(s) = obj.get("set") {
            sets.push(str_field(s, "name"));
        }
    }
    let expected_chains: Vec<(String, String, String, Vec<String>)> = rs
        .chains
        .iter()
        .map(|c| {
            (
                c.name.to_owned(),
                format!("{:?}", c.hook).to_lowercase(),
                format!("{:?}", c.policy).to_lowercase(),
                c.rules.iter().map(|r| r.comment.clone()).collect(),
            )
        })
        .collect();
    if chains != expected_chains {
        return Err(NftError::Verify(format!(
            "chains: expected {expected_chains:?}, kernel has {chains:?}"
        )));
    }
    counters.sort();
    let mut expected_counters = rs.counters.clone();
    expected_counters.sort();
    if counters != expected_counters {
        return Err(NftError::Verify(format!(
            "counters: expected {expected_counters:?}, kernel has {counters:?}"
        )));
    }
    sets.sort();
    let mut expected_sets: Vec<String> = rs.sets.iter().map(|s| s.name.clone()).collect();
    if rs.liveness.is_some() {
        expected_sets.push(ruleset::ALIVE_SET.to_owned());
    }
    if rs.quarantine.is_some() {
        expected_sets.extend([ruleset::QUARANTINE_V4, ruleset::QUARANTINE_V6].map(String::from));
    }
    expected_sets.sort();
    if sets != expected_sets {
        return Err(NftError::Verify(format!(
            "sets: expected {expected_sets:?}, kernel has {sets:?}"
        )));
    }
    Ok(())
}

/// Current values of every named counter in the table.
pub fn counters() -> Result<Vec<CounterValue>, NftError> {
    let listing = run_nft(&["-j", "list", "counters", "table", "inet", TABLE], None)?;
    let doc = parse(&listing)?;
    let mut out = Vec::new();
    for obj in objects(&doc)? {
        if let Some(c) = obj.get("counter") {
            out.push(CounterValue {
                name: str_field(c, "name"),
                packets: c.get("packets").and_then(Value::as_u64).unwrap_or(0),
                bytes: c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

fn list_json() -> Result<Value, NftError> {
    parse(&run_nft(&["-j", "list", "table", "inet", TABLE], None)?)
}

fn parse(text: &str) -> Result<Value, NftError> {
    serde_json::from_str(text).map_err(|e| NftError::Output(e.to_string()))
}

fn objects(doc: &Value) -> Result<&Vec<Value>, NftError> {
    doc.get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Output("no `nftables` array in the listing".into()))
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Runs `nft` with captured stdout and stderr; stderr is the error a user needs to see.
fn run_nft(args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    if out.stdout.len() > MAX_NFT_OUTPUT {
        return Err(NftError::Output(format!(
            "more than {MAX_NFT_OUTPUT} bytes"
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| NftError::Output(e.to_string()))
}
