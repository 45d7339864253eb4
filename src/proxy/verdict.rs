//! The enforcement tail every protocol session shares: from a request's decision, the conduit's
//! mode, `on_deny` and write rate, and whether audit is recording, to what becomes of the
//! request ([`Action`]), with its metrics, whether it is audited one by one or counted, and its
//! violation for the quarantine. A session supplies only what is its protocol's: how it answers
//! a refusal (a Modbus exception, an OPC UA ServiceFault or ERR) and what its audit event says.
//!
//! A request goes through it in two steps, so that its audit event is written between them (the
//! quarantine's own event follows it): [`judge`], then the session logs as [`Verdict::log`]
//! says, then [`Verdict::enforce`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use super::Route;
use crate::audit::{Audit, Reads};
use crate::config::{Mode, OnDeny};
use crate::metrics::Limit;
use crate::policy::Decision;
use crate::proto::Access;

/// Reason and rule of a request refused by the conduit's `inspection.write_rate`.
pub const REASON_WRITE_RATE: &str = "write rate limit (inspection.write_rate) exceeded";
pub const RULE_WRITE_RATE: &str = "zonegate.limits.write_rate";

/// Made once: refusals on the request path allocate nothing.
static WRITE_RATE: LazyLock<Arc<Decision>> = LazyLock::new(|| {
    Arc::new(Decision::Deny {
        reason: REASON_WRITE_RATE.into(),
        rule: RULE_WRITE_RATE.into(),
    })
});
static AUDIT_UNAVAILABLE: LazyLock<Arc<Decision>> = LazyLock::new(|| Arc::new(audit_unavailable()));

/// The decision while audit cannot record (`audit.when_full: fail_closed`).
pub fn audit_unavailable() -> Decision {
    Decision::Deny {
        reason: "audit is not recording events (audit.when_full: fail_closed)".into(),
        rule: "zonegate.audit.unavailable".into(),
    }
}

/// The decision's name in `mode`, as [`names`] gives it, without building the rest (metrics).
pub fn decision_name(decision: &Decision, mode: Mode) -> &'static str {
    match (decision, mode) {
        (Decision::Allow { .. }, _) => "allow",
        (Decision::Deny { .. }, Mode::Monitor) => "would_deny",
        (Decision::Deny { .. }, Mode::Enforce) => "deny",
    }
}

/// A decision as audit events name it in `mode`: (decision, outcome, reason, rule).
pub fn names(decision: &Decision, mode: Mode) -> (&'static str, &'static str, String, String) {
    match (decision, mode) {
        (Decision::Allow { rule }, _) => ("allow", "success", String::new(), rule.clone()),
        (Decision::Deny { reason, rule }, Mode::Monitor) => {
            ("would_deny", "success", reason.clone(), rule.clone())
        }
        (Decision::Deny { reason, rule }, Mode::Enforce) => {
            ("deny", "failure", reason.clone(), rule.clone())
        }
    }
}

/// Allowed requests of these classes take from the conduit's `write_rate` bucket.
pub fn rate_limited(access: Access) -> bool {
    matches!(
        access,
        Access::Write | Access::Call | Access::NodeManagement
    )
}

/// Allowed requests of these classes are counted, not audited one by one, with
/// `audit.reads: count` (polling would drown the SOC).
pub fn summarized(access: Access) -> bool {
    matches!(
        access,
        Access::Read | Access::Browse | Access::Subscribe | Access::Session | Access::Discovery
    )
}

/// What the session has to judge a request by.
#[derive(Debug)]
pub enum Judged {
    /// The policy's decision.
    Policy(Arc<Decision>),
    /// The gateway cannot judge the request (a service it cannot decode): refused in either
    /// mode, and no violation, since the client may not know.
    Unjudgeable(Arc<Decision>),
}

/// What becomes of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allowed, or denied in monitor mode: it goes on to the device.
    Forward,
    /// Denied (policy or write rate) in enforce mode, `on_deny` other than `close`: the
    /// session answers as its protocol refuses a request, per `on_deny`.
    Refuse,
    /// Denied in enforce mode with `on_deny: close`: the connection ends.
    Close,
    /// Refused by the gateway itself in either mode: audit is not recording, or the request
    /// cannot be judged. Never a violation.
    Unavailable,
    /// The denial's violation quarantined the client: the connection ends now.
    Quarantine,
}

