//! TLS for the syslog and RELP sinks: the CA and client certificate files read (bounded) and
//! the rustls client configuration built from them.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{MAX_PEM_BYTES, RemoteError, TlsSettings};

pub(super) fn read_pem(name: &str, path: &Path) -> Result<Vec<u8>, RemoteError> {
    let err = |reason: String| RemoteError::TlsFile {
        name: name.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

pub(super) fn certificates(
    name: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let pem = read_pem(name, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RemoteError::TlsFile {
            name: name.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RemoteError::TlsFile {
            name: name.to_owned(),
            path: path.to_owned(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The TLS client configuration: server verified against `ca`, optional client certificate.
/// ring as the crypto provider, TLS 1.2 and 1.3.
pub(super) fn tls_config(name: &str, tls: &TlsSettings) -> Result<Arc<ClientConfig>, RemoteError> {
    let tls_err = |source| RemoteError::Tls {
        name: name.to_owned(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(name, &tls.ca)? {
        roots.add(cert).map_err(|e| RemoteError::TlsFile {
            name: name.to_owned(),
            path: tls.ca.clone(),
            reason: e.to_string(),
        })?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(name, cert)?;
            let pem = read_pem(name, key)?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| RemoteError::TlsFile {
                    name: name.to_owned(),
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(tls_err)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(RemoteError::ClientAuthIncomplete {
                name: name.to_owned(),
            });
        }
    };
    Ok(Arc::new(config))
}
