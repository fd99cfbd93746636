//! `[commands] hold`: destructive commands wait at exec, through the real binary (seccomp
//! filter; the same path serves both backends).

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{privileged, text, World};
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
fn terraform_destroy_is_held_denied_fails_with_eperm_and_approved_runs() {
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
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The shell reports the exec error and gives 126, as for any command it cannot execute.
    assert!(
        s.contains("first=126") && s.contains("second=0"),
        "{}",
        text(&out)
    );
    assert!(
        e.contains("terraform: Operation not permitted"),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    let h = &holds[0];
    assert_eq!(h["kind"], "exec");
    assert_eq!(h["target"], "terraform destroy -auto-approve");
    assert_eq!(h["cmdline"], "terraform destroy -auto-approve");
    assert_eq!(h["rule"], "commands.hold: terraform destroy");
    assert_eq!(h["cwd"], t.w.work.display().to_string());
    let d = h["detail"].as_str().unwrap();
    assert!(
        d.contains(&format!("program {}/terraform", t.bin.display())),
        "{d}"
    );
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
        ("cmd-top-d", "deny", 126, 0),
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

/// The same command reached through other programs: each is held at terraform's own exec.
fn through(session: &str, how: &str, errors: &str) {
    if !privileged() {
        return;
    }
    let t = tf();
    std::os::unix::fs::symlink(t.bin.join("terraform"), t.bin.join("tf")).unwrap();
    common::chown(&t.bin.join("tf"));
    let (holds, out) = t.session(
        session,
        &format!("{how}; echo first=$?; {how}; echo second=$?"),
        &["deny", "approve"],
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("second=0"), "{}", text(&out));
    assert!(
        s.contains("first=126") || s.contains("first=1\n"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(errors),
        "{}",
        text(&out)
    );
    assert_eq!(t.ran(), vec!["destroy -auto-approve"], "{}", text(&out));
    assert_eq!(holds[0]["kind"], "exec");
    assert_eq!(holds[0]["rule"], "commands.hold: terraform destroy");
}

#[test]
fn held_through_bash_c() {
    through(
        "cmd-bash",
        "bash -c 'terraform destroy -auto-approve'",
        // bash blames the #! line when a script's exec fails with EPERM.
        "bin/terraform: /bin/sh: bad interpreter: Operation not permitted",
    );
}

#[test]
fn held_through_env() {
    through(
        "cmd-env",
        "env TF_LOG=1 terraform destroy -auto-approve",
        "terraform’: Operation not permitted",
    );
}

#[test]
fn held_through_a_symlink_with_another_name() {
    through(
        "cmd-link",
        "tf destroy -auto-approve",
        "Operation not permitted",
    );
}

#[test]
fn held_through_python_execvp() {
    through(
        "cmd-py",
        "python3 -c 'import os; os.execvp(\"terraform\", [\"terraform\", \"destroy\", \"-auto-approve\"])'",
        "PermissionError: [Errno 1] Operation not permitted",
    );
}

/// A thread rewriting the argument between the supervisor's look and the kernel's copy must not
/// get `terraform destroy` run: after one session-wide denial, thousands of racing execs.
///
/// Fails today (about 1,400 of 1,700 runs were `destroy`): the exec-tracepoint backstop that
/// closes this race is designed (README, "Destructive commands") but not built yet.
#[test]
#[ignore = "the check-then-exec race is not closed yet (README: Destructive commands)"]
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
