//! `cargo xtask bench`: `sandbox run` against the same work run bare and under the seccomp
//! user-notification floor (`progs/notify_floor.c`), alternating, several repetitions each.
//!
//! Workloads: start-up (`true`), unlink-heavy (`rm -rf` of 50,000 files, on tmpfs and on disk;
//! `git clean -fdx` of 20,000 files on disk), build-like (`make -j2` of a C project, `cargo
//! build` of a Rust crate), exec-heavy (a shell loop running `/bin/true` 2,000 times, also with
//! the `default` profile's `[commands] hold` list, and the same with a `#!` script), hold
//! latency and supervisor memory (`holdbench`), and the proxy (`proxybench`). Peers (bwrap,
//! firejail, srt; `scripts/install-bench-peers.sh`) run the start-up and `rm -rf` workloads where
//! they are installed and work; the report notes those that are not. Everything happens in a
//! scratch directory `target/bench.<pid>` that is removed (tmpfs unmounted first) when the run
//! ends, also on error; leftovers of an interrupted run are removed by the next one.
//!
//! The trees of the disk unlink workloads are all created before the first timed removal: on
//! ext4 without a journal, creating inodes shortly (30 s, `dirty_expire_centisecs`) after
//! deleting many in the same block group is slow (`recently_deleted()` in the allocator), which
//! would make set-up take minutes. For the same reason the build workloads run before them.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::machine::{self, LoadProbe};
use crate::report::{self, Check, Outcome, Report, Row, Stats, Variant};
use crate::workloads;

/// uid and gid every benchmarked command runs as.
const NOBODY: u32 = 65534;
/// The unlink-heavy tree: directories x files per directory.
const TREE_DIRS: usize = 100;
const TREE_FILES: usize = 500;
/// The exec-heavy loop.
const EXEC_LOOP: &str = "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done";
/// How the programs in `progs/` are compiled.
const CC_FLAGS: [&str; 5] = ["-O2", "-Wall", "-Wextra", "-Werror", "-pthread"];
const TMPFS_OPTS: &str = "size=256m,mode=0755,uid=65534,gid=65534";
const SCRATCH_PREFIX: &str = "bench.";
/// DESIGN.md: `sandbox run -- true` in under 50 ms.
const START_TARGET: Duration = Duration::from_millis(50);
/// The workload name of the start-up through `sandbox daemon`.
const DAEMON_START: &str = "start: `true` through `sandbox daemon` (as uid 65534)";
/// The issue "Benchmarks": the sandbox within 15% of the floor on the unlink workload.
const FLOOR_TARGET: f64 = 1.15;
/// The issue "Benchmarks": build-like work under the sandbox within 2% of bare.
const BUILD_TARGET: f64 = 1.02;
/// Stands for the run's number (`000`, `001`, ...) in arguments: each run gets its own tree,
/// object or target directory.
const RUN: &str = "NNN";
/// The peers: variant, program, what installs it.
const PEERS: [(Variant, &str, &str); 3] = [
    (Variant::Bwrap, "bwrap", "Debian package bubblewrap"),
    (Variant::Firejail, "firejail", "Debian package firejail"),
    (
        Variant::Srt,
        "srt",
        "npm package @anthropic-ai/sandbox-runtime, with Debian packages ripgrep and socat",
    ),
];

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Fewer repetitions: a smoke test of the benchmark, not numbers to quote.
    #[arg(long)]
    quick: bool,
    /// Print the results only; leave docs/BENCHMARKS.md alone.
    #[arg(long)]
    no_write: bool,
    /// Use the existing target/release/sandbox instead of running
    /// `cargo build --release -p guard-user` first.
    #[arg(long)]
    no_build: bool,
}

/// Repetitions per workload and variant.
struct Reps {
    start: usize,
    unlink: usize,
    git: usize,
    exec: usize,
    make: usize,
    cargo: usize,
    /// HTTPS requests per proxy variant.
    requests: usize,
    /// Server-sent-event streams per proxy variant, and events per stream.
    sse_streams: usize,
    sse_events: usize,
    /// Holds approved one by one.
    latency_holds: usize,
    /// Holds pending at once.
    memory_holds: usize,
}

const FULL: Reps = Reps {
    start: 20,
    unlink: 5,
    git: 5,
    exec: 5,
    make: 5,
    cargo: 6,
    requests: 500,
    sse_streams: 3,
    sse_events: 100,
    latency_holds: 200,
    memory_holds: 1000,
};
const QUICK: Reps = Reps {
    start: 5,
    unlink: 2,
    git: 2,
    exec: 2,
    make: 2,
    cargo: 2,
    requests: 50,
    sse_streams: 1,
    sse_events: 50,
    latency_holds: 200,
    memory_holds: 1000,
};

