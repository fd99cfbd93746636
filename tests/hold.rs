//! The file hold on this host's kernel (seccomp backend + Landlock), through the real binary.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{count_files, decide_first, deny_all, make_tree, privileged, text, World};

const T: Duration = Duration::from_secs(30);

#[test]
fn rm_of_protected_file_is_held_until_denied() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let f = w.file("prod/db.sqlite", "precious");
    let prot = w.work.join("prod");
    let r = w.run("deny1", &[&prot], &[], &format!("rm {}", f.display()));
    let h = decide_first(&w, "deny1", "deny");
    assert_eq!(h["kind"], "unlink");
    assert_eq!(h["target"], f.display().to_string());
    assert!(h["rule"].as_str().unwrap().contains("prod"));
    let out = r.finish(T);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
}

#[test]
fn rm_of_protected_file_proceeds_when_approved() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let f = w.file("prod/db.sqlite", "precious");
    let r = w.run(
        "appr1",
        &[&w.work.join("prod")],
        &[],
        &format!("rm {} && echo removed", f.display()),
    );
    decide_first(&w, "appr1", "approve");
    let out = r.finish(T);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert!(!f.exists());
}

#[test]
fn rm_rf_of_protected_tree_needs_one_decision_and_deny_keeps_every_file() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let root = make_tree(&w, 1000);
    // Files created during the session are protected too.
    let script = format!(
        "mkdir -p {r}/new/deep && for i in 1 2 3 4 5; do echo n > {r}/new/deep/n$i; done; rm -rf {r}; echo rm=$?",
        r = root.display()
    );
    let r = w.run("tree-deny", &[&root], &[], &script);
    decide_first(&w, "tree-deny", "deny");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rm=1"),
        "{}",
        text(&out)
    );
    assert_eq!(count_files(&root), 1005);
    let holds = w
        .log("tree-deny")
        .iter()
        .filter(|l| l["kind"] == "hold")
        .count();
    assert_eq!(holds, 1, "one decision for the whole rm -rf");
}

#[test]
fn rm_rf_of_protected_tree_needs_one_decision_and_approve_removes_it() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let root = make_tree(&w, 1000);
    let script = format!("touch {r}/late; rm -rf {r}; echo rm=$?", r = root.display());
    let r = w.run("tree-appr", &[&root], &[], &script);
    decide_first(&w, "tree-appr", "approve");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rm=0"),
        "{}",
        text(&out)
    );
    assert!(!root.exists());
    let log = w.log("tree-appr");
    assert_eq!(log.iter().filter(|l| l["kind"] == "hold").count(), 1);
    assert!(log.iter().filter(|l| l["kind"] == "applied").count() > 1000);
}

#[test]
fn every_destructive_path_to_a_protected_file_is_held() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let other = w.file("other", "o");
    let rn = common::prog("renameat2");
    let cases: Vec<(&str, &str, String)> = vec![
        ("rename-away", "rename", format!("mv {} {}/moved", f.display(), w.work.display())),
        ("rename-over", "rename", format!("mv {} {}", other.display(), f.display())),
        ("exchange", "rename", format!("{} {} {} exchange", rn.display(), other.display(), f.display())),
        ("truncate", "truncate", format!("truncate -s 0 {}", f.display())),
        ("redirect", "truncate", format!(": > {}", f.display())),
        (
            "ftruncate",
            "truncate",
            format!("python3 -c 'import os; fd=os.open(\"{}\", os.O_WRONLY); os.ftruncate(fd, 0)'", f.display()),
        ),
        (
            "procfd",
            "unlink",
            format!("python3 -c 'import os; d=os.open(\"{}\", os.O_RDONLY); os.unlink(\"/proc/self/fd/%d/f\" % d)'", prot.display()),
        ),
        ("rmdir-tree", "unlink", format!("rm -rf {}", prot.display())),
    ];
    for (name, kind, script) in cases {
        let (holds, out) = deny_all(&w, &[], name, &prot, &script);
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
            "{name}: protected file changed"
        );
        assert!(other.exists(), "{name}");
    }
}

