//! Rego policy: one compiled policy per `.rego` file, evaluated by regorus's interpreter, one per
//! policy and worker thread ([`Policy::decide`]), returning [`Decision::Allow`] or
//! [`Decision::Deny`].
//!
//! Not by regorus's bytecode VM (RVM), although it is 3-4x faster: the VM of regorus 0.14.1
//! evaluates some Rego towards "defined" (below), so a policy could allow there what it denies,
//! and a gateway must not fail open. The proxy's per-connection decision cache makes up for most
//! of the difference. Policies are still compiled for the VM and cross-checked against it, so
//! that they keep their meaning when a fixed regorus lets the gateway switch.
//!
//! A policy is a `.rego` file whose package `P` defines one rule `decision`; the gateway
//! evaluates `data.P.decision` for every inspected request. The decision is an object
//! `{"allow": bool, "reason": string, "rule": string}` (`reason` defaults to `""`, `rule` to
//! `"default"`). Anything else fails closed: an evaluation error, an exceeded budget, an
//! undefined decision, or one without a boolean `allow` is a [`Decision::Deny`] whose reason says
//! so, under one of the `RULE_*` rule names of this module.
//!
//! `decision` must be defined by one rule (a `default decision := ...` may come with it): use
//! `else` for alternatives, so that the first matching clause decides. The interpreter refuses
//! conflicting definitions at evaluation time, but the RVM does not report them, so a policy with
//! two `decision` rules is refused when it is loaded.
//!
//! The VM of regorus 0.14.1 evaluates some Rego differently from the interpreter, always towards
//! "defined" (`x := undefined` does not stop a body when `x` is not used again; an undefined
//! expression in `every` can count as true; comprehensions collect undefined elements).
//! `zonegate policy test` has the VM decide every input the tests give a policy and fails tests
//! where it disagrees with the interpreter ([`run_tests`]); `policies/README.md` tells policy
//! authors what to avoid.
//!
//! # The Modbus policy input
//!
//! [`ConnectionInput::modbus_input`] builds it; policies read it as `input`:
//!
//! ```json
//! {
//!   "conduit": "scada-bess",
//!   "mode": "enforce",
//!   "source": {"address": "10.30.0.10", "zone": "operations", "asset": "scada", "kind": "scada"},
//!   "destination": {"address": "10.21.0.11", "port": 502, "zone": "bess", "asset": "inverter-1", "kind": "bess-inverter"},
//!   "modbus": {
//!     "unit_id": 1,
//!     "function": {"code": 16, "name": "write_multiple_registers"},
//!     "access": "write",
//!     "table": "holding_registers",
//!     "address": 100,
//!     "quantity": 2,
//!     "values": [0, 15000],
//!     "registers": [{"name": "active_power_setpoint", "address": 100, "type": "i32", "raw": [0, 15000], "value": 1500.0, "unit": "kW"}],
//!     "unmapped": [],
//!     "partial": []
//!   }
//! }
//! ```
//!
//! - `source.asset`/`kind` (and `destination.asset`/`kind`) are absent when the address is not a
//!   named asset of zones.yaml. `destination.port` is the TCP port the client connected to.
//! - `function.name` is snake_case: `read_coils`, `read_discrete_inputs`,
//!   `read_holding_registers`, `read_input_registers`, `write_single_coil`,
//!   `write_single_register`, `read_exception_status`, `diagnostics`, `get_comm_event_counter`,
//!   `get_comm_event_log`, `write_multiple_coils`, `write_multiple_registers`,
//!   `report_server_id`, `read_file_record`, `write_file_record`, `mask_write_register`,
//!   `read_write_multiple_registers`, `read_fifo_queue`, `read_device_identification` and
//!   `canopen_general_reference` (0x2B by MEI type), `unknown`.
//! - `access` is `read`, `write`, `diagnostic` (0x07, 0x08, 0x0B, 0x0C, 0x11, 0x2B/0x0E) or
//!   `other`.
//! - `table` (`coils`, `discrete_inputs`, `holding_registers`, `input_registers`), `address`
//!   and `quantity` are present where the function addresses a table; for 0x17 they describe the
//!   write, and `read_address`/`read_quantity` the read.
//! - `values` is present for writes of values: numbers 0..65535 for registers, booleans for coils.
//! - `registers`, `unmapped` and `partial` are present for writes to a table of a device that has
//!   a register map ([`RegisterMap`]): the named values written (`value` after `scale`; a NaN or
//!   infinite f32 is `null`), the addresses written that the map does not name, and the names
//!   of values only partly written. 0x16 Mask Write Register lists its register in `partial`
//!   (the value it leaves cannot be known). A write without `registers` (no map, or 0x15 Write
//!   File Record) can name nothing, and policies must refuse it.
//! - Extra fields: `sub_function` (0x08), `mei_type` (0x2B), `and_mask`/`or_mask` (0x16).

