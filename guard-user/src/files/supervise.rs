//! The seccomp backend's supervisor: answers every notification of the file-hold filter.
//!
//! Unprotected targets continue at once (a racing thread cannot turn that into the deletion of a
//! protected file: Landlock forbids it to the sandbox). Protected targets become holds. Entries the
//! sandbox may change but Landlock cannot grant (directly inside an ancestor directory of a
//! protected root), and approved operations, are performed by the supervisor itself on a pinned
//! directory handle, with the process's file-system credentials.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::resolve::{self, PinnedDir, Target};
use super::seccomp::{Listener, Notif};
use super::{Class, Protection, WriteClass};
use crate::hold::{HoldBackend, HoldInfo, Holds, ProcKey, Verdict};
use crate::report::Reporter;

/// A resolved operation the supervisor can carry out on the process's behalf.
#[derive(Debug)]
pub enum Op {
    /// unlinkat(dir, name, flags).
    Unlink {
        /// Where.
        at: Target,
        /// AT_REMOVEDIR or 0.
        flags: i32,
    },
    /// renameat2(from, to, flags).
    Rename {
        /// Source entry.
        from: Target,
        /// Destination entry.
        to: Target,
        /// RENAME_* flags.
        flags: u32,
    },
    /// linkat(from, to, 0).
    Link {
        /// Existing entry.
        from: Target,
        /// New entry.
        to: Target,
    },
    /// Reopen an object for writing and truncate it (truncate(2) and ftruncate(2)).
    Truncate {
        /// O_PATH handle of the file.
        obj: OwnedFd,
        /// New length.
        len: i64,
    },
    /// Reopen an object with the caller's flags (O_TRUNC included) and hand the fd back.
    Open {
        /// O_PATH handle of the file.
        obj: OwnedFd,
        /// open(2) flags.
        flags: i32,
    },
    /// Create a new entry with open(2) (O_CREAT) and hand the fd back: the entry is not there
    /// yet, so there is no object to reopen.
    Create {
        /// Where the entry is to be made.
        at: Target,
        /// open(2) flags.
        flags: i32,
        /// The mode argument (the process's umask applies).
        mode: u32,
    },
    /// connect(2) the process's own socket (a duplicate, from pidfd_getfd) to a held endpoint.
    Connect {
        /// The socket.
        sock: OwnedFd,
        /// The sockaddr the process passed, as read.
        addr: Vec<u8>,
    },
}

/// The `root` of connect holds (no protected root: standing decisions of the same process
/// cover its other held connects).
pub const CONNECT_ROOT: usize = usize::MAX;

/// A held operation waiting for its decision.
#[derive(Debug)]
pub struct Pending {
    /// The notification to answer.
    pub notif: u64,
    /// The thread that made the call.
    pub tid: u32,
    /// What to do if approved.
    pub op: Op,
}

/// File-system credentials of a process: who it acts as.
#[derive(Debug, Clone)]
pub struct Creds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    umask: u32,
    /// The thread can never act as anyone else: no permitted capabilities, no_new_privs, and
    /// one uid and one gid in all four places (setresuid/setfsuid can only pick among those, and
    /// setgroups needs CAP_SETGID). Only such credentials are cached ([`CredCache`]).
    locked: bool,
}

impl Creds {
    /// Reads the fs uid/gid and supplementary groups of thread `tid`.
    pub fn of(tid: u32) -> io::Result<Creds> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
        let field = |key: &str, idx: usize| -> Option<u32> {
            status
                .lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(idx)?
                .parse()
                .ok()
        };
        let groups = status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // Octal; a kernel without the field gets the most restrictive usual mask.
        let umask = status
            .lines()
            .find(|l| l.starts_with("Umask:"))
            .and_then(|l| u32::from_str_radix(l.split_whitespace().nth(1)?, 8).ok())
            .unwrap_or(0o077);
        let all_same = |key: &str| -> bool {
            let v: Vec<Option<u32>> = (1..=4).map(|i| field(key, i)).collect();
            v.iter().all(|x| x.is_some() && *x == v[0])
        };
        let hex_zero = |key: &str| -> bool {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b == b'0'))
        };
        let locked = all_same("Uid:")
            && all_same("Gid:")
            && hex_zero("CapPrm:")
            && field("NoNewPrivs:", 1) == Some(1);
        match (field("Uid:", 4), field("Gid:", 4)) {
            (Some(uid), Some(gid)) => Ok(Creds {
                uid,
                gid,
                groups,
                umask,
                locked,
            }),
            _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }
}

/// Credentials of threads that can never change them ([`Creds::locked`]), by thread id, so an
/// operation the supervisor performs for them does not parse `/proc/TID/status` (the largest
/// part of its cost). An entry is used only while `/proc/TID` is the same inode: a thread id
/// reused by a new task gets a new procfs inode, so it is read afresh. The umask is not cached
/// (any process may change it): a creation reads [`Creds::of`].
#[derive(Debug, Default)]
pub struct CredCache(std::sync::Mutex<std::collections::HashMap<u32, (u64, Creds)>>);

impl CredCache {
    /// Entries kept at most; the cache starts over beyond.
    const MAX: usize = 4096;

    /// The fs credentials of thread `tid` (its umask may be stale).
    pub fn get(&self, tid: u32) -> io::Result<Creds> {
        let ino = proc_inode(tid)?;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((i, c)) = map.get(&tid) {
            if *i == ino {
                return Ok(c.clone());
            }
        }
        // Read after the inode: if the thread id changed hands in between, the entry's inode
        // is the old task's and the next lookup reads again.
        let c = Creds::of(tid)?;
        if c.locked {
            if map.len() >= Self::MAX {
                map.clear();
            }
            map.insert(tid, (ino, c.clone()));
        } else {
            map.remove(&tid);
        }
        Ok(c)
    }
}

