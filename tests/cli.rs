//! The command-line contract: bad input, exit codes, and who may decide.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{privileged, text, World};

const T: Duration = Duration::from_secs(30);

/// Asserts exit 125 with a message on stderr, and that nothing ran.
fn refused(w: &World, args: &[&str], needle: &str) {
    let marker = w.work.join("ran");
    let out = w.cmd(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{args:?}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in: {err}"
    );
    assert!(!marker.exists(), "{args:?}: the command ran");
    // No session was left behind.
    let socks = std::fs::read_dir(&w.state).map(|d| d.count()).unwrap_or(0);
    assert_eq!(socks, 0, "{args:?}: a control socket was left");
}

#[test]
fn bad_input_gives_a_clear_message_and_exit_125() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let touch = format!("touch {}", w.work.join("ran").display());
    refused(
        &w,
        &[
            "run",
            "--user",
            "nobody",
            "--protect",
            "/nonexistent/x",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "/nonexistent/x",
    );
    refused(&w, &["run", "--user", "nobody"], "CMD");
    refused(
        &w,
        &[
            "run", "--user", "nobody", "--bogus", "--", "sh", "-c", &touch,
        ],
        "--bogus",
    );
    refused(
        &w,
        &[
            "run",
            "--user",
            "no-such-user-xyz",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "no such user",
    );
    refused(
        &w,
        &[
            "run",
            "--user",
            "nobody",
            "--decision-timeout",
            "soon",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "soon",
    );
    refused(
        &w,
        &[
            "run",
            "--user",
            "nobody",
            "--session",
            "../x",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "--session",
    );
    refused(&w, &["run", "--", "sh", "-c", &touch], "SUDO_UID");
}

#[test]
fn run_as_non_root_is_refused_with_125() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let marker = w.work.join("ran");
    let out = w
        .cmd(&[
            "run",
            "--user",
            "nobody",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .uid(common::UID)
        .gid(common::UID)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("root"),
        "{}",
        text(&out)
    );
    assert!(!marker.exists());
}

#[test]
fn the_command_exit_status_is_returned() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let out = w.run("st", &[], &[], "exit 7").finish(T);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = w.run("sig", &[], &[], "kill -TERM $$").finish(T);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out));
    let out = w
        .cmd(&["run", "--user", "nobody", "--", "/nonexistent-cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
}

#[test]
fn the_sandboxed_command_runs_unprivileged_in_its_own_namespaces() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let out = w
        .run("ns", &[], &[], "id -u; grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb)' /proc/self/status; echo pid=$$; ls /proc/self/fd | wc -l")
        .finish(T);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with("65534\n"), "{}", text(&out));
    assert!(s.contains("NoNewPrivs:\t1"), "{s}");
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert!(
            s.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {s}"
        );
    }
    // pid 1 is sandbox-init; the shell is its child.
    assert!(s.contains("pid=2\n"), "{s}");
}

#[test]
fn a_process_inside_a_session_cannot_list_or_decide_holds_even_as_root() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    // Session A holds an rm; session B (root inside) tries to approve it through every path.
    let a = w.run("victim", &[&prot], &[], &format!("rm {}", f.display()));
    let h = w.wait_hold("victim", T);
    let id = h["id"].as_str().unwrap().to_string();
    let sock = w.state.join("victim.sock");
    let script = format!(
        "{bin} pending; echo pending=$?; {bin} approve {id}; echo approve=$?; \
         ls {state} 2>&1; python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{sock}\")' 2>&1 | tail -1",
        bin = common::bin(),
        state = w.state.display(),
        sock = sock.display()
    );
    let out = w
        .cmd(&[
            "run",
            "--user",
            "root",
            "--session",
            "attacker",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("pending=1") || s.contains("no pending holds"),
        "{}",
        text(&out)
    );
    assert!(s.contains("approve=1"), "{}", text(&out));
    // Still held.
    assert!(w.pending().iter().any(|p| p["id"] == id.as_str()));
    // Even with the socket reachable (from outside the mount namespace, as root, but inside a
    // session cgroup) the supervisor refuses: checked by entering the session's cgroup.
    let cg = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = cg
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let procs = format!("{mnt}/sandbox/victim/cgroup.procs");
    let bin = common::bin();
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {procs} && exec {bin} approve {id}"),
        ])
        .env("SANDBOX_STATE_DIR", &w.state)
        .env("SANDBOX_LOG_DIR", &w.logs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("inside a sandbox"),
        "{}",
        text(&out)
    );
    assert!(w.pending().iter().any(|p| p["id"] == id.as_str()));
    w.decide("deny", &id, &[]);
    a.finish(T);
    assert!(f.exists());
}

