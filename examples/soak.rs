//! The soak/stress run (issue 7): what `zonegate run` does under load a test suite cannot time.
//! In a plant of namespaces built from the shipped zones.yaml, with a small Modbus/TCP device on
//! inverter-1 (bess zone) that can be told to stop answering, and clients on SCADA's address
//! (operations zone), it measures four things and prints them as one Markdown table:
//!
//! 1. idle connections: up to `--idle N` (10,000) connections opened through the proxy and held;
//!    how many the proxy took (the run sets `limits.connections` and `connections_per_source`
//!    high enough for all of them, from one source), its RSS before and after, KiB per proxied
//!    connection, and whether a normal read is served meanwhile;
//! 2. a flood of malformed frames from many connections for `--flood-seconds`: frames and
//!    connections per second handled, RSS after and peak;
//! 3. a slowloris pack: `--slowloris N` clients each send half an MBAP header and wait; how long
//!    until the proxy cuts them off (`limits.request_timeout`, 5 s by default; at most
//!    `--slowloris-wait` seconds are waited), and whether a normal client is served meanwhile;
//! 4. a device that stops answering in the middle of polling: time from its last answer to each
//!    client's first exception 0x0B, and that polling recovers when it answers again.
//!
//! Run it through `scripts/soak` (root; release build; raises the open-file limit).
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zonegate_testkit::REPO;
use zonegate_testkit::daemon::Daemon;
use zonegate_testkit::modbus::mbap;
use zonegate_testkit::plant::{self, Plant};

const INVERTER: &str = "10.21.0.11";
const SCADA: &str = "10.30.0.10";
const PORT: u16 = 502;

struct Args {
    idle: usize,
    flood_seconds: u64,
    slowloris: usize,
    slowloris_wait: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        idle: 10_000,
        flood_seconds: 10,
        slowloris: 2000,
        slowloris_wait: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--idle" => a.idle = v.parse().unwrap(),
            "--flood-seconds" => a.flood_seconds = v.parse().unwrap(),
            "--slowloris" => a.slowloris = v.parse().unwrap(),
            "--slowloris-wait" => a.slowloris_wait = v.parse().unwrap(),
            _ => panic!(
                "usage: soak [--idle N] [--flood-seconds S] [--slowloris N] [--slowloris-wait S]"
            ),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------------
// /proc

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn nofile_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Max open files"))?;
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{} (hard {})", f[3], f[4]))
        })
        .unwrap_or_default()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// the plant and zonegate

/// The shipped zones.yaml with absolute policy and register map paths, and connection limits
/// that let `connections` in from one source (the other limits keep their defaults).
fn zones(dir: &Path, connections: usize) -> PathBuf {
    let text = std::fs::read_to_string(format!("{REPO}/zones.yaml")).unwrap();
    let text = text
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        );
    let text = format!(
        "{text}\nlimits:\n  connections: {connections}\n  connections_per_source: {connections}\n"
    );
    let path = dir.join("zones.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `f` on a new thread in namespace `ns` (threads it starts stay there too).
fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

// ---------------------------------------------------------------------------------------------
// the device

/// A Modbus/TCP device that answers FC 03/04 with zeros and echoes FC 06, unless `silent`: then
/// it reads requests and answers nothing, as a hung PLC would.
#[derive(Default)]
struct Device {
    silent: AtomicBool,
    connections: AtomicU64,
    open: AtomicU64,
    requests: AtomicU64,
}

fn start_device(ns: &str) -> Arc<Device> {
    let dev = Arc::new(Device::default());
    let d = dev.clone();
    let (tx, rx) = mpsc::channel();
    drop(spawn_in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addr = SocketAddr::new(INVERTER.parse().unwrap(), PORT);
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            tx.send(()).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                d.connections.fetch_add(1, Ordering::Relaxed);
                d.open.fetch_add(1, Ordering::Relaxed);
                let d = d.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &d).await;
                    d.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
    }));
    rx.recv().unwrap();
    dev
}

