//! The hold workloads of `cargo xtask bench`, which decide holds from outside the session the way
//! `sandbox approve` does: straight on the session's control socket
//! (`$SANDBOX_STATE_DIR/<session>.sock`, one JSON request and one JSON answer per connection; see
//! guard-user/src/control.rs).
//!
//! - Latency: `progs/hold_victim.c seq` unlinks protected files one after another and notes
//!   CLOCK_MONOTONIC just before each unlink() and just after it returns. xtask polls `pending`
//!   in a tight loop (no sleep: the poll's round trip is the resolution), notes when each hold
//!   first shows, and approves it at once with scope `once`, noting when it sent the decision.
//!   Trap to visible = shown − call started; approve to resumed = call returned − decision sent.
//!   There is no time namespace in a session, so both sides read the same clock.
//! - Memory: the supervisor's (the `sandbox run` process's) VmRSS with the command idle
//!   (`sleep`), and with many pending holds (`hold_victim threads`: one thread per protected
//!   file, each blocked in its unlink). The holds are then denied with scope `session`, so the
//!   threads fail with EPERM and the session ends by itself.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::chown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::report::{percentile, Check, Outcome};

/// DESIGN.md: trap to pending entry visible in under 1 ms (p99); approve to resumed in under
/// 1 ms.
const HOLD_TARGET_MS: f64 = 1.0;
/// uid and gid of the victims.
const NOBODY: u32 = 65534;
/// How long any one step may take before the workload fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// CLOCK_MONOTONIC in nanoseconds (the clock `hold_victim` reads).
fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// One request on a session's control socket; the answer if it says `ok`.
fn call(sock: &Path, req: &Value) -> Result<Value> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut out = String::new();
    BufReader::new(&s).read_line(&mut out)?;
    let answer: Value = serde_json::from_str(&out)
        .with_context(|| format!("bad answer from {}: {out:?}", sock.display()))?;
    if answer["ok"] != json!(true) {
        bail!("{} refused {req}: {answer}", sock.display());
    }
    Ok(answer)
}

