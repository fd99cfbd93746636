//! What the client (`sandbox run` without root) and the daemon say to each other, and what the
//! daemon hands the session process it starts.
//!
//! On the daemon's socket (a stream): the client sends one byte carrying its stdin, stdout,
//! stderr and working directory as SCM_RIGHTS, then one JSON line ([`Request`]); afterwards it
//! sends [`ClientMsg`] lines (signals to relay) and the daemon sends [`DaemonMsg`] lines (a
//! refusal, or the exit status at the end).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

/// The file descriptors the client passes, in this order.
pub const PASSED_FDS: usize = 4;

/// Largest request line the daemon reads (argv and environment).
pub const MAX_REQUEST: u64 = 8 << 20;

/// The client's request: start a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The arguments of `sandbox run` after `run` (options, `--`, the command), hex-encoded
    /// bytes.
    pub argv: Vec<String>,
    /// The client's environment (name, value), hex-encoded bytes: the command's environment.
    pub env: Vec<(String, String)>,
}

/// From the client, after the request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMsg {
    /// Relay this signal to the session (one of [`RELAYED`]).
    Signal(i32),
}

/// From the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonMsg {
    /// The session was refused or could not be started: print this, exit 125.
    Error(String),
    /// The session ended: exit with this status.
    Exit(u8),
}

/// Signals the client relays to the session: Ctrl-C, termination, hangup, Ctrl-\ and window
/// size changes.
pub const RELAYED: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];

/// What the daemon hands the session process on fd [`SPEC_FD`]: who asked, and the environment
/// the command gets. (The session process itself gets a clean environment: nothing the user
/// sends can change the guard.)
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionSpec {
    /// The requesting user's uid (SO_PEERCRED); the session's `--user` is this uid.
    pub uid: u32,
    /// Its gid (SO_PEERCRED).
    pub gid: u32,
    /// Its supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
    /// The command's environment, hex-encoded (name, value).
    pub env: Vec<(String, String)>,
    /// The approvers group (may decide every hold of the session).
    pub approvers_gid: Option<u32>,
    /// An exec observer loaded ahead of time is on fds [`PRELOADED_FD`].. (its links:
    /// `exec::PROGRAMS`, then its maps: `exec::PRELOADED_MAPS`).
    #[serde(default)]
    pub preloaded: bool,
}

/// The first fd of a preloaded exec observer in the session process.
pub const PRELOADED_FD: i32 = 4;

/// The fd number the session process reads its [`SessionSpec`] from.
pub const SPEC_FD: i32 = 3;

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(D[(c >> 4) as usize] as char);
        s.push(D[(c & 15) as usize] as char);
    }
    s
}

/// Decodes [`hex`].
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let v = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("bad hex digit {:?}", c as char)),
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    b.chunks(2).map(|p| Ok(v(p[0])? << 4 | v(p[1])?)).collect()
}

/// Hex-encodes an OS string.
pub fn hex_os(s: &std::ffi::OsStr) -> String {
    hex(s.as_bytes())
}

/// Decodes a hex-encoded OS string.
pub fn unhex_os(s: &str) -> Result<OsString, String> {
    unhex(s).map(OsString::from_vec)
}

/// Decodes a hex-encoded environment, refusing names with `=` or NUL and values with NUL.
pub fn unhex_env(env: &[(String, String)]) -> Result<Vec<(OsString, OsString)>, String> {
    env.iter()
        .map(|(k, v)| {
            let (k, v) = (unhex(k)?, unhex(v)?);
            if k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0) {
                return Err("a bad environment variable".to_string());
            }
            Ok((OsString::from_vec(k), OsString::from_vec(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_any_bytes() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn environment_names_with_equals_are_refused() {
        assert!(unhex_env(&[(hex(b"A=B"), hex(b"c"))]).is_err());
        assert!(unhex_env(&[(hex(b"A"), hex(b"c\0"))]).is_err());
        let ok = unhex_env(&[(hex(b"A"), hex(b"b=c"))]).unwrap();
        assert_eq!(ok, vec![("A".into(), "b=c".into())]);
    }

    #[test]
    fn messages_are_one_json_line() {
        let m = serde_json::to_string(&DaemonMsg::Exit(3)).unwrap();
        assert_eq!(m, r#"{"exit":3}"#);
        let c: ClientMsg = serde_json::from_str(r#"{"signal":2}"#).unwrap();
        assert!(matches!(c, ClientMsg::Signal(2)));
    }
}
