//! Profiles enforced in a real session (seccomp backend on this host).

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{privileged, text, World};

const T: Duration = Duration::from_secs(60);

fn profile(w: &World, body: &str) -> String {
    let p = w.work.join("p.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn a_profile_hides_protects_and_confines() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let secret = w.file("secret/key", "s3cr3t");
    let ro = w.file("ro/file", "ro");
    w.dir("ro/rw");
    let esc = common::prog("escapes");
    let p = profile(
        &w,
        &format!(
            r#"description = "test"
[risk]
must_survive = ["the test data"]
rollback = "none needed"
[files]
hidden = ["{secret}"]
read_only = ["{ro}"]
writable = ["{rw}"]
protect = ["**/*.tfstate"]
[process]
env_drop = ["GUARD_TEST_SECRET"]
"#,
            secret = secret.parent().unwrap().display(),
            ro = ro.parent().unwrap().display(),
            rw = w.work.join("ro/rw").display()
        ),
    );
    let script = format!(
        "cat {secret} 2>/dev/null && echo SECRET-READ; ls {sdir} | wc -l; \
         echo x > {ro} 2>/dev/null && echo RO-WRITTEN; echo y > {rw}/new && echo rw-ok; \
         {esc}; echo env=${{GUARD_TEST_SECRET:-absent}}; cat $SANDBOX_POLICY; \
         grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
        secret = secret.display(),
        sdir = secret.parent().unwrap().display(),
        ro = ro.display(),
        rw = w.work.join("ro/rw").display(),
        esc = esc.display(),
    );
    let out = w
        .cmd(&[
            "run",
            "--user",
            "nobody",
            "--session",
            "prof",
            "--profile",
            &p,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("GUARD_TEST_SECRET", "leak")
        .current_dir(&w.work)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!s.contains("SECRET-READ"), "{s}");
    assert!(
        s.lines().any(|l| l == "0"),
        "hidden dir listed entries: {s}"
    );
    assert!(!s.contains("RO-WRITTEN"), "{s}");
    assert!(s.contains("rw-ok"), "{s}");
    for name in [
        "bpf",
        "mount",
        "keyctl",
        "perf_event_open",
        "io_uring_setup",
        "ptrace_parent",
        "unshare_user",
        "setns",
    ] {
        assert!(
            s.contains(&format!("{name}=1\n")),
            "{name} not refused with EPERM: {s}"
        );
    }
    assert!(s.contains("env=absent"), "{s}");
    assert!(
        s.contains("the test data") && s.contains("none needed"),
        "{s}"
    );
    assert!(
        s.contains("NoNewPrivs:\t1") && s.contains("CapEff:\t0000000000000000"),
        "{s}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must survive: the test data"), "{err}");
    let start = &w.log("prof")[0];
    assert_eq!(start["risk"]["rollback"], "none needed");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cr3t");
}

#[test]
fn name_patterns_hold_matching_files_anywhere_and_nothing_else() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let tf = w.file("deep/er/x.tfstate", "state");
    let txt = w.file("deep/er/x.txt", "text");
    let p = profile(&w, "[files]\nprotect = [\"**/*.tfstate\"]\n");
    let mut r = w.run(
        "pat",
        &[],
        &["--profile", &p],
        &format!("rm {}; rm {}; echo done", txt.display(), tf.display()),
    );
    let h = w.wait_hold("pat", T);
    assert_eq!(h["target"], tf.display().to_string());
    assert!(h["rule"].as_str().unwrap().contains("*.tfstate"), "{h}");
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    let out = r.child.wait().unwrap();
    assert!(out.success());
    assert!(tf.exists());
    assert!(!txt.exists());
}