fn pending(sock: &Path) -> Result<Vec<Value>> {
    Ok(call(sock, &json!({"op": "pending"}))?["pending"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn decide(sock: &Path, id: &str, verdict: &str, scope: &str) -> Result<Value> {
    call(
        sock,
        &json!({"op": "decide", "id": id, "verdict": verdict, "scope": scope, "for_ms": null}),
    )
}

/// A running `sandbox run`: ended (SIGTERM, then SIGKILL) and reaped on drop, so an error
/// leaves no session behind.
struct Session {
    child: Child,
    sock: PathBuf,
    /// Reads the command's stdout while it runs (so it never blocks on a full pipe).
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Session {
    /// Waits up to `limit` for the command to end by itself.
    fn wait(&mut self, limit: Duration) -> Result<std::process::Output> {
        let t0 = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t0.elapsed() > limit {
                bail!("the session did not end within {} s", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = self.child.wait()?;
        let stdout = match self.stdout.take().map(std::thread::JoinHandle::join) {
            Some(Ok(v)) => v,
            _ => bail!("reading the command's output failed"),
        };
        Ok(std::process::Output {
            status,
            stdout,
            stderr: Vec::new(),
        })
    }

    /// Waits (polling without sleep when `spin`) until the control socket answers.
    fn ready(&mut self, spin: bool) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if call(&self.sock, &json!({"op": "info"})).is_ok() {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("`sandbox run` ended ({st}) before its control socket answered");
            }
            if t0.elapsed() > STEP_TIMEOUT {
                bail!("{} did not answer", self.sock.display());
            }
            if !spin {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl Session {
    /// Ends the session (SIGTERM) and checks that its control socket is gone.
    fn end(mut self) -> Result<()> {
        self.stop();
        if self.sock.exists() {
            bail!("{} is left after the session ended", self.sock.display());
        }
        Ok(())
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where and how the hold workloads run.
pub struct Env<'a> {
    /// target/release/sandbox.
    pub sandbox: &'a Path,
    /// The scratch directory (root, 0755).
    pub base: &'a Path,
    /// The compiled `progs/hold_victim.c`, executable by uid 65534.
    pub victim: &'a Path,
    /// Holds approved one by one in the latency workload.
    pub latency_holds: usize,
    /// Holds pending at once in the memory workload.
    pub memory_holds: usize,
}

impl Env<'_> {
    /// `sandbox run` of `argv` in session `name`, protecting `protect`.
    fn command(&self, name: &str, protect: Option<&Path>, argv: &[String]) -> Command {
        let mut c = Command::new(self.sandbox);
        c.env("SANDBOX_STATE_DIR", self.base.join("state"))
            .env("SANDBOX_LOG_DIR", self.base.join("logs"))
            .current_dir(self.base.join("work"))
            .args(["run", "--user", "nobody", "--quiet", "--session", name]);
        if let Some(p) = protect {
            c.arg("--protect").arg(p);
        }
        c.arg("--").args(argv);
        c
    }

    fn spawn(&self, name: &str, protect: Option<&Path>, argv: &[String]) -> Result<Session> {
        let mut child = self
            .command(name, protect, argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning sandbox run")?;
        let stdout = child.stdout.take().map(|mut o| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = std::io::Read::read_to_end(&mut o, &mut v);
                v
            })
        });
        Ok(Session {
            child,
            sock: self.base.join("state").join(format!("{name}.sock")),
            stdout,
        })
    }

    /// `sandbox run` as the report shows it.
    fn show(&self, name: &str, protect: Option<&Path>, argv: &[String]) -> String {
        let c = self.command(name, protect, argv);
        let mut words = vec![
            "SANDBOX_STATE_DIR=$BASE/state SANDBOX_LOG_DIR=$BASE/logs".to_string(),
            "target/release/sandbox".to_string(),
        ];
        let base = self.base.display().to_string();
        words.extend(
            c.get_args()
                .map(|a| a.to_string_lossy().replace(&base, "$BASE")),
        );
        words.join(" ")
    }

    /// `n` protected files `dir/f0000`.. owned by uid 65534.
    fn protected_files(&self, name: &str, n: usize) -> Result<PathBuf> {
        let dir = self.base.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        chown(&dir, Some(NOBODY), Some(NOBODY))?;
        for i in 0..n {
            let f = dir.join(format!("f{i:04}"));
            fs::write(&f, "protected\n").with_context(|| format!("creating {}", f.display()))?;
            chown(&f, Some(NOBODY), Some(NOBODY))?;
        }
        Ok(dir)
    }
}

/// Index of the victim's file a hold is about (`.../fNNNN`).
fn file_index(hold: &Value) -> Option<usize> {
    let target = hold["target"].as_str()?;
    let name = Path::new(target).file_name()?.to_str()?;
    name.strip_prefix('f')?.parse().ok()
}

/// Runs both hold workloads.
pub fn run(env: &Env) -> Result<Outcome> {
    let mut out = Outcome::default();
    latency(env, &mut out)?;
    memory(env, &mut out)?;
    Ok(out)
}

/// Per hold: when it first showed in `pending`, and when its approval was sent (ns).
#[derive(Clone, Copy, Default)]
struct Seen {
    shown: Option<i64>,
    approved: Option<i64>,
}

fn latency(env: &Env, out: &mut Outcome) -> Result<()> {
    let n = env.latency_holds;
    let dir = env.protected_files("hold-latency", n)?;
    let name = "bench-hold".to_string();
    let argv = vec![
        env.victim.display().to_string(),
        "seq".into(),
        dir.display().to_string(),
        n.to_string(),
    ];
    out.commands.push((
        "hold latency (xtask polls `pending` and approves each hold with scope once)".into(),
        env.show(&name, Some(&dir), &argv),
    ));
    eprint!("hold latency: ");
    let mut s = env.spawn(&name, Some(&dir), &argv)?;
    s.ready(true)?;
    // calls made before the first poll may have been visible for a while already: not counted
    let first_poll = mono_ns();
    let mut seen = vec![Seen::default(); n];
    let mut polls: Vec<f64> = Vec::new();
    let mut decided = 0;
    let t0 = Instant::now();
    while decided < n {
        if t0.elapsed() > STEP_TIMEOUT {
            bail!(
                "hold latency: {decided} of {n} holds seen in {} s",
                STEP_TIMEOUT.as_secs()
            );
        }
        crate::bench::check_interrupted()?;
        let asked = mono_ns();
        let holds = match pending(&s.sock) {
            Ok(h) => h,
            // the session ended (the victim failed): its status says why, below
            Err(_) if s.child.try_wait()?.is_some() => break,
            Err(e) => return Err(e),
        };
        let shown = mono_ns();
        polls.push((shown - asked) as f64 / 1e6);
        for h in &holds {
            let (Some(i), Some(id)) = (file_index(h), h["id"].as_str()) else {
                bail!("hold latency: unexpected hold {h}");
            };
            let Some(slot) = seen.get_mut(i) else {
                bail!("hold latency: hold for a file outside the victim's: {h}");
            };
            if slot.approved.is_some() {
                continue; // approved already, not yet gone from the list
            }
            slot.shown.get_or_insert(shown);
            slot.approved = Some(mono_ns());
            decide(&s.sock, id, "allow", "once")?;
            decided += 1;
        }
    }
    let o = s.wait(STEP_TIMEOUT)?;
    if !o.status.success() {
        bail!("hold latency: the victim failed: {}", o.status);
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let (mut visible, mut resumed) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let f: Vec<i64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [i, start, end, ret, errno] = f[..] else {
            bail!("hold latency: bad victim line {line:?}");
        };
        if ret != 0 {
            bail!("hold latency: unlink of f{i:04} failed (errno {errno}) although approved");
        }
        let sn = usize::try_from(i)
            .ok()
            .and_then(|i| seen.get(i))
            .copied()
            .unwrap_or_default();
        let (Some(shown), Some(approved)) = (sn.shown, sn.approved) else {
            bail!("hold latency: f{i:04} was unlinked but never held");
        };
        if start >= first_poll {
            visible.push((shown - start) as f64 / 1e6);
        }
        resumed.push((end - approved) as f64 / 1e6);
    }
    if resumed.len() != n {
        bail!(
            "hold latency: {} of {n} results from the victim",
            resumed.len()
        );
    }
    eprintln!("{n} holds done");
    for v in [&mut visible, &mut resumed, &mut polls] {
        v.sort_by(|a, b| a.total_cmp(b));
    }

    let mut sec = String::new();
    let _ = writeln!(
        sec,
        "## Hold latency\n\n\
         `xtask/progs/hold_victim.c` inside `sandbox run --protect` unlinks {n} protected files \
         one after another, noting CLOCK_MONOTONIC just before each unlink() and just after it \
         returns. xtask, outside, polls the session's control socket (`pending`, one connection \
         per request) in a tight loop, notes when each hold first shows (after the answer is \
         read) and approves it at once (`decide`, scope `once`), noting the time just before \
         sending. One poll took {:.3} ms at the median ({:.3} ms p99): that bounds the \
         resolution of *trap to visible*, which includes up to one poll. Calls that started \
         before the first poll are not counted there.\n\n\
         | interval | p50 ms | p99 ms | max ms | n |\n|---|---:|---:|---:|---:|",
        percentile(&polls, 0.5),
        percentile(&polls, 0.99),
    );
    for (what, v) in [
        (
            "trap to visible (call started → shown in `pending`)",
            &visible,
        ),
        (
            "approve to resumed (decision sent → call returned)",
            &resumed,
        ),
    ] {
        let _ = writeln!(
            sec,
            "| {what} | {:.3} | {:.3} | {:.3} | {} |",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN),
            v.len()
        );
    }
    out.sections.push(sec);
    for (what, v) in [
        ("trap to pending entry visible", &visible),
        ("approve to resumed", &resumed),
    ] {
        let p99 = percentile(v, 0.99);
        out.checks.push(Check {
            target: format!("{what} under {HOLD_TARGET_MS} ms (p99)"),
            measured: format!("{p99:.3} ms p99 ({:.3} ms p50)", percentile(v, 0.5)),
            met: p99 < HOLD_TARGET_MS,
        });
    }
    Ok(())
}

/// VmRSS and VmHWM of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => bail!("no VmRSS in /proc/{pid}/status"),
    }
}

/// The supervisor's pid (from `info`), checked against the process xtask spawned.
fn supervisor_pid(s: &Session) -> Result<u32> {
    let info = call(&s.sock, &json!({"op": "info"}))?;
    let pid = info["info"]["pid"].as_u64().unwrap_or(0);
    if pid != u64::from(s.child.id()) {
        bail!(
            "the session's supervisor is pid {pid}, not the spawned `sandbox run` ({})",
            s.child.id()
        );
    }
    Ok(s.child.id())
}

fn memory(env: &Env, out: &mut Outcome) -> Result<()> {
    let mib = |k: u64| k as f64 / 1024.0;
    let mut rows: Vec<(String, u64, u64)> = Vec::new();

    eprint!("supervisor memory: idle...");
    let name = "bench-idle".to_string();
    let argv = vec!["sleep".to_string(), "600".to_string()];
    out.commands.push((
        "supervisor memory, idle (VmRSS read after 0.5 s, then SIGTERM)".into(),
        env.show(&name, None, &argv),
    ));
    let mut s = env.spawn(&name, None, &argv)?;
    s.ready(false)?;
    std::thread::sleep(Duration::from_millis(500));
    let pid = supervisor_pid(&s)?;
    let (rss, hwm) = rss_kib(pid)?;
    rows.push(("idle (`sleep`)".into(), rss, hwm));
    s.end()?;

    let n = env.memory_holds;
    eprint!(" {n} holds...");
    let dir = env.protected_files("hold-memory", n)?;
    let name = "bench-holds".to_string();
    let argv = vec![
        env.victim.display().to_string(),
        "threads".into(),
        dir.display().to_string(),
        n.to_string(),
    ];
    out.commands.push((
        format!(
            "supervisor memory, {n} pending holds (VmRSS read once `info` shows {n} pending, \
             then one hold denied with scope session)"
        ),
        env.show(&name, Some(&dir), &argv),
    ));
    let mut s = env.spawn(&name, Some(&dir), &argv)?;
    s.ready(false)?;
    let pid = supervisor_pid(&s)?;
    let t0 = Instant::now();
    let mut reached = 0;
    while reached < n {
        crate::bench::check_interrupted()?;
        let info = call(&s.sock, &json!({"op": "info"}))?;
        reached = info["info"]["pending"].as_u64().unwrap_or(0) as usize;
        if t0.elapsed() > STEP_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss_n, hwm_n) = rss_kib(pid)?;
    if reached < n {
        out.notes.push(format!(
            "supervisor memory: only {reached} of {n} holds were pending after {} s; the row \
             shows the memory with {reached}.",
            STEP_TIMEOUT.as_secs()
        ));
    }
    rows.push((format!("{reached} pending holds"), rss_n, hwm_n));
    let first = pending(&s.sock)?
        .first()
        .and_then(|h| h["id"].as_str().map(str::to_string))
        .context("no pending hold to deny")?;
    decide(&s.sock, &first, "deny", "session")?;
    let o = s.wait(STEP_TIMEOUT)?;
    s.end()?;
    let summary = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || summary != format!("allowed 0 denied {n} failed 0") {
        bail!(
            "supervisor memory: the victim ended with {} and {summary:?} (expected every unlink denied)",
            o.status
        );
    }
    eprintln!(" done");

    let mut sec = String::new();
    let _ = writeln!(
        sec,
        "## Supervisor memory\n\n\
         VmRSS of the `sandbox run` process (the supervisor; its pid checked against the \
         session's `info`) from /proc/PID/status, VmHWM its peak so far. Holds: \
         `xtask/progs/hold_victim.c threads` starts one thread per protected file, each blocked \
         in its unlink() until decided; read once the session's `info` counts them all pending, \
         then they are denied (one `decide` with scope `session`) and the session ends by \
         itself.\n\n\
         | state | VmRSS MiB | VmHWM MiB |\n|---|---:|---:|"
    );
    for (what, rss, hwm) in &rows {
        let _ = writeln!(sec, "| {what} | {:.1} | {:.1} |", mib(*rss), mib(*hwm));
    }
    if let [(_, idle, _), (_, held, _)] = rows[..] {
        if reached > 0 {
            let _ = writeln!(
                sec,
                "\nPer pending hold: {:.1} KiB above idle.",
                held.saturating_sub(idle) as f64 / reached as f64
            );
        }
    }
    out.sections.push(sec);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_index_reads_the_victims_file_name() {
        assert_eq!(
            file_index(&json!({"target": "/b/hold-latency/f0042"})),
            Some(42)
        );
        assert_eq!(file_index(&json!({"target": "/b/x"})), None);
        assert_eq!(file_index(&json!({})), None);
    }
}