#[test]
fn pending_and_sessions_print_the_documented_json() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let r = w.run("js", &[&prot], &[], &format!("rm {}", f.display()));
    let h = w.wait_hold("js", T);
    for k in ["id", "session", "pid", "kind", "target", "rule", "since"] {
        assert!(!h[k].is_null(), "pending --json lacks {k}: {h}");
    }
    let out = w.cmd(&["sessions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session"] == "js")
        .expect("session listed");
    assert_eq!(s["pending"], 1);
    assert_eq!(s["user"], "nobody");
    let human = w.cmd(&["pending"]).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(h["id"].as_str().unwrap()));
    let out = w.cmd(&["approve", "nope1234"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending hold"),
        "{}",
        text(&out)
    );
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    r.finish(T);
}

#[test]
fn approve_once_holds_the_next_operation_again() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let a = w.file("p/a", "1");
    let b = w.file("p/b", "2");
    let r = w.run(
        "once",
        &[&prot],
        &[],
        &format!("rm {} {}", a.display(), b.display()),
    );
    let h1 = w.wait_hold("once", T);
    w.decide("approve", h1["id"].as_str().unwrap(), &["--scope", "once"]);
    let t0 = std::time::Instant::now();
    let h2 = loop {
        if let Some(h) = w.pending().into_iter().find(|h| h["id"] != h1["id"]) {
            break h;
        }
        assert!(t0.elapsed() < T, "second hold never came");
        std::thread::sleep(Duration::from_millis(20));
    };
    w.decide("deny", h2["id"].as_str().unwrap(), &[]);
    r.finish(T);
    assert!(!a.exists());
    assert!(b.exists());
}

#[test]
fn doctor_reports_the_backend_and_lsm_refusal_gives_125() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let out = w.cmd(&["doctor", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lsm = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bpf lsm programs")
        .unwrap()
        .clone();
    // What the network guard needs works here (and on the CI machines).
    for name in ["network namespace", "cgroup connect4/6"] {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("doctor checks {name}: {v}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    let marker = w.work.join("ran");
    let run_lsm = w
        .cmd(&[
            "run",
            "--user",
            "nobody",
            "--backend",
            "lsm",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if lsm["ok"] == true {
        assert_eq!(v["backend"], "lsm");
        assert_eq!(run_lsm.status.code(), Some(0), "{}", text(&run_lsm));
    } else {
        // Hosts like the CI machine list `bpf` but refuse LSM programs: probing by loading says so.
        assert_eq!(v["backend"], "seccomp");
        assert!(lsm["detail"].as_str().unwrap().contains("refused"), "{lsm}");
        assert_eq!(run_lsm.status.code(), Some(125), "{}", text(&run_lsm));
        assert!(
            String::from_utf8_lossy(&run_lsm.stderr).contains("--backend lsm"),
            "{}",
            text(&run_lsm)
        );
        assert!(!marker.exists());
        // auto falls back to seccomp and says why in the audit log.
        let out = w.run("auto", &[], &[], "true").finish(T);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let start = &w.log("auto")[0];
        assert_eq!(start["backend"], "seccomp");
        assert!(
            start["lsm_refused"].as_str().unwrap().contains("refused"),
            "{start}"
        );
    }
}

#[test]
fn a_session_wide_approval_needs_confirmation() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let a = w.file("p/a", "1");
    let b = w.file("p/b", "2");
    let r = w.run(
        "wide",
        &[&prot],
        &[],
        &format!("rm {}; rm {}", a.display(), b.display()),
    );
    let h = w.wait_hold("wide", T);
    let id = h["id"].as_str().unwrap();
    // Not on a terminal and without --yes: refused (exit 2), the hold stays.
    let out = w
        .cmd(&["approve", id, "--scope", "session"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        text(&out)
    );
    assert!(w.pending().iter().any(|p| p["id"] == id));
    // With --yes both removals go on (the second without a hold).
    w.decide("approve", id, &["--scope", "session", "--yes"]);
    let out = r.finish(T);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!a.exists() && !b.exists());
}

#[test]
fn pending_names_a_session_that_does_not_answer_and_skips_dead_ones() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let r = w.run("live", &[&prot], &[], &format!("rm {}", f.display()));
    let h = w.wait_hold("live", T);
    // A socket nobody listens on any more (a supervisor that died): not a live session.
    drop(std::os::unix::net::UnixListener::bind(w.state.join("dead.sock")).unwrap());
    // A session that answers nonsense.
    let mute = std::os::unix::net::UnixListener::bind(w.state.join("mute.sock")).unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        for mut c in mute.incoming().take(2).flatten() {
            let _ = c.write_all(b"not json\n");
        }
    });
    for args in [&["pending", "--json"][..], &["pending"][..]] {
        let out = w.cmd(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains(h["id"].as_str().unwrap()), "{}", text(&out));
        assert!(
            stderr.contains("session mute did not answer"),
            "{}",
            text(&out)
        );
        assert!(!stderr.contains("dead"), "{}", text(&out));
    }
    server.join().unwrap();
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    r.finish(T);
    assert!(f.exists());
}
