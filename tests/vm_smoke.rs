//! Proves the VM harness (`cargo xtask vm-test`): the VM is what it should be, BPF LSM programs
//! load and enforce there, and the real `sandbox` runs there.
//!
//! These tests do something only inside the harness's VMs (`GUARD_IN_VM=1`); anywhere else each
//! one says why it skips. The target has `test = false`: the host's `cargo test` never runs it.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::CStr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use common::{text, World};

/// Generous: syscalls are about 25x slower under TCG.
const T: Duration = Duration::from_secs(120);

/// True inside the harness's VM; otherwise prints why the test skips.
fn in_vm() -> bool {
    if std::env::var("GUARD_IN_VM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIP: not inside the VM harness (GUARD_IN_VM is not 1); run `cargo xtask vm-test`");
    false
}

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    assert_eq!(unsafe { libc::uname(&mut u) }, 0);
    // SAFETY: uname NUL-terminates the field.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let rel = kernel_release();
    let mut it = rel.split(['.', '-', '+']);
    let major = it.next().and_then(|s| s.parse().ok()).unwrap();
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap();
    (major, minor)
}

/// The Landlock ABI version (0 when Landlock is unavailable).
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr and size 0 this only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// The mount points of each file system type, from /proc/self/mountinfo.
fn mounted(fstype: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mnt = left.split(' ').nth(4)?;
            (right.split(' ').next()? == fstype).then(|| mnt.to_owned())
        })
        .collect()
}

#[test]
fn the_vm_boots_the_kernel_named_on_its_command_line_with_what_the_tests_need() {
    if !in_vm() {
        return;
    }
    let label = std::env::var("GUARD_VM_KERNEL").expect("GUARD_VM_KERNEL from the command line");
    let release = kernel_release();
    assert!(
        release.starts_with(&format!("{label}.")),
        "booted {release}, the harness asked for {label}"
    );
    assert_eq!(std::env::var("CI").as_deref(), Ok("true"));
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "tests run as root in the VM");
    let init = std::fs::read("/proc/1/cmdline").unwrap();
    assert!(
        String::from_utf8_lossy(&init).contains("/init"),
        "pid 1 is not the harness's /init: {init:?}"
    );
    for (fstype, at) in [
        ("cgroup2", "/sys/fs/cgroup"),
        ("bpf", "/sys/fs/bpf"),
        ("securityfs", "/sys/kernel/security"),
        ("tmpfs", "/tmp"),
    ] {
        assert!(
            mounted(fstype).iter().any(|m| m == at),
            "{fstype} is not mounted on {at}: {:?}",
            mounted(fstype)
        );
    }
    assert!(std::path::Path::new("/sys/kernel/btf/vmlinux").exists());
    // The C helpers come prebuilt and static: the VM has no compiler.
    let progs = std::env::var("GUARD_PROGS_DIR").expect("GUARD_PROGS_DIR");
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "A").unwrap();
    std::fs::write(&b, "B").unwrap();
    let out = std::process::Command::new(format!("{progs}/renameat2"))
        .arg(&a)
        .arg(&b)
        .arg("exchange")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "B");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "A");
}

