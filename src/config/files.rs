//! The files zones.yaml names for zonegate to read: keys, certificates, CA bundles, policies and
//! register maps. Validation resolves each one and records it with the position that names it,
//! so that `check` and `run` report a missing or unreadable file at its line and column.
//!
//! A path is relative to the directory of zones.yaml, unless it is written `credential:NAME`:
//! then it is `$CREDENTIALS_DIRECTORY/NAME`, the copy of a `LoadCredential=NAME:PATH` file that
//! systemd makes readable by the service's own (dynamic) user.

use std::path::{Path, PathBuf};

use super::{Diagnostic, Pos};

/// How a path names a systemd credential.
pub const CREDENTIAL_PREFIX: &str = "credential:";
/// Where systemd puts a service's credentials (for ExecStartPre= too).
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";
/// systemd refuses longer credential names (a file name, at most NAME_MAX).
const MAX_CREDENTIAL_NAME_LEN: usize = 255;

/// What relative paths and credentials are resolved against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    /// The directory of zones.yaml; empty: the current directory.
    pub dir: PathBuf,
    /// `$CREDENTIALS_DIRECTORY`, when set.
    pub credentials: Option<PathBuf>,
}

impl Base {
    /// For a zones.yaml in `dir`, with this process's `$CREDENTIALS_DIRECTORY`.
    pub fn from_env(dir: &Path) -> Base {
        Base {
            dir: dir.to_owned(),
            credentials: std::env::var_os(CREDENTIALS_DIRECTORY_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// A file zones.yaml names for zonegate to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    /// The setting that names it, as a reader finds it (`audit.key_file`).
    pub field: String,
    pub pos: Pos,
    /// Where it is read from; for a credential without `$CREDENTIALS_DIRECTORY`, as written.
    pub path: PathBuf,
    /// `NAME` of `credential:NAME`.
    pub credential: Option<String>,
    /// Whether `$CREDENTIALS_DIRECTORY` was set when the path was resolved.
    pub credentials_set: bool,
}

/// The credential name in `credential:NAME`, if the value has that form.
pub fn credential_name(written: &str) -> Option<&str> {
    written.strip_prefix(CREDENTIAL_PREFIX)
}

/// Why a credential name is unusable, if it is: systemd takes a plain file name.
pub fn credential_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("`credential:` needs a name, e.g. `credential:api-key`".into())
    } else if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Some(format!(
            "credential name `{name}` is not a file name (no `/`, not `.` or `..`)"
        ))
    } else if name.len() > MAX_CREDENTIAL_NAME_LEN {
        Some(format!(
            "credential name is longer than {MAX_CREDENTIAL_NAME_LEN} bytes"
        ))
    } else {
        None
    }
}

/// Where a written path is read from: `$CREDENTIALS_DIRECTORY/NAME` for `credential:NAME` (as
/// written when the variable is not set: [`unreadable`] reports it), else relative to zones.yaml.
pub fn resolve(base: &Base, written: &str) -> PathBuf {
    match (credential_name(written), &base.credentials) {
        (Some(name), Some(dir)) => dir.join(name),
        (Some(_), None) => PathBuf::from(written),
        (None, _) => base.dir.join(written),
    }
}

/// One diagnostic for each named file that cannot be read, at the position that names it.
pub fn unreadable(files: &[NamedFile]) -> Vec<Diagnostic> {
    files.iter().filter_map(problem).collect()
}

fn problem(f: &NamedFile) -> Option<Diagnostic> {
    let diagnostic = |message: String, hint: Option<String>| Diagnostic {
        pos: Some(f.pos),
        message,
        hint,
    };
    if let Some(name) = &f.credential
        && !f.credentials_set
    {
        return Some(diagnostic(
            format!(
                "{} names credential `{name}`, but ${CREDENTIALS_DIRECTORY_ENV} is not set",
                f.field
            ),
            Some(format!(
                "systemd sets it for a unit with `LoadCredential={name}:PATH`; by hand, point it \
                 at the directory holding the credential files, e.g. \
                 `CREDENTIALS_DIRECTORY=/etc/zonegate/credentials zonegate check ...`"
            )),
        ));
    }
    let what = match &f.credential {
        Some(name) => format!("{} (credential `{name}`)", f.field),
        None => f.field.clone(),
    };
    let shown = f.path.display();
    let error = match std::fs::File::open(&f.path).and_then(|file| file.metadata()) {
        Ok(meta) if meta.is_file() => return None,
        Ok(_) => {
            return Some(diagnostic(
                format!("{what}: {shown} is not a regular file"),
                None,
            ));
        }
        Err(e) => e,
    };
    let (message, hint) = match (error.kind(), &f.credential) {
        (std::io::ErrorKind::NotFound, Some(name)) => (
            format!("{what}: {shown} does not exist"),
            Some(format!(
                "the unit needs `LoadCredential={name}:PATH` (see docs/operations.md, \"Secrets and file ownership\")"
            )),
        ),
        (std::io::ErrorKind::NotFound, None) => (format!("{what}: {shown} does not exist"), None),
        (std::io::ErrorKind::PermissionDenied, _) => (
            format!(
                "{what}: {shown} cannot be read by uid {}: permission denied",
                nix::unistd::geteuid()
            ),
            Some(
                "a service with DynamicUser=yes cannot read root's 0600 files: deliver secrets \
                 as systemd credentials (`LoadCredential=NAME:PATH` in the unit, \
                 `credential:NAME` here), and make other files readable (0644)"
                    .into(),
            ),
        ),
        _ => (format!("{what}: {shown} cannot be read: {error}"), None),
    };
    Some(diagnostic(message, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_relative_paths_resolve() {
        let base = Base {
            dir: PathBuf::from("/etc/zonegate"),
            credentials: Some(PathBuf::from("/run/credentials/zonegate.service")),
        };
        assert_eq!(
            resolve(&base, "credential:api-key"),
            Path::new("/run/credentials/zonegate.service/api-key")
        );
        assert_eq!(
            resolve(&base, "policies/bess.rego"),
            Path::new("/etc/zonegate/policies/bess.rego")
        );
        assert_eq!(resolve(&base, "/srv/a.pem"), Path::new("/srv/a.pem"));
        let outside = Base {
            credentials: None,
            ..base
        };
        assert_eq!(
            resolve(&outside, "credential:api-key"),
            Path::new("credential:api-key")
        );
    }

    #[test]
    fn credential_names_are_file_names() {
        assert_eq!(credential_name_problem("api-key"), None);
        for bad in ["", ".", "..", "a/b", "../etc/shadow"] {
            assert!(credential_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