mod input;
mod keys;
pub mod opcua;
pub mod registers;
mod testing;

use std::cell::RefCell;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::VmError;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine, Value};

pub use input::{ConnectionInput, Peer, decode};
pub use registers::{DecodedRegister, DecodedWrite, ProfileProblem, RegisterMap};
pub use testing::{TestOutcome, TestResult, TestRun, run_tests};

/// Most VM instructions one decision may execute. The shipped policies need a few hundred for a
/// typical request; a policy that loops over large ranges stops here and denies.
pub const MAX_POLICY_STEPS: usize = 100_000;
/// Most wall-clock time one decision may take, checked every [`TIME_CHECK_INTERVAL`] instructions
/// (a single builtin call is not interrupted).
pub const MAX_POLICY_TIME: Duration = Duration::from_millis(50);
/// Instructions between checks of [`MAX_POLICY_TIME`].
pub const TIME_CHECK_INTERVAL: u32 = 1024;
/// Largest policy file we read.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Rule name of the deny when evaluation exceeded [`MAX_POLICY_STEPS`] or [`MAX_POLICY_TIME`].
pub const RULE_BUDGET: &str = "zonegate.policy.budget";
/// Rule name of the deny when evaluation failed.
pub const RULE_ERROR: &str = "zonegate.policy.error";
/// Rule name of the deny when the decision was undefined.
pub const RULE_UNDEFINED: &str = "zonegate.policy.undefined";
/// Rule name of the deny when the decision was not an object with a boolean `allow`.
pub const RULE_MALFORMED: &str = "zonegate.policy.malformed";
/// Reason of the deny when evaluation exceeded its budget.
pub const REASON_BUDGET: &str = "policy evaluation exceeded its budget";

/// Name of the rule every policy defines.
pub const DECISION_RULE: &str = "decision";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {size} bytes is larger than the {limit}-byte limit", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// A Rego syntax or compile error; `line`/`column` are 1-based, 0 when regorus gave none.
    #[error("{}", RegoReport { file, line: *line, column: *column, message, snippet })]
    Rego {
        file: String,
        line: u32,
        column: u32,
        message: String,
        /// regorus's excerpt of the source with a caret, if any.
        snippet: String,
    },
    /// A register map (device profile) that is not valid YAML or not consistent.
    #[error("{}", ProfileReport { file, problems })]
    Profile {
        file: String,
        problems: Vec<ProfileProblem>,
    },
    /// `zonegate policy test` found no policy files, or no tests.
    #[error("{0}")]
    Tests(String),
}

struct RegoReport<'a> {
    file: &'a str,
    line: u32,
    column: u32,
    message: &'a str,
    snippet: &'a str,
}

impl fmt::Display for RegoReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": error: {}", self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

struct ProfileReport<'a> {
    file: &'a str,
    problems: &'a [ProfileProblem],
}

impl fmt::Display for ProfileReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{p}", self.file)?;
        }
        Ok(())
    }
}