/// Runs the benchmark.
pub fn run(opts: &Options) -> Result<()> {
    let t0 = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench must run as root (sandbox run needs it)");
    }
    let reps = if opts.quick { QUICK } else { FULL };
    let root = workspace_root()?;
    let date = output_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;

    if !opts.no_build {
        build_sandbox(&root)?;
    }
    let floor = compile(&root, "notify_floor")?;
    let victim = compile(&root, "hold_victim")?;
    catch_interrupts();
    let probe = LoadProbe::start();
    let scratch = Scratch::create(&target_dir(&root))?;
    let docs = root.join("docs/BENCHMARKS.md");
    let mut b = Bench {
        sandbox: target_dir(&root).join("release/sandbox"),
        floor,
        timeit: scratch.install_timeit()?,
        srt_settings: scratch.base.join("srt-settings.json"),
        root,
        scratch,
        commands: Vec::new(),
    };
    let victim = b.scratch.install(&victim)?;
    for prog in ["notify_floor", "hold_victim"] {
        b.commands.push((
            format!("{prog}, compiled by xtask"),
            format!(
                "cc {} -o target/xtask/{prog} xtask/progs/{prog}.c",
                CC_FLAGS.join(" ")
            ),
        ));
    }
    b.commands.push((
        "tmpfs for the unlink workload".into(),
        format!("mount -t tmpfs -o {TMPFS_OPTS} guard-bench $BASE/tmpfs"),
    ));
    let tmpfs_dir = b.scratch.base.join("tmpfs");
    let disk = b.scratch.dir("disk", NOBODY)?;
    if spread(&disk) {
        b.commands.push((
            "the disk scratch directory, top of a hierarchy for ext4's Orlov allocator".into(),
            "chattr +T $BASE/disk".into(),
        ));
    }
    b.srt_settings(&[&tmpfs_dir, &disk])?;
    let mut extra = Outcome::default();
    let peers = b.peers(&mut extra.notes)?;

    let mut rows = Vec::new();
    rows.push(b.start(reps.start, &peers)?);
    rows.push(b.start_daemon(reps.start)?);
    extra.extend(crate::holdbench::run(&crate::holdbench::Env {
        sandbox: &b.sandbox,
        base: &b.scratch.base,
        victim: &victim,
        latency_holds: reps.latency_holds,
        memory_holds: reps.memory_holds,
    })?);
    let tmpfs = b.scratch.mount_tmpfs("tmpfs")?;
    let result = b
        .unlink("tmpfs", &tmpfs, reps.unlink, &peers, None)
        .and_then(|mut r| {
            r.extend(b.unlink("tmpfs", &tmpfs, reps.unlink, &[], Some("default"))?);
            Ok(r)
        });
    b.scratch.unmount(&tmpfs)?;
    rows.extend(result?);
    let prot = protected_dir(&disk)?;
    rows.extend(b.make(&disk, &prot, reps.make)?);
    rows.extend(b.cargo(&disk, &prot, reps.cargo)?);
    let git = b.git_trees(&disk, reps.git)?;
    rows.extend(b.unlink("disk", &disk, reps.unlink, &peers, None)?);
    rows.extend(b.git_clean(&disk, &prot, &git, reps.git)?);
    rows.extend(b.exec(&disk, reps.exec)?);
    rows.extend(b.exec_commands(&disk, reps.exec, false)?);
    rows.extend(b.exec_commands(&disk, reps.exec, true)?);
    extra.extend(crate::proxybench::run(
        &b.root,
        &b.sandbox,
        &b.scratch.base,
        reps.requests,
        &crate::proxybench::Sse {
            streams: reps.sse_streams,
            events: reps.sse_events,
            gap_ms: 10,
        },
    )?);
    b.commands.append(&mut extra.commands);

    let load = probe.finish(machine::nproc());
    let machine = machine::describe(&b.root, &disk, &b.scratch.base.join("logs"), date, load)?;
    let mut checks = checks(&rows, &machine.backend);
    checks.append(&mut extra.checks);
    let report = Report {
        quick: opts.quick,
        machine,
        rows,
        checks,
        commands: std::mem::take(&mut b.commands),
        notes: extra.notes,
        sections: extra.sections,
        elapsed: t0.elapsed(),
    };
    drop(b); // removes the scratch directory before the results are written

    println!("{}", report::table(&report.rows));
    for n in &report.notes {
        println!("- {n}");
    }
    for sec in &report.sections {
        println!("{sec}");
    }
    println!("{}", report::checks(&report.checks));
    if !opts.no_write {
        let path = docs;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&path, report::document(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!("total time: {:.1} s", report.elapsed.as_secs_f64());
    Ok(())
}

/// The workspace root (parent of this crate's directory).
pub(crate) fn workspace_root() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

pub(crate) fn build_sandbox(root: &Path) -> Result<()> {
    eprintln!("building sandbox (release)...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "guard-user"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p guard-user failed: {status}");
    }
    Ok(())
}