async fn serve(mut s: tokio::net::TcpStream, dev: &Device) -> std::io::Result<()> {
    let mut hdr = [0u8; 7];
    loop {
        s.read_exact(&mut hdr).await?;
        let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1)];
        s.read_exact(&mut pdu).await?;
        dev.requests.fetch_add(1, Ordering::Relaxed);
        if dev.silent.load(Ordering::Relaxed) || pdu.is_empty() {
            continue;
        }
        let body: Vec<u8> = match pdu[0] {
            3 | 4 if pdu.len() >= 5 => {
                let qty = usize::from(u16::from_be_bytes([pdu[3], pdu[4]])).min(125);
                let mut b = vec![pdu[0], (qty * 2) as u8];
                b.resize(2 + qty * 2, 0);
                b
            }
            6 => pdu.clone(),
            f => vec![f | 0x80, 1],
        };
        let mut out = hdr[..4].to_vec();
        out.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
        out.push(hdr[6]);
        out.extend_from_slice(&body);
        s.write_all(&out).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// clients (blocking, on threads in the operations namespace)

fn connect(timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let src: IpAddr = SCADA.parse().unwrap();
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    let dst = SocketAddr::new(INVERTER.parse().unwrap(), PORT);
    socket.connect_timeout(&SockAddr::from(dst), timeout)?;
    Ok(socket.into())
}

#[derive(Debug, PartialEq)]
enum Answer {
    Ok,
    Exception(u8),
    Failed(String),
}

/// One FC03 read of holding register 300 on `conn`.
fn read_on(conn: &mut TcpStream, tid: u16, timeout: Duration) -> Answer {
    let mut req = tid.to_be_bytes().to_vec();
    req.extend_from_slice(&[0, 0, 0, 6, 1, 3, 1, 44, 0, 1]);
    conn.set_read_timeout(Some(timeout)).unwrap();
    if let Err(e) = conn.write_all(&req) {
        return Answer::Failed(e.to_string());
    }
    let mut hdr = [0u8; 7];
    if let Err(e) = conn.read_exact(&mut hdr) {
        return Answer::Failed(e.to_string());
    }
    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut pdu = vec![0u8; len.saturating_sub(1)];
    if let Err(e) = conn.read_exact(&mut pdu) {
        return Answer::Failed(e.to_string());
    }
    match pdu.first() {
        Some(f) if f & 0x80 != 0 => Answer::Exception(pdu.get(1).copied().unwrap_or(0)),
        Some(3) => Answer::Ok,
        _ => Answer::Failed(format!("unexpected answer {pdu:02x?}")),
    }
}

/// A normal client: a fresh connection and one read, from the operations namespace.
fn normal_read(ns: &str, timeout: Duration) -> (Answer, Duration) {
    spawn_in_ns(ns, move || {
        let t = Instant::now();
        let answer = match connect(timeout) {
            Ok(mut c) => read_on(&mut c, 1, timeout),
            Err(e) => Answer::Failed(format!("connect: {e}")),
        };
        (answer, t.elapsed())
    })
    .join()
    .unwrap()
}

fn describe(a: &(Answer, Duration)) -> String {
    match &a.0 {
        Answer::Ok => format!("served in {} ms", a.1.as_millis()),
        Answer::Exception(c) => format!("exception {c:#04x} after {} ms", a.1.as_millis()),
        Answer::Failed(e) => format!("not served ({e}, after {} ms)", a.1.as_millis()),
    }
}

// ---------------------------------------------------------------------------------------------
// the phases

type Rows = Vec<(String, String, String)>;

fn row(rows: &mut Rows, phase: &str, what: &str, figure: String) {
    eprintln!("soak: {phase}: {what}: {figure}");
    rows.push((phase.to_owned(), what.to_owned(), figure));
}

