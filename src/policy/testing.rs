//! `zonegate policy test`: Rego unit tests without OPA.
//!
//! regorus has no test runner, so this is one: every `*.rego` file under the given paths is
//! loaded into one engine (policies and tests together; their packages differ), each `test_*`
//! rule head of a `*_test.rego` file is evaluated as `data.<package>.<rule>` by the interpreter
//! (the VM does not support `with`), and a test passes iff it evaluates to `true`. Every policy
//! file that declares `decision` is also loaded the way the gateway loads it ([`Policy`]), so a
//! policy that would not load fails here, not in production.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regorus::{Engine, Value};

use super::{Decision, MAX_POLICY_BYTES, Policy, PolicyError, one_line, read_limited, rego_error};

/// Time one test may take before it fails.
pub const MAX_TEST_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The result of one test rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// `package.test_name`, package without `data.`.
    pub name: String,
    pub outcome: TestOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Pass,
    /// Why: "false", "undefined", "error: ...", or "not a boolean: ...".
    Fail(String),
}

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            TestOutcome::Pass => write!(f, "PASS {}", self.name),
            TestOutcome::Fail(reason) => write!(f, "FAIL {} (reason: {reason})", self.name),
        }
    }
}

/// Everything a test run found.
#[derive(Debug, Default)]
pub struct TestRun {
    /// Files that could not be read, parsed or compiled, and "nothing to test".
    pub errors: Vec<PolicyError>,
    pub results: Vec<TestResult>,
}

impl TestRun {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == TestOutcome::Pass)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.results.len().saturating_sub(self.passed())
    }

    /// True iff every test passed and nothing failed to load.
    pub fn success(&self) -> bool {
        self.errors.is_empty() && self.failed() == 0
    }

    /// "N passed, M failed" (plus load errors, if any).
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if !self.errors.is_empty() {
            let n = self.errors.len();
            s.push_str(&format!(", {n} error{}", if n == 1 { "" } else { "s" }));
        }
        s
    }
}

/// Loads every `*.rego` under `paths` (files or directories, recursively) and runs the tests.
pub fn run_tests(paths: &[PathBuf]) -> TestRun {
    let mut run = TestRun::default();
    let mut files = Vec::new();
    for p in paths {
        if let Err(e) = collect(p, &mut files) {
            run.errors.push(e);
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        if run.errors.is_empty() {
            run.errors
                .push(PolicyError::Tests("no *.rego files found".into()));
        }
        return run;
    }

    let mut engine = Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: MAX_TEST_TIME,
        check_interval: std::num::NonZeroU32::new(super::TIME_CHECK_INTERVAL)
            .unwrap_or(std::num::NonZeroU32::MIN),
    });
    let disagreements: Arc<Mutex<Vec<String>>> = Arc::default();
    // (name, source, package) of the files that loaded.
    let mut loaded = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let source = match read_limited(path, MAX_POLICY_BYTES) {
            Ok(s) => s,
            Err(e) => {
                run.errors.push(e);
                continue;
            }
        };
        let mut text = source.clone();
        if !is_test_file(&name) && declares_decision(&name, &source) {
            // Loaded alone and compiled for the VM, as the gateway loads it; then, for the tests,
            // wrapped so that the VM decides every input the tests give it too.
            match Policy::from_source(&name, &source) {
                Err(e) => run.errors.push(e),
                Ok(policy) => {
                    let function = format!("zonegate_vm_decision_{}", loaded.len());
                    match cross_checked(&source, &function) {
                        Some(wrapped) => {
                            let added = engine.add_extension(
                                function,
                                2,
                                Box::new(vm_check(policy, disagreements.clone())),
                            );
                            match added {
                                Ok(()) => text = wrapped,
                                Err(e) => run.errors.push(rego_error(&name, &e)),
                            }
                        }
                        None => run.errors.push(super::invalid(
                            &name,
                            "cannot cross-check the VM: start the `decision` rule's head (and \
                             `default decision`) at the beginning of a line"
                                .into(),
                        )),
                    }
                }
            }
        }
        match engine.add_policy(name.clone(), text) {
            Ok(package) => {
                let package = package.strip_prefix("data.").unwrap_or(&package).to_owned();
                loaded.push((name, source, package));
            }
            Err(e) => run.errors.push(rego_error(&name, &e)),
        }
    }

    for (name, source, package) in &loaded {
        if !is_test_file(name) {
            continue;
        }
        for test in test_rule_names(source) {
            let result = engine.eval_rule(format!("data.{package}.{test}"));
            let disagreement = disagreements
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default();
            let outcome = match result {
                _ if !disagreement.is_empty() => TestOutcome::Fail(format!(
                    "regorus's VM and interpreter disagree: {}",
                    disagreement.join("; ")
                )),
                Ok(Value::Bool(true)) => TestOutcome::Pass,
                Ok(Value::Bool(false)) => TestOutcome::Fail("false".into()),
                Ok(Value::Undefined) => TestOutcome::Fail("undefined".into()),
                Ok(other) => TestOutcome::Fail(format!("not a boolean: {other}")),
                Err(e) => TestOutcome::Fail(format!("error: {}", one_line(&e))),
            };
            run.results.push(TestResult {
                name: format!("{package}.{test}"),
                outcome,
            });
        }
    }
    if run.results.is_empty() && run.errors.is_empty() {
        run.errors.push(PolicyError::Tests(
            "no test_* rules found in *_test.rego files".into(),
        ));
    }
    run
}

/// The rule the policy's `decision` is renamed to in the test engine.
const INTERPRETED: &str = "zonegate_interpreted_decision";

