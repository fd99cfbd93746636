//! The file hold of the BPF LSM backend.
//!
//! For a task in a session cgroup with the file hold on, an operation that would destroy a
//! protected object (unlink, rmdir, rename away or over, truncate) is held: the hook records a
//! pending slot for the thread, queues SIGSTOP for it, reports the hold on `HOLD_EVENTS` and
//! returns -ERESTARTNOINTR. The task stops; when it is continued the kernel restarts the system
//! call and the hook runs again: with a decision for that exact hold it returns 0 (the operation
//! happens) or -EPERM; without one (a SIGCONT from anyone else) it stops the task again.
//! io_uring workers cannot restart a call: they get -EPERM.

use core::ffi::c_void;
use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns, bpf_loop,
            bpf_send_signal_thread,
        },
    },
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use guard_common::files::{
    DirVerdict, HoldRecord, InodeKey, Pending, StandingKey, CFG_PATTERNS, CFG_WRITE_PATTERNS,
    CONFIG_FLAGS, CONFIG_PATTERN_ROOT, HOLD_ANCESTOR, HOLD_GIT, HOLD_LINK, HOLD_RENAME_TARGET,
    HOLD_WRITE_ROOT, MAX_DEPTH, MAX_NAMES, MAX_ROOTS, MAX_SUFFIXES, NAME_LEN, OP_CREATE, OP_RENAME,
    OP_RMDIR, OP_TRUNCATE, OP_UNLINK, OP_WRITE, PAT_EXACT, PAT_GIT, PAT_SUFFIX, PAT_WRITE_EXACT,
    PAT_WRITE_SUFFIX, SESSION_FILE_HOLD, SESSION_WRITE_HOLD, VERDICT_ALLOW,
};

use crate::{
    kernel::{
        guard_dentry_key, guard_dentry_name, guard_dentry_parent, guard_exe_is_git,
        guard_file_dentry, guard_file_mode, guard_name_hashes, guard_path_dentry, guard_task_flags,
        NameHashes,
    },
    maps::{
        CONFIG, DECISIONS, DIR_CACHE, HOLD_EVENTS, NAME_PATTERNS, PENDING, PROT_ANCESTORS,
        PROT_DIRS, PROT_INODES, REFUSED, RENAME_GEN, SESSION_CGROUPS, STANDING, WDIR_CACHE,
        WRITE_DIRS,
    },
};

const EPERM: i32 = 1;
const ERESTARTNOINTR: i32 = 513;
const SIGSTOP: u32 = 19;
/// `PF_IO_WORKER`: an io_uring worker thread.
const PF_IO_WORKER: u32 = 0x10;
/// `RENAME_EXCHANGE`.
const RENAME_EXCHANGE: u32 = 2;
/// `FMODE_WRITE`.
const FMODE_WRITE: u32 = 0x2;
/// `FMODE_CREATED`: this open made the file (its creation went through `path_mknod`).
const FMODE_CREATED: u32 = 0x10_0000;
/// `WRITE_DIRS` value bit: another hard link of a write-protected file.
const WRITE_LINK: u32 = 1 << 16;

/// What protects an object.
#[derive(Clone, Copy)]
pub struct Match {
    /// Protected root index (`CONNECT_ROOT` for connects).
    pub root: u32,
    /// Levels below the root (the address family for connects).
    pub depth: u32,
    /// `HOLD_*` flags.
    pub flags: u32,
}

fn key_of(d: *const c_void) -> Option<InodeKey> {
    let mut dev = 0u32;
    let mut ino = 0u64;
    // SAFETY: the accessor only reads kernel memory through bpf_probe_read_kernel.
    if unsafe { guard_dentry_key(d, &mut dev, &mut ino) } != 0 {
        return None;
    }
    Some(InodeKey { dev, _pad: 0, ino })
}

fn generation() -> u64 {
    match RENAME_GEN.get_ptr_mut(0) {
        // SAFETY: a valid, aligned array slot; an aligned 64-bit load is atomic on BPF.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => u64::MAX,
    }
}

/// Invalidates every cached directory verdict (a directory may have moved or been freed).
fn bump_generation() {
    atomic_inc(RENAME_GEN.get_ptr_mut(0));
}

/// Counts an operation refused because its hold could not be reported (see `REFUSED`).
fn count_refused() {
    atomic_inc(REFUSED.get_ptr_mut(0));
}

