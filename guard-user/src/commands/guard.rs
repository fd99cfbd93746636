//! The exec guard: a command matching `[commands] hold` waits in execve(2)/execveat(2), before
//! the new program exists, until a human decides. Denied, the call fails with EPERM (the old
//! program goes on and sees the error); approved, the kernel carries the exec out.
//!
//! The seccomp filter sends every execve/execveat of the session here (only when the profile
//! has rules). The supervisor reads the path the process passed, resolves it as the process
//! would (its root and working directory, symbolic links followed) and looks at the names of
//! the file (as given and as resolved). Only when one of them is a program some rule names does
//! it read the argument vector and match: every other exec goes on after one lstat (a path whose
//! last component is a symbolic link is resolved in full, so a link named otherwise is caught by
//! the name of the program it leads to).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{Exec, Rules};
use crate::files::resolve;
use crate::files::seccomp::{Listener, Notif};
use crate::hold::{Admission, HoldBackend, HoldInfo, Holds, ProcKey, Verdict};
use crate::report::Reporter;

/// Longest single argument the kernel accepts (MAX_ARG_STRLEN).
const MAX_ARG: usize = 32 * 4096;
/// The most argument bytes read in all; a longer list is held (it cannot be checked).
const MAX_ARGS_TOTAL: usize = 8 << 20;

/// A held exec: the notification to answer.
#[derive(Debug)]
pub struct PendingExec {
    notif: u64,
}

/// The exec guard of one session.
pub struct ExecGuard {
    /// Session name.
    pub session: String,
    /// The compiled rules.
    pub rules: Arc<Rules>,
    /// Pending exec holds and standing decisions.
    pub holds: Holds<PendingExec>,
    /// The seccomp filter's notification fd (a duplicate of the file supervisor's, if any).
    pub listener: Listener,
    /// Where holds and decisions are reported.
    pub report: Arc<Reporter>,
    /// Set when the session ends (the LSM backend's loop, [`ExecGuard::run`]).
    pub stopping: AtomicBool,
}

/// What the guard concluded about one exec.
#[derive(Debug)]
enum Look {
    Continue,
    Hold {
        rule: usize,
        pattern: String,
        argv: Vec<String>,
        program: String,
        unreadable: bool,
    },
}

/// True for the system calls this guard answers.
pub fn is_exec(nr: i64) -> bool {
    nr == libc::SYS_execve || nr == libc::SYS_execveat
}

