//! Fault injection through the real binary (seccomp backend on this host): the supervisor killed
//! or stopped during a hold, the audit log's file system full, the state directory removed, a
//! thousand holds at once. In every case the guard fails closed: nothing protected is lost, and
//! the audit log says what happened. docs/SECURITY.md lists the cases.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{privileged, text, World};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// `xtask/progs/hold_victim.c`, compiled into the world's directory (removed with it).
fn victim(w: &World) -> PathBuf {
    let out = w.tmp.path().join("hold_victim");
    common::cc(Path::new("xtask/progs/hold_victim.c"), &out, &[]);
    out
}

/// The first line of the session's audit log (`session_start`), once it is there.
fn session_start(w: &World, session: &str) -> Value {
    let t0 = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(w.logs.join(format!("{session}.jsonl"))) {
            if let Some(v) = t.lines().next().and_then(|l| serde_json::from_str(l).ok()) {
                return v;
            }
        }
        assert!(t0.elapsed() < T, "no session_start for {session}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes of a cgroup, with their start times (pids are reused).
fn procs(cgroup: &Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .filter_map(|p: u32| start_time(p).map(|s| (p, s)))
        .collect()
}

fn start_time(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_owned)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The state letter of a process (`R`, `S`, `T` ...).
fn state(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s.rfind(')')
        .and_then(|i| s[i + 2..].chars().next())
        .unwrap_or('?')
}

/// Removes the (empty) cgroups a killed supervisor could not remove.
fn remove_cgroups(start: &Value) {
    for k in ["cgroup", "pids_cgroup"] {
        if let Some(p) = start[k].as_str() {
            let p = Path::new(p);
            let _ = std::fs::remove_dir(p.join("held"));
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2).
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

#[test]
fn supervisor_sigkill_during_a_hold_leaves_the_file_no_process_and_the_hold_in_the_log() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let marker = w.work.join("after");
    let session = "flt-sigkill";
    let r = w.run(
        session,
        &[&prot],
        &[],
        &format!("sleep 300 & rm {}; touch {}", f.display(), marker.display()),
    );
    let h = w.wait_hold(session, T);
    let start = session_start(&w, session);
    let cg = PathBuf::from(start["cgroup"].as_str().unwrap());
    let before = procs(&cg);
    assert!(
        before.iter().any(|(p, _)| comm(*p) == "rm")
            && before.iter().any(|(p, _)| comm(*p) == "sleep"),
        "the session's processes: {before:?}"
    );
    kill(r.child.id(), libc::SIGKILL);
    let out = r.finish(T);
    assert_eq!(out.status.signal_or_code(), 9, "{}", text(&out));
    // Every process of the session goes with the supervisor.
    let t0 = Instant::now();
    loop {
        let alive: Vec<_> = before
            .iter()
            .filter(|(p, st)| start_time(*p).as_ref() == Some(st))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "session processes outlived the supervisor: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
    assert!(
        !marker.exists(),
        "the command went on after the supervisor died"
    );
    // The audit log has the hold, and no decision for it.
    let log = w.log(session);
    assert!(
        log.iter().any(|l| l["kind"] == "hold"
            && l["id"] == h["id"]
            && l["target"] == f.display().to_string()),
        "the hold is not in the audit log: {log:?}"
    );
    assert!(!log.iter().any(|l| l["kind"] == "decision"), "{log:?}");
    remove_cgroups(&start);
}

/// Exit status or 128 + signal, as a shell shows it.
trait SignalOrCode {
    fn signal_or_code(&self) -> i32;
}

impl SignalOrCode for std::process::ExitStatus {
    fn signal_or_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.code().unwrap_or_else(|| self.signal().unwrap_or(0))
    }
}

#[test]
fn supervisor_sigstop_during_a_hold_lets_nothing_proceed_and_a_decision_after_sigcont_works() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let session = "flt-sigstop";
    let r = w.run(
        session,
        &[&prot],
        &["--decision-timeout", "300s"],
        &format!("rm {}; echo rm=$?", f.display()),
    );
    let h = w.wait_hold(session, T);
    let id = h["id"].as_str().unwrap().to_owned();
    let start = session_start(&w, session);
    let cg = PathBuf::from(start["cgroup"].as_str().unwrap());
    let sup = r.child.id();
    kill(sup, libc::SIGSTOP);
    let t0 = Instant::now();
    while state(sup) != 'T' {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the supervisor did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // While it is stopped: the held rm stays held, nothing is removed, the session goes on.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
        let ps = procs(&cg);
        assert!(
            ps.iter().any(|(p, _)| comm(*p) == "rm"),
            "the held rm is gone while the supervisor is stopped: {ps:?}"
        );
    }
    // `sandbox pending` cannot list a stopped session's holds: it says so instead of hiding it.
    let p = w.cmd(&["pending"]).output().unwrap();
    let err = String::from_utf8_lossy(&p.stderr);
    assert!(
        err.contains(&format!("session {session} did not answer")),
        "pending while the supervisor is stopped: {}",
        text(&p)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
    kill(sup, libc::SIGCONT);
    // The same hold is still pending, and deciding it works.
    let again = w.wait_hold(session, T);
    assert_eq!(again["id"], id.as_str());
    w.decide("approve", &id, &[]);
    let out = r.finish(T);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rm=0"),
        "{}",
        text(&out)
    );
    assert!(!f.exists(), "the approved rm did not happen");
    let log = w.log(session);
    assert!(log
        .iter()
        .any(|l| l["kind"] == "decision" && l["id"] == id.as_str() && l["decision"] == "approve"));
}

/// A tmpfs of `size` mounted on `dir` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![b'x'; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            }
        }
        // Whatever is left is less than a page: take it too.
        while f.write(b"x").is_ok_and(|n| n == 1) {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_audit_log_denies_approvals_and_new_holds_and_says_so() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let fs = Tmpfs::mount(&w.logs, "1m");
    // Lines about these files are longer than a page, so a full file system cannot take them in
    // the slack of the log's last page (a real full disk keeps that slack too).
    let mut rel = String::from("p");
    for i in 0..15 {
        rel.push('/');
        rel.push_str(&format!("{i:02}").repeat(127)[..254]);
        rel.push('d');
    }
    let prot = w.dir(&rel);
    let long = prot.join("d".repeat(150));
    std::fs::create_dir(&long).unwrap();
    let f1 = w.file(&format!("{rel}/{}/f1", "d".repeat(150)), "keep");
    let f2 = w.file(&format!("{rel}/{}/f2", "d".repeat(150)), "keep");
    assert!(f1.as_os_str().len() > 4000 && f1.as_os_str().len() < 4095);
    let session = "flt-logfull";
    let r = w.run(
        session,
        &[&prot],
        &["--decision-timeout", "300s"],
        &format!(
            "rm {f1}; echo rm1=$?; rm {f2}; echo rm2=$?",
            f1 = f1.display(),
            f2 = f2.display()
        ),
    );
    // The first hold is recorded while there is room; then the file system fills up and the
    // human approves: the approval cannot be written, so it is carried out as a denial.
    let h = w.wait_hold(session, T);
    assert_eq!(h["target"], f1.display().to_string());
    fs.fill();
    let a = w
        .cmd(&["approve", h["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !a.status.success(),
        "the approval was reported done\n{}",
        text(&a)
    );
    assert!(
        String::from_utf8_lossy(&a.stderr).contains("could not be written to the audit log"),
        "{}",
        text(&a)
    );
    // The second rm is denied at once: no one decides anything from here on.
    let t0 = Instant::now();
    let out = r.finish(T);
    let took = t0.elapsed();
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        so.contains("rm1=1") && so.contains("rm2=1"),
        "{}",
        text(&out)
    );
    assert!(
        took < Duration::from_secs(60),
        "the second hold waited {took:?}"
    );
    assert!(se.contains("cannot write the audit log"), "{}", text(&out));
    assert!(se.contains("audit log unwritable"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&f1).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(&f2).unwrap(), "keep");
    // What the log could take: the first hold, and no approval (every line complete).
    let text = std::fs::read_to_string(w.logs.join(format!("{session}.jsonl"))).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line was left"
    );
    let log = w.log(session);
    assert!(log
        .iter()
        .any(|l| l["kind"] == "hold" && l["target"] == f1.display().to_string()));
    assert!(!log.iter().any(|l| l["decision"] == "approve"), "{log:?}");
    drop(fs);
}

#[test]
fn a_session_whose_audit_log_cannot_be_started_does_not_run() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let fs = Tmpfs::mount(&w.logs, "64k");
    fs.fill();
    let marker = w.work.join("ran");
    let out = w
        .run(
            "flt-nolog",
            &[],
            &[],
            &format!("touch {}", marker.display()),
        )
        .finish(T);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(!marker.exists(), "the command ran without an audit log");
    drop(fs);
}

