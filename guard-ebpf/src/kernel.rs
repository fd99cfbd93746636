//! Reads of kernel structures, done by the CO-RE accessors in `c/core_read.c` so that field
//! offsets are relocated to the running kernel at load time.
//!
//! The pointers are opaque here: only the C side knows the structures.

use core::ffi::{c_char, c_int, c_void};

extern "C" {
    /// `task->real_parent->tgid`, or 0 if it cannot be read.
    pub fn guard_task_ppid(task: *const c_void) -> u32;
    /// Stores `task->mm->arg_start` and `arg_end`; returns 0 or a negative error.
    pub fn guard_task_arg_range(task: *const c_void, start: *mut u64, end: *mut u64) -> c_int;
    /// `bprm->filename` (a kernel address), or null.
    pub fn guard_bprm_filename(bprm: *const c_void) -> *const c_char;
}
