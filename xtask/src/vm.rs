//! `cargo xtask vm-test`: runs test targets of guard-user inside QEMU VMs that boot pinned Debian
//! kernels, for what this host's kernel refuses (BPF LSM programs). See KERNEL-NOTES.md, "Running
//! the LSM tests in a VM".
//!
//! Steps: check QEMU and pick the accelerator; fetch the kernels once (cached in
//! `~/.cache/guard/kernels/`); build the test binaries, `sandbox` and `tests/progs/*.c` statically;
//! pack them with busybox and `xtask/vm/init.sh` into an initramfs; boot each kernel, stream its
//! serial console (to the terminal and `target/vm/<kernel>.log`) and read the one result line.

mod artifacts;
mod initramfs;
mod kernel;
mod qemu;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use initramfs::Initramfs;
use kernel::{KernelImage, KernelSpec};
use qemu::{Accel, Outcome, Report};

/// Test targets run when no `--test` is given: the harness's own smoke test, then the LSM
/// backend's tests (both `test = false` in guard-user/Cargo.toml, so the host never runs them).
const DEFAULT_TESTS: &[&str] = &["vm_smoke", "lsm"];

/// Where the sandbox binary lives in the VM (linked from its host path by /init).
const SANDBOX_IN_VM: &str = "guard/bin/sandbox";

/// Where the helper programs live in the VM (exported to the tests as `GUARD_PROGS_DIR`).
const PROGS_DIR: &str = "guard/progs";
/// Where the test binaries live in the VM.
const TESTS_DIR: &str = "guard/tests";

/// The init script template.
const INIT_TEMPLATE: &str = include_str!("../vm/init.sh");

/// busybox-static provides the VM's shell and tools.
const BUSYBOX: &str = "/bin/busybox";

/// Which kernels to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// Debian 6.1 (Landlock ABI 2).
    #[value(name = "6.1")]
    V6_1,
    /// Debian 6.12 from bookworm-backports.
    #[value(name = "6.12")]
    V6_12,
    /// Both, one after the other.
    All,
}

/// Options of `cargo xtask vm-test`.
#[derive(Debug, clap::Args)]
pub struct VmTestArgs {
    /// Kernel to boot.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// A test target of guard-user to run (repeatable; default: vm_smoke and lsm).
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
    /// Keep the initramfs and the stripped binaries in target/vm/ and write target/vm/boot-<kernel>.sh
    /// to boot the same VM again by hand.
    #[arg(long)]
    keep: bool,
    /// Accelerator (auto: KVM only where it can run a stock kernel, else TCG).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Seconds a VM may run before it counts as hung.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// `--test-threads` for every test binary.
    #[arg(long, value_name = "N", default_value_t = 1)]
    test_threads: u32,
    /// Boot the kernels one after another (by default their VMs run side by side).
    #[arg(long)]
    serial: bool,
    /// Build the binaries with --release.
    #[arg(long)]
    release: bool,
    /// Keep debug info in the binaries put in the VM (bigger initramfs, slower boot).
    #[arg(long)]
    no_strip: bool,
    /// A KEY=VAL word added to the kernel command line; it reaches the tests' environment
    /// (repeatable; e.g. RUST_LOG=debug).
    #[arg(long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    env: Vec<String>,
    /// Arguments for every test binary (after `--`): a name filter, `--exact`, `--nocapture`.
    #[arg(last = true, value_name = "TEST_ARGS")]
    test_args: Vec<String>,
}

fn parse_env(s: &str) -> Result<String, String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VAL")?;
    let key_ok = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.contains('.');
    let val_ok = v
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\'));
    if !key_ok || !val_ok {
        return Err(
            "the kernel command line carries only KEY=VAL with KEY of [A-Za-z0-9_] and VAL \
             without spaces or quotes"
                .into(),
        );
    }
    Ok(s.to_owned())
}

