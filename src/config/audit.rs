//! The audit settings (zones.yaml `audit:`): their types, which the audit writer
//! ([`crate::audit`]) runs on, and their validation from the raw file.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::problems::Problems;
use super::raw::{RawAudit, RawCheckpoint, RawSyslog};

/// What audit does when events cannot be written or delivered as fast as they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Drop (the oldest undelivered events of a remote sink, the newest at the queue) and
    /// report the gap in the stream.
    #[default]
    DropOldest,
    /// Refuse new requests on inspected conduits until audit works again.
    FailClosed,
}

/// Allowed reads: one periodic count per connection, or one event each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reads {
    #[default]
    Count,
    Each,
}

/// The JSON lines file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub path: PathBuf,
    /// Rotate when the file reaches this size; 0 never.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Signed checkpoints (zones.yaml `audit.checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// The Ed25519 private key, PKCS#8 PEM.
    pub signing_key_file: PathBuf,
    /// How often a checkpoint is written while there are new events.
    pub interval: Duration,
}

/// Default `audit.checkpoint.interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Where events go and how they are sealed (zones.yaml `audit:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `None` and no syslog receivers: standard output.
    pub file: Option<FileSettings>,
    pub key_file: Option<PathBuf>,
    pub checkpoint: Option<CheckpointSettings>,
    pub reads: Reads,
    pub when_full: WhenFull,
    /// Where events for unreachable syslog receivers wait, one subdirectory per receiver.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub syslog: Vec<SyslogSettings>,
}

/// Default spool directory (systemd's `StateDirectory=zonegate`).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/zonegate/spool";
/// Default bound of each receiver's spool.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default size at which the audit file is rotated.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Default number of rotated audit files kept.
pub const DEFAULT_FILE_KEEP: u32 = 10;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            file: None,
            key_file: None,
            checkpoint: None,
            reads: Reads::Count,
            when_full: WhenFull::DropOldest,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            syslog: Vec::new(),
        }
    }
}

impl Settings {
    /// Makes the relative paths of what audit writes (file, spool) relative to `dir` (the
    /// zones.yaml directory); the files it reads (key, certificates) were resolved when the
    /// configuration was validated (`config::files`).
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        if let Some(f) = &mut self.file {
            f.path = dir.join(&f.path);
        }
        self.spool_dir = dir.join(&self.spool_dir);
    }
}

/// A remote syslog receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogSettings {
    /// host:port
    pub address: String,
    pub transport: SyslogTransport,
    pub format: SyslogFormat,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 5426: one message per datagram, no delivery guarantee.
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425.
    Tls,
    /// RELP (rsyslog's imrelp): every event acknowledged, resent if not.
    Relp,
    /// RELP over TLS.
    RelpTls,
}

impl SyslogTransport {
    /// As zones.yaml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransport::Udp => "udp",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Tls => "tls",
            SyslogTransport::Relp => "relp",
            SyslogTransport::RelpTls => "relp-tls",
        }
    }
}

impl SyslogFormat {
    /// As zones.yaml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogFormat::Rfc5424 => "rfc5424",
            SyslogFormat::Cef => "cef",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424 with the JSON event as MSG.
    Rfc5424,
    /// ArcSight Common Event Format in an RFC 5424 header.
    Cef,
}

/// Bounds of `audit.checkpoint.interval`.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Validated audit settings; defaults when the section is absent.
pub(super) fn settings(raw: Option<&Spanned<RawAudit>>, p: &mut Problems) -> Settings {
    let mut s = Settings::default();
    let Some(raw) = raw.map(|r| &r.value) else {
        return s;
    };
    s.reads = match raw.reads.as_ref().map(|r| (r, r.value.as_str())) {
        None | Some((_, "count")) => Reads::Count,
        Some((_, "each")) => Reads::Each,
        Some((r, other)) => {
            p.at(
                r,
                format!("unknown audit.reads `{other}`"),
                Some("use `count` (one periodic count per connection) or `each`".into()),
            );
            Reads::Count
        }
    };
    s.when_full = match raw.when_full.as_ref().map(|w| (w, w.value.as_str())) {
        None | Some((_, "drop_oldest")) => WhenFull::DropOldest,
        Some((_, "fail_closed")) => WhenFull::FailClosed,
        Some((w, other)) => {
            p.at(
                w,
                format!("unknown audit.when_full `{other}`"),
                Some("use `drop_oldest` (drop and report the gap) or `fail_closed` (refuse inspected requests until audit works)".into()),
            );
            WhenFull::DropOldest
        }
    };
    s.key_file = raw.key_file.as_ref().map(|k| p.file(k, "audit.key_file"));
    s.checkpoint = raw
        .checkpoint
        .as_ref()
        .and_then(|c| checkpoint(&c.value, p));
    if let Some(f) = &raw.file {
        s.file = path(&f.value.path, "audit.file.path", p).map(|path| FileSettings {
            path,
            max_bytes: f
                .value
                .max_bytes
                .as_ref()
                .map_or(DEFAULT_FILE_MAX_BYTES, |m| m.value),
            keep: f.value.keep.as_ref().map_or(DEFAULT_FILE_KEEP, |k| k.value),
        });
    }
    if let Some(spool) = &raw.spool {
        if let Some(d) = spool
            .value
            .directory
            .as_ref()
            .and_then(|d| path(d, "audit.spool.directory", p))
        {
            s.spool_dir = d;
        }
        if let Some(m) = &spool.value.max_bytes {
            s.spool_max_bytes = m.value;
        }
    }
    s.syslog = raw.syslog.iter().filter_map(|r| syslog(r, p)).collect();
    s
}