/// Turns a regorus error ("\n--> FILE:LINE:COL\n  |\n6 | text\n  | ^\nerror: MESSAGE") into
/// [`PolicyError::Rego`]; `file` is used when the text names none.
fn rego_error(file: &str, e: &anyhow::Error) -> PolicyError {
    let text = e.to_string();
    let mut at = None;
    let mut message = None;
    let mut snippet = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.trim_start().strip_prefix("--> ") {
            let mut parts = rest.rsplitn(3, ':');
            let column = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
            let line = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
            if let (Some(column), Some(line), Some(f)) = (column, line, parts.next()) {
                at = Some((f.to_owned(), line, column));
            }
        } else if let Some(m) = l.strip_prefix("error: ") {
            message = Some(m.trim().to_owned());
        } else if at.is_some() && message.is_none() && !l.trim().is_empty() {
            snippet.push(l);
        }
    }
    match (at, message) {
        (Some((f, line, column)), Some(message)) => PolicyError::Rego {
            file: f,
            line,
            column,
            message,
            snippet: snippet.join("\n"),
        },
        _ => PolicyError::Rego {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: text.trim().lines().collect::<Vec<_>>().join(" "),
            snippet: String::new(),
        },
    }
}

fn invalid(file: &str, message: String) -> PolicyError {
    PolicyError::Rego {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message,
        snippet: String::new(),
    }
}