#[test]
fn a_removed_state_directory_still_times_out_holds_and_pending_says_why() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let session = "flt-nostate";
    let r = w.run(
        session,
        &[&prot],
        &["--decision-timeout", "4s"],
        &format!("rm {}; echo rm=$?", f.display()),
    );
    let h = w.wait_hold(session, T);
    std::fs::remove_dir_all(&w.state).unwrap();
    let t0 = Instant::now();
    let p = w.cmd(&["pending"]).output().unwrap();
    assert!(!p.status.success(), "{}", text(&p));
    let err = String::from_utf8_lossy(&p.stderr);
    assert!(
        err.contains("state directory") && err.contains("removed") && err.contains(session),
        "{}",
        text(&p)
    );
    let d = w
        .cmd(&["deny", h["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !d.status.success() && String::from_utf8_lossy(&d.stderr).contains("removed"),
        "{}",
        text(&d)
    );
    // The hold is denied at its timeout.
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rm=1"),
        "{}",
        text(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
    let log = w.log(session);
    assert!(log
        .iter()
        .any(|l| l["kind"] == "decision" && l["id"] == h["id"] && l["by"] == "timeout"));
}

#[test]
fn a_thousand_simultaneous_holds_are_all_listed_and_each_decided_as_asked() {
    if !privileged() {
        return;
    }
    const N: usize = 1000;
    let w = World::new();
    let prot = w.dir("p");
    for i in 0..N {
        std::fs::write(prot.join(format!("f{i:04}")), "keep").unwrap();
    }
    common::chown_tree(&prot);
    let session = "flt-thousand";
    let v = victim(&w);
    let r = w.spawn(
        &[
            "run",
            "--user",
            "65534",
            "--session",
            session,
            "--protect",
            prot.to_str().unwrap(),
            "--decision-timeout",
            "600s",
            "--",
            v.to_str().unwrap(),
            "each",
            prot.to_str().unwrap(),
            &N.to_string(),
        ],
        session,
    );
    let t0 = Instant::now();
    let holds = loop {
        let mine: Vec<Value> = w
            .pending()
            .into_iter()
            .filter(|h| h["session"] == session)
            .collect();
        if mine.len() >= N {
            break mine;
        }
        assert!(
            t0.elapsed() < T,
            "only {} of {N} holds pending after {T:?}",
            mine.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let listed = t0.elapsed();
    assert_eq!(holds.len(), N);
    // One hold per file, each by a distinct thread of the victim.
    let mut by_file: std::collections::BTreeMap<usize, Value> = Default::default();
    let mut pids = std::collections::BTreeSet::new();
    for h in holds {
        assert_eq!(h["kind"], "unlink", "{h}");
        assert_eq!(h["comm"], "hold_victim", "{h}");
        let t = h["target"].as_str().unwrap();
        let i: usize = t
            .strip_prefix(&format!("{}/f", prot.display()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected target {t}"));
        pids.insert(h["pid"].as_u64().unwrap());
        assert!(by_file.insert(i, h).is_none(), "two holds for f{i:04}");
    }
    assert_eq!(by_file.len(), N);
    // Holds name the process (its threads share the pid): the victim's, one for all.
    assert_eq!(pids.len(), 1, "holds of other processes: {pids:?}");
    // Even files approved, odd denied, from four deciders at once.
    let ids: Vec<(usize, String)> = by_file
        .iter()
        .map(|(i, h)| (*i, h["id"].as_str().unwrap().to_owned()))
        .collect();
    let t1 = Instant::now();
    std::thread::scope(|s| {
        for part in ids.chunks(N.div_ceil(4)) {
            let w = &w;
            s.spawn(move || {
                for (i, id) in part {
                    let verb = if i % 2 == 0 { "approve" } else { "deny" };
                    w.decide(verb, id, &["--scope", "once"]);
                }
            });
        }
    });
    let decided = t1.elapsed();
    let out = r.finish(T);
    assert!(out.status.success(), "{}", text(&out));
    let so = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for l in so.lines() {
        let Some((i, e)) = l.split_once(' ') else {
            continue;
        };
        let (Ok(i), Ok(e)) = (i.parse::<usize>(), e.parse::<i32>()) else {
            continue;
        };
        let want = if i % 2 == 0 { 0 } else { libc::EPERM };
        assert_eq!(e, want, "thread {i}");
        seen += 1;
    }
    assert_eq!(seen, N, "{}", text(&out));
    assert!(so.contains(&format!("allowed {} denied {} failed 0", N / 2, N / 2)));
    for i in 0..N {
        assert_eq!(
            prot.join(format!("f{i:04}")).exists(),
            i % 2 == 1,
            "f{i:04}"
        );
    }
    let log = w.log(session);
    let count = |k: &str, d: &str| {
        log.iter()
            .filter(|l| l["kind"] == k && (d.is_empty() || l["decision"] == d))
            .count()
    };
    assert_eq!(count("hold", ""), N);
    assert_eq!(count("decision", "approve"), N / 2);
    assert_eq!(count("decision", "deny"), N / 2);
    eprintln!(
        "{N} holds: all pending after {listed:?}; decided one by one (4 deciders) in {decided:?}"
    );
}
