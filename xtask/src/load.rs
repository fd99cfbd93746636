//! `cargo xtask load`: 1,000 holds per second decided by a script for a minute, none lost, none
//! misattributed (the run itself is tests/common/load.rs, shared with the short CI version in
//! tests/load.rs). Needs root; builds the release `sandbox` first unless `--no-build`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[path = "../../tests/common/load.rs"]
mod shared;

/// Options of `cargo xtask load`.
#[derive(clap::Args)]
pub struct Options {
    /// Holds per second to decide.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// For how long.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Victim processes (each unlinks its own protected files one after another).
    #[arg(long, default_value_t = 16)]
    victims: usize,
    /// Use the existing release `sandbox` instead of building it.
    #[arg(long)]
    no_build: bool,
}

/// A scratch directory under /tmp (the victims' user must reach it), removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the load and prints its figures; fails when a hold was lost or misattributed, or when
/// the rate reached is under 90% of the rate asked for.
pub fn run(o: &Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask load needs root (sessions are started with `sandbox run`)");
    }
    let root = crate::bench::workspace_root()?;
    if !o.no_build {
        crate::bench::build_sandbox(&root)?;
    }
    let sandbox = crate::bench::target_dir(&root).join("release/sandbox");
    let built = crate::bench::compile(&root, "hold_victim")?;
    let base = PathBuf::from(format!("/tmp/guard-load.{}", std::process::id()));
    let scratch = Scratch(base.clone());
    for d in ["", "work", "bin"] {
        let p = base.join(d);
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    let victim = base.join("bin/hold_victim");
    std::fs::copy(&built, &victim).context("copy hold_victim")?;
    let spec = shared::LoadSpec {
        sandbox,
        victim,
        work: base.join("work"),
        state: base.join("state"),
        logs: base.join("logs"),
        session: format!("load-{}", std::process::id()),
        uid: 65534,
        victims: o.victims,
        rate: o.rate,
        seconds: o.seconds,
    };
    eprintln!(
        "load: {} holds at up to {}/s from {} victims...",
        u64::from(o.rate) * o.seconds,
        o.rate,
        o.victims
    );
    let r = shared::run(&spec).map_err(|e| anyhow::anyhow!("load: {e}"))?;
    println!(
        "load: {} holds decided in {:.1} s = {:.0} holds/s (asked {}/s); slowest full second {}, \
         fastest {}; {} approved, {} denied; at most {} pending at once; decide round trip \
         p50 {} us, p99 {} us; none lost, none misattributed",
        r.holds,
        r.elapsed.as_secs_f64(),
        r.rate(),
        o.rate,
        r.slowest_second,
        r.fastest_second,
        r.approved,
        r.holds - r.approved,
        r.max_pending,
        r.decide_us.0,
        r.decide_us.1
    );
    drop(scratch);
    if r.rate() < 0.9 * f64::from(o.rate) {
        bail!(
            "load: {:.0} holds/s is under 90% of the {}/s asked for",
            r.rate(),
            o.rate
        );
    }
    Ok(())
}