/// Reads a UTF-8 file of at most `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<String, PolicyError> {
    let read = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > limit {
        return Err(PolicyError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { rule: String },
    Deny { reason: String, rule: String },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    pub fn rule(&self) -> &str {
        match self {
            Decision::Allow { rule } | Decision::Deny { rule, .. } => rule,
        }
    }

    fn deny(reason: impl Into<String>, rule: &str) -> Decision {
        Decision::Deny {
            reason: reason.into(),
            rule: rule.to_owned(),
        }
    }

    /// Reads a decision document; anything but an object with a boolean `allow` and, where
    /// present, string `reason` and `rule` is a deny.
    fn from_value(v: &Value) -> Decision {
        let k = keys::keys();
        let o = match v {
            Value::Object(o) => o,
            Value::Undefined => {
                return Decision::deny("policy decision is undefined", RULE_UNDEFINED);
            }
            other => {
                return Decision::deny(
                    format!("policy decision is not an object: {other}"),
                    RULE_MALFORMED,
                );
            }
        };
        let Some(Value::Bool(allow)) = o.get(&k.allow) else {
            return Decision::deny("policy decision has no boolean `allow`", RULE_MALFORMED);
        };
        let rule = match o.get(&k.rule) {
            None => "default".to_owned(),
            Some(Value::String(s)) => s.to_string(),
            Some(_) => {
                return Decision::deny("policy decision has a non-string `rule`", RULE_MALFORMED);
            }
        };
        if *allow {
            // A malformed reason does not matter for an allow; `rule` is what gets audited.
            return Decision::Allow { rule };
        }
        let reason = match o.get(&k.reason) {
            None => String::new(),
            Some(Value::String(s)) => s.to_string(),
            Some(other) => other.to_string(),
        };
        Decision::Deny { reason, rule }
    }
}

/// A policy's revision: the hex SHA-256 of its source, as audit events and `/status` name it.
pub fn revision(source: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(source)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One compiled policy (one .rego file, package P); decisions come from `data.P.decision`.
/// Cheap to clone: clones share the compiled program.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

struct Inner {
    /// Wall-clock budget of one decision.
    time: Duration,
    name: String,
    package: String,
    revision: String,
    entry: String,
    compiled: CompiledPolicy,
    program: Arc<Program>,
    /// The interpreter, for [`Policy::interpreter`].
    engine: Engine,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.inner.name)
            .field("package", &self.inner.package)
            .field("revision", &self.inner.revision)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads and compiles a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Self::load_with_time(path, MAX_POLICY_TIME)
    }

    /// Reads and compiles a policy file whose decisions may take at most `time` each
    /// (`limits.policy_time`); a slower one is a deny.
    pub fn load_with_time(path: &Path, time: Duration) -> Result<Policy, PolicyError> {
        let source = read_limited(path, MAX_POLICY_BYTES)?;
        Self::from_source_with_time(&path.display().to_string(), &source, time)
    }

    /// Compiles policy text; `name` is the file name errors carry.
    pub fn from_source(name: &str, source: &str) -> Result<Policy, PolicyError> {
        Self::from_source_with_time(name, source, MAX_POLICY_TIME)
    }

    /// [`Policy::from_source`] with a time budget per decision other than [`MAX_POLICY_TIME`].
    pub fn from_source_with_time(
        name: &str,
        source: &str,
        time: Duration,
    ) -> Result<Policy, PolicyError> {
        let mut engine = Engine::new();
        let package = engine
            .add_policy(name.to_owned(), source.to_owned())
            .map_err(|e| rego_error(name, &e))?;
        let package = package.strip_prefix("data.").unwrap_or(&package).to_owned();
        let declared = engine
            .has_declared_rule_rooted_at(name, DECISION_RULE)
            .map_err(|e| rego_error(name, &e))?;
        if !declared {
            return Err(invalid(
                name,
                format!("package {package} has no `{DECISION_RULE}` rule"),
            ));
        }
        let entry = format!("data.{package}.{DECISION_RULE}");
        let entry_rc: regorus::Rc<str> = regorus::Rc::from(entry.as_str());
        let compiled = engine
            .compile_with_entrypoint(&entry_rc)
            .map_err(|e| rego_error(name, &e))?;
        let definitions = compiled.get_rules().get(&entry).map_or(0, Vec::len);
        if definitions != 1 {
            return Err(invalid(
                name,
                format!(
                    "`{DECISION_RULE}` is defined by {definitions} rules; define it once and use `else` for alternatives (conflicting definitions would go unnoticed by the VM)"
                ),
            ));
        }
        let program = Compiler::compile_from_policy(&compiled, &[entry.as_str()])
            .map_err(|e| rego_error(name, &anyhow::Error::msg(e.to_string())))?;
        let mut engine_for_eval = engine;
        engine_for_eval.set_execution_timer_config(timer_config(time));
        let policy = Policy {
            inner: Arc::new(Inner {
                time,
                name: name.to_owned(),
                package,
                revision: revision(source.as_bytes()),
                entry,
                compiled,
                program,
                engine: engine_for_eval,
            }),
        };
        // The VM must accept the program as it will for every worker.
        if let Backend::Broken(message) = policy.vm().backend {
            return Err(invalid(name, message));
        }
        Ok(policy)
    }

    /// The file name (or the name given to [`Policy::from_source`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The package, without `data.` (e.g. `zonegate.bess`).
    pub fn package(&self) -> &str {
        &self.inner.package
    }

    /// A hex SHA-256 of the source: the policy revision audit events carry.
    pub fn revision(&self) -> &str {
        &self.inner.revision
    }

    /// The gateway's decision on `input`: regorus's interpreter, one per policy and worker
    /// thread, made on the thread's first decision and kept while the policy lives (the
    /// interpreter needs `&mut` to evaluate, and one warm copy per thread beats one per
    /// connection in both time and memory).
    pub fn decide(&self, input: Value) -> Decision {
        WORKER_INTERPRETERS.with(|cell| {
            let Ok(mut mine) = cell.try_borrow_mut() else {
                // Not reachable (deciding never re-enters), but never worth a panic.
                return self.interpreter().decide(input);
            };
            let here = Arc::as_ptr(&self.inner);
            // Holding a `Weak` keeps the allocation, so an equal pointer is this policy.
            if let Some((_, evaluator)) = mine.iter_mut().find(|(w, _)| w.as_ptr() == here) {
                return evaluator.decide(input);
            }
            // Policies replaced by a reload are gone: drop their interpreters now.
            mine.retain(|(w, _)| w.strong_count() > 0);
            let mut evaluator = self.interpreter();
            let decision = evaluator.decide(input);
            mine.push((Arc::downgrade(&self.inner), evaluator));
            decision
        })
    }

    /// A VM for one worker or connection; cheap (a few allocations, no compilation).
    pub fn vm(&self) -> Evaluator {
        let mut vm = RegoVM::new_with_policy(self.inner.compiled.clone());
        vm.load_program(self.inner.program.clone());
        vm.set_max_instructions(MAX_POLICY_STEPS);
        vm.set_execution_timer_config(Some(timer_config(self.inner.time)));
        let backend = match vm.set_data(Value::new_object()) {
            Ok(()) => Backend::Vm(Box::new(vm)),
            Err(e) => Backend::Broken(format!("policy VM refused its data: {e}")),
        };
        Evaluator {
            backend,
            entry: self.inner.entry.clone(),
        }
    }

    /// An evaluator on regorus's tree-walking interpreter instead of the VM: same decisions,
    /// about 4x slower, and only a time budget ([`MAX_POLICY_TIME`]). For cross-checking the VM.
    pub fn interpreter(&self) -> Evaluator {
        Evaluator {
            backend: Backend::Interpreter(Box::new(self.inner.engine.clone())),
            entry: self.inner.entry.clone(),
        }
    }
}

