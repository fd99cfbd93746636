//! The session audit log: what happened, kept where the agent cannot write, tamper-evident.
//!
//! One file per session, `$SANDBOX_LOG_DIR/<session>.jsonl` (default `/var/log/sandbox`), one JSON
//! object per line, keys in this order:
//!
//! ```text
//! {"seq":0,"ts":"2025-06-01T12:00:00.123456Z","session":"s1","kind":"session_start",<fields>,"prev":"000…0"}
//! ```
//!
//! - `seq`: 0, 1, 2, … without gaps.
//! - `ts`: RFC 3339, UTC, microseconds.
//! - `session`, `kind` (`session_start`, `exec`, `hold`, `decision`, `session_end`, …).
//! - the event's own fields, in the order of the `serde_json::Map` given (sorted by key unless
//!   serde_json's `preserve_order` feature is on).
//! - `prev`: lowercase hex SHA-256 of the previous line's bytes without its trailing newline; for
//!   the first line, 64 zeros (a genesis value nobody can mistake for a real hash).
//!
//! The chain makes an edited, deleted, inserted or reordered line, and a cut-off last line,
//! detectable by [`verify`]. What a chain without a key cannot show: an edit of the very last line,
//! whole trailing lines cut off (reported as `closed: false` when the last event is not
//! `session_end`), or a whole log rewritten with a fresh chain. Those need root on the host, which
//! is why the log lives in a root-owned directory that [`AuditLog::create`] checks.
//!
//! Durability: every line is one `write(2)` on an `O_APPEND` file, so a crash leaves at most a
//! partial last line. `fdatasync` costs about 100x the write (measured ~85 µs against ~1 µs on the
//! development VM, and milliseconds on many laptop disks), so only the events that must survive a
//! crash are synced: [`SYNCED_KINDS`].

use std::fmt::Write as _;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Default directory of the audit logs, outside anything the agent can write.
pub const DEFAULT_LOG_DIR: &str = "/var/log/sandbox";

/// Environment variable overriding [`DEFAULT_LOG_DIR`].
pub const LOG_DIR_ENV: &str = "SANDBOX_LOG_DIR";

/// `prev` of the first line of every log.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Kinds whose line is followed by `fdatasync`: the start, every human decision and the end.
pub const SYNCED_KINDS: &[&str] = &["session_start", "decision", "session_end"];

/// Keys every line carries; an event's own fields may not reuse them.
const RESERVED_KEYS: &[&str] = &["seq", "ts", "session", "kind", "prev"];

/// Longest accepted session name (it becomes a file name).
const MAX_SESSION_LEN: usize = 128;

