//! Collecting what is wrong with zones.yaml ([`Problems`]: every problem, not just the first,
//! and every file the model names) and the field checks every section shares (names, networks).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::files::{self, Base, NamedFile};
use super::{Diagnostic, Pos};

/// Longest zone, asset or conduit name; keeps nftables object names and rule comments short.
pub const MAX_NAME_LEN: usize = 32;

/// Collects every problem in the file rather than stopping at the first, and every file it
/// names for zonegate to read.
#[derive(Default)]
pub(super) struct Problems {
    pub(super) found: Vec<Diagnostic>,
    pub(super) base: Base,
    pub(super) files: Vec<NamedFile>,
}

impl Problems {
    /// A file zonegate reads, as `v` names it: where to read it ([`files::resolve`]), recorded
    /// with its position for [`Model::unreadable_files`]. Every such path field goes through here.
    pub(super) fn file(&mut self, v: &Spanned<String>, field: impl Into<String>) -> PathBuf {
        let field = field.into();
        let written = v.value.as_str();
        if written.trim().is_empty() {
            self.at(v, format!("{field} is empty"), None);
        }
        let credential = files::credential_name(written);
        if let Some(problem) = credential.and_then(files::credential_name_problem) {
            self.at(v, format!("{field}: {problem}"), None);
        }
        let path = files::resolve(&self.base, written);
        self.files.push(NamedFile {
            field,
            pos: Pos::of(v),
            path: path.clone(),
            credential: credential.map(str::to_owned),
            credentials_set: self.base.credentials.is_some(),
        });
        path
    }

    pub(super) fn at<T>(
        &mut self,
        s: &Spanned<T>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.found.push(Diagnostic {
            pos: Some(Pos::of(s)),
            message: message.into(),
            hint,
        });
    }
}

/// Names become nftables identifiers (`-` mapped to `_`), so keep them to a safe alphabet.
pub(super) fn check_name<T>(what: &str, name: &str, at: &Spanned<T>, p: &mut Problems) {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_ok || !rest_ok || name.len() > MAX_NAME_LEN {
        p.at(
            at,
            format!("{what} name `{name}` is not valid"),
            Some(format!(
                "use 1 to {MAX_NAME_LEN} characters: a lowercase letter, then lowercase letters, digits or `-`"
            )),
        );
    }
}

/// A CIDR network; host bits must be zero so that what is written is what is enforced.
pub(super) fn network(s: &Spanned<String>, p: &mut Problems) -> Option<IpNet> {
    let text = s.value.trim();
    let net = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    };
    match net {
        None => {
            p.at(
                s,
                format!("`{text}` is not an IPv4 or IPv6 network"),
                Some("write a CIDR such as 10.20.0.0/24 or fd00:20::/64".into()),
            );
            None
        }
        Some(n) if n.trunc() != n => {
            p.at(
                s,
                format!("network `{text}` has host bits set"),
                Some(format!("did you mean {}?", n.trunc())),
            );
            None
        }
        Some(n) => Some(n),
    }
}
