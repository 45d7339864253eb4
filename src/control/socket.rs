//! The control socket: a Unix stream socket (mode 0600) on which `zonegate reload` asks the
//! running daemon to reload and waits for the result. One command line per connection, one
//! JSON line back.

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

/// Binds the socket (replacing a stale one) and serves it until the receiver is dropped.
pub fn listen(path: &Path) -> Result<mpsc::Receiver<Request>, SocketError> {
    let io = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
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
    Ok(rx)
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
