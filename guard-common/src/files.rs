//! The file hold of the BPF LSM backend: maps and records shared by the LSM programs and the user
//! side.
//!
//! A protected object is known by its (device, inode) pair, with the device in the kernel's
//! `s_dev` encoding (`major << 20 | minor`), not userspace's `st_dev`.

/// `SESSION_CGROUPS` flag: the session's file operations go through the LSM file hold.
pub const SESSION_FILE_HOLD: u32 = 1;

/// Operation codes in [`Pending::op`] and [`HoldRecord::op`].
pub const OP_UNLINK: u32 = 1;
/// rmdir(2).
pub const OP_RMDIR: u32 = 2;
/// rename(2) family; the record's "other" names describe the second path.
pub const OP_RENAME: u32 = 3;
/// truncate(2), ftruncate(2), open(2) with O_TRUNC.
pub const OP_TRUNCATE: u32 = 4;
/// connect(2) to a `hold_connect` endpoint. The record's `depth` is the address family (4 or 6),
/// `names[0]` holds the port (network order) followed by the address (4 or 16 bytes).
pub const OP_CONNECT: u32 = 5;

/// `SESSION_CGROUPS` flag: the session's connects to held endpoints go through `socket_connect`.
pub const SESSION_CONNECT_HOLD: u32 = 2;

/// The protected-root index of connect holds (standing decisions of a process cover its other
/// held connects).
pub const CONNECT_ROOT: u32 = MAX_ROOTS;

/// [`Decision::verdict`] and standing verdicts: let the operation happen.
pub const VERDICT_ALLOW: u32 = 1;
/// Fail the operation with EPERM.
pub const VERDICT_DENY: u32 = 2;

/// [`HoldRecord::flags`]: the held object is an ancestor directory of a protected root.
pub const HOLD_ANCESTOR: u32 = 1;
/// [`HoldRecord::flags`]: matched as another hard link of a protected inode.
pub const HOLD_LINK: u32 = 2;
/// [`HoldRecord::flags`]: the protected side of a rename is the destination (overwritten).
pub const HOLD_RENAME_TARGET: u32 = 4;

/// Most protected roots a session may have (the standing-decision cleanup loops over them).
pub const MAX_ROOTS: u32 = 16;
/// Directory levels walked up from a target to find a protected root.
pub const MAX_DEPTH: u32 = 32;
/// Path components kept in a hold record.
pub const MAX_NAMES: usize = 8;
/// Bytes kept of each component (with the terminating NUL).
pub const NAME_LEN: usize = 64;

/// An inode: (kernel device number, inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// `sb->s_dev`.
    pub dev: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
    /// `inode->i_ino`.
    pub ino: u64,
}

/// A thread's held operation, waiting for its decision.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// Identifies this hold (`bpf_ktime_get_ns` when it started).
    pub seq: u64,
    /// `OP_*`.
    pub op: u32,
    /// Device of the held object.
    pub dev: u32,
    /// Inode of the held object.
    pub ino: u64,
}

/// The decision for a thread's hold, written by the user side.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Must equal the pending hold's `seq`, or it is ignored.
    pub seq: u64,
    /// `VERDICT_*`.
    pub verdict: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
}

/// Key of a standing decision: a process and a protected root.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StandingKey {
    /// Thread group id.
    pub tgid: u32,
    /// Index of the protected root.
    pub root: u32,
}

/// A cached walk result for a directory (`DIR_CACHE`): valid while `gen` equals the current
/// `RENAME_GEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DirVerdict {
    /// `RENAME_GEN` when the walk was made.
    pub gen: u64,
    /// Protected root index + 1, or 0 when the directory is not protected.
    pub root_plus1: u32,
    /// Levels from the directory up to that root.
    pub depth: u32,
}

/// A new hold, sent to the user side on the `HOLD_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HoldRecord {
    /// The hold's sequence number (see [`Pending::seq`]).
    pub seq: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Inode of the held object.
    pub ino: u64,
    /// Thread group id.
    pub pid: u32,
    /// Thread id (the decision is keyed by it).
    pub tid: u32,
    /// `OP_*`.
    pub op: u32,
    /// Device of the held object.
    pub dev: u32,
    /// Index of the protected root it belongs to.
    pub root: u32,
    /// `HOLD_*` flags.
    pub flags: u32,
    /// Levels between the object and its protected root (0: the root itself); `MAX_DEPTH` + 1
    /// when unknown (hard link, ancestor).
    pub depth: u32,
    /// Number of valid entries in `names`.
    pub names_len: u32,
    /// Number of valid entries in `other_names`.
    pub other_len: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
    /// The object's name and its parents' names, innermost first.
    pub names: [[u8; NAME_LEN]; MAX_NAMES],
    /// For a rename: the other path's names, innermost first.
    pub other_names: [[u8; NAME_LEN]; MAX_NAMES],
}

const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<Pending>() == 24);
const _: () = assert!(core::mem::size_of::<Decision>() == 16);
const _: () = assert!(core::mem::size_of::<DirVerdict>() == 16);
const _: () =
    assert!(core::mem::size_of::<HoldRecord>() == 3 * 8 + 10 * 4 + 2 * MAX_NAMES * NAME_LEN);

// SAFETY: all of these are repr(C), integers and byte arrays only, without implicit padding
// (sizes checked above), so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for InodeKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Pending {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Decision {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for StandingKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for HoldRecord {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for DirVerdict {}
