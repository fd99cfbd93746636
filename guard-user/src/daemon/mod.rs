//! `sandbox daemon`: the privileged service of systemd-managed hosts. Users of the `sandbox`
//! group run `sandbox run` without root; their client ([`client`]) hands the daemon its
//! arguments, environment, working directory and stdio, and the daemon starts the session as
//! that user, under the same guard, in a session process of its own: its own binary re-executed
//! as `sandbox run --user UID --daemon-session 3 ARGS...` (so [`crate::launch::run`] is the one
//! launcher), with a clean environment and the request's details on fd 3 ([`wire::SessionSpec`]).
//!
//! The session process reads what the user names (profiles, `--protect` paths, rule catalogues,
//! the webhook secret) with the user's file-system credentials ([`UserFs`]), never root's; the
//! user cannot pass `--user`; the user's environment goes to the command only.
//!
//! Fail closed: each session process gets a parent-death signal ([`daemon_gone_signal`]) from
//! the daemon thread that started it, so when the daemon dies or stops, its sessions are killed
//! (the session cgroup's `cgroup.kill`), their holds end denied and their audit logs say so; a
//! session process killed outright takes its session down through the init's lifeline, and a
//! daemon that starts appends an end record to every log left without one.

pub mod client;
pub mod wire;

use std::io::{BufRead, BufReader, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{self, ControlMessageOwned, MsgFlags};

use crate::peer::{self, Peer};
use wire::{ClientMsg, DaemonMsg, Request, SessionSpec};

/// Options of `sandbox daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The socket to listen on (default: `$SANDBOX_STATE_DIR/daemon.sock`). Ignored under
    /// systemd socket activation (LISTEN_FDS), which hands over the socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Members of this group (a name or a numeric gid) may start sessions.
    #[arg(long, value_name = "NAME|GID", default_value = peer::USERS_GROUP)]
    pub group: String,
    /// Members of this group (a name or a numeric gid) may decide every session's holds.
    #[arg(long = "approvers-group", value_name = "NAME|GID", default_value = peer::APPROVERS_GROUP)]
    pub approvers_group: String,
    /// Sessions load their own eBPF programs (no spare loaded ahead of time): for measuring.
    #[arg(long, hide = true)]
    pub no_preload: bool,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Not root.
    #[error("sandbox daemon must run as root (it is the privileged side of every session)")]
    NotRoot,
    /// A group could not be resolved.
    #[error("--{option} {spec}: {why} (create it, e.g. with `cargo xtask install`, or pass a numeric gid)")]
    Group {
        /// Which option.
        option: &'static str,
        /// As given.
        spec: String,
        /// Why.
        why: String,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Sys { what, source }
}

/// The daemon's socket: `$SANDBOX_STATE_DIR/daemon.sock`.
pub fn socket_path() -> PathBuf {
    crate::control::state_dir().join("daemon.sock")
}

/// The signal a session process gets when the daemon thread that started it is gone (the daemon
/// died, stopped or restarted): it ends its session.
pub fn daemon_gone_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal a session process gets from the daemon when its client went away: it ends its
/// session.
pub fn client_gone_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// Sessions served at once; more are refused (the host has its limits).
const MAX_SESSIONS: usize = 512;

/// Exec observers loaded ahead of time, each taken by the next session (which then does not pay
/// for loading eBPF: about 50 ms); a background thread keeps [`SPARES`] of them loaded.
#[derive(Default)]
struct Spare {
    slot: std::sync::Mutex<Vec<crate::exec::Preloaded>>,
    wake: std::sync::Condvar,
}

/// How many exec observers the daemon keeps loaded for sessions to come (a burst of starts
/// takes them all; the rest load their own while the thread catches up).
const SPARES: usize = 2;

impl Spare {
    /// Takes a spare, if one is ready, and asks for the next.
    fn take(&self) -> Option<crate::exec::Preloaded> {
        let mut g = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = g.pop();
        self.wake.notify_all();
        p
    }

    /// Keeps [`SPARES`] loaded, forever. A load that fails is retried after a pause (sessions
    /// load their own meanwhile). First it runs the BPF LSM probe that `--backend auto` caches
    /// in the state directory, so that no session pays for it either.
    fn fill(&self, state: &Path) {
        let mut btf: Option<aya::Btf> = aya::Btf::from_sys_fs()
            .map_err(|e| tracing::warn!(error = %e, "kernel BTF"))
            .ok();
        if let Some(b) = &btf {
            let probe = crate::files::lsm::probe_cached(state, || Ok(b));
            tracing::info!(lsm = ?probe, "BPF LSM probe");
        }
        loop {
            {
                let mut g = self
                    .slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while g.len() >= SPARES {
                    g = self
                        .wake
                        .wait(g)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
            if btf.is_none() {
                btf = aya::Btf::from_sys_fs()
                    .map_err(|e| tracing::warn!(error = %e, "kernel BTF"))
                    .ok();
            }
            match btf.as_ref().map(crate::exec::ExecObserver::preload) {
                Some(Ok(p)) => self
                    .slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(p),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "preloading the exec observer failed");
                    std::thread::sleep(Duration::from_secs(5));
                }
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        }
    }
}

/// Runs `sandbox daemon` until killed.
pub fn cmd_daemon(args: &DaemonArgs) -> Result<u8, DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    let users_gid = peer::group_id(&args.group).map_err(|why| DaemonError::Group {
        option: "group",
        spec: args.group.clone(),
        why,
    })?;
    let approvers_gid = match peer::group_id(&args.approvers_group) {
        Ok(g) => Some(g),
        // The default group missing: only root decides (fewer deciders, never more).
        Err(why) if args.approvers_group == peer::APPROVERS_GROUP => {
            eprintln!("sandbox daemon: {why}: only root may decide holds");
            None
        }
        Err(why) => {
            return Err(DaemonError::Group {
                option: "approvers-group",
                spec: args.approvers_group.clone(),
                why,
            })
        }
    };
    let state = crate::control::state_dir();
    crate::launch::ensure_state_dir(&state)
        .map_err(|e| sys(format!("state directory {}", state.display()))(e))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(sys("read /proc/self/exe"))?;
    // Before the socket exists: whoever can connect sees the logs already completed.
    recover(&crate::audit::log_dir(), &state);
    let listener = match activated_listener() {
        Some(l) => l,
        None => bind(args.socket.clone().unwrap_or_else(socket_path), users_gid)?,
    };
    eprintln!(
        "sandbox daemon: listening (sessions for gid {users_gid}, approvers {}), binary {}",
        approvers_gid.map_or("root only".to_string(), |g| format!("gid {g}")),
        exe.display()
    );
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let spare = std::sync::Arc::new(Spare::default());
    if !args.no_preload {
        let (s, st) = (spare.clone(), state.clone());
        std::thread::Builder::new()
            .name("preload".into())
            .spawn(move || s.fill(&st))
            .map_err(sys("spawn the preload thread"))?;
    }
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_SESSIONS {
            live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            send(
                &stream,
                &DaemonMsg::Error("the daemon is busy: too many sessions".into()),
            );
            continue;
        }
        let (exe, live2) = (exe.clone(), live.clone());
        let ctx = Ctx {
            users_gid,
            approvers_gid,
            exe,
            spare: spare.clone(),
        };
        // This thread lives as long as the session: it is the parent-death anchor of the
        // session process (PR_SET_PDEATHSIG fires when the creating thread exits).
        let spawned = std::thread::Builder::new()
            .name("session".into())
            .spawn(move || {
                serve_client(stream, &ctx);
                live2.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        if spawned.is_err() {
            live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    Ok(0)
}

/// systemd socket activation: fd 3 when LISTEN_PID is us and LISTEN_FDS is at least 1.
fn activated_listener() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || n < 1 {
        return None;
    }
    // SAFETY: plain fcntl on fd 3, which systemd handed us.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    // Not for the sessions this daemon starts.
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: still single-threaded.
        unsafe { std::env::remove_var(k) };
    }
    // SAFETY: fd 3 is the listening socket systemd passed (LISTEN_FDS).
    Some(unsafe { UnixListener::from_raw_fd(3) })
}

/// Binds the daemon's socket: root-owned, group `users_gid`, mode 0660.
fn bind(path: PathBuf, users_gid: u32) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(sys(format!("bind {}", path.display()))(
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another daemon is listening there",
                ),
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    let l = UnixListener::bind(&path).map_err(sys(format!("bind {}", path.display())))?;
    std::os::unix::fs::chown(&path, Some(0), Some(users_gid))
        .map_err(sys(format!("chown {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .map_err(sys(format!("chmod {}", path.display())))?;
    Ok(l)
}

struct Ctx {
    users_gid: u32,
    approvers_gid: Option<u32>,
    exe: PathBuf,
    spare: std::sync::Arc<Spare>,
}

fn send(mut stream: &UnixStream, msg: &DaemonMsg) {
    if let Ok(mut s) = serde_json::to_string(msg) {
        s.push('\n');
        let _ = stream.write_all(s.as_bytes());
    }
}

/// One client: checks it, starts its session, relays its signals, reports the exit status.
fn serve_client(stream: UnixStream, ctx: &Ctx) {
    match start(&stream, ctx) {
        Ok((child, rest)) => {
            let code = supervise(&stream, child, rest);
            send(&stream, &DaemonMsg::Exit(code));
        }
        Err(e) => {
            tracing::info!(error = %e, "session refused");
            send(&stream, &DaemonMsg::Error(e));
        }
    }
}

/// Receives the client's fds (stdin, stdout, stderr, cwd) and its request; also returns what
/// the client sent after the request line (signals to relay).
fn receive(stream: &UnixStream) -> Result<(Vec<OwnedFd>, Request, Vec<u8>), String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut b)];
    let mut cmsg = nix::cmsg_space!([RawFd; wire::PASSED_FDS]);
    let msg = socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the client's descriptors: {e}"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| format!("receive: {e}"))? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: the kernel installed these fds for us.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.bytes != 1 || fds.len() != wire::PASSED_FDS {
        return Err(format!(
            "the client passed {} descriptors (stdin, stdout, stderr and its working directory expected)",
            fds.len()
        ));
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stream.take(wire::MAX_REQUEST));
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read the request: {e}"))?;
    let rest = reader.buffer().to_vec();
    let req: Request = serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))?;
    let _ = stream.set_read_timeout(None);
    Ok((fds, req, rest))
}

