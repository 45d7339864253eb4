//! `zones.yaml`: reading it ([`raw`]), and turning it into a consistent [`Model`] ([`model`]).
//! Every error names the file, line and column and, where it can, what to change.

pub mod audit;
mod egress;
pub mod files;
mod limits;
pub mod model;
mod problems;
pub mod raw;
mod review;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use egress::syslog_receivers;
pub use limits::{Limits, OpcUaFrames, WriteRate};
pub use model::{
    Asset, AssetKind, Conduit, EgressPeer, Endpoint, FailureMode, Gateway, Inspection, Management,
    Mode, Model, OnDeny, PortRange, PurdueLevel, QuarantineSettings, Service, Warning, Zone,
};
use serde_saphyr::Spanned;

/// Largest `zones.yaml` we read; a plant description is kilobytes, not megabytes.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A 1-based position in the YAML file; 0 means unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    fn of<T>(s: &Spanned<T>) -> Self {
        Pos {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

/// One problem found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {size} bytes is larger than the {MAX_CONFIG_BYTES}-byte limit", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// Syntax, types, unknown fields, duplicate keys, or consistency: all with positions.
    #[error("{}", Report { path, diagnostics })]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

/// Renders diagnostics as `FILE:LINE:COLUMN: error: MESSAGE` lines, the form editors jump to.
struct Report<'a> {
    path: &'a Path,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some(pos) = d.pos.filter(|p| p.line > 0) {
                write!(f, ":{}:{}", pos.line, pos.column)?;
            }
            write!(f, ": error: {}", d.message)?;
            if let Some(hint) = &d.hint {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        Ok(())
    }
}

/// Formats a warning like an error line, so both read the same in a terminal or an editor.
pub fn format_warning(path: &Path, w: &Warning) -> String {
    if w.pos.line > 0 {
        format!(
            "{}:{}:{}: warning: {}",
            path.display(),
            w.pos.line,
            w.pos.column,
            w.message
        )
    } else {
        format!("{}: warning: {}", path.display(), w.message)
    }
}

/// Reads and validates a `zones.yaml`.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    // Files are named relative to the file that names them, or as systemd credentials.
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut model = parse_at(&text, files::Base::from_env(dir)).map_err(|diagnostics| {
        ConfigError::Invalid {
            path: path.to_owned(),
            diagnostics,
        }
    })?;
    model.resolve_paths(dir);
    Ok(model)
}

/// [`load`], and every file the configuration names for zonegate to read can be read now: what
/// `check` and `run` start with, so that a missing key, certificate, policy or register map is
/// reported at the line and column that names it.
pub fn load_with_files(path: &Path) -> Result<Model, ConfigError> {
    let model = load(path)?;
    let diagnostics = model.unreadable_files();
    if diagnostics.is_empty() {
        Ok(model)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            diagnostics,
        })
    }
}

/// Parses and validates `zones.yaml` text. Duplicate keys are errors (serde-saphyr's default policy).
pub fn parse(text: &str) -> Result<Model, Vec<Diagnostic>> {
    parse_at(text, files::Base::default())
}

/// [`parse`], the files it names resolved against `base`.
pub fn parse_at(text: &str, base: files::Base) -> Result<Model, Vec<Diagnostic>> {
    let raw: raw::RawFile = serde_saphyr::from_str(text).map_err(|e| vec![yaml_diagnostic(&e)])?;
    Model::from_raw(raw, base)
}

fn yaml_diagnostic(e: &serde_saphyr::Error) -> Diagnostic {
    let pos = e.location().map(|l| Pos {
        line: l.line(),
        column: l.column(),
    });
    // The library's text starts with its own "error: line N column M: " and may end with advice
    // for programmers; our report prints the position in front, so keep only the message.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML").trim();
    let mut message = first.strip_prefix("error: ").unwrap_or(first);
    if let Some((head, rest)) = message.split_once(": ")
        && head.starts_with("line ")
        && head.contains(" column ")
    {
        message = rest;
    }
    if let Some((head, _)) = message.split_once(", set DuplicateKeyPolicy") {
        message = head;
    }
    let (message, hint) = match message {
        m if m.starts_with("duplicate mapping key") => (
            m.to_owned(),
            Some(
                "a name or field may appear once per mapping; remove or rename the second one"
                    .into(),
            ),
        ),
        "invalid u8" => ("expected a whole number from 0 to 255".to_owned(), None),
        "invalid u16" => ("expected a whole number from 0 to 65535".to_owned(), None),
        "invalid u32" => (
            "expected a whole number from 0 to 4294967295".to_owned(),
            None,
        ),
        "invalid f64" => ("expected a number".to_owned(), None),
        m if m.starts_with("illegal placement of ':'")
            || m.contains("not allowed in this context") =>
        {
            (
                m.to_owned(),
                Some("check the indentation and any unclosed `[` or `{` on the lines above".into()),
            )
        }
        m => (m.to_owned(), None),
    };
    Diagnostic { pos, message, hint }
}
