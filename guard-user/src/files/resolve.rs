//! Seeing a held call's paths as the process sees them.
//!
//! Strings are read from the process's memory. Paths are resolved from the process's own
//! directory handles (`/proc/PID/cwd`, `/proc/PID/fd/N`, `/proc/PID/root`) and named by the
//! kernel (`readlink` on an fd), so symbolic links and `/proc/self/fd/N` paths land where the
//! kernel would land. The result is only used to decide and to act on a pinned handle; the
//! process's buffer is never read twice.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Longest path read from a process (PATH_MAX).
const PATH_MAX: usize = 4096;

/// Reads a NUL-terminated string at `addr` in process `pid`.
pub fn read_cstr(pid: u32, addr: u64) -> io::Result<OsString> {
    if addr == 0 {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut cur = addr;
    while out.len() < PATH_MAX {
        // Never read across a page boundary in one go: the next page may be unmapped.
        let page_left = 4096 - (cur as usize & 4095);
        // Most paths are short: a small first read, then up to page boundaries.
        let first = if out.is_empty() { 256 } else { 4096 };
        let want = page_left.min(PATH_MAX - out.len()).min(first);
        let mut small = [0u8; 256];
        let mut large;
        let buf: &mut [u8] = if want <= small.len() {
            &mut small
        } else {
            large = [0u8; 4096];
            &mut large
        };
        let n = read_remote(pid, cur, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let got = &buf[..n];
        if let Some(end) = got.iter().position(|&b| b == 0) {
            out.extend_from_slice(&got[..end]);
            return Ok(OsString::from_vec(out));
        }
        out.extend_from_slice(got);
        cur += n as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// readlink(2) into an OsString.
pub fn readlink(path: &CStr) -> io::Result<OsString> {
    let mut buf: Vec<u8> = Vec::with_capacity(PATH_MAX + 1);
    // SAFETY: the spare capacity is writable for PATH_MAX + 1 bytes (not read before written).
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), PATH_MAX + 1) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: readlink wrote n <= PATH_MAX + 1 bytes.
    unsafe { buf.set_len(n as usize) };
    Ok(OsString::from_vec(buf))
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The kernel's name for an fd of ours.
pub fn fd_path(fd: RawFd) -> io::Result<PathBuf> {
    canonical_link(&format!("/proc/self/fd/{fd}"))
}

/// The path a `/proc` magic link names. Anonymous objects and unlinked files or directories
/// have no usable path: ENOENT.
fn canonical_link(link: &str) -> io::Result<PathBuf> {
    let s = readlink(&cstring(link.as_bytes())?)?;
    if !s.as_bytes().starts_with(b"/") || s.as_bytes().ends_with(b" (deleted)") {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    Ok(PathBuf::from(s))
}

/// The kernel's name for a directory handle of process `pid` (`dirfd` may be AT_FDCWD).
/// This is the fast path: one readlink, no fd opened.
pub fn dirfd_path(pid: u32, dirfd: i32) -> io::Result<PathBuf> {
    let p = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    canonical_link(&p)
}

/// open(2) returning an OwnedFd.
pub fn open_at(dir: Option<RawFd>, path: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: c is a valid C string; dir is a valid fd or AT_FDCWD.
    let fd = unsafe {
        libc::openat(
            dir.unwrap_or(libc::AT_FDCWD),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A path split into the directory it lives in and its last component.
pub struct Split<'a> {
    /// Everything before the last component ("" for a bare name, "/" for a top-level entry).
    pub dir: &'a [u8],
    /// The last component ("" when the path ends in "/" or is empty).
    pub name: &'a [u8],
}

/// Splits off the last component, ignoring trailing slashes.
pub fn split(path: &[u8]) -> Split<'_> {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    let trimmed = &path[..end];
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => Split {
            dir: b"/",
            name: &trimmed[1..],
        },
        Some(i) => Split {
            dir: &trimmed[..i],
            name: &trimmed[i + 1..],
        },
        None => Split {
            dir: b"",
            name: trimmed,
        },
    }
}

/// True for a name that is a plain directory entry (not "", "." or "..").
pub fn plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/')
}

/// Rewrites `/proc/self` and `/proc/thread-self` at the start of an absolute path to the
/// process's own ids in its pid namespace, because the supervisor resolving them would get its
/// own (or none).
fn rewrite_proc_self(pid: u32, path: &[u8]) -> io::Result<Vec<u8>> {
    let rest = |p: &[u8], pre: &[u8]| -> Option<Vec<u8>> {
        let r = p.strip_prefix(pre)?;
        (r.is_empty() || r[0] == b'/').then(|| r.to_vec())
    };
    if let Some(r) = rest(path, b"/proc/self") {
        let (tgid, _) = ns_ids(pid)?;
        return Ok([format!("/proc/{tgid}").into_bytes(), r].concat());
    }
    if let Some(r) = rest(path, b"/proc/thread-self") {
        let (tgid, tid) = ns_ids(pid)?;
        return Ok([format!("/proc/{tgid}/task/{tid}").into_bytes(), r].concat());
    }
    Ok(path.to_vec())
}

/// The thread group id and thread id of host thread `tid` inside its own pid namespace.
fn ns_ids(tid: u32) -> io::Result<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    let last = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().last()?.parse().ok()
    };
    match (last("NSpid:"), last("Tgid:")) {
        (Some(ns_tid), Some(host_tgid)) => {
            // NStgid is the namespace-local tgid.
            let ns_tgid = status
                .lines()
                .find(|l| l.starts_with("NStgid:"))
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
                .unwrap_or(host_tgid);
            Ok((ns_tgid, ns_tid))
        }
        _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
}

/// Opens, as an O_PATH handle, `path` relative to `dirfd` as process `pid` would resolve it.
/// `follow` decides whether a final symbolic link is followed.
pub fn open_in_process(pid: u32, dirfd: i32, path: &[u8], follow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_PATH;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    if path.first() == Some(&b'/') {
        let p = rewrite_proc_self(pid, path)?;
        let root = open_at(
            None,
            format!("/proc/{pid}/root").as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let rel: &[u8] = {
            let mut r = &p[..];
            while r.first() == Some(&b'/') {
                r = &r[1..];
            }
            if r.is_empty() {
                b"."
            } else {
                r
            }
        };
        return open_at(Some(root.as_raw_fd()), rel, flags, 0);
    }
    let base = if dirfd == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{dirfd}")
    };
    let base = open_at(None, base.as_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    if path.is_empty() {
        // The directory itself (a bare name's directory): the handle just opened is it.
        return Ok(base);
    }
    open_at(Some(base.as_raw_fd()), path, flags, 0)
}

/// A directory pinned by handle, with the kernel's name for it.
#[derive(Debug)]
pub struct PinnedDir {
    /// O_PATH handle of the directory.
    pub fd: OwnedFd,
    /// Its canonical path.
    pub path: PathBuf,
}

/// Where a path argument of a held call points: its directory (pinned) and last component.
#[derive(Debug)]
pub struct Target {
    /// The directory holding the entry.
    pub dir: PinnedDir,
    /// The entry's name in that directory.
    pub name: OsString,
}

impl Target {
    /// The entry's canonical path.
    pub fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }
}

/// Resolves the directory of `path` (relative to `dirfd` of process `pid`) and pins it.
/// The last component is not followed (as unlink, rmdir and rename do).
pub fn target_entry(pid: u32, dirfd: i32, path: &[u8]) -> io::Result<Target> {
    let sp = split(path);
    if !plain_name(sp.name) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let dir = open_in_process(pid, dirfd, sp.dir, true)?;
    let dpath = fd_path(dir.as_raw_fd())?;
    Ok(Target {
        dir: PinnedDir {
            fd: dir,
            path: dpath,
        },
        name: OsStr::from_bytes(sp.name).to_os_string(),
    })
}

/// Resolves a path the way open(2) or truncate(2) does (following a final symlink unless
/// `follow` is false) to an O_PATH handle of the object and its canonical path.
pub fn target_object(
    pid: u32,
    dirfd: i32,
    path: &[u8],
    follow: bool,
) -> io::Result<(OwnedFd, PathBuf)> {
    let fd = open_in_process(pid, dirfd, path, follow)?;
    let p = fd_path(fd.as_raw_fd())?;
    Ok((fd, p))
}

/// The canonical path of an open fd of process `pid`.
pub fn proc_fd_path(pid: u32, fd: i32) -> io::Result<PathBuf> {
    canonical_link(&format!("/proc/{pid}/fd/{fd}"))
}

/// Convenience for joining a canonical directory and a plain name.
pub fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// Reads up to `buf.len()` bytes at `addr` in process `pid`'s memory (process_vm_readv);
/// returns how many were read.
pub fn read_remote(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: both iovecs describe valid memory of `buf.len()` bytes on their side.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_takes_the_last_component() {
        let s = split(b"/a/b/c");
        assert_eq!((s.dir, s.name), (&b"/a/b"[..], &b"c"[..]));
        let s = split(b"/a/b/c//");
        assert_eq!((s.dir, s.name), (&b"/a/b"[..], &b"c"[..]));
        let s = split(b"/top");
        assert_eq!((s.dir, s.name), (&b"/"[..], &b"top"[..]));
        let s = split(b"name");
        assert_eq!((s.dir, s.name), (&b""[..], &b"name"[..]));
        assert!(!plain_name(split(b"a/..").name));
        assert!(!plain_name(split(b"/").name));
    }

    #[test]
    fn reads_strings_from_own_memory() {
        let s = CString::new("/some/path/x").unwrap_or_else(|e| panic!("{e}"));
        let got =
            read_cstr(std::process::id(), s.as_ptr() as u64).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, OsString::from("/some/path/x"));
    }

    #[test]
    fn resolves_proc_self_fd_paths_of_a_process() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let canon = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let d = std::fs::File::open(&canon).unwrap_or_else(|e| panic!("{e}"));
        let p = format!("/proc/self/fd/{}/file", d.as_raw_fd());
        let t = target_entry(std::process::id(), libc::AT_FDCWD, p.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.path(), canon.join("file"));
    }
}