/// Runs `cargo xtask vm-test`.
pub fn run(args: VmTestArgs) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let root = workspace_root()?;
    let vm_dir = target_dir(&root).join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("create {}", vm_dir.display()))?;

    let specs: Vec<&KernelSpec> = kernel::KERNELS
        .iter()
        .filter(|k| match args.kernel {
            KernelChoice::All => true,
            KernelChoice::V6_1 => k.label == "6.1",
            KernelChoice::V6_12 => k.label == "6.12",
        })
        .collect();
    let tests: Vec<String> = if args.tests.is_empty() {
        DEFAULT_TESTS.iter().map(|s| s.to_string()).collect()
    } else {
        args.tests.clone()
    };

    // Cheap checks first, so a machine that cannot run VMs says so before a long build.
    let qemu_version = qemu::check_version()?;
    println!("vm-test: {qemu_version}");
    let (accel, why) = qemu::choose_accel(args.accel);
    println!("vm-test: accelerator {} ({why})", accel.name());
    artifacts::ensure_static(Path::new(BUSYBOX)).with_context(|| {
        format!("{BUSYBOX} must be busybox-static (apt-get install busybox-static)")
    })?;
    let cache = kernel::cache_root()?;
    let mut kernels = Vec::new();
    for spec in &specs {
        let k = kernel::ensure(spec, &cache)?;
        println!(
            "vm-test: kernel {} = {} {} ({})",
            spec.label,
            spec.package,
            spec.version,
            k.vmlinuz.display()
        );
        kernels.push(k);
    }

    let t_build = Instant::now();
    let built = artifacts::build_tests(&root, &tests, args.release)?;
    let progs = artifacts::build_progs(&root, &vm_dir.join("progs"))?;
    let build_time = t_build.elapsed();

    let t_pack = Instant::now();
    let initrd = vm_dir.join("initramfs.cpio");
    let stage = vm_dir.join("stage");
    let size = pack(&built, &progs, &args, &stage, &initrd)?;
    println!(
        "vm-test: initramfs {} ({:.1} MiB, {:.1}s; build {:.1}s)",
        initrd.display(),
        size as f64 / (1024.0 * 1024.0),
        t_pack.elapsed().as_secs_f64(),
        build_time.as_secs_f64()
    );

    let mut boots = Vec::new();
    for k in &kernels {
        let boot = qemu::Boot {
            kernel: k,
            initrd: &initrd,
            accel,
            env: &args.env,
            timeout: Duration::from_secs(args.timeout),
            boot_timeout: Duration::from_secs(180).min(Duration::from_secs(args.timeout)),
            log: vm_dir.join(format!("{}.log", k.spec.label)),
        };
        if args.keep {
            write_boot_script(&vm_dir, &boot)?;
        }
        boots.push(boot);
    }
    let run_one = |boot: &qemu::Boot| -> anyhow::Result<Report> {
        println!(
            "vm-test: booting {} ({}); log {}",
            boot.kernel.spec.label,
            accel.name(),
            boot.log.display()
        );
        let report = boot.run()?;
        println!(
            "vm-test: {}: {}",
            boot.kernel.spec.label,
            describe(&report.outcome)
        );
        Ok(report)
    };
    // The tests in a VM run one at a time (--test-threads=1), so a TCG guest keeps about one
    // host CPU busy: the kernels' VMs run side by side unless --serial.
    let reports: Vec<anyhow::Result<Report>> = if args.serial || boots.len() < 2 {
        boots.iter().map(run_one).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = boots.iter().map(|b| s.spawn(|| run_one(b))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a VM's thread panicked")))
                })
                .collect()
        })
    };
    let mut results: Vec<(&KernelImage, Report)> = Vec::new();
    for (k, r) in kernels.iter().zip(reports) {
        results.push((k, r?));
    }

    if !args.keep {
        let _ = fs::remove_file(&initrd);
        let _ = fs::remove_dir_all(&stage);
    }

    println!();
    println!(
        "vm-test summary (accelerator {}, tests: {}):",
        accel.name(),
        tests.join(", ")
    );
    println!("  kernel  result  boot-to-init  guest uptime at init  total");
    for (k, r) in &results {
        println!(
            "  {:<6}  {:<6}  {:>12}  {:>20}  {:>5.1}s",
            k.spec.label,
            match r.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail(_) => "FAIL",
                Outcome::Infra(_) => "INFRA",
            },
            r.to_init
                .map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64())),
            r.guest_init.map_or("-".into(), |u| format!("{u:.1}s")),
            r.total.as_secs_f64()
        );
    }
    println!("  all steps: {:.1}s", t_start.elapsed().as_secs_f64());

    let bad: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.outcome != Outcome::Pass)
        .map(|(k, r)| {
            format!(
                "{}: {} (log {})",
                k.spec.label,
                describe(&r.outcome),
                vm_dir.join(format!("{}.log", k.spec.label)).display()
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "vm-test failed on {} kernel(s):\n  {}",
            bad.len(),
            bad.join("\n  ")
        );
    }
    Ok(())
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Pass => "PASS".into(),
        Outcome::Fail(why) => format!("tests FAILED: {why}"),
        Outcome::Infra(why) => format!("INFRASTRUCTURE FAILURE (tests did not report): {why}"),
    }
}

