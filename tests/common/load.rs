//! The hold load run shared by `cargo xtask load` (a minute) and `tests/load.rs` (seconds): a
//! script decides holds at a fixed rate on the session's control socket and checks that none is
//! lost and none misattributed.
//!
//! The session runs `V` copies of `xtask/progs/hold_victim.c seq DIR_k N`, victim `k` unlinking
//! the protected files `DIR_k/f0000 .. f<N-1>` one after another (each unlink held until
//! decided). The decider polls `pending`, and for each hold checks that it is an unlink by a
//! `hold_victim` process, that its pid is victim `k`'s (the same for all of `DIR_k`, a different
//! one for every `k`) and that its target is the next file of `DIR_k` in order; then it approves
//! even files and denies odd ones (scope once), never faster than the rate asked for. At the end
//! every victim's own record of each unlink (its result and errno), the files left, and the
//! audit log's hold and decision lines must agree with what was decided.
//!
//! Only std, libc and serde_json: xtask includes this file too (`#[path]`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Threads sending decisions at once.
const DECIDERS: usize = 4;

/// What to run.
pub struct LoadSpec {
    /// The `sandbox` binary.
    pub sandbox: PathBuf,
    /// The compiled `hold_victim`.
    pub victim: PathBuf,
    /// A directory the victims' user may write (their files and outputs go there).
    pub work: PathBuf,
    /// `SANDBOX_STATE_DIR` and `SANDBOX_LOG_DIR` of the session.
    pub state: PathBuf,
    /// See `state`.
    pub logs: PathBuf,
    /// The session's name (unique on the host).
    pub session: String,
    /// The uid and gid the victims run as.
    pub uid: u32,
    /// Number of victim processes.
    pub victims: usize,
    /// Holds per second to decide (at most).
    pub rate: u32,
    /// For how long (the number of holds is `rate * seconds`).
    pub seconds: u64,
}

/// What happened.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Holds decided.
    pub holds: usize,
    /// From the first decision to the last.
    pub elapsed: Duration,
    /// Of which approved.
    pub approved: usize,
    /// The most holds pending at once.
    pub max_pending: usize,
    /// Per-second counts of decisions (the slowest and fastest full second).
    pub slowest_second: usize,
    /// See `slowest_second`.
    pub fastest_second: usize,
    /// p50 and p99 of one `decide` round trip, in microseconds.
    pub decide_us: (u64, u64),
}

