//! Who is on the other end of a Unix socket: SO_PEERCRED (pid, uid, gid), SO_PEERGROUPS (the
//! supplementary groups at connect time) and whether the peer lives inside a sandbox session.
//!
//! Used by the daemon's socket (`sandbox daemon`: who may start sessions) and the per-session
//! control sockets (who may list and decide holds).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SO_PEERGROUPS` (Linux 4.13).
const SO_PEERGROUPS: libc::c_int = 59;
/// `SO_PEERPIDFD` (Linux 6.5).
const SO_PEERPIDFD: libc::c_int = 77;

/// The credentials of a connected peer, as the kernel recorded them at connect time.
#[derive(Debug)]
pub struct Peer {
    /// Its pid (in our pid namespace).
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
    /// A pidfd of the peer (kernels with SO_PEERPIDFD): proves the pid was not reused.
    pidfd: Option<OwnedFd>,
}

impl Peer {
    /// Reads the peer's credentials of a connected Unix socket.
    pub fn of(sock: &impl AsRawFd) -> std::io::Result<Peer> {
        let fd = sock.as_raw_fd();
        let mut cred = libc::ucred {
            pid: 0,
            uid: u32::MAX,
            gid: u32::MAX,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for SO_PEERCRED.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if cred.pid <= 0 {
            return Err(std::io::Error::other("the peer has no pid here"));
        }
        let mut groups = vec![0u32; 256];
        loop {
            let mut len = (groups.len() * 4) as libc::socklen_t;
            // SAFETY: groups has room for len bytes.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if r == 0 {
                groups.truncate(len as usize / 4);
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) && (len as usize / 4) > groups.len() {
                groups.resize(len as usize / 4, 0);
                continue;
            }
            return Err(e);
        }
        let mut pidfd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: pidfd and len are valid for SO_PEERPIDFD.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                (&mut pidfd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        let pidfd = (r == 0 && pidfd >= 0).then(|| {
            // SAFETY: the kernel made this fd for us.
            unsafe { OwnedFd::from_raw_fd(pidfd) }
        });
        Ok(Peer {
            pid: cred.pid as u32,
            uid: cred.uid,
            gid: cred.gid,
            groups,
            pidfd,
        })
    }

    /// True when the peer's primary or a supplementary group is `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// True only when the peer is known to live outside every sandbox session: its cgroup is
    /// not below the sessions' parent, and (where the kernel gives a pidfd) the process read is
    /// still the peer (its pid was not reused meanwhile). Unsure means no.
    pub fn outside_sessions(&self) -> bool {
        if crate::cgroup::in_session(self.pid) {
            return false;
        }
        match &self.pidfd {
            // SAFETY: signal 0 through a pidfd we own: checks the process is alive.
            Some(p) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    p.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) == 0
            },
            // Older kernels (no SO_PEERPIDFD): the pid as SO_PEERCRED recorded it.
            None => std::path::Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }
}

/// Resolves a group given as a name or a numeric gid.
pub fn group_id(spec: &str) -> Result<u32, String> {
    if let Ok(g) = spec.parse::<u32>() {
        return Ok(g);
    }
    match nix::unistd::Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("no group named {spec:?}")),
        Err(e) => Err(format!("look up group {spec:?}: {e}")),
    }
}

/// The default group of users who may start sessions through the daemon.
pub const USERS_GROUP: &str = "sandbox";
/// The default group of users who may decide every session's holds.
pub const APPROVERS_GROUP: &str = "sandbox-approvers";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socketpair_peer_is_this_process_outside_any_session() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        assert!(p.in_group(nix::unistd::getegid().as_raw()));
        assert!(p.outside_sessions());
    }

    #[test]
    fn numeric_groups_need_no_lookup() {
        assert_eq!(group_id("64000"), Ok(64000));
        assert!(group_id("no-such-group-here-xyz").is_err());
    }
}
