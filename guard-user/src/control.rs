//! The per-session control socket and the commands that talk to it (`pending`, `approve`,
//! `deny`, `sessions`).
//!
//! One JSON request and one JSON answer per connection. Root and members of the approvers group
//! (`sandbox-approvers`) may list and decide; the session's own user may list, and decide only
//! when the profile allows self-approval. The peer is checked with SO_PEERCRED, SO_PEERGROUPS
//! and its cgroup, so a process inside a session can never list or decide holds, even as root
//! (and it cannot reach the socket's directory). The socket file is owned by the session's user
//! and the approvers group, mode 0660.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hold::{Decider, Scope, Verdict};

/// `$SANDBOX_STATE_DIR`, default `/run/sandbox`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("SANDBOX_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/sandbox"))
}

/// Errors of the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Socket I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Socket or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The peer answered something unreadable.
    #[error("bad answer from {path}: {source}")]
    Protocol {
        /// Socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The session refused or failed the request.
    #[error("{0}")]
    Refused(String),
    /// No session has a pending hold with that id.
    #[error("no pending hold {0} in any session")]
    UnknownHold(String),
    /// No such session.
    #[error("no live session named {0}")]
    UnknownSession(String),
    /// The state directory is missing while sessions run: it was removed under them.
    #[error("the state directory {} is missing, yet sessions of it are running ({}): it was removed while they ran, so their holds cannot be listed or decided any more; they are denied when their decision timeout expires", dir.display(), sessions.join(", "))]
    StateDirGone {
        /// The state directory.
        dir: PathBuf,
        /// The sessions still listening on sockets that were in it.
        sessions: Vec<String>,
    },
}

/// The error for a missing state directory: [`ControlError::StateDirGone`] when supervisors
/// still listen on sockets that were in it (`/proc/net/unix` keeps the path a socket was bound
/// to after the file is gone), else `None` (nothing has run here, or nothing runs any more).
fn state_dir_gone(dir: &Path) -> Option<ControlError> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let sessions = listening_sessions(&table, dir);
    (!sessions.is_empty()).then(|| ControlError::StateDirGone {
        dir: dir.to_path_buf(),
        sessions,
    })
}

/// The sessions with a listening socket bound to `DIR/NAME.sock`, from a `/proc/net/unix` text.
fn listening_sessions(table: &str, dir: &Path) -> Vec<String> {
    /// `__SO_ACCEPTCON`: a listening socket.
    const ACCEPTCON: u32 = 0x10000;
    let mut v: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let flags = u32::from_str_radix(f.nth(3)?, 16).ok()?;
            let path = Path::new(f.nth(3)?);
            let name = path
                .strip_prefix(dir)
                .ok()?
                .to_str()?
                .strip_suffix(".sock")?;
            (flags & ACCEPTCON != 0 && !name.contains('/')).then(|| name.to_owned())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// List pending holds.
    Pending,
    /// Describe the session.
    Info,
    /// Decide a hold.
    Decide {
        /// Hold id.
        id: String,
        /// Approve or deny.
        verdict: Verdict,
        /// How far the decision reaches (None: the session's default).
        #[serde(default)]
        scope: Option<Scope>,
        /// For how long a standing decision lasts (ms).
        for_ms: Option<u64>,
        /// Which of the human's channels the decision came from (for the audit log).
        #[serde(default)]
        via: Via,
    },
}

/// The channel a decision came through, named in the audit log's `by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `sandbox approve` / `sandbox deny`.
    #[default]
    Cli,
    /// `sandbox watch` (line mode or the full-screen view).
    Watch,
    /// The web page of `sandbox serve`.
    Web,
}

impl Via {
    /// How the audit log's `by` names the channel.
    fn name(self) -> &'static str {
        match self {
            Via::Cli => "control socket",
            Via::Watch => "sandbox watch",
            Via::Web => "web page",
        }
    }
}

/// What `sessions` shows about one session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session name.
    pub session: String,
    /// Supervisor pid.
    pub pid: u32,
    /// The command.
    pub command: Vec<String>,
    /// The user it runs as.
    pub user: String,
    /// uid it runs as.
    pub uid: u32,
    /// Start time (RFC 3339).
    pub started: String,
    /// Enforcement backend.
    pub backend: String,
    /// Protected roots.
    pub protected: Vec<PathBuf>,
    /// Pending holds now.
    pub pending: usize,
    /// The audit log file.
    pub log: PathBuf,
    /// The profile it runs under, as given (`None`: no profile).
    #[serde(default)]
    pub profile: Option<String>,
    /// Started through `sandbox daemon` (by an unprivileged user) rather than by root.
    #[serde(default)]
    pub via_daemon: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unknown: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<SessionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decided: Option<Vec<String>>,
    /// The peer may not use this socket (another user's session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    denied: Option<bool>,
}

