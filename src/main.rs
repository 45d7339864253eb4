//! The `zonegate` command: argument parsing and logging; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use zonegate::config::{self, ConfigError};
use zonegate::site::Site;
use zonegate::{control, diagram, nft};

#[derive(Parser)]
#[command(
    version,
    about = "IEC 62443 zones and conduits, enforced with nftables"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "ZONEGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate zones.yaml, its policies and register maps, and that every file it names can be
    /// read (`credential:NAME` from $CREDENTIALS_DIRECTORY); show risky findings; exit 1 on any error.
    Check {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
    },
    /// Print the nftables ruleset zones.yaml produces, for review (does not touch the kernel).
    /// It is what `apply` installs; `run` installs the same with expiring liveness elements.
    Plan {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
        /// The libnftables JSON transaction instead of nft text.
        #[arg(long)]
        json: bool,
    },
    /// Program the kernel: replace table inet zonegate in one transaction and verify it.
    ///
    /// No daemon runs afterwards, so the liveness elements are installed without a timeout: the
    /// failure mode (zones.yaml `gateway.failure_mode`) never takes over, the conduits stay as
    /// applied, and deep-inspected conduits carry nothing without `zonegate run`.
    Apply {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
    },
    /// Apply, inspect the modbus and opcua conduits, and stay up until SIGTERM or SIGINT.
    ///
    /// While it runs it renews its liveness in the kernel every second; killed, the kernel
    /// notices within 5 s, stopped (SIGTERM, SIGINT) at once, and the ruleset's failure mode takes
    /// over: `closed` (default) lets nothing cross zones, `open` lets deep-inspected conduits pass
    /// uninspected at L4. The ruleset stays in the kernel either way.
    Run {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
        /// Append audit events (JSON lines) to this file, instead of zones.yaml's
        /// `audit.file.path` (without either: standard output).
        #[arg(long, env = "ZONEGATE_AUDIT_LOG")]
        audit_log: Option<PathBuf>,
        /// Directory for zonegate's state: the syslog spool and the last configuration
        /// (instead of `audit.spool.directory`; systemd's StateDirectory sets STATE_DIRECTORY).
        #[arg(long, env = "STATE_DIRECTORY")]
        state_dir: Option<PathBuf>,
        /// The control socket `zonegate reload` uses (default: $RUNTIME_DIRECTORY/control.sock,
        /// else /run/zonegate/control.sock). If another daemon answers on it, `run` exits at once.
        #[arg(long, env = "ZONEGATE_CONTROL_SOCKET")]
        control_socket: Option<PathBuf>,
    },
    /// Ask the running daemon to reload zones.yaml, its policies and register maps, and wait
    /// for the result; exit 1 when the reload failed (the previous configuration then stays in
    /// force). SIGHUP does the same without an answer.
    Reload {
        /// The daemon's control socket (default: as `run`).
        #[arg(long, env = "ZONEGATE_CONTROL_SOCKET")]
        control_socket: Option<PathBuf>,
    },
    /// Zones, Purdue levels and conduits as a Mermaid flowchart.
    Diagram {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
    },
    /// The configuration mapped to IEC 62443-3-3 system requirements, as a Markdown report.
    Compliance {
        #[arg(default_value = "zones.yaml")]
        file: PathBuf,
    },
    /// Per-conduit and drop counters read back from the kernel.
    Counters {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Install the boot-time ruleset that forwards nothing until zonegate applies zones.yaml.
    EarlyBlock,
    /// Rego policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Audit logs.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check audit JSON lines files (a log and its rotated files, any order): the hash chain
    /// (modified, deleted, inserted, reordered or downgraded events), the beginning (event 1 or
    /// a rotation start), the checkpoints and, with signed checkpoints, the end (the daemon's
    /// stop checkpoint). Exit 1 on any problem.
    Verify {
        /// The HMAC key the events were sealed with (zones.yaml `audit.key_file`): every event
        /// must carry an HMAC made with it.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The public key of `audit.checkpoint.signing_key_file` (PEM): every checkpoint must
        /// be signed with it, and every event covered by one.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Accept a log that does not end at the daemon's stop checkpoint: one still being
        /// written, or of a daemon that was killed.
        #[arg(long)]
        allow_open_end: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make an Ed25519 key pair for signed checkpoints (`audit.checkpoint.signing_key_file`):
    /// the private key as PKCS#8 PEM (mode 0600), the public key as PEM for the SOC. Existing
    /// files are not overwritten.
    Keygen {
        /// Where the private key goes; the gateway reads it.
        #[arg(long)]
        out_private: PathBuf,
        /// Where the public key goes; `audit verify --public-key` reads it.
        #[arg(long)]
        out_public: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Run the test_* rules of every *_test.rego under the paths; exit 1 on any failure.
    Test {
        /// Files or directories (searched recursively for *.rego).
        #[arg(default_value = "policies")]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zonegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZONEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Check { file } => Ok(check(&file)),
        Cmd::Plan { file, json } => {
            let rs = nft::render(&load(&file)?).with_permanent_liveness();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&nft::json::transaction(&rs)?)?
                );
            } else {
                print!("{}", nft::text::render(&rs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Apply { file } => {
            let model = load(&file)?;
            // No daemon renews liveness after a one-shot apply: it must not expire.
            nft::apply(&nft::render(&model).with_permanent_liveness()).context("apply")?;
            tracing::info!(
                file = %file.display(),
                zones = model.zones.len(),
                conduits = model.conduits.len(),
                "ruleset applied and verified"
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            file,
            audit_log,
            state_dir,
            control_socket,
        } => {
            let site = Site::load(&file)?;
            let options = control::Options {
                audit_log,
                state_dir,
                control_socket,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(control::run(site, options))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reload { control_socket } => {
            let path = control_socket.unwrap_or_else(control::socket::default_path);
            let answer = control::socket::request(&path, "reload")?;
            let field = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            if answer.get("ok").and_then(serde_json::Value::as_bool) == Some(true) {
                println!(
                    "{} (zones.yaml sha256 {})",
                    field("message"),
                    field("sha256")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{}: {}", field("message"), field("error"));
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Compliance { file } => {
            let site = Site::load_for_report(&file)?;
            let fingerprint = site.fingerprint();
            print!(
                "{}",
                zonegate::compliance::report(&site.model, &fingerprint.file, &fingerprint.sha256)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Diagram { file } => {
            print!("{}", diagram::mermaid(&load(&file)?));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Counters { json } => {
            for c in nft::counters()? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"name": c.name, "packets": c.packets, "bytes": c.bytes})
                    );
                } else {
                    println!(
                        "{:<40} {:>14} packets {:>16} bytes",
                        c.name, c.packets, c.bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Policy(PolicyCmd::Test { paths }) => Ok(policy_test(&paths)),
        Cmd::Audit(AuditCmd::Verify {
            key_file,
            public_key,
            allow_open_end,
            files,
        }) => audit_verify(
            key_file.as_deref(),
            public_key.as_deref(),
            allow_open_end,
            &files,
        ),
        Cmd::Audit(AuditCmd::Keygen {
            out_private,
            out_public,
        }) => {
            let public = zonegate::audit::checkpoint::generate(&out_private, &out_public)?;
            println!(
                "private key {} (keep it on the gateway: audit.checkpoint.signing_key_file), public key {} (for `audit verify --public-key`), key id {}",
                out_private.display(),
                out_public.display(),
                zonegate::audit::checkpoint::key_id(&public)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::EarlyBlock => {
            nft::apply(&nft::early_block()).context("early block")?;
            tracing::info!("early block installed: nothing is forwarded");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `zonegate audit verify`: where each file sits in the stream, how the log begins, its
/// checkpoints and how it ends, then the verdict: `ok: ...` or one `BROKEN: ...` line per problem.
fn audit_verify(
    key_file: Option<&Path>,
    public_key: Option<&Path>,
    allow_open_end: bool,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    use zonegate::audit::chain::{self, Start, VerifyOptions};
    let key = key_file
        .map(|k| {
            std::fs::read(k)
                .map(|b| b.trim_ascii_end().to_vec())
                .with_context(|| format!("key file {}", k.display()))
        })
        .transpose()?;
    let public = public_key
        .map(zonegate::audit::checkpoint::load_verifying_key)
        .transpose()?;
    let report = chain::verify(
        files,
        &VerifyOptions {
            key: key.as_deref(),
            public_key: public.as_ref(),
            allow_open_end,
        },
    )?;
    for f in &report.files {
        match f.first_sequence {
            Some(first) => println!("{}: {} lines from event {first}", f.path.display(), f.lines),
            None => println!("{}: {} lines, no sealed event", f.path.display(), f.lines),
        }
    }
    if let Start::Rotation { after } = report.start {
        println!(
            "begins at a rotation start: events up to {after} are in an earlier file (rotated away, or not given)"
        );
    }
    if report.checkpoints > 0 {
        let signatures = match (&public, report.signed_checkpoints) {
            (Some(p), _) => format!(
                "signatures checked with key id {}",
                zonegate::audit::checkpoint::key_id(p)
            ),
            (None, 0) => "none signed".to_owned(),
            (None, _) => "signatures not checked (no --public-key)".to_owned(),
        };
        let last = report
            .last_checkpoint
            .map(|(s, r)| format!(", the last at event {s} ({})", r.as_str()))
            .unwrap_or_default();
        println!("{} checkpoints, {signatures}{last}", report.checkpoints);
    }
    if !report.end_checked {
        println!(
            "no signed checkpoints: a cut-off end cannot be told (zones.yaml audit.checkpoint)"
        );
    } else if let Some(end) = report.open_end.as_ref().filter(|_| allow_open_end) {
        let breach = chain::Breach::OpenEnd(end.clone());
        println!("open end, accepted (--allow-open-end): {breach}");
    }
    if report.holds() {
        println!(
            "ok: {} events, {} to {}, chain intact ({}){}",
            report.events,
            report.first_sequence,
            report.last_sequence,
            report.alg.map_or("", chain::Alg::as_str),
            if public.is_some() && report.checkpoints > 0 {
                format!(", {} checkpoints verified", report.checkpoints)
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for b in &report.problems {
            println!("BROKEN: {b}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `zonegate policy test`: one line per test, a summary line; exit 1 on any failure.
fn policy_test(paths: &[PathBuf]) -> ExitCode {
    let run = zonegate::policy::run_tests(paths);
    for e in &run.errors {
        eprintln!("{e}");
    }
    for r in &run.results {
        println!("{r}");
    }
    println!("{}", run.summary());
    if run.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `zonegate check`: every error and warning, editor-style; exit 1 on errors.
fn check(file: &Path) -> ExitCode {
    // The whole site: also compiles the conduits' policies, runs their tests and reads the
    // register maps, so that what passes here is what `run` can enforce.
    match Site::load(file).and_then(|site| site.test_policies().map(|()| site)) {
        Ok(site) => {
            let model = &site.model;
            let mut warnings = model.warnings();
            // Of this host, not of the file: what `run` here would warn about too.
            if !zonegate::proxy::routing::ipv6_available()
                && let Some(message) = zonegate::proxy::routing::ipv6_unavailable_warning(model)
            {
                warnings.push(config::Warning {
                    pos: config::Pos::default(),
                    message,
                });
            }
            for w in &warnings {
                eprintln!("{}", config::format_warning(file, w));
            }
            println!(
                "{}: ok: {} zones, {} assets, {} conduits, {} warnings",
                file.display(),
                model.zones.len(),
                model.assets.len(),
                model.conduits.len(),
                warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn load(file: &Path) -> Result<config::Model, ConfigError> {
    config::load(file)
}
