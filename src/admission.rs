//! Admission: the bounds the proxy enforces across connections, below both the site (which
//! holds each conduit's write-rate bucket) and the proxy (which admits connections): how many
//! connections in total and per client address (within the file descriptors the process may
//! open), each conduit's write rate ([`TokenBucket`]), and the inspected [`Protocol`]s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::WriteRate;
use crate::metrics::Limit;

/// The protocols the proxy inspects, one divert port each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Modbus,
    OpcUa,
}

impl Protocol {
    /// ECS `network.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Modbus => "modbus",
            Protocol::OpcUa => "opcua",
        }
    }
}

/// Connections carried now, in total and by client address; touched only at accept and close.
#[derive(Debug)]
pub struct Connections {
    total: Arc<Semaphore>,
    total_size: usize,
    per_source: usize,
    /// Connections by client address; an address leaves the map with its last connection, so
    /// the map never holds more entries than there are connections.
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection: its place is given back when this drops.
#[derive(Debug)]
pub struct Admission {
    connections: Arc<Connections>,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    /// At most `total` connections at once, and `per_source` from one client address.
    pub fn new(total: usize, per_source: usize) -> Arc<Connections> {
        Arc::new(Connections {
            total: Arc::new(Semaphore::new(total)),
            total_size: total,
            per_source,
            by_source: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `source`, or the limit it would exceed.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admission, Limit> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Limit::Connections)?;
        let mut by_source = self
            .by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            if *n == 0 {
                by_source.remove(&source);
            }
            return Err(Limit::ConnectionsPerSource);
        }
        *n = n.saturating_add(1);
        Ok(Admission {
            connections: self.clone(),
            source,
            _permit: permit,
        })
    }

    /// The configured limits: (total, per source).
    pub fn limits(&self) -> (usize, usize) {
        (self.total_size, self.per_source)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut by_source = self
            .connections
            .by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// File descriptors kept for everything but proxied connections: listeners, the audit log and
/// its sinks, netlink sockets, the management API and control socket, `nft` pipes.
pub const RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// How many connections the process can carry at most with `wanted` configured: the soft
/// `RLIMIT_NOFILE` is raised (up to the hard limit) to two descriptors per connection (client
/// and device) plus [`RESERVED_FILE_DESCRIPTORS`]. When the hard limit is too low the limit is
/// lowered to what fits, with a warning: past it, accepting would fail with EMFILE, and a
/// connection limit that the kernel enforces first protects nothing.
pub fn fit_file_descriptors(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = u64::try_from(wanted)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(RESERVED_FILE_DESCRIPTORS);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let mut soft = soft;
    if soft < needed {
        let raised = needed.min(hard);
        match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
            Ok(()) => soft = raised,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
        }
    }
    let fits =
        usize::try_from(soft.saturating_sub(RESERVED_FILE_DESCRIPTORS) / 2).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            configured = wanted,
            carried = fits,
            open_files = soft,
            "limits.connections is more than the open file limit allows (two per connection): \
             carrying at most {fits}; raise LimitNOFILE"
        );
        return fits.max(1);
    }
    wanted
}

/// A token bucket shared by a conduit's connections, taken from only by writes (a lock per
/// write, none per read).
#[derive(Debug)]
pub struct TokenBucket {
    rate: WriteRate,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: WriteRate) -> TokenBucket {
        TokenBucket {
            rate,
            state: Mutex::new(BucketState {
                tokens: f64::from(rate.burst),
                refilled: Instant::now(),
            }),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> WriteRate {
        self.rate
    }

    /// Takes one token: false when the bucket is empty (the write is over the rate).
    pub fn take(&self) -> bool {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens =
            (s.tokens + elapsed * f64::from(self.rate.per_second)).min(f64::from(self.rate.burst));
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn per_source_limit_counts_each_address_and_frees_on_drop() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a).unwrap();
        assert_eq!(c.admit(a).unwrap_err(), Limit::ConnectionsPerSource);
        let _b1 = c.admit(b).unwrap();
        assert_eq!(c.admit(b).unwrap_err(), Limit::Connections);
        drop(a1);
        assert!(c.admit(a).is_ok());
        assert_eq!(c.limits(), (3, 2));
    }

    #[test]
    fn the_connection_limit_fits_the_open_file_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // A modest limit raises the soft limit to fit it.
        assert_eq!(fit_file_descriptors(100), 100);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(soft >= 2 * 100 + RESERVED_FILE_DESCRIPTORS);
        // One beyond the hard limit is lowered to what fits (the kernel caps the hard limit at
        // fs.nr_open, about a million, on the machines this runs on).
        if hard <= 1 << 24 {
            let beyond = usize::try_from((hard - RESERVED_FILE_DESCRIPTORS) / 2 + 1).unwrap();
            assert_eq!(fit_file_descriptors(beyond), beyond - 1);
        }
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let b = TokenBucket::new(WriteRate {
            per_second: 1,
            burst: 3,
        });
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }
}