/// With name patterns the supervisor performs every removal, keeping the process's identity
/// between removals: it must still be the process's (not root's), before and after a hold.
#[test]
fn removals_performed_under_name_patterns_keep_the_process_permissions() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let mine: Vec<_> = (0..3).map(|i| w.file(&format!("t/f{i}"), "mine")).collect();
    let tf = w.file("t/x.tfstate", "state");
    // Root's directory, world-readable: the test user may not remove from it.
    let roots = w.work.join("roots");
    std::fs::create_dir(&roots).unwrap();
    let theirs = roots.join("r");
    std::fs::write(&theirs, "root's").unwrap();
    let p = profile(&w, "[files]\nprotect = [\"**/*.tfstate\"]\n");
    let script = format!(
        "rm {m0}; rm {r} 2>&1; rm {tf} 2>&1; rm {r} 2>&1; rm {m1} {m2}; echo done",
        m0 = mine[0].display(),
        m1 = mine[1].display(),
        m2 = mine[2].display(),
        r = theirs.display(),
        tf = tf.display()
    );
    let r = w.run("keep", &[], &["--profile", &p], &script);
    let h = w.wait_hold("keep", T);
    assert_eq!(h["target"], tf.display().to_string());
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    let out = r.finish(T);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("done"), "{}", text(&out));
    assert_eq!(
        s.matches("Permission denied").count(),
        2,
        "root's file, before and after the hold: {}",
        text(&out)
    );
    assert!(
        s.contains("Operation not permitted"),
        "the denied hold: {}",
        text(&out)
    );
    assert!(theirs.exists() && tf.exists());
    assert!(mine.iter().all(|m| !m.exists()), "{}", text(&out));
}

#[test]
fn ordinary_work_runs_under_the_default_profile() {
    if !privileged() {
        return;
    }
    let w = World::new();
    std::fs::write(
        w.work.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hi from c\");return 0;}\n",
    )
    .unwrap();
    common::chown_tree(&w.work);
    let script = "export HOME=$PWD; git init -q repo && cd repo && git config user.email t@t && git config user.name t \
                  && echo a > f && git add f && git commit -qm one && echo b >> f && git commit -qam two \
                  && git log --oneline | wc -l && cd .. && cc -o hello hello.c && ./hello \
                  && python3 -c 'print(\"hi from python\")' && node -e 'console.log(\"hi from node\")'";
    let out = w
        .run(
            "work",
            &[],
            &["--profile", "default", "--decision-timeout", "5s"],
            script,
        )
        .finish(T);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        s.contains("2\n")
            && s.contains("hi from c")
            && s.contains("hi from python")
            && s.contains("hi from node"),
        "{}",
        text(&out)
    );
    assert!(
        !w.log("work").iter().any(|l| l["kind"] == "hold"),
        "ordinary work was held"
    );
}

#[test]
fn a_bad_profile_is_refused_with_125() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let p = profile(&w, "[files]\nprotec = [\"/x\"]\n");
    let marker = w.work.join("ran");
    let out = w
        .cmd(&[
            "run",
            "--user",
            "nobody",
            "--profile",
            &p,
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("p.toml:2:1"),
        "{}",
        text(&out)
    );
    assert!(!marker.exists());
}

#[test]
fn the_profile_sets_the_decision_timeout_and_default_scope() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let a = w.file("p/a", "1");
    let b = w.file("p/b", "2");
    let p = profile(
        &w,
        "[decisions]\ntimeout = \"3s\"\ndefault_scope = \"once\"\n",
    );
    let r = w.run(
        "scope",
        &[&prot],
        &["--profile", &p],
        &format!("rm {} {}", a.display(), b.display()),
    );
    let h1 = w.wait_hold("scope", T);
    // No --scope: the profile's default (once) applies, so the second file is held again ...
    w.decide("approve", h1["id"].as_str().unwrap(), &[]);
    // ... and nobody decides it: the profile's 3 s timeout denies it.
    let out = r.finish(T);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!a.exists());
    assert!(b.exists());
    let log = w.log("scope");
    assert_eq!(log[0]["decision_timeout_s"], 3.0);
    assert!(
        log.iter()
            .any(|l| l["kind"] == "decision" && l["by"] == "timeout"),
        "{log:?}"
    );
}