impl Answer {
    fn err(e: impl Into<String>) -> Self {
        Answer {
            ok: false,
            error: Some(e.into()),
            unknown: None,
            pending: None,
            info: None,
            decided: None,
            denied: None,
        }
    }
    fn ok() -> Self {
        Answer {
            ok: true,
            error: None,
            unknown: None,
            pending: None,
            info: None,
            decided: None,
            denied: None,
        }
    }
}

/// Path of a session's socket.
pub fn socket_path(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.sock"))
}

/// Who may use a session's control socket besides root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    /// The session's own user: may list its holds (`pending`, `info`), and decide them only with
    /// `self_approve`.
    pub owner_uid: Option<u32>,
    /// Members of this group may list and decide (`sandbox-approvers`).
    pub approvers_gid: Option<u32>,
    /// The profile's `decisions.self_approve`.
    pub self_approve: bool,
}

/// What an allowed peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Root outside every session, or a member of the approvers group: everything.
    Approver,
    /// The session's own user: list; decide only with self-approval.
    Owner,
}

/// Who may talk to a session: root or an approver outside every sandbox, or the session's own
/// user (see [`Access`]). Never a process inside any session, whoever it runs as.
fn peer_allowed(stream: &UnixStream, access: &Access) -> Result<(crate::peer::Peer, Role), String> {
    let peer =
        crate::peer::Peer::of(stream).map_err(|e| format!("cannot identify the peer: {e}"))?;
    if !peer.outside_sessions() {
        return Err("a process inside a sandbox session may not list or decide holds".into());
    }
    if peer.uid == 0 || access.approvers_gid.is_some_and(|g| peer.in_group(g)) {
        return Ok((peer, Role::Approver));
    }
    if access.owner_uid == Some(peer.uid) {
        return Ok((peer, Role::Owner));
    }
    Err("only root, members of the approvers group or the session's own user may use this session's control socket".into())
}

/// Connections answered at the same time; more are told the session is busy at once.
const MAX_CONNECTIONS: usize = 32;

/// Serves the control socket of a session until the listener is closed. Each connection has a
/// thread of its own (at most [`MAX_CONNECTIONS`]), so a client that connects and says nothing
/// delays nobody else.
pub fn serve(
    listener: UnixListener,
    sup: Arc<dyn Decider>,
    default_scope: Scope,
    access: Access,
    info: impl Fn() -> SessionInfo + Send + Sync + 'static,
) {
    let info = Arc::new(info);
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        if busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            reply(&mut stream, &Answer::err("busy: too many connections"));
            continue;
        }
        let (sup, info, busy2) = (sup.clone(), info.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                answer(stream, sup.as_ref(), default_scope, &access, info.as_ref());
                busy2.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn reply(stream: &mut UnixStream, answer: &Answer) {
    if let Ok(mut s) = serde_json::to_string(answer) {
        s.push('\n');
        let _ = stream.write_all(s.as_bytes());
    }
}

/// Reads one request from `stream` and answers it.
fn answer(
    mut stream: UnixStream,
    sup: &dyn Decider,
    default_scope: Scope,
    access: &Access,
    info: &dyn Fn() -> SessionInfo,
) {
    // Read the request first (so a refused peer gets the answer, not a broken pipe), but
    // act on it only for an allowed peer.
    let mut line = String::new();
    let read = BufReader::new(&stream).take(64 * 1024).read_line(&mut line);
    let answer = match (peer_allowed(&stream, access), read) {
        (Err(e), _) => Answer {
            denied: Some(true),
            ..Answer::err(e)
        },
        (Ok(_), Err(e)) => Answer::err(format!("read: {e}")),
        (Ok((peer, role)), Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Decide { .. }) if role == Role::Owner && !access.self_approve => {
                Answer::err(format!(
                    "uid {} runs this session and may not decide its holds (the profile does not allow self-approval: [decisions] self_approve); ask an approver",
                    peer.uid
                ))
            }
            Ok(req) => handle(req, sup, default_scope, info, &peer, role),
            Err(e) => Answer::err(format!("bad request: {e}")),
        },
    };
    reply(&mut stream, &answer);
}

