//! `[commands] hold`: destructive commands wait at exec, through the real binary. The exec
//! tracepoint stops a program a rule names before its first instruction; the same path serves
//! both backends (an LSM variant runs where BPF LSM programs load).

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{lsm_available, privileged, text, World};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A world with a `terraform` stand-in in `bin/` that appends its arguments to `marker` when it
/// runs, and a profile holding `terraform destroy` and `terraform apply -destroy`.
struct Tf {
    w: World,
    bin: PathBuf,
    marker: PathBuf,
    profile: String,
}

fn tf() -> Tf {
    let w = World::new();
    let marker = w.work.join("marker");
    let bin = w.dir("bin");
    let script = w.file(
        "bin/terraform",
        &format!("#!/bin/sh\necho \"$*\" >> {}\n", marker.display()),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = w.work.join("p.toml");
    std::fs::write(
        &p,
        "[commands]\nhold = [\"terraform destroy\", \"terraform apply -destroy\"]\n",
    )
    .unwrap();
    Tf {
        profile: p.display().to_string(),
        w,
        bin,
        marker,
    }
}

impl Tf {
    fn ran(&self) -> Vec<String> {
        std::fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Runs `sh -c SCRIPT` (with `bin/` first on PATH) and decides each hold, in turn, with the
    /// verbs given; returns the holds and the output.
    fn session(
        &self,
        session: &str,
        script: &str,
        verbs: &[&str],
    ) -> (Vec<Value>, std::process::Output) {
        // Only the stand-in: a real terraform may be installed in /usr/local/bin.
        let script = format!("export PATH={}:/usr/bin:/bin; {script}", self.bin.display());
        let r = self.w.run(
            session,
            &[],
            &[
                "--profile",
                &self.profile,
                "--net",
                "none",
                "--decision-timeout",
                "60s",
            ],
            &script,
        );
        let mut holds = Vec::new();
        for verb in verbs {
            let h = wait_new_hold(&self.w, session, &holds);
            self.w
                .decide(verb, h["id"].as_str().unwrap(), &["--scope", "once"]);
            holds.push(h);
        }
        (holds, r.finish(T))
    }
}

fn wait_new_hold(w: &World, session: &str, seen: &[Value]) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(h) = w
            .pending()
            .into_iter()
            .find(|h| h["session"] == session && !seen.iter().any(|s| s["id"] == h["id"]))
        {
            return h;
        }
        assert!(t0.elapsed() < T, "no new hold for {session}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn holds_in_log(w: &World, session: &str) -> usize {
    w.log(session)
        .iter()
        .filter(|l| l["kind"] == "hold")
        .count()
}

#[test]
fn terraform_destroy_is_held_denied_is_killed_and_approved_runs() {
    if !privileged() {
        return;
    }
    let t = tf();
    let (holds, out) = t.session(
        "cmd-sh",
        "terraform destroy -auto-approve; echo first=$?; terraform destroy -auto-approve; echo second=$?",
        &["deny", "approve"],
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Denied: killed by SIGKILL before its first instruction; the shell reports 128 + 9.
    assert!(
        s.contains("first=137") && s.contains("second=0"),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    let h = &holds[0];
    let prog = format!("{}/terraform", t.bin.display());
    assert_eq!(h["kind"], "exec");
    // A script: the kernel replaced argv[0] by the interpreter; the script's path stands first.
    assert_eq!(h["target"], format!("{prog} destroy -auto-approve"));
    assert_eq!(h["cmdline"], h["target"]);
    assert_eq!(h["rule"], "commands.hold: terraform destroy");
    assert_eq!(h["cwd"], t.w.work.display().to_string());
    let d = h["detail"].as_str().unwrap();
    assert!(d.contains(&format!("program {prog} (a script)")), "{d}");
    assert!(
        d.contains("(pid 1)") && d.contains("sh -c export PATH"),
        "{d}"
    );
    assert_eq!(holds_in_log(&t.w, "cmd-sh"), 2);
}

#[test]
fn terraform_plan_and_other_programs_are_not_held() {
    if !privileged() {
        return;
    }
    let t = tf();
    let (_, out) = t.session(
        "cmd-plan",
        "terraform plan && terraform apply -auto-approve && terraform -chdir=x plan -destroy && ls / >/dev/null && echo ok",
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        text(&out)
    );
    assert_eq!(
        t.ran(),
        vec!["plan", "apply -auto-approve", "-chdir=x plan -destroy"]
    );
    assert_eq!(holds_in_log(&t.w, "cmd-plan"), 0);
}

#[test]
fn the_sandboxed_command_itself_is_held_at_its_first_exec() {
    if !privileged() {
        return;
    }
    let t = tf();
    let prog = t.bin.join("terraform").display().to_string();
    for (session, verb, code, ran) in [
        ("cmd-top-d", "deny", 137, 0),
        ("cmd-top-a", "approve", 0, 1),
    ] {
        let r = t.w.spawn(
            &[
                "run",
                "--user",
                "65534",
                "--session",
                session,
                "--profile",
                &t.profile,
                "--net",
                "none",
                "--",
                &prog,
                "apply",
                "-destroy",
            ],
            session,
        );
        let h = wait_new_hold(&t.w, session, &[]);
        assert_eq!(h["rule"], "commands.hold: terraform apply -destroy");
        t.w.decide(verb, h["id"].as_str().unwrap(), &[]);
        let out = r.finish(T);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        assert_eq!(t.ran().len(), ran, "{}", text(&out));
    }
}

/// The same command reached through other programs: each is held at terraform's own exec and,
/// denied, killed there (the program that exec'd is gone: its parent sees 137).
fn through(session: &str, how: &str) {
    if !privileged() {
        return;
    }
    let t = tf();
    let (holds, out) = t.session(
        session,
        &format!("{how}; echo first=$?; {how}; echo second=$?"),
        &["deny", "approve"],
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("first=137") && s.contains("second=0"),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    assert_eq!(holds[0]["kind"], "exec");
    assert_eq!(holds[0]["rule"], "commands.hold: terraform destroy");
}

#[test]
fn held_through_bash_c() {
    through("cmd-bash", "bash -c 'terraform destroy -auto-approve'");
}

#[test]
fn held_through_env() {
    through("cmd-env", "env TF_LOG=1 terraform destroy -auto-approve");
}

/// A symbolic link of another name to the held program: `tf destroy -auto-approve` runs the
/// stand-in, a `#!` script (`script`) or a compiled program. Denied, then approved.
fn through_a_link(session: &str, script: bool) {
    if !privileged() {
        return;
    }
    let t = tf();
    let prog = t.bin.join("terraform");
    if !script {
        std::fs::remove_file(&prog).unwrap();
        std::fs::copy(common::prog("tf_bin"), &prog).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        common::chown(&prog);
    }
    std::os::unix::fs::symlink(&prog, t.bin.join("tf")).unwrap();
    common::chown(&t.bin.join("tf"));
    let how = "tf destroy -auto-approve";
    let (holds, out) = t.session(
        session,
        &format!("{how}; echo first=$?; {how}; echo second=$?; tf plan; echo third=$?"),
        &["deny", "approve"],
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("first=137") && s.contains("second=0") && s.contains("third=0"),
        "{}",
        text(&out)
    );
    assert_eq!(
        t.ran(),
        vec!["destroy -auto-approve", "plan"],
        "{}",
        text(&out)
    );
    assert_eq!(holds_in_log(&t.w, session), 2, "{}", text(&out));
    assert_eq!(holds[0]["rule"], "commands.hold: terraform destroy");
    // A script's own argv[0] is gone (the kernel passes the path it was given instead).
    assert!(
        holds[0]["target"]
            .as_str()
            .unwrap()
            .ends_with("tf destroy -auto-approve"),
        "{}",
        holds[0]
    );
    assert!(
        holds[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("program {}", prog.display())),
        "{}",
        holds[0]
    );
}

/// The `#!` script through a link: the kernel side names the script's own file, which the
/// exec let go (the executable is the interpreter).
#[test]
fn held_through_a_symlink_with_another_name() {
    through_a_link("cmd-link", true);
}

/// A compiled program through a link: the kernel knows the executable file by its own name.
#[test]
fn a_binary_is_held_through_a_symlink_with_another_name() {
    through_a_link("cmd-link-bin", false);
}

#[test]
fn held_through_python_execvp() {
    through(
        "cmd-py",
        "python3 -c 'import os; os.execvp(\"terraform\", [\"terraform\", \"destroy\", \"-auto-approve\"])'",
    );
}

/// A thread rewriting the argument while the exec copies it must not get `terraform destroy`
/// run: after one session-wide denial, thousands of racing execs. (The check reads the new
/// image's own copy, which is what the program sees.)
#[test]
fn an_argument_rewritten_during_the_check_does_not_run_a_held_command() {
    if !privileged() {
        return;
    }
    let t = tf();
    let race = common::prog("exec_race");
    let prog = t.bin.join("terraform");
    let script = format!(
        "{} {} 1; {} {} 3000",
        race.display(),
        prog.display(),
        race.display(),
        prog.display()
    );
    let r = t.w.run(
        "cmd-race",
        &[],
        &["--profile", &t.profile, "--net", "none"],
        &script,
    );
    // The first hold (if the first exec read "destroy") or the first of the long run: deny it
    // for the whole session, so later reads of "destroy" fail at once.
    let h = wait_new_hold(&t.w, "cmd-race", &[]);
    t.w.decide("deny", h["id"].as_str().unwrap(), &["--scope", "session"]);
    let out = r.finish(Duration::from_secs(300));
    let ran = t.ran();
    let destroyed = ran.iter().filter(|l| l.as_str() == "destroy").count();
    eprintln!(
        "race: {} runs, {} of them destroy; {}",
        ran.len(),
        destroyed,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert_eq!(destroyed, 0, "a held command ran: {}", text(&out));
}

/// A SIGCONT from another process of the sandbox (to the pid, to everyone) does not release a
/// command stopped for a check; approval does.
#[test]
fn sigcont_from_the_sandbox_does_not_release_a_held_command() {
    if !privileged() {
        return;
    }
    let t = tf();
    let r = t.w.run(
        "cmd-cont",
        &[],
        &["--profile", &t.profile, "--net", "none", "--decision-timeout", "60s"],
        &format!(
            "export PATH={}:/usr/bin:/bin; terraform destroy -auto-approve & p=$!; sleep 1; \
             kill -CONT $p; echo cont=$?; kill -CONT -1; echo all=$?; \
             python3 -c 'import os,signal,sys; os.kill(int(sys.argv[1]), signal.SIGCONT)' $p; echo py=$?; \
             touch {}/signalled; wait $p; echo rc=$?",
            t.bin.display(),
            t.w.work.display()
        ),
    );
    let h = wait_new_hold(&t.w, "cmd-cont", &[]);
    let flag = t.w.work.join("signalled");
    let t0 = Instant::now();
    while !flag.exists() {
        assert!(t0.elapsed() < T, "the script never got past its kills");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.ran().is_empty(), "released by SIGCONT: {:?}", t.ran());
    t.w.decide("approve", h["id"].as_str().unwrap(), &[]);
    let out = r.finish(T);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("cont=1") && s.contains("all=1") && s.contains("py=1") && s.contains("rc=0"),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
}

/// Programs no rule names are not stopped at exec at all (the audit log's exec lines say which
/// were); job control's SIGCONT to a stopped process still works in such a session. (The pause
/// lets the shell take the SIGCHLD of the stop first: a signal that arrives before the
/// supervisor has received the SIGCONT call interrupts it, EINTR, as for any notified call.)
#[test]
fn unrelated_execs_are_not_stopped_and_job_control_works() {
    if !privileged() {
        return;
    }
    let t = tf();
    // An unrelated `#!` script: the kernel side names its file and lets it run.
    let other = t.w.file("bin/other", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, out) = t.session(
        "cmd-free",
        "for i in 1 2 3; do /bin/true; other; done; terraform plan; \
         sleep 5 & p=$!; kill -STOP $p; sleep 0.3; kill -CONT $p; echo cont=$?; kill $p; echo ok",
        &[],
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("cont=0") && s.contains("ok"), "{}", text(&out));
    let execs: Vec<Value> =
        t.w.log("cmd-free")
            .into_iter()
            .filter(|l| l["kind"] == "exec")
            .collect();
    let trues: Vec<&Value> = execs
        .iter()
        .filter(|e| e["filename"] == "/bin/true")
        .collect();
    assert_eq!(trues.len(), 3, "{execs:?}");
    assert!(
        trues.iter().all(|e| e.get("stopped").is_none()),
        "{execs:?}"
    );
    let others: Vec<&Value> = execs
        .iter()
        .filter(|e| e["filename"].as_str().unwrap_or("").ends_with("/other"))
        .collect();
    assert_eq!(others.len(), 3, "{execs:?}");
    assert!(
        others.iter().all(|e| e.get("stopped").is_none()),
        "{execs:?}"
    );
    let tf: Vec<&Value> = execs
        .iter()
        .filter(|e| e["filename"].as_str().unwrap_or("").ends_with("/terraform"))
        .collect();
    assert_eq!(tf.len(), 1, "{execs:?}");
    assert_eq!(tf[0]["stopped"], true);
    assert_eq!(t.ran(), vec!["plan"]);
    assert_eq!(holds_in_log(&t.w, "cmd-free"), 0);
}

#[test]
fn lsm_terraform_destroy_is_held_denied_is_killed_and_approved_runs() {
    if !lsm_available() {
        return;
    }
    let t = tf();
    let script = format!(
        "export PATH={}:/usr/bin:/bin; terraform destroy -auto-approve; echo first=$?; \
         terraform destroy -auto-approve; echo second=$?",
        t.bin.display()
    );
    let r = t.w.run(
        "cmd-lsm",
        &[],
        &[
            "--backend",
            "lsm",
            "--profile",
            &t.profile,
            "--net",
            "none",
            "--decision-timeout",
            "60s",
        ],
        &script,
    );
    let mut holds = Vec::new();
    for verb in ["deny", "approve"] {
        let h = wait_new_hold(&t.w, "cmd-lsm", &holds);
        t.w.decide(verb, h["id"].as_str().unwrap(), &["--scope", "once"]);
        holds.push(h);
    }
    let out = r.finish(T);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("first=137") && s.contains("second=0"),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    assert_eq!(holds[0]["kind"], "exec");
}

/// The kernel's own SIGCONT to a process group that becomes orphaned (POSIX job control: SIGHUP,
/// then SIGCONT, when the last parent outside the group exits) does not release a held command
/// either: it waits in a frozen cgroup, which no signal but SIGKILL moves. (A new session, so
/// that the reaper, the sandbox's init, does not keep the group from being orphaned.)
#[test]
fn an_orphaned_process_group_does_not_release_a_held_command() {
    if !privileged() {
        return;
    }
    let t = tf();
    let w = t.w.work.display().to_string();
    let marker = t.marker.display().to_string();
    // The group becomes orphaned 0.5 s after `go`: long after the move into the frozen cgroup.
    std::fs::write(t.w.work.join("go"), "").unwrap();
    let r = t.w.run(
        "cmd-orphan",
        &[],
        &["--profile", &t.profile, "--net", "none", "--decision-timeout", "60s"],
        &format!(
            "export PATH={}:/usr/bin:/bin; {} {w} 0 terraform destroy -auto-approve; i=0; while [ ! -s {marker} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo done",
            t.bin.display(),
            common::prog("orphan_exec").display(),
        ),
    );
    let h = wait_new_hold(&t.w, "cmd-orphan", &[]);
    let flag = t.w.work.join("orphaned");
    let t0 = Instant::now();
    while !flag.exists() {
        assert!(t0.elapsed() < T, "the parent never exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(t.ran().is_empty(), "released as an orphan: {:?}", t.ran());
    t.w.decide("approve", h["id"].as_str().unwrap(), &[]);
    let out = r.finish(T);
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
}

/// A SIGCONT from the kernel in the window between the stop at exec and the supervisor's move
/// into the frozen cgroup: the supervisor is stopped (from outside) so that the window stays
/// open, and the held command's process group becomes orphaned inside it (its parent, session
/// leader of its own, exits; `SIGHUP` is ignored). With `reaper_ignores_sigchld` the orphan's
/// new parent is a subreaper that ignores `SIGCHLD`. Returns the world, the marker's lines
/// while the supervisor was still stopped, and the hold seen after it went on, if any.
fn kernel_sigcont_in_the_window(
    session: &str,
    reaper_ignores_sigchld: bool,
) -> (Tf, Vec<String>, Option<Value>, std::process::Output) {
    let t = tf();
    let w = t.w.work.display().to_string();
    let prog = common::prog("orphan_exec");
    let r = t.w.run(
        session,
        &[],
        &["--profile", &t.profile, "--net", "none", "--decision-timeout", "60s"],
        &format!(
            "export PATH={}:/usr/bin:/bin; {} {w} {} terraform destroy -auto-approve; i=0; while [ ! -e {w}/done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo done",
            t.bin.display(),
            prog.display(),
            u8::from(reaper_ignores_sigchld),
        ),
    );
    // Waits for the helper to write `f`; a session that ends before is a failure, said at once.
    let wait_for = |mut r: common::Running, f: &str| -> common::Running {
        let p = t.w.work.join(f);
        let t0 = Instant::now();
        while !p.exists() {
            if let Ok(Some(_)) = r.child.try_wait() {
                panic!("the session ended before {f}: {}", text(&r.finish(T)));
            }
            assert!(t0.elapsed() < T, "{f} never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        r
    };
    let r = wait_for(r, "ready");
    // The supervisor (the `sandbox run` process) stops: it hears of no exec until it goes on.
    // (Nothing below needs it: no call the session makes from here is notified; orphan_exec
    // opens its files with O_APPEND, which truncates nothing.)
    let supervisor = nix::unistd::Pid::from_raw(r.child.id() as i32);
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::fs::write(t.w.work.join("go"), "").unwrap();
    let r = wait_for(r, "orphaned");
    std::thread::sleep(Duration::from_millis(700));
    let ran = t.ran();
    nix::sys::signal::kill(supervisor, nix::sys::signal::Signal::SIGCONT).unwrap();
    let hold = if ran.is_empty() {
        let h = wait_new_hold(&t.w, session, &[]);
        t.w.decide("approve", h["id"].as_str().unwrap(), &[]);
        Some(h)
    } else {
        None
    };
    let t0 = Instant::now();
    while hold.is_some() && t.ran().is_empty() {
        assert!(t0.elapsed() < T, "the command never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(t.w.work.join("done"), "").unwrap();
    let out = r.finish(T);
    (t, ran, hold, out)
}

/// The orphaned group's `SIGCONT` wakes the stopped command; on its way back to user mode it
/// reports `CLD_CONTINUED` to its new parent (the session's init), and the exec observer's
/// signal program stops it again right there: it runs nothing until approved.
#[test]
fn a_kernel_sigcont_before_the_check_does_not_release_a_held_command() {
    if !privileged() {
        return;
    }
    let (t, ran, hold, out) = kernel_sigcont_in_the_window("cmd-window", false);
    assert!(
        ran.is_empty(),
        "ran before the check: {ran:?}\n{}",
        text(&out)
    );
    let hold = hold.unwrap();
    assert_eq!(hold["rule"], "commands.hold: terraform destroy");
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    assert!(
        !t.w.log("cmd-window")
            .iter()
            .any(|l| l["kind"] == "exec_continued"),
        "{}",
        text(&out)
    );
}

/// The limit of the above: where the new parent ignores `SIGCHLD` (a subreaper of the agent's),
/// no report is made and the command runs before the check (here the supervisor was stopped;
/// normally only until the supervisor freezes and kills it). The supervisor records it.
#[test]
fn a_kernel_sigcont_the_guard_cannot_undo_is_recorded() {
    if !privileged() {
        return;
    }
    let (t, ran, hold, out) = kernel_sigcont_in_the_window("cmd-window-ign", true);
    assert_eq!(ran, vec!["destroy -auto-approve"], "{}", text(&out));
    assert!(hold.is_none());
    let log = t.w.log("cmd-window-ign");
    let rec = log
        .iter()
        .find(|l| l["kind"] == "exec_continued")
        .unwrap_or_else(|| panic!("no exec_continued record: {log:?}\n{}", text(&out)));
    assert_eq!(rec["killed"], false, "{rec}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was continued by the kernel"),
        "{}",
        text(&out)
    );
}