/// Compiles `progs/NAME.c` into `target/xtask/NAME`.
pub(crate) fn compile(root: &Path, name: &str) -> Result<PathBuf> {
    let src = root.join(format!("xtask/progs/{name}.c"));
    let dir = target_dir(root).join("xtask");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin = dir.join(name);
    let status = Command::new("cc")
        .args(CC_FLAGS)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .context("running cc (is a C compiler installed?)")?;
    if !status.success() {
        bail!("cc failed on {}: {status}", src.display());
    }
    Ok(bin)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Stdout of a command, trimmed.
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The scratch directory: `target/bench.<pid>`, removed on drop (tmpfs unmounted first).
struct Scratch {
    base: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn create(parent: &Path) -> Result<Scratch> {
        remove_stale(parent);
        let base = parent.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        if base.exists() {
            bail!("{} exists already", base.display());
        }
        fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
        let s = Scratch {
            base,
            mounts: Vec::new(),
        };
        // the sandbox refuses state and log directories it does not trust: root's, 0755
        fs::set_permissions(&s.base, fs::Permissions::from_mode(0o755))?;
        let work = s.dir("work", NOBODY)?;
        s.dir("bin", 0)?;
        let reachable = Command::new("test")
            .arg("-w")
            .arg(&work)
            .uid(NOBODY)
            .gid(NOBODY)
            .status()
            .is_ok_and(|st| st.success());
        if !reachable {
            bail!(
                "uid 65534 cannot write to {}: the directories above it must be searchable by others",
                work.display()
            );
        }
        Ok(s)
    }

    /// Creates `base/name` owned by `uid` (and the same gid).
    fn dir(&self, name: &str, uid: u32) -> Result<PathBuf> {
        let d = self.base.join(name);
        fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        chown(&d, Some(uid), Some(uid)).with_context(|| format!("chown {}", d.display()))?;
        Ok(d)
    }

    /// Where commands run (their working directory).
    fn work(&self) -> PathBuf {
        self.base.join("work")
    }

    /// A copy of this binary for `xtask timeit`, executable by uid 65534 and safe from a
    /// rebuild of target/debug/xtask while the benchmark runs.
    fn install_timeit(&self) -> Result<PathBuf> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        self.install(&exe)
    }

    /// A copy of `prog` in `base/bin`, executable by uid 65534.
    fn install(&self, prog: &Path) -> Result<PathBuf> {
        let dst = self
            .base
            .join("bin")
            .join(prog.file_name().context("no file name")?);
        fs::copy(prog, &dst).with_context(|| format!("copying {}", prog.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
        Ok(dst)
    }

    fn mount_tmpfs(&mut self, name: &str) -> Result<PathBuf> {
        let d = self.dir(name, 0)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", TMPFS_OPTS, "guard-bench"])
            .arg(&d)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t tmpfs on {} failed: {status}", d.display());
        }
        self.mounts.push(d.clone());
        Ok(d)
    }

    fn unmount(&mut self, dir: &Path) -> Result<()> {
        self.mounts.retain(|m| m != dir);
        if !umount(dir) {
            bail!("could not unmount {}", dir.display());
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            umount(&m);
        }
        if let Err(e) = fs::remove_dir_all(&self.base) {
            eprintln!("warning: could not remove {}: {e}", self.base.display());
        }
    }
}

/// Makes `dir` the top of a directory hierarchy for ext4's Orlov allocator (`chattr +T`), so the
/// trees made in it are spread over block groups instead of sharing those of `target/`, where
/// concurrent cargo builds create and delete files (inode allocation in a group with many
/// recently deleted inodes is slow without a journal). Best effort: false if it did not work
/// (another file system, no chattr).
fn spread(dir: &Path) -> bool {
    Command::new("chattr")
        .arg("+T")
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `umount DIR`, falling back to a lazy unmount; false (after a warning) if both fail.
fn umount(dir: &Path) -> bool {
    for lazy in [false, true] {
        let mut c = Command::new("umount");
        if lazy {
            c.arg("-l");
        }
        if c.arg(dir).status().is_ok_and(|s| s.success()) {
            return true;
        }
    }
    eprintln!("warning: could not unmount {}", dir.display());
    false
}

/// True if `pid` is a live (not zombie) xtask process.
fn bench_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next();
    &stat[open + 1..close] == "xtask" && state != Some("Z")
}

/// Set by SIGINT or SIGTERM: stop after the current run, clean up, and fail.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM end the benchmark through the normal error path, so the scratch
/// directory is removed and the tmpfs unmounted.
fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// Fails if SIGINT or SIGTERM came.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Removes scratch directories of benchmark runs that were killed (their pid is gone).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if bench_alive(pid) {
            continue;
        }
        let dir = e.path();
        eprintln!("removing {} (left by an interrupted run)", dir.display());
        // mount points are field 5 of mountinfo; ours have no characters that need escaping
        for m in mountinfo.lines().filter_map(|l| l.split(' ').nth(4)) {
            if Path::new(m).starts_with(&dir) {
                umount(Path::new(m));
            }
        }
        if let Err(err) = fs::remove_dir_all(&dir) {
            eprintln!("warning: could not remove {}: {err}", dir.display());
        }
    }
}

/// A command as it is spawned, kept apart from [`Command`] so it can also be shown.
#[derive(Clone)]
struct Invocation {
    env: Vec<(&'static str, PathBuf)>,
    prog: OsString,
    args: Vec<OsString>,
    /// Spawned as uid/gid 65534 (bare, bwrap and srt, unless the workload runs as root; the
    /// floor and the sandbox drop ids themselves; firejail runs as root).
    as_nobody: bool,
    /// The command prints its own inner time (it is run by `timeit`).
    timed_inside: bool,
}

/// One run's wall times.
struct Sample {
    /// Spawn to exit of the whole command, measured by xtask.
    outer: Duration,
    /// Measured by `timeit` inside the variant, if the workload uses it.
    inner: Option<Duration>,
}

struct Bench {
    root: PathBuf,
    sandbox: PathBuf,
    floor: PathBuf,
    timeit: PathBuf,
    /// The settings file srt runs with.
    srt_settings: PathBuf,
    scratch: Scratch,
    /// (what, command line) for the report.
    commands: Vec<(String, String)>,
}

/// Who a workload's command runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum User {
    /// uid/gid 65534.
    Nobody,
    /// root (the Rust toolchain lives under /root, 0700).
    Root,
}

/// The protected directory `dir/prot` (with one file), created if missing: the sandbox protects
/// it in the unlink, build and exec workloads so Landlock and the supervisor are active.
fn protected_dir(dir: &Path) -> Result<PathBuf> {
    let prot = dir.join("prot");
    if !prot.exists() {
        fs::create_dir(&prot).with_context(|| format!("creating {}", prot.display()))?;
        chown(&prot, Some(NOBODY), Some(NOBODY))?;
        let keep = prot.join("keep");
        fs::write(&keep, "protected\n")?;
        chown(&keep, Some(NOBODY), Some(NOBODY))?;
    }
    Ok(prot)
}

/// `inv` with [`RUN`] replaced by the run's number in every argument.
fn numbered(inv: &Invocation, run: usize) -> Invocation {
    let mut inv = inv.clone();
    let n = format!("{run:03}");
    for a in &mut inv.args {
        let s = a.to_string_lossy();
        if s.contains(RUN) {
            *a = s.replace(RUN, &n).into();
        }
    }
    inv
}

impl Bench {
    /// How variant `v` runs `argv` as uid 65534 (under timeit if `timed_inside`).
    fn invocation(
        &self,
        v: Variant,
        argv: &[OsString],
        protect: Option<&Path>,
        timed_inside: bool,
    ) -> Result<Invocation> {
        self.invocation_as(User::Nobody, v, argv, protect, timed_inside)
    }