fn handle(
    req: Request,
    sup: &dyn Decider,
    default_scope: Scope,
    info: &dyn Fn() -> SessionInfo,
    peer: &crate::peer::Peer,
    role: Role,
) -> Answer {
    match req {
        Request::Pending => {
            let v = sup
                .pending()
                .iter()
                .filter_map(|h| serde_json::to_value(h).ok())
                .map(with_context)
                .collect();
            Answer {
                pending: Some(v),
                ..Answer::ok()
            }
        }
        Request::Info => Answer {
            info: Some(info()),
            ..Answer::ok()
        },
        Request::Decide {
            id,
            verdict,
            scope,
            for_ms,
            via,
        } => {
            let scope = scope.unwrap_or(default_scope);
            let who = match (peer.uid, role) {
                (0, _) => "root".to_string(),
                (u, Role::Approver) => format!("approver uid {u}"),
                (u, Role::Owner) => format!("session user uid {u} (self-approval)"),
            };
            let by = format!(
                "{who} via {} (pid {}, scope {scope:?})",
                via.name(),
                peer.pid
            )
            .to_lowercase();
            match sup.decide(&id, verdict, scope, for_ms.map(Duration::from_millis), &by) {
                Ok(ids) => Answer {
                    decided: Some(ids),
                    ..Answer::ok()
                },
                Err(e @ crate::hold::DecideError::Unknown(_)) => Answer {
                    unknown: Some(true),
                    ..Answer::err(e.to_string())
                },
                Err(e) => Answer::err(e.to_string()),
            }
        }
    }
}

/// Adds what a human needs besides the hold itself to a pending hold's JSON: the process's
/// working directory (`cwd`, when it can be read) and the session's risk statement (`risk`:
/// `must_survive`, `rollback`). Every channel (pending, watch, serve) shows this one object.
fn with_context(mut v: serde_json::Value) -> serde_json::Value {
    let pid = v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0);
    let session = v
        .get("session")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(m) = v.as_object_mut() {
        if pid > 0 {
            if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
                m.insert("cwd".into(), cwd.to_string_lossy().into_owned().into());
            }
        }
        if let Some(r) = risk(&session) {
            m.insert("risk".into(), r);
        }
    }
    v
}

/// The risk statement of a session, from its policy file: `{must_survive: [..], rollback}`.
fn risk(session: &str) -> Option<serde_json::Value> {
    if session.is_empty() || session.contains('/') {
        return None;
    }
    let p = Path::new("/run/sandbox-policy").join(format!("{session}.toml"));
    let text = std::fs::read_to_string(p).ok()?;
    let v = text.parse::<toml::Table>().ok()?;
    let r = v.get("risk")?.as_table()?;
    let must: Vec<&str> = r
        .get("must_survive")
        .and_then(|m| m.as_array())
        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    let rollback = r.get("rollback").and_then(|m| m.as_str());
    if must.is_empty() && rollback.is_none() {
        return None;
    }
    Some(serde_json::json!({"must_survive": must, "rollback": rollback}))
}

/// The risk statement of a hold's JSON as lines ("must survive: ...", "rollback: ...").
pub fn risk_lines(hold: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(r) = hold.get("risk") else {
        return out;
    };
    let must: Vec<&str> = r
        .get("must_survive")
        .and_then(|m| m.as_array())
        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    if !must.is_empty() {
        out.push(format!("must survive: {}", must.join(", ")));
    }
    if let Some(rb) = r.get("rollback").and_then(|m| m.as_str()) {
        out.push(format!("rollback: {rb}"));
    }
    out
}

fn call(sock: &Path, req: &Request) -> Result<Answer, ControlError> {
    let io = |what| {
        move |source| ControlError::Io {
            what,
            path: sock.to_path_buf(),
            source,
        }
    };
    let mut s = UnixStream::connect(sock).map_err(io("connect"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("configure"))?;
    let mut line = serde_json::to_string(req).map_err(|source| ControlError::Protocol {
        path: sock.into(),
        source,
    })?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io("write"))?;
    let mut out = String::new();
    BufReader::new(&s).read_line(&mut out).map_err(io("read"))?;
    if out.is_empty() {
        // Closed without an answer: the session ended while we asked.
        return Err(io("read")(std::io::ErrorKind::UnexpectedEof.into()));
    }
    serde_json::from_str(&out).map_err(|source| ControlError::Protocol {
        path: sock.into(),
        source,
    })
}