#[test]
fn hard_links_to_protected_files_are_held() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let link = w.work.join("l");
    // Link inside the session, then remove the original (held) and the new link (held).
    let script = format!(
        "ln {f} {l} && echo linked; rm {f}; rm {l}; true",
        f = f.display(),
        l = link.display()
    );
    let (holds, out) = deny_all(&w, &[], "links", &prot, &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("linked"),
        "{}",
        text(&out)
    );
    let targets: Vec<&str> = holds
        .iter()
        .map(|h| h["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&f.display().to_string().as_str()),
        "{targets:?}"
    );
    assert!(
        targets.contains(&link.display().to_string().as_str()),
        "{targets:?}"
    );
    assert!(f.exists() && link.exists());
    // A link made before the session is held too.
    let pre = w.work.join("pre");
    std::fs::hard_link(&f, &pre).unwrap();
    let (holds, _) = deny_all(&w, &[], "links2", &prot, &format!("rm {}", pre.display()));
    assert_eq!(holds.len(), 1);
    assert!(pre.exists());
}

#[test]
fn racing_path_flips_delete_nothing_protected() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/victim", "keep");
    let race = common::prog("race_unlink");
    let harmless = w.work.join("h");
    let script = format!(
        "{} {} {} 10",
        race.display(),
        harmless.display(),
        f.display()
    );
    let (_, out) = deny_all(&w, &[], "race", &prot, &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tries="),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "keep",
        "{}",
        text(&out)
    );
}

#[test]
fn io_uring_cannot_be_set_up_and_the_file_survives() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let p = common::prog("uring_unlink");
    let (holds, out) = deny_all(&w, &[], "uring", &prot, &p.display().to_string());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("errno=1"),
        "{}",
        text(&out)
    );
    assert!(holds.is_empty());
    assert!(f.exists());
}

#[test]
fn the_32_bit_syscall_entry_is_refused() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let p = common::prog("int80_unlink");
    let (_, out) = deny_all(
        &w,
        &[],
        "int80",
        &prot,
        &format!("{} {}", p.display(), f.display()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(f.exists());
}

#[test]
fn unprotected_files_are_never_held_and_outside_processes_are_not_affected() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    for i in 0..50 {
        w.file(&format!("free/x{i}"), "x");
    }
    w.file("sib", "s");
    let script = format!(
        "rm -rf {free} && mv {sib} {sib}2 && : > {sib}2 && truncate -s 0 {sib}2 && rm {sib}2 && echo done",
        free = w.work.join("free").display(),
        sib = w.work.join("sib").display()
    );
    let (holds, out) = deny_all(&w, &[], "free", &prot, &script);
    assert!(holds.is_empty(), "{holds:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        text(&out)
    );
    // While a session protects p, a process outside it may still remove it.
    let r = w.run("outside", &[&prot], &[], "sleep 3");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&f).unwrap();
    assert!(!f.exists());
    r.finish(T);
}

#[test]
fn decision_timeout_denies() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let r = w.run(
        "tmo",
        &[&prot],
        &["--decision-timeout", "1s"],
        &format!("rm {}", f.display()),
    );
    let out = r.finish(T);
    assert_ne!(out.status.code(), Some(0));
    assert!(f.exists());
    let log = w.log("tmo");
    assert!(log
        .iter()
        .any(|l| l["kind"] == "decision" && l["by"] == "timeout" && l["decision"] == "deny"));
}