impl LoadReport {
    /// Holds decided per second.
    pub fn rate(&self) -> f64 {
        self.holds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn call(sock: &Path, req: &Value) -> Result<Value, String> {
    let mut s =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    BufReader::new(&s)
        .read_line(&mut out)
        .map_err(|e| format!("read {}: {e}", sock.display()))?;
    let a: Value = serde_json::from_str(&out).map_err(|e| format!("bad answer {out:?}: {e}"))?;
    if a["ok"] != json!(true) {
        return Err(format!("{req} refused: {a}"));
    }
    Ok(a)
}

/// Kills the session (SIGKILL to the supervisor: its init takes the session down) on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn chown(p: &Path, uid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(p, Some(uid), Some(uid))
        .map_err(|e| format!("chown {}: {e}", p.display()))
}

/// Runs the load; `Err` for a set-up failure or for anything lost or misattributed.
pub fn run(spec: &LoadSpec) -> Result<LoadReport, String> {
    let per = (spec.rate as usize * spec.seconds as usize).div_ceil(spec.victims);
    let total = per * spec.victims;
    if per > 10_000 {
        return Err(format!(
            "{per} files per victim: hold_victim takes at most 10000 (more victims)"
        ));
    }
    let io = |what: String| move |e: std::io::Error| format!("{what}: {e}");
    let prot = spec.work.join("prot");
    let mut dirs = Vec::new();
    std::fs::create_dir_all(&prot).map_err(io(format!("mkdir {}", prot.display())))?;
    chown(&spec.work, spec.uid)?;
    chown(&prot, spec.uid)?;
    for k in 0..spec.victims {
        let d = prot.join(format!("v{k}"));
        std::fs::create_dir_all(&d).map_err(io(format!("mkdir {}", d.display())))?;
        chown(&d, spec.uid)?;
        for i in 0..per {
            let f = d.join(format!("f{i:04}"));
            std::fs::write(&f, "x").map_err(io(format!("write {}", f.display())))?;
            chown(&f, spec.uid)?;
        }
        dirs.push(d);
    }
    let victim = spec.victim.display();
    let script: String = dirs
        .iter()
        .enumerate()
        .map(|(k, d)| {
            format!(
                "{victim} seq {} {per} > {}/out{k} & ",
                d.display(),
                spec.work.display()
            )
        })
        .chain(std::iter::once("wait".to_string()))
        .collect();
    let child = Command::new(&spec.sandbox)
        .args(["run", "--quiet", "--net", "none", "--user"])
        .arg(spec.uid.to_string())
        .args(["--session", &spec.session, "--protect"])
        .arg(&prot)
        .args(["--decision-timeout", "600s", "--", "sh", "-c", &script])
        .env("SANDBOX_STATE_DIR", &spec.state)
        .env("SANDBOX_LOG_DIR", &spec.logs)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("spawn {}", spec.sandbox.display())))?;
    let mut child = Running(child);
    let sock = spec.state.join(format!("{}.sock", spec.session));

    let mut next = vec![0usize; spec.victims];
    let mut pid_of: Vec<Option<u64>> = vec![None; spec.victims];
    let mut rep = LoadReport::default();
    let mut decided_at: Vec<Instant> = Vec::with_capacity(total);
    let mut rtt: Vec<u64> = Vec::with_capacity(total);
    let mut start: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let prefix = format!("{}/v", prot.display());
    // DECIDERS threads send the decisions, so one slow round trip does not hold up the rest;
    // this thread lists the holds, checks them and hands them out at the rate asked for.
    type Job = (String, &'static str);
    type Done = (String, Result<(Instant, Duration), String>);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
    let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    let mut workers = Vec::new();
    for _ in 0..DECIDERS {
        let (rx, tx, sock) = (job_rx.clone(), done_tx.clone(), sock.clone());
        workers.push(std::thread::spawn(move || loop {
            let job = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => return,
            };
            let Ok((id, verdict)) = job else { return };
            let c0 = Instant::now();
            let r = call(
                &sock,
                &json!({"op": "decide", "id": id, "verdict": verdict, "scope": "once", "for_ms": null}),
            )
            .map(|_| (Instant::now(), c0.elapsed()));
            if tx.send((id, r)).is_err() {
                return;
            }
        }));
    }
    drop(done_tx);
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let mut dispatched = 0usize;
    while rep.holds < total {
        while let Ok((id, r)) = done_rx.try_recv() {
            in_flight.remove(&id);
            let (at, took) = r?;
            rtt.push(took.as_micros() as u64);
            decided_at.push(at);
            rep.holds += 1;
            last_progress = Instant::now();
        }
        if rep.holds >= total {
            break;
        }
        if let Some(st) = child.0.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the session ended ({st}) after {} of {total} holds",
                rep.holds
            ));
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "no hold decided for 30 s after {} of {total} (lost holds? next files: {next:?})",
                rep.holds
            ));
        }
        let pending = match call(&sock, &json!({"op": "pending"})) {
            Ok(a) => a["pending"].as_array().cloned().unwrap_or_default(),
            // The socket appears once the session is up.
            Err(_) if start.is_none() => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        rep.max_pending = rep.max_pending.max(pending.len());
        let mut fresh = 0;
        for h in pending {
            let id = h["id"].as_str().unwrap_or("").to_owned();
            if in_flight.contains(&id) {
                continue;
            }
            fresh += 1;
            let target = h["target"].as_str().unwrap_or("");
            let parsed = target.strip_prefix(&prefix).and_then(|r| {
                let (k, f) = r.split_once("/f")?;
                Some((k.parse::<usize>().ok()?, f.parse::<usize>().ok()?))
            });
            let pid = h["pid"].as_u64();
            let Some((k, i)) = parsed.filter(|(k, _)| *k < spec.victims) else {
                return Err(format!("a hold of an unknown target: {h}"));
            };
            let mut wrong = Vec::new();
            if h["kind"] != "unlink" {
                wrong.push("kind");
            }
            if h["comm"] != "hold_victim" {
                wrong.push("comm");
            }
            if i != next[k] {
                wrong.push("order");
            }
            match (pid_of[k], pid) {
                (_, None) => wrong.push("no pid"),
                (None, Some(p)) => {
                    if pid_of.contains(&Some(p)) {
                        wrong.push("pid of another victim");
                    }
                    pid_of[k] = Some(p);
                }
                (Some(q), Some(p)) if q != p => wrong.push("pid"),
                _ => {}
            }
            if !wrong.is_empty() {
                return Err(format!(
                    "misattributed hold, {wrong:?} (victim {k} expects f{:04}): {h}",
                    next[k]
                ));
            }
            // Never faster than the rate asked for.
            let t0 = *start.get_or_insert_with(Instant::now);
            let due = t0 + Duration::from_secs_f64(dispatched as f64 / f64::from(spec.rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let verdict = if i % 2 == 0 { "allow" } else { "deny" };
            if i % 2 == 0 {
                rep.approved += 1;
            }
            next[k] += 1;
            dispatched += 1;
            in_flight.insert(id.clone());
            job_tx
                .send((id, verdict))
                .map_err(|_| "the deciders are gone".to_string())?;
        }
        if fresh == 0 {
            // Nothing new: the victims are between two holds.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(job_tx);
    for w in workers {
        let _ = w.join();
    }
    let t0 = start.unwrap_or_else(Instant::now);
    rep.elapsed = decided_at.last().map_or(Duration::ZERO, |t| *t - t0);
    let mut per_sec: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &decided_at {
        *per_sec.entry((*t - t0).as_secs()).or_default() += 1;
    }
    let full: Vec<usize> = per_sec
        .iter()
        .filter(|(s, _)| **s + 1 < rep.elapsed.as_secs().max(1))
        .map(|(_, n)| *n)
        .collect();
    rep.slowest_second = full.iter().copied().min().unwrap_or(rep.holds);
    rep.fastest_second = full.iter().copied().max().unwrap_or(rep.holds);
    rtt.sort_unstable();
    let pct = |p: f64| {
        rtt.get(((rtt.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    rep.decide_us = (pct(0.5), pct(0.99));

    // The session ends by itself once every victim is done.
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err("the session did not end after the last decision".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!("the session ended with {status}: {err}"));
    }
    // Each victim's own account of each unlink, and the files left.
    for (k, d) in dirs.iter().enumerate() {
        let out = spec.work.join(format!("out{k}"));
        let text = std::fs::read_to_string(&out).map_err(io(format!("read {}", out.display())))?;
        let mut seen = 0;
        for l in text.lines() {
            let f: Vec<i64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let [i, _, _, ret, errno] = f[..] else {
                return Err(format!("victim {k}: bad line {l:?}"));
            };
            let want = if i % 2 == 0 {
                (0, 0)
            } else {
                (-1, i64::from(libc::EPERM))
            };
            if (ret, errno) != want {
                return Err(format!(
                    "victim {k}: f{i:04} got ({ret}, {errno}), decided {want:?}"
                ));
            }
            let exists = d.join(format!("f{i:04}")).exists();
            if exists != (i % 2 == 1) {
                return Err(format!("victim {k}: f{i:04} exists: {exists}"));
            }
            seen += 1;
        }
        if seen != per {
            return Err(format!("victim {k} reports {seen} unlinks of {per}"));
        }
    }
    // The audit log: one hold and one decision per unlink, the same verdicts.
    let log = spec.logs.join(format!("{}.jsonl", spec.session));
    let text = std::fs::read_to_string(&log).map_err(io(format!("read {}", log.display())))?;
    let mut holds = BTreeSet::new();
    let (mut approved, mut denied) = (0, 0);
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).map_err(|e| format!("audit line {l:?}: {e}"))?;
        match v["kind"].as_str() {
            Some("hold") => {
                holds.insert(v["target"].as_str().unwrap_or("").to_owned());
            }
            Some("decision") if v["decision"] == "approve" => approved += 1,
            Some("decision") => denied += 1,
            _ => {}
        }
    }
    if holds.len() != total || approved != rep.approved || denied != rep.holds - rep.approved {
        return Err(format!(
            "audit log: {} distinct hold targets, {approved} approvals, {denied} denials; decided {} ({} approved)",
            holds.len(),
            rep.holds,
            rep.approved
        ));
    }
    Ok(rep)
}
