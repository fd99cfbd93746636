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
/// `SESSION_CGROUPS` flag: the session's write-opens and creations go through `file_open` and
/// `path_mknod` (`files.protect_writes`).
pub const SESSION_WRITE_HOLD: u32 = 4;

/// A file opened for writing below a write-protected path.
pub const OP_WRITE: u32 = 6;
/// A new entry (open with O_CREAT, mknod) below a write-protected path. The record's inode is
/// the directory's; its names start with the new entry's.
pub const OP_CREATE: u32 = 7;

/// `NAME_PATTERNS` value bits: the whole name equals a `protect` pattern's name.
pub const PAT_EXACT: u32 = 1;
/// The name ends with a `protect` pattern's suffix (which starts with '.').
pub const PAT_SUFFIX: u32 = 2;
/// As [`PAT_EXACT`], for a `protect_writes` pattern.
pub const PAT_WRITE_EXACT: u32 = 4;
/// As [`PAT_SUFFIX`], for a `protect_writes` pattern.
pub const PAT_WRITE_SUFFIX: u32 = 8;
/// With [`PAT_EXACT`]: the pattern is `.git` (git itself is not held by it).
pub const PAT_GIT: u32 = 16;
/// [`HoldRecord::flags`]: matched through a `.git` name pattern.
pub const HOLD_GIT: u32 = 16;
/// Suffixes looked up per name: the ones starting at each of its last `MAX_SUFFIXES` dots.
pub const MAX_SUFFIXES: usize = 4;
/// Bytes of a name that are hashed (its last ones): longer patterns cannot be matched.
pub const PATTERN_LEN: usize = 63;

/// `CONFIG` index: `CFG_*` flags.
pub const CONFIG_FLAGS: u32 = 0;
/// `CONFIG` index: the root index that name-pattern matches report.
pub const CONFIG_PATTERN_ROOT: u32 = 1;
/// `CONFIG` flag: `NAME_PATTERNS` has `protect` patterns.
pub const CFG_PATTERNS: u32 = 1;
/// `CONFIG` flag: `NAME_PATTERNS` has `protect_writes` patterns.
pub const CFG_WRITE_PATTERNS: u32 = 2;

/// [`HoldRecord::flags`]: matched below write-protected root number `flags >> 8 & 0xff` (its
/// `depth` counts from there).
pub const HOLD_WRITE_ROOT: u32 = 8;

/// FNV-1a offset basis of [`name_hash`].
pub const NAME_HASH_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime of [`name_hash`].
pub const NAME_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash the LSM programs compute of a name or of a name's suffix: FNV-1a over the bytes
/// from the last to the first (so every suffix's hash is a step of one backward scan).
pub fn name_hash(bytes: &[u8]) -> u64 {
    let mut h = NAME_HASH_BASIS;
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        h = (h ^ bytes[i] as u64).wrapping_mul(NAME_HASH_PRIME);
    }
    h
}

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
