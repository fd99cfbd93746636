//! All maps of the eBPF object. The user side finds them by these names.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
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