/// The inode number of `/proc/TID`: it identifies the task while it lives.
fn proc_inode(tid: u32) -> io::Result<u64> {
    let p = CString::new(format!("/proc/{tid}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: zeroed stat is valid; the path is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(p.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAP_V3: u32 = 0x2008_0522;

thread_local! {
    /// The supplementary groups [`as_process`] last gave this thread (None: not known). They
    /// are left in place afterwards: a thread acting as root with its capabilities is not
    /// limited by its groups, and a session's processes usually all have the same ones, so
    /// setgroups(2) (a copy and an RCU free of the credentials, twice per operation) is called
    /// only when they differ.
    static GROUPS: std::cell::RefCell<Option<Vec<u32>>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// The fs uid and gid [`as_process_kept`] left this thread with (None: root's, 0 and 0).
    static KEPT: std::cell::Cell<Option<(u32, u32)>> = const { std::cell::Cell::new(None) };
}

/// Gives this thread root's fs uid and gid back if [`as_process_kept`] left it with a process's
/// (which also restores the file-system capabilities). Everything the supervisor does other than
/// the removals of [`Supervisor::fast_removal`] runs after this.
fn restore_fs_ids() {
    if KEPT.take().is_some() {
        // SAFETY: per-thread credential calls without pointers.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, 0u32);
            libc::syscall(libc::SYS_setfsgid, 0u32);
        }
    }
}

/// Runs `f` (a removal of a directory entry) with the fs uid, gid and groups of `c`, a process
/// whose credentials are [`Creds::locked`] and not root's, and leaves the thread with them: the
/// next removal for the same credentials needs no credential change at all (four of them, each
/// a copy and an RCU free of the credentials, cost about as much as the removal itself).
/// Setting a non-zero fs uid clears the file-system capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER,
/// ...) from the effective set; no other capability bears on unlink(2)/rmdir(2).
/// [`restore_fs_ids`] undoes it.
fn as_process_kept<R>(c: &Creds, f: impl FnOnce() -> R) -> io::Result<R> {
    if c.uid == 0 || !c.locked {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    if GROUPS.with_borrow(|g| g.as_deref() != Some(&c.groups[..])) {
        restore_fs_ids();
        GROUPS.set(None);
        // SAFETY: a valid group list; the raw call changes this thread only.
        if unsafe { libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        GROUPS.set(Some(c.groups.clone()));
    }
    if KEPT.get() != Some((c.uid, c.gid)) {
        // SAFETY: per-thread credential calls without pointers. The gid first: a non-zero fs
        // uid takes away the capability that may be needed to set it.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, 0u32);
            libc::syscall(libc::SYS_setfsgid, c.gid);
            libc::syscall(libc::SYS_setfsuid, c.uid);
        }
        // Check that both took (setfsuid/setfsgid return the previous value, not an error).
        // SAFETY: as above; -1 changes nothing and returns the current value.
        let (u, g) = unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
                libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            )
        };
        KEPT.set(Some((u, g)));
        if (u, g) != (c.uid, c.gid) {
            restore_fs_ids();
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(f())
}

/// Runs `f` on this thread with the fs credentials of `c` and no effective capabilities, so the
/// kernel checks permissions exactly as for the process. Restores the supervisor's fs uid and
/// gid and its capabilities (the supplementary groups stay: see [`GROUPS`]).
///
/// `removal_only`: `f` only removes a directory entry. For a process with a non-zero fs uid the
/// capability calls are then left out: setting a non-zero fs uid clears the file-system
/// capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_LINUX_IMMUTABLE, ...) from the effective set
/// and setting 0 again restores them (capabilities(7)), and no other capability bears on
/// unlink(2)/rmdir(2). Each credential change costs a copy and an RCU free of the credentials,
/// which is most of what a performed removal costs.
fn as_process<R>(c: &Creds, removal_only: bool, f: impl FnOnce() -> R) -> io::Result<R> {
    restore_fs_ids();
    let caps = !(removal_only && c.uid != 0);
    let groups = GROUPS.with_borrow(|g| g.as_deref() != Some(&c.groups[..]));
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut saved = [CapData::default(); 2];
    // SAFETY: raw per-thread credential calls with valid buffers. glibc's wrappers would
    // broadcast setgroups to every thread; the raw calls change this thread only.
    unsafe {
        if caps
            && libc::syscall(
                libc::SYS_capget,
                &mut hdr as *mut CapHeader,
                saved.as_mut_ptr(),
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if groups {
            GROUPS.set(None);
            if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            GROUPS.set(Some(c.groups.clone()));
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        if caps {
            let mut lowered = saved;
            lowered[0].effective = 0;
            lowered[1].effective = 0;
            let mut h = hdr;
            libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, lowered.as_ptr());
        }
    }
    let r = f();
    // SAFETY: as above; restores what was saved.
    unsafe {
        if caps {
            let mut h = CapHeader {
                version: CAP_V3,
                pid: 0,
            };
            libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, saved.as_ptr());
        }
        libc::syscall(libc::SYS_setfsuid, 0u32);
        libc::syscall(libc::SYS_setfsgid, 0u32);
    }
    Ok(r)
}

fn cstr(name: &OsString) -> Result<CString, i32> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

fn neg(r: libc::c_int) -> Result<i64, i32> {
    if r < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r as i64)
    }
}

/// What a performed operation returns to the process.
enum Outcome {
    Ret(i64),
    Fd(OwnedFd, bool),
}

fn reopen(obj: &OwnedFd, flags: i32) -> Result<OwnedFd, i32> {
    resolve::open_at(
        None,
        format!("/proc/self/fd/{}", obj.as_raw_fd()).as_bytes(),
        flags,
        0,
    )
    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Carries out `op` as the process would (its credentials, on the pinned handles).
fn perform(op: &Op, creds: &Creds) -> Result<Outcome, i32> {
    if let Op::Connect { sock, addr } = op {
        // The supervisor's connect passes the cgroup backstop (which refuses everyone else);
        // the socket's own flags apply (a non-blocking socket gets EINPROGRESS, as it would).
        // SAFETY: a valid socket fd and a buffer of the given length.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                addr.as_ptr().cast(),
                addr.len() as libc::socklen_t,
            )
        };
        return neg(r).map(Outcome::Ret);
    }
    let r = as_process(
        creds,
        matches!(op, Op::Unlink { .. }),
        || -> Result<Outcome, i32> {
            match op {
                Op::Unlink { at, flags } => {
                    let n = cstr(&at.name)?;
                    // SAFETY: valid fd and C string.
                    neg(unsafe { libc::unlinkat(at.dir.fd.as_raw_fd(), n.as_ptr(), *flags) })
                        .map(Outcome::Ret)
                }
                Op::Rename { from, to, flags } => {
                    let (a, b) = (cstr(&from.name)?, cstr(&to.name)?);
                    // SAFETY: valid fds and C strings.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            from.dir.fd.as_raw_fd(),
                            a.as_ptr(),
                            to.dir.fd.as_raw_fd(),
                            b.as_ptr(),
                            *flags,
                        )
                    };
                    neg(r as libc::c_int).map(Outcome::Ret)
                }
                Op::Link { from, to } => {
                    let (a, b) = (cstr(&from.name)?, cstr(&to.name)?);
                    // SAFETY: valid fds and C strings.
                    neg(unsafe {
                        libc::linkat(
                            from.dir.fd.as_raw_fd(),
                            a.as_ptr(),
                            to.dir.fd.as_raw_fd(),
                            b.as_ptr(),
                            0,
                        )
                    })
                    .map(Outcome::Ret)
                }
                Op::Truncate { obj, len } => {
                    let f = reopen(obj, libc::O_WRONLY | libc::O_NONBLOCK)?;
                    // SAFETY: valid fd.
                    neg(unsafe { libc::ftruncate(f.as_raw_fd(), *len) }).map(Outcome::Ret)
                }
                Op::Open { obj, flags } => {
                    let f = reopen(
                        obj,
                        flags
                            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC),
                    )?;
                    Ok(Outcome::Fd(f, flags & libc::O_CLOEXEC != 0))
                }
                Op::Create { at, flags, mode } => create(at, *flags, *mode, creds.umask),
                Op::Connect { .. } => Err(libc::EINVAL),
            }
        },
    );
    r.unwrap_or_else(|e| Err(e.raw_os_error().unwrap_or(libc::EPERM)))
}

