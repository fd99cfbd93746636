//! The hold load, short: 1,000 holds per second decided by a script on the control socket for
//! a few seconds, none lost, none misattributed (`cargo xtask load` runs the full minute; the
//! shared run is tests/common/load.rs).

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::load::{self, LoadSpec};
use common::{privileged, World, UID};

#[test]
fn a_thousand_holds_per_second_for_seconds_none_lost_none_misattributed() {
    if !privileged() {
        return;
    }
    let w = World::new();
    let bin = tempfile::Builder::new()
        .prefix("guard-load-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = bin.path().join("hold_victim");
    common::cc(Path::new("xtask/progs/hold_victim.c"), &victim, &[]);
    let spec = LoadSpec {
        sandbox: common::bin().into(),
        victim,
        work: w.work.clone(),
        state: w.state.clone(),
        logs: w.logs.clone(),
        session: "load-short".into(),
        uid: UID,
        victims: 16,
        rate: 1000,
        seconds: 6,
    };
    let r = load::run(&spec).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "load: {} holds in {:.2?} = {:.0}/s (slowest full second {}, fastest {}), {} approved, \
         at most {} pending at once, decide round trip p50 {} us p99 {} us",
        r.holds,
        r.elapsed,
        r.rate(),
        r.slowest_second,
        r.fastest_second,
        r.approved,
        r.max_pending,
        r.decide_us.0,
        r.decide_us.1
    );
    assert_eq!(r.holds, 6000);
    // 1,000/s is a ceiling the script keeps to. This is the debug build, on a machine CI may share:
    // the floor is half of it (measured here: 848/s at a load average of 5, 387/s at 7);
    // `cargo xtask load` holds the release build to 90% of the rate for a minute.
    assert!(r.rate() >= 500.0, "only {:.0} holds/s", r.rate());
}
