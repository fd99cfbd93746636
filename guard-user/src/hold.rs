//! Held operations and the decisions about them, independent of the backend that holds them.
//!
//! A hold waits in [`Holds`] until a human decides it (or the decision timeout denies it). A
//! decision can stand for more than the one operation: by default for the same process and the
//! same protected root for the rest of that process's life, so `rm -rf` of a protected tree
//! needs one decision either way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The operation goes on.
    Allow,
    /// The operation fails with EPERM.
    Deny,
}

/// How far a decision reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This operation only.
    Once,
    /// This process and this protected root, for the rest of the process's life (the default).
    #[default]
    Process,
    /// Everything below the held path, any process of the session.
    Path,
    /// Every hold of the session.
    Session,
}

/// Identifies one process for its whole life (the pid alone can be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ProcKey {
    /// Thread group id (host namespace).
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
}

impl ProcKey {
    /// Reads the key of process (or thread) `tid`; uses its thread group.
    pub fn of(tid: u32) -> Option<ProcKey> {
        let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let pid = status
            .lines()
            .find(|l| l.starts_with("Tgid:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        // comm may contain spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let start = rest.split_whitespace().nth(19)?.parse().ok()?;
        Some(ProcKey { pid, start })
    }
}

/// What a hold is about: everything a human sees (the same for every channel).
#[derive(Debug, Clone, Serialize)]
pub struct HoldInfo {
    /// Short id, unique on the host.
    pub id: String,
    /// Session name.
    pub session: String,
    /// Process id (host namespace).
    pub pid: u32,
    /// Process id inside the sandbox.
    pub ns_pid: Option<u32>,
    /// Program name.
    pub comm: String,
    /// Command line (bounded).
    pub cmdline: String,
    /// unlink, rmdir, rename, truncate, write, exec, connect, http.
    pub kind: &'static str,
    /// Path(s), command line, address or `METHOD URL`.
    pub target: String,
    /// The rule that caused the hold.
    pub rule: String,
    /// What the rule recognised, in words (e.g. "EC2 TerminateInstances: i-0abc").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the hold started (RFC 3339).
    pub since: String,
    #[serde(skip)]
    /// For timeouts and waiting time.
    pub started: Option<Instant>,
    #[serde(skip)]
    /// The process, for process-scoped decisions.
    pub proc_key: Option<ProcKey>,
    #[serde(skip)]
    /// The protected root, for process-scoped decisions.
    pub root: Option<usize>,
    #[serde(skip)]
    /// The canonical path, for path-scoped decisions.
    pub path: Option<PathBuf>,
}

/// A decision that keeps applying to later operations.
#[derive(Debug, Clone)]
struct Standing {
    verdict: Verdict,
    scope: Scope,
    proc_key: Option<ProcKey>,
    root: Option<usize>,
    path: Option<PathBuf>,
    expires: Option<Instant>,
    from_hold: String,
}

impl Standing {
    /// The decision `verdict` with reach `scope` taken on hold `info`.
    fn for_hold(
        info: &HoldInfo,
        verdict: Verdict,
        scope: Scope,
        expires: Option<Instant>,
    ) -> Standing {
        Standing {
            verdict,
            scope,
            proc_key: info.proc_key,
            root: info.root,
            path: info.path.clone(),
            expires,
            from_hold: info.id.clone(),
        }
    }

    fn covers(
        &self,
        proc_key: Option<ProcKey>,
        root: Option<usize>,
        path: Option<&Path>,
        now: Instant,
    ) -> bool {
        if self.expires.is_some_and(|e| now >= e) {
            return false;
        }
        match self.scope {
            Scope::Once => false,
            Scope::Process => proc_key.is_some() && self.proc_key == proc_key && self.root == root,
            Scope::Path => match (&self.path, path) {
                (Some(p), Some(q)) => q.starts_with(p),
                _ => false,
            },
            Scope::Session => true,
        }
    }
}

/// A decision already on record that covers a new operation.
#[derive(Debug, Clone)]
pub struct Prior {
    /// Its verdict.
    pub verdict: Verdict,
    /// The hold whose decision it was.
    pub from_hold: String,
}

/// A decided hold, handed back to the backend to carry out.
#[derive(Debug)]
pub struct Decided<T> {
    /// What was held.
    pub info: HoldInfo,
    /// The backend's pending operation.
    pub op: T,
    /// The verdict.
    pub verdict: Verdict,
    /// How long it waited.
    pub waited: Duration,
}

/// Error deciding a hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    /// No pending hold has this id.
    #[error("no pending hold {0}")]
    Unknown(String),
    /// The decision could not be written to the audit log: the holds were denied instead.
    #[error("the decision could not be written to the audit log: {} denied instead (fail closed)", .0.join(", "))]
    Unrecorded(Vec<String>),
}

struct Inner<T> {
    pending: BTreeMap<String, (HoldInfo, T)>,
    standing: Vec<Standing>,
}

/// The holds of one session.
pub struct Holds<T> {
    inner: Mutex<Inner<T>>,
}

/// Outcome of [`Holds::hold_or_apply`].
pub enum Admission<T> {
    /// A standing decision applies; the operation comes back to be carried out now.
    Decided(Prior, T),
    /// The operation now waits under this id.
    Held(Box<HoldInfo>),
}

impl<T> Default for Holds<T> {
    fn default() -> Self {
        Holds {
            inner: Mutex::new(Inner {
                pending: BTreeMap::new(),
                standing: Vec::new(),
            }),
        }
    }
}

impl<T> Holds<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a standing decision if one covers `info`, or else records the hold.
    pub fn hold_or_apply(&self, info: HoldInfo, op: T) -> Admission<T> {
        let now = Instant::now();
        let mut g = self.lock();
        g.standing.retain(|s| s.expires.is_none_or(|e| now < e));
        if let Some(s) = g
            .standing
            .iter()
            .rev()
            .find(|s| s.covers(info.proc_key, info.root, info.path.as_deref(), now))
        {
            return Admission::Decided(
                Prior {
                    verdict: s.verdict,
                    from_hold: s.from_hold.clone(),
                },
                op,
            );
        }
        g.pending.insert(info.id.clone(), (info.clone(), op));
        Admission::Held(Box::new(info))
    }

