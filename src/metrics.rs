//! The daemon's metrics, served in the OpenMetrics text format on the management API's
//! `/metrics`. The proxies update them per request through a [`ConnectionMetrics`] resolved once
//! per connection: the per-request path touches atomics only, with no allocation and no hashing
//! of label strings. What the kernel and the audit writer count is read when scraped.
//!
//! A leaf: it imports no other module of the crate. Callers hand it plain values (the
//! configuration's fingerprint, [`AuditNumbers`], [`KernelCounter`]s); it owns the [`Limit`]s
//! it counts hits of.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What the audit writer reports, as of a scrape.
#[derive(Debug, Clone, Default)]
pub struct AuditNumbers<'a> {
    /// Events waiting for the writer.
    pub queued: u64,
    /// Events lost since start (queue full, sinks failing).
    pub lost: u64,
    pub healthy: bool,
    pub receivers: Vec<ReceiverNumbers<'a>>,
}

/// One syslog receiver's numbers, as of a scrape.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverNumbers<'a> {
    pub name: &'a str,
    pub spooled_bytes: u64,
    pub dropped: u64,
    pub connected: bool,
}

/// One of the ruleset's kernel counters, as of a scrape.
#[derive(Debug, Clone, Copy)]
pub struct KernelCounter<'a> {
    pub name: &'a str,
    pub packets: u64,
    pub bytes: u64,
}

/// The Content-Type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// (function, decision) pairs a connection remembers counter handles for; others are looked up
/// in the family each time (still correct, only slower).
const CACHED_REQUEST_COUNTERS: usize = 32;