/// Waits until the device has `want` connections open (or `limit` passes).
fn settle(dev: &Device, want: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while dev.open.load(Ordering::Relaxed) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn idle(rows: &mut Rows, ns: &str, zg: &mut Daemon, dev: &Device, n: usize) {
    const P: &str = "idle connections";
    let rss_before = status_kib(zg.pid, "VmRSS");
    let fds_before = open_fds(zg.pid);
    let open_before = dev.open.load(Ordering::Relaxed);
    row(rows, P, "zonegate open-file limit", nofile_limit(zg.pid));
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (h, f) = (held.clone(), failed.clone());
    // 100 threads connect in parallel; a connect the proxy's full accept queue ignores waits
    // out its timeout. The whole phase stops trying after 60 s.
    spawn_in_ns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let next = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..100)
            .map(|_| {
                let (h, f, next) = (h.clone(), f.clone(), next.clone());
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < n as u64
                        && Instant::now() < deadline
                    {
                        match connect(Duration::from_secs(2)) {
                            Ok(c) => h.lock().unwrap().push(c),
                            Err(_) => {
                                f.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    })
    .join()
    .unwrap();
    let opened = held.lock().unwrap().len();
    row(
        rows,
        P,
        "connections attempted / established (client side) / failed",
        format!(
            "{n} / {opened} / {} in {:.1} s",
            failed.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        ),
    );
    settle(dev, open_before + opened as u64, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let proxied = dev.open.load(Ordering::Relaxed).saturating_sub(open_before);
    let rss_after = status_kib(zg.pid, "VmRSS");
    row(
        rows,
        P,
        "proxied (device connections open) / zonegate fds",
        format!("{proxied} / {} (was {fds_before})", open_fds(zg.pid)),
    );
    row(
        rows,
        P,
        "zonegate RSS before / holding",
        format!("{} / {}", mib(rss_before), mib(rss_after)),
    );
    if proxied > 0 {
        row(
            rows,
            P,
            "KiB per proxied connection",
            format!(
                "{:.1}",
                rss_after.saturating_sub(rss_before) as f64 / proxied as f64
            ),
        );
    }
    let a = normal_read(ns, Duration::from_secs(3));
    row(
        rows,
        P,
        "a new client's read while they are held",
        describe(&a),
    );
    // Held connections send nothing; any the proxy closed show up as readable EOF.
    let closed = held
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            match (&**c).read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count();
    row(
        rows,
        P,
        "held connections the proxy closed",
        closed.to_string(),
    );
    held.lock().unwrap().clear();
    settle(dev, open_before, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    row(
        rows,
        P,
        "after closing them: device connections open / zonegate fds / RSS / alive",
        format!(
            "{} / {} / {} / {}",
            dev.open.load(Ordering::Relaxed).saturating_sub(open_before),
            open_fds(zg.pid),
            mib(status_kib(zg.pid, "VmRSS")),
            zg.alive()
        ),
    );
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Malformed frames of the kinds the parser refuses (as in tests/hostile.rs, without the reads).
fn malformed(rng: &mut Rng) -> Vec<u8> {
    let tid = rng.next() as u16;
    match rng.below(5) {
        0 => (0..1 + rng.below(200)).map(|_| rng.next() as u8).collect(),
        1 => mbap(tid, 1 + rng.below(0xFFFE) as u16, 6, 1, &[3, 1, 44, 0, 10]),
        2 => mbap(tid, 0, [0, 1, 255, 300][rng.below(4) as usize], 1, &[3, 0]),
        3 => mbap(tid, 0, 11, 1, &[0x10, 0, 40, 0, 1, 4, 0, 7, 0, 0]),
        _ => mbap(tid, 0, 8, 1, &[0x0F, 0, 0, 0, 9, 1, 0xFF]),
    }
}

fn flood(rows: &mut Rows, ns: &str, zg: &mut Daemon, seconds: u64) {
    const P: &str = "malformed flood";
    let frames = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let (fr, co) = (frames.clone(), conns.clone());
    let started = Instant::now();
    spawn_in_ns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let workers: Vec<_> = (0..32u64)
            .map(|i| {
                let (fr, co) = (fr.clone(), co.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i + 1));
                    while Instant::now() < deadline {
                        let Ok(mut c) = connect(Duration::from_secs(1)) else {
                            continue;
                        };
                        // One malformed frame per connection: the proxy audits it and closes.
                        if c.write_all(&malformed(&mut rng)).is_ok() {
                            fr.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = c.shutdown(Shutdown::Write);
                        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut b = [0u8; 256];
                        while matches!(c.read(&mut b), Ok(n) if n > 0) {}
                        co.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    })
    .join()
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let f = frames.load(Ordering::Relaxed);
    row(
        rows,
        P,
        "frames sent and closed on (32 clients, one connection each)",
        format!("{f} in {secs:.1} s = {:.0} frames/s", f as f64 / secs),
    );
    row(
        rows,
        P,
        "zonegate RSS after / peak so far / alive",
        format!(
            "{} / {} / {}",
            mib(status_kib(zg.pid, "VmRSS")),
            mib(status_kib(zg.pid, "VmHWM")),
            zg.alive()
        ),
    );
}

fn slowloris(rows: &mut Rows, ns: &str, zg: &mut Daemon, n: usize, wait: u64) {
    const P: &str = "slowloris";
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, Option<Duration>)>();
    let ns2 = ns.to_owned();
    // Each client: connect, send 3 of the 7 MBAP header bytes, then wait for the proxy to close.
    let pack = spawn_in_ns(&ns2, move || {
        let mut conns = Vec::new();
        for _ in 0..n {
            if let Ok(mut c) = connect(Duration::from_secs(1))
                && c.write_all(&[0, 1, 0]).is_ok()
            {
                conns.push((c, Instant::now()));
            }
        }
        let opened = conns.len();
        let _ = tx.send((opened, None));
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut open: Vec<_> = conns
            .into_iter()
            .map(|(c, t)| {
                c.set_nonblocking(true).unwrap();
                (c, t)
            })
            .collect();
        while !open.is_empty() && Instant::now() < deadline {
            open.retain(|(c, t)| {
                let mut b = [0u8; 16];
                match (&*c).read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    _ => {
                        let _ = tx.send((1, Some(t.elapsed())));
                        false
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(200));
        }
        open.len()
    });
    let (opened, _) = rx.recv().unwrap();
    row(
        rows,
        P,
        "clients holding half a header",
        format!(
            "{opened} of {n} connected in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    let a = normal_read(ns, Duration::from_secs(5));
    row(
        rows,
        P,
        "a normal client's read during the pack",
        describe(&a),
    );
    let still_open = pack.join().unwrap();
    let mut cut: Vec<Duration> = rx.try_iter().filter_map(|(_, d)| d).collect();
    cut.sort();
    let figure = if cut.is_empty() {
        "none within the wait".to_owned()
    } else {
        format!(
            "{} cut off: first after {:.0} s, median {:.0} s, last {:.0} s",
            cut.len(),
            cut[0].as_secs_f64(),
            cut[cut.len() / 2].as_secs_f64(),
            cut[cut.len() - 1].as_secs_f64()
        )
    };
    row(rows, P, "cut off by the proxy", figure);
    row(
        rows,
        P,
        "still open when the run stopped waiting",
        format!("{still_open} (waited {wait} s)"),
    );
    let a = normal_read(ns, Duration::from_secs(5));
    row(rows, P, "a normal client's read afterwards", describe(&a));
    row(
        rows,
        P,
        "zonegate RSS / alive",
        format!("{} / {}", mib(status_kib(zg.pid, "VmRSS")), zg.alive()),
    );
}

fn device_stops(rows: &mut Rows, ns: &str, zg: &mut Daemon, dev: Arc<Device>) {
    const P: &str = "device stops answering";
    const CLIENTS: usize = 8;
    let stop_at = Arc::new(Mutex::new(None::<Instant>));
    let (tx, rx) = mpsc::channel::<(Duration, u64, bool)>();
    let (d, s) = (dev.clone(), stop_at.clone());
    let ns2 = ns.to_owned();
    let clients = spawn_in_ns(&ns2, move || {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (tx, s) = (tx.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut c = connect(Duration::from_secs(2)).unwrap();
                    let mut tid = 0u16;
                    let mut ok_before = 0u64;
                    // Poll every 50 ms; the first 0x0B after the device went silent ends it.
                    loop {
                        tid = tid.wrapping_add(1);
                        let a = read_on(&mut c, tid, Duration::from_secs(15));
                        let stopped = *s.lock().unwrap();
                        match (a, stopped) {
                            (Answer::Ok, _) => ok_before += 1,
                            (Answer::Exception(0x0B), Some(t)) => {
                                let _ = tx.send((t.elapsed(), ok_before, true));
                                break;
                            }
                            (_, Some(t)) => {
                                let _ = tx.send((t.elapsed(), ok_before, false));
                                break;
                            }
                            (_, None) => {}
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    // Still usable once the device answers again? (The main thread resumes it.)
                    while s.lock().unwrap().is_some() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    tid = tid.wrapping_add(1);
                    read_on(&mut c, tid, Duration::from_secs(10)) == Answer::Ok
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .filter(|ok| *ok)
            .count()
    });
    std::thread::sleep(Duration::from_secs(3));
    d.silent.store(true, Ordering::Relaxed);
    *stop_at.lock().unwrap() = Some(Instant::now());
    let mut got: Vec<(Duration, u64, bool)> = Vec::new();
    for _ in 0..CLIENTS {
        if let Ok(r) = rx.recv_timeout(Duration::from_secs(30)) {
            got.push(r);
        }
    }
    dev.silent.store(false, Ordering::Relaxed);
    *stop_at.lock().unwrap() = None;
    got.sort_by_key(|g| g.0);
    let exc = got.iter().filter(|g| g.2).count();
    row(
        rows,
        P,
        "polling clients that got exception 0x0B",
        format!(
            "{exc} of {CLIENTS} (each had {} reads answered before)",
            got.iter().map(|g| g.1).min().unwrap_or(0)
        ),
    );
    if let (Some(first), Some(last)) = (got.first(), got.last()) {
        row(
            rows,
            P,
            "time from the device's silence to each client's first 0x0B",
            format!(
                "first {:.2} s, last {:.2} s",
                first.0.as_secs_f64(),
                last.0.as_secs_f64()
            ),
        );
    }
    let recovered = clients.join().unwrap();
    row(
        rows,
        P,
        "same connections served again once it answers",
        format!("{recovered} of {CLIENTS}"),
    );
    row(
        rows,
        P,
        "zonegate RSS / peak over the whole run / alive",
        format!(
            "{} / {} / {}",
            mib(status_kib(zg.pid, "VmRSS")),
            mib(status_kib(zg.pid, "VmHWM")),
            zg.alive()
        ),
    );
}

fn main() {
    let args = parse_args();
    plant::remove_stale();
    let dir = tempfile::tempdir().unwrap();
    // Room for every idle connection and every slowloris client, plus the normal clients.
    let zones = zones(dir.path(), args.idle.max(args.slowloris) + 64);
    let model = zonegate::config::load(&zones).unwrap();
    let plant = Plant::build(&model);
    let ops = plant.zone_ns("operations");
    let dev = start_device(&plant.zone_ns("bess"));
    let mut zg = Daemon::run(&plant, &zones, dir.path(), "");
    plant.wait_for_ruleset();
    let deadline = Instant::now() + Duration::from_secs(20);
    while normal_read(&ops, Duration::from_secs(1)).0 != Answer::Ok {
        assert!(
            Instant::now() < deadline && zg.alive(),
            "no read passed the gateway; zonegate's log:\n{}",
            std::fs::read_to_string(&zg.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut rows = Rows::new();
    idle(&mut rows, &ops, &mut zg, &dev, args.idle);
    flood(&mut rows, &ops, &mut zg, args.flood_seconds);
    slowloris(
        &mut rows,
        &ops,
        &mut zg,
        args.slowloris,
        args.slowloris_wait,
    );
    device_stops(&mut rows, &ops, &mut zg, dev);

    println!("| phase | what | figure |");
    println!("|---|---|---|");
    for (p, w, f) in &rows {
        println!("| {p} | {w} | {f} |");
    }
    if !zg.alive() {
        eprintln!(
            "soak: zonegate exited; its log:\n{}",
            std::fs::read_to_string(&zg.log).unwrap_or_default()
        );
        std::process::exit(1);
    }
}
