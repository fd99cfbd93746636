//! `sandbox watch`: the human's live view in a second terminal (line mode).
//!
//! New holds of every live session are printed as they arrive (polled every 200 ms), with the
//! process, its command line, the target, the rule and the session's risk statement, and the
//! terminal bell rings. Decisions are typed as lines:
//!
//! - `a [ID] [once|process|path|session] [DUR]`: approve (without ID: the oldest waiting hold);
//! - `d [ID] [once|process|path|session] [DUR]`: deny;
//! - `q` (or end of input): quit.
//!
//! A session-wide approval asks for a `y` first. Lines come from stdin, so a script can drive it
//! as well as a person can.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::control::{self, ControlError};
use crate::hold::{Scope, Verdict};

/// Options of `sandbox watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Line mode (the only mode this version has; a full-screen view is not built yet).
    #[arg(long)]
    pub no_tui: bool,
    /// Only this session.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
}

/// One decision typed by the human.
#[derive(Debug, PartialEq)]
struct Command {
    verdict: Verdict,
    id: Option<String>,
    scope: Option<Scope>,
    for_: Option<Duration>,
}

/// Parses `a|d [ID] [SCOPE] [DUR]` (also `y`/`n` for a and d). `Ok(None)`: quit.
fn parse(line: &str) -> Result<Option<Command>, String> {
    let mut words = line.split_whitespace();
    let verdict = match words.next() {
        Some("a" | "y" | "approve") => Verdict::Allow,
        Some("d" | "n" | "deny") => Verdict::Deny,
        Some("q" | "quit") => return Ok(None),
        Some(w) => {
            return Err(format!(
                "unknown command {w:?}: a|d [ID] [once|process|path|session] [DUR], q"
            ))
        }
        None => return Err("empty line".into()),
    };
    let mut c = Command {
        verdict,
        id: None,
        scope: None,
        for_: None,
    };
    for w in words {
        match w {
            "once" => c.scope = Some(Scope::Once),
            "process" => c.scope = Some(Scope::Process),
            "path" => c.scope = Some(Scope::Path),
            "session" => c.scope = Some(Scope::Session),
            w if w.len() == 8 && w.chars().all(|ch| ch.is_ascii_hexdigit()) && c.id.is_none() => {
                c.id = Some(w.to_string())
            }
            w => c.for_ = Some(crate::hold::parse_duration(w)?),
        }
    }
    Ok(Some(c))
}

/// The risk statement of a session, from its policy file (empty when it has none).
fn risk(session: &str) -> Vec<String> {
    let p = std::path::Path::new("/run/sandbox-policy").join(format!("{session}.toml"));
    let Ok(text) = std::fs::read_to_string(p) else {
        return Vec::new();
    };
    let Ok(v) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(r) = v.get("risk").and_then(|r| r.as_table()) {
        if let Some(ms) = r.get("must_survive").and_then(|m| m.as_array()) {
            let ms: Vec<&str> = ms.iter().filter_map(|m| m.as_str()).collect();
            if !ms.is_empty() {
                out.push(format!("must survive: {}", ms.join(", ")));
            }
        }
        if let Some(rb) = r.get("rollback").and_then(|m| m.as_str()) {
            out.push(format!("rollback: {rb}"));
        }
    }
    out
}

fn show(h: &Value) -> String {
    let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut out = format!(
        "\x07HELD {id}  session {session}  pid {pid} ({comm})\n  {kind} {target}\n  rule: {rule}\n  command: {cmd}\n",
        id = s("id"),
        session = s("session"),
        pid = h.get("pid").and_then(|v| v.as_u64()).unwrap_or(0),
        comm = s("comm"),
        kind = s("kind"),
        target = s("target"),
        rule = h
            .get("detail")
            .and_then(|v| v.as_str())
            .map(|d| format!("{d} [{}]", s("rule")))
            .unwrap_or_else(|| s("rule")),
        cmd = s("cmdline"),
    );
    for line in risk(&s("session")) {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!(
        "  decide: a {id} [once|process|path|session] [DUR]   |   d {id}\n",
        id = s("id")
    ));
    out
}

/// Runs `sandbox watch`. Returns the exit status.
pub fn cmd_watch(args: &WatchArgs) -> Result<u8, ControlError> {
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "watching {} (a [ID] [scope] [DUR] approves, d [ID] denies, q quits)",
        args.session.as_deref().unwrap_or("every session")
    );
    let _ = out.flush();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut confirm: Option<Command> = None;
    loop {
        let pending = control::all_pending(args.session.as_deref())?;
        let live: BTreeSet<String> = pending
            .iter()
            .filter_map(|h| h.get("id").and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        waiting.retain(|id| live.contains(id));
        for h in &pending {
            let Some(id) = h.get("id").and_then(|v| v.as_str()) else {
                continue;
            };
            if shown.insert(id.to_string()) {
                waiting.push(id.to_string());
                let _ = write!(out, "{}", show(h));
            }
        }
        let _ = out.flush();
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(None) => return Ok(0),
            Ok(Some(line)) => {
                if let Some(c) = confirm.take() {
                    if line.trim() == "y" {
                        decide(&mut out, c, &waiting);
                    } else {
                        let _ = writeln!(out, "not approved for the whole session");
                    }
                    continue;
                }
                match parse(&line) {
                    Ok(None) => return Ok(0),
                    Ok(Some(c))
                        if c.verdict == Verdict::Allow && c.scope == Some(Scope::Session) =>
                    {
                        let _ = writeln!(
                            out,
                            "approve every hold of this session{}? y/N",
                            c.for_.map(|d| format!(" for {d:?}")).unwrap_or_default()
                        );
                        confirm = Some(c);
                    }
                    Ok(Some(c)) => decide(&mut out, c, &waiting),
                    Err(e) if line.trim().is_empty() => {
                        let _ = e;
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{e}");
                    }
                }
                let _ = out.flush();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(0),
        }
    }
}

fn decide(out: &mut impl Write, c: Command, waiting: &[String]) {
    let Some(id) = c.id.or_else(|| waiting.first().cloned()) else {
        let _ = writeln!(out, "nothing is waiting");
        return;
    };
    match control::decide(&id, c.verdict, c.scope, c.for_) {
        Ok(n) => {
            let _ = writeln!(out, "{}", control::decided_line(&id, c.verdict, n));
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse("a").unwrap(),
            Some(Command {
                verdict: Verdict::Allow,
                id: None,
                scope: None,
                for_: None
            })
        );
        let c = parse("d 0a1b2c3d once").unwrap().unwrap();
        assert_eq!(
            (c.verdict, c.id.as_deref(), c.scope),
            (Verdict::Deny, Some("0a1b2c3d"), Some(Scope::Once))
        );
        let c = parse("a session 10m").unwrap().unwrap();
        assert_eq!(c.scope, Some(Scope::Session));
        assert_eq!(c.for_, Some(Duration::from_secs(600)));
        assert_eq!(parse("q").unwrap(), None);
        assert!(parse("x").is_err());
        assert!(parse("a bogus").is_err());
    }
}