thread_local! {
    /// [`Policy::decide`]'s interpreters on this thread, by policy.
    static WORKER_INTERPRETERS: RefCell<Vec<(Weak<Inner>, Evaluator)>> = const { RefCell::new(Vec::new()) };
}

fn timer_config(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(TIME_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    }
}

/// Evaluates one policy; one per worker or connection (evaluation needs `&mut`).
pub struct Evaluator {
    backend: Backend,
    entry: String,
}

enum Backend {
    Vm(Box<RegoVM>),
    Interpreter(Box<Engine>),
    /// The VM could not be set up; every decision is a deny saying why.
    Broken(String),
}

impl fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            Backend::Vm(_) => "vm",
            Backend::Interpreter(_) => "interpreter",
            Backend::Broken(_) => "broken",
        };
        f.debug_struct("Evaluator")
            .field("entry", &self.entry)
            .field("backend", &backend)
            .finish()
    }
}

impl Evaluator {
    /// Never fails open: an evaluation error, an exceeded budget, an undefined decision or one
    /// without a boolean `allow` is a Deny whose reason says so.
    pub fn decide(&mut self, input: Value) -> Decision {
        match &mut self.backend {
            Backend::Vm(vm) => {
                vm.set_input(input);
                let result = vm.execute_entry_point_by_index(0);
                // Do not keep the request alive in the VM until the next one.
                vm.set_input(Value::Undefined);
                match result {
                    Ok(v) => Decision::from_value(&v),
                    Err(
                        VmError::InstructionLimitExceeded { .. }
                        | VmError::TimeLimitExceeded { .. },
                    ) => Decision::deny(REASON_BUDGET, RULE_BUDGET),
                    Err(e) => Decision::deny(format!("policy evaluation failed: {e}"), RULE_ERROR),
                }
            }
            Backend::Interpreter(engine) => {
                engine.set_input(input);
                let result = engine.eval_rule(self.entry.clone());
                engine.set_input(Value::Undefined);
                match result {
                    Ok(v) => Decision::from_value(&v),
                    Err(e) if e.to_string().contains("exceeded time limit") => {
                        Decision::deny(REASON_BUDGET, RULE_BUDGET)
                    }
                    Err(e) => Decision::deny(
                        format!("policy evaluation failed: {}", one_line(&e)),
                        RULE_ERROR,
                    ),
                }
            }
            Backend::Broken(message) => Decision::deny(message.clone(), RULE_ERROR),
        }
    }
}

/// A regorus error as one line: "FILE:LINE:COL: MESSAGE".
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    match rego_error("", e) {
        PolicyError::Rego {
            file,
            line,
            column,
            message,
            ..
        } if line > 0 => format!("{file}:{line}:{column}: {message}"),
        PolicyError::Rego { message, .. } => message,
        other => other.to_string(),
    }
}