/// `cargo build` of a small crate under the shipped `default` profile, with nothing held; as
/// root, where the Rust toolchain lives on these machines, in a root-owned directory (root
/// without capabilities cannot write the test user's files).
#[test]
fn cargo_build_runs_under_the_default_profile() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let krate = w.work.join("krate");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"krate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"cargo-ok\"); }\n",
    )
    .unwrap();
    let script = format!(
        "set -e; cd {k}; CARGO_HOME={k}/.cargo-home CARGO_TARGET_DIR={k}/target cargo run -q --offline",
        k = krate.display()
    );
    let out = w
        .cmd(&[
            "run",
            "--user",
            "root",
            "--session",
            "ordinary-cargo",
            "--profile",
            "default",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cargo-ok"),
        "{}",
        text(&out)
    );
    assert!(
        !w.log("ordinary-cargo").iter().any(|e| e["kind"] == "hold"),
        "nothing is held"
    );
}

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let o = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (Debian package sqlite3) is needed");
    assert!(o.status.success(), "sqlite3 {sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn protect_writes_holds_a_sqlite_drop_table_and_denied_leaves_the_table() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let dir = w.dir("data");
    let db = dir.join("app.db");
    sqlite(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (42);");
    common::chown(&db);
    let p = profile(
        &w,
        &format!("[files]\nprotect_writes = [\"{}\"]\n", db.display()),
    );
    let script = format!("sqlite3 {} 'DROP TABLE t'; echo rc=$?", db.display());
    let (holds, out) = common::decide_each(&w, "pwdeny", &[], &["--profile", &p], "deny", &script);
    assert!(!holds.is_empty(), "{}", text(&out));
    for h in &holds {
        assert_eq!(h["kind"], "write", "{h}");
        assert_eq!(h["target"], db.display().to_string(), "{h}");
        assert!(
            h["rule"].as_str().unwrap().starts_with("protect_writes "),
            "{h}"
        );
    }
    assert!(!text(&out).contains("rc=0"), "{}", text(&out));
    assert_eq!(sqlite(&db, "SELECT x FROM t"), "42");

    let (holds, out) =
        common::decide_each(&w, "pwallow", &[], &["--profile", &p], "approve", &script);
    assert!(!holds.is_empty(), "{}", text(&out));
    assert!(text(&out).contains("rc=0"), "{}", text(&out));
    assert_eq!(
        sqlite(&db, "SELECT count(*) FROM sqlite_master WHERE name = 't'"),
        "0"
    );
}

#[test]
fn protect_writes_holds_appends_and_creations_but_not_reads_or_neighbours() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let base = w.dir("wd");
    let log = w.file("wd/vault/log", "orig\n");
    let vault = base.join("vault");
    let p = profile(
        &w,
        &format!("[files]\nprotect_writes = [\"{}\"]\n", vault.display()),
    );
    // A new file next to the protected directory (the supervisor makes it: Landlock has no
    // grant for entries that did not exist at start) keeps the process's umask.
    let script = format!(
        "umask 027; cd {b}; echo a > free.txt; stat -c %a free.txt; cat free.txt; \
         cat vault/log; echo b >> vault/log; echo c > vault/new; \
         python3 -c 'import os; os.open(\"vault/log\", os.O_RDWR)' 2>/dev/null || echo py-refused; \
         echo end",
        b = base.display()
    );
    let (holds, out) = common::decide_each(&w, "pwplain", &[], &["--profile", &p], "deny", &script);
    let o = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        o.lines().collect::<Vec<_>>(),
        ["640", "a", "orig", "py-refused", "end"],
        "{}",
        text(&out)
    );
    let targets: Vec<&str> = holds
        .iter()
        .map(|h| h["target"].as_str().unwrap())
        .collect();
    let (l, n) = (
        log.display().to_string(),
        vault.join("new").display().to_string(),
    );
    assert_eq!(targets, [l.as_str(), n.as_str(), l.as_str()], "{holds:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "orig\n");
    assert!(!vault.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(base.join("free.txt")).unwrap(),
        "a\n"
    );
}
