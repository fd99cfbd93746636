//! The exec guard: a command matching `[commands] hold` is stopped at exec, after the point of
//! no return and before the new program's first instruction, until a human decides. Approved,
//! it goes on (SIGCONT); denied, it is killed (SIGKILL: its parent sees it killed by a signal,
//! status 137 in a shell).
//!
//! The exec program (`tp_btf/sched_process_exec`, `guard-ebpf/src/exec.rs`) stops only a program
//! known by a name some rule names: the last component of the path given to exec (`comm`), of a
//! script's interpreter, or of the executable file itself (symbolic links resolved), or a script
//! whose own file has such a name (found among the files the exec let go). It records
//! the process in `HELD_PIDS` first, then sends SIGSTOP and reports the exec. Every other exec
//! goes on untouched: no notification, no round trip. For a stopped one this module reads the
//! new image's argument vector from `/proc/PID/cmdline`, which nothing in the sandbox can change
//! any more (the process is the only thread of its new image and runs nothing; ptrace and
//! process_vm_writev are refused in sessions with command holds), and matches the rules: the
//! check and the use read the same bytes, so a thread rewriting the arguments during the exec
//! gains nothing.
//!
//! A SIGCONT from the sandbox must not release a stopped process: the seccomp filter sends every
//! kill(2)-family call with SIGCONT here ([`ExecGuard::handle_signal`]). It fails with EPERM when
//! a target is stopped for a check; otherwise the supervisor continues, itself, the targets that
//! are stopped (job control) and skips those that run (a SIGCONT to a running process only runs
//! its handler; skipping it means that no SIGCONT is ever in flight when an exec stops a
//! process). A SIGCONT from the kernel itself (orphaned process group, terminal) in the window
//! before the move into the frozen cgroup is undone by the exec observer's signal program,
//! which stops the process again as it reports CLD_CONTINUED; where it could not (the parent
//! takes no such reports), [`ExecGuard::on_exec`] kills the process and records it.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use guard_common::exec::HELD_CONTINUED;

use super::{Exec, Rules};
use crate::exec::{ExecEvent, HeldPids};
use crate::files::resolve;
use crate::files::seccomp::{Listener, Notif};
use crate::hold::{HoldBackend, HoldInfo, Holds, ProcKey, Verdict};
use crate::report::Reporter;

/// The most argument bytes read in all; a longer list is held (it cannot be checked).
const MAX_ARGS_TOTAL: usize = 8 << 20;

/// A held exec: the stopped process.
#[derive(Debug)]
pub struct PendingExec {
    /// Its process id (the supervisor's namespace).
    pid: u32,
    /// A pidfd of it: signals reach this process even if the id is reused.
    pidfd: Option<OwnedFd>,
}

/// The exec guard of one session.
pub struct ExecGuard {
    /// Session name.
    pub session: String,
    /// The compiled rules.
    pub rules: Arc<Rules>,
    /// Pending exec holds and standing decisions.
    pub holds: Holds<PendingExec>,
    /// The seccomp filter's notification fd (a duplicate of the file supervisor's, if any):
    /// SIGCONT sent by the sandbox arrives there.
    pub listener: Listener,
    /// Where holds and decisions are reported.
    pub report: Arc<Reporter>,
    /// Set when the session ends (the LSM backend's loop, [`ExecGuard::run`]).
    pub stopping: AtomicBool,
    /// The kernel's record of stopped processes (`HELD_PIDS`).
    pub held: Mutex<HeldPids>,
    /// The session's cgroup directory: its `cgroup.procs` are the possible SIGCONT targets.
    pub cgroup: PathBuf,
    /// A frozen child cgroup of the session's (`held`): a held process waits there for the
    /// decision, where no signal but SIGKILL moves it (not even the kernel's SIGCONT to an
    /// orphaned process group). `None`: it waits stopped only.
    pub freezer: Option<PathBuf>,
}

/// What the guard concluded about one exec.
#[derive(Debug)]
enum Look {
    Continue,
    Hold {
        rule: usize,
        pattern: String,
        line: String,
        program: String,
    },
}

/// True for the system calls this guard answers: the kill(2) family (the filter sends them only
/// with SIGCONT).
pub fn is_signal(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_kill
            | libc::SYS_tkill
            | libc::SYS_tgkill
            | libc::SYS_rt_sigqueueinfo
            | libc::SYS_rt_tgsigqueueinfo
            | libc::SYS_pidfd_send_signal
    )
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    // SAFETY: a new fd that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(fd: &OwnedFd, sig: i32) -> bool {
    // SAFETY: a valid pidfd, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

