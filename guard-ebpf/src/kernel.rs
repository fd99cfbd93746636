//! Reads of kernel structures, done by the CO-RE accessors in `c/core_read.c` so that field
//! offsets are relocated to the running kernel at load time.
//!
//! The pointers are opaque here: only the C side knows the structures.

use core::ffi::{c_char, c_int, c_void};

extern "C" {
    /// `task->real_parent->tgid`, or 0 if it cannot be read.
    pub fn guard_task_ppid(task: *const c_void) -> u32;
    /// `task->tgid`, or 0 if it cannot be read.
    pub fn guard_task_tgid(task: *const c_void) -> u32;
    /// Stores `task->mm->arg_start` and `arg_end`; returns 0 or a negative error.
    pub fn guard_task_arg_range(task: *const c_void, start: *mut u64, end: *mut u64) -> c_int;
    /// `bprm->filename` (a kernel address), or null.
    pub fn guard_bprm_filename(bprm: *const c_void) -> *const c_char;
}

extern "C" {
    /// Stores `dentry->d_sb->s_dev` and `dentry->d_inode->i_ino`; -1 for a negative dentry.
    pub fn guard_dentry_key(dentry: *const c_void, dev: *mut u32, ino: *mut u64) -> c_int;
    /// `dentry->d_parent` (the dentry itself at a file system's root), or null.
    pub fn guard_dentry_parent(dentry: *const c_void) -> *const c_void;
    /// Copies the dentry's name (NUL-terminated, at most `len` bytes).
    pub fn guard_dentry_name(dentry: *const c_void, buf: *mut c_char, len: u32) -> i64;
    /// `path->dentry`, or null.
    pub fn guard_path_dentry(path: *const c_void) -> *const c_void;
    /// `file->f_path.dentry`, or null.
    pub fn guard_file_dentry(file: *const c_void) -> *const c_void;
    /// `task->flags`, or 0.
    pub fn guard_task_flags(task: *const c_void) -> u32;
    /// 1 when the current task runs git: its executable is named `git` (or lies in a `git-core`
    /// directory), and it and its directory are owned by root and writable by nobody else.
    pub fn guard_exe_is_git() -> c_int;
    /// `file->f_mode`, or 0.
    pub fn guard_file_mode(file: *const c_void) -> u32;
    /// Hashes of the name of the dentry at address `dentry` for name patterns (see
    /// `c/core_read.c`); returns the number of suffix hashes, or -1. A global function: the
    /// verifier checks it once.
    pub fn guard_name_hashes(dentry: u64, out: *mut NameHashes) -> c_int;
}

/// The result of `guard_name_hashes`: the whole name's hash, then up to four suffixes'.
#[repr(C)]
pub struct NameHashes {
    /// `h[0]`: the whole name (0: too long); `h[1..]`: suffixes starting at dots, from the end.
    pub h: [u64; 5],
}