/// Lays out the initramfs: busybox, /init, the sandbox binary at the absolute path the test
/// binaries embed, the test binaries in /guard/tests and the helper programs in /guard/progs.
fn pack(
    built: &artifacts::Built,
    progs: &[PathBuf],
    args: &VmTestArgs,
    stage: &Path,
    out: &Path,
) -> anyhow::Result<u64> {
    if stage.exists() {
        fs::remove_dir_all(stage).with_context(|| format!("remove {}", stage.display()))?;
    }
    let strip = !args.no_strip;
    let staged = |src: &Path, name: &str| -> anyhow::Result<PathBuf> {
        if strip {
            let dst = stage.join(name);
            artifacts::strip_copy(src, &dst)?;
            Ok(dst)
        } else {
            Ok(src.to_owned())
        }
    };

    let mut a = Initramfs::new();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
    ] {
        a.dir(d)?;
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    a.char_dev("dev/console", 5, 1, 0o600)?;
    a.char_dev("dev/null", 1, 3, 0o666)?;
    a.file("bin/busybox", Path::new(BUSYBOX), 0o755)?;

    let sandbox_in_vm = built
        .sandbox
        .to_str()
        .context("the sandbox path is not UTF-8")?;
    a.file(SANDBOX_IN_VM, &staged(&built.sandbox, "sandbox")?, 0o755)?;

    // The test binaries embed the host path of `sandbox`. It may lie below /tmp or /run, which
    // /init covers with fresh tmpfs mounts, so /init links it there after mounting.
    let dir = built
        .sandbox
        .parent()
        .and_then(|d| d.to_str())
        .context("the sandbox path has no parent")?;
    let mut run_lines = vec![format!(
        "mkdir -p {} && ln -sf /{SANDBOX_IN_VM} {} || finish 'FAIL init: cannot place the sandbox binary'",
        sh_quote(dir),
        sh_quote(sandbox_in_vm)
    )];
    for t in &built.tests {
        let in_vm = format!("/{TESTS_DIR}/{}", t.name);
        a.file(
            &in_vm,
            &staged(&t.path, &format!("tests/{}", t.name))?,
            0o755,
        )?;
        let mut words = vec![
            t.name.clone(),
            in_vm,
            format!("--test-threads={}", args.test_threads),
        ];
        words.extend(args.test_args.iter().cloned());
        run_lines.push(format!(
            "run_test {}",
            words
                .iter()
                .map(|w| sh_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for p in progs {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("prog name is not UTF-8")?;
        a.file(&format!("{PROGS_DIR}/{name}"), p, 0o755)?;
    }
    a.data("init", render_init(&run_lines.join("\n"))?, 0o755)?;
    a.write(out)
}

/// The init script with the test lines filled in.
fn render_init(run_lines: &str) -> anyhow::Result<String> {
    const SLOT: &str = "@RUN_TESTS@";
    if INIT_TEMPLATE.matches(SLOT).count() != 1 {
        bail!("xtask/vm/init.sh must contain {SLOT} exactly once");
    }
    Ok(INIT_TEMPLATE.replace(SLOT, run_lines))
}

/// `target/vm/boot-<kernel>.sh`: the same QEMU command line, for a look by hand.
fn write_boot_script(vm_dir: &Path, boot: &qemu::Boot<'_>) -> anyhow::Result<()> {
    let path = vm_dir.join(format!("boot-{}.sh", boot.kernel.spec.label));
    let text = format!(
        "#!/bin/sh\n# Boots the VM of the last `cargo xtask vm-test --keep` (Ctrl-A X quits QEMU).\n# Add GUARD_VM_SHELL=1 to the -append words for a shell after the tests.\nexec {}\n",
        shell_line(&boot.command())
    );
    fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    println!("vm-test: wrote {}", path.display());
    Ok(())
}

/// A command as a shell line (program and arguments quoted where needed).
fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| sh_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes `s` for sh when it has anything beyond a safe set.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The workspace root (xtask's parent directory).
fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// `CARGO_TARGET_DIR` or `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(PathBuf::from(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        for s in ["plain", "with space", "it's", "", "$HOME", "a\"b"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn the_init_template_has_one_slot_and_is_valid_sh() {
        let text = render_init("run_test 'x' /guard/tests/x --test-threads=1").unwrap();
        assert!(text.starts_with("#!/bin/busybox sh\n"));
        let st = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&text)
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn kernel_command_line_env_words_are_checked() {
        assert!(parse_env("RUST_LOG=debug").is_ok());
        assert!(parse_env("RUST_LOG=guard=trace,aya=info").is_ok());
        assert!(parse_env("NOEQUALS").is_err());
        assert!(parse_env("A=two words").is_err());
        assert!(parse_env("mod.param=1").is_err());
    }
}
