//! `sandbox`: runs a command so that every irreversible action it attempts waits for a human.

mod audit;
mod cgroup;
mod commands;
mod control;
mod daemon;
mod doctor;
mod exec;
mod files;
mod hold;
mod launch;
mod mountinfo;
mod netguard;
mod netns;
mod notify;
mod peer;
mod profile;
mod proxy;
mod report;
mod serve;
mod stop;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when the sandbox itself could not be set up (like podman/docker).
pub const EXIT_SETUP: u8 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "sandbox",
    version,
    about = "Run an AI agent so that irreversible actions wait for a human"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a command in a new session under the guard (as root; without root, through
    /// `sandbox daemon`).
    Run(launch::RunArgs),
    /// The privileged service of systemd-managed hosts: starts sessions for members of the
    /// `sandbox` group who run `sandbox run` without root.
    Daemon(daemon::DaemonArgs),
    /// List held operations waiting for a decision.
    Pending {
        /// Only this session.
        #[arg(long, value_name = "NAME")]
        session: Option<String>,
        /// A JSON array of objects (id, session, pid, kind, target, rule, since, ...).
        #[arg(long)]
        json: bool,
    },
    /// Approve a held operation: it goes on as if never held.
    Approve {
        /// The hold id (from `sandbox pending`).
        id: String,
        /// How far the decision reaches (default: the session profile's `default_scope`, else
        /// process).
        #[arg(long, value_enum)]
        scope: Option<hold::Scope>,
        /// How long a standing decision lasts (e.g. 30s, 10m).
        #[arg(long = "for", value_name = "DUR", value_parser = hold::parse_duration)]
        for_: Option<std::time::Duration>,
        /// Confirm a session-wide approval without being asked (otherwise asked on a terminal,
        /// refused elsewhere).
        #[arg(long)]
        yes: bool,
    },
    /// Deny a held operation: it fails with "Operation not permitted".
    Deny {
        /// The hold id (from `sandbox pending`).
        id: String,
        /// How far the decision reaches (default: the session profile's `default_scope`, else
        /// process).
        #[arg(long, value_enum)]
        scope: Option<hold::Scope>,
        /// How long a standing decision lasts (e.g. 30s, 10m).
        #[arg(long = "for", value_name = "DUR", value_parser = hold::parse_duration)]
        for_: Option<std::time::Duration>,
    },
    /// Watch for holds of every live session as they arrive and decide them: a full-screen view
    /// on a terminal (a/d/s/f/q keys), line mode with `--no-tui` or without a terminal (type
    /// `a [ID] [scope] [DUR]`, `d [ID]`, `q`).
    Watch(watch::WatchArgs),
    /// Serve the web approval page (access needs the token printed at start).
    Serve(serve::ServeArgs),
    /// List live sessions.
    Sessions {
        /// A JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log of a session (the newest when none is named).
    Log(audit::LogArgs),
    /// Check what this host supports (probing by loading programs) and which backend is used.
    Doctor {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check and show profiles.
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
}

/// A session-wide approval lets everything the session holds from now on go on: it is asked
/// for on a terminal, and refused without `--yes` elsewhere.
fn confirm_session_wide(id: &str, scope: Option<hold::Scope>, yes: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if scope != Some(hold::Scope::Session) || yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--scope session approves everything the session holds from now on: confirm with --yes (or run it on a terminal to be asked)"
        );
    }
    eprint!("Approve hold {id} and everything its session holds from now on? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SANDBOX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let is_run = std::env::args().nth(1).as_deref() == Some("run");
            let informational =
                matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            let _ = e.print();
            return if informational {
                ExitCode::SUCCESS
            } else if is_run {
                ExitCode::from(EXIT_SETUP)
            } else {
                ExitCode::from(2)
            };
        }
    };
    let res: Result<u8, (u8, anyhow::Error)> = match cli.cmd {
        Cmd::Run(a) if !nix::unistd::geteuid().is_root() => {
            let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
            daemon::client::run(&argv, a.user.is_some()).map_err(|e| (EXIT_SETUP, e.into()))
        }
        Cmd::Run(a) => launch::run(a).map_err(|e| (EXIT_SETUP, e.into())),
        Cmd::Daemon(a) => daemon::cmd_daemon(&a).map_err(|e| (1, e.into())),
        Cmd::Pending { session, json } => {
            control::cmd_pending(session.as_deref(), json).map_err(|e| (1, e.into()))
        }
        Cmd::Approve {
            id,
            scope,
            for_,
            yes,
        } => match confirm_session_wide(&id, scope, yes) {
            Ok(true) => control::cmd_decide(&id, hold::Verdict::Allow, scope, for_)
                .map_err(|e| (1, e.into())),
            Ok(false) => {
                eprintln!("sandbox: not approved");
                Ok(1)
            }
            Err(e) => Err((2, e)),
        },
        Cmd::Deny { id, scope, for_ } => {
            control::cmd_decide(&id, hold::Verdict::Deny, scope, for_).map_err(|e| (1, e.into()))
        }
        Cmd::Sessions { json } => control::cmd_sessions(json).map_err(|e| (1, e.into())),
        Cmd::Watch(a) => watch::cmd_watch(&a).map_err(|e| (1, e.into())),
        Cmd::Serve(a) => serve::cmd_serve(&a).map_err(|e| (1, e.into())),
        Cmd::Doctor { json } => Ok(doctor::cmd_doctor(json)),
        Cmd::Log(a) => audit::cmd_log(&a).map_err(|e| (1, anyhow::Error::from(e))),
        Cmd::Profile(c) => Ok(profile::cmd_profile(&c)),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("sandbox: {e:#}");
            ExitCode::from(code)
        }
    }
}