/// `Policy` is shared between workers; each worker owns its `Evaluator`.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn owned<T: Send>() {}
    shared::<Policy>();
    owned::<Evaluator>();
};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn deny_reason(d: &Decision) -> &str {
        match d {
            Decision::Deny { reason, .. } => reason,
            Decision::Allow { .. } => panic!("allowed: {d:?}"),
        }
    }

    #[test]
    fn policy_evaluates_on_vm_and_interpreter_alike() {
        let p = Policy::from_source(
            "t.rego",
            "package t\nimport rego.v1\n\ndefault decision := {\"allow\": false, \"reason\": \"no\"}\n\ndecision := {\"allow\": true, \"rule\": \"t.yes\"} if input.x == 1\n",
        )
        .unwrap();
        assert_eq!(p.package(), "t");
        assert_eq!(p.revision().len(), 64);
        for mut e in [p.vm(), p.interpreter()] {
            let yes = e.decide(Value::from_json_str(r#"{"x": 1}"#).unwrap());
            assert_eq!(
                yes,
                Decision::Allow {
                    rule: "t.yes".into()
                }
            );
            let no = e.decide(Value::from_json_str(r#"{"x": 2}"#).unwrap());
            assert_eq!(
                no,
                Decision::Deny {
                    reason: "no".into(),
                    rule: "default".into()
                }
            );
        }
    }

    #[test]
    fn each_policy_decides_with_its_own_worker_interpreter() {
        let source = |allow: bool| {
            format!(
                "package t\nimport rego.v1\ndecision := {{\"allow\": {allow}, \"rule\": \"r{allow}\"}}\n"
            )
        };
        let input = || Value::new_object();
        let yes = Policy::from_source("yes.rego", &source(true)).unwrap();
        let no = Policy::from_source("no.rego", &source(false)).unwrap();
        for _ in 0..3 {
            assert!(yes.decide(input()).is_allow());
            assert!(!no.decide(input()).is_allow());
        }
        // A reload replaces a policy: the new one must not inherit the old one's interpreter.
        drop(yes);
        let replaced = Policy::from_source("yes.rego", &source(false)).unwrap();
        assert_eq!(replaced.decide(input()).rule(), "rfalse");
        // Another thread has interpreters of its own.
        let on_worker = std::thread::spawn(move || replaced.decide(input()).rule().to_owned());
        assert_eq!(on_worker.join().unwrap(), "rfalse");
    }

    #[test]
    fn fails_closed() {
        let undefined = Policy::from_source(
            "u.rego",
            "package u\nimport rego.v1\ndecision := {\"allow\": true} if input.x == 1\n",
        )
        .unwrap();
        let d = undefined.vm().decide(Value::new_object());
        assert_eq!(deny_reason(&d), "policy decision is undefined");
        assert_eq!(d.rule(), RULE_UNDEFINED);

        let no_bool = Policy::from_source(
            "b.rego",
            "package b\nimport rego.v1\ndecision := {\"allow\": \"yes\"}\n",
        )
        .unwrap();
        let d = no_bool.vm().decide(Value::new_object());
        assert_eq!(deny_reason(&d), "policy decision has no boolean `allow`");
        let d = no_bool.interpreter().decide(Value::new_object());
        assert_eq!(deny_reason(&d), "policy decision has no boolean `allow`");

        let runaway = Policy::from_source(
            "r.rego",
            "package r\nimport rego.v1\ndecision := {\"allow\": true} if {\n  count([x | some x in numbers.range(1, 200000); x > 0]) > 1\n}\n",
        )
        .unwrap();
        let d = runaway.vm().decide(Value::new_object());
        assert_eq!(deny_reason(&d), REASON_BUDGET);
        assert_eq!(d.rule(), RULE_BUDGET);
    }

    #[test]
    fn load_errors_name_file_and_line() {
        let e = Policy::from_source("bad.rego", "package bad\nimport rego.v1\n\ndecision := {\n")
            .unwrap_err();
        let PolicyError::Rego { file, line, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(file, "bad.rego");
        assert!(*line >= 4, "{e}");
        assert!(e.to_string().starts_with("bad.rego:"), "{e}");

        let e = Policy::from_source("n.rego", "package n\nimport rego.v1\nallow := true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `decision` rule"), "{e}");

        let e = Policy::from_source(
            "two.rego",
            "package two\nimport rego.v1\ndecision := {\"allow\": false} if input.a\ndecision := {\"allow\": true} if input.b\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("defined by 2 rules"), "{e}");

        let e = Policy::from_source(
            "with.rego",
            "package w\nimport rego.v1\nd := input.a\ndecision := {\"allow\": x} if {\n  x := d with input as {\"a\": true}\n}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("with.rego:5:"), "{e}");
    }
}
