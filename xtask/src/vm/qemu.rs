//! QEMU: the version check, the accelerator probe, and one boot with its serial console watched.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::kernel::KernelImage;

/// The QEMU binary (from `PATH`).
pub const QEMU: &str = "qemu-system-x86_64";

/// QEMU 7.2 (bookworm) crashes about 40% of boots of the 6.12 kernel; 10 (bookworm-backports) does
/// not.
const MIN_MAJOR: u32 = 10;

/// How to get a good QEMU.
const QEMU_HINT: &str = "\
install QEMU 10 from bookworm-backports:
  apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86
(the bookworm-backports suite must be in apt's sources; scripts/setup.sh adds it)";

/// Lines on the console that mean the kernel itself failed.
const KERNEL_FAILURES: &[&str] = &["Kernel panic", "BUG: ", "Oops: ", "Oops ["];

/// Printed by the init script (`xtask/vm/init.sh`).
const INIT_MARK: &str = "GUARD-VM-INIT: ";
const RESULT_MARK: &str = "GUARD-VM-RESULT: ";

/// How long QEMU may take to power off after the result line.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// Checks that QEMU is installed and new enough; returns its version line.
pub fn check_version() -> anyhow::Result<String> {
    let out = match Command::new(QEMU).arg("--version").output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{QEMU} is not installed: {QEMU_HINT}")
        }
        Err(e) => return Err(e).context(format!("run {QEMU} --version")),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    match parse_version(&line) {
        Some((major, _)) if major >= MIN_MAJOR => Ok(line),
        Some(_) => bail!(
            "{QEMU} is too old ({line}): QEMU 7.2 crashes about 40% of boots of the 6.12 kernel; \
             {QEMU_HINT}"
        ),
        None => bail!("cannot read the version of {QEMU} from {line:?}; {QEMU_HINT}"),
    }
}

/// `(major, minor)` from `QEMU emulator version 10.0.2 (Debian ...)`.
fn parse_version(line: &str) -> Option<(u32, u32)> {
    let v = line.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Probe: KVM where it can run a stock kernel, else TCG.
    Auto,
    /// Software emulation (`-accel tcg -cpu max`); slow but works everywhere.
    Tcg,
    /// Hardware virtualization (`-accel kvm -cpu host`).
    Kvm,
}

