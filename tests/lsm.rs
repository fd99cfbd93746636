//! The file hold with the BPF LSM backend. These tests need a kernel that loads BPF LSM programs:
//! `cargo xtask vm-test` runs them inside VMs (Debian 6.1 and 6.12 kernels booted with
//! `lsm=...,bpf`). On a host that refuses LSM programs they skip with the reason (this target is
//! not part of the host's `cargo test`).

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    count_files, decide_each, decide_first, deny_all, lsm_available, make_tree, text, World,
};

const T: Duration = Duration::from_secs(120);
const LSM: &[&str] = &["--backend", "lsm"];

#[test]
fn lsm_rm_of_protected_file_is_held_until_denied_then_approved() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let r = w.run(
        "lsm-deny",
        &[&prot],
        LSM,
        &format!("rm {}; echo rc=$?", f.display()),
    );
    let h = decide_first(&w, "lsm-deny", "deny");
    assert_eq!(h["kind"], "unlink");
    assert_eq!(h["target"], f.display().to_string());
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");

    let r = w.run(
        "lsm-appr",
        &[&prot],
        LSM,
        &format!("rm {}; echo rc=$?", f.display()),
    );
    decide_first(&w, "lsm-appr", "approve");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=0"),
        "{}",
        text(&out)
    );
    assert!(!f.exists());
    assert!(w.log("lsm-appr")[0]["backend"] == "lsm");
}

#[test]
fn lsm_rm_rf_of_a_protected_tree_needs_one_decision_either_way() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let root = make_tree(&w, 1000);
    let script = format!(
        "mkdir -p {r}/new && touch {r}/new/late; rm -rf {r}; echo rc=$?",
        r = root.display()
    );
    let r = w.run("lsm-tree-deny", &[&root], LSM, &script);
    decide_first(&w, "lsm-tree-deny", "deny");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    assert_eq!(count_files(&root), 1001);
    assert_eq!(
        w.log("lsm-tree-deny")
            .iter()
            .filter(|l| l["kind"] == "hold")
            .count(),
        1
    );

    let r = w.run(
        "lsm-tree-appr",
        &[&root],
        LSM,
        &format!("rm -rf {r}; echo rc=$?", r = root.display()),
    );
    decide_first(&w, "lsm-tree-appr", "approve");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=0"),
        "{}",
        text(&out)
    );
    assert!(!root.exists());
    assert_eq!(
        w.log("lsm-tree-appr")
            .iter()
            .filter(|l| l["kind"] == "hold")
            .count(),
        1
    );
}

#[test]
fn lsm_holds_every_destructive_path() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let other = w.file("other", "o");
    let rn = common::prog("renameat2");
    let ft = common::prog("ftrunc");
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "rename-away",
            "rename",
            format!("mv {} {}/moved", f.display(), w.work.display()),
        ),
        (
            "rename-over",
            "rename",
            format!("mv {} {}", other.display(), f.display()),
        ),
        (
            "exchange",
            "rename",
            format!(
                "{} {} {} exchange",
                rn.display(),
                other.display(),
                f.display()
            ),
        ),
        (
            "truncate",
            "truncate",
            format!("truncate -s 0 {}", f.display()),
        ),
        ("redirect", "truncate", format!(": > {}", f.display())),
        (
            "ftruncate",
            "truncate",
            format!("{} {}", ft.display(), f.display()),
        ),
        (
            "procfd",
            "unlink",
            format!("exec 3< {}; rm /proc/self/fd/3/f", prot.display()),
        ),
        (
            "rename-parent",
            "rename",
            format!("mv {} {}/gone", prot.display(), w.work.display()),
        ),
    ];
    for (name, kind, script) in cases {
        let (holds, out) = deny_all(&w, LSM, name, &prot, &script);
        assert!(
            !holds.is_empty(),
            "{name}: nothing was held\n{}",
            text(&out)
        );
        assert_eq!(holds[0]["kind"], kind, "{name}");
        assert_ne!(
            out.status.code(),
            Some(0),
            "{name}: the command succeeded\n{}",
            text(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "keep",
            "{name}: the protected file changed"
        );
    }
}

#[test]
fn lsm_hard_links_of_protected_files_are_held() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let link = w.work.join("l");
    let script = format!(
        "ln {f} {l} && echo linked; rm {f}; rm {l}; true",
        f = f.display(),
        l = link.display()
    );
    let (holds, out) = deny_all(&w, LSM, "lsm-links", &prot, &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("linked"),
        "{}",
        text(&out)
    );
    assert_eq!(holds.len(), 2, "{holds:?}");
    assert!(f.exists() && link.exists());
}