#[test]
fn killing_the_supervisor_during_a_hold_leaves_the_file_and_no_process() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let marker = w.work.join("after");
    let r = w.run(
        "kill",
        &[&prot],
        &[],
        &format!("sleep 60 & rm {}; touch {}", f.display(), marker.display()),
    );
    let h = w.wait_hold("kill", T);
    let held_pid = h["pid"].as_u64().unwrap() as i32;
    let sup = r.child.id() as i32;
    // SAFETY: plain kill.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let _ = r.finish(T);
    // Every process of the session goes with it.
    let t0 = std::time::Instant::now();
    while Path::new(&format!("/proc/{held_pid}")).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "held process {held_pid} outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f.exists(), "the protected file was removed");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !marker.exists(),
        "the command went on after the supervisor died"
    );
    let sleepers = std::process::Command::new("pgrep")
        .args(["-u", "65534", "-f", "sleep 60"])
        .output()
        .unwrap();
    assert!(
        sleepers.stdout.is_empty(),
        "a session process survived: {}",
        String::from_utf8_lossy(&sleepers.stdout)
    );
}

#[test]
fn the_audit_log_records_exec_hold_and_decision_and_verify_detects_edits() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let f = w.file("p/f", "keep");
    let r = w.run(
        "audit",
        &[&prot],
        &[],
        &format!("/bin/echo hi; rm {}", f.display()),
    );
    decide_first(&w, "audit", "deny");
    r.finish(T);
    let log = w.log("audit");
    assert_eq!(log[0]["kind"], "session_start");
    assert_eq!(log.last().unwrap()["kind"], "session_end");
    assert!(
        log.iter()
            .any(|l| l["kind"] == "exec" && l["argv"][0] == "/bin/echo" && l["argv"][1] == "hi"),
        "{log:?}"
    );
    assert!(log
        .iter()
        .any(|l| l["kind"] == "hold" && l["op"] == "unlink"));
    assert!(log
        .iter()
        .any(|l| l["kind"] == "decision" && l["decision"] == "deny" && l["waited_ms"].is_u64()));
    let ok = w
        .cmd(&["log", "--session", "audit", "--verify"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let path = w.logs.join("audit.jsonl");
    let s = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, s.replacen("\"deny\"", "\"approve\"", 1)).unwrap();
    let bad = w
        .cmd(&["log", "--session", "audit", "--verify"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("TAMPERED"),
        "{}",
        text(&bad)
    );
}

/// `sandbox watch --no-tui` prints a new hold within a second of it appearing and decides it
/// from a typed line.
#[test]
fn watch_shows_a_new_hold_within_a_second_and_decides_it() {
    use std::io::{BufRead, Write};
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let mut watch = w
        .cmd(&["watch", "--no-tui"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, String)>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((std::time::Instant::now(), l));
        }
    });
    let r = w.run(
        "watched",
        &[&prot],
        &[],
        &format!("rm {}; echo rc=$?", f.display()),
    );
    let h = w.wait_hold("watched", Duration::from_secs(60));
    let seen_pending = std::time::Instant::now();
    let id = h["id"].as_str().unwrap().to_string();
    let wait_for = |want: &str| -> std::time::Instant {
        loop {
            let (t, l) = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("watch never printed {want:?}"));
            if l.contains(want) {
                return t;
            }
        }
    };
    let shown = wait_for(&format!("HELD {id}"));
    assert!(
        shown.saturating_duration_since(seen_pending) < Duration::from_secs(1),
        "shown {:?} after it was pending",
        shown.saturating_duration_since(seen_pending)
    );
    let mut stdin = watch.stdin.take().unwrap();
    writeln!(stdin, "d").unwrap();
    wait_for(&format!("denied {id}"));
    let out = r.finish(Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    assert!(f.exists());
    writeln!(stdin, "q").unwrap();
    assert!(watch.wait().unwrap().success());
}