/// How the request is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// An allowed read under `audit.reads: count`: added to the connection's count.
    Count,
    /// One event, the decision named in this mode (see [`names`]).
    Event(Mode),
}

/// The first step's result: the decision in force (the policy's, or the write rate's or the
/// gateway's refusal) and how to audit it; [`Verdict::enforce`] gives the action.
#[derive(Debug)]
#[must_use = "a verdict is enforced with Verdict::enforce"]
pub struct Verdict {
    pub decision: Arc<Decision>,
    pub log: Log,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allowed,
    Denied {
        by_rate: bool,
    },
    /// Audit down, or unjudgeable.
    Gateway,
}

/// The first step for a request of class `access` named `name` (the metrics label): audit
/// health first (nothing is allowed that cannot be audited), then `decide` (not called while
/// audit is down), then the write rate. Counts the request in the metrics.
pub fn judge(
    route: &mut Route,
    audit: &Audit,
    access: Access,
    name: &'static str,
    decide: impl FnOnce(&Route) -> Judged,
) -> Verdict {
    let judged = if audit.healthy() {
        decide(route)
    } else {
        Judged::Unjudgeable(AUDIT_UNAVAILABLE.clone())
    };
    let (decision, kind) = match judged {
        Judged::Unjudgeable(d) => (d, Kind::Gateway),
        Judged::Policy(d) if d.is_allow() => {
            if rate_limited(access)
                && let Some(bucket) = &route.write_rate
                && !bucket.take()
            {
                route.metrics.limit_hit(Limit::WriteRate);
                (WRITE_RATE.clone(), Kind::Denied { by_rate: true })
            } else {
                (d, Kind::Allowed)
            }
        }
        Judged::Policy(d) => (d, Kind::Denied { by_rate: false }),
    };
    let counted = match kind {
        Kind::Gateway => "deny",
        _ => decision_name(&decision, route.mode),
    };
    route.metrics.request(name, counted);
    let log = if kind == Kind::Allowed && summarized(access) && audit.reads() == Reads::Count {
        Log::Count
    } else if kind == Kind::Gateway {
        // Refused whatever the mode.
        Log::Event(Mode::Enforce)
    } else {
        Log::Event(route.mode)
    };
    Verdict {
        decision,
        log,
        kind,
    }
}

impl Verdict {
    /// The second step, after the session audited the request: a denial counts as a
    /// violation by `client` (`what` describes it to the quarantine; a write-rate refusal only
    /// where the conduit's quarantine says `count_rate_limits: true`), and the action.
    pub fn enforce(
        &self,
        route: &Route,
        client: SocketAddr,
        device: SocketAddr,
        what: impl FnOnce(&Decision) -> Cow<'_, str>,
    ) -> Action {
        match self.kind {
            Kind::Allowed => Action::Forward,
            Kind::Gateway => Action::Unavailable,
            Kind::Denied { by_rate } => {
                let what = what(&self.decision);
                let quarantined = if by_rate {
                    route.rate_limit_violation(client, device, &what)
                } else {
                    route.violation(client, device, &what)
                };
                match (quarantined, route.mode, route.on_deny) {
                    (true, _, _) => Action::Quarantine,
                    (false, Mode::Monitor, _) => Action::Forward,
                    (false, Mode::Enforce, OnDeny::Close) => Action::Close,
                    (false, Mode::Enforce, _) => Action::Refuse,
                }
            }
        }
    }

    /// True when the gateway refused the request itself (audit down, unjudgeable).
    pub fn by_gateway(&self) -> bool {
        self.kind == Kind::Gateway
    }
}