/// The sockets of live sessions (optionally only `only`).
fn sockets(only: Option<&str>) -> Result<Vec<(String, PathBuf)>, ControlError> {
    let dir = state_dir();
    if let Some(name) = only {
        let p = socket_path(&dir, name);
        if !p.exists() {
            if !dir.exists() {
                if let Some(e) = state_dir_gone(&dir) {
                    return Err(e);
                }
            }
            return Err(ControlError::UnknownSession(name.into()));
        }
        return Ok(vec![(name.to_string(), p)]);
    }
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match state_dir_gone(&dir) {
                Some(e) => Err(e),
                None => Ok(vec![]),
            }
        }
        Err(source) => {
            return Err(ControlError::Io {
                what: "list",
                path: dir,
                source,
            })
        }
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let s = name.strip_suffix(".sock")?.to_string();
            Some((s, e.path()))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn refused(a: &Answer) -> ControlError {
    ControlError::Refused(a.error.clone().unwrap_or_else(|| "refused".into()))
}

/// `sandbox pending`: prints pending holds. Exit 0.
/// The pending holds of every live session (or of `session`), as the sessions report them.
pub fn all_pending(session: Option<&str>) -> Result<Vec<serde_json::Value>, ControlError> {
    pending_and_silent(session).map(|(all, _)| all)
}

/// Sessions that did not answer, with why.
type Silent = Vec<(String, ControlError)>;

/// [`all_pending`], and the sessions that did not answer in time (name, error): a session
/// whose supervisor is stopped or stalled, whose holds could not be listed.
fn pending_and_silent(
    session: Option<&str>,
) -> Result<(Vec<serde_json::Value>, Silent), ControlError> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    let mut silent = Vec::new();
    let mut hidden = 0;
    for (name, sock) in sockets(session)? {
        match call(&sock, &Request::Pending) {
            Ok(a) if a.ok => all.extend(a.pending.unwrap_or_default()),
            // Another user's session, listed without naming it: not ours to see.
            Ok(a) if session.is_none() && a.denied == Some(true) => hidden += 1,
            Err(e) if session.is_none() && denied(&e) => hidden += 1,
            // Busy (too many connections): live, but its holds cannot be listed now.
            Ok(a) if session.is_none() => silent.push((name, refused(&a))),
            Ok(a) => return Err(refused(&a)),
            // A socket left by a supervisor that died, or a session ending while we asked: not a
            // live session (unless it was named).
            Err(ControlError::Io { ref source, .. }) if session.is_none() && gone(source) => {}
            // Connected, then no answer, or a garbled one: a live session that cannot be
            // listed, and the person reading the list must know.
            Err(e @ (ControlError::Io { .. } | ControlError::Protocol { .. }))
                if session.is_none() =>
            {
                silent.push((name, e))
            }
            Err(e) => return Err(e),
        }
    }
    note_hidden(hidden);
    Ok((all, silent))
}

/// True when a control-socket error means the session is gone (nobody listens on the socket,
/// or it was removed), not that a live session failed to answer.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::UnexpectedEof
    )
}

fn note_hidden(n: usize) {
    if n > 0 {
        eprintln!(
            "sandbox: {n} session{} not shown (not yours; root and members of the approvers group see every session)",
            if n == 1 { "" } else { "s" }
        );
    }
}

/// A control socket's connect error that means "not allowed" (file permissions), not "gone".
fn denied(e: &ControlError) -> bool {
    matches!(e, ControlError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
}

pub fn cmd_pending(session: Option<&str>, json: bool) -> Result<u8, ControlError> {
    let (all, silent) = pending_and_silent(session)?;
    for (name, e) in &silent {
        eprintln!("sandbox: session {name} did not answer ({e}): its holds are not listed");
    }
    if json {
        println!("{}", serde_json::Value::Array(all));
    } else if all.is_empty() {
        println!("no pending holds");
    } else {
        println!(
            "{:<9} {:<16} {:>7} {:<9} {:<20} TARGET",
            "ID", "SESSION", "PID", "KIND", "SINCE"
        );
        for h in &all {
            let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            println!(
                "{:<9} {:<16} {:>7} {:<9} {:<20} {}  ({}; {})",
                s("id"),
                s("session"),
                h.get("pid").and_then(|v| v.as_u64()).unwrap_or(0),
                s("kind"),
                s("since").get(..19).unwrap_or(""),
                s("target"),
                s("comm"),
                h.get("detail")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| s("rule"))
            );
        }
    }
    Ok(0)
}

