//! The exec observer: `tp_btf/sched_process_exec` reports every exec inside a watched cgroup.

/// Capacity of [`ExecRecord::filename`] in bytes, including the terminating NUL.
pub const EXEC_FILENAME_LEN: usize = 256;

/// Capacity of [`ExecRecord::args`] in bytes: the start of the new image's argument area.
///
/// A power of two, so that the eBPF side can bound the read length with a mask the verifier
/// understands.
pub const EXEC_ARGS_LEN: usize = 512;

/// Value type of the `SESSION_CGROUPS` map: flags of a watched cgroup (cgroup v2 id as key).
///
/// A watched cgroup with flags `0` is observed only (and programs `HELD_NAMES` names stopped).
pub type SessionFlags = u32;

/// `SessionFlags`: the session has `[commands] hold` rules. A script whose own file could not
/// be named at exec is stopped for the user side to look at (see `c/exec_read.c`).
pub const SESSION_HOLDS_COMMANDS: SessionFlags = 1;

/// `ExecRecord::flags`: one of the program's names is in `HELD_NAMES`: the eBPF program stopped
/// the new image (SIGSTOP, before its first instruction) and recorded it in `HELD_PIDS`; the user
/// side decides whether it goes on.
pub const EXEC_STOPPED: u32 = 1;
/// `ExecRecord::flags`: a script was run (`bprm->interp` is not `bprm->filename`): the argument
/// area starts with the interpreter, then the script's path.
pub const EXEC_SCRIPT: u32 = 2;

/// `HELD_PIDS` values (the process stopped at exec for a check, by process id): stopped by the
/// exec program.
pub const HELD_STOPPED: u32 = 1;
/// `HELD_PIDS`: a SIGCONT reached it before the user side let it go (from the kernel: the
/// sandbox's are refused), and it was not stopped again: it may have run.
pub const HELD_CONTINUED: u32 = 2;
/// `HELD_PIDS`: continued that way, and stopped again before its first instruction.
pub const HELD_RESTOPPED: u32 = 3;

/// How many bytes of a program's name `HELD_NAMES` keys on: what the kernel keeps in `comm`
/// (TASK_COMM_LEN - 1). Longer names share a key with every name of the same first 15 bytes:
/// such an exec is stopped and the user side matches the whole name.
pub const EXEC_NAME_LEN: usize = 15;

/// The key of a program name in `HELD_NAMES`: FNV-1a 64 over its first [`EXEC_NAME_LEN`]
/// bytes (up to a NUL), as `c/exec_read.c` computes it.
pub const fn exec_name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < name.len() && i < EXEC_NAME_LEN && name[i] != 0 {
        h = (h ^ name[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// One exec inside a watched cgroup, as the eBPF program writes it into the `EXEC_EVENTS` ring
/// buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    /// cgroup v2 id (the inode number of the cgroup directory) of the task.
    pub cgroup_id: u64,
    /// Process id (thread group id) of the task after the exec.
    pub pid: u32,
    /// Thread id of the task that called exec (the kernel makes it the group leader, so after the
    /// exec it equals `pid`; kept to notice otherwise).
    pub tid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    /// Real user id after the exec (set-user-id bits already applied).
    pub uid: u32,
    /// Flags of the watched cgroup from `SESSION_CGROUPS`.
    pub session_flags: SessionFlags,
    /// `EXEC_STOPPED`, `EXEC_SCRIPT`.
    pub flags: u32,
    /// Always 0 (keeps the record free of implicit padding).
    pub reserved: u32,
    /// Number of valid bytes in `filename`, without the terminating NUL.
    pub filename_len: u32,
    /// Number of valid bytes in `args`.
    pub args_len: u32,
    /// Size of the whole argument area (`mm->arg_end - mm->arg_start`); larger than `args_len`
    /// when the arguments did not fit.
    pub args_total_len: u32,
    /// The path passed to exec (`bprm->filename`), NUL-terminated, truncated to fit.
    pub filename: [u8; EXEC_FILENAME_LEN],
    /// The first `args_len` bytes of the argument area: NUL-separated, NUL-terminated strings.
    pub args: [u8; EXEC_ARGS_LEN],
}

impl ExecRecord {
    /// An all-zero record.
    pub const ZERO: Self = Self {
        cgroup_id: 0,
        pid: 0,
        tid: 0,
        ppid: 0,
        uid: 0,
        session_flags: 0,
        flags: 0,
        reserved: 0,
        filename_len: 0,
        args_len: 0,
        args_total_len: 0,
        filename: [0; EXEC_FILENAME_LEN],
        args: [0; EXEC_ARGS_LEN],
    };
}

// The layout is part of the kernel/user contract: no implicit padding anywhere.
const _: () =
    assert!(core::mem::size_of::<ExecRecord>() == 8 + 10 * 4 + EXEC_FILENAME_LEN + EXEC_ARGS_LEN);
const _: () =
    assert!(core::mem::size_of::<ExecRecord>().is_multiple_of(core::mem::align_of::<ExecRecord>()));
const _: () = assert!(EXEC_ARGS_LEN.is_power_of_two());

// SAFETY: `ExecRecord` is `repr(C)`, made only of integers and byte arrays, and has no padding
// (checked above), so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExecRecord {}
