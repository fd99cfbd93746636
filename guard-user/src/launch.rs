//! `sandbox run`: sets the session up and launches the command under the guard.
//!
//! The process chain:
//! - `sandbox` (supervisor, root, host namespaces): creates the session (state, audit log,
//!   cgroup, eBPF exec observer), then forks
//! - `sandbox-init` (pid 1 of a new pid namespace, new mount/ipc/uts namespaces): mounts a fresh
//!   /proc, hides the state and log directories, forwards signals, reaps orphans; it dies with the
//!   supervisor (PR_SET_PDEATHSIG), and with it every process of the session; it forks
//! - the command: drops to the target user, no capabilities, no_new_privs, Landlock, the seccomp
//!   filter (whose listener fd goes to the supervisor), fds above 2 closed, exec.

use std::ffi::{CString, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde_json::json;

use crate::audit::AuditLog;
use crate::cgroup::SessionCgroup;
use crate::control::{self, SessionInfo};
use crate::files::seccomp::Listener;
use crate::files::supervise::Supervisor;
use crate::files::{self, Protection};
use crate::hold::{Decider, Holds};
use crate::profile::NetMode;
use crate::report::Reporter;

/// Options of `sandbox run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Protect a file or a whole directory tree (also files created in it later): deleting,
    /// renaming away or truncating waits for a human.
    #[arg(long, value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// Session name (letters, digits, `-`, `_`, `.`; at most 64).
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// How long a hold waits for a decision before it is denied (e.g. 30s, 10m; default: the
    /// profile's, else 10m).
    #[arg(long, value_name = "DUR", value_parser = crate::hold::parse_duration)]
    pub decision_timeout: Option<Duration>,
    /// A profile: a name (looked up in ./profiles, ~/.config/sandbox/profiles,
    /// /etc/sandbox/profiles, then the built-in ones) or a path to a TOML file.
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Option<String>,
    /// Run the command as this user (name or uid). Default: the invoking user (SUDO_UID).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// No banner and no hold messages on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// How file holds are enforced: `lsm` (BPF LSM hooks), `seccomp` (seccomp user notification
    /// with Landlock), or `auto` (lsm when this kernel really loads LSM programs).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// The network: `proxy` (the default: only through the session's egress proxy, which holds
    /// cloud delete calls), `none` (loopback only), `host` (the host's network, unfiltered).
    #[arg(long, value_enum, value_name = "MODE")]
    pub net: Option<NetMode>,
    /// Let the proxy tunnel HOST untouched (`*.example.com` for its subdomains); adds to the
    /// profile's `network.allow`.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_host: Vec<String>,
    /// Internal: the session was started by `sandbox daemon`, which passes the request on this
    /// fd (see `daemon::wire::SessionSpec`).
    #[arg(long, hide = true, value_name = "FD")]
    pub daemon_session: Option<i32>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

/// The file-hold backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// lsm if LSM programs load here, else seccomp.
    Auto,
    /// BPF LSM hooks (race-free; needs `bpf` in the kernel's active LSMs).
    Lsm,
    /// seccomp user notification + Landlock.
    Seccomp,
}

/// Why a session could not be set up (exit status 125).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not root.
    #[error("sandbox run must be started as root (sudo sandbox run ...)")]
    NotRoot,
    /// Bad option value.
    #[error("{0}")]
    Usage(String),
    /// Protection set-up.
    #[error(transparent)]
    Files(#[from] files::FilesError),
    /// The egress proxy.
    #[error("network proxy: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    /// cgroup set-up.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The profile.
    #[error("profile: {}", .0.chain())]
    Profile(#[from] crate::profile::ProfileError),
    /// The BPF LSM backend.
    #[error("--backend lsm")]
    Lsm(#[from] files::lsm::LsmError),
    /// eBPF exec observer.
    #[error("exec observer")]
    Exec(#[from] crate::exec::ExecError),
    /// Any other system call.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The sandboxed child could not finish its set-up.
    #[error("the sandbox could not be set up (see the message above)")]
    Child,
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RunError {
    let what = what.into();
    move |e| RunError::Sys {
        what,
        source: e.into(),
    }
}

fn sys_io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Sys { what, source }
}

/// Who the command runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
}

fn lookup_user(spec: &str) -> Result<nix::unistd::User, RunError> {
    let by_name =
        nix::unistd::User::from_name(spec).map_err(sys(format!("look up user {spec}")))?;
    if let Some(u) = by_name {
        return Ok(u);
    }
    if let Ok(uid) = spec.parse::<u32>() {
        if let Some(u) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map_err(sys("look up uid"))?
        {
            return Ok(u);
        }
    }
    Err(RunError::Usage(format!("--user {spec}: no such user")))
}

/// Picks the identity: `--user`, else SUDO_UID/SUDO_GID; refuses to guess root.
pub fn identity(user: Option<&str>) -> Result<Identity, RunError> {
    let u = match user {
        Some(spec) => lookup_user(spec)?,
        None => match std::env::var("SUDO_UID") {
            Ok(uid) => lookup_user(&uid)?,
            Err(_) => {
                return Err(RunError::Usage(
                    "cannot tell the invoking user (no SUDO_UID): start with sudo, or say --user USER (--user root to run as root)".into(),
                ))
            }
        },
    };
    let gid = match (user, std::env::var("SUDO_GID")) {
        (None, Ok(g)) => g.parse().unwrap_or(u.gid.as_raw()),
        _ => u.gid.as_raw(),
    };
    let cname =
        CString::new(u.name.as_bytes()).map_err(|_| RunError::Usage("bad user name".into()))?;
    let groups = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid))
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid]);
    Ok(Identity {
        name: u.name,
        uid: u.uid.as_raw(),
        gid,
        groups,
        home: u.dir,
    })
}

/// Checks a session name, or makes one from the command.
pub fn session_name(given: Option<&str>, cmd: &[OsString]) -> Result<String, RunError> {
    if let Some(n) = given {
        let ok = !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(RunError::Usage(format!(
                "--session {n:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
            )));
        }
        return Ok(n.to_string());
    }
    let base: String = cmd
        .first()
        .map(|c| {
            Path::new(c)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(24)
        .collect();
    let base = if base.is_empty() {
        "session".to_string()
    } else {
        base
    };
    Ok(format!("{base}-{}", &crate::hold::new_id()[..6]))
}

/// Creates the state directory (root's, mode 0755: the approvers group and a session's user
/// reach their control sockets, whose own modes decide who may connect), and loosens an old
/// 0700 one to that.
pub fn ensure_state_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)?;
    let md = std::fs::metadata(p)?;
    if md.uid() != 0 && nix::unistd::geteuid().is_root() {
        return Err(std::io::Error::other(format!(
            "{} is not owned by root",
            p.display()
        )));
    }
    if md.mode() & 0o7777 != 0o755 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Binds the session's control socket (refusing a live session of the same name).