impl ExecGuard {
    /// Answers SIGCONT notifications until [`ExecGuard::stop`] (used where no file supervisor
    /// runs: on the LSM backend the filter notifies these calls only).
    pub fn run(&self) {
        while !self.stopping.load(Ordering::SeqCst) {
            match self.listener.recv() {
                Ok(Some(n)) if is_signal(n.data.nr as i64) => self.handle_signal(&n),
                Ok(Some(n)) => {
                    let _ = self.listener.allow(n.id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "seccomp receive failed");
                    return;
                }
            }
        }
    }

    /// Makes [`ExecGuard::run`] return (then interrupt its thread with SIGURG).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn is_held(&self, pid: u32) -> bool {
        self.held_state(pid).is_some()
    }

    /// The kernel side's state of a stopped process (`HELD_PIDS`: `HELD_STOPPED`,
    /// `HELD_CONTINUED` or `HELD_RESTOPPED`); `None` when it is not held.
    fn held_state(&self, pid: u32) -> Option<u32> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&pid, 0).ok()
    }

    fn unhold(&self, pid: u32) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let _ = held.remove(&pid);
    }

    /// Moves a held process into the frozen cgroup; false when it could not be moved.
    fn freeze(&self, pid: u32) -> bool {
        match &self.freezer {
            Some(f) => match std::fs::write(f.join("cgroup.procs"), pid.to_string()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot move a held process into the frozen cgroup");
                    false
                }
            },
            None => false,
        }
    }

    /// Lets a stopped process go on.
    fn release(&self, pid: u32, pidfd: Option<&OwnedFd>) {
        if self.freezer.is_some() {
            // Back into the session's cgroup (thawed there; still stopped): a no-op for a
            // process that never left it.
            let _ = std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string());
        }
        self.unhold(pid);
        match pidfd {
            Some(fd) => {
                pidfd_signal(fd, libc::SIGCONT);
            }
            None => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
    }

    /// Kills a stopped process (denied, or not checkable).
    fn kill(&self, pid: u32, pidfd: Option<&OwnedFd>) {
        if let Some(fd) = pidfd {
            pidfd_signal(fd, libc::SIGKILL);
        }
        // Removed after the kill, which nothing undoes.
        self.unhold(pid);
    }

    /// An exec reported by the exec program: when it stopped the process, check it and let it
    /// go on or hold it.
    pub fn on_exec(&self, ev: &ExecEvent) {
        if !ev.stopped {
            return;
        }
        let pid = ev.pid;
        let Some(pidfd) = pidfd_open(pid) else {
            // Gone: killed while stopped, or (said) ran after a SIGCONT from the kernel.
            if self.held_state(pid) == Some(HELD_CONTINUED) {
                self.reporter().exec_continued(pid, &ev.filename, false);
            }
            self.unhold(pid);
            return;
        };
        // Into the frozen cgroup first (about 15 µs each way here): from then on no signal but
        // SIGKILL moves it, whatever the check takes.
        self.freeze(pid);
        // Continued by the kernel before that and not stopped again (the exec observer's
        // signal program could not: see `guard-ebpf/src/exec.rs`): it may have run. Fail
        // closed.
        if self.held_state(pid) == Some(HELD_CONTINUED) {
            self.kill(pid, Some(&pidfd));
            self.reporter().exec_continued(pid, &ev.filename, true);
            return;
        }
        match self.look(ev) {
            Look::Continue => self.release(pid, Some(&pidfd)),
            Look::Hold {
                rule,
                pattern,
                line,
                program,
            } => self.hold(pid, pidfd, rule, &pattern, &line, &program, ev.script),
        }
    }

    fn look(&self, ev: &ExecEvent) -> Look {
        let pid = ev.pid;
        let raw = match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(r) => r,
            // Nothing to check: a human looks at it (the process stays stopped).
            Err(_) => {
                return Look::Hold {
                    rule: usize::MAX,
                    pattern: "(argument list unreadable)".into(),
                    line: ev.filename.clone(),
                    program: ev.filename.clone(),
                }
            }
        };
        if raw.len() > MAX_ARGS_TOTAL {
            return Look::Hold {
                rule: usize::MAX,
                pattern: "(argument list too long to check)".into(),
                line: format!("{} (argument list too long to show)", ev.filename),
                program: ev.filename.clone(),
            };
        }
        let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
        let argv: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let given = ev.filename.as_bytes();
        let mut names: Vec<String> = Vec::with_capacity(4);
        let mut paths: Vec<String> = Vec::with_capacity(3);
        let mut add_name = |n: &[u8]| {
            let n = String::from_utf8_lossy(n).into_owned();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        };
        add_name(resolve::split(given).name);
        if given.starts_with(b"/") {
            paths.push(ev.filename.clone());
        }
        // The file exec was given, symbolic links followed, from the process's root and cwd
        // (a script's own file: the executable is its interpreter).
        let real = resolve::target_object(pid, libc::AT_FDCWD, given, true)
            .ok()
            .map(|(_, p)| p.to_string_lossy().into_owned());
        for p in [&real, &exe].into_iter().flatten() {
            add_name(resolve::split(p.as_bytes()).name);
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
        // A script's argument area is `interpreter [option] script args...`: its own arguments
        // follow the script's path.
        let (shown, args): (Vec<String>, &[String]) = if ev.script {
            match argv
                .iter()
                .enumerate()
                .skip(1)
                .take(2)
                .find(|(_, a)| a.as_bytes() == given)
            {
                Some((i, _)) => {
                    let mut shown = vec![ev.filename.clone()];
                    shown.extend_from_slice(&argv[i + 1..]);
                    (shown, &argv[i + 1..])
                }
                None => (argv.clone(), argv.get(1..).unwrap_or_default()),
            }
        } else {
            (argv.clone(), argv.get(1..).unwrap_or_default())
        };
        let program = real.or(exe).unwrap_or_else(|| ev.filename.clone());
        match self.rules.find(&Exec { names, paths, args }) {
            None => Look::Continue,
            Some((rule, p)) => Look::Hold {
                rule,
                pattern: p.text().to_string(),
                line: bounded(&quote_argv(&shown), 4096),
                program,
            },
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one hold's parts")]
    fn hold(
        &self,
        pid: u32,
        pidfd: OwnedFd,
        rule: usize,
        pattern: &str,
        line: &str,
        program: &str,
        script: bool,
    ) {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let info = HoldInfo {
            id: crate::hold::new_id(),
            session: self.session.clone(),
            pid,
            ns_pid: crate::files::supervise::ns_pid_of(pid),
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            cmdline: line.to_string(),
            kind: "exec",
            target: line.to_string(),
            rule: format!("commands.hold: {pattern}"),
            detail: Some(format!(
                "program {program}{}; cwd {cwd}; run by {}",
                if script { " (a script)" } else { "" },
                parent_chain(pid)
            )),
            since: crate::audit::rfc3339_micros(std::time::SystemTime::now()),
            started: Some(Instant::now()),
            proc_key: ProcKey::of(pid),
            root: Some(rule),
            // `--scope path` on an exec hold: this rule, for any process of the session.
            path: Some(PathBuf::from(format!("/commands.hold/{rule}"))),
        };
        let pending = PendingExec {
            pid,
            pidfd: Some(pidfd),
        };
        self.hold_or_carry_out(info, pending);
    }

    /// A kill(2)-family call with SIGCONT from the sandbox (see the module's documentation).
    pub fn handle_signal(&self, n: &Notif) {
        let a = n.data.args;
        let nr = n.data.nr as i64;
        let sender = tgid_of(n.pid).unwrap_or(n.pid);
        let procs = self.session_procs();
        let ns = |p: u32, key: &str| status_field(p, key);
        let targets: Vec<u32> = match nr {
            libc::SYS_kill => {
                let spec = a[0] as u32 as i32;
                match spec {
                    0 => {
                        let g = ns(sender, "NSpgid:");
                        procs
                            .iter()
                            .copied()
                            .filter(|&p| g.is_some() && ns(p, "NSpgid:") == g)
                            .collect()
                    }
                    -1 => procs
                        .iter()
                        .copied()
                        .filter(|&p| p != sender && ns(p, "NStgid:") != Some(1))
                        .collect(),
                    s if s < -1 => procs
                        .iter()
                        .copied()
                        .filter(|&p| ns(p, "NSpgid:") == Some(s.unsigned_abs()))
                        .collect(),
                    s => by_ns_tgid(&procs, s as u32),
                }
            }
            libc::SYS_tgkill | libc::SYS_rt_sigqueueinfo | libc::SYS_rt_tgsigqueueinfo => {
                by_ns_tgid(&procs, a[0] as u32)
            }
            libc::SYS_tkill => by_ns_tid(&procs, a[0] as u32),
            libc::SYS_pidfd_send_signal => {
                let fd = a[0] as u32 as i32;
                let info = std::fs::read_to_string(format!("/proc/{sender}/fdinfo/{fd}"))
                    .unwrap_or_default();
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("Pid:"))
                    .and_then(|v| v.trim().parse::<i64>().ok());
                match pid {
                    Some(p) if p > 0 && procs.contains(&(p as u32)) => vec![p as u32],
                    // Not a pidfd of a session process: the kernel answers as it would.
                    _ => {
                        let _ = self.listener.allow(n.id);
                        return;
                    }
                }
            }
            _ => {
                let _ = self.listener.allow(n.id);
                return;
            }
        };
        if targets.is_empty() {
            let _ = self.listener.fail(n.id, libc::ESRCH);
            return;
        }
        if targets.iter().any(|&p| self.is_held(p)) {
            tracing::info!(
                sender,
                ?targets,
                "SIGCONT to a process stopped for a check refused"
            );
            let _ = self.listener.fail(n.id, libc::EPERM);
            return;
        }
        if !targets.iter().all(|&p| may_signal(sender, p)) {
            let _ = self.listener.fail(n.id, libc::EPERM);
            return;
        }
        for p in targets {
            if stopped(p) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
        let _ = self.listener.ret(n.id, 0);
    }

    fn session_procs(&self) -> Vec<u32> {
        let mut procs = Vec::new();
        for dir in std::iter::once(&self.cgroup).chain(self.freezer.as_ref()) {
            procs.extend(
                std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
        procs
    }
}

fn by_ns_tgid(procs: &[u32], ns_tgid: u32) -> Vec<u32> {
    procs
        .iter()
        .copied()
        .filter(|&p| status_field(p, "NStgid:") == Some(ns_tgid))
        .collect()
}

fn by_ns_tid(procs: &[u32], ns_tid: u32) -> Vec<u32> {
    let mut out = HashSet::new();
    for &p in procs {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let tid = st
                .lines()
                .find(|l| l.starts_with("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<u32>().ok());
            if tid == Some(ns_tid) {
                out.insert(p);
            }
        }
    }
    out.into_iter().collect()
}

/// The kernel's rule for kill(2) (without capabilities): the sender's real or effective user id
/// is the target's real or saved one; root may signal anyone.
fn may_signal(sender: u32, target: u32) -> bool {
    let uids = |p: u32| -> Option<Vec<u32>> {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let l = s.lines().find(|l| l.starts_with("Uid:"))?;
        Some(
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect(),
        )
    };
    let (Some(s), Some(t)) = (uids(sender), uids(target)) else {
        return false;
    };
    if s.len() < 2 || t.len() < 3 {
        return false;
    }
    s[1] == 0 || [s[0], s[1]].iter().any(|u| *u == t[0] || *u == t[2])
}

/// True when the process is stopped (job control or a tracer).
fn stopped(pid: u32) -> bool {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name's closing parenthesis.
    s.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|st| st == "T" || st == "t")
}

impl HoldBackend for ExecGuard {
    type Op = PendingExec;

    fn holds(&self) -> &Holds<PendingExec> {
        &self.holds
    }

    fn reporter(&self) -> &Reporter {
        &self.report
    }

    /// Approved: the stopped program goes on (SIGCONT). Denied: it is killed (SIGKILL).
    fn carry_out(&self, p: PendingExec, verdict: Verdict) {
        match verdict {
            Verdict::Allow => self.release(p.pid, p.pidfd.as_ref()),
            Verdict::Deny => self.kill(p.pid, p.pidfd.as_ref()),
        }
    }
}

/// The argument vector as a shell would read it back (single quotes where needed).
pub fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn status_field(pid: u32, key: &str) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn tgid_of(tid: u32) -> Option<u32> {
    status_field(tid, "Tgid:")
}

/// The processes above `pid` up to the session's init, as
/// `bash -c 'terraform destroy' (pid 3) < sandbox-init (pid 1)` (pids inside the sandbox).
fn parent_chain(pid: u32) -> String {
    let mut out = Vec::new();
    let mut cur = status_field(pid, "PPid:");
    for _ in 0..16 {
        let Some(p) = cur.filter(|p| *p > 0) else {
            break;
        };
        let ns = status_field(p, "NSpid:").unwrap_or(p);
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        // The session's init is a copy of the supervisor: its command line would mislead.
        let mut line = crate::files::supervise::cmdline_of(p);
        if line.is_empty() || comm.starts_with("sandbox-") {
            line = comm;
        }
        out.push(format!("{} (pid {ns})", bounded(&line, 120)));
        if ns == 1 {
            break;
        }
        cur = status_field(p, "PPid:");
    }
    if out.is_empty() {
        "?".into()
    } else {
        out.join(" < ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_quoted_for_a_human() {
        let v: Vec<String> = ["psql", "-c", "DROP TABLE x", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(quote_argv(&v), r#"psql -c 'DROP TABLE x' 'it'\''s'"#);
        assert_eq!(bounded("abcdef", 3), "abc…");
    }
}