#[test]
fn lsm_an_early_sigcont_re_traps_and_a_multithreaded_victim_is_held_whole() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let tu = common::prog("threads_unlink");
    let script = format!(
        "{} {} & v=$!; sleep 2; kill -CONT $v; sleep 1; kill -CONT $v; wait $v; echo rc=$?",
        tu.display(),
        f.display()
    );
    let r = w.run("lsm-cont", &[&prot], LSM, &script);
    let h = w.wait_hold("lsm-cont", T);
    let pid = h["pid"].as_u64().unwrap();
    // Every thread of the victim is stopped.
    std::thread::sleep(Duration::from_millis(500));
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tasks.len() >= 4, "{} threads", tasks.len());
    for t in &tasks {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(state, "T", "thread {:?} is not stopped", t.file_name());
    }
    // The SIGCONTs from inside re-trap: still one hold, still pending, file still there.
    std::thread::sleep(Duration::from_secs(4));
    let pend = w.pending();
    assert_eq!(pend.len(), 1, "{pend:?}");
    assert_eq!(pend[0]["id"], h["id"]);
    assert!(f.exists());
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    assert!(f.exists());
}

#[test]
fn lsm_io_uring_unlink_of_a_protected_file_gets_eperm() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let p = common::prog("uring_unlinkat");
    // The profile allows io_uring (the baseline refuses it), so the unlink really runs in an
    // io_uring worker and meets the LSM hook there.
    let prof = w.work.join("uring.toml");
    std::fs::write(&prof, "[process]\nallow_io_uring = true\n").unwrap();
    let script = format!("{} {}", p.display(), f.display());
    let mut r = w.run(
        "lsm-uring",
        &[&prot],
        &["--backend", "lsm", "--profile", prof.to_str().unwrap()],
        &script,
    );
    let t0 = Instant::now();
    while r.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < T, "session did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let holds = w
        .log("lsm-uring")
        .into_iter()
        .filter(|l| l["kind"] == "hold")
        .collect::<Vec<_>>();
    let out = r.finish(T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    assert!(holds.is_empty());
    assert!(f.exists());
}

#[test]
fn lsm_timeout_denies_and_a_killed_supervisor_leaves_data_and_no_process() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let r = w.run(
        "lsm-tmo",
        &[&prot],
        &["--backend", "lsm", "--decision-timeout", "2s"],
        &format!("rm {}", f.display()),
    );
    let out = r.finish(T);
    assert_ne!(out.status.code(), Some(0));
    assert!(f.exists());
    assert!(w
        .log("lsm-tmo")
        .iter()
        .any(|l| l["kind"] == "decision" && l["by"] == "timeout"));

    let r = w.run("lsm-kill", &[&prot], LSM, &format!("rm {}", f.display()));
    let h = w.wait_hold("lsm-kill", T);
    let held = h["pid"].as_u64().unwrap();
    // SAFETY: plain kill.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGKILL) };
    let _ = r.finish(T);
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{held}")).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "held process outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(f.exists());
}

#[test]
fn lsm_programs_affect_no_process_outside_sessions() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let g = w.file("p/g", "free to go");
    let r = w.run("lsm-outside", &[&prot], LSM, "sleep 3");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&g).unwrap();
    std::fs::write(&f, "").unwrap();
    assert!(!g.exists());
    let out = r.finish(T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `hold_connect` with `--net host` on the LSM backend: the `socket_connect` hook holds a
/// connect to the endpoint (denied: EPERM; approved: it connects) and lets others through.
#[test]
fn lsm_connect_to_a_held_endpoint_is_held_denied_then_approved() {
    if !lsm_available() {
        return;
    }
    let (free, _) = common::counting_server();
    let (held, accepted) = common::counting_server();
    let w = World::new();
    let profile = w.file(
        "connect.toml",
        &format!("[network]\nhold_connect = [\"127.0.0.1:{held}\"]\n"),
    );
    let prog = common::prog("connect_once");
    let profile = profile.display().to_string();
    let opts = [
        "--backend",
        "lsm",
        "--net",
        "host",
        "--profile",
        profile.as_str(),
    ];
    let script = format!("{p} {free}; {p} {held}", p = prog.display());
    for (verb, want) in [
        ("deny", format!("error {held} 1")),
        ("approve", format!("connected {held}")),
    ] {
        let session = format!("lsm-connect-{verb}");
        let r = w.run(&session, &[], &opts, &script);
        let h = decide_first(&w, &session, verb);
        assert_eq!(h["kind"], "connect", "{h}");
        assert_eq!(h["target"], format!("127.0.0.1:{held}"), "{h}");
        let out = r.finish(T);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains(&format!("connected {free}")),
            "unheld endpoints connect: {}",
            text(&out)
        );
        assert!(s.contains(&want), "{verb}: {}", text(&out));
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the approved connect arrived"
    );
}