fn bind_control(dir: &Path, session: &str) -> Result<(UnixListener, PathBuf), RunError> {
    ensure_state_dir(dir).map_err(sys_io(format!("state directory {}", dir.display())))?;
    let path = control::socket_path(dir, session);
    if path.as_os_str().len() >= 108 {
        return Err(RunError::Usage(format!(
            "control socket path too long: {}",
            path.display()
        )));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(RunError::Usage(format!(
                "a session named {session} is already running"
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    let l = UnixListener::bind(&path).map_err(sys_io(format!("bind {}", path.display())))?;
    Ok((l, path))
}

/// The profile's view of the file system, applied in the session's mount namespace.
#[derive(Debug, Default, Clone)]
struct Mounts {
    /// Files bound over others (source, target), read-only: the CA bundle with the session CA.
    binds: Vec<(PathBuf, PathBuf)>,
    read_only: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
    /// An empty root-owned file of mode 000, bound over hidden files.
    stub: PathBuf,
}

impl Mounts {
    /// Read-only binds (shortest paths first), then writable binds inside them, then hidden
    /// paths (an empty inaccessible tmpfs over a directory, an inaccessible empty file over a
    /// file). Paths that do not exist are skipped.
    fn apply(&self) -> Result<(), String> {
        use nix::mount::{mount, MsFlags};
        let bind = |p: &Path| {
            mount(
                Some(p),
                p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("bind {}: {e}", p.display()))
        };
        let remount = |p: &Path, extra: MsFlags| {
            mount(
                None::<&str>,
                p,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra,
                None::<&str>,
            )
            .map_err(|e| format!("remount {}: {e}", p.display()))
        };
        for (src, dst) in &self.binds {
            mount(
                Some(src.as_path()),
                dst.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {} over {}: {e}", src.display(), dst.display()))?;
            remount(dst, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)?;
        }
        let mut ro = self.read_only.clone();
        ro.sort_by_key(|p| p.components().count());
        for p in ro.iter().filter(|p| p.exists()) {
            bind(p)?;
            remount(p, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)?;
        }
        let mut rw = self.writable.clone();
        rw.sort_by_key(|p| p.components().count());
        for p in rw.iter().filter(|p| p.exists()) {
            if ro.iter().any(|r| p.starts_with(r)) {
                bind(p)?;
                remount(p, MsFlags::MS_NOSUID)?;
            }
        }
        for p in self.hidden.iter() {
            let Ok(md) = std::fs::symlink_metadata(p) else {
                continue;
            };
            if md.is_dir() {
                mount(
                    Some("tmpfs"),
                    p,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=4k,mode=000"),
                )
                .map_err(|e| format!("hide {}: {e}", p.display()))?;
            } else {
                mount(
                    Some(&self.stub),
                    p,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("hide {}: {e}", p.display()))?;
            }
        }
        Ok(())
    }
}

/// The stand-in for hidden files: `<state dir>/hidden-stub`, empty, root-owned, mode 000.
fn hidden_stub(state: &Path) -> Result<PathBuf, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let p = state.join("hidden-stub");
    std::fs::write(&p, b"").map_err(sys_io(format!("create {}", p.display())))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000))
        .map_err(sys_io(format!("chmod {}", p.display())))?;
    Ok(p)
}

/// Writes the session's risk statement to a root-owned read-only file the agent can read; its
/// path goes to the command as `SANDBOX_POLICY`.
fn write_policy(session: &str, profile: &crate::profile::Resolved) -> Result<PathBuf, RunError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = PathBuf::from("/run/sandbox-policy");
    std::fs::create_dir_all(&dir).map_err(sys_io(format!("create {}", dir.display())))?;
    let path = dir.join(format!("{session}.toml"));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(sys_io(format!("create {}", path.display())))?;
    let mut text = format!("# The risk statement of sandbox session {session} (read-only).\n");
    text.push_str(&format!("session = {}\n", toml_str(session)));
    if let Some(d) = &profile.description {
        text.push_str(&format!("description = {}\n", toml_str(d)));
    }
    text.push_str("\n[risk]\n");
    let ms: Vec<String> = profile
        .risk
        .must_survive
        .iter()
        .map(|m| toml_str(m))
        .collect();
    text.push_str(&format!("must_survive = [{}]\n", ms.join(", ")));
    if let Some(r) = &profile.risk.rollback {
        text.push_str(&format!("rollback = {}\n", toml_str(r)));
    }
    f.write_all(text.as_bytes())
        .map_err(sys_io(format!("write {}", path.display())))?;
    Ok(path)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Everything the child needs, prepared by the supervisor before the fork.
struct ChildPlan {
    ident: Identity,
    cmd: Vec<CString>,
    env: Vec<(OsString, OsString)>,
    /// The seccomp filter (baseline, plus notifications on the seccomp backend).
    bpf: Vec<u8>,
    /// Whether the filter notifies the supervisor (seccomp backend).
    notify: bool,
    /// Landlock rules (seccomp backend only; empty: nothing removable).
    grants: Option<files::landlock::Rules>,
    /// Read-only, writable and hidden paths of the profile.
    mounts: Mounts,
    hide: Vec<PathBuf>,
    /// The init is in a new network namespace and brings loopback up.
    new_net: bool,
    /// Started through the daemon: the command is not in the terminal's foreground process
    /// group, so SIGINT, SIGQUIT and SIGWINCH come relayed and are forwarded too.
    relay: bool,
    chan: OwnedFd,
}

/// The kernel's BTF, parsed on a thread of its own (it takes about 20 ms) while the set-up goes
/// on; joined where it is first needed, always before the fork.
struct KernelBtf {
    job: Option<std::thread::JoinHandle<Result<aya::Btf, aya::BtfError>>>,
    btf: Option<aya::Btf>,
}

impl KernelBtf {
    fn start() -> Self {
        KernelBtf {
            job: Some(std::thread::spawn(aya::Btf::from_sys_fs)),
            btf: None,
        }
    }

    /// Parsed on first use, on the calling thread.
    fn lazy() -> Self {
        KernelBtf {
            job: None,
            btf: None,
        }
    }

    /// The parsed BTF (waits for the thread the first time).
    fn get_exec(&mut self) -> Result<&aya::Btf, crate::exec::ExecError> {
        let btf = match self.btf.take() {
            Some(b) => b,
            None => match self.job.take() {
                Some(job) => job.join().unwrap_or_else(|_| aya::Btf::from_sys_fs()),
                None => aya::Btf::from_sys_fs(),
            }
            .map_err(crate::exec::ExecError::Btf)?,
        };
        Ok(self.btf.insert(btf))
    }

    fn get(&mut self) -> Result<&aya::Btf, RunError> {
        Ok(self.get_exec()?)
    }
}

/// Runs `sandbox run`. Returns the command's exit status.
pub fn run(args: RunArgs) -> Result<u8, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    // Started by `sandbox daemon` for an unprivileged user: who asked, and the command's
    // environment (and, usually, the exec observer, loaded ahead of time).
    let spec = match args.daemon_session {
        Some(fd) => Some(crate::daemon::read_spec(fd).map_err(RunError::Usage)?),
        None => None,
    };
    let mut preloaded = match &spec {
        Some(sp) if sp.preloaded => Some(crate::daemon::take_preloaded()),
        _ => None,
    };
    // The kernel's type information, parsed once for every program this run loads, on a thread
    // of its own meanwhile (joined before the fork). With a preloaded observer it is parsed only
    // if a program still needs it (the LSM backend, the connect guard).
    let mut btf = match preloaded {
        Some(_) => KernelBtf::lazy(),
        None => KernelBtf::start(),
    };
    let mut ident = identity(args.user.as_deref())?;
    if let Some(sp) = &spec {
        if sp.uid != ident.uid {
            return Err(RunError::Usage(
                "internal error: the daemon's request names another user".into(),
            ));
        }
        ident.gid = sp.gid;
        ident.groups = sp.groups.clone();
    }
    // What the user names is read with the user's rights, never root's (daemon sessions).
    let as_user = || -> Result<Option<crate::daemon::UserFs>, RunError> {
        match &spec {
            Some(_) => crate::daemon::UserFs::enter(ident.uid, ident.gid, &ident.groups)
                .map(Some)
                .map_err(sys_io("take the user's file-system credentials")),
            None => Ok(None),
        }
    };
    let user_fs = as_user()?;
    let session = session_name(args.session.as_deref(), &args.cmd)?;
    let profile = match &args.profile {
        Some(p) => crate::profile::load(p, &ident.home)?,
        None => crate::profile::Resolved::empty(),
    };
    // Command-line paths must exist; a profile's paths that do not exist here are skipped.
    let mut protect = args.protect.clone();
    let mut skipped: Vec<PathBuf> = Vec::new();
    let pf = &profile.files;
    for p in pf.protect_paths.iter().chain(&pf.protect_writes_paths) {
        if p.exists() {
            protect.push(p.clone());
        } else {
            skipped.push(p.clone());
        }
    }
    let mut patterns = pf.protect_patterns.patterns().to_vec();
    patterns.extend(pf.protect_writes_patterns.patterns().iter().cloned());
    let patterns = crate::profile::PatternSet::new(&patterns)
        .map_err(|e| RunError::Usage(format!("profile patterns: {e}")))?;
    let write_paths: Vec<PathBuf> = pf
        .protect_writes_paths
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    let prot = Arc::new(
        Protection::with_patterns(&protect, Some(patterns))?
            .with_writes(&write_paths, Some(pf.protect_writes_patterns.clone()))?,
    );
    drop(user_fs);
    // What this version parses but does not enforce yet is said at start and recorded, never
    // silently dropped.
    let mut not_enforced: Vec<&str> = Vec::new();
    let net = &profile.network;
    let net_mode = args.net.or(net.mode).unwrap_or(NetMode::Proxy);
    for h in &args.allow_host {
        if h.is_empty()
            || h.bytes()
                .any(|b| b.is_ascii_whitespace() || b"/@?#".contains(&b))
            || h[h.starts_with("*.") as usize * 2..].contains('*')
        {
            return Err(RunError::Usage(format!(
                "--allow-host {h:?}: expected a host name, *.domain, * or an IP address"
            )));
        }
    }
    // hold_connect in proxy mode: each IP:port endpoint gets a forwarded port at the same
    // address inside the session's namespace, held at connect. Other forms have no route out.
    // With --net host: a seccomp notification on connect holds them, and a cgroup connect4/6
    // program refuses them to everything but the supervisor.
    let mut forwards: Vec<std::net::SocketAddr> = Vec::new();
    let mut unforwarded: Vec<String> = Vec::new();
    let mut connect_held: Vec<crate::netguard::Endpoint> = Vec::new();
    for t in &net.hold_connect {
        match (net_mode, t.parse::<std::net::SocketAddr>()) {
            (NetMode::Proxy, Ok(a)) if a.is_ipv4() || a.ip().is_loopback() => forwards.push(a),
            (NetMode::Host, _) => connect_held.extend(
                crate::netguard::endpoints(t)
                    .map_err(|e| RunError::Usage(format!("network.hold_connect: {e}")))?,
            ),
            _ => unforwarded.push(t.clone()),
        }
    }
    if !unforwarded.is_empty() && net_mode == NetMode::Proxy {
        not_enforced.push(
            "network.hold_connect entries other than IPv4/loopback address:port (no forwarded port: unreachable, not held)",
        );
    }
    if net_mode == NetMode::Host
        && (!net.allow.is_empty()
            || !net.inspect.is_empty()
            || !net.hold.is_empty()
            || net.unknown_hosts.is_some()
            || !args.allow_host.is_empty())
    {
        not_enforced
            .push("[network] allow/inspect/hold (--net host: the host's network, unfiltered)");
    }
    // `[commands] hold`: the exec guard, on the seccomp filter of either backend.
    let rules = Arc::new(
        crate::commands::Rules::new(&profile.commands.hold, &ident.home)
            .map_err(|(p, e)| RunError::Usage(format!("commands.hold {p:?}: {e}")))?,
    );
    let default_scope = profile.decisions.default_scope.unwrap_or_default();
    let timeout = args
        .decision_timeout
        .or(profile.decisions.timeout)
        .unwrap_or(Duration::from_secs(600));
    // The backend: probe by loading, never by reading the LSM list.
    // Name patterns the LSM programs cannot match keep a profile on the seccomp backend.
    let lsm_patterns = files::lsm::check_patterns(&prot);
    let (backend, lsm_refused) = match args.backend {
        Backend::Seccomp => (Backend::Seccomp, None),
        Backend::Lsm => {
            ensure_state_dir(&control::state_dir()).map_err(sys_io("state directory"))?;
            files::lsm::probe_explicit(&control::state_dir(), btf.get()?)?;
            (Backend::Lsm, None)
        }
        Backend::Auto if lsm_patterns.is_err() => (Backend::Seccomp, lsm_patterns.clone().err()),
        Backend::Auto => {
            ensure_state_dir(&control::state_dir()).map_err(sys_io("state directory"))?;
            match files::lsm::probe_cached(&control::state_dir(), || {
                btf.get().map_err(|e| e.to_string())
            }) {
                Ok(()) => (Backend::Lsm, None),
                Err(e) => (Backend::Seccomp, Some(e)),
            }
        }
    };
    if backend == Backend::Lsm {
        if let Err(e) = &lsm_patterns {
            return Err(RunError::Usage(format!(
                "--backend lsm: {e}; use --backend seccomp"
            )));
        }
    }
    let cmd: Vec<CString> = args
        .cmd
        .iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .map_err(|_| RunError::Usage("an argument contains a NUL byte".into()))
        })
        .collect::<Result<_, _>>()?;

    let state = control::state_dir();
    let log_dir = crate::audit::log_dir();
    let (ctl_listener, ctl_path) = bind_control(&state, &session)?;
    let cleanup_sock = scopeguard(ctl_path.clone());
    // Who may use the control socket besides root (control::Access): the approvers group, and
    // the session's own user (to list; to decide only with self-approval).
    let approvers_gid = match &spec {
        Some(sp) => sp.approvers_gid,
        None => crate::peer::group_id(crate::peer::APPROVERS_GROUP).ok(),
    };
    let access = control::Access {
        owner_uid: Some(ident.uid),
        approvers_gid,
        self_approve: profile.decisions.self_approve.unwrap_or(false),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&ctl_path, Some(ident.uid), Some(approvers_gid.unwrap_or(0)))
            .map_err(sys_io(format!("chown {}", ctl_path.display())))?;
        std::fs::set_permissions(&ctl_path, std::fs::Permissions::from_mode(0o660))
            .map_err(sys_io(format!("chmod {}", ctl_path.display())))?;
    }
    let audit = Arc::new(AuditLog::create(&log_dir, &session)?);
    let mut cg = SessionCgroup::create(&session)?;
    // The pids limit is in place before anything runs in the session: a fork bomb stays inside.
    let pids_max = profile.limits.pids();
    let pids_at = match cg.limit_pids(pids_max) {
        Ok(p) => p,
        Err(e) => {
            cg.destroy();
            return Err(e.into());
        }
    };
    let cg_guard = CgroupGuard(&cg);

    let observer_preloaded = preloaded.is_some();
    let mut observer = match preloaded.take() {
        Some(p) => crate::exec::ExecObserver::from_preloaded(p)?,
        None => crate::exec::ExecObserver::load_then(|| btf.get_exec())?,
    };
    // `[commands] hold`: programs of these names stop at exec for a check (commands::guard).
    observer.hold_names(rules.names())?;
    observer.watch_cgroup(cg.id()?)?;
    let held_pids = observer.take_held_pids();
    // The race-free backstop of connect holds, in place before anything runs in the cgroup.
    // (The LSM backend's socket_connect hook reads the kernel's copy of the address: no race.)
    let _connect_guard = if connect_held.is_empty() || backend == Backend::Lsm {
        None
    } else {
        Some(
            crate::netguard::ConnectGuard::load(
                btf.get()?,
                cg.path(),
                &connect_held,
                std::process::id(),
            )
            .map_err(|e| RunError::Usage(format!("hold_connect backstop: {e}")))?,
        )
    };

    let backend_name = if backend == Backend::Lsm {
        "lsm"
    } else {
        "seccomp"
    };
    let mut fopts = files::seccomp::FilterOpts {
        notify: backend == Backend::Seccomp,
        notify_connect: !connect_held.is_empty(),
        notify_writes: prot.writes().is_some(),
        notify_sigcont: !rules.is_empty(),
        allow_io_uring: profile.process.allow_io_uring,
        allow: profile.process.allow_syscalls.clone(),
        deny: profile.process.deny_syscalls.clone(),
    };
    if backend == Backend::Lsm {
        fopts.notify = false;
    }
    let bpf = files::seccomp::build(&fopts)?;
    let grants = match backend {
        Backend::Seccomp if !prot.is_empty() => Some(files::landlock::rules(&prot)),
        _ => None,
    };
    let started = crate::audit::rfc3339_micros(std::time::SystemTime::now());
    let cmd_str: Vec<String> = args
        .cmd
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    // The webhook's key is read now (a bad file stops the session before it starts); its
    // sender thread starts after the fork below.
    let mut webhook = None;
    if let (Some(url), Some(secret)) =
        (&profile.notify.webhook, &profile.notify.webhook_secret_file)
    {
        let user_fs = as_user()?;
        let key = std::fs::read(secret).map_err(sys_io(format!(
            "read notify.webhook_secret_file {}",
            secret.display()
        )))?;
        drop(user_fs);
        let key = key.trim_ascii().to_vec();
        if key.is_empty() {
            return Err(RunError::Usage(format!(
                "notify.webhook_secret_file {} is empty",
                secret.display()
            )));
        }
        webhook = Some((url.clone(), key));
    }
    let report = Arc::new(Reporter::new(audit.clone(), args.quiet));
    // The egress proxy (its CA and rules) is ready before anything runs.
    let mut allow = net.allow.clone();
    for h in &args.allow_host {
        let h = h.to_ascii_lowercase();
        if !allow.contains(&h) {
            allow.push(h);
        }
    }
    let proxy = match net_mode {
        NetMode::Proxy => {
            let user_fs = as_user()?;
            let catalogue =
                crate::proxy::load_catalogues(&net.hold, &rule_dirs(&profile, &ident.home))?;
            // The upstream CAs the profile names are read as the user too.
            let p = crate::proxy::Proxy::new(
                crate::proxy::Config {
                    session: session.clone(),
                    allow: allow.clone(),
                    inspect: net.inspect.clone(),
                    unknown_hosts: net
                        .unknown_hosts
                        .unwrap_or(crate::profile::UnknownHosts::Deny),
                    catalogue,
                    upstream_ca: net.upstream_ca.clone(),
                    cgroup: cg.path().to_path_buf(),
                },
                report.clone(),
            )?;
            drop(user_fs);
            Some(Arc::new(p))
        }
        NetMode::None | NetMode::Host => None,
    };
    let net_name = match net_mode {
        NetMode::Proxy => "proxy",
        NetMode::None => "none",
        NetMode::Host => "host",
    };
    // Fail closed: a session whose start the audit log does not have does not start.
    report.try_record(
        "session_start",
        json!({"command": cmd_str, "user": ident.name, "uid": ident.uid, "gid": ident.gid,
               "protected": prot.roots(), "protected_aliases": prot.aliases(), "backend": backend_name, "lsm_refused": lsm_refused, "decision_timeout_s": timeout.as_secs_f64(),
               "profile": args.profile, "profile_sources": profile.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
               "risk": {"must_survive": profile.risk.must_survive, "rollback": profile.risk.rollback},
               "protect_patterns": profile.files.protect_patterns.patterns(), "skipped_missing": skipped,
               "not_enforced": not_enforced, "commands_hold": profile.commands.hold,
               "network": {"mode": net_name, "allow": allow, "inspect": net.inspect, "hold": net.hold,
                           "unknown_hosts": net.unknown_hosts.unwrap_or(crate::profile::UnknownHosts::Deny),
                           "hold_rules": proxy.as_ref().map(|p| p.rule_count()),
                           "hold_connect_forwarded": forwards, "hold_connect_unforwarded": unforwarded,
                           "hold_connect_at_connect": connect_held.iter().map(|e| e.to_string()).collect::<Vec<_>>()},
               "read_only": profile.files.read_only, "hidden": profile.files.hidden, "writable": profile.files.writable,
               "supervisor_pid": std::process::id(), "cgroup": cg.path(),
               "pids_max": pids_max, "pids_cgroup": pids_at.dir(),
               "via_daemon": spec.is_some(), "self_approve": access.self_approve, "approvers_gid": approvers_gid,
               "exec_observer_preloaded": observer_preloaded}),
    )?;
    if !args.quiet {
        let pats = profile.files.protect_patterns.patterns().len();
        let given = prot.roots().len() - prot.aliases().len();
        eprintln!(
            "sandbox: session {session} as {} (profile {}, backend {}, {} protected path{}{}{}); decide holds with `sudo sandbox pending`",
            ident.name,
            args.profile.as_deref().unwrap_or("none"),
            if backend == Backend::Lsm { "lsm" } else { "seccomp+landlock" },
            given,
            if given == 1 { "" } else { "s" },
            match prot.aliases().len() {
                0 => String::new(),
                n => format!(" and {n} bind-mount alias{}", if n == 1 { "" } else { "es" }),
            },
            if pats > 0 { format!(", {pats} pattern{}", if pats == 1 { "" } else { "s" }) } else { String::new() },
        );
        match net_mode {
            NetMode::Proxy => eprintln!(
                "sandbox: network through the session proxy: {} allowed, {} inspected host pattern{}, {} hold rule{}; other hosts {}",
                allow.len(),
                net.inspect.len(),
                if net.inspect.len() == 1 { "" } else { "s" },
                proxy.as_ref().map(|p| p.rule_count()).unwrap_or(0),
                if proxy.as_ref().map(|p| p.rule_count()).unwrap_or(0) == 1 { "" } else { "s" },
                if net.unknown_hosts == Some(crate::profile::UnknownHosts::Hold) { "held" } else { "refused" },
            ),
            NetMode::None => eprintln!("sandbox: no network (loopback only)"),
            NetMode::Host => eprintln!("sandbox: the host's network, unfiltered (--net host)"),
        }
        if !rules.is_empty() {
            let n = profile.commands.hold.len();
            eprintln!(
                "sandbox: {n} command pattern{} held at exec (commands.hold)",
                if n == 1 { "" } else { "s" }
            );
        }
        for n in &not_enforced {
            eprintln!("sandbox: not enforced by this version: {n}");
        }
        if !profile.risk.is_empty() {
            eprintln!(
                "sandbox: must survive: {}; rollback: {}",
                if profile.risk.must_survive.is_empty() {
                    "-".to_string()
                } else {
                    profile.risk.must_survive.join(", ")
                },
                profile.risk.rollback.as_deref().unwrap_or("-")
            );
        }
    }
    let policy_file = write_policy(&session, &profile)?;

    let lsm = if backend == Backend::Lsm {
        Some(Arc::new(files::lsm::LsmSupervisor::load(
            &session,
            prot.clone(),
            report.clone(),
            cg.id()?,
            btf.get()?,
            &connect_held,
        )?))
    } else {
        None
    };

    let (sup_end, child_end) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("socketpair"))?;

    // The session CA joins the system's trust store inside the sandbox (a bundle bound over
    // each system bundle), and every common client is pointed at the proxy and that bundle.
    let mut binds = Vec::new();
    let mut bundle = None;
    if let Some(p) = &proxy {
        let sys = crate::netns::system_bundles();
        let dir = Path::new("/run/sandbox-policy");
        let b = crate::netns::write_bundle(
            dir,
            &session,
            sys.first().map(PathBuf::as_path),
            p.ca_pem(),
        )
        .map_err(sys_io(format!(
            "write the session CA bundle in {}",
            dir.display()
        )))?;
        binds = sys.iter().map(|t| (b.clone(), t.clone())).collect();
        bundle = Some(b);
    }
    let given_env: Vec<(OsString, OsString)> = match &spec {
        Some(sp) => crate::daemon::wire::unhex_env(&sp.env).map_err(RunError::Usage)?,
        None => std::env::vars_os().collect(),
    };
    let mut env: Vec<(OsString, OsString)> = given_env
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.to_str(),
                Some("HOME" | "USER" | "LOGNAME" | "SANDBOX_SESSION" | "SANDBOX_POLICY")
            )
        })
        .filter(|(k, _)| {
            net_mode == NetMode::Host || !k.to_str().is_some_and(crate::netns::dropped_env)
        })
        .filter(|(k, _)| k.to_str().is_none_or(|k| profile.process.keeps_env(k)))
        .collect();
    env.push((
        "SANDBOX_POLICY".into(),
        policy_file.clone().into_os_string(),
    ));
    env.push(("HOME".into(), ident.home.clone().into_os_string()));
    env.push(("USER".into(), ident.name.clone().into()));
    env.push(("LOGNAME".into(), ident.name.clone().into()));
    env.push(("SANDBOX_SESSION".into(), session.clone().into()));
    if let Some(b) = &bundle {
        for (k, v) in crate::netns::proxy_env(crate::proxy::PORT, b) {
            env.retain(|(n, _)| n.as_os_str() != k.as_str());
            env.push((k.into(), v.into()));
        }
    }

    let plan = ChildPlan {
        ident: ident.clone(),
        cmd,
        env,
        bpf,
        notify: fopts.notify || fopts.notify_sigcont,
        grants,
        mounts: Mounts {
            binds,
            read_only: profile.files.read_only.clone(),
            writable: profile.files.writable.clone(),
            hidden: profile.files.hidden.clone(),
            stub: hidden_stub(&state)?,
        },
        hide: vec![state.clone(), log_dir.clone()],
        relay: spec.is_some(),
        new_net: net_mode != NetMode::Host,
        chan: child_end,
    };

    // Set before forking: the init must not miss a SIGTERM sent to the supervisor.
    let relay = spec.is_some();
    let mut sigs = forwarded_signals(relay);
    if relay {
        let mut raw: libc::sigset_t = *sigs.as_ref();
        // SAFETY: adding valid signal numbers to an initialised set.
        sigs = unsafe {
            libc::sigaddset(&mut raw, crate::daemon::daemon_gone_signal());
            libc::sigaddset(&mut raw, crate::daemon::client_gone_signal());
            nix::sys::signal::SigSet::from_sigset_t_unchecked(raw)
        };
    }
    block(&sigs);
    // A fork into a new pid namespace, born in the session's cgroup (CLONE_INTO_CGROUP: no
    // migration afterwards, which costs milliseconds). unshare(CLONE_NEWPID) would forbid the
    // supervisor's threads later.
    let (life_r, life_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    let cg_dir =
        std::fs::File::open(cg.path()).map_err(sys_io(format!("open {}", cg.path().display())))?;
    let mut ca = [0u64; 11];
    ca[0] = (libc::CLONE_NEWPID as u64) | CLONE_INTO_CGROUP;
    if net_mode != NetMode::Host {
        ca[0] |= libc::CLONE_NEWNET as u64;
    }
    ca[4] = libc::SIGCHLD as u64;
    ca[10] = cg_dir.as_raw_fd() as u64;
    // A thread started before the fork could hold a lock (malloc's, say) that the child then
    // waits on forever: check rather than trust. (The BTF thread has been joined; the kernel
    // may count it for a moment after that.)
    let count = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
            .unwrap_or(0)
    };
    let mut threads = count();
    let t0 = std::time::Instant::now();
    while threads != 1 && t0.elapsed() < Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(1));
        threads = count();
    }
    if threads != 1 {
        return Err(RunError::Usage(format!(
            "internal error: the supervisor has {threads} threads when it forks the session (must be 1)"
        )));
    }
    // SAFETY: the supervisor is single-threaded until after this call (checked above); clone3 without a stack
    // behaves like fork(2). `ca` is a valid struct clone_args (version 2, 88 bytes).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            ca.as_mut_ptr(),
            std::mem::size_of_val(&ca),
        )
    };
    drop(cg_dir);
    let init = match r {
        r if r < 0 => {
            return Err(sys_io(if net_mode == NetMode::Host {
                "clone3(CLONE_NEWPID|CLONE_INTO_CGROUP)"
            } else {
                "clone3(CLONE_NEWPID|CLONE_NEWNET|CLONE_INTO_CGROUP)"
            })(std::io::Error::last_os_error()))
        }
        0 => {
            drop(sup_end);
            drop(life_w);
            init_main(&cg, plan, life_r)
        }
        child => Pid::from_raw(child as i32),
    };
    drop(plan);
    drop(life_r);
    // Kept open until the supervisor exits: the init sees it close if the supervisor dies early.
    let _lifeline = life_w;

    if let Some((url, key)) = webhook.take() {
        match crate::notify::Webhook::start(url, key, audit.clone()) {
            Ok(h) => report.attach_webhook(h),
            Err(e) => {
                abort_setup(init, &report, &format!("webhook sender: {e}"));
                return Err(RunError::Usage(format!("start the webhook sender: {e}")));
            }
        }
    }
    // SIGURG interrupts the notify thread's blocking receive at the end (no SA_RESTART).
    {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let sa = SigAction::new(SigHandler::Handler(noop), SaFlags::empty(), SigSet::empty());
        // SAFETY: installing a no-op handler.
        let _ = unsafe { sigaction(Signal::SIGURG, &sa) };
    }
    // The command child reports that its guard is in place (handing over the seccomp listener
    // on that backend); without that nothing runs.
    let stop = Arc::new(crate::stop::Stop::new().map_err(sys_io("eventfd"))?);
    let ready = match fopts.notify || fopts.notify_sigcont {
        true => recv_fd(sup_end.as_raw_fd(), Duration::from_secs(30)).map(Some),
        false => recv_ready(sup_end.as_raw_fd(), Duration::from_secs(30)).map(|()| None),
    };
    let listener = match ready {
        Ok(l) => l,
        Err(e) => {
            abort_setup(init, &report, &e);
            return Err(RunError::Child);
        }
    };
    // The proxy listens inside the session's network namespace before the command runs.
    let mut proxy_run = None;
    if let Some(p) = &proxy {
        let mut addrs = vec![std::net::SocketAddr::from((
            [127, 0, 0, 1],
            crate::proxy::PORT,
        ))];
        addrs.extend(forwards.iter().copied());
        let started = crate::netns::listen_in(init.as_raw() as u32, &addrs)
            .map_err(|e| format!("listen in the session's network namespace: {e}"))
            .and_then(|mut ls| {
                let proxy_l = ls.remove(0);
                let fw = ls.into_iter().zip(forwards.iter().copied()).collect();
                let (tx, rx) = tokio::sync::oneshot::channel();
                p.clone()
                    .serve(proxy_l, fw, rx)
                    .map(|t| (tx, t))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok(r) => proxy_run = Some(r),
            Err(e) => {
                abort_setup(init, &report, &e);
                return Err(RunError::Usage(format!("network proxy: {e}")));
            }
        }
    }
    let worker;
    let mut seccomp_sup: Option<Arc<Supervisor>> = None;
    // The exec guard decides what the exec program stopped; it shares the filter's listener (a
    // duplicate fd: one filter, one listener) for SIGCONT sent by the sandbox.
    let freezer = match rules.is_empty() {
        true => None,
        false => match held_cgroup(cg.path()) {
            Ok(p) => Some(p),
            Err(e) => {
                abort_setup(
                    init,
                    &report,
                    &format!("the frozen cgroup for held commands: {e}"),
                );
                return Err(RunError::Child);
            }
        },
    };
    let exec_guard = match (&listener, rules.is_empty(), held_pids) {
        (Some(fd), false, Some(held)) => Some(Arc::new(crate::commands::guard::ExecGuard {
            session: session.clone(),
            rules: rules.clone(),
            holds: Holds::default(),
            listener: Listener::new(fd.try_clone().map_err(sys_io("dup the seccomp listener"))?),
            report: report.clone(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            held: std::sync::Mutex::new(held),
            cgroup: cg.path().to_path_buf(),
            freezer: freezer.clone(),
        })),
        (_, false, _) => {
            abort_setup(init, &report, "the command guard has no listener");
            return Err(RunError::Child);
        }
        _ => None,
    };
    // On the LSM backend the filter notifies SIGCONT calls only: the exec guard answers them.
    let exec_worker = match (&lsm, &exec_guard) {
        (Some(_), Some(g)) => {
            let g2 = g.clone();
            Some(
                std::thread::Builder::new()
                    .name("commands".into())
                    .spawn(move || g2.run())
                    .map_err(sys_io("spawn"))?,
            )
        }
        _ => None,
    };
    let file_decider: Arc<dyn Decider> = match (lsm.clone(), listener) {
        (Some(l), _) => {
            let stop = stop.clone();
            let l2 = l.clone();
            worker = std::thread::Builder::new()
                .name("lsm".into())
                .spawn(move || l2.run(&stop))
                .map_err(sys_io("spawn"))?;
            l
        }
        (None, Some(fd)) => {
            let sup = Arc::new(Supervisor {
                session: session.clone(),
                prot: prot.clone(),
                holds: Holds::default(),
                listener: Listener::new(fd),
                report: report.clone(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                connect: connect_held.clone(),
                exec: exec_guard.clone(),
                creds: Default::default(),
            });
            if !sup.listener.sync_wake_up() {
                tracing::debug!("seccomp: no synchronous wake-up on this kernel (before 6.6)");
            }
            let s2 = sup.clone();
            worker = std::thread::Builder::new()
                .name("notify".into())
                .spawn(move || s2.run())
                .map_err(sys_io("spawn"))?;
            seccomp_sup = Some(sup.clone());
            sup
        }
        (None, None) => return Err(RunError::Child),
    };
    let mut deciders = vec![file_decider];
    if let Some(g) = &exec_guard {
        deciders.push(g.clone() as Arc<dyn Decider>);
    }
    if let Some(p) = &proxy {
        deciders.push(p.clone() as Arc<dyn Decider>);
    }
    let decider: Arc<dyn Decider> = match deciders.len() {
        1 => deciders.remove(0),
        _ => Arc::new(crate::hold::Deciders(deciders)),
    };

    {
        let sup = decider.clone();
        let (session, ident, started, cmd_str, log) = (
            session.clone(),
            ident.clone(),
            started.clone(),
            cmd_str.clone(),
            log_dir.join(format!("{session}.jsonl")),
        );
        let roots = prot.roots().to_vec();
        let supref = decider.clone();
        let (profile_name, via_daemon) = (args.profile.clone(), spec.is_some());
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                control::serve(ctl_listener, sup, default_scope, access, move || {
                    SessionInfo {
                        session: session.clone(),
                        pid: std::process::id(),
                        command: cmd_str.clone(),
                        user: ident.name.clone(),
                        uid: ident.uid,
                        started: started.clone(),
                        backend: backend_name.into(),
                        protected: roots.clone(),
                        pending: supref.pending().len(),
                        log: log.clone(),
                        profile: profile_name.clone(),
                        via_daemon,
                    }
                })
            })
            .map_err(sys_io("spawn"))?;
    }
    let timer_thread = {
        let (sup, stop) = (decider.clone(), stop.clone());
        std::thread::Builder::new()
            .name("timeout".into())
            .spawn(move || {
                while !stop.is_set() {
                    stop.wait(None, Duration::from_millis(100));
                    sup.expire(timeout);
                }
            })
            .map_err(sys_io("spawn"))?
    };
    let exec_thread = {
        let (stop, report, guard) = (stop.clone(), report.clone(), exec_guard.clone());
        std::thread::Builder::new()
            .name("exec".into())
            .spawn(move || {
                let mut emit = |ev: crate::exec::ExecEvent| {
                    report.record("exec", serde_json::to_value(&ev).unwrap_or_default());
                    if let Some(g) = &guard {
                        g.on_exec(&ev);
                    }
                };
                loop {
                    let done = stop.is_set();
                    stop.wait(Some(observer.ring_fd().as_raw_fd()), Duration::from_secs(1));
                    observer.drain(&mut emit);
                    if done {
                        return observer;
                    }
                }
            })
            .map_err(sys_io("spawn"))?
    };

    // Let the command exec.
    let _ = socket::send(sup_end.as_raw_fd(), b"g", MsgFlags::empty());
    drop(sup_end);

    let t0 = Instant::now();
    let status = wait_init(init, &sigs, relay, &|sig| {
        // The daemon or the client is gone: the session ends now (fail closed), its holds with it.
        let why = if sig == crate::daemon::daemon_gone_signal() {
            "the daemon that started the session went away"
        } else {
            "the client (sandbox run) went away"
        };
        report.record("session_ending", json!({"reason": why}));
        let _ = std::fs::write(cg.path().join("cgroup.kill"), "1");
    });
    let code = match status {
        WaitStatus::Exited(_, c) => c as u8,
        WaitStatus::Signaled(_, s, _) => 128u8.wrapping_add(s as u8),
        _ => 125,
    };
    if let Some(f) = &freezer {
        // Its processes die with the session's (cgroup.kill is recursive); the session's
        // cgroup can only go once this child has.
        let _ = std::fs::write(cg.path().join("cgroup.kill"), "1");
        for _ in 0..200 {
            if std::fs::remove_dir(f).is_ok() || !f.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    cg.destroy();
    // The seccomp worker ends when no process is left under the filter; the LSM worker on stop.
    stop.set();
    if let Some(sup) = &seccomp_sup {
        // The notify thread blocks in the kernel: interrupt it until it has seen the stop.
        sup.stop();
        while !worker.is_finished() {
            // SAFETY: the thread is alive (not finished); SIGURG has a no-op handler.
            unsafe {
                libc::pthread_kill(
                    std::os::unix::thread::JoinHandleExt::as_pthread_t(&worker),
                    libc::SIGURG,
                )
            };
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = worker.join();
    if let (Some(g), Some(w)) = (&exec_guard, exec_worker) {
        g.stop();
        while !w.is_finished() {
            // SAFETY: the thread is alive (not finished); SIGURG has a no-op handler.
            unsafe {
                libc::pthread_kill(
                    std::os::unix::thread::JoinHandleExt::as_pthread_t(&w),
                    libc::SIGURG,
                )
            };
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = w.join();
    }
    decider.end();
    if let Some((stop, thread)) = proxy_run {
        let _ = stop.send(());
        let _ = thread.join();
    }
    if let Some(b) = &bundle {
        let _ = std::fs::remove_file(b);
    }
    if let Some(l) = &lsm {
        l.unregister(cg.id().unwrap_or(0));
    }
    let _ = timer_thread.join();
    if let Ok(mut obs) = exec_thread.join() {
        let _ = obs.unwatch_cgroup(cg.id().unwrap_or(0));
    }
    report.flush_webhook(Duration::from_secs(2));
    report.record(
        "session_end",
        json!({"exit_status": code, "raw_status": format!("{status:?}"), "duration_ms": t0.elapsed().as_millis() as u64}),
    );
    drop(cg_guard);
    drop(cleanup_sock);
    let _ = std::fs::remove_file(&policy_file);
    Ok(code)
}

/// Creates the frozen child cgroup `held` of the session's cgroup, where held commands wait
/// (see `commands::guard`).
fn held_cgroup(session: &Path) -> std::io::Result<PathBuf> {
    let p = session.join("held");
    std::fs::create_dir(&p)?;
    std::fs::write(p.join("cgroup.freeze"), "1")?;
    Ok(p)
}

/// Ends a session whose set-up failed after the fork: the init (and with it everything it
/// started) is killed and reaped, and the audit log says why.
fn abort_setup(init: Pid, report: &Reporter, why: &str) {
    let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    let _ = waitpid(init, None);
    report.record(
        "session_end",
        json!({"error": format!("set-up failed: {why}")}),
    );
}

/// Where rule catalogues (`rules/NAME.toml`) are looked for: next to each profile file the
/// session's profile came from, then the standard profile directories.
fn rule_dirs(profile: &crate::profile::Resolved, home: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for s in profile.sources.iter().rev() {
        if let crate::profile::Source::File(p) = s {
            if let Some(d) = p.parent() {
                dirs.push(d.to_path_buf());
            }
        }
    }
    dirs.push(PathBuf::from("./profiles"));
    dirs.push(home.join(".config/sandbox/profiles"));
    dirs.push(PathBuf::from("/etc/sandbox/profiles"));
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let fresh = !seen.contains(d);
        seen.push(d.clone());
        fresh
    });
    dirs
}

/// The sources of an error, joined by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Removes the control socket when the session ends, however it ends.
struct SockGuard(PathBuf);
impl Drop for SockGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn scopeguard(p: PathBuf) -> SockGuard {
    SockGuard(p)
}

/// Removes the cgroup on early errors.
struct CgroupGuard<'a>(&'a SessionCgroup);
impl Drop for CgroupGuard<'_> {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

/// The signals the supervisor and the init forward to the command; with `relay` (a session of
/// the daemon) also SIGINT, SIGQUIT and SIGWINCH, which the client relays.
fn forwarded_signals(relay: bool) -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut s = SigSet::empty();
    if relay {
        for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGWINCH] {
            s.add(sig);
        }
    }
    for sig in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

fn block(s: &nix::sys::signal::SigSet) {
    let _ = s.thread_block();
}

/// Waits for the init; forwards SIGTERM/SIGHUP/SIGUSR1/2 to it. The terminal's SIGINT and
/// SIGQUIT reach the command directly; the supervisor ignores them. With `relay` (a session of
/// the daemon) SIGINT, SIGQUIT and SIGWINCH come from the daemon and are forwarded too, and the
/// daemon's end signals call `on_end`.
fn wait_init(
    init: Pid,
    sigs: &nix::sys::signal::SigSet,
    relay: bool,
    on_end: &dyn Fn(libc::c_int),
) -> WaitStatus {
    use nix::sys::signal::{signal, SigHandler, Signal};
    if !relay {
        // SAFETY: setting SIG_IGN is async-signal-safe.
        unsafe {
            let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
            let _ = signal(Signal::SIGQUIT, SigHandler::SigIgn);
        }
    }
    let mut ended = false;
    loop {
        match waitpid(init, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return WaitStatus::Exited(init, 125),
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        // SAFETY: sigtimedwait with a valid set and timeout.
        let sig = unsafe { libc::sigtimedwait(sigs.as_ref(), std::ptr::null_mut(), &ts) };
        if relay
            && (sig == crate::daemon::daemon_gone_signal()
                || sig == crate::daemon::client_gone_signal())
        {
            if !ended {
                ended = true;
                on_end(sig);
            }
            continue;
        }
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: plain kill.
            unsafe { libc::kill(init.as_raw(), sig) };
        }
    }
}

/// Waits for the command child's "guard in place" message (LSM backend: no fd).
fn recv_ready(sock: RawFd, timeout: Duration) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    let mut b = [0u8; 1];
    match (r, socket::recv(sock, &mut b, MsgFlags::empty())) {
        (r, Ok(1)) if r > 0 => Ok(()),
        _ => Err("the sandboxed child failed during set-up".into()),
    }
}