fn atomic_inc(slot: Option<*mut u64>) {
    if let Some(p) = slot {
        // An atomic add (BPF_ATOMIC_ADD): `AtomicU64::fetch_add` is not offered for this target,
        // and a plain increment could lose a count (for RENAME_GEN: leave a stale verdict
        // valid).
        // SAFETY: a valid, aligned array slot.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::SeqCst }>(
                p, 1,
            )
        };
    }
}

fn config(i: u32) -> u32 {
    CONFIG.get(i).copied().unwrap_or(0)
}

/// Whether the name of `d` matches a name pattern: whole (`exact` bits) or a suffix starting
/// at one of its last dots (`suffix` bits).
fn name_matches(d: *const c_void, exact: u32, suffix: u32) -> bool {
    name_bits(d, exact, suffix) != 0
}

/// The `PAT_*` bits of the pattern entry the name of `d` matches (0: none): the whole name's
/// entry when it has an `exact` bit, else the first suffix's with a `suffix` bit.
fn name_bits(d: *const c_void, exact: u32, suffix: u32) -> u32 {
    let mut res = NameHashes {
        h: [0u64; 1 + MAX_SUFFIXES],
    };
    // A global function takes scalars, not the verifier's typed pointers: the address goes
    // through a probe read of its own stack slot, which yields a plain number.
    let slot = d;
    // SAFETY: reads 8 bytes of this program's stack.
    let Ok(addr) = (unsafe { bpf_probe_read_kernel(&slot as *const *const c_void as *const u64) })
    else {
        return 0;
    };
    // SAFETY: the accessor writes into `res` only and reads kernel memory through helpers.
    let n = unsafe { guard_name_hashes(addr, &mut res) };
    let out = res.h;
    if n < 0 {
        return 0;
    }
    if out[0] != 0 {
        // SAFETY: map values are copied out at once.
        if let Some(&b) = unsafe { NAME_PATTERNS.get(out[0]) } {
            if b & exact != 0 {
                return b;
            }
        }
    }
    for i in 0..MAX_SUFFIXES {
        if i as i32 >= n {
            break;
        }
        // SAFETY: as above.
        if let Some(&b) = unsafe { NAME_PATTERNS.get(out[1 + i]) } {
            if b & suffix != 0 {
                return b;
            }
        }
    }
    0
}

/// A match of a `protect` name pattern (its root is the pattern root).
fn pattern_match(depth: u32) -> Match {
    Match {
        root: config(CONFIG_PATTERN_ROOT),
        depth,
        flags: 0,
    }
}

/// The match of a `protect` pattern whose entry has `bits`: a `.git` match is marked.
fn protect_pattern_match(bits: u32, depth: u32) -> Match {
    let mut m = pattern_match(depth);
    if bits & PAT_GIT != 0 {
        m.flags |= HOLD_GIT;
    }
    m
}

/// Walks from `d` up its `d_parent` chain looking for a protected root; the verdict for the
/// parent directory is cached (see `DIR_CACHE`).
fn protected(d: *const c_void, ancestors_too: bool) -> Option<Match> {
    let own = key_of(d)?;
    // SAFETY: map values are copied out at once.
    if let Some(&root) = unsafe { PROT_DIRS.get(own) } {
        return Some(Match {
            root,
            depth: 0,
            flags: 0,
        });
    }
    if config(CONFIG_FLAGS) & CFG_PATTERNS != 0 {
        let bits = name_bits(d, PAT_EXACT, PAT_SUFFIX);
        if bits != 0 {
            return Some(protect_pattern_match(bits, 0));
        }
    }
    // SAFETY: the accessor only reads kernel memory.
    let parent = unsafe { guard_dentry_parent(d) };
    let mut found: Option<Match> = None;
    if !parent.is_null() && parent != d {
        if let Some(pk) = key_of(parent) {
            let gen = generation();
            // SAFETY: as above.
            match unsafe { DIR_CACHE.get(pk) }.copied() {
                Some(v) if v.gen == gen => {
                    if v.root_plus1 != 0 {
                        let enc = v.root_plus1 - 1;
                        found = Some(Match {
                            root: enc & 0xffff,
                            depth: v.depth + 1,
                            flags: enc >> 16,
                        });
                    }
                }
                _ => {
                    let walked = walk(parent);
                    let v = DirVerdict {
                        gen,
                        root_plus1: walked.map_or(0, |m| (m.root | (m.flags << 16)) + 1),
                        depth: walked.map_or(0, |m| m.depth),
                    };
                    let _ = DIR_CACHE.insert(pk, v, 0);
                    found = walked.map(|m| Match {
                        root: m.root,
                        depth: m.depth + 1,
                        flags: m.flags,
                    });
                }
            }
        }
    }
    if found.is_some() {
        return found;
    }
    // SAFETY: as above.
    if let Some(&root) = unsafe { PROT_INODES.get(own) } {
        return Some(Match {
            root,
            depth: MAX_DEPTH + 1,
            flags: HOLD_LINK,
        });
    }
    if ancestors_too {
        // SAFETY: as above.
        if let Some(&root) = unsafe { PROT_ANCESTORS.get(own) } {
            return Some(Match {
                root,
                depth: MAX_DEPTH + 1,
                flags: HOLD_ANCESTOR,
            });
        }
    }
    None
}