/// Creates `at` as open(2) with O_CREAT would, for the process (already acting as it). The
/// entry is made with O_EXCL and given `mode` less the process's umask (the supervisor's own
/// umask must not decide it). If the entry appeared meanwhile (and the caller did not ask for
/// O_EXCL), it is opened without following a symbolic link; one that leads elsewhere is refused
/// with EACCES, as Landlock would have refused it.
fn create(at: &Target, flags: i32, mode: u32, umask: u32) -> Result<Outcome, i32> {
    let name = cstr(&at.name)?;
    let dir = at.dir.fd.as_raw_fd();
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let base = flags | libc::O_CLOEXEC;
    // SAFETY: valid fd and C string.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            base | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            (mode & 0o7777) as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: a fresh fd we own.
        let f = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: valid fd. The creator owns the file, so fchmod is allowed.
        unsafe { libc::fchmod(f.as_raw_fd(), mode & 0o7777 & !umask) };
        return Ok(Outcome::Fd(f, cloexec));
    }
    let e = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    if e != libc::EEXIST || flags & libc::O_EXCL != 0 {
        return Err(e);
    }
    // SAFETY: valid fd and C string.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            (base & !libc::O_CREAT) | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(if e == libc::ELOOP { libc::EACCES } else { e });
    }
    // SAFETY: a fresh fd we own.
    Ok(Outcome::Fd(unsafe { OwnedFd::from_raw_fd(fd) }, cloexec))
}

/// The supervisor of one session's file hold.
pub struct Supervisor {
    /// Session name.
    pub session: String,
    /// What is protected.
    pub prot: Arc<Protection>,
    /// Pending holds and standing decisions.
    pub holds: Holds<Pending>,
    /// The filter's notification fd.
    pub listener: Listener,
    /// Where holds and decisions are reported.
    pub report: Arc<Reporter>,
    /// Set when the session ends (see [`Supervisor::stop`]).
    pub stopping: std::sync::atomic::AtomicBool,
    /// `hold_connect` endpoints (with `--net host`; empty otherwise).
    pub connect: Vec<crate::netguard::Endpoint>,
    /// The exec guard, which answers execve/execveat (`[commands] hold`).
    pub exec: Option<Arc<crate::commands::guard::ExecGuard>>,
    /// Credentials of threads that cannot change theirs.
    pub creds: CredCache,
}

/// What to do with a notification.
enum Action {
    Continue,
    Perform(Op),
    Hold {
        op: Op,
        kind: &'static str,
        root: usize,
        path: PathBuf,
        target: String,
    },
}

fn sys_arg_i32(v: u64) -> i32 {
    v as u32 as i32
}