impl ExecGuard {
    /// Answers notifications until [`ExecGuard::stop`] (used where no file supervisor runs: on
    /// the LSM backend the filter notifies exec calls only).
    pub fn run(&self) {
        while !self.stopping.load(Ordering::SeqCst) {
            match self.listener.recv() {
                Ok(Some(n)) if is_exec(n.data.nr as i64) => self.handle(&n),
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

    /// Answers one execve/execveat notification: goes on, or holds.
    pub fn handle(&self, n: &Notif) {
        match self.look(n) {
            Look::Continue => {
                let _ = self.listener.allow(n.id);
            }
            Look::Hold {
                rule,
                pattern,
                argv,
                program,
                unreadable,
            } => self.hold(n, rule, &pattern, &argv, &program, unreadable),
        }
    }

    fn look(&self, n: &Notif) -> Look {
        let a = n.data.args;
        let (dirfd, path_at, argv_at, flags) = if n.data.nr as i64 == libc::SYS_execveat {
            (a[0] as u32 as i32, a[1], a[2], a[4] as u32 as i32)
        } else {
            (libc::AT_FDCWD, a[0], a[1], 0)
        };
        let pid = n.pid;
        // An unreadable path fails the same way in the kernel (EFAULT).
        let Ok(path) = resolve::read_cstr(pid, path_at) else {
            return Look::Continue;
        };
        let given = path.as_bytes();
        let mut names: Vec<String> = Vec::with_capacity(2);
        let mut paths: Vec<String> = Vec::with_capacity(2);
        let base = resolve::split(given).name;
        if !base.is_empty() {
            names.push(String::from_utf8_lossy(base).into_owned());
        }
        if given.starts_with(b"/") {
            paths.push(String::from_utf8_lossy(given).into_owned());
        }
        let held_name = names.iter().any(|nm| self.rules.has_name(nm));
        if !held_name && plain_file(pid, dirfd, given) {
            // The fast path of every other exec: the name given is the file's own name.
            return Look::Continue;
        }
        // The file the kernel will run: symbolic links followed (unless AT_SYMLINK_NOFOLLOW,
        // which makes the kernel refuse a link), from the process's own root and cwd.
        let real = if given.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            resolve::proc_fd_path(pid, dirfd).ok()
        } else {
            let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
            resolve::target_object(pid, dirfd, given, follow)
                .ok()
                .map(|(_, p)| p)
        };
        if let Some(r) = &real {
            if let Some(b) = r.file_name() {
                let b = b.to_string_lossy().into_owned();
                if !names.contains(&b) {
                    names.push(b);
                }
            }
            paths.push(r.to_string_lossy().into_owned());
        }
        if !held_name && !names.iter().any(|nm| self.rules.has_name(nm)) {
            return Look::Continue;
        }
        if real.is_none() {
            // Nothing there to run (ENOENT, EACCES...): the kernel fails the call.
            return Look::Continue;
        }
        let program = paths.last().cloned().unwrap_or_default();
        let argv = match read_argv(pid, argv_at) {
            Ok(v) => v,
            Err(ArgvError::Unreadable) => return Look::Continue,
            Err(ArgvError::TooLong) => {
                // Cannot be checked: a human looks at it.
                return Look::Hold {
                    rule: usize::MAX,
                    pattern: "(argument list too long to check)".into(),
                    argv: Vec::new(),
                    program,
                    unreadable: true,
                };
            }
        };
        let args = argv.get(1..).unwrap_or_default();
        match self.rules.find(&Exec { names, paths, args }) {
            None => Look::Continue,
            Some((rule, p)) => Look::Hold {
                rule,
                pattern: p.text().to_string(),
                argv,
                program,
                unreadable: false,
            },
        }
    }

    fn hold(
        &self,
        n: &Notif,
        rule: usize,
        pattern: &str,
        argv: &[String],
        program: &str,
        unreadable: bool,
    ) {
        let pid = tgid_of(n.pid).unwrap_or(n.pid);
        let line = if unreadable {
            format!("{program} (argument list too long to show)")
        } else {
            bounded(&quote_argv(argv), 4096)
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let info = HoldInfo {
            id: crate::hold::new_id(),
            session: self.session.clone(),
            pid,
            ns_pid: crate::files::supervise::ns_pid_of(n.pid),
            comm: std::fs::read_to_string(format!("/proc/{}/comm", n.pid))
                .unwrap_or_default()
                .trim()
                .to_string(),
            cmdline: line.clone(),
            kind: "exec",
            target: line,
            rule: format!("commands.hold: {pattern}"),
            detail: Some(format!(
                "program {program}; cwd {cwd}; run by {}",
                parent_chain(pid)
            )),
            since: crate::audit::rfc3339_micros(std::time::SystemTime::now()),
            started: Some(Instant::now()),
            proc_key: ProcKey::of(n.pid),
            root: Some(rule),
            // `--scope path` on an exec hold: this rule, for any process of the session.
            path: Some(PathBuf::from(format!("/commands.hold/{rule}"))),
        };
        let pending = PendingExec { notif: n.id };
        match self.holds.hold_or_apply(info.clone(), pending) {
            Admission::Decided(prior, p) => {
                self.report.applied(&info, prior.verdict, &prior.from_hold);
                self.carry_out(p, prior.verdict);
            }
            Admission::Held(info) => {
                self.report.held(&info);
                if !self.listener.valid(n.id) {
                    self.withdraw(&info.id, "process gone");
                }
            }
        }
    }
}

impl HoldBackend for ExecGuard {
    type Op = PendingExec;

    fn holds(&self) -> &Holds<PendingExec> {
        &self.holds
    }

    fn reporter(&self) -> &Reporter {
        &self.report
    }

    /// Approved: the kernel carries the exec out. Denied: it fails with EPERM.
    fn carry_out(&self, p: PendingExec, verdict: Verdict) {
        if !self.listener.valid(p.notif) {
            return;
        }
        let _ = match verdict {
            Verdict::Allow => self.listener.allow(p.notif),
            Verdict::Deny => self.listener.fail(p.notif, libc::EPERM),
        };
    }
}

#[derive(Debug)]
enum ArgvError {
    /// A bad pointer: the kernel fails the call with EFAULT.
    Unreadable,
    /// More than we read.
    TooLong,
}

/// True when `path` (relative to `dirfd` of process `pid`) names something that is not a
/// symbolic link: one lstat through the process's `/proc` handles. Anything else (a link, an
/// error, `/proc/self`, which would be the supervisor's) needs the full resolution.
fn plain_file(pid: u32, dirfd: i32, path: &[u8]) -> bool {
    if path.is_empty() || path.starts_with(b"/proc/") {
        return false;
    }
    let mut p = if path.starts_with(b"/") {
        format!("/proc/{pid}/root").into_bytes()
    } else if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd/").into_bytes()
    } else {
        format!("/proc/{pid}/fd/{dirfd}/").into_bytes()
    };
    p.extend_from_slice(path);
    let Ok(c) = std::ffi::CString::new(p) else {
        return false;
    };
    // SAFETY: a zeroed stat is valid; c is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::lstat(c.as_ptr(), &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT != libc::S_IFLNK
}

/// Reads the NULL-terminated argument vector at `addr` of process `pid`.
fn read_argv(pid: u32, addr: u64) -> Result<Vec<String>, ArgvError> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    let mut total = 0usize;
    let mut cur = addr;
    loop {
        // A page's worth of pointers at a time, never across a page boundary.
        let left = 4096 - (cur as usize & 4095);
        let mut buf = [0u8; 4096];
        let want = left.min(4096) & !7;
        let want = if want == 0 { 8 } else { want };
        let n =
            resolve::read_remote(pid, cur, &mut buf[..want]).map_err(|_| ArgvError::Unreadable)?;
        if n < 8 {
            return Err(ArgvError::Unreadable);
        }
        for c in buf[..n - n % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
            if p == 0 {
                return Ok(out);
            }
            let s = read_arg(pid, p)?;
            total += s.len() + 1;
            if total > MAX_ARGS_TOTAL {
                return Err(ArgvError::TooLong);
            }
            out.push(String::from_utf8_lossy(s.as_bytes()).into_owned());
        }
        cur += (n - n % 8) as u64;
    }
}

/// One NUL-terminated argument, at most [`MAX_ARG`] bytes.
fn read_arg(pid: u32, addr: u64) -> Result<OsString, ArgvError> {
    use std::os::unix::ffi::OsStringExt;
    let mut out: Vec<u8> = Vec::new();
    let mut cur = addr;
    loop {
        let left = 4096 - (cur as usize & 4095);
        let want = if out.is_empty() { left.min(256) } else { left };
        let mut buf = [0u8; 4096];
        let n =
            resolve::read_remote(pid, cur, &mut buf[..want]).map_err(|_| ArgvError::Unreadable)?;
        if n == 0 {
            return Err(ArgvError::Unreadable);
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(OsString::from_vec(out));
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_ARG {
            return Err(ArgvError::TooLong);
        }
        cur += n as u64;
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

    #[test]
    fn reads_an_argument_vector_from_own_memory() {
        let a = std::ffi::CString::new("terraform").unwrap_or_default();
        let b = std::ffi::CString::new("x".repeat(5000)).unwrap_or_default();
        let ptrs = [a.as_ptr() as u64, b.as_ptr() as u64, 0u64];
        let v =
            read_argv(std::process::id(), ptrs.as_ptr() as u64).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], "terraform");
        assert_eq!(v[1].len(), 5000);
    }
}
