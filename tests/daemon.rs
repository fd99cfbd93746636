//! `sandbox daemon` and unprivileged `sandbox run` through it, with the real binary: each test
//! starts its own daemon (own state and log directories, numeric test groups, so /etc/group is
//! not touched), and runs clients as nobody with or without the member group.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{privileged, text, World, UID};

/// The group whose members may start sessions (`--group`).
const MEMBERS: u32 = 64000;
/// The approvers group (`--approvers-group`).
const APPROVERS: u32 = 64001;
/// An approver who is not root and not the session's user.
const APPROVER_UID: u32 = 65533;

const T: Duration = Duration::from_secs(60);

/// A unique session name (session cgroups and state are global on the host).
fn name(tag: &str) -> String {
    format!("dmn-{tag}-{}", std::process::id())
}

/// A daemon of one test; killed when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(w: &World) -> Daemon {
        let child = w
            .cmd(&[
                "daemon",
                "--group",
                &MEMBERS.to_string(),
                "--approvers-group",
                &APPROVERS.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn daemon");
        let sock = w.state.join("daemon.sock");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(t0.elapsed() < T, "the daemon did not listen at {sock:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of the binary that other users can execute (the build's may be under root's 0700
/// home).
fn client_bin(w: &World) -> PathBuf {
    let p = w.tmp.path().join("sandbox");
    if !p.exists() {
        // Copied by cp, not here: a write fd of ours could leak into a child another test
        // thread forks meanwhile and make exec of the copy fail with ETXTBSY.
        let tmp = w.tmp.path().join("sandbox.tmp");
        let st = Command::new("cp")
            .arg(common::bin())
            .arg(&tmp)
            .status()
            .expect("cp");
        assert!(st.success(), "copy the binary");
        std::fs::rename(&tmp, &p).expect("rename the binary");
    }
    p
}

/// `sandbox ARGS` as `uid` (gid `uid`) with supplementary `groups`, in the world's work dir.
fn as_user(w: &World, uid: u32, groups: &[u32], args: &[&str]) -> Command {
    let mut c = Command::new(client_bin(w));
    c.args(args)
        .env("SANDBOX_STATE_DIR", &w.state)
        .env("SANDBOX_LOG_DIR", &w.logs)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .current_dir(&w.work);
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: only credential system calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// `sandbox run --session S [--protect P] EXTRA -- sh -c SCRIPT` as nobody, a member.
fn run_as_member(
    w: &World,
    session: &str,
    protect: Option<&Path>,
    extra: &[&str],
    script: &str,
) -> Child {
    let mut a: Vec<String> = vec!["run".into(), "--session".into(), session.into()];
    if let Some(p) = protect {
        a.push("--protect".into());
        a.push(p.display().to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    as_user(w, UID, &[MEMBERS], &a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

fn finish(c: Child, timeout: Duration) -> Output {
    let pid = c.id();
    let t0 = Instant::now();
    let mut c = c;
    while c.try_wait().expect("try_wait").is_none() {
        if t0.elapsed() > timeout {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = c.wait_with_output().expect("wait");
            panic!("client did not finish within {timeout:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().expect("wait")
}

/// A file `prot/f` (owned by nobody) in a fresh directory; returns (dir, file).
fn precious(w: &World, tag: &str) -> (PathBuf, PathBuf) {
    let f = w.file(&format!("{tag}/f"), "precious");
    (w.work.join(tag), f)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_member_runs_a_held_rm_through_the_daemon_approved_then_denied() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    // Approved: the very same rm goes on.
    let (dir, f) = precious(&w, "prod-a");
    let s = name("approve");
    let c = run_as_member(&w, &s, Some(&dir), &[], &format!("rm {}", f.display()));
    let h = w.wait_hold(&s, T);
    assert_eq!(h["kind"], "unlink");
    assert_eq!(h["target"], f.display().to_string());
    w.decide("approve", h["id"].as_str().unwrap(), &[]);
    let o = finish(c, T);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!f.exists(), "approved rm did not remove the file");
    // The session ran as the member, not as root; its log is in the daemon's log directory.
    let log = w.log(&s);
    assert_eq!(log[0]["kind"], "session_start");
    assert_eq!(log[0]["uid"], UID);
    assert_eq!(log[0]["via_daemon"], true);
    assert!(log.iter().any(|l| l["kind"] == "session_end"));

    // Denied: rm fails with a permission error, the file is intact.
    let (dir, f) = precious(&w, "prod-d");
    let s = name("deny");
    let c = run_as_member(&w, &s, Some(&dir), &[], &format!("rm {}", f.display()));
    let h = w.wait_hold(&s, T);
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    let o = finish(c, T);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out(&o).contains("Operation not permitted"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
}

#[test]
fn the_command_gets_the_clients_stdio_cwd_environment_and_exit_status() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let s = name("stdio");
    let elsewhere = w.tmp.path().join("user-logs");
    let mut c = as_user(
        &w,
        UID,
        &[MEMBERS],
        &[
            "run",
            "--session",
            &s,
            "--",
            "sh",
            "-c",
            "id -u; echo \"groups=$(id -G)\"; pwd; echo \"v=$MY_VAR\"; read line; echo \"read $line\"; echo oops >&2; exit 7",
        ],
    );
    let mut child = c
        .env("MY_VAR", "from the client")
        // The user's own guard settings are not the session's.
        .env("SANDBOX_LOG_DIR", &elsewhere)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = finish(child, T);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(so.contains(&format!("{UID}\n")), "{}", text(&o));
    // The member group is the human's, not the command's.
    assert!(!so.contains(&MEMBERS.to_string()), "{}", text(&o));
    assert!(so.contains(&w.work.display().to_string()), "{}", text(&o));
    assert!(so.contains("v=from the client"), "{}", text(&o));
    assert!(so.contains("read hello"), "{}", text(&o));
    assert!(out(&o).contains("oops"), "{}", text(&o));
    assert!(w.logs.join(format!("{s}.jsonl")).exists());
    assert!(
        !elsewhere.exists(),
        "the user's SANDBOX_LOG_DIR was honoured"
    );
}

#[test]
fn a_non_member_is_refused_with_a_clear_message() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let o = as_user(&w, UID, &[], &["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let e = out(&o);
    assert!(
        e.contains("permission denied") && e.contains("sandbox"),
        "{}",
        text(&o)
    );
    // A member may not choose another user.
    let o = as_user(
        &w,
        UID,
        &[MEMBERS],
        &["run", "--user", "root", "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(out(&o).contains("--user"), "{}", text(&o));
}

#[test]
fn without_a_daemon_an_unprivileged_run_names_both_ways() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let o = as_user(&w, UID, &[MEMBERS], &["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    let e = out(&o);
    assert!(
        e.contains("sudo") && e.contains("sandbox.service"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_profile_the_user_cannot_read_is_not_read_for_them() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let secret = w.tmp.path().join("root-only");
    std::fs::create_dir(&secret).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let p = secret.join("p.toml");
    std::fs::write(&p, "description = \"root's\"\n").unwrap();
    let o = as_user(
        &w,
        UID,
        &[MEMBERS],
        &["run", "--profile", &p.display().to_string(), "--", "true"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(
        out(&o).to_lowercase().contains("permission denied"),
        "{}",
        text(&o)
    );
}

#[test]
fn approvers_decide_the_session_user_only_with_self_approve_and_never_from_inside() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let (dir, f) = precious(&w, "prod-s");
    let s = name("self");
    let c = run_as_member(&w, &s, Some(&dir), &[], &format!("rm {}", f.display()));
    let h = w.wait_hold(&s, T);
    let id = h["id"].as_str().unwrap().to_string();
    // The session's user may see its hold ...
    let o = as_user(&w, UID, &[MEMBERS], &["pending", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&id),
        "{}",
        text(&o)
    );
    let o = as_user(&w, UID, &[MEMBERS], &["sessions", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sessions json");
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["session"] == s.as_str())
        .expect("own session listed");
    assert_eq!(me["pending"], 1);
    assert_eq!(me["uid"], UID);
    assert!(me["started"].is_string());
    // ... but not decide it (the default profile does not allow self-approval).
    let o = as_user(&w, UID, &[MEMBERS], &["approve", &id])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out(&o).contains("self_approve"), "{}", text(&o));
    // Another user who is neither root nor an approver may not even list it.
    let o = as_user(&w, APPROVER_UID, &[MEMBERS], &["approve", &id])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    // A process inside the session may not decide, even as root and an approver.
    let cg = w.log(&s)[0]["cgroup"].as_str().unwrap().to_string();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {cg}/cgroup.procs && exec {} approve {id}",
            common::bin()
        ))
        .env("SANDBOX_STATE_DIR", &w.state)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out(&o).contains("inside a sandbox session"), "{}", text(&o));
    assert!(f.exists(), "a refused decision let the rm go on");
    // An approver (not root) may.
    let o = as_user(&w, APPROVER_UID, &[APPROVERS], &["deny", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = finish(c, T);
    assert!(out(&o).contains("Operation not permitted"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    let log = w.log(&s);
    let d = log
        .iter()
        .find(|l| l["kind"] == "decision")
        .expect("decision logged");
    assert!(d.to_string().contains("approver uid 65533"), "{d}");

    // With `[decisions] self_approve = true` the session's user may decide.
    let prof = w.file("self.toml", "[decisions]\nself_approve = true\n");
    let (dir, f) = precious(&w, "prod-s2");
    let s = name("self2");
    let c = run_as_member(
        &w,
        &s,
        Some(&dir),
        &["--profile", &prof.display().to_string()],
        &format!("rm {}", f.display()),
    );
    let h = w.wait_hold(&s, T);
    let o = as_user(&w, UID, &[MEMBERS], &["approve", h["id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = finish(c, T);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!f.exists());
}

#[test]
fn sigkill_of_the_daemon_during_a_hold_ends_the_session_and_keeps_the_file() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let mut d = Daemon::start(&w);
    let (dir, f) = precious(&w, "prod-k");
    let s = name("kill");
    let c = run_as_member(
        &w,
        &s,
        Some(&dir),
        &[],
        &format!("rm {}; echo after", f.display()),
    );
    let h = w.wait_hold(&s, T);
    let held_pid = h["pid"].as_u64().unwrap();
    let cg = PathBuf::from(w.log(&s)[0]["cgroup"].as_str().unwrap());
    // The hold is in the log before anyone decides.
    assert!(w.log(&s).iter().any(|l| l["kind"] == "hold"));
    d.kill();
    let o = finish(c, T);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("after"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{held_pid}")).exists() || cg.exists() {
        assert!(
            t0.elapsed() < T,
            "the session's processes outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A daemon started again finds nothing to add: the session recorded its own end.
    let _d2 = Daemon::start(&w);
    let log = w.log(&s);
    assert!(log.iter().any(|l| l["kind"] == "hold"), "{log:?}");
    assert!(
        log.iter().any(|l| l["kind"] == "session_ending"
            && l["reason"].as_str().unwrap_or("").contains("daemon")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l["kind"] == "session_end").count(),
        1,
        "{log:?}"
    );
    let v = w
        .cmd(&["log", "--session", &s, "--verify"])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn a_restarted_daemon_records_the_end_of_a_session_whose_supervisor_was_killed() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let d = Daemon::start(&w);
    let (dir, f) = precious(&w, "prod-r");
    let s = name("recover");
    let c = run_as_member(&w, &s, Some(&dir), &[], &format!("rm {}", f.display()));
    let _h = w.wait_hold(&s, T);
    let sup = w.log(&s)[0]["supervisor_pid"].as_u64().unwrap();
    // SAFETY: killing the session process outright: no end record of its own.
    unsafe { libc::kill(sup as i32, libc::SIGKILL) };
    let o = finish(c, T);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    drop(d);
    let _d2 = Daemon::start(&w);
    let log = w.log(&s);
    let end = log
        .iter()
        .find(|l| l["kind"] == "session_end")
        .expect("an end record");
    assert_eq!(end["recovered"], true, "{log:?}");
    let v = w
        .cmd(&["log", "--session", &s, "--verify"])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn ctrl_c_to_the_client_reaches_the_command_and_its_status_comes_back() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let s = name("sigint");
    let mut c = run_as_member(
        &w,
        &s,
        None,
        &[],
        "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done",
    );
    // Wait until the command runs (its stdout is the client's pipe).
    let mut stdout = c.stdout.take().unwrap();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    use std::io::Read;
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let mut b = [0u8; 64];
        let n = stdout.read(&mut b).unwrap();
        assert!(n > 0 && t0.elapsed() < T, "no ready line");
        seen.extend_from_slice(&b[..n]);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let o = finish(c, T);
    assert_eq!(o.status.code(), Some(42), "{}", text(&o));
    assert!(String::from_utf8_lossy(&rest).contains("got-int"));
}

#[test]
fn fifty_concurrent_sessions_through_the_daemon_are_each_held_and_decided() {
    if !privileged() {
        return;
    }
    const N: usize = 50;
    let w = World::new();
    let _d = Daemon::start(&w);
    let mut runs = Vec::new();
    for i in 0..N {
        let (dir, f) = precious(&w, &format!("many{i}"));
        let s = name(&format!("m{i}"));
        let c = run_as_member(
            &w,
            &s,
            Some(&dir),
            &["--net", "none"],
            &format!("rm {}", f.display()),
        );
        runs.push((s, f, c));
    }
    let t0 = Instant::now();
    let mut decided = std::collections::HashSet::new();
    while decided.len() < N {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "only {} of {N} holds decided",
            decided.len()
        );
        for h in w.pending() {
            let s = h["session"].as_str().unwrap().to_string();
            let Some(i) = runs.iter().position(|r| r.0 == s) else {
                continue;
            };
            if decided.insert(i) {
                let verb = if i % 2 == 0 { "approve" } else { "deny" };
                w.decide(verb, h["id"].as_str().unwrap(), &[]);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, (_, f, c)) in runs.into_iter().enumerate() {
        let o = finish(c, T);
        if i % 2 == 0 {
            assert_eq!(o.status.code(), Some(0), "session {i}: {}", text(&o));
            assert!(!f.exists(), "session {i}: approved rm left the file");
        } else {
            assert_ne!(o.status.code(), Some(0), "session {i}: {}", text(&o));
            assert_eq!(
                std::fs::read_to_string(&f).unwrap(),
                "precious",
                "session {i}"
            );
        }
    }
    eprintln!("{N} sessions held and decided in {:?}", t0.elapsed());
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing and CI is set (scripts/setup.sh installs systemd)"
        );
        eprintln!("SKIP: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&units).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // The units name the installed binary; here the one under test stands in for it.
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("/usr/local/bin/sandbox", common::bin());
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "sandbox-agent@.service",
            "sandbox.service",
            "sandbox.socket"
        ],
        "the units of dist/systemd"
    );
    // The template is verified as an instance.
    std::fs::copy(
        dir.path().join("sandbox-agent@.service"),
        dir.path().join("sandbox-agent@job.service"),
    )
    .unwrap();
    for unit in [
        "sandbox.socket",
        "sandbox.service",
        "sandbox-agent@job.service",
    ] {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(unit))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "systemd-analyze verify {unit}: {}",
            text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.lines()
                .any(|l| l.contains(unit) || l.contains("sandbox")),
            "systemd-analyze verify {unit} warned: {err}"
        );
    }
}

#[test]
fn a_client_killed_during_a_hold_ends_its_session() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let (dir, f) = precious(&w, "prod-c");
    let s = name("client");
    let mut c = run_as_member(
        &w,
        &s,
        Some(&dir),
        &[],
        &format!("rm {}; echo after", f.display()),
    );
    let h = w.wait_hold(&s, T);
    let held_pid = h["pid"].as_u64().unwrap();
    let cg = PathBuf::from(w.log(&s)[0]["cgroup"].as_str().unwrap());
    c.kill().unwrap();
    c.wait().unwrap();
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{held_pid}")).exists() || cg.exists() {
        assert!(t0.elapsed() < T, "the session outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    // The end record comes last, after the cgroup is gone.
    while !w.log(&s).iter().any(|l| l["kind"] == "session_end") {
        assert!(t0.elapsed() < T, "no session_end: {:?}", w.log(&s));
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = w.log(&s);
    assert!(
        log.iter().any(|l| l["kind"] == "session_ending"
            && l["reason"].as_str().unwrap_or("").contains("client")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l["kind"] == "decision" && l["decision"] == "deny"),
        "{log:?}"
    );
}

#[test]
fn sessions_through_the_daemon_take_a_preloaded_exec_observer_that_still_holds_commands() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    // The daemon loads its spare in the background: wait until a session gets one.
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        let s = name(&format!("pre{i}"));
        let o = finish(run_as_member(&w, &s, None, &[], "true"), T);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        if w.log(&s)[0]["exec_observer_preloaded"] == true {
            break;
        }
        assert!(t0.elapsed() < T, "no session got a preloaded exec observer");
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Wait for the next spare, then a command hold through it: exec events and the stop at
    // exec work with the observer the daemon loaded.
    let prog = w.file("guard-held-prog", "#!/bin/sh\necho ran\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prof = w.file("held.toml", "[commands]\nhold = [\"guard-held-prog\"]\n");
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        let s = name(&format!("prehold{i}"));
        let c = run_as_member(
            &w,
            &s,
            None,
            &["--profile", &prof.display().to_string()],
            &format!("{}; echo status=$?", prog.display()),
        );
        let h = w.wait_hold(&s, T);
        assert_eq!(h["kind"], "exec", "{h}");
        w.decide("deny", h["id"].as_str().unwrap(), &[]);
        let o = finish(c, T);
        let so = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!so.contains("ran"), "{}", text(&o));
        assert!(so.contains("status=137"), "{}", text(&o));
        let log = w.log(&s);
        assert!(log.iter().any(|l| l["kind"] == "exec"), "{log:?}");
        if log[0]["exec_observer_preloaded"] == true {
            break;
        }
        assert!(
            t0.elapsed() < T,
            "no held session got a preloaded exec observer"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_process_inside_a_session_cannot_start_sessions_through_the_daemon() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let _d = Daemon::start(&w);
    let s = name("outer");
    let mut outer = run_as_member(&w, &s, None, &[], "sleep 60");
    let t0 = Instant::now();
    let cg = loop {
        if let Some(c) = std::fs::read_to_string(w.logs.join(format!("{s}.jsonl")))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .and_then(|v| v["cgroup"].as_str().map(str::to_string))
        {
            break c;
        }
        assert!(t0.elapsed() < T, "the outer session did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    // A member's process moved into the session's cgroup (as if it ran inside) asks the daemon.
    let bin = client_bin(&w);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {cg}/cgroup.procs && exec setpriv --reuid {UID} --regid {UID} --groups {MEMBERS} {} run -- true",
            bin.display()
        ))
        .env("SANDBOX_STATE_DIR", &w.state)
        .current_dir(&w.work)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o));
    assert!(out(&o).contains("inside a sandbox session"), "{}", text(&o));
    let _ = outer.kill();
    let _ = outer.wait();
}

#[test]
fn ld_preload_from_the_client_reaches_the_command_and_no_root_process() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let marks = w.tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let lib = w.tmp.path().join("preload_mark.so");
    common::cc(
        Path::new("tests/progs/lib/preload_mark.c"),
        &lib,
        &[
            "-shared",
            "-fPIC",
            &format!("-DMARK_DIR=\"{}\"", marks.display()),
        ],
    );
    let _d = Daemon::start(&w);
    let s = name("preload");
    // The member's client sets LD_PRELOAD (and LD_LIBRARY_PATH, GCONV_PATH, ...) for the daemon
    // to pass on: the daemon, the session's supervisor and its helpers run as root.
    let child = as_user(
        &w,
        UID,
        &[MEMBERS],
        &["run", "--session", &s, "--", "sh", "-c", "true"],
    )
    .env("LD_PRELOAD", &lib)
    .env("LD_LIBRARY_PATH", w.tmp.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let o = finish(child, T);
    assert!(o.status.success(), "{}", text(&o));
    let names: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Not vacuous: the command itself loaded the library, as the user.
    assert!(
        names.iter().any(|n| n == &format!("{UID}-sh")),
        "the command did not get LD_PRELOAD: {names:?}"
    );
    assert!(
        names.iter().all(|n| !n.starts_with("0-")),
        "a root process loaded the client's LD_PRELOAD: {names:?}"
    );
}