    /// Snapshot of the pending holds, oldest first.
    pub fn list(&self) -> Vec<HoldInfo> {
        let g = self.lock();
        let mut v: Vec<HoldInfo> = g.pending.values().map(|(i, _)| i.clone()).collect();
        v.sort_by_key(|i| i.started);
        v
    }

    /// Decides hold `id`. With a scope other than once the decision stands for later operations
    /// and also decides the other pending holds it covers. Returns every hold it decided.
    pub fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        scope: Scope,
        duration: Option<Duration>,
    ) -> Result<Vec<Decided<T>>, DecideError> {
        let now = Instant::now();
        let mut g = self.lock();
        let (info, op) = g
            .pending
            .remove(id)
            .ok_or_else(|| DecideError::Unknown(id.to_string()))?;
        let mut out = Vec::new();
        if scope != Scope::Once {
            let s = Standing::for_hold(&info, verdict, scope, duration.map(|d| now + d));
            let covered: Vec<String> = g
                .pending
                .iter()
                .filter(|(_, (i, _))| s.covers(i.proc_key, i.root, i.path.as_deref(), now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in covered {
                if let Some((i, o)) = g.pending.remove(&k) {
                    out.push(decided(i, o, verdict, now));
                }
            }
            g.standing.push(s);
        }
        out.insert(0, decided(info, op, verdict, now));
        Ok(out)
    }

    /// Removes and returns the holds waiting longer than `timeout` (they are to be denied). A
    /// timeout denies like a human's default decision: for the same process and protected root,
    /// so a held `rm -rf` times out once, not once per file.
    pub fn expired(&self, timeout: Duration) -> Vec<Decided<T>> {
        let now = Instant::now();
        let mut g = self.lock();
        let old: Vec<String> = g
            .pending
            .iter()
            .filter(|(_, (i, _))| i.started.is_some_and(|s| now.duration_since(s) >= timeout))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in old {
            if let Some((i, o)) = g.pending.remove(&k) {
                let s = Standing::for_hold(&i, Verdict::Deny, Scope::Process, None);
                g.standing.push(s);
                out.push(decided(i, o, Verdict::Deny, now));
            }
        }
        out
    }

    /// Removes every pending hold (the session is ending: they are denied).
    pub fn drain(&self) -> Vec<Decided<T>> {
        let now = Instant::now();
        let mut g = self.lock();
        std::mem::take(&mut g.pending)
            .into_values()
            .map(|(i, o)| decided(i, o, Verdict::Deny, now))
            .collect()
    }
}

fn decided<T>(info: HoldInfo, op: T, verdict: Verdict, now: Instant) -> Decided<T> {
    let waited = info
        .started
        .map(|s| now.duration_since(s))
        .unwrap_or_default();
    Decided {
        info,
        op,
        verdict,
        waited,
    }
}

/// A fresh hold id: 8 hex digits from the kernel's random source.
pub fn new_id() -> String {
    let mut b = [0u8; 4];
    // SAFETY: b is writable for its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // getrandom cannot fail for 4 bytes once the pool is ready; fall back to the clock.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 30s, 10m, 1h)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "" | "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 7.0 * 86400.0 {
        return Err(format!("duration {s:?} out of range (0 < d <= 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What the human's side (control socket, timeouts, session end) needs from a hold backend.
/// Both file-hold backends (seccomp and BPF LSM) implement it.
pub trait Decider: Send + Sync {
    /// The pending holds, oldest first.
    fn pending(&self) -> Vec<HoldInfo>;
    /// Decides hold `id` (and, for a standing scope, the pending holds it covers); returns the
    /// ids decided.
    fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        scope: Scope,
        duration: Option<Duration>,
        by: &str,
    ) -> Result<Vec<String>, DecideError>;
    /// Denies holds older than `timeout`.
    fn expire(&self, timeout: Duration);
    /// Denies every pending hold (the session is ending).
    fn end(&self);
}

/// A backend that holds operations: what it keeps pending and how it carries a decision out.
/// Every such backend is a [`Decider`] (the blanket implementation below), so the rules of
/// deciding, timing out and ending live in one place.
pub trait HoldBackend: Send + Sync {
    /// The backend's pending operation.
    type Op: Send;
    /// Its holds.
    fn holds(&self) -> &Holds<Self::Op>;
    /// Where decisions are reported.
    fn reporter(&self) -> &crate::report::Reporter;
    /// Lets the operation go on (allow) or fail with EPERM (deny).
    fn carry_out(&self, op: Self::Op, verdict: Verdict);
    /// Called once per decision with the first hold it decided, before anything is carried out
    /// (a backend may keep a standing decision closer to the kernel).
    fn stand(
        &self,
        _first: &HoldInfo,
        _verdict: Verdict,
        _scope: Scope,
        _duration: Option<Duration>,
    ) {
    }

    /// Holds `op` (described by `info`), or carries it out at once when a standing decision
    /// covers it. Returns the hold when it is pending; a hold the audit log does not have is
    /// denied at once instead (fail closed) and None is returned, as for an applied decision.
    fn hold_or_carry_out(&self, info: HoldInfo, op: Self::Op) -> Option<HoldInfo>
    where
        Self: Sized,
    {
        match self.holds().hold_or_apply(info.clone(), op) {
            Admission::Decided(prior, op) => {
                let v = self
                    .reporter()
                    .applied(&info, prior.verdict, &prior.from_hold);
                self.carry_out(op, v);
                None
            }
            Admission::Held(info) => {
                if self.reporter().held(&info) {
                    return Some(*info);
                }
                let _ = Decider::decide(
                    self,
                    &info.id,
                    Verdict::Deny,
                    Scope::Once,
                    None,
                    crate::report::UNRECORDED,
                );
                None
            }
        }
    }

    /// Takes pending hold `id` back, denied `by` the reason given, without carrying anything
    /// out: whoever waited for it is gone.
    fn withdraw(&self, id: &str, by: &str) {
        if let Ok(v) = self.holds().decide(id, Verdict::Deny, Scope::Once, None) {
            for d in v {
                // Nothing is carried out either way.
                let _ = self.reporter().decided(&d.info, d.verdict, by, d.waited);
            }
        }
    }

    /// Reports and carries out decided holds; returns the ids of those whose decision could
    /// not be written to the audit log (carried out as denials: fail closed).
    fn finish(&self, decided: Vec<Decided<Self::Op>>, by: &str) -> Vec<String> {
        let mut unrecorded = Vec::new();
        for d in decided {
            let v = match self.reporter().decided(&d.info, d.verdict, by, d.waited) {
                true => d.verdict,
                false => {
                    unrecorded.push(d.info.id.clone());
                    Verdict::Deny
                }
            };
            self.carry_out(d.op, v);
        }
        unrecorded
    }
}

impl<B: HoldBackend> Decider for B {
    fn pending(&self) -> Vec<HoldInfo> {
        self.holds().list()
    }

    fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        scope: Scope,
        duration: Option<Duration>,
        by: &str,
    ) -> Result<Vec<String>, DecideError> {
        let decided = self.holds().decide(id, verdict, scope, duration)?;
        if let Some(first) = decided.first() {
            self.stand(&first.info, verdict, scope, duration);
        }
        let ids = decided.iter().map(|d| d.info.id.clone()).collect();
        let unrecorded = self.finish(decided, by);
        if !unrecorded.is_empty() {
            return Err(DecideError::Unrecorded(unrecorded));
        }
        Ok(ids)
    }

    fn expire(&self, timeout: Duration) {
        let _ = self.finish(self.holds().expired(timeout), "timeout");
    }

    fn end(&self) {
        let _ = self.finish(self.holds().drain(), "session ended");
    }
}

/// The hold backends of one session (files, network) seen as one by the human's side: ids are
/// unique on the host, so a decision goes to the backend that has the hold. A standing scope
/// reaches the holds of that backend only.
pub struct Deciders(pub Vec<std::sync::Arc<dyn Decider>>);

impl Decider for Deciders {
    fn pending(&self) -> Vec<HoldInfo> {
        let mut v: Vec<HoldInfo> = self.0.iter().flat_map(|d| d.pending()).collect();
        v.sort_by_key(|i| i.started);
        v
    }

    fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        scope: Scope,
        duration: Option<Duration>,
        by: &str,
    ) -> Result<Vec<String>, DecideError> {
        for d in &self.0 {
            match d.decide(id, verdict, scope, duration, by) {
                Err(DecideError::Unknown(_)) => continue,
                r => return r,
            }
        }
        Err(DecideError::Unknown(id.to_string()))
    }

    fn expire(&self, timeout: Duration) {
        for d in &self.0 {
            d.expire(timeout);
        }
    }

    fn end(&self) {
        for d in &self.0 {
            d.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, pid: u32, root: usize, path: &str) -> HoldInfo {
        HoldInfo {
            id: id.into(),
            session: "s".into(),
            pid,
            ns_pid: None,
            comm: "rm".into(),
            cmdline: "rm".into(),
            kind: "unlink",
            target: path.into(),
            rule: "protect".into(),
            detail: None,
            since: String::new(),
            started: Some(Instant::now()),
            proc_key: Some(ProcKey { pid, start: 1 }),
            root: Some(root),
            path: Some(PathBuf::from(path)),
        }
    }

    #[test]
    fn process_scope_covers_the_same_process_and_root_only() {
        let h: Holds<u32> = Holds::default();
        assert!(matches!(
            h.hold_or_apply(info("a", 1, 0, "/p/x"), 1),
            Admission::Held(_)
        ));
        let d = h
            .decide("a", Verdict::Allow, Scope::Process, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.len(), 1);
        assert!(
            matches!(h.hold_or_apply(info("b", 1, 0, "/p/y"), 2), Admission::Decided(p, 2) if p.verdict == Verdict::Allow)
        );
        assert!(matches!(
            h.hold_or_apply(info("c", 2, 0, "/p/y"), 3),
            Admission::Held(_)
        ));
        assert!(matches!(
            h.hold_or_apply(info("d", 1, 1, "/q/y"), 4),
            Admission::Held(_)
        ));
    }

    #[test]
    fn once_scope_does_not_stand() {
        let h: Holds<u32> = Holds::default();
        let _ = h.hold_or_apply(info("a", 1, 0, "/p/x"), 1);
        let _ = h.decide("a", Verdict::Deny, Scope::Once, None);
        assert!(matches!(
            h.hold_or_apply(info("b", 1, 0, "/p/y"), 2),
            Admission::Held(_)
        ));
    }

    #[test]
    fn a_standing_decision_also_decides_covered_pending_holds() {
        let h: Holds<u32> = Holds::default();
        let _ = h.hold_or_apply(info("a", 1, 0, "/p/x"), 1);
        let _ = h.hold_or_apply(info("b", 1, 0, "/p/y"), 2);
        let _ = h.hold_or_apply(info("c", 3, 0, "/p/z"), 3);
        let d = h
            .decide("a", Verdict::Deny, Scope::Process, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.iter().map(|d| d.op).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(h.list().len(), 1);
    }

    #[test]
    fn path_scope_covers_the_subtree_for_any_process() {
        let h: Holds<u32> = Holds::default();
        let _ = h.hold_or_apply(info("a", 1, 0, "/p/dir"), 1);
        let _ = h.decide("a", Verdict::Allow, Scope::Path, None);
        assert!(matches!(
            h.hold_or_apply(info("b", 9, 0, "/p/dir/f"), 2),
            Admission::Decided(..)
        ));
        assert!(matches!(
            h.hold_or_apply(info("c", 9, 0, "/p/other"), 3),
            Admission::Held(_)
        ));
    }

    #[test]
    fn durations_expire() {
        let h: Holds<u32> = Holds::default();
        let _ = h.hold_or_apply(info("a", 1, 0, "/p/x"), 1);
        let _ = h.decide(
            "a",
            Verdict::Allow,
            Scope::Session,
            Some(Duration::from_millis(1)),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            h.hold_or_apply(info("b", 1, 0, "/p/y"), 2),
            Admission::Held(_)
        ));
    }

    #[test]
    fn unknown_ids_and_timeouts() {
        let h: Holds<u32> = Holds::default();
        assert_eq!(
            h.decide("zz", Verdict::Allow, Scope::Once, None).err(),
            Some(DecideError::Unknown("zz".into()))
        );
        let _ = h.hold_or_apply(info("a", 1, 0, "/p/x"), 1);
        assert!(h.expired(Duration::from_secs(60)).is_empty());
        let e = h.expired(Duration::ZERO);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].verdict, Verdict::Deny);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ids_are_short_and_hex() {
        let a = new_id();
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