/// The type id of the BTF `FUNC` named `name` in the kernel's own BTF.
fn vmlinux_func_id(name: &str) -> Option<u32> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    let u32_at = |o: usize| Some(u32::from_le_bytes(btf.get(o..o + 4)?.try_into().ok()?));
    if btf.get(..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let strings = btf.get(hdr_len + str_off..)?;
    let mut pos = hdr_len + type_off;
    let end = pos + type_len;
    let mut id = 1u32;
    while pos < end {
        let (name_off, info) = (u32_at(pos)? as usize, u32_at(pos + 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        const FUNC: u32 = 12;
        if kind == FUNC {
            let n = CStr::from_bytes_until_nul(strings.get(name_off..)?).ok()?;
            if n.to_bytes() == name.as_bytes() {
                return Some(id);
            }
        }
        let extra = match kind {
            1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
            3 => 12,                   // ARRAY
            4 | 5 => 12 * vlen,        // STRUCT, UNION
            6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
            15 | 19 => 12 * vlen,      // DATASEC, ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            _ => return None,
        };
        pos += 12 + extra;
        id += 1;
    }
    None
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `core_relo_cnt` (no implicit padding).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    core_relo_cnt: u32,
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
struct RawTpOpen {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialized bpf_attr prefix of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Loads `r0 = -EPERM; exit` as a BPF LSM program on `path_unlink` and attaches it; every unlink
/// on the machine fails while the returned link is open.
fn deny_all_unlinks() -> Result<(OwnedFd, OwnedFd), String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_LSM: u32 = 29;
    const BPF_LSM_MAC: u32 = 27;
    let btf_id = vmlinux_func_id("bpf_lsm_path_unlink").ok_or("no bpf_lsm_path_unlink in BTF")?;
    // mov64 r0, -1 (EPERM); exit
    let insns: [u8; 16] = [
        0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x95, 0, 0, 0, 0, 0, 0, 0,
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 1 << 16];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"vm_smoke\0");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_LSM,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_LSM_MAC,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &attr).map_err(|e| {
        let log = CStr::from_bytes_until_nul(&log)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("BPF_PROG_LOAD (lsm/path_unlink): {e}; verifier log: {log}")
    })?;
    use std::os::fd::AsRawFd;
    let open = RawTpOpen {
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    let link =
        bpf(BPF_RAW_TRACEPOINT_OPEN, &open).map_err(|e| format!("attach lsm/path_unlink: {e}"))?;
    Ok((prog, link))
}

#[test]
fn a_bpf_lsm_program_loads_and_denies_unlink_and_the_sandbox_binary_runs() {
    if !in_vm() {
        return;
    }
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap();
    assert!(
        lsm.trim().split(',').any(|l| l == "bpf"),
        "bpf is not an active LSM: {lsm}"
    );
    let out = std::process::Command::new(common::bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("sandbox "),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let f = dir.path().join("victim");
    std::fs::write(&f, "x").unwrap();
    let (prog, link) = deny_all_unlinks().unwrap();
    let denied = std::fs::remove_file(&f);
    drop(link);
    drop(prog);
    let e = denied.expect_err("unlink succeeded under a denying LSM program");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(f.exists());
    std::fs::remove_file(&f).expect("unlink after the program is detached");
}

/// The seccomp backend (asked for by name: in the VM `auto` would pick the LSM backend).
#[test]
fn protected_rm_is_held_until_denied_on_6_12_and_refused_for_landlock_abi_2_on_6_1() {
    if !in_vm() {
        return;
    }
    let version = kernel_version();
    let abi = landlock_abi();
    match version {
        (6, 1) => assert_eq!(abi, 2, "Landlock ABI on 6.1"),
        (6, 12) => assert_eq!(abi, 6, "Landlock ABI on 6.12"),
        _ => {}
    }
    let w = World::new();
    let f = w.file("x/p/f", "keep");
    let prot = w.work.join("x/p");
    let seccomp = ["--backend", "seccomp"];
    let r = w.run(
        "vm-hold",
        &[&prot],
        &seccomp,
        &format!("rm {}", f.display()),
    );
    if abi < 3 {
        // No Landlock truncate right: the seccomp backend refuses to run unguarded.
        let out = r.finish(T);
        assert_eq!(out.status.code(), Some(125), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .to_lowercase()
                .contains("landlock"),
            "{}",
            text(&out)
        );
    } else {
        let h = w.wait_hold("vm-hold", T);
        assert_eq!(h["kind"], "unlink");
        assert_eq!(h["target"], f.display().to_string());
        w.decide("deny", h["id"].as_str().unwrap(), &[]);
        let out = r.finish(T);
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "{}",
            text(&out)
        );
    }
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
}