impl Supervisor {
    /// Answers notifications until [`Supervisor::stop`] or until no task uses the filter any
    /// more (blocking in the kernel between them: one system call per notification, no poll).
    pub fn run(&self) {
        while !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            match self.listener.recv() {
                Ok(Some(n)) => self.handle(&n),
                // Every filtered task is gone (the kernel then answers at once, every time):
                // nothing can come any more.
                Ok(None) if self.listener.orphaned() => return,
                // Interrupted (by `stop`) or the task went away before we read it.
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "seccomp receive failed");
                    return;
                }
            }
        }
    }

    /// Makes [`Supervisor::run`] return: call after the session's processes are gone, then
    /// interrupt the thread (SIGURG) until it has.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn handle(&self, n: &Notif) {
        let a = n.data.args;
        let nr = n.data.nr as i64;
        if self.fast_removal(n) {
            return;
        }
        // Everything else runs with root's fs ids (the fast removal may have left a process's).
        restore_fs_ids();
        if crate::commands::guard::is_signal(nr) {
            match &self.exec {
                Some(g) => g.handle_signal(n),
                None => {
                    let _ = self.listener.allow(n.id);
                }
            }
            return;
        }
        let action = match nr {
            libc::SYS_unlink => self.unlink(n.pid, libc::AT_FDCWD, a[0], 0),
            libc::SYS_rmdir => self.unlink(n.pid, libc::AT_FDCWD, a[0], libc::AT_REMOVEDIR),
            libc::SYS_unlinkat => self.unlink(n.pid, sys_arg_i32(a[0]), a[1], sys_arg_i32(a[2])),
            libc::SYS_rename => self.rename(n.pid, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0),
            libc::SYS_renameat => {
                self.rename(n.pid, sys_arg_i32(a[0]), a[1], sys_arg_i32(a[2]), a[3], 0)
            }
            libc::SYS_renameat2 => self.rename(
                n.pid,
                sys_arg_i32(a[0]),
                a[1],
                sys_arg_i32(a[2]),
                a[3],
                a[4] as u32,
            ),
            libc::SYS_link => self.link(n.pid, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0),
            libc::SYS_linkat => self.link(
                n.pid,
                sys_arg_i32(a[0]),
                a[1],
                sys_arg_i32(a[2]),
                a[3],
                sys_arg_i32(a[4]),
            ),
            libc::SYS_truncate => self.truncate(n.pid, a[0], a[1] as i64),
            libc::SYS_ftruncate => self.ftruncate(n.pid, sys_arg_i32(a[0]), a[1] as i64),
            libc::SYS_open => {
                self.open(n.pid, libc::AT_FDCWD, a[0], sys_arg_i32(a[1]), a[2] as u32)
            }
            libc::SYS_openat => self.open(
                n.pid,
                sys_arg_i32(a[0]),
                a[1],
                sys_arg_i32(a[2]),
                a[3] as u32,
            ),
            libc::SYS_creat => self.open(
                n.pid,
                libc::AT_FDCWD,
                a[0],
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                a[1] as u32,
            ),
            libc::SYS_connect => Ok(self.connect(n.pid, sys_arg_i32(a[0]), a[1], a[2])),
            libc::SYS_openat2 => match read_open_how(n.pid, a[2], a[3]) {
                Some((flags, mode)) => self.open(n.pid, sys_arg_i32(a[0]), a[1], flags, mode),
                None => Ok(Action::Continue),
            },
            _ => Ok(Action::Continue),
        };
        // An error while looking (the process vanished, a bad pointer) lets the kernel run the
        // call: it fails the same way, and Landlock still forbids touching a protected tree.
        let action = action.unwrap_or(Action::Continue);
        match action {
            Action::Continue => {
                let _ = self.listener.allow(n.id);
            }
            Action::Perform(op) => {
                let creds = match self.creds_for(&op, n.pid) {
                    Ok(c) => c,
                    Err(_) => {
                        let _ = self.listener.fail(n.id, libc::ESRCH);
                        return;
                    }
                };
                if self.listener.valid(n.id) {
                    self.answer(n.id, perform(&op, &creds));
                }
            }
            // git manages its own repository: a `.git` name pattern does not hold git itself.
            Action::Hold { op, root, path, .. }
                if root == self.prot.pattern_root() && in_git_dir(&path) && is_git(n.pid) =>
            {
                if let Ok(creds) = self.creds_for(&op, n.pid) {
                    if self.listener.valid(n.id) {
                        self.answer(n.id, perform(&op, &creds));
                    }
                }
            }
            Action::Hold {
                op,
                kind,
                root,
                path,
                target,
            } => self.hold(n, op, kind, root, path, target),
        }
    }

    /// The common case with name patterns (the `default` profile's `**/.git`): Landlock grants
    /// no removal, so the supervisor performs every unlink and rmdir. When the target is not
    /// protected and the process's credentials cannot change, it is removed here with the thread
    /// keeping the process's fs ids between removals ([`as_process_kept`]). Runs before
    /// [`restore_fs_ids`], so what it does before the removal must not depend on the thread's fs
    /// ids: reading the process's memory and opening its directory handle through /proc check
    /// the real credentials or CAP_SYS_PTRACE (kept), and its own /proc/self/fd is always open
    /// to a task. Returns false, having answered nothing, whenever anything else applies or
    /// anything fails: the caller then starts over with root's fs ids.
    fn fast_removal(&self, n: &Notif) -> bool {
        let a = n.data.args;
        let (dirfd, addr, flags) = match n.data.nr as i64 {
            libc::SYS_unlink => (libc::AT_FDCWD, a[0], 0),
            libc::SYS_rmdir => (libc::AT_FDCWD, a[0], libc::AT_REMOVEDIR),
            libc::SYS_unlinkat => (sys_arg_i32(a[0]), a[1], sys_arg_i32(a[2])),
            _ => return false,
        };
        if !self.prot.has_patterns() || self.prot.has_linked() || flags & !libc::AT_REMOVEDIR != 0 {
            return false;
        }
        let Ok(path) = resolve::read_cstr(n.pid, addr) else {
            return false;
        };
        let Ok(at) = resolve::target_entry(n.pid, dirfd, path.as_bytes()) else {
            return false;
        };
        if !matches!(
            self.prot.classify(&at.path()),
            Class::InAncestorDir | Class::AncestorOfRoot(_)
        ) {
            return false;
        }
        let Ok(creds) = self.creds.get(n.pid) else {
            return false;
        };
        if !creds.locked || creds.uid == 0 {
            return false;
        }
        if !self.listener.valid(n.id) {
            // The caller went away: nothing to do, nothing to answer.
            return true;
        }
        let name = match cstr(&at.name) {
            Ok(c) => c,
            Err(_) => return false,
        };
        let r = as_process_kept(&creds, || {
            // SAFETY: valid fd and C string.
            neg(unsafe { libc::unlinkat(at.dir.fd.as_raw_fd(), name.as_ptr(), flags) })
        });
        match r {
            Ok(r) => {
                self.answer(n.id, r.map(Outcome::Ret));
                true
            }
            Err(_) => false,
        }
    }

    /// The credentials to perform `op` with for thread `tid`: cached where they cannot change,
    /// except that a creation needs the process's current umask.
    fn creds_for(&self, op: &Op, tid: u32) -> io::Result<Creds> {
        if matches!(op, Op::Create { .. }) {
            Creds::of(tid)
        } else {
            self.creds.get(tid)
        }
    }

    /// connect(2): a held endpoint becomes a hold; anything else goes on (the cgroup backstop
    /// refuses a held endpoint written into the buffer after this look).
    fn connect(&self, tid: u32, fd: i32, addr: u64, len: u64) -> Action {
        if self.connect.is_empty() {
            return Action::Continue;
        }
        let Some(bytes) = read_sockaddr(tid, addr, len) else {
            return Action::Continue;
        };
        let Some(sa) = socket_addr(&bytes) else {
            return Action::Continue;
        };
        if !self.connect.iter().any(|e| e.matches(&sa)) {
            return Action::Continue;
        }
        let pid = tgid_of(tid).unwrap_or(tid);
        let Some(sock) = steal_fd(pid, fd) else {
            return Action::Continue;
        };
        let target = sa.to_string();
        Action::Hold {
            op: Op::Connect { sock, addr: bytes },
            kind: "connect",
            root: CONNECT_ROOT,
            path: PathBuf::from(format!("/connect/{target}")),
            target,
        }
    }

    fn answer(&self, id: u64, r: Result<Outcome, i32>) {
        let _ = match r {
            Ok(Outcome::Ret(v)) => self.listener.ret(id, v),
            Ok(Outcome::Fd(fd, cloexec)) => self.listener.ret_fd(id, fd.as_raw_fd(), cloexec),
            Err(e) => self.listener.fail(id, e),
        };
    }

    /// True when the entry (dir, name) is another link of a protected inode.
    fn linked(&self, dir: &PinnedDir, name: &OsString) -> Option<usize> {
        if !self.prot.has_linked() {
            return None;
        }
        let st = fstatat(dir.fd.as_raw_fd(), name).ok()?;
        self.prot.linked_root(st.st_dev, st.st_ino)
    }

    fn entry_class(&self, t: &Target) -> Class {
        match self.prot.classify(&t.path()) {
            c @ (Class::Free | Class::InAncestorDir) => {
                self.linked(&t.dir, &t.name).map_or(c, Class::Protected)
            }
            c => c,
        }
    }

    /// Fast check for a plain name relative to a directory handle: true when it is certainly
    /// free (no fd opened, one readlink).
    /// True when a removal of `path` (relative to `dirfd`) can go on without a closer look: its
    /// lexical place below the directory's canonical path is unprotected. For a path of several
    /// plain components (`git clean` removes `dir/sub/file` from its cwd) an intermediate
    /// symbolic link can make the real target differ from the lexical one; that is safe because
    /// Landlock forbids the sandbox itself to remove anything protected (or anything directly in
    /// an ancestor directory of a root): such a call then fails with EACCES, it never destroys.
    fn fast_free(&self, pid: u32, dirfd: i32, path: &[u8]) -> bool {
        if path.first() == Some(&b'/') || !path.split(|&b| b == b'/').all(resolve::plain_name) {
            return false;
        }
        let Ok(dir) = resolve::dirfd_path(pid, dirfd) else {
            return false;
        };
        let full = resolve::join(&dir, path);
        if self.prot.classify(&full) != Class::Free {
            return false;
        }
        if self.prot.has_linked() {
            if let Ok(md) = std::fs::symlink_metadata(&full) {
                use std::os::unix::fs::MetadataExt;
                if self.prot.linked_root(md.dev(), md.ino()).is_some() {
                    return false;
                }
            }
        }
        true
    }

    fn unlink(&self, pid: u32, dirfd: i32, addr: u64, flags: i32) -> io::Result<Action> {
        let path = resolve::read_cstr(pid, addr)?;
        // With name patterns nothing is Free (Landlock grants no removal): no fast path.
        if !self.prot.has_patterns() && self.fast_free(pid, dirfd, path.as_bytes()) {
            return Ok(Action::Continue);
        }
        let at = resolve::target_entry(pid, dirfd, path.as_bytes())?;
        let kind = if flags & libc::AT_REMOVEDIR != 0 {
            "rmdir"
        } else {
            "unlink"
        };
        Ok(match self.entry_class(&at) {
            Class::Free => Action::Continue,
            // Nothing there: nothing to destroy, no hold (the kernel answers ENOENT).
            Class::Protected(_) if fstatat(at.dir.fd.as_raw_fd(), &at.name).is_err() => {
                Action::Continue
            }
            Class::Protected(root) => {
                let p = at.path();
                Action::Hold {
                    target: p.display().to_string(),
                    path: p,
                    kind,
                    root,
                    op: Op::Unlink { at, flags },
                }
            }
            // Removing an ancestor of a protected root fails (not empty); let the kernel say so.
            Class::InAncestorDir | Class::AncestorOfRoot(_) => {
                Action::Perform(Op::Unlink { at, flags })
            }
        })
    }

    fn rename(
        &self,
        pid: u32,
        od: i32,
        oa: u64,
        nd: i32,
        na: u64,
        flags: u32,
    ) -> io::Result<Action> {
        let old = resolve::read_cstr(pid, oa)?;
        let new = resolve::read_cstr(pid, na)?;
        if self.fast_free(pid, od, old.as_bytes()) && self.fast_free(pid, nd, new.as_bytes()) {
            return Ok(Action::Continue);
        }
        let from = resolve::target_entry(pid, od, old.as_bytes())?;
        let to = resolve::target_entry(pid, nd, new.as_bytes())?;
        let (cf, ct) = (self.entry_class(&from), self.entry_class(&to));
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let dst_exists = fstatat(to.dir.fd.as_raw_fd(), &to.name).is_ok();
        let root = match (cf, ct) {
            (Class::Protected(r) | Class::AncestorOfRoot(r), _) => Some((r, from.path())),
            (_, Class::Protected(r)) if dst_exists || exchange => Some((r, to.path())),
            (_, Class::AncestorOfRoot(r)) if exchange => Some((r, to.path())),
            _ => None,
        };
        let target = format!("{} -> {}", from.path().display(), to.path().display());
        let op = Op::Rename { from, to, flags };
        Ok(match root {
            Some((root, path)) => Action::Hold {
                op,
                kind: "rename",
                root,
                path,
                target,
            },
            None if cf == Class::Free && ct == Class::Free => Action::Continue,
            None => Action::Perform(op),
        })
    }

    fn link(&self, pid: u32, od: i32, oa: u64, nd: i32, na: u64, flags: i32) -> io::Result<Action> {
        if flags & libc::AT_EMPTY_PATH != 0 {
            // Needs CAP_DAC_READ_SEARCH, which the sandbox never has: the kernel refuses it.
            return Ok(Action::Continue);
        }
        let old = resolve::read_cstr(pid, oa)?;
        let new = resolve::read_cstr(pid, na)?;
        if self.fast_free(pid, od, old.as_bytes()) && self.fast_free(pid, nd, new.as_bytes()) {
            return Ok(Action::Continue);
        }
        let from = resolve::target_entry(pid, od, old.as_bytes())?;
        let to = resolve::target_entry(pid, nd, new.as_bytes())?;
        let (cf, ct) = (self.entry_class(&from), self.entry_class(&to));
        if let Class::Protected(root) = cf {
            // A new name for a protected inode: record it, so removing that name is held too.
            if let Ok(st) = fstatat(from.dir.fd.as_raw_fd(), &from.name) {
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    self.prot.add_linked(st.st_dev, st.st_ino, root);
                }
            }
        }
        Ok(if cf == Class::Free && ct == Class::Free {
            Action::Continue
        } else {
            Action::Perform(Op::Link { from, to })
        })
    }

    fn object_class(&self, fd: &OwnedFd, path: &Path) -> io::Result<(Class, libc::stat)> {
        let st = fstat(fd.as_raw_fd())?;
        let c = match self.prot.classify(path) {
            c @ (Class::Free | Class::InAncestorDir) => self
                .prot
                .linked_root(st.st_dev, st.st_ino)
                .map_or(c, Class::Protected),
            c => c,
        };
        Ok((c, st))
    }

    fn truncating(
        &self,
        obj: OwnedFd,
        path: PathBuf,
        op: impl FnOnce(OwnedFd) -> Op,
    ) -> io::Result<Action> {
        let (class, st) = self.object_class(&obj, &path)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(Action::Continue);
        }
        Ok(match class {
            Class::Free => Action::Continue,
            Class::Protected(root) => Action::Hold {
                target: path.display().to_string(),
                path,
                kind: "truncate",
                root,
                op: op(obj),
            },
            Class::InAncestorDir | Class::AncestorOfRoot(_) => Action::Perform(op(obj)),
        })
    }

    fn truncate(&self, pid: u32, addr: u64, len: i64) -> io::Result<Action> {
        let path = resolve::read_cstr(pid, addr)?;
        let (obj, canon) = resolve::target_object(pid, libc::AT_FDCWD, path.as_bytes(), true)?;
        self.truncating(obj, canon, |obj| Op::Truncate { obj, len })
    }

    fn ftruncate(&self, pid: u32, fd: i32, len: i64) -> io::Result<Action> {
        let canon = resolve::proc_fd_path(pid, fd)?;
        if self.prot.classify(&canon) == Class::Free && !self.prot.has_linked() {
            return Ok(Action::Continue);
        }
        // The process's fd must be open for writing, as ftruncate(2) demands.
        if fd_access_mode(pid, fd)? == libc::O_RDONLY {
            return Ok(Action::Continue);
        }
        let obj = resolve::open_at(
            None,
            format!("/proc/{pid}/fd/{fd}").as_bytes(),
            libc::O_PATH,
            0,
        )?;
        self.truncating(obj, canon, |obj| Op::Truncate { obj, len })
    }

    fn open(&self, pid: u32, dirfd: i32, addr: u64, flags: i32, mode: u32) -> io::Result<Action> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let creating = flags & libc::O_CREAT != 0;
        let write_held = self.prot.writes().is_some() && (writing || creating);
        if flags & libc::O_PATH != 0 || (flags & libc::O_TRUNC == 0 && !write_held) {
            return Ok(Action::Continue);
        }
        let path = resolve::read_cstr(pid, addr)?;
        let follow = flags & libc::O_NOFOLLOW == 0;
        let (obj, canon) = match resolve::target_object(pid, dirfd, path.as_bytes(), follow) {
            Ok(x) => x,
            Err(_) if write_held && creating => {
                return self.creating(pid, dirfd, &path, flags, mode)
            }
            // Nothing there yet: nothing to truncate.
            Err(_) => return Ok(Action::Continue),
        };
        if creating && flags & libc::O_EXCL != 0 {
            // It exists: the call fails with EEXIST on its own.
            return Ok(Action::Continue);
        }
        if write_held && writing {
            // O_TMPFILE names the directory the unnamed file is made in.
            let at = if flags & libc::O_TMPFILE == libc::O_TMPFILE {
                canon.join(".tmpfile")
            } else {
                canon.clone()
            };
            let mut class = self.prot.classify_write(&at);
            // Another hard link of a protected file that holds write-protected data.
            if !matches!(class, WriteClass::Held(_)) && self.prot.has_linked() {
                let st = fstat(obj.as_raw_fd())?;
                if let Some(root) = self.prot.linked_root(st.st_dev, st.st_ino) {
                    if self.prot.root_has_writes(root) {
                        class = WriteClass::Held(root);
                    }
                }
            }
            match class {
                WriteClass::Held(root) => {
                    return Ok(Action::Hold {
                        target: canon.display().to_string(),
                        path: canon,
                        kind: "write",
                        root,
                        op: Op::Open { obj, flags },
                    })
                }
                WriteClass::Perform => {
                    // Truncation of a protected file is still held as such.
                    if flags & libc::O_TRUNC == 0
                        || matches!(
                            self.prot.classify(&canon),
                            Class::Free | Class::InAncestorDir
                        )
                    {
                        return Ok(Action::Perform(Op::Open { obj, flags }));
                    }
                }
                WriteClass::Free => {}
            }
        }
        if flags & libc::O_TRUNC == 0 {
            return Ok(Action::Continue);
        }
        self.truncating(obj, canon, |obj| Op::Open { obj, flags })
    }

    /// A write-open with O_CREAT of a path with nothing there yet (`protect_writes` sessions).
    fn creating(
        &self,
        pid: u32,
        dirfd: i32,
        path: &OsString,
        flags: i32,
        mode: u32,
    ) -> io::Result<Action> {
        let at = resolve::target_entry(pid, dirfd, path.as_bytes())?;
        if fstatat(at.dir.fd.as_raw_fd(), &at.name).is_ok() {
            // Something is there after all (a dangling symbolic link, or it just appeared):
            // the kernel decides, and Landlock refuses a write it has no grant for.
            return Ok(Action::Continue);
        }
        let canon = at.path();
        Ok(match self.prot.classify_write(&canon) {
            WriteClass::Free => Action::Continue,
            WriteClass::Perform => Action::Perform(Op::Create { at, flags, mode }),
            WriteClass::Held(root) => Action::Hold {
                target: canon.display().to_string(),
                path: canon,
                kind: "write",
                root,
                op: Op::Create { at, flags, mode },
            },
        })
    }

    fn hold(
        &self,
        n: &Notif,
        op: Op,
        kind: &'static str,
        root: usize,
        path: PathBuf,
        target: String,
    ) {
        let pid = tgid_of(n.pid).unwrap_or(n.pid);
        let info = HoldInfo {
            id: crate::hold::new_id(),
            session: self.session.clone(),
            pid,
            ns_pid: ns_pid_of(n.pid),
            comm: std::fs::read_to_string(format!("/proc/{}/comm", n.pid))
                .unwrap_or_default()
                .trim()
                .to_string(),
            cmdline: cmdline_of(pid),
            kind,
            target,
            rule: if root == CONNECT_ROOT {
                "network.hold_connect".to_string()
            } else if kind == "write" {
                self.prot.describe_write(&path)
            } else {
                self.prot.describe_root(root)
            },
            detail: None,
            since: crate::audit::rfc3339_micros(std::time::SystemTime::now()),
            started: Some(Instant::now()),
            proc_key: ProcKey::of(n.pid),
            root: Some(root),
            path: Some(path),
        };
        let pending = Pending {
            notif: n.id,
            tid: n.pid,
            op,
        };
        if let Some(info) = self.hold_or_carry_out(info, pending) {
            // The process may have been killed while we looked: don't leave a ghost hold.
            if !self.listener.valid(n.id) {
                self.withdraw(&info.id, "process gone");
            }
        }
    }
}

