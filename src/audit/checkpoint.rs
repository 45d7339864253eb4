//! Signed checkpoints: every `audit.checkpoint.interval`, when the daemon stops, and as the first
//! event of a new log file, the writer seals an `audit-checkpoint` event into the chain. It states
//! the chain's position (the sequence number and hash of the event before it), a digest of the
//! events since the previous checkpoint, and an Ed25519 signature over both. The gateway holds the
//! private key; a SOC verifies with the public key alone, which cannot sign.
//!
//! The signature is over this byte string (110 bytes):
//!
//! ```text
//! "zonegate-audit-checkpoint-v1" 0x00   29 bytes: what is signed, and the format's version
//! reason                                 1 byte: 1 interval, 2 stop, 3 rotation
//! from_sequence                          8 bytes, big-endian: the first event the digest covers
//! sequence                               8 bytes, big-endian: the last event covered (the head)
//! head                                  32 bytes: that event's chain hash
//! digest                                32 bytes: SHA-256 over SHA-256(line) of every event line
//!                                       from from_sequence to sequence (without the newline)
//! ```
//!
//! Keys are PEM files as OpenSSL writes them: the private key PKCS#8 (`openssl genpkey -algorithm
//! ed25519`), the public key SubjectPublicKeyInfo (`openssl pkey -pubout`). `zonegate audit
//! keygen` writes both.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a checkpoint signature is over, and the format's version.
pub const CONTEXT: &[u8] = b"zonegate-audit-checkpoint-v1";
/// Longest key file read: a PEM key is a few hundred bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not an Ed25519 private key in PKCS#8 PEM (`zonegate audit keygen` or `openssl genpkey -algorithm ed25519` writes one): {reason}",
        path.display()
    )]
    NotPrivateKey { path: PathBuf, reason: String },
    #[error(
        "{} is not an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`, as `zonegate audit keygen` or `openssl pkey -pubout` writes it): {reason}",
        path.display()
    )]
    NotPublicKey { path: PathBuf, reason: String },
    #[error("{} exists: not overwritten", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("the private and the public key need two different files")]
    SameFile,
}

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `audit.checkpoint.interval` passed with new events.
    Interval,
    /// The daemon stopped cleanly: the last event of its log.
    Stop,
    /// The first event of a new file (rotated by size, or a new chain seal): the file begins
    /// here, mid-chain, and the events before it are in the previous file.
    Rotation,
}

impl Reason {
    fn code(self) -> u8 {
        match self {
            Reason::Interval => 1,
            Reason::Stop => 2,
            Reason::Rotation => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Interval => "interval",
            Reason::Stop => "stop",
            Reason::Rotation => "rotation",
        }
    }
}

/// `zonegate.checkpoint` of an `audit-checkpoint` event. Hashes in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub reason: Reason,
    pub from_sequence: u64,
    pub sequence: u64,
    pub head: String,
    pub digest: String,
    /// Which key signed: the first 8 bytes of SHA-256 over the raw public key, in hex. A hint for
    /// finding the key; the signature decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Ed25519 over [`signed_bytes`], in hex; absent without `audit.checkpoint` (a rotation start
    /// is then written unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a checkpoint does not hold up against a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFault {
    Unsigned,
    /// Not hex of the right length.
    Malformed,
    /// Signed, but not by this key (by its key id).
    OtherKey {
        key_id: String,
    },
    BadSignature,
}

/// The bytes a checkpoint signature is over (see the module documentation).
pub fn signed_bytes(
    reason: Reason,
    from_sequence: u64,
    sequence: u64,
    head: &[u8; 32],
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len().saturating_add(82));
    out.extend_from_slice(CONTEXT);
    out.push(0);
    out.push(reason.code());
    out.extend_from_slice(&from_sequence.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(digest);
    out
}

/// A key's id: the first 8 bytes of SHA-256 over its 32 raw bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    let hash = Sha256::digest(key.as_bytes());
    hex(hash.get(..8).unwrap_or_default())
}