#[test]
fn lsm_name_patterns_hold_matching_names_anywhere_and_below_them() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let tf = w.file("deep/er/x.tfstate", "state");
    let bak = w.file("deep/x.tfstate.backup", "old state");
    let txt = w.file("deep/er/x.txt", "text");
    let head = w.file("repo/.git/HEAD", "ref: main");
    let src = w.file("repo/src.c", "int x;");
    let p = w.file(
        "pat.toml",
        "[files]\nprotect = [\"**/*.tfstate\", \"*.tfstate.backup\", \"**/.git\"]\n",
    );
    let p = p.display().to_string();
    let script = format!(
        "rm {txt}; rm {tf}; rm {bak}; rm -rf {repo}; echo end",
        txt = txt.display(),
        tf = tf.display(),
        bak = bak.display(),
        repo = w.work.join("repo").display()
    );
    let opts = ["--backend", "lsm", "--profile", p.as_str()];
    let (holds, out) = decide_each(&w, "lsm-pat", &[], &opts, "deny", &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("end"),
        "{}",
        text(&out)
    );
    let targets: Vec<&str> = holds
        .iter()
        .map(|h| h["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&tf.display().to_string().as_str()),
        "{holds:?}"
    );
    assert!(
        targets.contains(&bak.display().to_string().as_str()),
        "{holds:?}"
    );
    assert!(
        targets.iter().any(|t| t.contains("/.git")),
        "rm -rf of a tree with .git is held: {holds:?}"
    );
    for h in &holds {
        assert!(h["rule"].as_str().unwrap().contains("pattern"), "{h}");
    }
    assert!(!txt.exists(), "an unmatched name is not held");
    assert!(!src.exists(), "rm -rf went on around .git");
    assert!(tf.exists() && bak.exists() && head.exists());

    // git itself (an executable in a root-owned `git-core` directory; busybox's rm under that
    // name) is not held inside .git; anything else still is.
    let core = w.tmp.path().join("git-core");
    std::fs::create_dir(&core).unwrap();
    std::fs::copy("/bin/busybox", core.join("rm")).unwrap();
    let packed = w.file("repo/.git/packed-refs", "x");
    let script = format!(
        "{git_rm} {head}; rm {packed}; echo end",
        git_rm = core.join("rm").display(),
        head = head.display(),
        packed = packed.display()
    );
    let (holds, out) = decide_each(&w, "lsm-pat-git", &[], &opts, "deny", &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("end"),
        "{}",
        text(&out)
    );
    assert!(!head.exists(), "git's own removal in .git is not held");
    assert!(packed.exists());
    assert_eq!(holds.len(), 1, "{holds:?}");
}