/// The protected root at or above directory `d`, if any (bounded `d_parent` walk).
fn walk(d: *const c_void) -> Option<Match> {
    walk_up(d, false)
}

/// A `d_parent` walk from `d` of at most `MAX_DEPTH` levels: for a protected root (or a
/// `protect` name pattern), or with `write` for a write-protected one (or a write pattern).
///
/// The steps run under `bpf_loop` (5.17+): the verifier checks a step once instead of once per
/// level (32 levels, each with a name pattern lookup, were two thirds of a hook's verification).
fn walk_up(d: *const c_void, write: bool) -> Option<Match> {
    let flag = if write {
        CFG_WRITE_PATTERNS
    } else {
        CFG_PATTERNS
    };
    let mut st = WalkState {
        cur: d,
        write: u32::from(write),
        patterns: u32::from(config(CONFIG_FLAGS) & flag != 0),
        found: 0,
        m: Match {
            root: 0,
            depth: 0,
            flags: 0,
        },
    };
    // SAFETY: walk_step is a callback of bpf_loop's type; `st` outlives the call.
    unsafe {
        bpf_loop(
            MAX_DEPTH,
            walk_step as *const () as *mut c_void,
            &mut st as *mut WalkState as *mut c_void,
            0,
        )
    };
    (st.found != 0).then_some(st.m)
}

/// [`walk_up`]'s state between its steps.
#[repr(C)]
struct WalkState {
    /// The dentry of this level.
    cur: *const c_void,
    /// 1: look for write protection.
    write: u32,
    /// 1: look up name patterns too.
    patterns: u32,
    /// 1 when `m` holds the match.
    found: u32,
    m: Match,
}

/// One level of [`walk_up`]; 1 stops the loop (a match, the top, or an unreadable dentry).
extern "C" fn walk_step(depth: u64, ctx: *mut c_void) -> i64 {
    let st = ctx as *mut WalkState;
    let depth = depth as u32;
    // SAFETY: ctx is walk_up's WalkState, handed over by bpf_loop.
    let (cur, write, patterns) = unsafe { ((*st).cur, (*st).write != 0, (*st).patterns != 0) };
    let Some(k) = key_of(cur) else {
        return 1;
    };
    let found = if write {
        // SAFETY: map values are copied out at once.
        match unsafe { WRITE_DIRS.get(k) } {
            Some(&v) => Some(write_match(v, depth)),
            None if patterns && name_matches(cur, PAT_WRITE_EXACT, PAT_WRITE_SUFFIX) => {
                Some(pattern_match(depth))
            }
            None => None,
        }
    } else {
        // SAFETY: as above.
        match unsafe { PROT_DIRS.get(k) } {
            Some(&root) => Some(Match {
                root,
                depth,
                flags: 0,
            }),
            None if patterns => match name_bits(cur, PAT_EXACT, PAT_SUFFIX) {
                0 => None,
                bits => Some(protect_pattern_match(bits, depth)),
            },
            None => None,
        }
    };
    if let Some(m) = found {
        // SAFETY: as above.
        unsafe {
            (*st).m = m;
            (*st).found = 1;
        }
        return 1;
    }
    // SAFETY: the accessor only reads kernel memory.
    let parent = unsafe { guard_dentry_parent(cur) };
    if parent.is_null() || parent == cur {
        return 1;
    }
    // SAFETY: as above.
    unsafe { (*st).cur = parent };
    0
}

pub fn session_has_file_hold() -> bool {
    session_has(SESSION_FILE_HOLD)
}

