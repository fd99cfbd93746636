//! Benchmark of the file-hold backends on unprotected work, run inside the test VMs by
//! `cargo xtask vm-test --test vm_bench` (a BPF LSM kernel is needed; hosts like the CI machine
//! refuse LSM programs). Not a test: it measures and prints, it asserts nothing about time.
//!
//! Workload: create N files (100 directories) on the VM's tmpfs, then time only `rm -rf` of the
//! tree, run as uid 65534: bare, under `sandbox run --backend lsm` and (where Landlock has ABI 3)
//! `--backend seccomp`, each with a protected sibling directory so the guard is really active;
//! `lsm/host-net` is the LSM backend with `--net host` (no network namespace, no proxy).
//! Only the `rm -rf` is timed (by this binary's `--timeit` mode, inside the sandbox), not the
//! sandbox's start. Repetitions alternate between the variants; medians are reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UID: u32 = 65534;

fn make_tree(root: &Path, files: usize) {
    let per_dir = files / 100;
    for d in 0..100 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        for i in 0..per_dir {
            std::fs::write(dir.join(format!("f{i}")), b"x")
                .unwrap_or_else(|e| panic!("write: {e}"));
        }
    }
    let st = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(root)
        .status();
    assert!(st.is_ok_and(|s| s.success()), "chown failed");
}

fn sandbox() -> &'static str {
    env!("CARGO_BIN_EXE_sandbox")
}

/// Runs `rm -rf TREE` through this binary's `--timeit` mode (bare, or inside `sandbox run`), so
/// only the removal is timed, not the sandbox's start and stop.
fn time_rm(variant: &str, base: &Path, tree: &Path) -> Duration {
    let me = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = match variant {
        "bare" => {
            let mut c = Command::new(&me);
            std::os::unix::process::CommandExt::uid(&mut c, UID);
            std::os::unix::process::CommandExt::gid(&mut c, UID);
            c
        }
        variant => {
            // `lsm/host-net`: the same without the session's network namespace and proxy.
            let (backend, host_net) = match variant.strip_suffix("/host-net") {
                Some(b) => (b, true),
                None => (variant, false),
            };
            let mut c = Command::new(sandbox());
            c.args(["run", "--quiet", "--user", "65534", "--backend", backend]);
            if host_net {
                c.args(["--net", "host"]);
            }
            c.arg("--protect")
                .arg(base.join("prot"))
                .arg("--")
                .arg(&me)
                .env("SANDBOX_STATE_DIR", "/run/guard-bench/state")
                .env("SANDBOX_LOG_DIR", "/run/guard-bench/logs");
            c
        }
    };
    cmd.args(["--timeit", "rm", "-rf"]).arg(tree);
    let out = cmd.output().unwrap_or_else(|e| panic!("{variant}: {e}"));
    assert!(
        out.status.success(),
        "{variant}: rm -rf failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tree.exists(), "{variant}: the tree is still there");
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ELAPSED_NS="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{variant}: no timing in {text:?}"));
    Duration::from_nanos(ns)
}

/// `--timeit CMD...`: runs CMD and prints its wall time.
fn timeit(args: &[String]) -> ! {
    let t0 = Instant::now();
    let st = Command::new(&args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    println!("ELAPSED_NS={}", t0.elapsed().as_nanos());
    std::process::exit(st.code().unwrap_or(1));
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) takes no pointer.
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--timeit") {
        timeit(&args[2..]);
    }
    let files: usize = std::env::var("GUARD_BENCH_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let reps: usize = std::env::var("GUARD_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let kernel = std::env::var("GUARD_VM_KERNEL").unwrap_or_else(|_| "host".into());
    let base = PathBuf::from("/tmp/guard-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("prot")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base.join("prot/keep"), b"keep").unwrap_or_else(|e| panic!("{e}"));
    // The test user removes the tree: it owns the directory the tree is in.
    std::os::unix::fs::chown(&base, Some(UID), Some(UID)).unwrap_or_else(|e| panic!("{e}"));
    let mut variants = vec!["bare", "lsm", "lsm/host-net"];
    if landlock_abi() >= 3 {
        variants.push("seccomp");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..reps {
        for (i, v) in variants.iter().enumerate() {
            let tree = base.join("tree");
            make_tree(&tree, files);
            times[i].push(time_rm(v, &base, &tree));
        }
    }
    let bare = median(&mut times[0].clone());
    let mut line = format!("GUARD-BENCH kernel={kernel} files={files} reps={reps}");
    for (i, v) in variants.iter().enumerate() {
        let m = median(&mut times[i]);
        line.push_str(&format!(
            " {v}={:.3}s({:.2}x)",
            m.as_secs_f64(),
            m.as_secs_f64() / bare.as_secs_f64()
        ));
    }
    println!("{line}");
    assert!(
        base.join("prot/keep").exists(),
        "the protected file was removed"
    );
    let _ = std::fs::remove_dir_all(&base);
}