impl Accel {
    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg | Accel::Auto => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Resolves `auto`: KVM only when the CPU has vmx/svm, `kvm_pvm` is not loaded (this kind of host
/// nests through PVM, whose `/dev/kvm` opens but cannot run a stock kernel) and `/dev/kvm` creates
/// a VM. Returns the choice and why.
pub fn choose_accel(asked: Accel) -> (Accel, String) {
    if asked != Accel::Auto {
        return (asked, "asked for with --accel".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !has_virt_flag(&cpuinfo) {
        return (Accel::Tcg, "no vmx/svm flag in /proc/cpuinfo".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (
            Accel::Tcg,
            "kvm_pvm is loaded (nested PVM cannot run a stock kernel)".into(),
        );
    }
    match kvm_works() {
        Ok(()) => (
            Accel::Kvm,
            "vmx/svm present and /dev/kvm creates a VM".into(),
        ),
        Err(why) => (Accel::Tcg, format!("/dev/kvm unusable: {why}")),
    }
}

fn has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Opens `/dev/kvm`, checks the API version and creates (and drops) an empty VM.
fn kvm_works() -> Result<(), String> {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| e.to_string())?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let api = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if api != 12 {
        return Err(format!("KVM API version {api}, expected 12"));
    }
    // SAFETY: KVM_CREATE_VM with machine type 0 returns a new fd or -1; nothing else is touched.
    let vm = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "KVM_CREATE_VM failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a fresh fd owned by nobody else; dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    Ok(())
}

/// One boot of one kernel.
pub struct Boot<'a> {
    /// The kernel to boot.
    pub kernel: &'a KernelImage,
    /// The initramfs.
    pub initrd: &'a Path,
    /// TCG or KVM (already resolved).
    pub accel: Accel,
    /// `KEY=VAL` words for the kernel command line (they reach init's environment).
    pub env: &'a [String],
    /// Until the result line.
    pub timeout: Duration,
    /// Until init's first line.
    pub boot_timeout: Duration,
    /// The serial log (overwritten).
    pub log: PathBuf,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every test binary passed.
    Pass,
    /// A test binary failed (the reason from the result line).
    Fail(String),
    /// The harness, QEMU or the kernel failed: the tests said nothing either way.
    Infra(String),
}

/// What a boot measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Host time from starting QEMU to init's first line.
    pub to_init: Option<Duration>,
    /// Guest uptime (seconds) when init started.
    pub guest_init: Option<f64>,
    /// Host time from starting QEMU to its exit.
    pub total: Duration,
}

impl Boot<'_> {
    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut append = vec![
            "console=ttyS0",
            "quiet",
            "panic=-1",
            "lsm=landlock,lockdown,yama,integrity,bpf",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        append.push(format!("GUARD_VM_KERNEL={}", self.kernel.spec.label));
        append.extend(self.env.iter().cloned());
        let mut c = Command::new(QEMU);
        c.args(self.accel.qemu_args())
            .args(["-smp", "2", "-m", "2G", "-nographic", "-no-reboot"])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(append.join(" "));
        c
    }

    /// Boots, streams the console to the terminal (prefixed) and the log, and classifies the end.
    pub fn run(&self) -> anyhow::Result<Report> {
        let label = self.kernel.spec.label;
        let mut log =
            File::create(&self.log).with_context(|| format!("create {}", self.log.display()))?;
        let mut cmd = self.command();
        writeln!(log, "# {}", super::shell_line(&cmd))?;
        let t0 = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {QEMU}"))?;
        let (tx, rx) = mpsc::channel::<Msg>();
        if let Some(out) = child.stdout.take() {
            forward(out, tx.clone(), Msg::Out);
        }
        if let Some(err) = child.stderr.take() {
            forward(err, tx.clone(), Msg::Err);
        }
        drop(tx);

        let mut watch = Watch::default();
        let deadline = t0 + self.timeout;
        let mut killed: Option<String> = None;
        loop {
            let now = Instant::now();
            let why = if now >= deadline {
                Some(format!(
                    "no result within {}s (--timeout)",
                    self.timeout.as_secs()
                ))
            } else if watch.to_init.is_none() && now >= t0 + self.boot_timeout {
                Some(format!(
                    "the kernel did not start /init within {}s",
                    self.boot_timeout.as_secs()
                ))
            } else if watch.result_at.is_some_and(|at| now >= at + EXIT_GRACE) {
                Some(format!(
                    "QEMU did not exit within {}s of the result line",
                    EXIT_GRACE.as_secs()
                ))
            } else {
                None
            };
            if let Some(why) = why {
                // Our own child, by its handle.
                let _ = child.kill();
                writeln!(log, "# killed QEMU: {why}")?;
                println!("vm-test: {label}: killing QEMU: {why}");
                killed = Some(why);
                break;
            }
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(msg) => {
                    let (line, from_qemu) = match &msg {
                        Msg::Out(l) => (l.as_str(), false),
                        Msg::Err(l) => (l.as_str(), true),
                    };
                    let at = t0.elapsed();
                    let tag = if from_qemu { " qemu" } else { "" };
                    writeln!(log, "+{:8.3}s{tag} {line}", at.as_secs_f64())?;
                    println!("[{label}{tag}] {line}");
                    if !from_qemu {
                        watch.line(line, at);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().context("wait for QEMU")?;
        let total = t0.elapsed();
        writeln!(log, "# QEMU {status} after {:.1}s", total.as_secs_f64())?;
        let outcome = watch.outcome(killed, status.success());
        Ok(Report {
            outcome,
            to_init: watch.to_init,
            guest_init: watch.guest_init,
            total,
        })
    }
}

enum Msg {
    Out(String),
    Err(String),
}

/// Sends every line of `r` (lossy UTF-8, `\r` trimmed) until EOF.
fn forward(r: impl std::io::Read + Send + 'static, tx: mpsc::Sender<Msg>, wrap: fn(String) -> Msg) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = printable(&String::from_utf8_lossy(&buf));
                    if tx.send(wrap(line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// `line` without terminal escape sequences and control characters (SeaBIOS resets and clears
/// the screen; that must not reach the developer's terminal).
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next_if_eq(&'[').is_some() {
                    // CSI: parameters and intermediates, then one final byte in @..~.
                    for p in chars.by_ref() {
                        if ('@'..='~').contains(&p) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What the console said so far.
#[derive(Default, Debug)]
struct Watch {
    to_init: Option<Duration>,
    guest_init: Option<f64>,
    results: Vec<String>,
    result_at: Option<Instant>,
    kernel_failure: Option<String>,
}

impl Watch {
    fn line(&mut self, line: &str, at: Duration) {
        if let Some(rest) = after(line, INIT_MARK) {
            if self.to_init.is_none() {
                self.to_init = Some(at);
                self.guest_init = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("uptime="))
                    .and_then(|u| u.parse().ok());
            }
        }
        if let Some(rest) = after(line, RESULT_MARK) {
            self.results.push(rest.trim().to_owned());
            self.result_at.get_or_insert_with(Instant::now);
        }
        if self.kernel_failure.is_none() && KERNEL_FAILURES.iter().any(|m| line.contains(m)) {
            self.kernel_failure = Some(line.trim().to_owned());
        }
    }

    fn outcome(&self, killed: Option<String>, qemu_ok: bool) -> Outcome {
        if let Some(k) = &self.kernel_failure {
            return Outcome::Infra(format!("the kernel failed: {k}"));
        }
        if let Some(why) = killed {
            return Outcome::Infra(why);
        }
        if !qemu_ok {
            return Outcome::Infra("QEMU exited with an error".into());
        }
        match self.results.as_slice() {
            [] if self.to_init.is_none() => {
                Outcome::Infra("the VM stopped before /init started".into())
            }
            [] => {
                Outcome::Infra("the VM stopped without a GUARD-VM-RESULT line (init died?)".into())
            }
            [one] if one == "PASS" => Outcome::Pass,
            [one] => match one.strip_prefix("FAIL") {
                Some(reason) => {
                    let reason = reason.trim();
                    match reason.strip_prefix("init:") {
                        Some(init) => {
                            Outcome::Infra(format!("the init script failed: {}", init.trim()))
                        }
                        None => Outcome::Fail(reason.to_owned()),
                    }
                }
                None => Outcome::Infra(format!("unreadable result line {one:?}")),
            },
            many => Outcome::Infra(format!("{} result lines: {many:?}", many.len())),
        }
    }
}

/// The text after `mark` when `line` contains it (kernel messages may precede it on the line).
fn after<'a>(line: &'a str, mark: &str) -> Option<&'a str> {
    line.find(mark).map(|i| &line[i + mark.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(lines: &[&str]) -> Watch {
        let mut w = Watch::default();
        for (i, l) in lines.iter().enumerate() {
            w.line(l, Duration::from_secs(i as u64));
        }
        w
    }

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)\r\n"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(printable("a\tb\u{7}c"), "a\tbc");
    }

    #[test]
    fn reads_qemu_versions() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some((10, 0))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some((7, 2))
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn virt_flags_are_whole_words() {
        assert!(has_virt_flag("flags\t\t: fpu vme vmx sse\n"));
        assert!(has_virt_flag("flags\t\t: fpu svm\n"));
        assert!(!has_virt_flag("flags\t\t: fpu vmxx\nmodel name: vmx\n"));
    }

    #[test]
    fn one_pass_line_passes_and_records_init_time() {
        let w = watch(&[
            "junk",
            "GUARD-VM-INIT: uptime=5.25",
            "GUARD-VM-RESULT: PASS",
        ]);
        assert_eq!(w.outcome(None, true), Outcome::Pass);
        assert_eq!(w.to_init, Some(Duration::from_secs(1)));
        assert_eq!(w.guest_init, Some(5.25));
    }

    #[test]
    fn a_fail_line_is_a_test_failure_unless_init_itself_failed() {
        let w = watch(&[
            "GUARD-VM-INIT: uptime=1",
            "GUARD-VM-RESULT: FAIL vm_smoke(exit 101)",
        ]);
        assert_eq!(
            w.outcome(None, true),
            Outcome::Fail("vm_smoke(exit 101)".into())
        );
        let w = watch(&[
            "GUARD-VM-INIT: uptime=1",
            "GUARD-VM-RESULT: FAIL init: cannot mount bpf",
        ]);
        assert!(matches!(w.outcome(None, true), Outcome::Infra(_)));
    }

    #[test]
    fn panics_missing_or_repeated_results_and_timeouts_are_infrastructure_failures() {
        let cases: &[&[&str]] = &[
            &[
                "GUARD-VM-INIT: uptime=1",
                "GUARD-VM-RESULT: PASS",
                "[ 9.1] Kernel panic - not syncing",
            ],
            &[
                "[ 1.0] BUG: kernel NULL pointer dereference",
                "GUARD-VM-RESULT: PASS",
            ],
            &[
                "[ 1.0] Oops: 0000 [#1] PREEMPT SMP NOPTI",
                "GUARD-VM-RESULT: PASS",
            ],
            &["GUARD-VM-INIT: uptime=1"],
            &[],
            &["GUARD-VM-RESULT: PASS", "GUARD-VM-RESULT: PASS"],
            &["GUARD-VM-RESULT: MAYBE"],
        ];
        for c in cases {
            assert!(
                matches!(watch(c).outcome(None, true), Outcome::Infra(_)),
                "{c:?}"
            );
        }
        let w = watch(&["GUARD-VM-INIT: uptime=1", "GUARD-VM-RESULT: PASS"]);
        assert!(matches!(
            w.outcome(Some("timeout".into()), true),
            Outcome::Infra(_)
        ));
        assert!(matches!(w.outcome(None, false), Outcome::Infra(_)));
    }

    #[test]
    fn a_result_after_kernel_noise_on_the_same_line_counts() {
        let w = watch(&[
            "GUARD-VM-INIT: uptime=1",
            "[  3.1] random: crng initGUARD-VM-RESULT: PASS",
        ]);
        assert_eq!(w.outcome(None, true), Outcome::Pass);
    }
}
