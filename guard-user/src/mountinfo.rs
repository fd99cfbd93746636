//! `/proc/PID/mountinfo`, parsed once for every user of it (the cgroup mounts, the LSM backend's
//! mounts below a protected root, the seccomp backend's bind-mount aliases).

use std::path::PathBuf;

/// One mount: the fields of its mountinfo line that the guard uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the file system.
    pub dev: String,
    /// The directory of the file system shown at the mount point.
    pub root: PathBuf,
    /// The mount point.
    pub point: PathBuf,
    /// The file system type (after the ` - ` separator).
    pub fstype: String,
    /// The file system's own options (`rw,pids`, ...).
    pub super_opts: String,
}

/// Every well-formed line of a mountinfo text, in order.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let super_opts = post.nth(1)?;
            Some(Mount {
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                fstype: fstype.to_string(),
                super_opts: super_opts.to_string(),
            })
        })
        .collect()
}

/// The mounts of this thread's mount namespace (empty when unreadable).
pub fn own() -> Vec<Mount> {
    // thread-self: a thread may have unshared a mount namespace of its own (a test does).
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// A path from mountinfo, where space, tab, newline and backslash are escaped as octal.
pub fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let mi = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n\
                  41 22 0:30 /w/p /mnt/a\\040b rw - tmpfs tmpfs rw\n\
                  garbage\n";
        let m = parse(mi);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].fstype, "cgroup2");
        assert_eq!(m[0].super_opts, "rw,nsdelegate");
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m[1].dev, "0:30");
        assert_eq!(m[1].root, PathBuf::from("/w/p"));
        assert_eq!(m[1].point, PathBuf::from("/mnt/a b"));
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
    }
}
