//! The management API: `/healthz`, `/readyz`, `/status` and `/metrics` on the management
//! address only (`gateway.management.api`). Every endpoint but `/healthz` needs a credential: the
//! API key as `Authorization: Bearer <key>`, or a client certificate signed by `tls.client_ca`.
//! Every request, answered or refused, is an `api-access` audit event.
//!
//! Connections are accepted here, not by a framework, so that each request knows the verified
//! client certificate of its TLS connection; hyper serves the axum router on each one.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Extension, Request, State as Shared};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::audit::{self, Audit, Event, Severity};
use crate::config::model::Api as ApiSettings;
use crate::metrics::{AuditNumbers, KernelCounter, Metrics, ReceiverNumbers};
use crate::site::Site;

/// Management connections at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has for the TLS handshake and for each request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest key or certificate file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Paths longer than this are cut in audit events.
const MAX_AUDITED_PATH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("management API: cannot read {what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("management API: {0}")]
    Tls(#[from] rustls::Error),
    #[error("management API: client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    #[error("management API: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the daemon tells the API about itself; the daemon updates it as things change.
#[derive(Debug)]
pub struct State {
    metrics: Arc<Metrics>,
    started: Instant,
    started_at: String,
    ruleset_verified: AtomicBool,
    policies_compiled: AtomicBool,
    inner: Mutex<Inner>,
    /// The sources held in quarantine, for `/status`.
    quarantine: std::sync::OnceLock<Arc<crate::quarantine::Quarantine>>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Inner {
    site: Option<SiteSummary>,
    last_reload: Option<ReloadResult>,
}

/// The enforced configuration, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSummary {
    pub file: String,
    pub sha256: String,
    pub zones: Vec<ZoneSummary>,
    pub conduits: Vec<ConduitSummary>,
    /// Policies and register maps: path -> SHA-256.
    pub files: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ZoneSummary {
    pub name: String,
    pub level: f64,
    pub security_level: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConduitSummary {
    pub name: String,
    pub from: String,
    pub to: String,
    pub services: Vec<String>,
    /// `enforce` or `monitor` for inspected conduits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadResult {
    pub at: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl State {
    pub fn new(metrics: Arc<Metrics>) -> State {
        State {
            metrics,
            started: Instant::now(),
            started_at: now_rfc3339(),
            ruleset_verified: AtomicBool::new(false),
            policies_compiled: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            quarantine: std::sync::OnceLock::new(),
        }
    }

    /// The daemon's quarantine, whose sources `/status` lists.
    pub fn set_quarantine(&self, quarantine: Arc<crate::quarantine::Quarantine>) {
        let _ = self.quarantine.set(quarantine);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The site now enforced: its policies are compiled (a [`Site`] exists only then).
    pub fn set_site(&self, site: &Site) {
        let fingerprint = site.fingerprint();
        let model = &site.model;
        // (conduit, policy file, revision) of every compiled policy, once each, for metrics.
        let mut policies = Vec::new();
        for c in &model.conduits {
            for p in [site.policy(&c.name), site.opcua_policy(&c.name)]
                .into_iter()
                .flatten()
            {
                let entry = (c.name.clone(), p.name().to_owned(), p.revision().to_owned());
                if !policies.contains(&entry) {
                    policies.push(entry);
                }
            }
        }
        self.metrics.set_config(
            fingerprint.file.clone(),
            fingerprint.sha256.clone(),
            policies,
        );
        let summary = SiteSummary {
            file: fingerprint.file,
            sha256: fingerprint.sha256,
            files: fingerprint.files,
            zones: model
                .zones
                .iter()
                .map(|z| ZoneSummary {
                    name: z.name.clone(),
                    level: z.level.number(),
                    security_level: z.security_level.value(),
                })
                .collect(),
            conduits: model
                .conduits
                .iter()
                .map(|c| ConduitSummary {
                    name: c.name.clone(),
                    from: c.from.clone(),
                    to: c.to.clone(),
                    services: c.services.iter().map(ToString::to_string).collect(),
                    mode: c.inspection.as_ref().map(|i| i.mode.as_str()),
                    policy_revision: site.policy(&c.name).map(|p| p.revision().to_owned()),
                })
                .collect(),
        };
        self.lock().site = Some(summary);
        self.policies_compiled.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    /// Whether the kernel holds the ruleset zonegate applied (checked after each apply and
    /// verification).
    pub fn set_ruleset_verified(&self, verified: bool) {
        self.ruleset_verified.store(verified, Ordering::SeqCst);
        self.update_ready();
    }

    /// The outcome of a reload; the error is shown as given.
    pub fn record_reload(&self, result: Result<(), String>) {
        self.metrics.record_reload(result.is_ok());
        self.lock().last_reload = Some(ReloadResult {
            at: now_rfc3339(),
            ok: result.is_ok(),
            error: result.err(),
        });
    }

    /// Ruleset applied and verified, policies compiled.
    pub fn ready(&self) -> bool {
        self.ruleset_verified.load(Ordering::SeqCst)
            && self.policies_compiled.load(Ordering::SeqCst)
    }

    fn update_ready(&self) {
        self.metrics.set_ready(self.ready());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn status(&self) -> serde_json::Value {
        let inner = self.lock().clone();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.started_at,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "ready": self.ready(),
            "ruleset_verified": self.ruleset_verified.load(Ordering::SeqCst),
            "policies_compiled": self.policies_compiled.load(Ordering::SeqCst),
            "config": inner.site,
            "last_reload": inner.last_reload,
            "quarantined": self.quarantine.get().map(|q| q.list()).unwrap_or_default(),
        })
    }
}

/// The API key, kept out of logs and Debug output.
struct ApiKey(Vec<u8>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// True when the request's `Authorization: Bearer` carries the key (constant-time compare).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        bool::from(token.ct_eq(&self.0))
    }
}

/// The bound listener with its credentials, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    key: Option<ApiKey>,
}

/// Who is on the other end of a connection, as the TLS handshake established it.
#[derive(Debug, Clone)]
struct Client {
    peer: SocketAddr,
    local: SocketAddr,
    /// The subject of a client certificate that `client_ca` verified.
    certificate: Option<String>,
}

/// What authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credential {
    None,
    ApiKey,
    Certificate(String),
}

struct Ctx {
    state: Arc<State>,
    audit: Audit,
    key: Option<ApiKey>,
}

impl Server {
    /// Reads the key and certificates and binds `address:port` (the management address, which
    /// may appear on its interface later: the socket is bound with IP_FREEBIND).
    pub fn bind(settings: &ApiSettings, address: IpAddr) -> Result<Server, ApiError> {
        let key = match &settings.api_key_file {
            Some(path) => Some(read_key(path)?),
            None => None,
        };
        let tls = match &settings.tls {
            Some(t) => Some(tls_acceptor(
                &t.certificate,
                &t.key,
                t.client_ca.as_deref(),
                key.is_some(),
            )?),
            None => None,
        };
        let addr = SocketAddr::new(address, settings.port);
        let listener = listen(addr).map_err(|source| ApiError::Listen { addr, source })?;
        Ok(Server { listener, tls, key })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, state: Arc<State>, audit: Audit) {
        let ctx = Arc::new(Ctx {
            state,
            audit,
            key: self.key,
        });
        let router = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
            .with_state(ctx);
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "management API: accept failed");
                    continue;
                }
            };
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let router = router.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        let accepted =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                        match accepted {
                            Ok(Ok(tls)) => {
                                let certificate = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| subject(c));
                                let client = Client {
                                    peer,
                                    local,
                                    certificate,
                                };
                                serve_connection(tls, router, client).await;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "management API: TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::info!(%peer, "management API: TLS handshake timed out");
                            }
                        }
                    }
                    None => {
                        let client = Client {
                            peer,
                            local,
                            certificate: None,
                        };
                        serve_connection(stream, router, client).await;
                    }
                }
                drop(permit);
            });
        }
    }
}

