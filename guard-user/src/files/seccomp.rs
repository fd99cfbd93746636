//! The seccomp filter of the file hold, and the user-notification interface.
//!
//! The filter sends the file-destroying system calls to the supervisor (user notification) and
//! refuses io_uring. Only the native x86-64 entry is accepted: the 32-bit `int 0x80` entry and the
//! x32 ABI are refused with EPERM, so they cannot be used to get around the hold.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use super::FilesError;

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`: once received, a held call ignores non-fatal signals.
const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;
/// `SECCOMP_SET_MODE_FILTER`.
const SET_MODE_FILTER: libc::c_ulong = 1;

/// System calls that always go to the supervisor.
pub const HELD: &[&str] = &[
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "truncate",
    "ftruncate",
    "creat",
    "openat2",
    "link",
    "linkat",
];
/// System calls that go to the supervisor when their flags argument has O_TRUNC: (name, arg index).
pub const HELD_IF_TRUNC: &[(&str, u32)] = &[("open", 1), ("openat", 2)];
/// The calls that send a signal, with the index of their signal argument: with SIGCONT they go
/// to the exec guard (`[commands] hold`).
pub const SIGNAL_SENDERS: &[(&str, u32)] = &[
    ("kill", 1),
    ("tkill", 1),
    ("tgkill", 2),
    ("rt_sigqueueinfo", 1),
    ("rt_tgsigqueueinfo", 2),
    ("pidfd_send_signal", 1),
];
/// io_uring: its operations are invisible to seccomp, so it is refused unless a profile allows it
/// (on the LSM backend the hooks see io_uring workers and refuse them).
pub const IO_URING: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// The escape-relevant system calls every session refuses with EPERM (the baseline): loading
/// programs into the kernel, changing mounts, leaving the namespaces, keyrings, userfaultfd,
/// raw I/O ports, swap and reboot. `ptrace`, `unshare` and `clone` are limited by argument.
pub const BASELINE_DENY: &[&str] = &[
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "iopl",
    "ioperm",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "syslog",
    "vhangup",
];

/// What the filter does besides the baseline.
#[derive(Debug, Clone, Default)]
pub struct FilterOpts {
    /// Send the file-destroying calls to the supervisor (seccomp backend).
    pub notify: bool,
    /// Send connect(2) to the supervisor too (`hold_connect` with `--net host`).
    pub notify_connect: bool,
    /// Send every write-open and creation to the supervisor too (`protect_writes`).
    pub notify_writes: bool,
    /// `[commands] hold` (either backend): send kill(2)-family calls with SIGCONT to the
    /// supervisor (a process stopped at exec for a check must not be continued by the sandbox),
    /// and refuse ptrace and process_vm_writev (a tracer could resume it or rewrite its
    /// arguments).
    pub notify_sigcont: bool,
    /// Let io_uring be set up (never on the seccomp backend).
    pub allow_io_uring: bool,
    /// Baseline calls the profile allows after all.
    pub allow: Vec<String>,
    /// Further calls the profile refuses.
    pub deny: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> FilesError {
    FilesError::Seccomp(e.to_string())
}

/// Builds the filter as classic BPF bytes (loaded later with [`load`] or [`load_plain`]).
pub fn build(opts: &FilterOpts) -> Result<Vec<u8>, FilesError> {
    let mut f = ScmpFilterContext::new(ScmpAction::Allow).map_err(err)?;
    f.set_act_badarch(ScmpAction::Errno(libc::EPERM))
        .map_err(err)?;
    if opts.notify {
        for name in HELD {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            f.add_rule(ScmpAction::Notify, sc).map_err(err)?;
        }
        for (name, arg) in HELD_IF_TRUNC {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            let cmp = ScmpArgCompare::new(
                *arg,
                ScmpCompareOp::MaskedEqual(libc::O_TRUNC as u64),
                libc::O_TRUNC as u64,
            );
            f.add_rule_conditional(ScmpAction::Notify, sc, &[cmp])
                .map_err(err)?;
        }
    }
    if opts.notify && opts.notify_writes {
        // Opened for writing (O_WRONLY or O_RDWR) or created: each is a rule (rules are ORed).
        let acc = libc::O_ACCMODE as u64;
        let conds = [
            (acc, libc::O_WRONLY as u64),
            (acc, libc::O_RDWR as u64),
            (acc, acc),
            (libc::O_CREAT as u64, libc::O_CREAT as u64),
        ];
        for (name, arg) in HELD_IF_TRUNC {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            for (mask, val) in conds {
                let cmp = ScmpArgCompare::new(*arg, ScmpCompareOp::MaskedEqual(mask), val);
                f.add_rule_conditional(ScmpAction::Notify, sc, &[cmp])
                    .map_err(err)?;
            }
        }
    }
    if opts.notify && opts.notify_connect {
        let sc = ScmpSyscall::from_name("connect").map_err(err)?;
        f.add_rule(ScmpAction::Notify, sc).map_err(err)?;
    }
    if opts.notify_sigcont {
        // The signal number's argument; compared on its low 32 bits, as the kernel reads it.
        for (name, arg) in SIGNAL_SENDERS {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            let cmp = ScmpArgCompare::new(
                *arg,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                libc::SIGCONT as u64,
            );
            f.add_rule_conditional(ScmpAction::Notify, sc, &[cmp])
                .map_err(err)?;
        }
        for name in ["ptrace", "process_vm_writev"] {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            f.add_rule(ScmpAction::Errno(libc::EPERM), sc)
                .map_err(err)?;
        }
    }
    let eperm = ScmpAction::Errno(libc::EPERM);
    let allowed = |name: &str| opts.allow.iter().any(|a| a == name);
    let mut deny: Vec<&str> = BASELINE_DENY.to_vec();
    if !opts.allow_io_uring || opts.notify {
        deny.extend_from_slice(IO_URING);
    }
    deny.retain(|d| !allowed(d));
    if opts.notify {
        // On the seccomp backend io_uring would bypass the hold: no profile can allow it there.
        deny.extend_from_slice(IO_URING);
    }
    deny.extend(opts.deny.iter().map(String::as_str));
    deny.sort_unstable();
    deny.dedup();
    for name in deny {
        let sc = ScmpSyscall::from_name(name).map_err(err)?;
        f.add_rule(eperm, sc).map_err(err)?;
    }
    if !allowed("ptrace") && !opts.notify_sigcont {
        // Tracing one's own children (PTRACE_TRACEME, as debuggers start them) stays possible;
        // attaching to any other process does not.
        let sc = ScmpSyscall::from_name("ptrace").map_err(err)?;
        for req in [libc::PTRACE_ATTACH as u64, 0x4206 /* PTRACE_SEIZE */] {
            let cmp = ScmpArgCompare::new(0, ScmpCompareOp::Equal, req);
            f.add_rule_conditional(eperm, sc, &[cmp]).map_err(err)?;
        }
    }
    if !allowed("unshare") {
        // A new user namespace would hand the sandbox capabilities inside it.
        let user = libc::CLONE_NEWUSER as u64;
        for name in ["unshare", "clone"] {
            let sc = ScmpSyscall::from_name(name).map_err(err)?;
            let cmp = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(user), user);
            f.add_rule_conditional(eperm, sc, &[cmp]).map_err(err)?;
        }
        // clone3 passes its flags in memory, out of seccomp's sight: ENOSYS makes libc fall back
        // to clone, whose flags are checked above.
        let sc = ScmpSyscall::from_name("clone3").map_err(err)?;
        f.add_rule(ScmpAction::Errno(libc::ENOSYS), sc)
            .map_err(err)?;
    }
    let memfd =
        nix::sys::memfd::memfd_create(c"guard-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| FilesError::Sys {
                what: "memfd_create",
                source: e.into(),
            })?;
    f.export_bpf(&memfd).map_err(err)?;
    let mut file = std::fs::File::from(memfd);
    use std::io::{Read, Seek};
    file.seek(io::SeekFrom::Start(0))
        .map_err(|e| FilesError::Sys {
            what: "seek",
            source: e,
        })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| FilesError::Sys {
        what: "read filter",
        source: e,
    })?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(FilesError::Seccomp(format!(
            "exported filter has {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Loads a filter built by [`build`] on the calling thread and returns the notification fd.
/// no_new_privs must be set (or the caller must have CAP_SYS_ADMIN).
pub fn load(bpf: &[u8]) -> Result<OwnedFd, FilesError> {
    let fd = install(bpf, FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV)?;
    // SAFETY: with NEW_LISTENER the kernel returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads a filter built by [`build`] without notifications (no listener).
pub fn load_plain(bpf: &[u8]) -> Result<(), FilesError> {
    install(bpf, 0).map(|_| ())
}

fn install(bpf: &[u8], flags: libc::c_ulong) -> Result<i64, FilesError> {
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points to a valid filter that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(FilesError::Sys {
            what: "seccomp(SET_MODE_FILTER)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(r)
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompData {
    /// System call number.
    pub nr: i32,
    /// AUDIT_ARCH_* value.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Arguments.
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Notif {
    /// Cookie of this notification.
    pub id: u64,
    /// Thread id (in the supervisor's pid namespace).
    pub pid: u32,
    /// Unused.
    pub flags: u32,
    /// The call.
    pub data: SeccompData,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct NotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

const IOCTL_RECV: libc::c_ulong = 0xC050_2100;
const IOCTL_SEND: libc::c_ulong = 0xC018_2101;
const IOCTL_ID_VALID: libc::c_ulong = 0x4008_2102;
const IOCTL_ADDFD: libc::c_ulong = 0x4018_2103;
/// SECCOMP_IOCTL_NOTIF_SET_FLAGS = SECCOMP_IOW(4, __u64).
const IOCTL_SET_FLAGS: libc::c_ulong = 0x4008_2104;
/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP.
const FD_SYNC_WAKE_UP: libc::c_ulong = 1;
const RESP_FLAG_CONTINUE: u32 = 1;
const ADDFD_FLAG_SEND: u32 = 1 << 1;

/// The supervisor's end of a seccomp filter.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    /// Wraps a notification fd.
    pub fn new(fd: OwnedFd) -> Self {
        Listener(fd)
    }

    /// Asks the kernel (6.6+) to hand over synchronously between the notifying thread and the
    /// supervisor (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP): the woken side runs on the waker's CPU
    /// instead of waking an idle one, which on a virtual machine costs a round trip through
    /// the hypervisor per notification. Only scheduling changes; false when the kernel does not
    /// know the flag (then nothing changed).
    pub fn sync_wake_up(&self) -> bool {
        // SAFETY: an integer argument; an unknown flag is refused with EINVAL, changing nothing.
        unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP) == 0 }
    }

    /// Waits for the next notification. `Ok(None)` when the call was interrupted or the
    /// notifying task went away before it was read.
    pub fn recv(&self) -> io::Result<Option<Notif>> {
        let mut n = Notif::default();
        // SAFETY: n is a properly sized, zeroed seccomp_notif.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_RECV, &mut n as *mut Notif) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n))
    }

    fn send(&self, resp: &NotifResp) -> io::Result<()> {
        // SAFETY: resp is a valid seccomp_notif_resp.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_SEND, resp as *const NotifResp) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets the call run as the process made it.
    pub fn allow(&self, id: u64) -> io::Result<()> {
        self.send(&NotifResp {
            id,
            val: 0,
            error: 0,
            flags: RESP_FLAG_CONTINUE,
        })
    }

    /// Makes the call return `val` (success) without running it.
    pub fn ret(&self, id: u64, val: i64) -> io::Result<()> {
        self.send(&NotifResp {
            id,
            val,
            error: 0,
            flags: 0,
        })
    }

    /// Makes the call fail with `errno`.
    pub fn fail(&self, id: u64, errno: i32) -> io::Result<()> {
        self.send(&NotifResp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        })
    }

    /// Installs `fd` in the process and makes the call return its number.
    pub fn ret_fd(&self, id: u64, fd: RawFd, cloexec: bool) -> io::Result<()> {
        let a = NotifAddfd {
            id,
            flags: ADDFD_FLAG_SEND,
            srcfd: fd as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: a is a valid seccomp_notif_addfd.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_ADDFD, &a as *const NotifAddfd) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// True when no task uses the filter any more (the listener polls as hung up): no
    /// notification can come again, as only a filtered task can make another.
    pub fn orphaned(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & libc::POLLHUP != 0
    }

    /// True while the notification is still pending (its task has not gone away).
    pub fn valid(&self, id: u64) -> bool {
        // SAFETY: id is a valid u64.
        unsafe { libc::ioctl(self.0.as_raw_fd(), IOCTL_ID_VALID, &id as *const u64) == 0 }
    }
}