/// `sandbox run`'s options alone, to check a request the way the session will read it.
#[derive(Debug, clap::Parser)]
#[command(name = "sandbox run", no_binary_name = false)]
struct RunOnly {
    #[command(flatten)]
    run: crate::launch::RunArgs,
}

/// Checks the peer and the request, then starts the session process.
fn start(stream: &UnixStream, ctx: &Ctx) -> Result<(std::process::Child, Vec<u8>), String> {
    // The request is read first, so that a refused client gets the answer, not a broken pipe.
    let received = receive(stream);
    let peer = Peer::of(stream).map_err(|e| format!("cannot identify the peer: {e}"))?;
    if !peer.outside_sessions() {
        return Err("a process inside a sandbox session may not start sessions".into());
    }
    if peer.uid != 0 && !peer.in_group(ctx.users_gid) {
        return Err(format!(
            "uid {} is not a member of the daemon's group (gid {}, `{}` by default): only its members may start sessions without root; ask an administrator to add you, or use sudo sandbox run",
            peer.uid,
            ctx.users_gid,
            peer::USERS_GROUP
        ));
    }
    let (mut fds, req, rest) = received?;
    let argv = req
        .argv
        .iter()
        .map(|a| wire::unhex_os(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad request: {e}"))?;
    let env = wire::unhex_env(&req.env).map_err(|e| format!("bad request: {e}"))?;
    drop(env);
    let parsed = <RunOnly as clap::Parser>::try_parse_from(
        std::iter::once(std::ffi::OsString::from("sandbox run")).chain(argv.iter().cloned()),
    )
    .map_err(|e| e.render().to_string().trim_end().to_string())?;
    if parsed.run.user.is_some() {
        return Err(format!(
            "--user: through the daemon a session runs as the user who asks (uid {}); only root may choose (sudo sandbox run --user ...)",
            peer.uid
        ));
    }
    if parsed.run.daemon_session.is_some() {
        return Err("--daemon-session is internal".into());
    }
    // Taken only now that the request is good; the fds go to the session, above 100 first so
    // that moving them to their numbers in the child cannot overwrite one another.
    let preloaded = ctx.spare.take();
    let mut passed: Vec<OwnedFd> = Vec::new();
    if let Some(p) = preloaded {
        for fd in p.links.into_iter().chain(p.maps) {
            passed.push(high_fd(&fd).map_err(|e| format!("dup: {e}"))?);
        }
    }
    let spec = SessionSpec {
        uid: peer.uid,
        gid: peer.gid,
        // The session's processes do not keep the daemon's groups: being allowed to start
        // sessions or to approve is the human's, not the agent's.
        groups: peer
            .groups
            .iter()
            .copied()
            .filter(|&g| g != ctx.users_gid && Some(g) != ctx.approvers_gid)
            .collect(),
        env: req.env,
        approvers_gid: ctx.approvers_gid,
        preloaded: !passed.is_empty(),
    };
    let spec = serde_json::to_vec(&spec).map_err(|e| format!("internal error: {e}"))?;
    let (spec_r, spec_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    let spec_r = high_fd(&spec_r).map_err(|e| format!("dup: {e}"))?;
    let cwd = fds.pop().ok_or("no working directory")?;
    let stderr = fds.pop().ok_or("no stderr")?;
    let stdout = fds.pop().ok_or("no stdout")?;
    let stdin = fds.pop().ok_or("no stdin")?;
    let mut cmd = std::process::Command::new(&ctx.exe);
    cmd.arg("run")
        .arg("--user")
        .arg(peer.uid.to_string())
        .arg("--daemon-session")
        .arg(wire::SPEC_FD.to_string())
        .args(&argv)
        .env_clear()
        .stdin(std::process::Stdio::from(stdin))
        .stdout(std::process::Stdio::from(stdout))
        .stderr(std::process::Stdio::from(stderr));
    // The guard's own settings are the daemon's, never the user's.
    cmd.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for k in [
        "SANDBOX_STATE_DIR",
        crate::audit::LOG_DIR_ENV,
        "SANDBOX_LOG",
        "CI",
    ] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    let parent = std::process::id() as libc::pid_t;
    let (spec_fd, cwd_fd) = (spec_r.as_raw_fd(), cwd.as_raw_fd());
    let passed_raw: Vec<RawFd> = passed.iter().map(|f| f.as_raw_fd()).collect();
    let gone = daemon_gone_signal();
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, gone) != 0 || libc::getppid() != parent {
                libc::_exit(125);
            }
            if libc::fchdir(cwd_fd) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Every source fd is at 100 or above: no dup2 below overwrites another source.
            if libc::dup2(spec_fd, wire::SPEC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (i, &fd) in passed_raw.iter().enumerate() {
                if libc::dup2(fd, wire::PRELOADED_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("start the session process: {e}"))?;
    drop(cmd);
    drop(spec_r);
    drop(cwd);
    drop(passed);
    let mut w = std::fs::File::from(spec_w);
    // The session reads it before anything else; a failure shows as its own set-up error.
    let _ = w.write_all(&spec);
    drop(w);
    tracing::info!(uid = peer.uid, pid = child.id(), "session started");
    Ok((child, rest))
}

/// Relays the client's signals to the session process until it exits; ends the session when the
/// client goes away. Returns the exit status for the client.
fn supervise(stream: &UnixStream, mut child: std::process::Child, early: Vec<u8>) -> u8 {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open of our own unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    let _ = stream.set_nonblocking(true);
    let mut buf: Vec<u8> = early;
    let mut client_gone = false;
    let mut first = true;
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if client_gone { -1 } else { stream.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: valid pollfds; without a pidfd (never on supported kernels) poll by time.
        unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                2,
                if pidfd < 0 || first { 50 } else { -1 },
            )
        };
        // Signals sent together with the request are relayed at once.
        if pfds[1].revents != 0 || std::mem::take(&mut first) {
            let mut chunk = [0u8; 512];
            match (&*stream).read(&mut chunk) {
                Ok(0) => client_gone = true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => client_gone = true,
            }
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if let Ok(ClientMsg::Signal(s)) = serde_json::from_slice(&line) {
                    if wire::RELAYED.contains(&s) {
                        // SAFETY: our own child, not reaped yet (its pid cannot be reused).
                        unsafe { libc::kill(pid, s) };
                    }
                }
            }
            if buf.len() > 4096 {
                client_gone = true;
            }
            if client_gone {
                // SAFETY: as above.
                unsafe { libc::kill(pid, client_gone_signal()) };
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            if pidfd >= 0 {
                // SAFETY: our pidfd.
                unsafe { libc::close(pidfd) };
            }
            use std::os::unix::process::ExitStatusExt;
            return match (st.code(), st.signal()) {
                (Some(c), _) => c as u8,
                (None, Some(s)) => 128u8.wrapping_add(s as u8),
                _ => 125,
            };
        }
    }
}

/// A close-on-exec duplicate of `fd` at 100 or above.
fn high_fd(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Takes the preloaded exec observer the daemon passed (fds [`wire::PRELOADED_FD`]..).
pub fn take_preloaded() -> crate::exec::Preloaded {
    let fd = |i: usize| {
        let n = wire::PRELOADED_FD + i as RawFd;
        // SAFETY: fcntl on the fds the daemon passed; they are ours from here on.
        unsafe {
            libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
            OwnedFd::from_raw_fd(n)
        }
    };
    let links = crate::exec::PROGRAMS.len();
    crate::exec::Preloaded {
        links: (0..links).map(fd).collect(),
        maps: (links..links + crate::exec::PRELOADED_MAPS.len())
            .map(fd)
            .collect(),
    }
}

/// Reads the daemon's [`SessionSpec`] in the session process (fd [`wire::SPEC_FD`]).
pub fn read_spec(fd: RawFd) -> Result<SessionSpec, String> {
    if fd != wire::SPEC_FD {
        return Err(format!("--daemon-session {fd}: internal option"));
    }
    // The caller is root and the daemon put the spec there; anyone else running
    // `sudo sandbox run --daemon-session` only chooses what root could choose anyway.
    // SAFETY: fd 3 is the pipe the daemon passed; owned from here on.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = Vec::new();
    Read::by_ref(&mut f)
        .take(wire::MAX_REQUEST + 4096)
        .read_to_end(&mut text)
        .map_err(|e| format!("read the session request from the daemon: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("bad session request from the daemon: {e}"))
}

/// The calling thread reads and resolves files with a user's file-system credentials (fsuid,
/// fsgid, groups; the file-system capabilities go with a non-zero fsuid) until dropped. Only
/// this thread: raw system calls, not glibc's process-wide wrappers.
///
/// The kernel clears the parent-death signal whenever credentials change: it is armed again
/// when dropped, and raised at once if the parent (the daemon) died meanwhile.
pub struct UserFs {
    groups: Vec<libc::gid_t>,
    pdeathsig: libc::c_int,
    parent: libc::pid_t,
}

impl UserFs {
    /// Switches this thread to `uid`/`gid`/`groups` for file access.
    pub fn enter(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<UserFs> {
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut saved = vec![0 as libc::gid_t; n.max(0) as usize];
        // SAFETY: saved has room for n groups.
        let n = unsafe { libc::getgroups(saved.len() as i32, saved.as_mut_ptr()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        saved.truncate(n as usize);
        let mut pdeathsig: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int; getppid has no preconditions.
        let parent = unsafe {
            libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeathsig as *mut libc::c_int);
            libc::getppid()
        };
        let guard = UserFs {
            groups: saved,
            pdeathsig,
            parent,
        };
        // SAFETY: raw per-thread credential calls.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
            if libc::syscall(libc::SYS_setfsuid, -1i32) as u32 != uid
                || libc::syscall(libc::SYS_setfsgid, -1i32) as u32 != gid
            {
                return Err(std::io::Error::other("setfsuid/setfsgid did not take"));
            }
        }
        Ok(guard)
    }
}

impl Drop for UserFs {
    fn drop(&mut self) {
        // SAFETY: raw per-thread credential calls back to root's.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, 0);
            libc::syscall(libc::SYS_setfsgid, 0);
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
            if self.pdeathsig != 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, self.pdeathsig);
                if libc::getppid() != self.parent {
                    libc::kill(libc::getpid(), self.pdeathsig);
                }
            }
        }
    }
}

/// Appends an end record to every audit log whose session ended without one (its session
/// process was killed, e.g. with the daemon) and whose session is not live.
pub fn recover(log_dir: &Path, state: &Path) {
    let Ok(rd) = std::fs::read_dir(log_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(session) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        // A live session (its control socket answers) is never touched.
        if UnixStream::connect(crate::control::socket_path(state, session)).is_ok() {
            continue;
        }
        let Ok(r) = crate::audit::AuditLog::reopen(log_dir, session) else {
            continue;
        };
        let kind = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v.get("kind"))
                .and_then(|k| k.as_str())
                .map(str::to_string)
        };
        if kind(&r.last).as_deref() == Some("session_end")
            || kind(&r.first).as_deref() != Some("session_start")
        {
            continue;
        }
        let sup = r
            .first
            .as_ref()
            .and_then(|f| f.get("supervisor_pid"))
            .and_then(|p| p.as_u64())
            .unwrap_or(0);
        if sup > 0 && supervisor_alive(sup as u32) {
            continue;
        }
        let mut m = serde_json::Map::new();
        m.insert(
            "error".into(),
            "the session's supervisor died without an end record (every process of the session died with it, held operations were not carried out); recorded by sandbox daemon at start".into(),
        );
        m.insert("recovered".into(), true.into());
        if r.log.append("session_end", m).is_ok() {
            eprintln!(
                "sandbox daemon: recorded the end of session {session} (its supervisor had died)"
            );
        }
    }
}

/// True when `pid` is a live `sandbox` process.
fn supervisor_alive(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sandbox"))
        })
        .unwrap_or(false)
}