/// How often `sandbox log --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Longest value shown in the human-readable view (`--json` shows everything).
const MAX_SHOWN_VALUE: usize = 120;

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The session name cannot be used as a log file name.
    #[error("invalid session name {name:?}: {reason}")]
    InvalidSession {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The log directory could not be created or inspected.
    #[error("cannot create audit log directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The log directory, or one of its parents, could be written by someone other than root.
    #[error("audit log directory {} is not safe: {reason}", path.display())]
    UnsafeDir {
        /// The offending directory (the log directory or one of its parents).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A log for this session name already exists; logs are never reopened or overwritten.
    #[error("an audit log for session {session:?} already exists: {}", path.display())]
    SessionExists {
        /// The session name.
        session: String,
        /// The existing file.
        path: PathBuf,
    },
    /// The log file could not be created.
    #[error("cannot create audit log {}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An event used a key that every line carries itself.
    #[error("event field {key:?} is reserved")]
    ReservedField {
        /// The key.
        key: String,
    },
    /// An event kind was empty.
    #[error("event kind must not be empty")]
    EmptyKind,
    /// An event could not be serialised.
    #[error("cannot serialise audit event")]
    Serialize(#[source] serde_json::Error),
    /// A line could not be written (completely); the log refuses further appends.
    #[error("cannot write audit log {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An earlier write failed, so the chain may end in a partial line: nothing more is appended.
    #[error("audit log {} is unusable after an earlier write failure", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
    },
    /// A log could not be read.
    #[error("cannot read audit log {}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `sandbox log --session NAME` named a session without a log.
    #[error("unknown session {session:?}: no audit log {}", path.display())]
    UnknownSession {
        /// The session name.
        session: String,
        /// Where its log would be.
        path: PathBuf,
    },
    /// `sandbox log` without `--session` found no log at all.
    #[error("no audit logs in {}", dir.display())]
    NoLogs {
        /// The log directory.
        dir: PathBuf,
    },
    /// The log shrank while being followed: someone truncated or replaced it.
    #[error("audit log {} shrank from {was} to {now} bytes while being followed", path.display())]
    Shrank {
        /// The file.
        path: PathBuf,
        /// Bytes already shown.
        was: u64,
        /// Its size now.
        now: u64,
    },
    /// Output could not be written.
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

/// The audit log directory: `$SANDBOX_LOG_DIR`, or [`DEFAULT_LOG_DIR`] when unset or empty.
pub fn log_dir() -> PathBuf {
    std::env::var_os(LOG_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_LOG_DIR), PathBuf::from)
}

/// The log file of `session` in `dir`, after checking the name is a plain file name.
pub fn log_path(dir: &Path, session: &str) -> Result<PathBuf, AuditError> {
    validate_session(session)?;
    Ok(dir.join(format!("{session}.jsonl")))
}

/// Session names become file names: ASCII letters, digits, `.`, `_`, `-`, not starting with `.`.
fn validate_session(name: &str) -> Result<(), AuditError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_SESSION_LEN {
        Some("longer than 128 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AuditError::InvalidSession {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// An existing log opened to append to ([`AuditLog::reopen`]).
#[derive(Debug)]
pub struct Reopened {
    /// The log, continuing its chain.
    pub log: AuditLog,
    /// Its first complete line (normally `session_start`).
    pub first: Option<Value>,
    /// Its last complete line.
    pub last: Option<Value>,
}

/// Append-only, hash-chained audit log of one session. Shareable between threads (`&self`).
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    /// `session` as a JSON string, serialised once.
    session_json: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    next_seq: u64,
    /// Hex SHA-256 of the last line written, or [`GENESIS_PREV`].
    prev: String,
    /// Set after a failed or short write: the file may end in a partial line.
    broken: bool,
}

impl AuditLog {
    /// Creates `dir` (mode 0700) when missing, checks that neither it nor a parent can be written
    /// by anyone but root or the current user, and creates `<dir>/<session>.jsonl` (mode 0600,
    /// `O_EXCL`, append-only). An existing log of the same session is refused:
    /// [`AuditError::SessionExists`].
    pub fn create(dir: &Path, session: &str) -> Result<Self, AuditError> {
        let path = log_path(dir, session)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AuditError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        check_dir_safe(dir)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    AuditError::SessionExists {
                        session: session.to_owned(),
                        path: path.clone(),
                    }
                } else {
                    AuditError::Create {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        // Make the new directory entry durable, so the synced session_start has a file to be in.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| AuditError::Create {
                path: path.clone(),
                source,
            })?;
        let session_json = serde_json::to_string(session).map_err(AuditError::Serialize)?;
        Ok(Self {
            path,
            session_json,
            state: Mutex::new(State {
                file,
                next_seq: 0,
                prev: GENESIS_PREV.to_owned(),
                broken: false,
            }),
        })
    }

    /// Opens the existing log of `session` in `dir` to append to it, continuing its chain after
    /// its last complete line. For a log whose writer is gone (`sandbox daemon` records the end of
    /// sessions that died without one); never for a live session's log.
    /// Also returns the first and the last complete line (parsed).
    pub fn reopen(dir: &Path, session: &str) -> Result<Reopened, AuditError> {
        let path = log_path(dir, session)?;
        let read_err = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        let text = std::fs::read(&path).map_err(read_err)?;
        // The last complete line (a partial one, from a crash mid-write, is left as it is and
        // makes `--verify` report it).
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => &text[..i],
            None => &text[..0],
        };
        let last = complete.rsplit(|&b| b == b'\n').next().unwrap_or(&[]);
        let (next_seq, prev, last_v) = if last.is_empty() {
            (0, GENESIS_PREV.to_owned(), None)
        } else {
            let v: Value = serde_json::from_slice(last).map_err(AuditError::Serialize)?;
            let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
            (seq + 1, sha256_hex(last), Some(v))
        };
        let first = complete
            .split(|&b| b == b'\n')
            .next()
            .and_then(|l| serde_json::from_slice::<Value>(l).ok());
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(read_err)?;
        let session_json = serde_json::to_string(session).map_err(AuditError::Serialize)?;
        Ok(Reopened {
            log: Self {
                path,
                session_json,
                state: Mutex::new(State {
                    file,
                    next_seq,
                    prev,
                    broken: false,
                }),
            },
            first,
            last: last_v,
        })
    }

    /// The log file.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for launch's messages; drop this attribute once used"
        )
    )]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event as one line with a single `write(2)`; lines of [`SYNCED_KINDS`] are
    /// also `fdatasync`ed. `fields` may not use the keys `seq`, `ts`, `session`, `kind`, `prev`.
    /// After a failed write every later append fails with [`AuditError::Broken`].
    pub fn append(&self, kind: &str, fields: Map<String, Value>) -> Result<(), AuditError> {
        if kind.is_empty() {
            return Err(AuditError::EmptyKind);
        }
        // Serialise outside the lock: only seq, ts and prev depend on the order of lines.
        let kind_json = serde_json::to_string(kind).map_err(AuditError::Serialize)?;
        let mut tail = String::new();
        for (key, value) in &fields {
            if RESERVED_KEYS.contains(&key.as_str()) {
                return Err(AuditError::ReservedField { key: key.clone() });
            }
            tail.push(',');
            tail.push_str(&serde_json::to_string(key).map_err(AuditError::Serialize)?);
            tail.push(':');
            tail.push_str(&serde_json::to_string(value).map_err(AuditError::Serialize)?);
        }
        let sync = SYNCED_KINDS.contains(&kind);

        // A panic elsewhere while holding the lock cannot leave State half-updated (it is only
        // changed after a complete write), so a poisoned lock is still usable.
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.broken {
            return Err(AuditError::Broken {
                path: self.path.clone(),
            });
        }
        let line = format!(
            "{{\"seq\":{},\"ts\":\"{}\",\"session\":{},\"kind\":{}{},\"prev\":\"{}\"}}",
            st.next_seq,
            rfc3339_micros(SystemTime::now()),
            self.session_json,
            kind_json,
            tail,
            st.prev,
        );
        let line = escape_terminal_controls(line);
        let hash = sha256_hex(line.as_bytes());
        let mut buf = line.into_bytes();
        buf.push(b'\n');
        let mut written = 0;
        let res = match (&st.file).write(&buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => {
                written = n;
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", buf.len()),
                ))
            }
            Err(e) => Err(e),
        }
        .and_then(|()| if sync { st.file.sync_data() } else { Ok(()) });
        if let Err(source) = res {
            // A short write (a full file system) leaves part of a line: take it back, so the log
            // ends with its last complete line.
            if let Ok(len) = st.file.metadata().map(|m| m.len()) {
                if let Some(old) = len.checked_sub(written as u64) {
                    let _ = st.file.set_len(old);
                }
            }
            st.broken = true;
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        st.next_seq += 1;
        st.prev = hash;
        Ok(())
    }
}

