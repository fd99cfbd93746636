//! The full-screen `sandbox watch`, driven inside a detached tmux session (send-keys, capture-pane)
//! while a real `sandbox run` holds an `rm` of a protected file.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{have_tools, privileged, text, World};

/// A private tmux server (its own socket) with one detached 200x50 session; killed when dropped.
struct Tmux {
    socket: String,
    name: String,
}

impl Tmux {
    /// Starts `sh -c CMD` in a new session; the pane stays (and says so) when CMD exits.
    fn start(tag: &str, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("guard-{tag}-{}", std::process::id()),
            name: tag.to_string(),
        };
        let st = t
            .tmux()
            .args(["new-session", "-d", "-x", "200", "-y", "50", "-s", &t.name])
            .arg(format!("{cmd}; echo watch-exited=$?; sleep 600"))
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).env("TERM", "xterm-256color");
        c
    }

    fn capture(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (generously) until the screen shows `want`; returns the screen.
    fn wait_for(&self, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(want) {
                return screen;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the screen never showed {want:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &str) {
        let st = self
            .tmux()
            .args(["send-keys", "-t", &self.name, keys])
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// `sandbox watch` (no `--no-tui`) in tmux, in the world's state and log directories.
fn watch_in_tmux(w: &World, tag: &str) -> Tmux {
    let cmd = format!(
        "env SANDBOX_STATE_DIR='{}' SANDBOX_LOG_DIR='{}' '{}' watch",
        w.state.display(),
        w.logs.display(),
        common::bin()
    );
    let t = Tmux::start(tag, &cmd);
    t.wait_for("every live session");
    t
}

fn decision_of(w: &World, session: &str) -> serde_json::Value {
    w.log(session)
        .into_iter()
        .find(|l| l["kind"] == "decision")
        .unwrap_or_else(|| panic!("no decision in the audit log of {session}"))
}

#[test]
fn tui_shows_the_hold_and_a_session_wide_approval_after_y_lets_rm_proceed() {
    if !privileged() || !have_tools(&["tmux"]) {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let session = format!("tui-ok-{}", std::process::id());
    let t = watch_in_tmux(&w, "tui-ok");
    let r = w.run(
        &session,
        &[&prot],
        &[],
        &format!("rm {} && echo removed", f.display()),
    );
    let screen = t.wait_for(&format!("target: {}", f.display()));
    for want in [
        format!("session: {session}"),
        "(rm)".to_string(),
        format!("command: rm {}", f.display()),
        "kind: unlink".to_string(),
        "rule: ".to_string(),
        "scope: once".to_string(),
    ] {
        assert!(screen.contains(&want), "{want:?} not on screen:\n{screen}");
    }
    // once -> process -> path -> session; a session-wide approval asks first.
    t.keys("s");
    t.keys("s");
    t.keys("s");
    t.wait_for("scope: session");
    t.keys("a");
    t.wait_for("y/n");
    assert!(
        w.pending().iter().any(|h| h["session"] == session.as_str()),
        "decided before the confirmation"
    );
    t.keys("y");
    t.wait_for("approved ");
    let out = r.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert!(!f.exists());
    let d = decision_of(&w, &session);
    assert_eq!(d["decision"], "approve", "{d}");
    let by = d["by"].as_str().unwrap();
    assert!(
        by.contains("sandbox watch") && by.contains("scope session"),
        "{d}"
    );
    t.keys("q");
    t.wait_for("watch-exited=0");
}

#[test]
fn tui_deny_key_fails_the_held_rm_and_the_file_survives() {
    if !privileged() || !have_tools(&["tmux"]) {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let session = format!("tui-no-{}", std::process::id());
    let t = watch_in_tmux(&w, "tui-no");
    let r = w.run(
        &session,
        &[&prot],
        &[],
        &format!("rm {}; echo rc=$?", f.display()),
    );
    t.wait_for(&format!("target: {}", f.display()));
    t.keys("d");
    t.wait_for("denied ");
    let out = r.finish(Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
    let d = decision_of(&w, &session);
    assert_eq!(d["decision"], "deny", "{d}");
    assert!(d["by"].as_str().unwrap().contains("sandbox watch"), "{d}");
    t.keys("q");
    t.wait_for("watch-exited=0");
}