/// A denial's reason as the quarantine is told it: the reason field (Modbus).
pub fn deny_reason(decision: &Decision) -> Cow<'_, str> {
    match decision {
        Decision::Deny { reason, .. } => Cow::Borrowed(reason),
        Decision::Allow { .. } => Cow::Borrowed(""),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proxy::Protocol;
    use crate::proxy::testkit::{Kit, actions, client, device, zones};

    /// Never consulted: the tests hand the tail their decisions.
    const POLICY: &str = "package zonegate.test\n\nimport rego.v1\n\ndecision := {\"allow\": true, \"reason\": \"\", \"rule\": \"test.all\"}\n";

    fn allow() -> Judged {
        Judged::Policy(Arc::new(Decision::Allow {
            rule: "test.allow".into(),
        }))
    }

    fn deny() -> Judged {
        Judged::Policy(Arc::new(Decision::Deny {
            reason: "not this".into(),
            rule: "test.deny".into(),
        }))
    }

    /// Quarantine in monitor mode is recorded (`would_quarantine`), never put in the kernel: a
    /// violation shows as that event.
    fn monitored(count_rate_limits: bool) -> Kit {
        Kit::new(
            &zones(
                &format!(
                    "policy: p.rego, mode: monitor, write_rate: {{per_second: 1, burst: 1}}, quarantine: {{after: 1, within: 60s, for: 60s, count_rate_limits: {count_rate_limits}}}"
                ),
                "idle_timeout: 60s",
            ),
            POLICY,
        )
    }

    fn run(kit: &Kit, access: Access, judged: Judged) -> (Verdict, Action) {
        let mut route = kit.route(Protocol::Modbus);
        let v = judge(&mut route, &kit.audit(), access, "test", |_| judged);
        let action = v.enforce(&route, client(), device(), deny_reason);
        (v, action)
    }

    #[test]
    fn monitor_mode_forwards_denials_and_counts_them_as_violations() {
        let mut kit = monitored(false);
        let (v, action) = run(&kit, Access::Write, deny());
        assert_eq!(
            (v.log, action),
            (Log::Event(Mode::Monitor), Action::Forward)
        );
        let (_, action) = run(&kit, Access::Write, deny());
        assert_eq!(action, Action::Forward);
        let events = kit.events();
        assert!(would_quarantine(&events) >= 1);
    }

    #[test]
    fn write_rate_refusals_are_violations_only_with_count_rate_limits() {
        for counted in [false, true] {
            let mut kit = monitored(counted);
            // A read takes nothing from the bucket; the first write takes its one token.
            for _ in 0..3 {
                let (v, _) = run(&kit, Access::Read, allow());
                assert_eq!(v.log, Log::Count, "allowed reads are counted");
            }
            let (v, action) = run(&kit, Access::Write, allow());
            assert_eq!((v.decision.is_allow(), action), (true, Action::Forward));
            // Over the rate: refused as a denial would be (forwarded in monitor mode).
            for _ in 0..2 {
                let (v, action) = run(&kit, Access::Call, allow());
                assert_eq!(v.decision.rule(), RULE_WRITE_RATE);
                assert_eq!(
                    (v.log, action),
                    (Log::Event(Mode::Monitor), Action::Forward)
                );
            }
            let events = kit.events();
            assert_eq!(
                would_quarantine(&events) > 0,
                counted,
                "count_rate_limits: {counted}"
            );
        }
    }

    #[test]
    fn gateway_refusals_hold_in_either_mode_and_are_no_violations() {
        let mut kit = monitored(true);
        for _ in 0..3 {
            let (v, action) = run(&kit, Access::Read, Judged::Unjudgeable(deny_decision()));
            assert_eq!(
                (v.log, action, v.by_gateway()),
                (Log::Event(Mode::Enforce), Action::Unavailable, true)
            );
        }
        let events = kit.events();
        assert_eq!(would_quarantine(&events), 0);
    }

    #[test]
    fn enforce_mode_refuses_per_on_deny() {
        for (on_deny, expected) in [
            ("illegal-function", Action::Refuse),
            ("illegal-data-address", Action::Refuse),
            ("close", Action::Close),
        ] {
            let kit = Kit::new(
                &zones(
                    &format!("policy: p.rego, mode: enforce, on_deny: {on_deny}"),
                    "idle_timeout: 60s",
                ),
                POLICY,
            );
            let (v, action) = run(&kit, Access::Write, deny());
            assert_eq!((v.log, action), (Log::Event(Mode::Enforce), expected));
            let (v, action) = run(&kit, Access::Write, allow());
            assert_eq!(
                (v.log, action),
                (Log::Event(Mode::Enforce), Action::Forward)
            );
        }
    }

    /// `quarantine` events of monitor mode: a violation that would have quarantined.
    fn would_quarantine(events: &[serde_json::Value]) -> usize {
        actions(events, "quarantine")
            .filter(|e| e["zonegate"]["decision"] == "would_quarantine")
            .count()
    }

    fn deny_decision() -> Arc<Decision> {
        Arc::new(Decision::Deny {
            reason: "cannot be judged".into(),
            rule: "test.unjudgeable".into(),
        })
    }
}