fn recv_fd(sock: RawFd, timeout: Duration) -> Result<OwnedFd, String> {
    let mut pfd = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if r <= 0 {
        return Err("the sandboxed child did not hand over its seccomp listener".into());
    }
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let msg = socket::recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receive listener: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("receive listener: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this fd for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err("the sandboxed child failed before handing over its seccomp listener".into())
}

/// Prints a set-up error of a child and exits 125 (never returns).
fn child_fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("sandbox: {what}: {e}");
    // SAFETY: _exit is always safe; no destructors of the forked copy must run.
    unsafe { libc::_exit(125) }
}

/// The pid-1 process of the session.
fn init_main(cg: &SessionCgroup, plan: ChildPlan, lifeline: OwnedFd) -> ! {
    use nix::mount::{mount, MsFlags};
    // When the supervisor dies the init is told (a catchable death signal, not SIGKILL), kills
    // every process of the session while their held calls are still held, and only then exits
    // and lets go of its copy of the seccomp listener. (Dying at once would release the listener
    // before the pid namespace is torn down, and a held call would return ENOSYS to a process
    // that could still run for a moment.)
    let gone = supervisor_gone_signal();
    // SAFETY: a no-op handler (pid 1 drops SIG_DFL signals), blocked for sigtimedwait; prctl
    // with integer arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, gone);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(gone, noop as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, gone);
        libc::prctl(libc::PR_SET_NAME, c"sandbox-init".as_ptr());
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    // The supervisor may have died before the death signal was armed: its end of the lifeline
    // pipe is then closed.
    let mut pfd = libc::pollfd {
        fd: lifeline.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 0) } > 0
        && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0
    {
        // SAFETY: nothing was started yet.
        unsafe { libc::_exit(137) }
    }
    drop(lifeline);
    // Born in the session cgroup (CLONE_INTO_CGROUP): check rather than trust.
    match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(c)
            if c.lines().any(|l| {
                l.strip_prefix("0::")
                    .is_some_and(|p| cg.path().ends_with(p.trim_start_matches('/')))
            }) => {}
        _ => child_fail(
            "join the session cgroup",
            "not in the session cgroup after clone3",
        ),
    }
    // Where the pids controller lives in the v1 hierarchy: join the session's pids cgroup
    // before anything else runs (everything the session starts inherits it).
    if let Err(e) = cg.join_pids_v1() {
        child_fail("join the session's pids cgroup", e);
    }
    let flags = nix::sched::CloneFlags::CLONE_NEWNS
        | nix::sched::CloneFlags::CLONE_NEWIPC
        | nix::sched::CloneFlags::CLONE_NEWUTS;
    if let Err(e) = nix::sched::unshare(flags) {
        child_fail("unshare(mount, ipc, uts)", e);
    }
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        child_fail("make / private", e);
    }
    if plan.new_net {
        if let Err(e) = crate::netns::loopback_up() {
            child_fail("bring loopback up in the session's network namespace", e);
        }
    }
    let nsx = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(Some("proc"), "/proc", Some("proc"), nsx, None::<&str>) {
        child_fail("mount /proc", e);
    }
    // Every cgroup file system read-only: a command running as root (`--user root`, without
    // capabilities) could otherwise write its pid to another cgroup's `cgroup.procs` and leave
    // the session's cgroup, with its pids limit and the eBPF programs keyed by it.
    let cgroups = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|mi| crate::cgroup::cgroup_mounts(&mi))
        .unwrap_or_else(|e| child_fail("read /proc/self/mountinfo", e));
    for m in cgroups {
        if let Err(e) = mount(
            None::<&str>,
            &m,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nsx,
            None::<&str>,
        ) {
            child_fail(&format!("make {} read-only", m.display()), e);
        }
    }
    // The profile's mounts come before the state directory is hidden: hidden files are covered
    // by a stand-in that lives there.
    if let Err(e) = plan.mounts.apply() {
        child_fail("profile mounts", e);
    }
    for dir in &plan.hide {
        if dir.is_dir() {
            if let Err(e) = mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                nsx | MsFlags::MS_RDONLY,
                Some("size=4k,mode=0700"),
            ) {
                child_fail(&format!("hide {}", dir.display()), e);
            }
        }
    }
    // The init keeps a copy of the seccomp listener: if the supervisor is killed, held calls stay
    // held (instead of failing with ENOSYS and letting the command go on) until the init, which
    // dies with the supervisor, takes the whole session down.
    let (keep_end, cmd_end) = match socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => child_fail("socketpair", e),
    };
    let relay = plan.relay;
    // SAFETY: init is single-threaded.
    let cmd_pid = match unsafe { nix::unistd::fork() } {
        Err(e) => child_fail("fork", e),
        Ok(ForkResult::Child) => {
            drop(keep_end);
            command_main(plan, cmd_end)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(plan);
    drop(cmd_end);
    let kept = recv_fd(keep_end.as_raw_fd(), Duration::from_secs(60)).ok();
    drop(keep_end);
    init_loop(cmd_pid, kept, relay)
}

extern "C" fn noop(_: libc::c_int) {}

/// Reaps everything; forwards signals to the command; exits with the command's status.
fn init_loop(cmd: Pid, _listener_copy: Option<OwnedFd>, relay: bool) -> ! {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let sigs = forwarded_signals(relay);
    // pid 1 drops signals whose action is SIG_DFL: install a handler so they queue.
    let sa = SigAction::new(
        SigHandler::Handler(noop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in sigs.iter() {
        // SAFETY: installing a no-op handler.
        let _ = unsafe { sigaction(s, &sa) };
    }
    loop {
        loop {
            match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p == cmd => unsafe { libc::_exit(c) },
                Ok(WaitStatus::Signaled(p, s, _)) if p == cmd => unsafe {
                    libc::_exit(128 + s as i32)
                },
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let mut set: libc::sigset_t = *sigs.as_ref();
        // SAFETY: valid sets and timeout.
        let sig = unsafe {
            libc::sigaddset(&mut set, supervisor_gone_signal());
            libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
        };
        if sig == supervisor_gone_signal() {
            // The supervisor died: nothing of the session may run unguarded.
            // SAFETY: kill(-1) from pid 1 reaches every other process of its pid namespace.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            while !matches!(waitpid(None, None), Err(nix::errno::Errno::ECHILD)) {}
            // SAFETY: leave without running anything else.
            unsafe { libc::_exit(137) }
        }
        if sig > 0 && sig != libc::SIGCHLD {
            let _ = nix::sys::signal::kill(cmd, nix::sys::signal::Signal::try_from(sig).ok());
        }
    }
}

/// The signal the init gets when the supervisor dies (PR_SET_PDEATHSIG).
fn supervisor_gone_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// The command process: drops everything and execs.
fn command_main(plan: ChildPlan, init_chan: OwnedFd) -> ! {
    // SAFETY: plain prctl / sigprocmask calls in a single-threaded child.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"sandbox-cmd".as_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let ruleset = match &plan.grants {
        None => None,
        Some(g) => match files::landlock::prepare(g) {
            Ok(r) => Some(r),
            Err(e) => child_fail("landlock", e),
        },
    };
    let id = &plan.ident;
    // Drop every capability from the bounding set while we still may.
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments; EINVAL past the last capability is fine.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: raw credential calls in a single-threaded child.
    unsafe {
        if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0 {
            child_fail("setgroups", std::io::Error::last_os_error());
        }
        if libc::setresgid(id.gid, id.gid, id.gid) != 0 {
            child_fail("setresgid", std::io::Error::last_os_error());
        }
        if libc::setresuid(id.uid, id.uid, id.uid) != 0 {
            child_fail("setresuid", std::io::Error::last_os_error());
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let mut hdr = [0x2008_0522u32, 0];
        let data = [0u32; 6];
        if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) != 0 {
            child_fail("drop capabilities", std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            child_fail("no_new_privs", std::io::Error::last_os_error());
        }
    }
    if let Some(r) = ruleset {
        if let Err(e) = r.apply() {
            child_fail("landlock", e);
        }
    }
    match plan.notify {
        true => {
            let listener = match files::seccomp::load(&plan.bpf) {
                Ok(fd) => fd,
                Err(e) => child_fail("seccomp", e),
            };
            let fds = [listener.as_raw_fd()];
            let cm = [ControlMessage::ScmRights(&fds)];
            for chan in [init_chan.as_raw_fd(), plan.chan.as_raw_fd()] {
                if let Err(e) =
                    socket::sendmsg::<()>(chan, &[IoSlice::new(b"l")], &cm, MsgFlags::empty(), None)
                {
                    child_fail("hand over the seccomp listener", e);
                }
            }
            // The listener must never stay in the sandbox: a process holding it could answer its
            // own holds.
            drop(listener);
        }
        false => {
            if let Err(e) = files::seccomp::load_plain(&plan.bpf) {
                child_fail("seccomp", e);
            }
            if let Err(e) = socket::send(plan.chan.as_raw_fd(), b"r", MsgFlags::empty()) {
                child_fail("report readiness", e);
            }
        }
    }
    drop(init_chan);
    let mut go = [0u8; 1];
    match socket::recv(plan.chan.as_raw_fd(), &mut go, MsgFlags::empty()) {
        Ok(1) => {}
        _ => child_fail("start", "the supervisor went away"),
    }
    // SAFETY: close_range on our own descriptor table.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    for (k, _) in std::env::vars_os() {
        // SAFETY: single-threaded child.
        unsafe { std::env::remove_var(k) };
    }
    for (k, v) in &plan.env {
        // SAFETY: single-threaded child.
        unsafe { std::env::set_var(k, v) };
    }
    let e = nix::unistd::execvp(&plan.cmd[0], &plan.cmd).err();
    let code = match e {
        Some(nix::errno::Errno::ENOENT) => 127,
        _ => 126,
    };
    eprintln!(
        "sandbox: cannot execute {}: {}",
        plan.cmd[0].to_string_lossy(),
        e.map(|e| e.desc()).unwrap_or("unknown error")
    );
    // SAFETY: _exit after a failed exec.
    unsafe { libc::_exit(code) }
}