impl Checkpoint {
    /// A checkpoint of events `from_sequence..=sequence` ending in `head`, signed with `key`.
    pub fn new(
        reason: Reason,
        from_sequence: u64,
        sequence: u64,
        head: &[u8; 32],
        digest: &[u8; 32],
        key: Option<&SigningKey>,
    ) -> Checkpoint {
        let signed = signed_bytes(reason, from_sequence, sequence, head, digest);
        Checkpoint {
            reason,
            from_sequence,
            sequence,
            head: hex(head),
            digest: hex(digest),
            key_id: key.map(|k| key_id(&k.verifying_key())),
            signature: key.map(|k| hex(&k.sign(&signed).to_bytes())),
        }
    }

    pub fn head_bytes(&self) -> Option<[u8; 32]> {
        parse_hex(&self.head)
    }

    pub fn digest_bytes(&self) -> Option<[u8; 32]> {
        parse_hex(&self.digest)
    }

    /// Whether `public` signed exactly this checkpoint.
    pub fn verify(&self, public: &VerifyingKey) -> Result<(), SignatureFault> {
        let Some(signature) = &self.signature else {
            return Err(SignatureFault::Unsigned);
        };
        let (Some(head), Some(digest), Some(signature)) = (
            self.head_bytes(),
            self.digest_bytes(),
            parse_hex::<64>(signature),
        ) else {
            return Err(SignatureFault::Malformed);
        };
        let signed = signed_bytes(
            self.reason,
            self.from_sequence,
            self.sequence,
            &head,
            &digest,
        );
        match public.verify_strict(&signed, &Signature::from_bytes(&signature)) {
            Ok(()) => Ok(()),
            Err(_) => match &self.key_id {
                Some(id) if *id != key_id(public) => {
                    Err(SignatureFault::OtherKey { key_id: id.clone() })
                }
                _ => Err(SignatureFault::BadSignature),
            },
        }
    }
}

/// SHA-256 of one event line (without its newline), as the digest takes it.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// The digest of events: fed line hashes in order.
#[derive(Debug, Clone, Default)]
pub struct Digest(Sha256);