fn session_has(flag: u32) -> bool {
    // SAFETY: a helper without arguments; the map value is copied out.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    matches!(unsafe { SESSION_CGROUPS.get(cg) }, Some(&f) if f & flag != 0)
}

/// The match of a `WRITE_DIRS` value found `depth` levels up.
fn write_match(v: u32, depth: u32) -> Match {
    if v & WRITE_LINK != 0 {
        return Match {
            root: v & 0xff,
            depth: MAX_DEPTH + 1,
            flags: HOLD_LINK,
        };
    }
    Match {
        root: v & 0xff,
        depth,
        flags: HOLD_WRITE_ROOT | (v & 0xff00),
    }
}

/// A write-protected root (or write pattern) at or above directory `d` (bounded walk).
fn write_walk(d: *const c_void) -> Option<Match> {
    walk_up(d, true)
}

/// Whether writing to (positive) dentry `d` is held: it is a write-protected root or another
/// link of one's file, its name matches a write pattern, or a directory above it does (that
/// walk's verdict for the parent is cached in `WDIR_CACHE`).
fn write_protected(d: *const c_void) -> Option<Match> {
    let own = key_of(d)?;
    // SAFETY: map values are copied out at once.
    if let Some(&v) = unsafe { WRITE_DIRS.get(own) } {
        return Some(write_match(v, 0));
    }
    if config(CONFIG_FLAGS) & CFG_WRITE_PATTERNS != 0
        && name_matches(d, PAT_WRITE_EXACT, PAT_WRITE_SUFFIX)
    {
        return Some(pattern_match(0));
    }
    // SAFETY: the accessor only reads kernel memory.
    let parent = unsafe { guard_dentry_parent(d) };
    if parent.is_null() || parent == d {
        return None;
    }
    let pk = key_of(parent)?;
    let gen = generation();
    // SAFETY: as above.
    let m = match unsafe { WDIR_CACHE.get(pk) }.copied() {
        Some(v) if v.gen == gen => {
            if v.root_plus1 == 0 {
                None
            } else {
                let enc = v.root_plus1 - 1;
                Some(Match {
                    root: enc & 0xffff,
                    depth: v.depth,
                    flags: enc >> 16,
                })
            }
        }
        _ => {
            let walked = write_walk(parent);
            let v = DirVerdict {
                gen,
                root_plus1: walked.map_or(0, |m| (m.root | (m.flags << 16)) + 1),
                depth: walked.map_or(0, |m| m.depth),
            };
            let _ = WDIR_CACHE.insert(pk, v, 0);
            walked
        }
    };
    m.map(|mut m| {
        if m.flags & HOLD_LINK == 0 {
            m.depth += 1;
        }
        m
    })
}

fn fill_names(d: *const c_void, names: *mut [[u8; NAME_LEN]; MAX_NAMES]) -> u32 {
    let mut cur = d;
    let mut n = 0u32;
    for i in 0..MAX_NAMES {
        // SAFETY: names points into a reserved ring buffer record; the accessor bounds the copy.
        let r =
            unsafe { guard_dentry_name(cur, addr_of_mut!((*names)[i]).cast(), NAME_LEN as u32) };
        if r <= 0 {
            break;
        }
        n += 1;
        // SAFETY: kernel read through the accessor.
        let parent = unsafe { guard_dentry_parent(cur) };
        if parent.is_null() || parent == cur {
            break;
        }
        cur = parent;
    }
    n
}

/// The decision logic of the file hooks. `other` is the second dentry of a rename.
fn hold(op: u32, target: *const c_void, m: Match, other: *const c_void) -> i32 {
    // git manages its own repository: a `.git` name pattern does not hold git itself.
    // SAFETY: reads kernel memory through helpers only.
    if m.flags & HOLD_GIT != 0 && unsafe { guard_exe_is_git() } != 0 {
        return 0;
    }
    let Some(k) = key_of(target) else {
        return -EPERM;
    };
    hold_key(op, k, m, |rec| {
        // SAFETY: rec points to a reserved record; the names are written in place.
        unsafe {
            (*rec).names_len = fill_names(target, addr_of_mut!((*rec).names));
            (*rec).other_len = if other.is_null() {
                0
            } else {
                fill_names(other, addr_of_mut!((*rec).other_names))
            };
        }
    })
}

