//! The session's cgroup v2 leaf: every process of the session lives in it.

use std::io;
use std::path::{Path, PathBuf};

/// Errors about cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted.
    #[error("no cgroup v2 file system is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    /// A session of that name still has processes.
    #[error("a session named {0} is still running (its cgroup has processes)")]
    Busy(String),
    /// Neither cgroup2 nor a v1 hierarchy has the pids controller.
    #[error("no pids controller (neither in cgroup2's cgroup.controllers nor a cgroup v1 hierarchy): the session's pids limit cannot be set")]
    NoPids,
    /// A cgroup operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// Finds the mount point of the cgroup v1 hierarchy the pids controller is bound to, in a
/// mountinfo text (hybrid layouts keep it there rather than on cgroup2).
pub fn find_pids_v1(mountinfo: &str) -> Option<PathBuf> {
    crate::mountinfo::parse(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == "pids"))
        .map(|m| m.point)
}

/// Every cgroup (v1 and v2) mount point in a mountinfo text.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    crate::mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|m| matches!(m.fstype.as_str(), "cgroup" | "cgroup2"))
        .map(|m| m.point)
        .collect()
}

/// Finds the cgroup2 mount point in a mountinfo text.
pub fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    crate::mountinfo::parse(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.point)
}

/// The parent of all session cgroups, below the cgroup2 mount.
pub const PARENT: &str = "sandbox";

/// A session's cgroup leaf.
#[derive(Debug)]
pub struct SessionCgroup {
    path: PathBuf,
    /// The session's cgroup in the v1 pids hierarchy, where the host keeps the pids controller
    /// there (see [`SessionCgroup::limit_pids`]); the session's init joins it before anything
    /// else runs.
    pids_v1: Option<PathBuf>,
}

/// Where a session's pids limit is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidsLimit {
    /// `pids.max` of the session's cgroup2 leaf (hierarchical: it covers `held` and any child).
    V2(PathBuf),
    /// `pids.max` of a cgroup of the same name in the v1 pids hierarchy, which the init joins.
    V1(PathBuf),
}