impl Digest {
    pub fn add(&mut self, line_hash: &[u8; 32]) {
        self.0.update(line_hash);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

fn read_bounded(path: &Path) -> Result<String, CheckpointError> {
    let read = |source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(read)?;
    Ok(text)
}

/// The gateway's signing key (`audit.checkpoint.signing_key_file`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, CheckpointError> {
    let text = Zeroizing::new(read_bounded(path)?);
    SigningKey::from_pkcs8_pem(&text).map_err(|e| CheckpointError::NotPrivateKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A public key to verify checkpoints with (`audit verify --public-key`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, CheckpointError> {
    let text = read_bounded(path)?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| CheckpointError::NotPublicKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// `zonegate audit keygen`: a new key pair from the operating system's random source, the
/// private key (PKCS#8 PEM, mode 0600) and the public key (SubjectPublicKeyInfo PEM, mode 0644)
/// written to new files; existing files are never overwritten.
pub fn generate(private: &Path, public: &Path) -> Result<VerifyingKey, CheckpointError> {
    if private == public {
        return Err(CheckpointError::SameFile);
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    // PKCS#8 v1 (RFC 8410, without the public key): what `openssl genpkey` writes and every
    // OpenSSL version reads.
    let private_pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let private_file = create_new(private, 0o600)?;
    let public_file = match create_new(public, 0o644) {
        Ok(f) => f,
        Err(e) => {
            drop(private_file);
            let _ = std::fs::remove_file(private);
            return Err(e);
        }
    };
    for (path, mut file, text) in [
        (private, private_file, private_pem.as_bytes()),
        (public, public_file, public_pem.as_bytes()),
    ] {
        file.write_all(text)
            .and_then(|()| file.sync_all())
            .map_err(|source| CheckpointError::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(key.verifying_key())
}

fn create_new(path: &Path, mode: u32) -> Result<std::fs::File, CheckpointError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CheckpointError::Exists {
                    path: path.to_owned(),
                }
            } else {
                CheckpointError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(d) = DIGITS.get(usize::from(nibble)) {
                out.push(char::from(*d));
            }
        }
    }
    out
}

/// `N` bytes from exactly `2 * N` hex digits.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != N.checked_mul(2)? {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;

    fn checkpoint(key: &SigningKey) -> Checkpoint {
        Checkpoint::new(Reason::Interval, 3, 9, &[7; 32], &[9; 32], Some(key))
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_only_for_what_was_signed() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let cp = checkpoint(&key);
        assert_eq!(cp.verify(&key.verifying_key()), Ok(()));
        assert_eq!(
            cp.key_id.as_deref(),
            Some(key_id(&key.verifying_key()).as_str())
        );
        for edit in [
            |c: &mut Checkpoint| c.sequence += 1,
            |c: &mut Checkpoint| c.from_sequence -= 1,
            |c: &mut Checkpoint| c.reason = Reason::Rotation,
            |c: &mut Checkpoint| c.head = hex(&[8; 32]),
            |c: &mut Checkpoint| c.digest = hex(&[8; 32]),
        ] {
            let mut c = cp.clone();
            edit(&mut c);
            assert_eq!(
                c.verify(&key.verifying_key()),
                Err(SignatureFault::BadSignature)
            );
        }
        let other = SigningKey::generate(&mut rand_core::OsRng);
        assert!(matches!(
            cp.verify(&other.verifying_key()),
            Err(SignatureFault::OtherKey { .. })
        ));
        let unsigned = Checkpoint::new(Reason::Stop, 1, 2, &[0; 32], &[0; 32], None);
        assert_eq!(
            unsigned.verify(&key.verifying_key()),
            Err(SignatureFault::Unsigned)
        );
    }

    #[test]
    fn the_signed_bytes_are_the_documented_layout() {
        let b = signed_bytes(Reason::Stop, 0x0102, 0x0304, &[0xaa; 32], &[0xbb; 32]);
        assert_eq!(b.len(), 110);
        assert_eq!(&b[..29], b"zonegate-audit-checkpoint-v1\0");
        assert_eq!(b[29], 2);
        assert_eq!(&b[30..38], &0x0102u64.to_be_bytes());
        assert_eq!(&b[38..46], &0x0304u64.to_be_bytes());
        assert_eq!(&b[46..78], &[0xaa; 32]);
        assert_eq!(&b[78..], &[0xbb; 32]);
    }

    #[test]
    fn keygen_writes_pem_keys_that_load_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("signing.pem");
        let public = dir.path().join("signing.pub.pem");
        let generated = generate(&private, &public).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&private).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        let public_text = std::fs::read_to_string(&public).unwrap();
        assert!(public_text.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let key = load_signing_key(&private).unwrap();
        assert_eq!(key.verifying_key(), generated);
        assert_eq!(load_verifying_key(&public).unwrap(), generated);
        // Each file is what it claims to be, and not the other.
        assert!(matches!(
            load_signing_key(&public),
            Err(CheckpointError::NotPrivateKey { .. })
        ));
        assert!(matches!(
            load_verifying_key(&private),
            Err(CheckpointError::NotPublicKey { .. })
        ));
        // Never overwritten: the old key stays.
        assert!(matches!(
            generate(&private, &dir.path().join("other.pem")),
            Err(CheckpointError::Exists { .. })
        ));
        assert!(!dir.path().join("other.pem").exists());
        assert!(matches!(
            generate(&dir.path().join("new.pem"), &public),
            Err(CheckpointError::Exists { .. })
        ));
        assert!(
            !dir.path().join("new.pem").exists(),
            "a half-made key pair is removed"
        );
        assert_eq!(
            load_signing_key(&private).unwrap().verifying_key(),
            generated
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0x00, 0xff, 0x1a]), "00ff1a");
        assert_eq!(parse_hex::<3>("00ff1a"), Some([0x00, 0xff, 0x1a]));
        assert_eq!(parse_hex::<3>("00ff1"), None);
        assert_eq!(parse_hex::<3>("00ff1g"), None);
    }
}