impl HoldBackend for Supervisor {
    type Op = Pending;

    fn holds(&self) -> &Holds<Pending> {
        &self.holds
    }

    fn reporter(&self) -> &Reporter {
        &self.report
    }

    /// Answers a decided hold: performs it (approve) or fails it with EPERM (deny).
    fn carry_out(&self, p: Pending, verdict: Verdict) {
        if !self.listener.valid(p.notif) {
            return;
        }
        match verdict {
            Verdict::Deny => {
                let _ = self.listener.fail(p.notif, libc::EPERM);
            }
            Verdict::Allow => match Creds::of(p.tid) {
                Ok(c) => self.answer(p.notif, perform(&p.op, &c)),
                Err(_) => {
                    let _ = self.listener.fail(p.notif, libc::ESRCH);
                }
            },
        }
    }
}

fn fstatat(dir: RawFd, name: &OsString) -> io::Result<libc::stat> {
    let c =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: zeroed stat is valid; fd and string are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is valid; fd is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// True when the path is a `.git` directory or lies inside one.
fn in_git_dir(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == ".git")
}

/// True when thread `tid` runs git itself: an executable named `git` (or one of git's helpers
/// in a `git-core` directory) that root owns and nobody else may write, in a directory likewise,
/// so the sandbox cannot have put it there.
fn is_git(tid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::read_link(format!("/proc/{tid}/exe")) else {
        return false;
    };
    let named = exe.file_name().is_some_and(|n| n == "git")
        || exe
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "git-core");
    let root_only =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0);
    named && root_only(&exe) && exe.parent().is_some_and(root_only)
}