/// Refuses a log directory that someone other than root or us could write, or whose parents
/// could be renamed by someone else: the log is only as safe as the path to it.
fn check_dir_safe(dir: &Path) -> Result<(), AuditError> {
    let canon = dir.canonicalize().map_err(|source| AuditError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for (i, p) in canon.ancestors().enumerate() {
        let md = std::fs::metadata(p).map_err(|source| AuditError::CreateDir {
            path: p.to_owned(),
            source,
        })?;
        let unsafe_dir = |reason: String| AuditError::UnsafeDir {
            path: p.to_owned(),
            reason,
        };
        if !md.is_dir() {
            return Err(unsafe_dir("not a directory".to_owned()));
        }
        if md.uid() != 0 && md.uid() != euid {
            return Err(unsafe_dir(format!("owned by uid {}", md.uid())));
        }
        let mode = md.mode();
        let sticky = mode & 0o1000 != 0;
        // The log directory itself: nobody else may write. A parent: a sticky one (like /tmp)
        // is fine, since others cannot rename our entries in it.
        if mode & 0o022 != 0 && (i == 0 || !sticky) {
            return Err(unsafe_dir(format!(
                "writable by group or others (mode {:o})",
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Replaces DEL and the C1 controls (U+007F..=U+009F), which serde_json leaves raw, with `\u`
/// escapes, so that a line shown on a terminal cannot carry escape sequences. Inside a JSON text
/// these characters can only occur in strings, where the escape means the same.
fn escape_terminal_controls(line: String) -> String {
    if !line.chars().any(is_raw_control) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_raw_control(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_raw_control(c: char) -> bool {
    ('\u{7f}'..='\u{9f}').contains(&c)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Formats `t` as RFC 3339 UTC with microseconds (`2025-06-01T12:00:00.123456Z`). Times before
/// 1970 (a clock set very wrong) are shown as the epoch.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Why a line fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// The last line has no newline: cut off mid-line (or a write was torn).
    Truncated,
    /// An empty line.
    EmptyLine,
    /// Not valid JSON (or not UTF-8).
    NotJson(String),
    /// Valid JSON but not an object.
    NotObject,
    /// A key every line must carry is missing or has the wrong type.
    MissingField(&'static str),
    /// `seq` is not the line's position: a line was deleted, inserted or moved.
    BadSeq {
        /// Expected value (line number - 1).
        expected: u64,
        /// The value found.
        found: u64,
    },
    /// `prev` is not the hash of the line before: that line (or this `prev`) was altered.
    BadPrev {
        /// The hash the chain requires.
        expected: String,
        /// The value found.
        found: String,
    },
    /// The line names another session than the log's first line (or its file name).
    SessionMismatch {
        /// The log's session.
        expected: String,
        /// The value found.
        found: String,
    },
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => write!(f, "truncated (last line has no newline)"),
            Self::EmptyLine => write!(f, "empty line"),
            Self::NotJson(e) => write!(f, "not valid JSON: {e}"),
            Self::NotObject => write!(f, "not a JSON object"),
            Self::MissingField(k) => write!(f, "missing or mistyped field {k:?}"),
            Self::BadSeq { expected, found } => write!(
                f,
                "seq is {found}, expected {expected} (a line was deleted, inserted or moved)"
            ),
            Self::BadPrev { .. } => write!(
                f,
                "prev does not match the SHA-256 of the previous line (the previous line was altered)"
            ),
            Self::SessionMismatch { expected, found } => {
                write!(f, "session is {found:?}, expected {expected:?}")
            }
        }
    }
}

/// The first line that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub reason: Tamper,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines read: all of them when intact, up to and including the bad one otherwise.
    pub lines: u64,
    /// The session named by the first line, if it could be read.
    pub session: Option<String>,
    /// Whether the last line is a `session_end` event (only when intact). A log that is not
    /// closed belongs to a live or crashed session, or lost its trailing lines: a warning the
    /// caller weighs, since only it may know whether the session is still running.
    pub closed: bool,
    /// The first bad line, `None` when the chain is intact.
    pub first_bad: Option<BadLine>,
}

/// Checks a log: every line a JSON object ending in a newline, `seq` consecutive from 0, `prev`
/// chaining, one session throughout (matching the file name `<session>.jsonl` when it has that
/// extension). Stops at the first bad line. `Err` only when the file cannot be read.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(read_err)?);
    let name_session = match path.extension() {
        Some(ext) if ext == "jsonl" => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        _ => None,
    };
    let mut report = VerifyReport {
        lines: 0,
        session: None,
        closed: false,
        first_bad: None,
    };
    let mut prev = GENESIS_PREV.to_owned();
    let mut last_kind = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
            break;
        }
        report.lines += 1;
        let line_no = report.lines;
        let mut fail = |reason| {
            report.first_bad = Some(BadLine {
                line: line_no,
                reason,
            });
        };
        let Some(line) = buf.strip_suffix(b"\n") else {
            fail(Tamper::Truncated);
            break;
        };
        match check_line(
            line,
            line_no - 1,
            &prev,
            report.session.as_deref().or(name_session.as_deref()),
        ) {
            Ok((session, kind)) => {
                if report.session.is_none() {
                    report.session = Some(session);
                }
                last_kind = kind;
                prev = sha256_hex(line);
            }
            Err(reason) => {
                fail(reason);
                break;
            }
        }
    }
    report.closed = report.first_bad.is_none() && last_kind == "session_end";
    Ok(report)
}

/// Checks one line (without newline); returns its session and kind.
fn check_line(
    line: &[u8],
    seq: u64,
    prev: &str,
    session: Option<&str>,
) -> Result<(String, String), Tamper> {
    if line.is_empty() {
        return Err(Tamper::EmptyLine);
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| Tamper::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or(Tamper::NotObject)?;
    let str_field = |k: &'static str| {
        obj.get(k)
            .and_then(Value::as_str)
            .ok_or(Tamper::MissingField(k))
    };
    let found = obj
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(Tamper::MissingField("seq"))?;
    if found != seq {
        return Err(Tamper::BadSeq {
            expected: seq,
            found,
        });
    }
    let found_prev = str_field("prev")?;
    if found_prev != prev {
        return Err(Tamper::BadPrev {
            expected: prev.to_owned(),
            found: found_prev.to_owned(),
        });
    }
    str_field("ts")?;
    let found_session = str_field("session")?;
    if let Some(expected) = session {
        if found_session != expected {
            return Err(Tamper::SessionMismatch {
                expected: expected.to_owned(),
                found: found_session.to_owned(),
            });
        }
    }
    Ok((found_session.to_owned(), str_field("kind")?.to_owned()))
}

/// `sandbox log`: show, follow or verify a session's audit log.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Session whose log to show (default: the most recently modified log).
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Print the raw JSON lines instead of one readable line per event.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as they are written, until interrupted.
    #[arg(long, conflicts_with = "verify")]
    pub follow: bool,
    /// Check the hash chain instead of printing events.
    #[arg(long)]
    pub verify: bool,
}

/// Runs `sandbox log` on `$SANDBOX_LOG_DIR`.
///
/// Exit codes: 0 when the log was shown (or, with `--verify`, its chain is intact; a log not
/// closed by `session_end` adds a warning on stderr but still exits 0); 1 with `--verify` when the
/// log is tampered (`TAMPERED: line K: reason` on stdout), and as the `Err` of this function (which
/// `main` turns into 1) for an unknown session, no logs at all, or an unreadable log. Usage
/// errors exit 2 (clap).
pub fn cmd_log(args: &LogArgs) -> Result<u8, AuditError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run_log(args, &log_dir(), &mut out) {
        // `sandbox log | head`: the reader is gone, which is not a failure.
        Err(AuditError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        res => res,
    }
}

fn run_log(args: &LogArgs, dir: &Path, out: &mut impl Write) -> Result<u8, AuditError> {
    let path = match &args.session {
        Some(session) => {
            let path = log_path(dir, session)?;
            if !path.is_file() {
                return Err(AuditError::UnknownSession {
                    session: session.clone(),
                    path,
                });
            }
            path
        }
        None => newest_log(dir)?,
    };
    if args.verify {
        return print_verify(&path, out);
    }
    let mut file = File::open(&path).map_err(|source| AuditError::Read {
        path: path.clone(),
        source,
    })?;
    let mut pending = Vec::new();
    let mut offset = 0u64;
    loop {
        let n = file
            .read_to_end(&mut pending)
            .map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?;
        offset += n as u64;
        let complete = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in pending[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            print_line(line, args.json, out)?;
        }
        pending.drain(..complete);
        if !args.follow {
            // A partial last line is shown too: this is a viewer, `--verify` judges.
            if !pending.is_empty() {
                print_line(&pending, args.json, out)?;
            }
            return Ok(0);
        }
        out.flush().map_err(AuditError::Output)?;
        std::thread::sleep(FOLLOW_POLL);
        let now = file
            .metadata()
            .map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?
            .len();
        if now < offset {
            return Err(AuditError::Shrank {
                path,
                was: offset,
                now,
            });
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| AuditError::Read {
                path: path.clone(),
                source,
            })?;
    }
}

fn print_verify(path: &Path, out: &mut impl Write) -> Result<u8, AuditError> {
    let report = verify(path)?;
    match &report.first_bad {
        None => {
            let closed = if report.closed {
                ", session closed"
            } else {
                ""
            };
            writeln!(out, "ok: {} lines, chain intact{closed}", report.lines)
                .map_err(AuditError::Output)?;
            if !report.closed {
                eprintln!(
                    "sandbox: warning: {} does not end with session_end: the session is live, \
                     crashed, or lost its last lines",
                    path.display()
                );
            }
            Ok(0)
        }
        Some(bad) => {
            writeln!(out, "TAMPERED: line {}: {}", bad.line, bad.reason)
                .map_err(AuditError::Output)?;
            Ok(1)
        }
    }
}

/// The `*.jsonl` regular file in `dir` modified last.
fn newest_log(dir: &Path) -> Result<PathBuf, AuditError> {
    let read_err = |source| AuditError::Read {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AuditError::NoLogs {
                dir: dir.to_owned(),
            })
        }
        res => res.map_err(read_err)?,
    };
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let md = entry.metadata().map_err(read_err)?;
        if !md.is_file() {
            continue;
        }
        let mtime = md.modified().map_err(read_err)?;
        if best.as_ref().is_none_or(|(t, p)| (mtime, &path) > (*t, p)) {
            best = Some((mtime, path));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| AuditError::NoLogs {
        dir: dir.to_owned(),
    })
}

fn print_line(line: &[u8], json: bool, out: &mut impl Write) -> Result<(), AuditError> {
    let text = if json {
        // Raw, except for control characters a hand-edited file might carry to the terminal.
        sanitize(&String::from_utf8_lossy(line))
    } else {
        human_line(line)
    };
    writeln!(out, "{text}").map_err(AuditError::Output)
}

/// One readable line: time, kind, then the event's fields as `key=value`.
fn human_line(line: &[u8]) -> String {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line) else {
        return format!("? {}", sanitize(&String::from_utf8_lossy(line)));
    };
    let get = |k| obj.get(k).and_then(Value::as_str).unwrap_or("?");
    let mut s = format!("{} {:<14}", get("ts"), get("kind"));
    for (k, v) in obj
        .iter()
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
    {
        let shown = match v {
            Value::String(t)
                if !t.is_empty() && !t.contains(char::is_whitespace) && !t.contains('"') =>
            {
                t.clone()
            }
            other => other.to_string(),
        };
        let _ = write!(s, " {}={}", sanitize(k), sanitize(&shorten(&shown)));
    }
    s.trim_end().to_owned()
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Escapes control characters so that agent-chosen strings cannot drive the terminal.
fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// A closed log of `n` events (session_start, n-2 exec, session_end) in a fresh directory.
    fn sample_log(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::create(dir.path(), "s1").unwrap();
        log.append("session_start", fields(&[("profile", "default".into())]))
            .unwrap();
        for i in 1..n - 1 {
            log.append(
                "exec",
                fields(&[("argv", serde_json::json!(["rm", "-rf", i.to_string()]))]),
            )
            .unwrap();
        }
        log.append("session_end", Map::new()).unwrap();
        let path = log.path().to_owned();
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn bad(path: &Path) -> BadLine {
        verify(path).unwrap().first_bad.unwrap()
    }

    #[test]
    fn chain_round_trip_verifies_and_is_closed() {
        let (_dir, path) = sample_log(5);
        let report = verify(&path).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                lines: 5,
                session: Some("s1".into()),
                closed: true,
                first_bad: None
            }
        );
        let ls = lines(&path);
        assert!(ls[0].ends_with(&format!(",\"prev\":\"{GENESIS_PREV}\"}}")));
        for pair in ls.windows(2) {
            let next: Value = serde_json::from_str(&pair[1]).unwrap();
            assert_eq!(next["prev"], sha256_hex(pair[0].as_bytes()));
        }
    }

    #[test]
    fn line_keys_come_in_documented_order() {
        let (_dir, path) = sample_log(3);
        let l = &lines(&path)[1];
        let at = |k: &str| l.find(&format!("\"{k}\":")).unwrap();
        assert_eq!(at("seq"), 1);
        assert!(at("seq") < at("ts") && at("ts") < at("session") && at("session") < at("kind"));
        assert!(at("kind") < at("argv") && at("argv") < at("prev"));
        assert!(l.starts_with("{\"seq\":1,\"ts\":\""));
    }

    #[test]
    fn edited_middle_line_is_detected_at_the_next_line() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls[2] = ls[2].replace("\"rm\"", "\"rn\"");
        write_lines(&path, &ls);
        let b = bad(&path);
        assert_eq!(b.line, 4);
        assert!(matches!(b.reason, Tamper::BadPrev { .. }), "{b:?}");
    }

    #[test]
    fn edit_breaking_json_is_detected_on_that_line() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls[2] = ls[2].replacen('{', "[", 1);
        write_lines(&path, &ls);
        let b = bad(&path);
        assert_eq!(b.line, 3);
        assert!(matches!(b.reason, Tamper::NotJson(_)), "{b:?}");
    }

    #[test]
    fn deleted_middle_line_is_detected() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls.remove(2);
        write_lines(&path, &ls);
        assert_eq!(
            bad(&path),
            BadLine {
                line: 3,
                reason: Tamper::BadSeq {
                    expected: 2,
                    found: 3
                }
            }
        );
    }

    #[test]
    fn deleted_line_with_renumbered_seq_is_detected_by_the_chain() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls.remove(2);
        ls[2] = ls[2].replace("\"seq\":3,", "\"seq\":2,");
        write_lines(&path, &ls);
        let b = bad(&path);
        assert_eq!(b.line, 3);
        assert!(matches!(b.reason, Tamper::BadPrev { .. }), "{b:?}");
    }

    #[test]
    fn reordered_lines_are_detected() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls.swap(1, 2);
        write_lines(&path, &ls);
        assert_eq!(
            bad(&path),
            BadLine {
                line: 2,
                reason: Tamper::BadSeq {
                    expected: 1,
                    found: 2
                }
            }
        );
    }

    #[test]
    fn truncated_partial_last_line_is_detected() {
        let (_dir, path) = sample_log(5);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert_eq!(
            bad(&path),
            BadLine {
                line: 5,
                reason: Tamper::Truncated
            }
        );
    }

    #[test]
    fn cut_whole_trailing_lines_leave_the_log_not_closed() {
        let (_dir, path) = sample_log(5);
        let mut ls = lines(&path);
        ls.truncate(3);
        write_lines(&path, &ls);
        let report = verify(&path).unwrap();
        assert!(report.first_bad.is_none());
        assert!(!report.closed);
        assert_eq!(report.lines, 3);
    }

    #[test]
    fn inserted_empty_line_is_detected() {
        let (_dir, path) = sample_log(4);
        let mut ls = lines(&path);
        ls.insert(2, String::new());
        write_lines(&path, &ls);
        assert_eq!(
            bad(&path),
            BadLine {
                line: 3,
                reason: Tamper::EmptyLine
            }
        );
    }

    #[test]
    fn log_copied_under_another_session_name_is_detected() {
        let (dir, path) = sample_log(3);
        let other = dir.path().join("s2.jsonl");
        std::fs::copy(&path, &other).unwrap();
        let b = bad(&other);
        assert_eq!(b.line, 1);
        assert!(matches!(b.reason, Tamper::SessionMismatch { .. }), "{b:?}");
    }

    #[test]
    fn concurrent_appends_from_8_threads_form_a_valid_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(AuditLog::create(dir.path(), "conc").unwrap());
        log.append("session_start", Map::new()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        log.append("exec", fields(&[("t", t.into()), ("i", i.into())]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.append("session_end", Map::new()).unwrap();
        let report = verify(log.path()).unwrap();
        assert!(report.first_bad.is_none(), "{report:?}");
        assert!(report.closed);
        assert_eq!(report.lines, 8 * 200 + 2);
    }

    #[test]
    fn create_refuses_an_existing_session_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::create(dir.path(), "dup").unwrap();
        log.append("session_start", Map::new()).unwrap();
        let err = AuditLog::create(dir.path(), "dup").unwrap_err();
        assert!(matches!(err, AuditError::SessionExists { .. }), "{err:?}");
        assert!(err.to_string().contains("already exists"));
        assert_eq!(lines(log.path()).len(), 1, "the existing log is untouched");
    }

    #[test]
    fn create_makes_private_dir_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("a/b");
        let log = AuditLog::create(&logs, "s").unwrap();
        assert_eq!(std::fs::metadata(&logs).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(log.path()).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn create_refuses_a_world_writable_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = AuditLog::create(dir.path(), "s").unwrap_err();
        assert!(matches!(err, AuditError::UnsafeDir { .. }), "{err:?}");
    }

    #[test]
    fn session_names_that_are_not_plain_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            let err = AuditLog::create(dir.path(), name).unwrap_err();
            assert!(
                matches!(err, AuditError::InvalidSession { .. }),
                "{name:?}: {err:?}"
            );
        }
    }

    #[test]
    fn reserved_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::create(dir.path(), "s").unwrap();
        let err = log
            .append("exec", fields(&[("prev", "x".into())]))
            .unwrap_err();
        assert!(matches!(err, AuditError::ReservedField { .. }), "{err:?}");
        log.append("session_start", Map::new()).unwrap();
        assert!(
            verify(log.path()).unwrap().first_bad.is_none(),
            "a refused event consumes no seq"
        );
    }

    #[test]
    fn terminal_controls_are_escaped_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::create(dir.path(), "s").unwrap();
        log.append(
            "exec",
            fields(&[("cmd", "a\u{1b}[2J\u{9b}31m\u{7f}".into())]),
        )
        .unwrap();
        let raw = std::fs::read_to_string(log.path()).unwrap();
        assert!(!raw.trim_end().chars().any(char::is_control), "{raw:?}");
        let v: Value = serde_json::from_str(raw.trim_end()).unwrap();
        assert_eq!(v["cmd"], "a\u{1b}[2J\u{9b}31m\u{7f}");
        assert!(verify(log.path()).unwrap().first_bad.is_none());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |s: u64, us: u32| rfc3339_micros(UNIX_EPOCH + Duration::new(s, us * 1000));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(
            rfc3339_micros(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn log_verify_prints_ok_or_tampered_with_exit_code() {
        let (dir, path) = sample_log(4);
        let args = LogArgs {
            session: Some("s1".into()),
            verify: true,
            ..LogArgs::default()
        };
        let mut out = Vec::new();
        assert_eq!(run_log(&args, dir.path(), &mut out).unwrap(), 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok: 4 lines, chain intact, session closed\n"
        );

        let mut ls = lines(&path);
        ls.remove(1);
        write_lines(&path, &ls);
        let mut out = Vec::new();
        assert_eq!(run_log(&args, dir.path(), &mut out).unwrap(), 1);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("TAMPERED: line 2: seq is 2, expected 1"));
    }

    #[test]
    fn log_of_unknown_session_is_an_error() {
        let (dir, _path) = sample_log(3);
        let args = LogArgs {
            session: Some("nope".into()),
            ..LogArgs::default()
        };
        let err = run_log(&args, dir.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, AuditError::UnknownSession { .. }), "{err:?}");
        let empty = tempfile::tempdir().unwrap();
        let err = run_log(&LogArgs::default(), empty.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, AuditError::NoLogs { .. }), "{err:?}");
    }

    #[test]
    fn log_without_session_shows_the_newest_log() {
        let (dir, _path) = sample_log(3);
        let newer = AuditLog::create(dir.path(), "s2").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(dir.path().join("s1.jsonl"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        newer
            .append("session_start", fields(&[("profile", "strict".into())]))
            .unwrap();

        let mut out = Vec::new();
        assert_eq!(
            run_log(
                &LogArgs {
                    json: true,
                    ..LogArgs::default()
                },
                dir.path(),
                &mut out
            )
            .unwrap(),
            0
        );
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, std::fs::read_to_string(newer.path()).unwrap());

        let mut out = Vec::new();
        run_log(&LogArgs::default(), dir.path(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(" session_start ") && out.contains("profile=strict"),
            "{out}"
        );
        assert!(!out.contains("prev="), "{out}");
    }
}