#[test]
fn lsm_protect_writes_holds_write_opens_and_creations() {
    if !lsm_available() {
        return;
    }
    let w = World::new();
    let log = w.file("wd/vault/log", "orig\n");
    let vault = w.work.join("wd/vault");
    let free = w.work.join("wd/free.txt");
    let p = w.file(
        "w.toml",
        &format!("[files]\nprotect_writes = [\"{}\"]\n", vault.display()),
    );
    let p = p.display().to_string();
    let opts = ["--backend", "lsm", "--profile", p.as_str()];
    let script = format!(
        "cat {log}; echo a > {free}; echo b >> {log}; echo c > {v}/new; echo end",
        log = log.display(),
        free = free.display(),
        v = vault.display()
    );
    let (holds, out) = decide_each(&w, "lsm-wdeny", &[], &opts, "deny", &script);
    let o = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        o.lines().collect::<Vec<_>>(),
        ["orig", "end"],
        "{}",
        text(&out)
    );
    let targets: Vec<String> = holds
        .iter()
        .map(|h| h["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        targets,
        [
            log.display().to_string(),
            vault.join("new").display().to_string()
        ],
        "{holds:?}"
    );
    for h in &holds {
        assert_eq!(h["kind"], "write", "{h}");
        assert!(
            h["rule"].as_str().unwrap().starts_with("protect_writes"),
            "{h}"
        );
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "orig\n");
    assert!(!vault.join("new").exists());
    assert_eq!(std::fs::read_to_string(&free).unwrap(), "a\n");

    // Approved: the append happens, and a creation is one hold (not a second for its open).
    let script = format!(
        "echo b >> {log}; echo c > {v}/new; echo end",
        log = log.display(),
        v = vault.display()
    );
    let (holds, out) = decide_each(&w, "lsm-wallow", &[], &opts, "approve", &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("end"),
        "{}",
        text(&out)
    );
    assert_eq!(holds.len(), 2, "{holds:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "orig\nb\n");
    assert_eq!(std::fs::read_to_string(vault.join("new")).unwrap(), "c\n");
}

/// With the supervisor stopped, holds fill the ring buffer (1 MiB, about 950 holds); past that
/// the hook has nowhere to report a hold and refuses the operation at once (EPERM). Nothing is
/// destroyed, what was recorded is decided once the supervisor runs again, and the refusals are
/// counted into the audit log (`refused_unreported`).
#[test]
fn lsm_a_full_ring_buffer_refuses_further_removals_and_destroys_nothing() {
    if !lsm_available() {
        return;
    }
    const N: usize = 1200;
    let w = World::new();
    let prot = w.dir("p");
    for i in 0..N {
        std::fs::write(prot.join(format!("f{i}")), "keep").unwrap();
    }
    let ready = w.work.join("ready");
    let go = w.work.join("go");
    let res = w.work.join("res");
    // Each removal in its own process: a hold stops the whole process that made it.
    let script = format!(
        "touch {ready}; while [ ! -e {go} ]; do sleep 0.1; done; i=0; \
         while [ $i -lt {N} ]; do (rm {p}/f$i 2>/dev/null; echo \"$i $?\" >> {res}) & i=$((i+1)); done; \
         wait; echo end",
        ready = ready.display(),
        go = go.display(),
        res = res.display(),
        p = prot.display(),
    );
    let r = w.run(
        "lsm-ring",
        &[&prot],
        &["--backend", "lsm", "--decision-timeout", "30m"],
        &script,
    );
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < T, "the session did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sup = r.child.id() as i32;
    // SAFETY: plain kill.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGSTOP) }, 0);
    std::fs::write(&go, "").unwrap();
    // The removals past the ring buffer's room end at once; the others stay stopped. Wait until
    // no more end for 10 s.
    let count = || {
        std::fs::read_to_string(&res)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let (mut last, mut since) = (0, Instant::now());
    let t0 = Instant::now();
    loop {
        let n = count();
        if n != last {
            (last, since) = (n, Instant::now());
        } else if n > 0 && since.elapsed() > Duration::from_secs(10) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{n} removals ended so far"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = last;
    // SAFETY: plain kill.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGCONT) }, 0);
    let h = w.wait_hold("lsm-ring", T);
    w.decide("deny", h["id"].as_str().unwrap(), &["--scope", "session"]);
    let out = r.finish(Duration::from_secs(600));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("end"),
        "{}",
        text(&out)
    );
    let results = std::fs::read_to_string(&res).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(lines.len(), N, "every removal ended");
    assert!(
        lines.iter().all(|l| !l.ends_with(" 0")),
        "a removal succeeded"
    );
    for i in 0..N {
        assert_eq!(
            std::fs::read_to_string(prot.join(format!("f{i}"))).unwrap(),
            "keep"
        );
    }
    let log = w.log("lsm-ring");
    // Recorded: a hold, or (once the session-wide denial stands) an `applied` denial.
    let holds = log
        .iter()
        .filter(|l| l["kind"] == "hold" || l["kind"] == "applied")
        .count();
    // The refusals are in the audit log too, once the supervisor runs again.
    let unreported: u64 = log
        .iter()
        .filter(|l| l["kind"] == "refused_unreported")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    eprintln!("ring buffer: {holds} holds recorded (held or applied), {refused} removals refused while the supervisor was stopped");
    assert!(refused > 0, "the ring buffer never filled: {holds} holds");
    assert!(holds > 500, "{holds} holds recorded");
    assert_eq!(holds + refused, N, "{holds} holds + {refused} refused");
    assert_eq!(
        unreported as usize, refused,
        "refused_unreported in the audit log"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a hold"),
        "{}",
        text(&out)
    );
}