/// `audit.checkpoint`: the signing key's path (read by [`crate::site::Site::load`]) and the
/// interval.
fn checkpoint(raw: &RawCheckpoint, p: &mut Problems) -> Option<CheckpointSettings> {
    let signing_key_file = p.file(&raw.signing_key_file, "audit.checkpoint.signing_key_file");
    let interval = match &raw.interval {
        None => DEFAULT_CHECKPOINT_INTERVAL,
        Some(v) => match humantime::parse_duration(v.value.trim()) {
            Ok(d) if (MIN_CHECKPOINT_INTERVAL..=MAX_CHECKPOINT_INTERVAL).contains(&d) => d,
            Ok(_) => {
                p.at(
                    v,
                    format!("audit.checkpoint.interval {} is out of range", v.value),
                    Some("use 1s to 24h".into()),
                );
                return None;
            }
            Err(e) => {
                p.at(
                    v,
                    format!(
                        "audit.checkpoint.interval `{}` is not a duration: {e}",
                        v.value
                    ),
                    Some("write it with a unit, e.g. `60s` or `5m`".into()),
                );
                return None;
            }
        },
    };
    Some(CheckpointSettings {
        signing_key_file,
        interval,
    })
}

fn path(v: &Spanned<String>, field: &str, p: &mut Problems) -> Option<PathBuf> {
    if v.value.trim().is_empty() {
        p.at(v, format!("{field} is empty"), None);
        return None;
    }
    Some(PathBuf::from(&v.value))
}

fn syslog(raw: &Spanned<RawSyslog>, p: &mut Problems) -> Option<SyslogSettings> {
    let r = &raw.value;
    let transport = match r.transport.value.as_str() {
        "udp" => SyslogTransport::Udp,
        "tcp" => SyslogTransport::Tcp,
        "tls" => SyslogTransport::Tls,
        "relp" => SyslogTransport::Relp,
        "relp-tls" => SyslogTransport::RelpTls,
        other => {
            p.at(
                &r.transport,
                format!("unknown syslog transport `{other}`"),
                Some("use `udp`, `tcp` (RFC 6587), `tls` (RFC 5425), `relp` or `relp-tls` (acknowledged)".into()),
            );
            return None;
        }
    };
    let format = match r.format.as_ref().map(|f| (f, f.value.as_str())) {
        None | Some((_, "rfc5424")) => SyslogFormat::Rfc5424,
        Some((_, "cef")) => SyslogFormat::Cef,
        Some((f, other)) => {
            p.at(
                f,
                format!("unknown syslog format `{other}`"),
                Some("use `rfc5424` (JSON event as the message) or `cef`".into()),
            );
            return None;
        }
    };
    if !valid_address(&r.address.value) {
        p.at(
            &r.address,
            format!("syslog address `{}` is not host:port", r.address.value),
            Some("e.g. `10.99.0.20:6514` or `[fd00::20]:6514` or `siem.example:6514`".into()),
        );
        return None;
    }
    let receiver = format!("syslog receiver {}", r.address.value);
    let ca = r.ca.as_ref().map(|c| p.file(c, format!("{receiver}: ca")));
    let tls = matches!(transport, SyslogTransport::Tls | SyslogTransport::RelpTls);
    if tls && ca.is_none() {
        p.at(
            &r.transport,
            format!(
                "a {} syslog receiver needs `ca`: the PEM certificate(s) that verify it",
                r.transport.value
            ),
            None,
        );
        return None;
    }
    let client_cert = r
        .client_cert
        .as_ref()
        .map(|c| p.file(c, format!("{receiver}: client_cert")));
    let client_key = r
        .client_key
        .as_ref()
        .map(|c| p.file(c, format!("{receiver}: client_key")));
    if client_cert.is_some() != client_key.is_some() {
        p.at(
            raw,
            "syslog: `client_cert` and `client_key` go together",
            None,
        );
        return None;
    }
    Some(SyslogSettings {
        address: r.address.value.clone(),
        transport,
        format,
        ca,
        server_name: r.server_name.as_ref().map(|n| n.value.clone()),
        client_cert,
        client_key,
    })
}

/// host:port with a port number and a non-empty host.
fn valid_address(a: &str) -> bool {
    a.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}
