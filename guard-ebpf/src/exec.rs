//! Exec observer: reports every exec of a task in a watched cgroup, and stops (before its first
//! instruction) one of a program `[commands] hold` names, for the user side to check.

use core::{
    ffi::{c_int, c_void},
    ptr::addr_of_mut,
};

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_send_signal};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use guard_common::exec::{
    ExecRecord, EXEC_ARGS_LEN, EXEC_FILENAME_LEN, EXEC_SCRIPT, EXEC_STOPPED, HELD_CONTINUED,
    HELD_RESTOPPED, HELD_STOPPED, SESSION_HOLDS_COMMANDS,
};

use crate::{
    kernel::{guard_bprm_filename, guard_task_arg_range, guard_task_ppid, guard_task_tgid},
    maps::{EXEC_EVENTS, EXEC_LOST, HELD_NAMES, HELD_PIDS, SESSION_CGROUPS},
};

// From c/exec_read.c (this module's own reads; kernel.rs has core_read.c's).
extern "C" {
    /// Hashes of the names of the exec of `task` from `bprm` (see `c/exec_read.c`): returns 1
    /// for a script, 0 for another program, -1 when nothing could be read. A global function:
    /// the verifier checks it once; the addresses are passed as scalars.
    fn guard_exec_hashes(task: u64, bprm: u64, out: *mut ExecHashes) -> c_int;
}

/// Entries of `ExecHashes::files` (`WORKS_MAX` in `c/exec_read.c`).
const WORKS_MAX: usize = 8;