impl PidsLimit {
    /// The cgroup directory holding `pids.max`.
    pub fn dir(&self) -> &Path {
        match self {
            PidsLimit::V2(p) | PidsLimit::V1(p) => p,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup2 mount point of this host.
pub fn mount_point() -> Result<PathBuf, CgroupError> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    find_cgroup2(&mi).ok_or(CgroupError::NoCgroup2)
}

/// Removes the cgroup at `path` and its descendants, children first; fails (leaving what it
/// could not remove) when one of them has processes.
fn remove_empty_tree(path: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(path)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_empty_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(path)
}

impl SessionCgroup {
    /// Creates `<cgroup2>/sandbox/<session>`.
    pub fn create(session: &str) -> Result<Self, CgroupError> {
        let root = mount_point()?;
        let parent = root.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &parent)(e)),
        }
        let path = parent.join(session);
        if let Err(e) = std::fs::create_dir(&path) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_err("create", &path)(e));
            }
            // Left over from a session that ended badly (with its child cgroups, e.g. `held`):
            // reuse it only if it is empty. rmdir refuses a cgroup with processes.
            remove_empty_tree(&path).map_err(|_| CgroupError::Busy(session.to_string()))?;
            std::fs::create_dir(&path).map_err(io_err("create", &path))?;
        }
        Ok(SessionCgroup {
            path,
            pids_v1: None,
        })
    }

    /// Limits the number of tasks (processes and threads) of the whole session to `max`: a fork
    /// bomb inside it gets EAGAIN instead of exhausting the host's pids. On cgroup2 when the pids
    /// controller is there (enabled in the parents' `cgroup.subtree_control` as needed), else in
    /// the v1 pids hierarchy of a hybrid layout. No pids controller at all is an error: the
    /// session does not start without its limit.
    pub fn limit_pids(&mut self, max: u32) -> Result<PidsLimit, CgroupError> {
        let root = mount_point()?;
        let controllers = root.join("cgroup.controllers");
        let has_v2 = std::fs::read_to_string(&controllers)
            .map_err(io_err("read", &controllers))?
            .split_whitespace()
            .any(|c| c == "pids");
        if has_v2 {
            let parent = root.join(PARENT);
            for dir in [&root, &parent] {
                let sc = dir.join("cgroup.subtree_control");
                let on = std::fs::read_to_string(&sc).map_err(io_err("read", &sc))?;
                if !on.split_whitespace().any(|c| c == "pids") {
                    std::fs::write(&sc, "+pids").map_err(io_err("enable pids in", &sc))?;
                }
            }
            let f = self.path.join("pids.max");
            std::fs::write(&f, max.to_string()).map_err(io_err("write", &f))?;
            return Ok(PidsLimit::V2(self.path.clone()));
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
        let v1 = find_pids_v1(&mi).ok_or(CgroupError::NoPids)?;
        let parent = v1.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &parent)(e)),
        }
        let name = self.path.file_name().unwrap_or_default();
        let dir = parent.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_err("create", &dir)(e));
            }
            // Left over: its v2 twin was empty (checked by `create`), so is this one, or the
            // rmdir fails and so does the session.
            std::fs::remove_dir(&dir).map_err(io_err("remove the left-over", &dir))?;
            std::fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        }
        self.pids_v1 = Some(dir.clone());
        let f = dir.join("pids.max");
        std::fs::write(&f, max.to_string()).map_err(io_err("write", &f))?;
        Ok(PidsLimit::V1(dir))
    }

    /// Moves the calling process into the session's v1 pids cgroup, if there is one (called by
    /// the session's init before it starts anything; its children inherit it).
    pub fn join_pids_v1(&self) -> Result<(), CgroupError> {
        if let Some(dir) = &self.pids_v1 {
            let f = dir.join("cgroup.procs");
            std::fs::write(&f, "0").map_err(io_err("join", &f))?;
        }
        Ok(())
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id (its directory's inode number), as bpf_get_current_cgroup_id reports it.
    pub fn id(&self) -> Result<u64, CgroupError> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(&self.path)
            .map_err(io_err("stat", &self.path))?
            .ino())
    }

    /// Kills every process left in the cgroup (cgroup.kill) and removes it.
    pub fn destroy(&self) {
        self.destroy_v2();
        self.destroy_pids_v1();
    }

    fn destroy_v2(&self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..200 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the session cgroup");
                    return;
                }
            }
        }
        tracing::warn!(path = %self.path.display(), "session cgroup still busy; left in place");
    }

    /// Removes the v1 pids cgroup once its processes are gone (after [`SessionCgroup::destroy`]
    /// killed them).
    fn destroy_pids_v1(&self) {
        let Some(dir) = &self.pids_v1 else { return };
        for _ in 0..400 {
            match std::fs::remove_dir(dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove the session's pids cgroup");
                    return;
                }
            }
        }
        tracing::warn!(path = %dir.display(), "session pids cgroup still busy; left in place");
    }
}

/// True when process `pid` lives in a session cgroup (inside any sandbox).
pub fn in_session(pid: u32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        // Unknown: treat as inside (fail closed).
        return true;
    };
    s.lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|p| p == format!("/{PARENT}") || p.starts_with(&format!("/{PARENT}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let mi2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(mi2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_cgroup2("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn finds_the_v1_pids_hierarchy_of_a_hybrid_layout() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(find_pids_v1(mi), Some(PathBuf::from("/sys/fs/cgroup/pids")));
        let pure = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(find_pids_v1(pure), None);
    }

    #[test]
    fn lists_every_cgroup_mount() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  50 1 0:40 / /proc rw - proc proc rw\n";
        assert_eq!(
            cgroup_mounts(mi),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    /// A supervisor killed with SIGKILL leaves its cgroup and its `held` child behind: the next
    /// session of that name reuses them.
    #[test]
    fn a_left_over_session_cgroup_with_an_empty_child_is_reused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || mount_point().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "needs root and cgroup v2 (CI is set)"
            );
            eprintln!("skipped: needs root and cgroup v2");
            return;
        }
        let name = format!("unit-reuse-{}", std::process::id());
        let left = SessionCgroup::create(&name).unwrap();
        std::fs::create_dir(left.path.join("held")).unwrap();
        let again = SessionCgroup::create(&name).expect("the empty left-over is reused");
        assert!(!again.path.join("held").exists());
        again.destroy();
    }

    #[test]
    fn this_test_runs_outside_any_session() {
        assert!(!in_session(std::process::id()));
    }
}