/// What a webhook receiver got: (lower-cased request head, body) per POST.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1 that records (headers, body) of every POST and answers 204.
fn webhook_receiver() -> (u16, Deliveries) {
    use std::io::{BufRead, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = std::io::BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            g2.lock().unwrap().push((head, body));
            let mut c = c;
            let _ = c.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `[notify] webhook`: the receiver gets a signed JSON body for the hold and for its decision.
#[test]
fn webhook_gets_signed_hold_and_decision() {
    if !privileged() {
        return;
    }
    let (port, got) = webhook_receiver();
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let secret = w.file("hook.secret", "s3cret-key\n");
    let profile = w.file(
        "hook.toml",
        &format!(
            "[notify]\nwebhook = \"http://127.0.0.1:{port}/hooks/guard\"\nwebhook_secret_file = \"{}\"\n",
            secret.display()
        ),
    );
    let r = w.run(
        "hooked",
        &[&prot],
        &["--profile", profile.to_str().unwrap()],
        &format!("rm {}; echo rc=$?", f.display()),
    );
    let h = decide_first(&w, "hooked", "deny");
    let out = r.finish(T);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    let t0 = std::time::Instant::now();
    while got.lock().unwrap().len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "a hold and a decision: {got:?}");
    for (head, body) in &got {
        let sig = format!(
            "x-sandbox-signature: sha256={}",
            hmac_hex(b"s3cret-key", body)
        );
        assert!(head.contains(&sig), "signed with the secret: {head}");
        assert!(head.starts_with("post /hooks/guard "), "{head}");
    }
    let events: Vec<serde_json::Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    let hold = events
        .iter()
        .find(|e| e["event"] == "hold")
        .expect("hold event");
    assert_eq!(hold["hold"]["id"], h["id"]);
    assert_eq!(hold["hold"]["target"], f.display().to_string());
    let dec = events
        .iter()
        .find(|e| e["event"] == "decision")
        .expect("decision event");
    assert_eq!(dec["decision"], "deny");
    assert_eq!(dec["hold"]["id"], h["id"]);
}

/// A dead webhook receiver delays neither the hold nor the decision; the failed delivery ends
/// up in the audit log.
#[test]
fn a_dead_webhook_delays_nothing_and_is_logged() {
    if !privileged() {
        return;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let secret = w.file("hook.secret", "k");
    let profile = w.file(
        "hook.toml",
        &format!(
            "[notify]\nwebhook = \"http://127.0.0.1:{port}/\"\nwebhook_secret_file = \"{}\"\n",
            secret.display()
        ),
    );
    let t0 = std::time::Instant::now();
    let r = w.run(
        "deadhook",
        &[&prot],
        &["--profile", profile.to_str().unwrap()],
        &format!("rm {}; echo rc=$?; sleep 12", f.display()),
    );
    let h = w.wait_hold("deadhook", Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "hold visible at once"
    );
    let t1 = std::time::Instant::now();
    w.decide("deny", h["id"].as_str().unwrap(), &[]);
    assert!(
        t1.elapsed() < Duration::from_secs(2),
        "decision not delayed"
    );
    let out = r.finish(Duration::from_secs(60));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    let failed: Vec<_> = w
        .log("deadhook")
        .into_iter()
        .filter(|e| e["kind"] == "webhook_failed")
        .collect();
    assert!(!failed.is_empty(), "the failed deliveries are logged");
    assert_eq!(failed[0]["attempts"], 5, "{failed:?}");
}

#[test]
fn relative_multi_component_removals_go_on_and_a_symlinked_one_never_destroys() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("p");
    let keep = w.file("p/keep", "keep");
    let free = w.file("a/b/free", "x");
    std::os::unix::fs::symlink(&prot, w.work.join("link")).unwrap();
    common::chown(&w.work.join("link"));
    // Lexically `link/keep` is unprotected; Landlock refuses the removal itself, or it is held
    // (then denied): either way the file stays.
    let (holds, out) = deny_all(
        &w,
        &[],
        "multi",
        &prot,
        &format!(
            "cd {}; rm a/b/free && echo freed; rm link/keep; echo end",
            w.work.display()
        ),
    );
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(o.contains("freed") && o.contains("end"), "{}", text(&out));
    assert!(!free.exists());
    assert!(keep.exists(), "holds {holds:?}");
}