    /// How variant `v` runs `argv` as `user` (under timeit if `timed_inside`).
    fn invocation_as(
        &self,
        user: User,
        v: Variant,
        argv: &[OsString],
        protect: Option<&Path>,
        timed_inside: bool,
    ) -> Result<Invocation> {
        let mut words: Vec<OsString> = Vec::new();
        if timed_inside {
            words.push(self.timeit.clone().into());
            words.push("timeit".into());
            words.push("--".into());
        }
        words.extend(argv.iter().cloned());
        let nobody = user == User::Nobody;
        let mut env = Vec::new();
        let (prog, args, as_nobody) = match v {
            Variant::Bare => {
                let (p, a) = words.split_first().context("empty command")?;
                (p.clone(), a.to_vec(), nobody)
            }
            Variant::Floor if nobody => {
                // With the synchronous wake-up the sandbox's supervisor asks for too.
                let mut a: Vec<OsString> = vec!["-s".into()];
                a.extend(words);
                (self.floor.clone().into(), a, false)
            }
            Variant::Floor => bail!("notify_floor runs commands as uid 65534 only"),
            Variant::Bwrap => {
                let mut a: Vec<OsString> = ["--dev-bind", "/", "/"].map(OsString::from).to_vec();
                a.extend(words);
                ("bwrap".into(), a, nobody)
            }
            Variant::Firejail => {
                // firejail lets only users in /etc/firejail/firejail.users (and root) use it
                let mut a: Vec<OsString> = ["--quiet", "--noprofile"].map(OsString::from).to_vec();
                a.extend(words);
                ("firejail".into(), a, false)
            }
            Variant::Srt => {
                let mut a: Vec<OsString> =
                    vec!["--settings".into(), self.srt_settings.clone().into()];
                a.extend(words);
                ("srt".into(), a, nobody)
            }
            Variant::Sandbox => {
                env.push(("SANDBOX_STATE_DIR", self.scratch.base.join("state")));
                env.push(("SANDBOX_LOG_DIR", self.scratch.base.join("logs")));
                let who = if nobody { "nobody" } else { "root" };
                let mut a: Vec<OsString> = ["run", "--user", who, "--quiet"]
                    .map(OsString::from)
                    .to_vec();
                if let Some(p) = protect {
                    a.push("--protect".into());
                    a.push(p.into());
                }
                a.push("--".into());
                a.extend(words);
                (self.sandbox.clone().into(), a, false)
            }
        };
        Ok(Invocation {
            env,
            prog,
            args,
            as_nobody,
            timed_inside,
        })
    }

    /// The command line of `inv` for the report, with `$BASE` for the scratch directory.
    fn show(&self, inv: &Invocation) -> String {
        let mut words: Vec<String> = inv
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", self.short(v.as_os_str())))
            .collect();
        if inv.as_nobody {
            words.push("setpriv --reuid 65534 --regid 65534 --clear-groups".into());
        }
        words.push(self.short(&inv.prog));
        words.extend(inv.args.iter().map(|a| self.short(a)));
        words.join(" ")
    }

    fn short(&self, word: &OsStr) -> String {
        shell_word(&word.to_string_lossy(), &self.scratch.base, &self.root)
    }

    fn record(&mut self, what: String, inv: &Invocation) {
        let line = self.show(inv);
        self.commands.push((what, line));
    }

    fn command(&self, inv: &Invocation) -> Command {
        let mut cmd = Command::new(&inv.prog);
        cmd.args(&inv.args)
            .current_dir(self.scratch.work())
            .stdin(Stdio::null());
        for (k, v) in &inv.env {
            cmd.env(k, v);
        }
        if inv.as_nobody {
            // std drops the supplementary groups too when root sets a uid
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd
    }

    /// Spawns `inv` and times it.
    fn spawn(&self, inv: &Invocation) -> Result<Sample> {
        let mut cmd = self.command(inv);
        cmd.stdout(if inv.timed_inside {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit());
        let t0 = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("spawning {}", self.show(inv)))?;
        let outer = t0.elapsed();
        if !out.status.success() {
            bail!("`{}` failed: {}", self.show(inv), out.status);
        }
        let inner = if inv.timed_inside {
            let text = String::from_utf8_lossy(&out.stdout);
            let ns: u64 = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| format!("no time from timeit in {text:?}"))?;
            Some(Duration::from_nanos(ns))
        } else {
            None
        };
        Ok(Sample { outer, inner })
    }

    /// Writes srt's settings: no network, writes allowed in `writable` only.
    fn srt_settings(&self, writable: &[&Path]) -> Result<()> {
        let allow: Vec<String> = writable.iter().map(|p| p.display().to_string()).collect();
        let settings = serde_json::json!({
            "network": {"allowedDomains": [], "deniedDomains": []},
            "filesystem": {"denyRead": [], "allowWrite": allow, "denyWrite": []},
        });
        fs::write(&self.srt_settings, format!("{settings}\n"))
            .with_context(|| format!("writing {}", self.srt_settings.display()))?;
        Ok(())
    }

    /// The peers that are installed and run `true` here; a note for each of the others.
    fn peers(&mut self, notes: &mut Vec<String>) -> Result<Vec<Variant>> {
        let mut ok = Vec::new();
        for (v, prog, package) in PEERS {
            if find_in_path(prog).is_none() {
                eprintln!("{prog} not installed, skipped");
                notes.push(format!(
                    "{prog} is not installed on this machine ({package}; \
                     `scripts/install-bench-peers.sh` installs it): no {} numbers.",
                    v.name()
                ));
                continue;
            }
            let inv = self.invocation(v, &["true".into()], None, false)?;
            let out = self
                .command(&inv)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .with_context(|| format!("spawning {}", self.show(&inv)))?;
            if out.status.success() {
                ok.push(v);
                continue;
            }
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("{prog} does not work here, skipped: {why}");
            notes.push(format!(
                "{prog} is installed but `{}` failed here ({}: {why}): no {} numbers.",
                self.show(&inv),
                out.status,
                v.name()
            ));
        }
        if ok.contains(&Variant::Firejail) {
            notes.push(
                "firejail is spawned as root: it refuses other users not listed in \
                 /etc/firejail/firejail.users, and the benchmark leaves that file alone."
                    .into(),
            );
        }
        if ok.contains(&Variant::Srt) {
            let settings = fs::read_to_string(&self.srt_settings).unwrap_or_default();
            notes.push(format!(
                "srt runs with `--settings $BASE/srt-settings.json`: `{}` (reads everywhere, \
                 writes to the unlink workloads' directories only, no network; each run also \
                 starts srt's HTTP and SOCKS bridges).",
                settings
                    .trim()
                    .replace(self.scratch.base.to_string_lossy().as_ref(), "$BASE")
            ));
        }
        Ok(ok)
    }