/// Whether a (non-test) file declares `decision`, i.e. is a policy.
fn declares_decision(name: &str, source: &str) -> bool {
    let mut probe = Engine::new();
    probe.add_policy(name.to_owned(), source.to_owned()).is_ok()
        && probe
            .has_declared_rule_rooted_at(name, super::DECISION_RULE)
            .unwrap_or(false)
}

/// The policy with its `decision` renamed and a new `decision` that returns the interpreter's
/// value after `function` (an extension, see [`vm_check`]) had the VM decide the same input.
/// Line numbers stay as they were. `None` unless exactly one rule head `decision` starts a line.
fn cross_checked(source: &str, function: &str) -> Option<String> {
    let is_head = |rest: &str| {
        !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out = String::with_capacity(source.len().saturating_add(256));
    let mut heads = 0usize;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("default decision")
            && is_head(rest)
        {
            out.push_str(&format!("default {INTERPRETED}{rest}"));
        } else if let Some(rest) = line.strip_prefix("decision")
            && is_head(rest)
        {
            heads = heads.saturating_add(1);
            out.push_str(&format!("{INTERPRETED}{rest}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if heads != 1 {
        return None;
    }
    out.push_str(&format!(
        "\n{INTERPRETED}_values := [d | d := {INTERPRETED}]\n\
         {INTERPRETED}_inputs := [i | i := input]\n\
         decision := {function}({INTERPRETED}_inputs, {INTERPRETED}_values)\n"
    ));
    Some(out)
}

/// The extension behind [`cross_checked`]: its arguments are `[input]` (or `[]`) and
/// `[decision]` (or `[]`) as the interpreter sees them; it has the VM decide the same input,
/// records any difference in the decisions, and returns the interpreter's.
fn vm_check(
    policy: Policy,
    disagreements: Arc<Mutex<Vec<String>>>,
) -> impl FnMut(Vec<Value>) -> anyhow::Result<Value> + Clone + Send + Sync {
    move |args: Vec<Value>| {
        let first = |i: usize| {
            args.get(i)
                .and_then(|v| v.as_array().ok())
                .and_then(|a| a.first().cloned())
                .unwrap_or(Value::Undefined)
        };
        let (input, interpreted) = (first(0), first(1));
        let vm = policy.vm().decide(input.clone());
        let expected = Decision::from_value(&interpreted);
        if vm != expected
            && let Ok(mut d) = disagreements.lock()
        {
            d.push(format!(
                "on input {input} the VM decided {vm:?}, the interpreter {expected:?}"
            ));
        }
        Ok(interpreted)
    }
}

fn is_test_file(name: &str) -> bool {
    name.ends_with("_test.rego")
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let read = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(read)? {
        let entry = entry.map_err(read)?;
        let p = entry.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "rego") {
            out.push(p);
        }
    }
    Ok(())
}

/// Names of the rules whose heads start a line with `test_` (as `opa fmt` writes them), each
/// once, in file order.
fn test_rule_names(source: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in source.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let rest = line.get(name.len()..).unwrap_or_default().trim_start();
        let is_head = rest.is_empty()
            || rest.starts_with("if")
            || rest.starts_with('{')
            || rest.starts_with(":=")
            || rest.starts_with('=')
            || rest.starts_with('#');
        if is_head && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use super::{TestOutcome, run_tests, test_rule_names};

    #[test]
    fn shipped_policies_pass_their_tests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let run = run_tests(&[dir]);
        let report: Vec<String> = run
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(run.results.iter().map(ToString::to_string))
            .collect();
        println!("{}", report.join("\n"));
        assert!(run.success(), "{}", report.join("\n"));
        assert!(run.passed() >= 30, "{}", report.join("\n"));
    }

    /// The VM of regorus 0.14.1 treats an undefined expression in `every` as true: the
    /// cross-check must turn that into a failing test even though the interpreter passes it.
    #[test]
    fn vm_disagreement_fails_the_test() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        };
        write(
            "p.rego",
            "package p\nimport rego.v1\n\nallowed := {\"a\": true}\n\ndefault decision := {\"allow\": false}\n\ndecision := {\"allow\": true} if {\n\tevery k in input.keys {\n\t\tallowed[k]\n\t}\n}\n",
        );
        write(
            "p_test.rego",
            "package p_test\nimport rego.v1\nimport data.p\n\ntest_b_refused if {\n\tnot p.decision.allow with input as {\"keys\": [\"a\", \"b\"]}\n}\n\ntest_a_allowed if {\n\tp.decision.allow with input as {\"keys\": [\"a\"]}\n}\n\ntest_default if {\n\tnot p.decision.allow\n}\n",
        );
        let run = run_tests(&[dir.path().to_owned()]);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        let by_name = |n: &str| {
            run.results
                .iter()
                .find(|r| r.name == n)
                .map(|r| r.outcome.clone())
        };
        match by_name("p_test.test_b_refused") {
            Some(TestOutcome::Fail(reason)) => {
                assert!(reason.contains("VM and interpreter disagree"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(by_name("p_test.test_a_allowed"), Some(TestOutcome::Pass));
        assert_eq!(by_name("p_test.test_default"), Some(TestOutcome::Pass));
    }

    #[test]
    fn finds_test_rule_heads() {
        let src = "package x_test\n\ntest_a if {\n  true\n}\ntest_b if true\ntest_a if false\n  test_indented if true\ntest_c := true\ntesting := 1\ntest_d # comment\n";
        assert_eq!(
            test_rule_names(src),
            vec!["test_a", "test_b", "test_c", "test_d"]
        );
    }
}