fn fd_access_mode(pid: u32, fd: i32) -> io::Result<i32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(flags & libc::O_ACCMODE)
}

/// The sockaddr a process passed to connect(2), read from its memory (at most 128 bytes).
fn read_sockaddr(pid: u32, addr: u64, len: u64) -> Option<Vec<u8>> {
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    if len < 2 {
        return None;
    }
    let mut buf = vec![0u8; len];
    (resolve::read_remote(pid, addr, &mut buf).ok()? == len).then_some(buf)
}

/// An IPv4 or IPv6 socket address from sockaddr bytes.
fn socket_addr(b: &[u8]) -> Option<std::net::SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as i32;
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(std::net::SocketAddr::from((ip, port)))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(std::net::SocketAddr::from((ip, port)))
        }
        _ => None,
    }
}

/// A duplicate of process `pid`'s file descriptor `fd` (pidfd_getfd).
fn steal_fd(pid: u32, fd: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; the fds returned are owned here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return None;
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let f = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        (f >= 0).then(|| OwnedFd::from_raw_fd(f as i32))
    }
}

/// The flags and mode of an openat2(2) `struct open_how`.
fn read_open_how(pid: u32, addr: u64, size: u64) -> Option<(i32, u32)> {
    if size < 16 {
        return None;
    }
    let mut how = [0u8; 16];
    (resolve::read_remote(pid, addr, &mut how).ok()? == 16).then(|| {
        let flags = u64::from_ne_bytes(how[..8].try_into().unwrap_or([0; 8])) as i32;
        let mode = u64::from_ne_bytes(how[8..].try_into().unwrap_or([0; 8])) as u32;
        (flags, mode)
    })
}

