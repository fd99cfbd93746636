//! All maps of the eBPF object. The user side finds them by these names.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use guard_common::exec::SessionFlags;

/// The cgroups whose tasks are observed: cgroup v2 id (inode number of the cgroup directory) to
/// the session's flags. Written by the user side only. A task is matched by the cgroup it is in,
/// not by its ancestors: a session's processes live in one leaf cgroup.
#[map]
pub static SESSION_CGROUPS: HashMap<u64, SessionFlags> = HashMap::with_max_entries(1024, 0);

/// Exec events (`guard_common::exec::ExecRecord`) for the user side. 256 KiB hold about 300
/// records, enough for a burst of execs between two polls.
#[map]
pub static EXEC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Number of exec events dropped because `EXEC_EVENTS` was full, per CPU, at index 0.
#[map]
pub static EXEC_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

use guard_common::files::{Decision, DirVerdict, InodeKey, Pending, StandingKey};

/// Protected roots (and the roots of file systems mounted below them): inode to root index.
/// A target is protected when it or one of its `d_parent` ancestors is in here.
#[map]
pub static PROT_DIRS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);

/// Other hard links of protected files: inode to root index. Filled by the user side at start
/// and by `path_link` when a protected file gets a new name.
#[map]
pub static PROT_INODES: HashMap<InodeKey, u32> = HashMap::with_max_entries(65536, 0);

/// Ancestor directories of protected roots: renaming one away moves the protected tree.
#[map]
pub static PROT_ANCESTORS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);

/// The held operation of each thread (thread id to its pending hold).
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// Decisions written by the user side (thread id to the decision for its pending hold).
#[map]
pub static DECISIONS: HashMap<u32, Decision> = HashMap::with_max_entries(16384, 0);

/// Standing decisions for a (process, protected root): `VERDICT_*`. Removed when the process
/// exits.
#[map]
pub static STANDING: HashMap<StandingKey, u32> = HashMap::with_max_entries(16384, 0);

/// New holds (`HoldRecord`) for the user side.
#[map]
pub static HOLD_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Operations refused with EPERM because their hold could not be reported (`HOLD_EVENTS` full,
/// or no `PENDING` slot left): a count the user side puts in the audit log.
#[map]
pub static REFUSED: Array<u64> = Array::with_max_entries(1, 0);

/// Walk results of recently seen directories, so that removing many files of one directory walks
/// its `d_parent` chain once. An entry counts only while its generation is `RENAME_GEN`'s.
#[map]
pub static DIR_CACHE: LruHashMap<InodeKey, DirVerdict> = LruHashMap::with_max_entries(16384, 0);

/// Generation of the directory tree, at index 0: bumped by every rename and rmdir on the host
/// (either can move a directory under a protected root, or free a directory inode for reuse),
/// which invalidates every `DIR_CACHE` entry at once.
#[map]
pub static RENAME_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// Name patterns of `protect` and `protect_writes`: `name_hash` of a name or of a suffix to
/// `PAT_*` bits.
#[map]
pub static NAME_PATTERNS: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

/// Settings of the file hold: `CONFIG_FLAGS` (`CFG_*`) and `CONFIG_PATTERN_ROOT`.
#[map]
pub static CONFIG: Array<u32> = Array::with_max_entries(4, 0);

/// Write-protected roots (and their mounts, and other hard links of their files): inode to
/// `root | write_root << 8` (`| 1 << 16` for another link).
#[map]
pub static WRITE_DIRS: HashMap<InodeKey, u32> = HashMap::with_max_entries(4096, 0);

/// As `DIR_CACHE`, for write protection: the walk's match, encoded (see `files.rs`).
#[map]
pub static WDIR_CACHE: LruHashMap<InodeKey, DirVerdict> = LruHashMap::with_max_entries(16384, 0);

/// `hold_connect` endpoints (IPv4): LPM key = port (network order) ++ address; value unused.
#[map]
pub static HELD_CONNECT4: LpmTrie<[u8; 6], u8> = LpmTrie::with_max_entries(1024, 0);

/// `hold_connect` endpoints (IPv6): LPM key = port (network order) ++ address.
#[map]
pub static HELD_CONNECT6: LpmTrie<[u8; 18], u8> = LpmTrie::with_max_entries(1024, 0);

/// The supervisor's process id at index 0: its connects on a process's behalf pass the backstop.
#[map]
pub static NET_SUPERVISOR: Array<u32> = Array::with_max_entries(1, 0);

/// Program names `[commands] hold` names: `guard_common::exec::exec_name_hash` of each to 1.
/// Written by the user side before the session's first exec; empty when nothing is held. The
/// exec program is loaded per session, so these are this session's names.
#[map]
pub static HELD_NAMES: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Processes the exec program stopped for a check (process id to `HELD_STOPPED`, later
/// `HELD_CONTINUED` or `HELD_RESTOPPED`: `guard_common::exec`), entered before the stop
/// signal is sent. The user side removes an entry when it lets the process go on or kills it;
/// until then no SIGCONT from the sandbox reaches the process (the supervisor checks here).
#[map]
pub static HELD_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);
