//! `sandbox doctor`: what this host supports, checked by trying it, and what to do about what
//! is missing.

use serde::Serialize;

/// One check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it works.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it does not work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
        fix: if ok { None } else { fix.map(str::to_string) },
    }
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads the LSM list where securityfs is not mounted: mounts it in a private mount namespace
/// of a short-lived child.
fn lsm_list_private() -> Option<String> {
    let (r, w) = nix::unistd::pipe().ok()?;
    // SAFETY: the child only calls async-signal-safe functions and exits.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
                && nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .is_ok()
                && nix::mount::mount(
                    Some("securityfs"),
                    "/sys/kernel/security",
                    Some("securityfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .is_ok();
            if ok {
                if let Ok(s) = std::fs::read("/sys/kernel/security/lsm") {
                    let _ = nix::unistd::write(&w, &s);
                }
            }
            // SAFETY: leave the forked copy without running destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut out);
            let _ = nix::sys::wait::waitpid(child, None);
            let out = out.trim().to_string();
            (!out.is_empty()).then_some(out)
        }
    }
}

/// Whether a new network namespace with loopback up can be made (in a short-lived child).
fn netns_works() -> Result<(), String> {
    // SAFETY: the child only makes system calls and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                && crate::netns::loopback_up().is_ok();
            // SAFETY: leave the forked copy without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            _ => Err("unshare(CLONE_NEWNET) or bringing lo up failed".into()),
        },
    }
}

fn landlock_abi() -> Option<i64> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) takes no pointer.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
    (v > 0).then_some(v)
}

/// Runs every check. Returns them and the backend `--backend auto` picks (None: neither works).
pub fn checks() -> (Vec<Check>, Option<&'static str>) {
    let mut v = Vec::new();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    v.push(check("kernel", true, kernel, None));
    let root = nix::unistd::geteuid().is_root();
    v.push(check(
        "root",
        root,
        if root {
            "running as root"
        } else {
            "not root: probes that load programs fail"
        },
        Some("run `sudo sandbox doctor`"),
    ));
    let lsms = read("/sys/kernel/security/lsm")
        .or_else(lsm_list_private)
        .unwrap_or_default();
    let listed = lsms.split(',').any(|l| l == "bpf");
    v.push(check(
        "lsm list",
        listed,
        if lsms.is_empty() {
            "securityfs not readable".to_string()
        } else {
            lsms.clone()
        },
        Some("add `lsm=...,bpf` (keeping the existing list) to the kernel command line and reboot"),
    ));
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    v.push(check(
        "btf",
        btf,
        if btf {
            "/sys/kernel/btf/vmlinux"
        } else {
            "missing"
        },
        Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
    ));
    let lsm = crate::files::lsm::probe();
    let lsm_ok = lsm.is_ok();
    let lsm_detail = match &lsm {
        Ok(()) => "an LSM program loaded".to_string(),
        Err(e) => format!("refused: {e}: {}", crate::launch::error_chain(e)),
    };
    let lsm_fix = if listed {
        "this host refuses BPF LSM programs although `bpf` is listed (e.g. hypervisor or lockdown policy): the seccomp backend is used"
    } else {
        "enable BPF LSM (`lsm=...,bpf` on the kernel command line); until then the seccomp backend is used"
    };
    v.push(check("bpf lsm programs", lsm_ok, lsm_detail, Some(lsm_fix)));
    let exec = crate::exec::ExecObserver::load();
    v.push(check(
        "exec tracepoint (tp_btf)",
        exec.is_ok(),
        match &exec {
            Ok(_) => "tp_btf/sched_process_exec loaded".to_string(),
            Err(e) => format!("{e}: {}", crate::launch::error_chain(e)),
        },
        Some("needs BTF and CAP_BPF/CAP_PERFMON (root)"),
    ));
    drop(exec);
    let cg = crate::cgroup::mount_point();
    v.push(check(
        "cgroup v2",
        cg.is_ok(),
        match &cg {
            Ok(p) => p.display().to_string(),
            Err(e) => e.to_string(),
        },
        Some("mount cgroup2 (systemd does; or `mount -t cgroup2 none /sys/fs/cgroup/unified`)"),
    ));
    let actions = read("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let notif = actions.split_whitespace().any(|a| a == "user_notif");
    v.push(check(
        "seccomp user notification",
        notif,
        actions,
        Some("needs Linux 5.0+ with CONFIG_SECCOMP_FILTER"),
    ));
    let abi = landlock_abi();
    let ll_ok = abi.is_some_and(|a| a >= 3);
    v.push(check(
        "landlock",
        ll_ok,
        match abi {
            Some(a) => format!("ABI {a}{}", if a < 3 { " (truncate needs ABI 3, Linux 6.2)" } else { "" }),
            None => "not available".into(),
        },
        Some("enable Landlock (`lsm=landlock,...`, Linux 6.2+ for ABI 3); the seccomp backend needs it"),
    ));
    let userns = read("/proc/sys/user/max_user_namespaces")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    v.push(check(
        "user namespaces",
        userns > 0,
        format!("max_user_namespaces={userns}"),
        Some("sysctl user.max_user_namespaces=15000"),
    ));
    let netns = netns_works();
    v.push(check(
        "network namespace",
        netns.is_ok(),
        match &netns {
            Ok(()) => "a new namespace with loopback up (--net proxy, the default, and --net none)"
                .to_string(),
            Err(e) => e.clone(),
        },
        Some("needs CONFIG_NET_NS and CAP_SYS_ADMIN; without it only `--net host` works"),
    ));
    let backstop = crate::netguard::probe();
    v.push(check(
        "cgroup connect4/6",
        backstop.is_ok(),
        match &backstop {
            Ok(()) => {
                "cgroup sock_addr programs load (hold_connect backstop with --net host)".to_string()
            }
            Err(e) => e.to_string(),
        },
        Some("needs CONFIG_CGROUP_BPF; without it hold_connect with --net host cannot start"),
    ));
    let uring = read("/proc/sys/kernel/io_uring_disabled");
    v.push(check(
        "io_uring",
        true,
        match uring.as_deref() {
            Some("0") | None => "enabled on the host (refused inside seccomp sessions; LSM holds io_uring workers with EPERM)",
            Some(_) => "disabled or restricted on the host",
        },
        None,
    ));
    let seccomp_ok = notif && ll_ok && cg.is_ok();
    let backend = if lsm_ok && cg.is_ok() && btf {
        Some("lsm")
    } else if seccomp_ok {
        Some("seccomp")
    } else {
        None
    };
    (v, backend)
}

/// Prints the report. Exit 0 when some backend works, 1 otherwise.
pub fn cmd_doctor(json: bool) -> u8 {
    let (checks, backend) = checks();
    if json {
        let v = serde_json::json!({"checks": checks, "backend": backend});
        println!("{v}");
    } else {
        for c in &checks {
            println!(
                "{:<4} {:<28} {}",
                if c.ok { "ok" } else { "--" },
                c.name,
                c.detail
            );
            if let Some(f) = &c.fix {
                println!("{:<4} {:<28} -> {}", "", "", f);
            }
        }
        match backend {
            Some(b) => println!("\nbackend: {b} (what `sandbox run --backend auto` uses)"),
            None => println!("\nno backend works on this host: sandbox run would refuse to start"),
        }
    }
    if backend.is_some() {
        0
    } else {
        1
    }
}