/// `sandbox approve` / `sandbox deny`: decides a hold in whichever session has it.
pub fn cmd_decide(
    id: &str,
    verdict: Verdict,
    scope: Option<Scope>,
    for_: Option<Duration>,
) -> Result<u8, ControlError> {
    let n = decide(id, verdict, scope, for_, Via::Cli)?;
    println!("{}", decided_line(id, verdict, n));
    Ok(0)
}

/// "approved ID" / "denied ID (and N more pending holds it covers)".
pub fn decided_line(id: &str, verdict: Verdict, n: usize) -> String {
    let what = if verdict == Verdict::Allow {
        "approved"
    } else {
        "denied"
    };
    if n > 1 {
        format!("{what} {id} (and {} more pending holds it covers)", n - 1)
    } else {
        format!("{what} {id}")
    }
}

/// Decides hold `id` in whichever session has it, for channel `via`; returns how many holds the decision covered.
pub fn decide(
    id: &str,
    verdict: Verdict,
    scope: Option<Scope>,
    for_: Option<Duration>,
    via: Via,
) -> Result<usize, ControlError> {
    let req = Request::Decide {
        id: id.to_string(),
        verdict,
        scope,
        for_ms: for_.map(|d| d.as_millis() as u64),
        via,
    };
    // A refusal (another user's session, or no self-approval) is reported only when no session
    // took the decision.
    let mut refusal = None;
    for (name, sock) in sockets(None)? {
        match call(&sock, &req) {
            Ok(a) if a.ok => return Ok(a.decided.map(|d| d.len()).unwrap_or(1)),
            Ok(a) if a.unknown == Some(true) => {}
            Ok(a) => {
                refusal.get_or_insert(refused(&a));
            }
            Err(ControlError::Io { ref source, .. }) if gone(source) => {}
            // Another user's session (its socket's mode): not ours to decide.
            Err(e) if denied(&e) => {}
            // The hold may be in a session that did not answer: say so.
            Err(e @ (ControlError::Io { .. } | ControlError::Protocol { .. })) => eprintln!(
                "sandbox: warning: session {name} did not answer ({})",
                crate::launch::error_chain(&e)
            ),
            Err(e) => return Err(e),
        }
    }
    Err(refusal.unwrap_or_else(|| ControlError::UnknownHold(id.to_string())))
}

/// `sandbox sessions`: lists live sessions.
pub fn cmd_sessions(json: bool) -> Result<u8, ControlError> {
    let mut v = Vec::new();
    let mut hidden = 0;
    for (name, sock) in sockets(None)? {
        match call(&sock, &Request::Info) {
            Ok(a) if a.ok => v.extend(a.info),
            Ok(a) if a.denied == Some(true) => hidden += 1,
            Ok(a) => eprintln!(
                "sandbox: warning: session {name} refused the request ({})",
                a.error.as_deref().unwrap_or("refused")
            ),
            Err(e) if denied(&e) => hidden += 1,
            Err(ControlError::Io { .. } | ControlError::Protocol { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    note_hidden(hidden);
    if json {
        println!(
            "{}",
            serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
        );
    } else if v.is_empty() {
        println!("no live sessions");
    } else {
        println!(
            "{:<16} {:>7} {:<10} {:<12} {:<8} {:>7} {:<20} COMMAND",
            "SESSION", "PID", "USER", "PROFILE", "BACKEND", "HELD", "STARTED"
        );
        for s in &v {
            println!(
                "{:<16} {:>7} {:<10} {:<12} {:<8} {:>7} {:<20} {}",
                s.session,
                s.pid,
                s.user,
                s.profile.as_deref().unwrap_or("-"),
                s.backend,
                s.pending,
                s.started.get(..19).unwrap_or(""),
                s.command.join(" ")
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_of_a_removed_state_directory_name_their_sessions() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116093 /run/x/s1.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 2116094 /run/x/s2.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116095 /run/x/sub/s3.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116096 /run/xy/s4.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116097 /run/x/other\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116098\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2116099 /run/x/s1.sock\n";
        assert_eq!(listening_sessions(table, Path::new("/run/x")), vec!["s1"]);
        assert!(listening_sessions(table, Path::new("/nowhere")).is_empty());
    }
}
