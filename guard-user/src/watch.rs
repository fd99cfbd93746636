//! `sandbox watch`: the human's live view in a second terminal.
//!
//! On a terminal it is a full-screen view ([`tui`]); with `--no-tui`, or when stdin or stdout is
//! not a terminal, it is line mode. Both poll every live session every 200 ms and show what the
//! control socket reports for each pending hold (the same JSON as `sandbox pending --json`), ring
//! the terminal bell and, in a graphical session, send a desktop notification for each new hold.
//!
//! In line mode new holds are printed as they arrive, with the process, its command line, the
//! target, the rule and the session's risk statement. Decisions are typed as lines:
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

use crate::control::{self, ControlError, Via};
use crate::hold::{Scope, Verdict};

mod tui;

/// How often the live sessions are asked for their pending holds.
const POLL: Duration = Duration::from_millis(200);

/// Options of `sandbox watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Line mode: holds printed as lines, decisions read as lines from stdin (for scripts).
    /// Also used when stdin or stdout is not a terminal.
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

/// A string from a hold, safe to print on a terminal: the agent chose it, so control characters
/// (escape sequences, carriage returns) are shown as `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Field `k` of a hold's JSON as a printable string ("" when absent).
pub fn field(h: &Value, k: &str) -> String {
    match h.get(k) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The rule of a hold with what it recognised, e.g. "EC2 TerminateInstances: i-0 [aws-ec2]".
pub fn rule_text(h: &Value) -> String {
    match h.get("detail").and_then(|v| v.as_str()) {
        Some(d) => format!("{} [{}]", clean(d), field(h, "rule")),
        None => field(h, "rule"),
    }
}

/// Tells which holds are new since the last poll.
#[derive(Default)]
pub struct Seen(BTreeSet<String>);

impl Seen {
    /// The holds of `pending` not seen before; each is announced with a desktop notification
    /// (when a graphical session is present). The caller rings the bell.
    pub fn new_holds<'a>(&mut self, pending: &'a [Value]) -> Vec<&'a Value> {
        let mut out = Vec::new();
        for h in pending {
            let Some(id) = h.get("id").and_then(|v| v.as_str()) else {
                continue;
            };
            if self.0.insert(id.to_string()) {
                crate::notify::desktop(h, &|k| std::env::var_os(k));
                out.push(h);
            }
        }
        out
    }
}

fn show(h: &Value) -> String {
    let s = |k: &str| field(h, k);
    let mut out = format!(
        "\x07HELD {id}  session {session}  pid {pid} ({comm})\n  {kind} {target}\n  rule: {rule}\n  command: {cmd}\n",
        id = s("id"),
        session = s("session"),
        pid = s("pid"),
        comm = s("comm"),
        kind = s("kind"),
        target = s("target"),
        rule = rule_text(h),
        cmd = s("cmdline"),
    );
    if h.get("cwd").is_some() {
        out.push_str(&format!("  cwd: {}\n", s("cwd")));
    }
    for line in control::risk_lines(h) {
        out.push_str(&format!("  {}\n", clean(&line)));
    }
    out.push_str(&format!(
        "  decide: a {id} [once|process|path|session] [DUR]   |   d {id}\n",
        id = s("id")
    ));
    out
}

/// Runs `sandbox watch`. Returns the exit status.
pub fn cmd_watch(args: &WatchArgs) -> Result<u8, ControlError> {
    use std::io::IsTerminal;
    if !args.no_tui {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            return tui::run(args.session.as_deref());
        }
        eprintln!(
            "sandbox watch: stdin or stdout is not a terminal: line mode (--no-tui); \
             type a [ID] [scope] [DUR], d [ID] or q"
        );
    }
    line_mode(args)
}

/// `sandbox watch --no-tui`.
fn line_mode(args: &WatchArgs) -> Result<u8, ControlError> {
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
    let mut seen = Seen::default();
    let mut waiting: Vec<String> = Vec::new();
    let mut confirm: Option<Command> = None;
    loop {
        let pending = control::all_pending(args.session.as_deref())?;
        let live: BTreeSet<String> = pending
            .iter()
            .filter_map(|h| h.get("id").and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        waiting.retain(|id| live.contains(id));
        for h in seen.new_holds(&pending) {
            waiting.push(field(h, "id"));
            let _ = write!(out, "{}", show(h));
        }
        let _ = out.flush();
        match rx.recv_timeout(POLL) {
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
    match control::decide(&id, c.verdict, c.scope, c.for_, Via::Watch) {
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
