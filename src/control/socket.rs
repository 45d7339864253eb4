//! The control socket: a Unix stream socket (mode 0600) on which `zonegate reload` asks the
//! running daemon to reload and waits for the result. One command line per connection, one
//! JSON line back. A daemon takes the socket only when no other daemon answers on it, and
//! removes it when it stops, so that two `zonegate run` on one host cannot fight over it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Where the socket lives without `--control-socket`: systemd's RuntimeDirectory=zonegate.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/zonegate/control.sock";
/// Longest command line accepted.
const MAX_COMMAND_LEN: u64 = 256;
/// How long a client has to send its command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a starting daemon waits for the answer of one already on its socket.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `zonegate reload` waits for the daemon's answer (a reload compiles policies, runs
/// their tests and applies the ruleset).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Set to 1 to accept test-only commands (`stall-data-path MS`). Never set in production.
pub const TEST_HOOKS_ENV: &str = "ZONEGATE_TEST_HOOKS";

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: no answer within {REPLY_TIMEOUT:?}", path.display())]
    Timeout { path: PathBuf },
    #[error("control socket {}: unreadable answer: {answer}", path.display())]
    Answer { path: PathBuf, answer: String },
    #[error(
        "control socket {}: {holder} already answers on it, so this daemon does not start; stop \
         that one first, or give this one its own socket with --control-socket (and its own \
         --state-dir)",
        path.display()
    )]
    InUse { path: PathBuf, holder: String },
    #[error("control socket {}: exists and is not a socket; remove it or choose another with --control-socket", path.display())]
    NotASocket { path: PathBuf },
}

/// The socket file this daemon bound. Dropping it removes the file, unless another process
/// has replaced it since.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the socket as bound.
    identity: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
        }
    }
}

/// Whether a daemon holds the socket at `path`.
enum Holder {
    /// No file there.
    Nobody,
    /// A socket file nobody listens on: left by a daemon that was killed.
    Stale,
    /// Someone accepts connections on it; who, as the error names it.
    Daemon(String),
}

fn holder(path: &Path) -> Result<Holder, SocketError> {
    use std::io::{BufRead as _, Write as _};
    use std::os::unix::fs::FileTypeExt as _;
    let io = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Nobody),
        Err(e) => return Err(io(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => {}
    }
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(Holder::Stale),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Nobody),
        // A full backlog, or a socket of another user's: someone is there.
        Err(e) => return Ok(Holder::Daemon(format!("a process ({e})"))),
    };
    // Who it is, if it answers as a zonegate daemon does; listening is enough to keep off.
    let answer = stream
        .set_read_timeout(Some(PING_TIMEOUT))
        .and_then(|()| stream.write_all(b"ping\n"))
        .and_then(|()| {
            let mut line = String::new();
            std::io::BufReader::new(std::io::Read::take(&stream, MAX_COMMAND_LEN))
                .read_line(&mut line)
                .map(|_| line)
        });
    let pid = answer
        .ok()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v.get("pid").and_then(serde_json::Value::as_u64));
    Ok(Holder::Daemon(match pid {
        Some(pid) => format!("a zonegate daemon (pid {pid})"),
        None => "a process that accepts connections".to_owned(),
    }))
}

/// What a client asked for, with where the answer goes.
#[derive(Debug)]
pub enum Request {
    Reload(oneshot::Sender<serde_json::Value>),
    /// Test hook: block every worker of the proxy runtime for this long.
    StallDataPath(Duration),
}

/// The control socket path: `--control-socket`, else `$RUNTIME_DIRECTORY/control.sock`, else
/// [`DEFAULT_CONTROL_SOCKET`].
pub fn default_path() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|d| {
            // systemd may pass several directories, colon-separated; ours is the first.
            let d = d.to_str()?.split(':').next()?.to_owned();
            Some(PathBuf::from(d).join("control.sock"))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

/// Binds the socket and serves it until the receiver is dropped; the file goes when the
/// [`SocketFile`] is dropped. A socket a daemon answers on is [`SocketError::InUse`]; a stale
/// one is replaced.
pub fn listen(path: &Path) -> Result<(mpsc::Receiver<Request>, SocketFile), SocketError> {
    use std::os::unix::fs::MetadataExt as _;
    let io = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match holder(path)? {
        Holder::Nobody => {}
        Holder::Stale => match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "replacing a stale control socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        },
        Holder::Daemon(holder) => {
            return Err(SocketError::InUse {
                path: path.to_owned(),
                holder,
            });
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            // Another daemon bound it between the check and here.
            SocketError::InUse {
                path: path.to_owned(),
                holder: "another process".to_owned(),
            }
        } else {
            io(e)
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    let file = SocketFile {
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
    };
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    let hooks = std::env::var(TEST_HOOKS_ENV).is_ok_and(|v| v == "1");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, most likely: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let client = tx.clone();
            tokio::spawn(async move {
                if let Ok(Err(e)) =
                    tokio::time::timeout(REPLY_TIMEOUT, serve(stream, client, hooks)).await
                {
                    tracing::debug!(error = %e, "control socket client");
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok((rx, file))
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Request>, hooks: bool) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut limited = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_COMMAND_LEN));
    tokio::time::timeout(COMMAND_TIMEOUT, limited.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut words = line.split_whitespace();
    let answer = match (words.next(), words.next()) {
        (Some("reload"), None) => {
            let (reply, answer) = oneshot::channel();
            if tx.send(Request::Reload(reply)).await.is_err() {
                serde_json::json!({"ok": false, "error": "the daemon is stopping"})
            } else {
                answer.await.unwrap_or_else(
                    |_| serde_json::json!({"ok": false, "error": "the daemon is stopping"}),
                )
            }
        }
        // A starting daemon asks who holds the socket.
        (Some("ping"), None) => serde_json::json!({"ok": true, "pid": std::process::id()}),
        (Some("stall-data-path"), Some(ms)) if hooks => match ms.parse::<u64>() {
            Ok(ms) => {
                let _ = tx
                    .send(Request::StallDataPath(Duration::from_millis(ms)))
                    .await;
                serde_json::json!({"ok": true})
            }
            Err(_) => serde_json::json!({"ok": false, "error": "stall-data-path MILLISECONDS"}),
        },
        _ => {
            serde_json::json!({"ok": false, "error": format!("unknown command {:?}", line.trim())})
        }
    };
    let mut out = answer.to_string();
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

/// `zonegate reload`: asks the daemon on `path` to reload and returns its answer.
pub fn request(path: &Path, command: &str) -> Result<serde_json::Value, SocketError> {
    use std::io::{BufRead as _, Write as _};
    let io = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(io)?;
    let mut line = String::new();
    match std::io::BufReader::new(stream).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(SocketError::Timeout {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io(e)),
    }
    serde_json::from_str(&line).map_err(|_| SocketError::Answer {
        path: path.to_owned(),
        answer: line.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        std::fs::write(&path, "not a socket").unwrap();
        match listen(&path) {
            Err(SocketError::NotASocket { .. }) => {}
            other => panic!("expected NotASocket, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_ours_removed_unless_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A killed daemon's socket: the file stays, nobody listens.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (rx, file) = listen(&path).unwrap();
        let asked = path.clone();
        let answer = tokio::task::spawn_blocking(move || request(&asked, "ping"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer["pid"], std::process::id());
        drop(rx);
        drop(file);
        assert!(!path.exists(), "a stopping daemon removes its socket");

        // Someone else's socket at the path since: not ours to remove.
        let (_rx, file) = listen(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(file);
        assert!(path.exists());
    }
}
