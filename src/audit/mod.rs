//! Audit events: one JSON line per security-relevant fact, written by one task behind a bounded
//! queue so that a slow disk never stalls the data path. Field names follow Elastic Common Schema
//! (`@timestamp`, `event.*`, `source.*`, `destination.*`, `rule.name`) plus zonegate's own
//! (`zonegate.*`, `modbus.*`, `opcua.*`). The audit issue adds syslog/TLS sinks, tamper evidence and spooling.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

/// Events waiting for the writer; beyond this they are dropped and counted (never block traffic).
pub const QUEUE_CAPACITY: usize = 65_536;
/// The writer stops adding queued events to one write at about this size.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// After a write the writer waits this long before it takes the next events, so that events
/// arriving one by one are written in batches instead of costing the data path a thread wake-up
/// and the writer a system call each. What an event may wait in the queue.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Where events go.
#[derive(Debug, Clone)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

/// Hands events to the writer task. Cheap to clone; one per session.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

/// One audit event. Built only where something happened that a SOC must see.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    pub zonegate: Zonegate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcua: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventMeta {
    /// ECS `event.kind`: `event` or `alert`.
    pub kind: &'static str,
    pub category: &'static [&'static str],
    /// What happened, e.g. `modbus-request`, `modbus-malformed`.
    pub action: &'static str,
    /// ECS `event.outcome`: `success` (allowed) or `failure` (denied, refused).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, zone: Option<&str>, asset: Option<&str>) -> Self {
        Endpoint {
            ip: addr.ip().to_string(),
            port: addr.port(),
            zone: zone.map(str::to_owned),
            asset: asset.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Zonegate {
    pub conduit: Option<String>,
    /// `allow`, `deny`, `would_deny` (monitor mode) or `refuse` (malformed, no policy asked).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
}

impl Event {
    pub fn now(event: EventMeta, zonegate: Zonegate) -> Event {
        Event {
            timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            event,
            source: None,
            destination: None,
            rule: None,
            zonegate,
            modbus: None,
            opcua: None,
        }
    }
}

impl Audit {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(sink: Sink) -> std::io::Result<Audit> {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE_CAPACITY);
        let mut out: Box<dyn std::io::Write + Send> = match sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
            while let Some(event) = rx.blocking_recv() {
                // What is queued goes out in one write, so that a burst costs one system call
                // rather than one per event; nothing waits for more to come.
                batch.clear();
                let mut next = Some(event);
                while let Some(event) = next.take() {
                    if serde_json::to_writer(&mut batch, &event).is_ok() {
                        batch.push(b'\n');
                    }
                    if batch.len() < WRITE_BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
                // Written and flushed whole before the next wait: no event sits in a buffer of
                // ours when the process dies.
                if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                    tracing::error!("cannot write audit events");
                }
                if batch.len() < WRITE_BATCH_BYTES {
                    std::thread::sleep(WRITE_INTERVAL);
                }
            }
        });
        Ok(Audit {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues an event; when the queue is full it is dropped and counted, never waited for.
    pub fn emit(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
