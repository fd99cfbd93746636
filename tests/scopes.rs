//! Standing decisions through the real binary: `--scope path` reaches below the held path (any
//! process of the session) and nowhere else, and `--for DUR` ends it.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{privileged, text, World};

#[test]
fn path_scope_approves_later_unlinks_below_the_path_only_and_for_expires() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let x = w.file("prod/a/x", "x");
    let y = w.file("prod/a/y", "y");
    let z = w.file("prod/b/z", "z");
    let a = w.work.join("prod/a");
    let session = format!("scope-path-{}", std::process::id());
    // Each command is a process of its own: the path scope is not tied to the process.
    let script = format!(
        "rmdir {a}; echo rmdir=$?; rm {x}; echo x=$?; rm {z}; echo z=$?; sleep 7; rm {y}; echo y=$?",
        a = a.display(),
        x = x.display(),
        y = y.display(),
        z = z.display()
    );
    let mut r = w.run(&session, &[&prot], &[], &script);
    let mut targets = Vec::new();
    let t0 = Instant::now();
    while r.child.try_wait().unwrap().is_none() {
        for h in w
            .pending()
            .into_iter()
            .filter(|h| h["session"] == session.as_str())
        {
            let id = h["id"].as_str().unwrap();
            if targets.is_empty() {
                // The directory: approved for everything below it, for 5 seconds.
                w.decide("approve", id, &["--scope", "path", "--for", "5s"]);
            } else {
                w.decide("deny", id, &["--scope", "once"]);
            }
            targets.push(h["target"].as_str().unwrap().to_string());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the session did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = r.finish(Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        targets,
        [
            a.display().to_string(),
            z.display().to_string(),
            y.display().to_string()
        ],
        "{}",
        text(&out)
    );
    // rmdir itself was approved (and failed: the directory is not empty).
    for want in ["rmdir=1", "x=0", "z=1", "y=1"] {
        assert!(stdout.contains(want), "{want}: {}", text(&out));
    }
    assert!(!x.exists());
    assert!(y.exists() && z.exists());
    let log = w.log(&session);
    assert!(
        log.iter()
            .any(|l| l["kind"] == "applied" && l["target"] == x.display().to_string()),
        "no 'applied' line for {}",
        x.display()
    );
}