/// The hold itself, for any hook: `k` identifies the held object (for the restarted call to
/// find its decision), `describe` fills the record's names.
pub fn hold_key(op: u32, k: InodeKey, m: Match, describe: impl FnOnce(*mut HoldRecord)) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // SAFETY: map values are copied out at once.
    if let Some(&v) = unsafe { STANDING.get(StandingKey { tgid, root: m.root }) } {
        return if v == VERDICT_ALLOW { 0 } else { -EPERM };
    }
    // SAFETY: helper without arguments; the accessor reads kernel memory.
    let task_flags = unsafe { guard_task_flags(bpf_get_current_task() as *const c_void) };
    if task_flags & PF_IO_WORKER != 0 {
        return -EPERM;
    }
    // SAFETY: map values are copied out at once.
    if let Some(p) = unsafe { PENDING.get(tid) }.copied() {
        if p.op == op && p.dev == k.dev && p.ino == k.ino {
            // The restarted call: consume its decision, exactly once.
            // SAFETY: as above.
            if let Some(d) = unsafe { DECISIONS.get(tid) }.copied() {
                if d.seq == p.seq {
                    let _ = DECISIONS.remove(tid);
                    let _ = PENDING.remove(tid);
                    return if d.verdict == VERDICT_ALLOW {
                        0
                    } else {
                        -EPERM
                    };
                }
            }
            // Continued by someone other than the supervisor: stop again.
            // SAFETY: helper with an integer argument.
            unsafe { bpf_send_signal_thread(SIGSTOP) };
            return -ERESTARTNOINTR;
        }
    }
    // SAFETY: helper without arguments.
    let seq = unsafe { bpf_ktime_get_ns() };
    let p = Pending {
        seq,
        op,
        dev: k.dev,
        ino: k.ino,
    };
    if PENDING.insert(tid, p, 0).is_err() {
        count_refused();
        return -EPERM;
    }
    let Some(mut entry) = HOLD_EVENTS.reserve::<HoldRecord>(0) else {
        // Nobody would hear of this hold: fail closed.
        let _ = PENDING.remove(tid);
        count_refused();
        return -EPERM;
    };
    let rec: *mut HoldRecord = entry.as_mut_ptr();
    // The stop is queued before the user side can hear of the hold (it waits for the stop
    // before continuing the task, so a SIGCONT never overtakes this SIGSTOP).
    // SAFETY: helper with an integer argument.
    unsafe { bpf_send_signal_thread(SIGSTOP) };
    // SAFETY: rec points to a reserved record of the right size; fields are written in place.
    unsafe {
        (*rec).seq = seq;
        (*rec).cgroup_id = bpf_get_current_cgroup_id();
        (*rec).ino = k.ino;
        (*rec).pid = tgid;
        (*rec).tid = tid;
        (*rec).op = op;
        (*rec).dev = k.dev;
        (*rec).root = m.root;
        (*rec).flags = m.flags;
        (*rec).depth = m.depth;
        (*rec)._pad = 0;
        (*rec).names_len = 0;
        (*rec).other_len = 0;
    }
    describe(rec);
    entry.submit(0);
    -ERESTARTNOINTR
}

/// Entry of every hook: only tasks of sessions with the file hold, and only when an earlier
/// LSM has not already refused.
fn check(op: u32, target: *const c_void, other: *const c_void, ancestors_too: bool) -> i32 {
    if target.is_null() || !session_has_file_hold() {
        return 0;
    }
    match protected(target, ancestors_too) {
        Some(m) => hold(op, target, m, other),
        None => 0,
    }
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`.
#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    check(OP_UNLINK, ctx.arg(1), core::ptr::null(), false)
}

/// `path_rmdir(const struct path *dir, struct dentry *dentry)`.
#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    // Any rmdir on the host may free a directory inode for reuse: cached verdicts go stale.
    bump_generation();
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    check(OP_RMDIR, ctx.arg(1), core::ptr::null(), false)
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry, flags)`: the source moving away, an
/// overwritten destination, or either side of an exchange.
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    // Any rename on the host may move a directory under (or out of) a protected root.
    bump_generation();
    let prev: i32 = ctx.arg(5);
    if prev != 0 {
        return prev;
    }
    let old: *const c_void = ctx.arg(1);
    let new: *const c_void = ctx.arg(3);
    let flags: u32 = ctx.arg(4);
    if old.is_null() || !session_has_file_hold() {
        return 0;
    }
    if let Some(m) = protected(old, true) {
        return hold(OP_RENAME, old, m, new);
    }
    // A negative destination dentry (nothing overwritten) has no inode: `protected` says None.
    if !new.is_null() {
        if let Some(mut m) = protected(new, flags & RENAME_EXCHANGE != 0) {
            m.flags |= HOLD_RENAME_TARGET;
            return hold(OP_RENAME, new, m, old);
        }
    }
    0
}