/// Upper bounds of the decision latency buckets, in seconds: 10 us to about 160 ms.
fn decision_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_01, 2.0, 15,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConduitLabels {
    conduit: String,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    conduit: String,
    protocol: &'static str,
    function: &'static str,
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    conduit: String,
    protocol: &'static str,
    /// `to_device` (what the client sent and the proxy read) or `to_client`.
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelLabels {
    counter: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// A bound of the inspection proxy (zones.yaml `limits:`, `inspection.write_rate`), as
/// `zonegate_limit_hits_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.connections`: a connection refused at accept.
    Connections,
    /// `limits.connections_per_source`: a connection refused at accept.
    ConnectionsPerSource,
    /// `limits.in_flight_per_connection`: the client is not read until the device answers.
    InFlight,
    /// `limits.idle_timeout`: an idle connection closed.
    IdleTimeout,
    /// `limits.request_timeout`: a client that started a request and did not finish it, cut off.
    RequestTimeout,
    /// `limits.connect_timeout`: the device did not accept the connection in time.
    ConnectTimeout,
    /// `limits.response_timeout`: the device did not answer in time.
    ResponseTimeout,
    /// `limits.policy_time`: a decision that took too long, denied.
    PolicyTime,
    /// `inspection.write_rate`: a write refused.
    WriteRate,
}

impl Limit {
    /// Every limit, in the order of [`Limit::index`].
    pub const ALL: [Limit; 9] = [
        Limit::Connections,
        Limit::ConnectionsPerSource,
        Limit::InFlight,
        Limit::IdleTimeout,
        Limit::RequestTimeout,
        Limit::ConnectTimeout,
        Limit::ResponseTimeout,
        Limit::PolicyTime,
        Limit::WriteRate,
    ];

    /// The label value: the zones.yaml field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::ConnectionsPerSource => "connections_per_source",
            Limit::InFlight => "in_flight_per_connection",
            Limit::IdleTimeout => "idle_timeout",
            Limit::RequestTimeout => "request_timeout",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::ResponseTimeout => "response_timeout",
            Limit::PolicyTime => "policy_time",
            Limit::WriteRate => "write_rate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuarantineLabels {
    conduit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decision_seconds: Family<ConduitLabels, Histogram, fn() -> Histogram>,
    connections: Family<ConduitLabels, Gauge>,
    connections_total: Family<ConduitLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    malformed: Family<ConduitLabels, Counter>,
    no_conduit: Family<ProtocolLabels, Counter>,
    kernel_packets: Family<KernelLabels, Counter>,
    kernel_bytes: Family<KernelLabels, Counter>,
    kernel_up: Gauge,
    reloads: Family<ResultLabels, Counter>,
    ready: Gauge,
    audit_queued: Gauge,
    audit_lost: Counter,
    audit_healthy: Gauge,
    audit_spooled: Family<ReceiverLabels, Gauge>,
    audit_receiver_dropped: Family<ReceiverLabels, Counter>,
    audit_receiver_connected: Family<ReceiverLabels, Gauge>,
    limit_hits: Family<LimitLabels, Counter>,
    /// `limit_hits`' counters by [`Limit::index`], resolved once: hits cost one atomic add.
    limit_counters: Vec<Counter>,
    quarantined: Gauge,
    quarantine_total: Family<QuarantineLabels, Counter>,
    info: std::sync::Arc<Info>,
}

/// The `_info` metrics: what is running and enforced.
#[derive(Debug, Default)]
struct Info {
    config: Mutex<InfoState>,
}

#[derive(Debug, Default, Clone)]
struct InfoState {
    file: String,
    sha256: String,
    /// (conduit, policy file, revision)
    policies: Vec<(String, String, String)>,
}

impl Collector for Info {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut build = encoder.encode_descriptor(
            "zonegate_build",
            "The running zonegate: version",
            None,
            MetricType::Info,
        )?;
        build.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        if !state.sha256.is_empty() {
            let mut config = encoder.encode_descriptor(
                "zonegate_config",
                "The enforced zones.yaml: path and SHA-256",
                None,
                MetricType::Info,
            )?;
            config.encode_info(&[
                ("file", state.file.as_str()),
                ("sha256", state.sha256.as_str()),
            ])?;
        }
        if !state.policies.is_empty() {
            let mut policy = encoder.encode_descriptor(
                "zonegate_policy",
                "The policy that judges each inspected conduit, with its revision (SHA-256)",
                None,
                MetricType::Info,
            )?;
            for (conduit, file, revision) in &state.policies {
                policy.encode_info(&[
                    ("conduit", conduit.as_str()),
                    ("policy", file.as_str()),
                    ("revision", revision.as_str()),
                ])?;
            }
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            decision_seconds: Family::new_with_constructor(decision_buckets),
            connections: Family::default(),
            connections_total: Family::default(),
            bytes: Family::default(),
            malformed: Family::default(),
            no_conduit: Family::default(),
            kernel_packets: Family::default(),
            kernel_bytes: Family::default(),
            kernel_up: Gauge::default(),
            reloads: Family::default(),
            ready: Gauge::default(),
            audit_queued: Gauge::default(),
            audit_lost: Counter::default(),
            audit_healthy: Gauge::default(),
            audit_spooled: Family::default(),
            audit_receiver_dropped: Family::default(),
            audit_receiver_connected: Family::default(),
            limit_hits: Family::default(),
            limit_counters: Vec::new(),
            quarantined: Gauge::default(),
            quarantine_total: Family::default(),
            info: std::sync::Arc::new(Info::default()),
        };
        let r = &mut m.registry;
        r.register(
            "zonegate_requests",
            "Inspected requests by conduit, protocol, function (Modbus) or service (OPC UA) and decision (allow, deny, would_deny, refuse). OPC UA channel decisions count as functions `channel-open` and `channel-uninspected`",
            m.requests.clone(),
        );
        r.register_with_unit(
            "zonegate_decision_duration",
            "Time spent evaluating the conduit's policy, for decisions not answered from the connection's decision cache",
            prometheus_client::registry::Unit::Seconds,
            m.decision_seconds.clone(),
        );
        r.register(
            "zonegate_active_connections",
            "Connections the inspection proxy carries now",
            m.connections.clone(),
        );
        r.register(
            "zonegate_connections",
            "Connections the inspection proxy accepted on a conduit",
            m.connections_total.clone(),
        );
        r.register_with_unit(
            "zonegate_proxied",
            "Bytes the inspection proxy read, by direction: to_device (from the client) and to_client (from the device)",
            prometheus_client::registry::Unit::Bytes,
            m.bytes.clone(),
        );
        r.register(
            "zonegate_malformed_frames",
            "Frames or messages that broke the protocol (from either side); the connection was closed, the frame dropped (a response that answers no request) or, for a well-framed Modbus request that asks for something invalid, answered with the exception a device returns",
            m.malformed.clone(),
        );
        r.register(
            "zonegate_no_conduit_connections",
            "Diverted connections that no inspected conduit explains; closed",
            m.no_conduit.clone(),
        );
        r.register(
            "zonegate_kernel_packets",
            "The kernel's named counters in table inet zonegate: conduit_<name> per conduit, drop_forward, drop_input and drop_output for the default deny",
            m.kernel_packets.clone(),
        );
        r.register_with_unit(
            "zonegate_kernel",
            "Bytes counted by the kernel's named counters (see zonegate_kernel_packets)",
            prometheus_client::registry::Unit::Bytes,
            m.kernel_bytes.clone(),
        );
        r.register(
            "zonegate_kernel_counters_up",
            "1 when the kernel's counters could be read at this scrape, 0 when not (the zonegate table is missing)",
            m.kernel_up.clone(),
        );
        r.register(
            "zonegate_reloads",
            "Configuration reloads by result (ok, failed)",
            m.reloads.clone(),
        );
        r.register(
            "zonegate_ready",
            "1 when the ruleset is applied and verified and the policies are compiled (what /readyz says)",
            m.ready.clone(),
        );
        r.register(
            "zonegate_audit_queue_events",
            "Audit events waiting in the writer's queue",
            m.audit_queued.clone(),
        );
        r.register(
            "zonegate_audit_lost_events",
            "Audit events lost because the writer's queue was full",
            m.audit_lost.clone(),
        );
        r.register(
            "zonegate_audit_healthy",
            "1 while audit records events; 0 when it cannot (with when_full: fail_closed inspected conduits then refuse requests)",
            m.audit_healthy.clone(),
        );
        r.register_with_unit(
            "zonegate_audit_spool",
            "Unsent bytes in a syslog receiver's spool",
            prometheus_client::registry::Unit::Bytes,
            m.audit_spooled.clone(),
        );
        r.register(
            "zonegate_audit_receiver_dropped_events",
            "Events a syslog receiver will never get (spool full or unwritable)",
            m.audit_receiver_dropped.clone(),
        );
        r.register(
            "zonegate_audit_receiver_connected",
            "1 while zonegate is connected to the syslog receiver",
            m.audit_receiver_connected.clone(),
        );
        r.register(
            "zonegate_limit_hits",
            "Times a bound of the inspection proxy was hit, by limit (the zones.yaml field: connections, connections_per_source, in_flight_per_connection, idle_timeout, request_timeout, connect_timeout, response_timeout, policy_time, write_rate)",
            m.limit_hits.clone(),
        );
        r.register(
            "zonegate_quarantined_sources",
            "Sources quarantined now: dropped in the kernel until their timeout",
            m.quarantined.clone(),
        );
        r.register(
            "zonegate_quarantine",
            "Sources put in quarantine, by the conduit whose policy they broke too often",
            m.quarantine_total.clone(),
        );
        r.register_collector(Box::new(m.info.clone()));
        // Series that alerting rules watch with increase() exist from the start, at 0.
        for result in ["ok", "failed"] {
            m.reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        for protocol in ["modbus", "opcua"] {
            m.no_conduit
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(0);
        }
        m.limit_counters = Limit::ALL
            .iter()
            .map(|l| {
                m.limit_hits
                    .get_or_create(&LimitLabels { limit: l.as_str() })
                    .clone()
            })
            .collect();
        m
    }

    /// Counts one hit of `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        if let Some(c) = self.limit_counters.get(limit.index()) {
            c.inc();
        }
    }

    /// Records the configuration now enforced, for the `_info` metrics: zones.yaml's path and
    /// hex SHA-256, and (conduit, policy file, revision) for every policy it compiled.
    pub fn set_config(
        &self,
        file: String,
        sha256: String,
        policies: Vec<(String, String, String)>,
    ) {
        let mut state = self
            .info
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = InfoState {
            file,
            sha256,
            policies,
        };
    }

    /// Counts a reload.
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a source put in quarantine for its violations on `conduit`.
    pub fn quarantined(&self, conduit: &str) {
        self.quarantine_total
            .get_or_create(&QuarantineLabels {
                conduit: conduit.to_owned(),
            })
            .inc();
    }

    /// Sets `zonegate_quarantined_sources`.
    pub fn set_quarantined(&self, n: usize) {
        self.quarantined.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets `zonegate_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Counts a diverted connection that matched no conduit.
    pub fn no_conduit(&self, protocol: &'static str) {
        self.no_conduit
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// The handles one proxied connection on `conduit` updates; counts the connection as active
    /// until the handles drop.
    pub fn connection(
        self: &std::sync::Arc<Self>,
        conduit: &str,
        protocol: &'static str,
    ) -> ConnectionMetrics {
        let labels = ConduitLabels {
            conduit: conduit.to_owned(),
            protocol,
        };
        let bytes = |direction| {
            self.bytes
                .get_or_create(&BytesLabels {
                    conduit: conduit.to_owned(),
                    protocol,
                    direction,
                })
                .clone()
        };
        let active = self.connections.get_or_create(&labels).clone();
        active.inc();
        ConnectionMetrics {
            metrics: self.clone(),
            protocol,
            decision_seconds: self.decision_seconds.get_or_create(&labels).clone(),
            malformed: self.malformed.get_or_create(&labels).clone(),
            to_device: bytes("to_device"),
            to_client: bytes("to_client"),
            active,
            requests: Vec::with_capacity(CACHED_REQUEST_COUNTERS),
            conduit: labels.conduit,
        }
    }

    /// The metrics as OpenMetrics text; the kernel's counters (`None`: unreadable) and the audit
    /// writer's numbers are taken as given, as of this scrape.
    pub fn encode(
        &self,
        audit: &AuditNumbers<'_>,
        kernel: Option<&[KernelCounter<'_>]>,
    ) -> Result<String, MetricsError> {
        self.kernel_up.set(i64::from(kernel.is_some()));
        for c in kernel.unwrap_or_default() {
            let labels = KernelLabels {
                counter: c.name.to_owned(),
            };
            self.kernel_packets
                .get_or_create(&labels)
                .inner()
                .store(c.packets, std::sync::atomic::Ordering::Relaxed);
            self.kernel_bytes
                .get_or_create(&labels)
                .inner()
                .store(c.bytes, std::sync::atomic::Ordering::Relaxed);
        }
        self.audit_queued
            .set(i64::try_from(audit.queued).unwrap_or(i64::MAX));
        self.audit_lost
            .inner()
            .store(audit.lost, std::sync::atomic::Ordering::Relaxed);
        self.audit_healthy.set(i64::from(audit.healthy));
        for r in &audit.receivers {
            let labels = ReceiverLabels {
                receiver: r.name.to_owned(),
            };
            self.audit_spooled
                .get_or_create(&labels)
                .set(i64::try_from(r.spooled_bytes).unwrap_or(i64::MAX));
            self.audit_receiver_dropped
                .get_or_create(&labels)
                .inner()
                .store(r.dropped, std::sync::atomic::Ordering::Relaxed);
            self.audit_receiver_connected
                .get_or_create(&labels)
                .set(i64::from(r.connected));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One connection's metric handles, resolved when it was accepted.
#[derive(Debug)]
pub struct ConnectionMetrics {
    metrics: std::sync::Arc<Metrics>,
    conduit: String,
    protocol: &'static str,
    decision_seconds: Histogram,
    malformed: Counter,
    to_device: Counter,
    to_client: Counter,
    active: Gauge,
    /// Counter handles by (function, decision), filled as they are first used.
    requests: Vec<(&'static str, &'static str, Counter)>,
}

impl ConnectionMetrics {
    /// Counts the connection in `connections_total`: once, when it is accepted (a reload makes
    /// new handles for live connections, which are not new connections).
    pub fn accepted(&self) {
        self.metrics
            .connections_total
            .get_or_create(&ConduitLabels {
                conduit: self.conduit.clone(),
                protocol: self.protocol,
            })
            .inc();
    }

    /// Counts one hit of `limit` on this connection.
    pub fn limit_hit(&self, limit: Limit) {
        self.metrics.limit_hit(limit);
    }

    /// The registry the handles come from, for the handles of a new route after a reload.
    pub fn registry(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }

    /// Counts one judged request.
    pub fn request(&mut self, function: &'static str, decision: &'static str) {
        if let Some((_, _, c)) = self
            .requests
            .iter()
            // The names are the same statics each time: compare addresses before bytes.
            .find(|(f, d, _)| {
                (std::ptr::eq(*f, function) || *f == function)
                    && (std::ptr::eq(*d, decision) || *d == decision)
            })
        {
            c.inc();
            return;
        }
        let counter = self
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                conduit: self.conduit.clone(),
                protocol: self.protocol,
                function,
                decision,
            })
            .clone();
        counter.inc();
        if self.requests.len() < CACHED_REQUEST_COUNTERS {
            self.requests.push((function, decision, counter));
        }
    }

    /// Records how long one policy evaluation took.
    pub fn decision_time(&self, took: Duration) {
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// Counts one malformed frame or message.
    pub fn malformed(&self) {
        self.malformed.inc();
    }

    /// Counts bytes read from the client.
    pub fn to_device(&self, n: usize) {
        self.to_device.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts bytes read from the device.
    pub fn to_client(&self, n: usize) {
        self.to_client.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A handle on the decision latency histogram (for a policy judge of the connection's own).
    pub fn decision_histogram(&self) -> Histogram {
        self.decision_seconds.clone()
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        let stats = AuditNumbers {
            queued: 3,
            lost: 2,
            healthy: true,
            receivers: vec![],
        };
        let kernel = [KernelCounter {
            name: "conduit_scada_bess",
            packets: 7,
            bytes: 700,
        }];
        m.encode(&stats, Some(&kernel)).unwrap_or_default()
    }

    #[test]
    fn per_connection_handles_count_into_the_shared_families() {
        let m = std::sync::Arc::new(Metrics::new());
        let mut c = m.connection("scada-bess", "modbus");
        for _ in 0..3 {
            c.request("read_holding_registers", "allow");
        }
        c.request("write_single_register", "deny");
        c.to_device(12);
        c.decision_time(Duration::from_micros(30));
        let text = scrape(&m);
        assert!(text.contains(
            "zonegate_requests_total{conduit=\"scada-bess\",protocol=\"modbus\",function=\"read_holding_registers\",decision=\"allow\"} 3"
        ), "{text}");
        assert!(text.contains("decision=\"deny\"} 1"), "{text}");
        assert!(
            text.contains(
                "zonegate_active_connections{conduit=\"scada-bess\",protocol=\"modbus\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("zonegate_proxied_bytes_total{conduit=\"scada-bess\",protocol=\"modbus\",direction=\"to_device\"} 12"), "{text}");
        assert!(text.contains("zonegate_decision_duration_seconds_count{conduit=\"scada-bess\",protocol=\"modbus\"} 1"), "{text}");
        assert!(
            text.contains("zonegate_kernel_packets_total{counter=\"conduit_scada_bess\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("zonegate_audit_lost_events_total 2"),
            "{text}"
        );
        assert!(text.contains("zonegate_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        drop(c);
        let text = scrape(&m);
        assert!(
            text.contains(
                "zonegate_active_connections{conduit=\"scada-bess\",protocol=\"modbus\"} 0"
            ),
            "{text}"
        );
    }
}