fn status_field(tid: u32, key: &str) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn tgid_of(tid: u32) -> Option<u32> {
    status_field(tid, "Tgid:")
}

pub fn ns_pid_of(tid: u32) -> Option<u32> {
    status_field(tid, "NStgid:")
}

/// The command line of a process, NULs as spaces, at most 512 bytes.
pub fn cmdline_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = String::from_utf8_lossy(&raw[..raw.len().min(512)]).replace('\0', " ");
    s.truncate(s.trim_end().len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// False (after saying why) when not root; panics instead when `CI` is set.
    fn can_run(name: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        let reason = format!("{name}: needs root to change credentials");
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason} (CI is set, so this fails)"
        );
        eprintln!("skipped: {reason}");
        false
    }

    /// `sleep 30` as uid/gid 65534 (no groups), with or without no_new_privs.
    fn nobody_sleeper(nnp: bool) -> std::process::Child {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
        if nnp {
            c.arg("--no-new-privs");
        }
        let child = c
            .args(["sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it is sleep (after setpriv dropped its privileges).
        for _ in 0..200 {
            if std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
                .is_ok_and(|c| c.trim() == "sleep")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn only_credentials_that_cannot_change_are_locked_and_cached() {
        if !can_run("only_credentials_that_cannot_change_are_locked_and_cached") {
            return;
        }
        // This test process: root, with capabilities.
        let me = Creds::of(std::process::id()).unwrap();
        assert!(
            !me.locked,
            "root with capabilities can change its credentials"
        );
        let mut locked = nobody_sleeper(true);
        let mut unlocked = nobody_sleeper(false);
        let c = Creds::of(locked.id()).unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (65534, 65534, vec![]));
        assert!(
            c.locked,
            "no capabilities, no_new_privs, one uid and gid: {c:?}"
        );
        assert!(
            !Creds::of(unlocked.id()).unwrap().locked,
            "without no_new_privs"
        );

        let cache = CredCache::default();
        assert_eq!(cache.get(locked.id()).unwrap().uid, 65534);
        assert!(cache.0.lock().unwrap().contains_key(&locked.id()));
        assert_eq!(cache.get(unlocked.id()).unwrap().uid, 65534);
        assert!(!cache.0.lock().unwrap().contains_key(&unlocked.id()));
        // A stale entry (another task's inode under this thread id) is not used.
        cache.0.lock().unwrap().get_mut(&locked.id()).unwrap().0 ^= 1;
        cache.0.lock().unwrap().get_mut(&locked.id()).unwrap().1.uid = 4242;
        assert_eq!(cache.get(locked.id()).unwrap().uid, 65534);
        for c in [&mut locked, &mut unlocked] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn a_removal_as_the_process_has_no_capabilities_and_restores_them() {
        if !can_run("a_removal_as_the_process_has_no_capabilities_and_restores_them") {
            return;
        }
        // Run on a fresh thread: credential changes are per thread.
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            let root_dir = dir.path().join("root-only");
            std::fs::create_dir(&root_dir).unwrap();
            std::fs::write(root_dir.join("f"), b"x").unwrap();
            let nobody = Creds {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
                umask: 0o022,
                locked: true,
            };
            let f = CString::new(root_dir.join("f").as_os_str().as_bytes()).unwrap();
            let unlink = || {
                // SAFETY: a valid C string.
                let r = unsafe { libc::unlink(f.as_ptr()) };
                (r, io::Error::last_os_error().raw_os_error())
            };
            for removal_only in [true, false] {
                let (r, e) = as_process(&nobody, removal_only, unlink).unwrap();
                assert_eq!(
                    (r, e),
                    (-1, Some(libc::EACCES)),
                    "nobody may not remove from root's 0755 directory (removal_only {removal_only})"
                );
                assert!(root_dir.join("f").exists());
            }
            // The thread is root with its capabilities again (and the groups were kept).
            assert_eq!(GROUPS.with_borrow(|g| g.clone()), Some(vec![65534]));
            std::fs::set_permissions(
                &root_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o500),
            )
            .unwrap();
            assert_eq!(unlink().0, 0, "CAP_DAC_OVERRIDE back after the removal");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_kept_identity_removes_as_the_process_until_restored() {
        if !can_run("a_kept_identity_removes_as_the_process_until_restored") {
            return;
        }
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            let root_dir = dir.path().join("root-only");
            let own_dir = dir.path().join("nobodys");
            std::fs::create_dir(&root_dir).unwrap();
            std::fs::create_dir(&own_dir).unwrap();
            std::os::unix::fs::chown(&own_dir, Some(65534), Some(65534)).unwrap();
            for d in [&root_dir, &own_dir] {
                std::fs::write(d.join("f"), b"x").unwrap();
            }
            let nobody = Creds {
                uid: 65534,
                gid: 65534,
                groups: vec![],
                umask: 0o022,
                locked: true,
            };
            let unlink = |p: &Path| {
                let c = CString::new(p.as_os_str().as_bytes()).unwrap();
                // SAFETY: a valid C string.
                let r = unsafe { libc::unlink(c.as_ptr()) };
                (r, io::Error::last_os_error().raw_os_error())
            };
            let r = as_process_kept(&nobody, || unlink(&root_dir.join("f"))).unwrap();
            assert_eq!(r, (-1, Some(libc::EACCES)), "not in root's directory");
            assert_eq!(KEPT.get(), Some((65534, 65534)), "the identity is kept");
            let r = as_process_kept(&nobody, || unlink(&own_dir.join("f"))).unwrap();
            assert_eq!(r.0, 0, "in its own directory");
            // Root's identity (and CAP_DAC_OVERRIDE) come back.
            restore_fs_ids();
            assert_eq!(KEPT.get(), None);
            assert_eq!(unlink(&root_dir.join("f")).0, 0);
            // Root itself is never kept.
            let root = Creds { uid: 0, ..nobody };
            assert!(as_process_kept(&root, || ()).is_err());
        })
        .join()
        .unwrap();
    }
}