async fn serve_connection<S>(io: S, router: axum::Router, client: Client)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer;
    let service = hyper_util::service::TowerToHyperService::new(router.layer(Extension(client)));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "management API connection");
    }
}

/// Authenticates the request (all but `/healthz` need a credential) and audits it.
async fn guard(
    Shared(ctx): Shared<Arc<Ctx>>,
    Extension(client): Extension<Client>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let path: String = request
        .uri()
        .path()
        .chars()
        .take(MAX_AUDITED_PATH)
        .collect();
    let credential = match (&client.certificate, &ctx.key) {
        (Some(subject), _) => Credential::Certificate(subject.clone()),
        (None, Some(key)) if key.admits(request.headers()) => Credential::ApiKey,
        _ => Credential::None,
    };
    let response = if credential == Credential::None && path != "/healthz" {
        let mut r = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(request).await
    };
    ctx.audit.emit(access_event(
        &client,
        &method,
        &path,
        response.status(),
        &credential,
    ));
    response
}

/// `api-access`: who asked what, with which credential (never the key itself), and the answer.
fn access_event(
    client: &Client,
    method: &str,
    path: &str,
    status: StatusCode,
    credential: &Credential,
) -> Event {
    let denied = status == StatusCode::UNAUTHORIZED;
    let mut e = Event::now(
        "api-access",
        if denied { "alert" } else { "event" },
        &["web", "iam"],
        if denied {
            &["access", "denied"]
        } else {
            &["access", "allowed"]
        },
        if status.is_success() {
            "success"
        } else {
            "failure"
        },
        if denied {
            Severity::Warning
        } else {
            Severity::Info
        },
    );
    let (name, subject) = match credential {
        Credential::None => ("none", None),
        Credential::ApiKey => ("api_key", None),
        Credential::Certificate(s) => ("certificate", Some(s.as_str())),
    };
    e.message = format!(
        "management API: {method} {path} from {} ({name}): {}",
        client.peer,
        status.as_u16()
    );
    e.source = Some(audit::Endpoint::new(client.peer));
    e.destination = Some(audit::Endpoint::new(client.local));
    e.network = Some(audit::Network::new("tcp", None, client.peer.ip()));
    e.http = Some(serde_json::json!({
        "request": { "method": method },
        "response": { "status_code": status.as_u16() },
    }));
    e.url = Some(serde_json::json!({ "path": path }));
    let mut api = serde_json::json!({ "credential": name });
    if let (Some(s), Some(obj)) = (subject, api.as_object_mut()) {
        obj.insert("certificate_subject".into(), s.into());
    }
    e.zonegate.api = Some(api);
    e
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(Shared(ctx): Shared<Arc<Ctx>>) -> Response {
    let s = &ctx.state;
    let body = axum::Json(serde_json::json!({
        "ready": s.ready(),
        "ruleset_verified": s.ruleset_verified.load(Ordering::SeqCst),
        "policies_compiled": s.policies_compiled.load(Ordering::SeqCst),
    }));
    let code = if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn status(Shared(ctx): Shared<Arc<Ctx>>) -> axum::Json<serde_json::Value> {
    axum::Json(ctx.state.status())
}

async fn metrics(Shared(ctx): Shared<Arc<Ctx>>) -> Response {
    // Reading the kernel's counters runs `nft`: off the async threads.
    let encoded = tokio::task::spawn_blocking(move || {
        let kernel = crate::nft::counters().ok();
        let kernel: Option<Vec<KernelCounter<'_>>> = kernel.as_ref().map(|counters| {
            counters
                .iter()
                .map(|c| KernelCounter {
                    name: &c.name,
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect()
        });
        let stats = ctx.audit.stats();
        let audit = AuditNumbers {
            queued: stats.queued,
            lost: stats.lost,
            healthy: stats.healthy,
            receivers: stats
                .receivers
                .iter()
                .map(|(name, r)| ReceiverNumbers {
                    name,
                    spooled_bytes: r.spooled_bytes,
                    dropped: r.dropped,
                    connected: r.connected,
                })
                .collect(),
        };
        ctx.state.metrics.encode(&audit, kernel.as_deref())
    })
    .await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "management API: metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// A TCP listener on exactly `addr`.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match addr {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_freebind_v6(true)?;
        }
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ApiError> {
    use std::io::Read as _;
    let err = |reason: String| ApiError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The key file's content without trailing line ends and spaces; it must not be empty.
fn read_key(path: &Path) -> Result<ApiKey, ApiError> {
    let mut bytes = read_file("API key file", path)?;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ApiError::File {
            what: "API key file",
            path: path.to_owned(),
            reason: "it is empty".into(),
        });
    }
    Ok(ApiKey(bytes))
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::File {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ApiError::File {
            what,
            path: path.to_owned(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// TLS 1.2 and 1.3 on ring. With `client_ca`, a client certificate it signs authenticates;
/// one it does not sign fails the handshake. A client without a certificate is let through
/// the handshake only when an API key can still authenticate it.
fn tls_acceptor(
    certificate: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    has_api_key: bool,
) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("certificate", certificate)?;
    let key_pem = read_file("key", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ApiError::File {
        what: "key",
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client CA", ca)? {
                roots.add(cert).map_err(|e| ApiError::File {
                    what: "client CA",
                    path: ca.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if has_api_key {
                verifier.allow_unauthenticated().build()?
            } else {
                verifier.build()?
            };
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate's subject as text (RFC 4514 order as x509-parser writes it).
fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_admitted_only_as_a_bearer_token() {
        let key = ApiKey(b"s3cret".to_vec());
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert!(key.admits(&headers("Bearer s3cret")));
        assert!(!key.admits(&headers("Bearer s3cre")));
        assert!(!key.admits(&headers("Bearer s3cret2")));
        assert!(!key.admits(&headers("Basic s3cret")));
        assert!(!key.admits(&HeaderMap::new()));
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
    }

    #[test]
    fn a_key_file_loses_its_line_end_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("zonegate-api-key-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("key");
        let _ = std::fs::write(&path, "abc\n");
        assert!(read_key(&path).is_ok_and(|k| k.0 == b"abc"));
        let _ = std::fs::write(&path, "\n");
        assert!(read_key(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