/// The result of `guard_exec_hashes`: `comm`, the interpreter's name (scripts), the executable
/// file's name; 0 where not known. For a script also the names of the files the exec let go
/// (the script's own file among them).
#[repr(C)]
pub struct ExecHashes {
    /// The three hashes.
    pub h: [u64; 3],
    /// Names of the files whose last reference the exec dropped (scripts only; 0: unreadable).
    pub files: [u64; WORKS_MAX],
    /// Entries of `files` filled in.
    pub nfiles: u32,
    /// 1 when every such file is in `files`.
    pub walked: u32,
}

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;
const SIGCHLD: i32 = 17;
const SIGCONT: i32 = 18;
/// `si_code` of the SIGCHLD a continued process reports to its parent.
const CLD_CONTINUED: i32 = 6;
/// `bpf_map_update_elem` flag: only an existing entry.
const BPF_EXIST: u64 = 2;

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`: runs in
/// the context of the task after the new image is in place and before its first instruction, so
/// `current` is `p` and its `mm` is the new one.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    match try_sched_process_exec(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

fn try_sched_process_exec(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    // SAFETY: a helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once; only the user side writes this map.
    let Some(&session_flags) = (unsafe { SESSION_CGROUPS.get(cgroup_id) }) else {
        return Ok(0);
    };

    let task: *const c_void = ctx.arg(0);
    let bprm: *const c_void = ctx.arg(2);
    let pid_tgid = bpf_get_current_pid_tgid();

    // `[commands] hold`: a program one of whose names a rule names is stopped here, after the
    // point of no return and before its first instruction; the user side reads its (now
    // immutable) argument vector and decides. Other programs are not touched.
    let mut flags = 0u32;
    let mut hashes = ExecHashes {
        h: [0; 3],
        files: [0; WORKS_MAX],
        nfiles: 0,
        walked: 0,
    };
    // The verifier passes only scalars to a global function's integer arguments: launder the
    // tracepoint's trusted pointers through a probe read of their own stack slots.
    let slots = [task, bprm];
    // SAFETY: reads 16 bytes of this program's stack.
    let addrs =
        unsafe { bpf_probe_read_kernel(&slots as *const [*const c_void; 2] as *const [u64; 2]) }
            .unwrap_or([0, 0]);
    // SAFETY: the addresses are only read through bpf_probe_read_kernel on the C side; `hashes`
    // is a valid out-pointer.
    let kind = unsafe { guard_exec_hashes(addrs[0], addrs[1], &mut hashes) };
    let mut held = false;
    for h in hashes.h {
        // SAFETY: a lookup; the value is not kept.
        if h != 0 && unsafe { HELD_NAMES.get(h) }.is_some() {
            held = true;
        }
    }
    if kind == 1 {
        flags |= EXEC_SCRIPT;
        // A script reached under another name (a symbolic link): its own file, which the
        // interpreter will read, is known only among the files the exec let go. When they
        // could not all be read, the user side looks (fail closed).
        if !held && session_flags & SESSION_HOLDS_COMMANDS != 0 {
            let mut named = false;
            for (i, h) in hashes.files.iter().enumerate() {
                if i as u32 >= hashes.nfiles {
                    break;
                }
                if *h == 0 {
                    continue;
                }
                named = true;
                // SAFETY: a lookup; the value is not kept.
                if unsafe { HELD_NAMES.get(*h) }.is_some() {
                    // (Leaving at once also keeps the compiler from OR-ing the lookups'
                    // pointers, which the verifier refuses.)
                    held = true;
                    break;
                }
            }
            if hashes.walked == 0 || !named {
                held = true;
            }
        }
    }
    if held {
        let pid = (pid_tgid >> 32) as u32;
        // Recorded before the signal: from the moment the process can be stopped, no SIGCONT
        // from the sandbox passes the supervisor's check.
        if HELD_PIDS.insert(pid, HELD_STOPPED, 0).is_err() {
            // SAFETY: a helper with a constant signal number.
            unsafe { bpf_send_signal(SIGKILL) };
            return Ok(0);
        }
        flags |= EXEC_STOPPED;
    }

    // The record (about 800 bytes) is larger than the eBPF stack: fill it in place.
    let Some(mut entry) = EXEC_EVENTS.reserve::<ExecRecord>(0) else {
        count_lost();
        if held {
            // Nobody would hear of the stop: fail closed.
            // SAFETY: a helper with a constant signal number.
            unsafe { bpf_send_signal(SIGKILL) };
        }
        return Ok(0);
    };
    if held {
        // Delivered on the way back to user mode: the new image runs no instruction before
        // the user side sends SIGCONT.
        // SAFETY: a helper with a constant signal number.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    let rec: *mut ExecRecord = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();

    // SAFETY: `rec` points to reserved ring buffer memory of the record's size; fields are plain
    // integers and byte arrays written through the raw pointer. `task` and `bprm` are the
    // tracepoint's arguments and only read through `bpf_probe_read_kernel` in the accessors.
    unsafe {
        (*rec).cgroup_id = cgroup_id;
        (*rec).pid = (pid_tgid >> 32) as u32;
        (*rec).tid = pid_tgid as u32;
        (*rec).ppid = guard_task_ppid(task);
        (*rec).uid = uid_gid as u32;
        (*rec).session_flags = session_flags;
        (*rec).flags = flags;
        (*rec).reserved = 0;

        let filename = guard_bprm_filename(bprm);
        let n = if filename.is_null() {
            0
        } else {
            bpf_probe_read_kernel_str(
                addr_of_mut!((*rec).filename).cast(),
                EXEC_FILENAME_LEN as u32,
                filename.cast(),
            )
        };
        // The helper counts the terminating NUL; on error nothing useful was read.
        if n > 0 {
            (*rec).filename_len = (n - 1) as u32;
        } else {
            (*rec).filename_len = 0;
            (*rec).filename[0] = 0;
        }

        let mut start = 0u64;
        let mut end = 0u64;
        let total = if guard_task_arg_range(task, &mut start, &mut end) == 0 && end > start {
            end - start
        } else {
            0
        };
        let len = if total > EXEC_ARGS_LEN as u64 {
            EXEC_ARGS_LEN as u64
        } else {
            total
        };
        let read = bpf_probe_read_user(
            addr_of_mut!((*rec).args).cast(),
            len as u32,
            start as *const c_void,
        );
        (*rec).args_len = if read == 0 { len as u32 } else { 0 };
        (*rec).args_total_len = if total > u64::from(u32::MAX) {
            u32::MAX
        } else {
            total as u32
        };
    }

    entry.submit(0);
    Ok(0)
}

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result)`: keeps a process the exec program stopped from running when a SIGCONT the
/// sandbox did not send (the kernel's to a process group that becomes orphaned, or to a
/// terminal's foreground group) wakes it before the user side has moved it into the frozen
/// cgroup.
///
/// A continued process reports CLD_CONTINUED to its parent in its own context, on its way back
/// to user mode and before its first instruction (`get_signal`): when that report is generated
/// (its parent neither ignores SIGCHLD nor asked for SA_NOCLDSTOP; the session's init does
/// neither), the process sends itself SIGSTOP here, which `get_signal` takes next. Every
/// SIGCONT to such a process is also recorded (`HELD_CONTINUED`): the user side kills a process
/// that was continued and not stopped again (it may have run).
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> i32 {
    let sig: i32 = ctx.arg(0);
    if sig == SIGCONT {
        let task: *const c_void = ctx.arg(2);
        // SAFETY: the accessor only reads kernel memory through bpf_probe_read_kernel.
        let pid = unsafe { guard_task_tgid(task) };
        // SAFETY: a lookup; the value is not kept.
        if pid != 0 && unsafe { HELD_PIDS.get(pid) }.is_some() {
            let _ = HELD_PIDS.insert(pid, HELD_CONTINUED, BPF_EXIST);
        }
    } else if sig == SIGCHLD {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: a lookup; the value is not kept.
        if unsafe { HELD_PIDS.get(pid) }.is_none() {
            return 0;
        }
        let info: *const c_void = ctx.arg(1);
        // `si_code` follows `si_signo` and `si_errno` (the siginfo layout is the user ABI's).
        // SAFETY: a probe read of the tracepoint's siginfo.
        let code =
            unsafe { bpf_probe_read_kernel((info as *const u8).wrapping_add(8) as *const i32) }
                .unwrap_or(0);
        if code == CLD_CONTINUED {
            // SAFETY: a helper with a constant signal number; it signals the current task.
            unsafe { bpf_send_signal(SIGSTOP) };
            let _ = HELD_PIDS.insert(pid, HELD_RESTOPPED, BPF_EXIST);
        }
    }
    0
}

/// Counts an event that did not fit into the ring buffer.
fn count_lost() {
    if let Some(lost) = EXEC_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU; programs do not migrate while running.
        unsafe { *lost += 1 };
    }
}