    /// Start-up: `true`, bare, under the floor, under the sandbox and under the working peers.
    fn start(&mut self, reps: usize, peers: &[Variant]) -> Result<Row> {
        let argv = ["true".into()];
        let mut variants = vec![Variant::Bare, Variant::Floor, Variant::Sandbox];
        variants.extend(peers);
        let mut invs = Vec::new();
        for v in &variants {
            let inv = self.invocation(*v, &argv, None, false)?;
            self.record(format!("start, {}", v.name()), &inv);
            self.spawn(&inv)?; // warm-up (page cache, first cgroup)
            invs.push((*v, inv));
        }
        let samples = alternate("start", &invs, reps, |_, inv| self.spawn(inv))?;
        row("start: `true`", "whole run", &samples, |s| Some(s.outer))
    }

    /// Start-up through `sandbox daemon` (a systemd host's service, which keeps the exec
    /// observer loaded ahead of time): the daemon runs for the whole row, and uid 65534, a
    /// member of the daemon's group (a numeric gid no one else has), runs `sandbox run -- true`
    /// through it without root. Against bare `true`.
    fn start_daemon(&mut self, reps: usize) -> Result<Row> {
        const GROUP: &str = "64231";
        let state = self.scratch.base.join("state");
        let logs = self.scratch.base.join("logs");
        // A copy uid 65534 may run (the build may sit below a directory it cannot enter).
        let client = self.scratch.base.join("sandbox-client");
        fs::copy(&self.sandbox, &client).with_context(|| {
            format!("copying {} for the daemon's client", self.sandbox.display())
        })?;
        fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let sock = state.join("daemon.sock");
        let _ = fs::remove_file(&sock);
        let mut daemon = Command::new(&self.sandbox)
            .args(["daemon", "--group", GROUP, "--approvers-group", GROUP])
            .env("SANDBOX_STATE_DIR", &state)
            .env("SANDBOX_LOG_DIR", &logs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sandbox daemon")?;
        self.commands.push((
            "the daemon for the start-up through it".into(),
            format!(
                "SANDBOX_STATE_DIR=$BASE/state SANDBOX_LOG_DIR=$BASE/logs {} daemon --group {GROUP} --approvers-group {GROUP}",
                self.short(self.sandbox.as_os_str())
            ),
        ));
        let result = (|| {
            let t0 = Instant::now();
            while !sock.exists() {
                if t0.elapsed() > Duration::from_secs(20) {
                    bail!(
                        "sandbox daemon did not create {} within 20 s",
                        sock.display()
                    );
                }
                if let Some(st) = daemon.try_wait()? {
                    bail!("sandbox daemon exited at start: {st}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let bare = self.invocation(Variant::Bare, &["true".into()], None, false)?;
            let through = Invocation {
                env: vec![("SANDBOX_STATE_DIR", state.clone())],
                prog: "setpriv".into(),
                args: ["--reuid", "65534", "--regid", "65534", "--groups", GROUP]
                    .map(OsString::from)
                    .into_iter()
                    .chain([client.clone().into_os_string()])
                    .chain(["run", "--quiet", "--", "true"].map(OsString::from))
                    .collect(),
                as_nobody: false,
                timed_inside: false,
            };
            self.record("start through the daemon, bare".into(), &bare);
            self.record("start through the daemon, sandbox".into(), &through);
            let invs = vec![(Variant::Bare, bare), (Variant::Sandbox, through)];
            for (_, inv) in &invs {
                self.spawn(inv)?; // warm-up
            }
            // A pause between runs lets the daemon load its next spare, as between sessions
            // started by people; back-to-back starts are in `start` of the daemon's tests.
            let samples = alternate("start through the daemon", &invs, reps, |_, inv| {
                std::thread::sleep(Duration::from_millis(100));
                self.spawn(inv)
            })?;
            row(DAEMON_START, "whole run", &samples, |s| Some(s.outer))
        })();
        let _ = daemon.kill();
        let _ = daemon.wait();
        result
    }

    /// Unlink-heavy on `dir` (named `fs`): `rm -rf` of a fresh 50,000-file tree per run, with a
    /// sibling directory protected in the sandbox so Landlock and the supervisor are active.
    /// With `profile` the sandbox runs under that shipped profile too (`default` has name
    /// patterns, `**/.git`: then Landlock grants no removal and the supervisor performs each).
    fn unlink(
        &mut self,
        fs_name: &str,
        dir: &Path,
        reps: usize,
        peers: &[Variant],
        profile: Option<&str>,
    ) -> Result<Vec<Row>> {
        let prot = protected_dir(dir)?;
        let mut invs = Vec::new();
        let mut variants = vec![Variant::Bare, Variant::Floor, Variant::Sandbox];
        variants.extend(peers);
        for v in variants {
            let argv: Vec<OsString> = vec![
                "rm".into(),
                "-rf".into(),
                dir.join(format!("tree-{RUN}")).into(),
            ];
            let mut inv = self.invocation(v, &argv, Some(&prot), true)?;
            let mut what = format!("unlink-heavy on {fs_name}, {}", v.name());
            if let (Variant::Sandbox, Some(p)) = (v, profile) {
                // `run --profile NAME ...`: right after the subcommand.
                inv.args.insert(1, "--profile".into());
                inv.args.insert(2, p.into());
                what = format!("{what}, profile {p}");
            }
            self.record(what, &inv);
            invs.push((v, inv));
        }
        let label = match profile {
            Some(p) => format!("unlink-heavy ({fs_name}, profile {p})"),
            None => format!("unlink-heavy ({fs_name})"),
        };
        let trees: Vec<PathBuf> = (0..reps * invs.len())
            .map(|i| dir.join(format!("tree-{i:03}")))
            .collect();
        eprint!("{label}: creating {} trees...", trees.len());
        let t0 = Instant::now();
        let made = trees.iter().try_for_each(|t| make_tree(t));
        eprintln!(" done ({:.1} s)", t0.elapsed().as_secs_f64());
        let samples = made.and_then(|()| {
            alternate(&label, &invs, reps, |run, inv| {
                let tree = &trees[run];
                let inv = numbered(inv, run);
                // dirty metadata of the previous run must not be written back during this one
                // SAFETY: sync has no preconditions.
                unsafe { libc::sync() };
                let s = self.spawn(&inv)?;
                if tree.exists() {
                    bail!(
                        "{} still exists after `{}`",
                        tree.display(),
                        self.show(&inv)
                    );
                }
                Ok(s)
            })
        });
        for t in &trees {
            let _ = fs::remove_dir_all(t);
        }
        let samples = samples?;
        let name = match profile {
            Some(p) => format!("unlink-heavy, {fs_name}: `rm -rf` 50,000 files, profile `{p}`"),
            None => format!("unlink-heavy, {fs_name}: `rm -rf` 50,000 files"),
        };
        Ok(vec![
            row(&name, "rm -rf only", &samples, |s| s.inner)?,
            row(&name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }

    /// The git trees of [`Bench::git_clean`] (`disk/git-NNN`, one per run), made before any
    /// timed removal on the disk.
    fn git_trees(&mut self, disk: &Path, reps: usize) -> Result<Vec<PathBuf>> {
        let template = disk.join("git-template");
        workloads::git_template(&template, NOBODY)?;
        let trees: Vec<PathBuf> = (0..reps * 3)
            .map(|i| disk.join(format!("git-{i:03}")))
            .collect();
        eprint!("git clean: creating {} trees...", trees.len());
        let t0 = Instant::now();
        for t in &trees {
            workloads::git_tree(&template, t, NOBODY)?;
        }
        eprintln!(" done ({:.1} s)", t0.elapsed().as_secs_f64());
        Ok(trees)
    }

    /// Unlink-heavy, the way builds clean up: `git clean -fdx` in a work tree with a few
    /// committed files and 20,000 untracked and ignored files in nested directories.
    fn git_clean(
        &mut self,
        disk: &Path,
        prot: &Path,
        trees: &[PathBuf],
        reps: usize,
    ) -> Result<Vec<Row>> {
        // --git-dir: a tree without its .git must fail, not find the workspace's repository
        let argv: Vec<OsString> = [
            "git",
            "-C",
            &disk.join(format!("git-{RUN}")).display().to_string(),
            "--git-dir=.git",
            "--work-tree=.",
            "clean",
            "-fdxq",
        ]
        .map(OsString::from)
        .to_vec();
        let mut invs = Vec::new();
        for v in [Variant::Bare, Variant::Floor, Variant::Sandbox] {
            let inv = self.invocation(v, &argv, Some(prot), true)?;
            self.record(format!("git clean, {}", v.name()), &inv);
            invs.push((v, inv));
        }
        let samples = alternate("git clean", &invs, reps, |run, inv| {
            let tree = trees.get(run).context("more runs than git trees")?;
            if !tree.join(".git").is_dir() {
                bail!("{} has no .git", tree.display());
            }
            let inv = numbered(inv, run);
            // SAFETY: sync has no preconditions.
            unsafe { libc::sync() };
            let s = self.spawn(&inv)?;
            if !workloads::git_cleaned(tree) {
                bail!("`{}` did not clean {}", self.show(&inv), tree.display());
            }
            Ok(s)
        })?;
        let name = "unlink-heavy, disk: `git clean -fdx` 20,000 files";
        Ok(vec![
            row(name, "git clean only", &samples, |s| s.inner)?,
            row(name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }

    /// Build-like: `make -j2` of a C project of 200 units, into a fresh object directory per
    /// run, bare and in the sandbox (protecting `prot`).
    fn make(&mut self, disk: &Path, prot: &Path, reps: usize) -> Result<Vec<Row>> {
        let proj = disk.join("cproj");
        workloads::c_project(&proj, NOBODY)?;
        let argv: Vec<OsString> = [
            "make",
            "-s",
            "-j2",
            "-C",
            &proj.display().to_string(),
            &format!("O=obj-{RUN}"),
        ]
        .map(OsString::from)
        .to_vec();
        let mut invs = Vec::new();
        for v in [Variant::Bare, Variant::Sandbox] {
            let inv = self.invocation(v, &argv, Some(prot), true)?;
            self.record(format!("build-like, make, {}", v.name()), &inv);
            invs.push((v, inv));
        }
        // warm-up (page cache of the compiler), into an object directory of its own
        self.spawn(&numbered(&invs[0].1, 999))?;
        let samples = alternate("make -j2", &invs, reps, |run, inv| {
            let s = self.spawn(&numbered(inv, run))?;
            let prog = proj.join(format!("obj-{run:03}/prog"));
            if !prog.is_file() {
                bail!("make did not build {}", prog.display());
            }
            Ok(s)
        })?;
        let name = format!("build-like: `make -j2`, {} C files", workloads::C_UNITS);
        Ok(vec![
            row(&name, "build only", &samples, |s| s.inner)?,
            row(&name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }

    /// Build-like: `cargo build --offline` (debug) of a generated dependency-free crate into a
    /// fresh target directory per run, as root on both sides (the toolchain is under /root).
    fn cargo(&mut self, disk: &Path, prot: &Path, reps: usize) -> Result<Vec<Row>> {
        let dir = disk.join("cargo");
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let krate = dir.join("crate");
        let lines = workloads::rust_crate(&krate)?;
        // the toolchain's own cargo and rustc (as `cargo xtask` found them), not rustup's proxies
        let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        let rustc = cargo.with_file_name("rustc");
        let mut argv: Vec<OsString> = vec![
            "env".into(),
            format!("CARGO_HOME={}", dir.join("home").display()).into(),
            format!(
                "CARGO_TARGET_DIR={}",
                dir.join(format!("target-{RUN}")).display()
            )
            .into(),
        ];
        if rustc.is_absolute() && rustc.is_file() {
            argv.push(format!("RUSTC={}", rustc.display()).into());
        }
        argv.extend(
            [
                cargo.as_os_str(),
                OsStr::new("build"),
                OsStr::new("--offline"),
                OsStr::new("-q"),
                OsStr::new("--manifest-path"),
                krate.join("Cargo.toml").as_os_str(),
            ]
            .map(OsString::from),
        );
        let mut invs = Vec::new();
        for v in [Variant::Bare, Variant::Sandbox] {
            let inv = self.invocation_as(User::Root, v, &argv, Some(prot), true)?;
            self.record(format!("build-like, cargo, {}", v.name()), &inv);
            invs.push((v, inv));
        }
        self.spawn(&numbered(&invs[0].1, 999))?; // warm-up
        let samples = alternate("cargo build", &invs, reps, |run, inv| {
            let s = self.spawn(&numbered(inv, run))?;
            let bin = dir.join(format!("target-{run:03}/debug/benchcrate"));
            if !bin.is_file() {
                bail!("cargo did not build {}", bin.display());
            }
            Ok(s)
        })?;
        let name = format!(
            "build-like: `cargo build --offline`, {} lines of Rust",
            lines / 100 * 100
        );
        Ok(vec![
            row(&name, "build only", &samples, |s| s.inner)?,
            row(&name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }

    /// Exec-heavy: a shell loop running `/bin/true` 2,000 times (the sandbox protects
    /// `disk/prot`, so the whole guard is active).
    fn exec(&mut self, disk: &Path, reps: usize) -> Result<Vec<Row>> {
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), EXEC_LOOP.into()];
        let prot = protected_dir(disk)?;
        let mut invs = Vec::new();
        for v in [Variant::Bare, Variant::Floor, Variant::Sandbox] {
            let inv = self.invocation(v, &argv, Some(&prot), true)?;
            self.record(format!("exec-heavy, {}", v.name()), &inv);
            invs.push((v, inv));
        }
        let samples = alternate("exec-heavy", &invs, reps, |_, inv| self.spawn(inv))?;
        let name = "exec-heavy: 2,000 x `/bin/true` from `sh`";
        Ok(vec![
            row(name, "loop only", &samples, |s| s.inner)?,
            row(name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }
}

impl Bench {
    /// Exec-heavy with `[commands] hold`: the same loop under a profile holding the `default`
    /// profile's command list (none of which names `/bin/true` or `sh`), against bare. Compare its
    /// sandbox/bare ratio with the plain exec-heavy row's: the difference is what the exec check
    /// costs commands that no rule names. With `script`, the loop runs a `#!/bin/sh` script
    /// that exits at once instead of `/bin/true`: the kernel side also names a script's own file
    /// (from the task's `task_works` list), which only a script exec pays for.
    fn exec_commands(&mut self, disk: &Path, reps: usize, script: bool) -> Result<Vec<Row>> {
        let exec_loop = if script {
            let noop = self.scratch.base.join("noop-script");
            fs::write(&noop, "#!/bin/sh\nexit 0\n")?;
            fs::set_permissions(&noop, fs::Permissions::from_mode(0o755))?;
            EXEC_LOOP.replace("/bin/true", &noop.to_string_lossy())
        } else {
            EXEC_LOOP.to_string()
        };
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), exec_loop.into()];
        let prot = protected_dir(disk)?;
        let default = fs::read_to_string(self.root.join("profiles/default.toml"))
            .context("reading profiles/default.toml")?;
        let commands = default
            .find("[commands]")
            .map(|i| &default[i..])
            .context("profiles/default.toml has no [commands] table")?;
        let profile = self.scratch.base.join("commands.toml");
        fs::write(&profile, format!("description = \"bench\"\n{commands}"))?;
        let mut invs = Vec::new();
        for v in [Variant::Bare, Variant::Sandbox] {
            let mut inv = self.invocation(v, &argv, Some(&prot), true)?;
            if v == Variant::Sandbox {
                // `run --profile FILE ...`: right after the subcommand.
                inv.args.insert(1, "--profile".into());
                inv.args.insert(2, profile.clone().into());
            }
            let what = if script { "a script" } else { "/bin/true" };
            self.record(
                format!("exec-heavy ({what}) with commands.hold, {}", v.name()),
                &inv,
            );
            invs.push((v, inv));
        }
        let samples = alternate("exec-heavy, commands.hold", &invs, reps, |_, inv| {
            self.spawn(inv)
        })?;
        let name = if script {
            "exec-heavy: 2,000 x a `#!/bin/sh` script from `sh`, `[commands] hold` as in `default`"
        } else {
            "exec-heavy: 2,000 x `/bin/true` from `sh`, `[commands] hold` as in `default`"
        };
        Ok(vec![
            row(name, "loop only", &samples, |s| s.inner)?,
            row(name, "whole run", &samples, |s| Some(s.outer))?,
        ])
    }
}

/// `word` for a shell command line shown to people: `$BASE` for the scratch directory `base`,
/// paths in the workspace `root` relative to it, quoted unless plain.
pub fn shell_word(word: &str, base: &Path, root: &Path) -> String {
    // the scratch directory is inside the target directory: replace it first
    let w = word.replace(base.to_string_lossy().as_ref(), "$BASE");
    let root = format!("{}/", root.to_string_lossy());
    let w = w
        .strip_prefix(root.as_str())
        .map_or(w.clone(), str::to_string);
    // `$BASE` must stay unquoted to expand
    let plain = |t: &str| {
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._,:=+-%".contains(c))
    };
    if !w.is_empty() && plain(&w.replace("$BASE", "")) {
        w
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Runs every variant `reps` times, alternating (the order rotates each repetition). `run` gets
/// the run's number (0, 1, ... across all variants) and the invocation.
fn alternate(
    label: &str,
    invs: &[(Variant, Invocation)],
    reps: usize,
    mut run: impl FnMut(usize, &Invocation) -> Result<Sample>,
) -> Result<Vec<(Variant, Vec<Sample>)>> {
    let mut out: Vec<(Variant, Vec<Sample>)> = invs.iter().map(|(v, _)| (*v, Vec::new())).collect();
    eprint!("{label}: ");
    let t0 = Instant::now();
    for rep in 0..reps {
        for i in 0..invs.len() {
            check_interrupted()?;
            let k = (rep + i) % invs.len();
            let sample = run(rep * invs.len() + i, &invs[k].1)?;
            out[k].1.push(sample);
        }
        eprint!(".");
    }
    eprintln!(" done ({:.1} s)", t0.elapsed().as_secs_f64());
    Ok(out)
}

fn row(
    workload: &str,
    timed: &'static str,
    samples: &[(Variant, Vec<Sample>)],
    pick: impl Fn(&Sample) -> Option<Duration>,
) -> Result<Row> {
    let mut cells = Vec::new();
    for (v, s) in samples {
        let times: Vec<Duration> = s.iter().filter_map(&pick).collect();
        let st = Stats::of(&times).with_context(|| format!("no samples for {}", v.name()))?;
        cells.push((*v, st));
    }
    Ok(Row {
        workload: workload.to_string(),
        timed,
        cells,
    })
}

/// Creates `tree` with `TREE_DIRS` x `TREE_FILES` empty files, all owned by uid/gid 65534.
fn make_tree(tree: &Path) -> Result<()> {
    if tree.exists() {
        fs::remove_dir_all(tree)?;
    }
    let own = |p: &Path| {
        chown(p, Some(NOBODY), Some(NOBODY)).with_context(|| format!("chown {}", p.display()))
    };
    fs::create_dir(tree).with_context(|| format!("creating {}", tree.display()))?;
    own(tree)?;
    for d in 0..TREE_DIRS {
        check_interrupted()?;
        let dir = tree.join(format!("d{d:03}"));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        own(&dir)?;
        for f in 0..TREE_FILES {
            let file = dir.join(format!("f{f:03}"));
            fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
            own(&file)?;
        }
    }
    Ok(())
}

/// The performance targets that the rows measure.
fn checks(rows: &[Row], backend: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let find = |workload: &str, timed: &str| {
        rows.iter()
            .find(|r| r.workload.starts_with(workload) && r.timed == timed)
    };
    for (workload, how) in [
        ("start: `true`", "`sandbox run -- true`"),
        (
            DAEMON_START,
            "`sandbox run -- true` through `sandbox daemon`",
        ),
    ] {
        let Some(st) = rows
            .iter()
            .find(|r| r.workload == workload && r.timed == "whole run")
            .and_then(|r| r.get(Variant::Sandbox))
        else {
            continue;
        };
        out.push(Check {
            target: format!("{how} under {} ms", START_TARGET.as_millis()),
            measured: format!("{} (median)", report::ms(st.median)),
            met: st.median < START_TARGET,
        });
    }
    // DESIGN.md: within 5% of bare on the BPF LSM backend, within 2x on the seccomp backend
    let bare_limit = if backend == "lsm" { 1.05 } else { 2.0 };
    for (fs_name, profile) in [
        ("tmpfs", ""),
        ("disk", ""),
        ("tmpfs", ", profile `default`"),
    ] {
        let workload = format!("unlink-heavy, {fs_name}: `rm -rf` 50,000 files{profile}");
        let Some(r) = rows
            .iter()
            .find(|r| r.workload == workload && r.timed == "rm -rf only")
        else {
            continue;
        };
        let fs_name = format!("{fs_name}{profile}");
        if let Some(x) = r.ratio(Variant::Sandbox, Variant::Bare) {
            out.push(Check {
                target: format!(
                    "`rm -rf` of 50,000 unprotected files within {bare_limit}x of bare ({backend} backend), {fs_name}"
                ),
                measured: format!("{x:.2}x"),
                met: x <= bare_limit,
            });
        }
        if let Some(x) = r.ratio(Variant::Sandbox, Variant::Floor) {
            out.push(Check {
                target: format!(
                    "`rm -rf` under the sandbox within {:.0}% of the floor, {fs_name}",
                    (FLOOR_TARGET - 1.0) * 100.0
                ),
                measured: format!("{x:.2}x"),
                met: x <= FLOOR_TARGET,
            });
        }
    }
    if let Some(r) = find("unlink-heavy, disk: `git clean", "git clean only") {
        if let Some(x) = r.ratio(Variant::Sandbox, Variant::Bare) {
            out.push(Check {
                target: format!(
                    "`git clean -fdx` of 20,000 unprotected files within {bare_limit}x of bare ({backend} backend)"
                ),
                measured: format!("{x:.2}x"),
                met: x <= bare_limit,
            });
        }
        if let Some(x) = r.ratio(Variant::Sandbox, Variant::Floor) {
            out.push(Check {
                target: format!(
                    "`git clean -fdx` under the sandbox within {:.0}% of the floor",
                    (FLOOR_TARGET - 1.0) * 100.0
                ),
                measured: format!("{x:.2}x"),
                met: x <= FLOOR_TARGET,
            });
        }
    }
    for (prefix, what) in [
        ("build-like: `make", "`make -j2`"),
        ("build-like: `cargo", "`cargo build`"),
    ] {
        for timed in ["build only", "whole run"] {
            let Some(x) =
                find(prefix, timed).and_then(|r| r.ratio(Variant::Sandbox, Variant::Bare))
            else {
                continue;
            };
            out.push(Check {
                target: format!(
                    "{what} under the sandbox within {:.0}% of bare, {timed}",
                    (BUILD_TARGET - 1.0) * 100.0
                ),
                measured: format!("{x:.3}x"),
                met: x <= BUILD_TARGET,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_word_names_scratch_base_and_quotes_shell_syntax() {
        let (base, root) = (Path::new("/w/target/bench.7"), Path::new("/w"));
        assert_eq!(
            shell_word("/w/target/bench.7/disk/tree", base, root),
            "$BASE/disk/tree"
        );
        assert_eq!(
            shell_word("/w/target/release/sandbox", base, root),
            "target/release/sandbox"
        );
        assert_eq!(shell_word("/usr/bin/true", base, root), "/usr/bin/true");
        assert_eq!(
            shell_word("K=/w/target/bench.7/home", base, root),
            "K=$BASE/home"
        );
        assert_eq!(shell_word("a b", base, root), "'a b'");
        assert_eq!(shell_word("it's", base, root), r"'it'\''s'");
        assert_eq!(shell_word("", base, root), "''");
    }
}
