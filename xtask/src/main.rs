//! Developer tasks of the Guard workspace, run as `cargo xtask <task>`.
//!
//! - `bench [--quick]`: times `sandbox run` against the same work run bare and under a minimal
//!   seccomp user-notification supervisor (the floor), prints a markdown table and writes it to
//!   `docs/BENCHMARKS.md`. Needs root.
//! - `load [--rate 1000] [--seconds 60]`: holds decided by a script at that rate, none lost,
//!   none misattributed. Needs root.
//! - `vm-test`: guard-user test targets inside QEMU VMs (BPF LSM).
//! - `install [--prefix P] [--destdir D] [--bin PATH]`: installs on a systemd host.

mod bench;
mod holdbench;
mod install;
mod load;
mod machine;
mod proxybench;
mod report;
mod vm;
mod workloads;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer tasks of the Guard workspace")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmark `sandbox run` against bare runs and a seccomp-notify floor (as root); writes
    /// docs/BENCHMARKS.md.
    Bench(bench::Options),
    /// Run a command and print its wall time in nanoseconds on stdout (used inside the
    /// benchmarks, so the sandbox's own start and stop are not counted).
    #[command(hide = true)]
    Timeit {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<OsString>,
    },
    /// 1,000 holds per second decided by a script for a minute, none lost, none misattributed
    /// (as root).
    Load(load::Options),
    /// Run guard-user test targets inside QEMU VMs booting pinned Debian kernels (6.1, 6.12).
    VmTest(vm::VmTestArgs),
    /// Install on a systemd host (as root): the binary, the units of dist/systemd, profiles to
    /// /etc/sandbox/profiles, the groups sandbox and sandbox-approvers.
    Install(install::InstallArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().task {
        Task::Bench(opts) => bench::run(&opts).map(|()| ExitCode::SUCCESS),
        Task::Timeit { cmd } => timeit(&cmd),
        Task::VmTest(args) => vm::run(args).map(|()| ExitCode::SUCCESS),
        Task::Load(o) => load::run(&o).map(|()| ExitCode::SUCCESS),
        Task::Install(args) => install::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// Runs `cmd`, prints the nanoseconds from spawn to exit, and exits with the command's status
/// (128 + signal if it was killed).
fn timeit(cmd: &[OsString]) -> anyhow::Result<ExitCode> {
    let (prog, args) = cmd.split_first().context("timeit: no command")?;
    let t0 = Instant::now();
    let status = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("timeit: running {}", prog.to_string_lossy()))?;
    let ns = t0.elapsed().as_nanos();
    println!("{ns}");
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 125,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(125)))
}
