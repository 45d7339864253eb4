//! The review of a valid model: conduits and settings that are legal but deserve a second look
//! (IEC 62443-3-2 zone and conduit review), which `zonegate check` shows as warnings.

use super::Pos;
use super::model::{Endpoint, FailureMode, Model, PurdueLevel, Service, Warning};

impl Model {
    /// Conduits that are legal but deserve a second look (IEC 62443-3-2 zone and conduit review).
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        if self.gateway.management.is_none() {
            out.push(Warning {
                pos: Pos::default(),
                message: "no gateway.management address: the gateway accepts no connections for \
                          itself (console access only)"
                    .into(),
            });
        }
        if let Some(api) = self
            .gateway
            .management
            .as_ref()
            .and_then(|m| m.api.as_ref())
            && api.tls.is_none()
        {
            out.push(Warning {
                pos: Pos::default(),
                message: "gateway.management.api has no tls: the API key crosses the management \
                          network in clear text; add `tls: {certificate, key}`"
                    .into(),
            });
        }
        if self.gateway.failure_mode == FailureMode::Open {
            let inspected: Vec<&str> = self
                .conduits
                .iter()
                .filter(|c| c.services.iter().any(Service::is_inspected))
                .map(|c| c.name.as_str())
                .collect();
            out.push(Warning {
                pos: self.gateway.failure_mode_at,
                message: if inspected.is_empty() {
                    "gateway.failure_mode is `open`: while zonegate is down, its conduits keep \
                     forwarding and nothing repairs or audits the ruleset"
                        .into()
                } else {
                    format!(
                        "gateway.failure_mode is `open`: while zonegate is down, conduit(s) {} \
                         carry their services uninspected (no policy, no audit)",
                        inspected
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            });
        }
        for c in &self.conduits {
            let (Some(from), Some(to)) = (self.zone(&c.from), self.zone(&c.to)) else {
                continue;
            };
            if from.level >= PurdueLevel::L4 && to.level <= PurdueLevel::L1 {
                out.push(Warning {
                    pos: c.defined_at,
                    message: format!(
                        "conduit `{}` reaches level {} (`{}`) directly from level {} (`{}`): \
                         terminate enterprise traffic in the DMZ (level 3.5) instead",
                        c.name, to.level, to.name, from.level, from.name
                    ),
                });
            } else if from.level.rank().abs_diff(to.level.rank()) > 1 {
                out.push(Warning {
                    pos: c.defined_at,
                    message: format!(
                        "conduit `{}` skips Purdue levels: level {} (`{}`) to level {} (`{}`)",
                        c.name, from.level, from.name, to.level, to.name
                    ),
                });
            }
            if to.security_level > from.security_level
                && c.services.iter().any(|s| !s.is_inspected())
                && c.sources.is_empty()
                && c.destinations.is_empty()
            {
                out.push(Warning {
                    pos: c.defined_at,
                    message: format!(
                        "conduit `{}` lets all of zone `{}` (SL {}) reach all of `{}` (SL {}) without deep \
                         inspection: narrow it with `sources:` or `destinations:`",
                        c.name,
                        from.name,
                        from.security_level.value(),
                        to.name,
                        to.security_level.value()
                    ),
                });
            }
            if c.inspection
                .as_ref()
                .is_some_and(|i| i.quarantine.is_some())
                && !c.sources.is_empty()
                && c.sources.iter().all(|s| match s {
                    Endpoint::Asset { name, .. } => self.asset(name).is_some_and(|a| a.critical),
                    Endpoint::Network(_) => false,
                })
            {
                out.push(Warning {
                    pos: c.defined_at,
                    message: format!(
                        "conduit `{}` has `inspection.quarantine` but every source is a critical \
                         asset: nothing on it is ever quarantined (violations are only audited)",
                        c.name
                    ),
                });
            }
            if c.services.iter().any(Service::is_inspected) && c.destinations.is_empty() {
                out.push(Warning {
                    pos: c.defined_at,
                    message: format!(
                        "conduit `{}` inspects traffic to any address in zone `{}`: name the device \
                         assets in `destinations:`",
                        c.name, to.name
                    ),
                });
            }
        }
        out.extend(super::egress::warnings(self));
        out
    }
}