/// `path_truncate(const struct path *path)`: truncate(2) (and, before 6.2, ftruncate and O_TRUNC).
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let path: *const c_void = ctx.arg(0);
    // SAFETY: kernel read through the accessor.
    let d = unsafe { guard_path_dentry(path) };
    check(OP_TRUNCATE, d, core::ptr::null(), false)
}

/// `file_truncate(struct file *file)` (6.2+): ftruncate(2) and open(2) with O_TRUNC.
#[lsm(hook = "file_truncate")]
pub fn file_truncate(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let file: *const c_void = ctx.arg(0);
    // SAFETY: kernel read through the accessor.
    let d = unsafe { guard_file_dentry(file) };
    check(OP_TRUNCATE, d, core::ptr::null(), false)
}

/// `path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)`:
/// a new name for a protected file makes that name protected too (by inode).
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let old: *const c_void = ctx.arg(0);
    if old.is_null() || !session_has_file_hold() {
        return 0;
    }
    if let Some(m) = protected(old, false) {
        if let Some(k) = key_of(old) {
            if PROT_INODES.insert(k, m.root, 0).is_err() {
                // Without the record the new name would be unprotected: refuse the link.
                return -EPERM;
            }
        }
    }
    if session_has(SESSION_WRITE_HOLD) {
        if let Some(m) = write_protected(old) {
            if let Some(k) = key_of(old) {
                if WRITE_DIRS.insert(k, m.root | WRITE_LINK, 0).is_err() {
                    return -EPERM;
                }
            }
        }
    }
    0
}

/// `file_open(struct file *file)`: a file of a write-protected tree opened for writing (an
/// open that created the file passed `path_mknod` already).
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    if !session_has(SESSION_WRITE_HOLD) {
        return 0;
    }
    let file: *const c_void = ctx.arg(0);
    // SAFETY: kernel reads through the accessors.
    let mode = unsafe { guard_file_mode(file) };
    if mode & FMODE_WRITE == 0 || mode & FMODE_CREATED != 0 {
        return 0;
    }
    // SAFETY: as above.
    let d = unsafe { guard_file_dentry(file) };
    if d.is_null() {
        return -EPERM;
    }
    match write_protected(d) {
        Some(m) => hold(OP_WRITE, d, m, core::ptr::null()),
        None => 0,
    }
}

/// `path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)`:
/// a new entry (open with O_CREAT, mknod) in a write-protected tree, or named by a write pattern.
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    if !session_has(SESSION_WRITE_HOLD) {
        return 0;
    }
    let dir_path: *const c_void = ctx.arg(0);
    let new: *const c_void = ctx.arg(1);
    // SAFETY: kernel read through the accessor.
    let dir = unsafe { guard_path_dentry(dir_path) };
    if dir.is_null() || new.is_null() {
        return -EPERM;
    }
    let m = if config(CONFIG_FLAGS) & CFG_WRITE_PATTERNS != 0
        && name_matches(new, PAT_WRITE_EXACT, PAT_WRITE_SUFFIX)
    {
        Some(pattern_match(0))
    } else {
        write_protected(dir).map(|mut m| {
            if m.flags & HOLD_LINK == 0 {
                m.depth += 1;
            }
            m
        })
    };
    let Some(m) = m else {
        return 0;
    };
    let Some(k) = key_of(dir) else {
        return -EPERM;
    };
    hold_key(OP_CREATE, k, m, |rec| {
        // SAFETY: rec points to a reserved record; the names are written in place.
        unsafe {
            (*rec).names_len = fill_names(new, addr_of_mut!((*rec).names));
            (*rec).other_len = 0;
        }
    })
}

/// `sched_process_exit(struct task_struct *p)`: forgets the thread's pending hold and, when the
/// process ends, its standing decisions.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    if !session_has_file_hold() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let _ = PENDING.remove(tid);
    let _ = DECISIONS.remove(tid);
    if tid == tgid {
        // The protected roots and CONNECT_ROOT (= MAX_ROOTS).
        for root in 0..=MAX_ROOTS {
            let _ = STANDING.remove(StandingKey { tgid, root });
        }
    }
    0
}
