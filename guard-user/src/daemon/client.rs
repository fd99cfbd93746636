//! `sandbox run` without root: hands the session to `sandbox daemon` and stands in for it
//! (relays Ctrl-C, SIGTERM, SIGHUP, SIGQUIT and window-size changes, exits with the command's
//! status).

use std::ffi::OsString;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{self, ControlMessage, MsgFlags};

use super::wire::{self, ClientMsg, DaemonMsg, Request};

/// Why the daemon could not be asked (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens.
    #[error("sandbox run needs root or the sandbox daemon: run it as root (sudo sandbox run ...), or start the daemon (systemctl start sandbox.service, as root); no daemon listens at {path}")]
    NoDaemon {
        /// The daemon's socket.
        path: std::path::PathBuf,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// The socket refused us (its group).
    #[error("cannot use the sandbox daemon at {path}: permission denied; only members of its group (`sandbox`) may start sessions without root: ask an administrator to add you (then log in again), or use sudo sandbox run")]
    NotMember {
        /// The daemon's socket.
        path: std::path::PathBuf,
    },
    /// `--user` is root's.
    #[error("--user: without root a session runs as you; only root may choose another user (sudo sandbox run --user ...)")]
    User,
    /// Talking to the daemon failed.
    #[error("sandbox daemon: {0}")]
    Io(String),
    /// The daemon refused or could not start the session.
    #[error("{0}")]
    Refused(String),
}

/// Asks the daemon to run the session given by `argv` (the arguments after `run`); returns the
/// command's exit status.
pub fn run(argv: &[OsString], user_given: bool) -> Result<u8, ClientError> {
    if user_given {
        return Err(ClientError::User);
    }
    let path = super::socket_path();
    let stream = UnixStream::connect(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::NotMember { path: path.clone() }
        } else {
            ClientError::NoDaemon {
                path: path.clone(),
                source,
            }
        }
    })?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| ClientError::Io(format!("{what}: {e}"))
    };
    // Signals are taken before anything is sent: none may be lost or kill us meanwhile.
    let sfd = signal_fd().map_err(io("signalfd"))?;
    let cwd = std::fs::File::open(".").map_err(io("open the working directory"))?;
    let devnull = std::fs::File::open("/dev/null").map_err(io("open /dev/null"))?;
    let std_fd = |fd: RawFd| -> RawFd {
        // SAFETY: fcntl(F_GETFD) only asks whether fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            fd
        } else {
            devnull.as_raw_fd()
        }
    };
    let fds = [std_fd(0), std_fd(1), std_fd(2), cwd.as_raw_fd()];
    let cm = [ControlMessage::ScmRights(&fds)];
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"R")],
        &cm,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| refusal(&stream).unwrap_or(ClientError::Io(format!("hand over stdio: {e}"))))?;
    drop(cwd);
    let req = Request {
        argv: argv.iter().map(|a| wire::hex_os(a)).collect(),
        env: std::env::vars_os()
            .map(|(k, v)| (wire::hex_os(&k), wire::hex_os(&v)))
            .collect(),
    };
    let mut line = serde_json::to_string(&req).map_err(|e| ClientError::Io(e.to_string()))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(|e| {
        refusal(&stream).unwrap_or(ClientError::Io(format!("send the request: {e}")))
    })?;
    relay(&stream, &sfd)
}

/// The daemon's refusal, if it sent one before closing the connection (a send then fails).
fn refusal(stream: &UnixStream) -> Option<ClientError> {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut text = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut text);
    text.split(|&b| b == b'\n')
        .find_map(|l| match serde_json::from_slice::<DaemonMsg>(l) {
            Ok(DaemonMsg::Error(e)) => Some(ClientError::Refused(e)),
            _ => None,
        })
}

/// Blocks the relayed signals and returns a signalfd for them.
fn signal_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain signal-set calls; this process is single-threaded.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in wire::RELAYED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Relays signals until the daemon reports the end.
fn relay(stream: &UnixStream, sfd: &OwnedFd) -> Result<u8, ClientError> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: valid pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            continue;
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let n = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading one siginfo into a buffer of its size.
            let got = unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    n,
                )
            };
            if got == n as isize {
                let mut m = serde_json::to_string(&ClientMsg::Signal(info.ssi_signo as i32))
                    .unwrap_or_default();
                m.push('\n');
                let _ = (&*stream).write_all(m.as_bytes());
            }
        }
        if pfds[0].revents != 0 {
            let mut chunk = [0u8; 4096];
            let n = (&*stream).read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return Err(ClientError::Io(
                    "the daemon closed the connection without an exit status (was it stopped?)"
                        .into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                match serde_json::from_slice::<DaemonMsg>(&line) {
                    Ok(DaemonMsg::Exit(c)) => return Ok(c),
                    Ok(DaemonMsg::Error(e)) => return Err(ClientError::Refused(e)),
                    Err(_) => {}
                }
            }
        }
    }
}
