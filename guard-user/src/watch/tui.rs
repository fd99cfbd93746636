//! The full-screen view of `sandbox watch` (ratatui on crossterm: plain escape sequences, so it
//! works over SSH; no mouse).
//!
//! The list of pending holds of every live session (or one) is on top, the selected hold in full
//! below it (session, process, command line, cwd, kind, target, rule, the session's risk
//! statement). Keys: ↑/↓ or k/j select; `a` approves and `d` denies the selected hold with the
//! scope shown (`s` cycles once → process → path → session; it starts at once); `f` sets a
//! duration for the decision (`2s`, `10m`; empty for none); a session-wide approval asks for `y`;
//! `q` (or Esc, Ctrl-C) quits. Each new hold rings the terminal bell.
//!
//! The terminal is restored on exit, on error and on panic (ratatui's panic hook).

use std::io::Write;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;
use serde_json::Value;

use super::{clean, field, rule_text, Seen, POLL};
use crate::control::{self, ControlError, Via};
use crate::hold::{Scope, Verdict};

/// What the keys are doing now.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// Selecting and deciding.
    Normal,
    /// Typing a duration for the next decision.
    Duration(String),
    /// A session-wide approval waits for `y`.
    Confirm(Decision),
}

/// A decision to send to the session that holds `id`.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    id: String,
    session: String,
    verdict: Verdict,
    scope: Scope,
    for_: Option<Duration>,
}

/// The state of the view.
struct App {
    filter: Option<String>,
    holds: Vec<Value>,
    /// The selected hold's id (kept across polls; the first hold when it is gone).
    selected: Option<String>,
    scope: Scope,
    for_: Option<Duration>,
    mode: Mode,
    status: String,
    quit: bool,
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Once => "once",
        Scope::Process => "process",
        Scope::Path => "path",
        Scope::Session => "session",
    }
}

fn next_scope(s: Scope) -> Scope {
    match s {
        Scope::Once => Scope::Process,
        Scope::Process => Scope::Path,
        Scope::Path => Scope::Session,
        Scope::Session => Scope::Once,
    }
}

impl App {
    fn new(filter: Option<&str>) -> App {
        App {
            filter: filter.map(str::to_string),
            holds: Vec::new(),
            selected: None,
            scope: Scope::Once,
            for_: None,
            mode: Mode::Normal,
            status: String::new(),
            quit: false,
        }
    }

    /// Takes a fresh list of pending holds.
    fn update(&mut self, holds: Vec<Value>) {
        self.holds = holds;
        let ids: Vec<String> = self.holds.iter().map(|h| field(h, "id")).collect();
        if !self.selected.as_ref().is_some_and(|s| ids.contains(s)) {
            self.selected = ids.first().cloned();
        }
    }

    fn index(&self) -> Option<usize> {
        let sel = self.selected.as_ref()?;
        self.holds.iter().position(|h| &field(h, "id") == sel)
    }

    fn select(&mut self, delta: isize) {
        if self.holds.is_empty() {
            return;
        }
        let i = self.index().unwrap_or(0) as isize + delta;
        let i = i.clamp(0, self.holds.len() as isize - 1) as usize;
        self.selected = self.holds.get(i).map(|h| field(h, "id"));
    }

    /// The decision `verdict` on the selected hold with the chosen scope and duration.
    fn decision(&self, verdict: Verdict) -> Option<Decision> {
        let h = self.holds.get(self.index()?)?;
        Some(Decision {
            id: field(h, "id"),
            session: field(h, "session"),
            verdict,
            scope: self.scope,
            for_: self.for_,
        })
    }

    /// Handles a key; returns a decision to carry out.
    fn key(&mut self, k: KeyEvent) -> Option<Decision> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Confirm(d) => {
                if k.code == KeyCode::Char('y') {
                    return Some(d);
                }
                self.status = format!("not approved for the whole session {}", d.session);
                None
            }
            Mode::Duration(mut text) => {
                match k.code {
                    KeyCode::Enter => {
                        let t = text.trim();
                        if t.is_empty() {
                            self.for_ = None;
                            self.status = "decisions stand without a time limit".into();
                        } else {
                            match crate::hold::parse_duration(t) {
                                Ok(d) => {
                                    self.for_ = Some(d);
                                    self.status = format!("decisions stand for {t}");
                                }
                                Err(e) => self.status = e,
                            }
                        }
                    }
                    KeyCode::Esc => self.status.clear(),
                    KeyCode::Backspace => {
                        text.pop();
                        self.mode = Mode::Duration(text);
                    }
                    KeyCode::Char(c) if c.is_ascii_alphanumeric() && text.len() < 16 => {
                        text.push(c);
                        self.mode = Mode::Duration(text);
                    }
                    _ => self.mode = Mode::Duration(text),
                }
                None
            }
            Mode::Normal => {
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
                    KeyCode::Up | KeyCode::Char('k') => self.select(-1),
                    KeyCode::Down | KeyCode::Char('j') => self.select(1),
                    KeyCode::Char('s') => self.scope = next_scope(self.scope),
                    KeyCode::Char('f') => self.mode = Mode::Duration(String::new()),
                    KeyCode::Char('a') => match self.decision(Verdict::Allow) {
                        Some(d) if d.scope == Scope::Session => self.mode = Mode::Confirm(d),
                        Some(d) => return Some(d),
                        None => self.status = "nothing is waiting".into(),
                    },
                    KeyCode::Char('d') => match self.decision(Verdict::Deny) {
                        Some(d) => return Some(d),
                        None => self.status = "nothing is waiting".into(),
                    },
                    _ => {}
                }
                None
            }
        }
    }

    fn draw(&self, f: &mut Frame) {
        let [head, list, detail, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(14),
            Constraint::Length(2),
        ])
        .areas(f.area());
        f.render_widget(
            Paragraph::new(format!(
                "sandbox watch: {} pending hold(s) in {}",
                self.holds.len(),
                self.filter
                    .as_deref()
                    .map(|s| format!("session {}", clean(s)))
                    .unwrap_or_else(|| "every live session".into())
            ))
            .style(Style::new().add_modifier(Modifier::BOLD)),
            head,
        );

        let items: Vec<ListItem> = self
            .holds
            .iter()
            .map(|h| {
                ListItem::new(format!(
                    "{:<9} {:<16} {:>7} {:<12} {:<8} {}",
                    field(h, "id"),
                    field(h, "session"),
                    field(h, "pid"),
                    field(h, "comm"),
                    field(h, "kind"),
                    field(h, "target")
                ))
            })
            .collect();
        let mut state = ListState::default().with_selected(self.index());
        f.render_stateful_widget(
            List::new(items)
                .block(Block::new().borders(Borders::ALL).title(format!(
                    " {:<9} {:<16} {:>7} {:<12} {:<8} TARGET ",
                    "ID", "SESSION", "PID", "COMM", "KIND"
                )))
                .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                .highlight_symbol("> "),
            list,
            &mut state,
        );

        let lines: Vec<Line> = match self.index().and_then(|i| self.holds.get(i)) {
            None => vec![Line::from("no hold is waiting")],
            Some(h) => {
                let mut v = vec![
                    Line::from(format!(
                        "hold {}   waiting since {}",
                        field(h, "id"),
                        field(h, "since")
                    )),
                    Line::from(format!("session: {}", field(h, "session"))),
                    Line::from(format!(
                        "process: pid {} ({})",
                        field(h, "pid"),
                        field(h, "comm")
                    )),
                    Line::from(format!("command: {}", field(h, "cmdline"))),
                ];
                if h.get("cwd").is_some() {
                    v.push(Line::from(format!("cwd: {}", field(h, "cwd"))));
                }
                v.push(Line::from(format!("kind: {}", field(h, "kind"))));
                v.push(Line::from(format!("target: {}", field(h, "target"))));
                v.push(Line::from(format!("rule: {}", rule_text(h))));
                let risk = control::risk_lines(h);
                if risk.is_empty() {
                    v.push(Line::from("risk: the profile states none"));
                }
                v.extend(risk.iter().map(|l| Line::from(clean(l))));
                v
            }
        };
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::new().borders(Borders::ALL).title(" selected hold ")),
            detail,
        );

        let keys = format!(
            "a approve   d deny   s scope: {}   f for: {}   ↑↓/j/k select   q quit",
            scope_name(self.scope),
            self.for_
                .map(|d| format!("{}s", d.as_secs_f64()))
                .unwrap_or_else(|| "no limit".into())
        );
        let second = match &self.mode {
            Mode::Normal => self.status.clone(),
            Mode::Duration(t) => {
                format!("for how long (e.g. 2s, 10m; empty: no limit), Enter: {t}_")
            }
            Mode::Confirm(d) => format!(
                "approve EVERY hold of session {}{}? y/n",
                d.session,
                d.for_
                    .map(|t| format!(" for {}s", t.as_secs_f64()))
                    .unwrap_or_default()
            ),
        };
        f.render_widget(
            Paragraph::new(vec![
                Line::from(keys),
                Line::from(second).style(Style::new().add_modifier(Modifier::BOLD)),
            ]),
            foot,
        );
    }
}

/// Restores the terminal when dropped (on return and on error; ratatui's hook covers panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the full-screen view until `q`. Returns the exit status.
pub fn run(filter: Option<&str>) -> Result<u8, ControlError> {
    let io = |source| ControlError::Io {
        what: "use the terminal",
        path: "/dev/tty".into(),
        source,
    };
    let mut term = ratatui::try_init().map_err(|e| {
        ratatui::restore();
        io(e)
    })?;
    let _restore = Restore;
    let mut app = App::new(filter);
    let mut seen = Seen::default();
    let mut last_poll: Option<Instant> = None;
    while !app.quit {
        if last_poll.is_none_or(|t| t.elapsed() >= POLL) {
            last_poll = Some(Instant::now());
            match control::all_pending(filter) {
                Ok(v) => {
                    if !seen.new_holds(&v).is_empty() {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(b"\x07");
                        let _ = out.flush();
                    }
                    app.update(v);
                }
                Err(e) => {
                    app.update(Vec::new());
                    app.status = e.to_string();
                }
            }
        }
        term.draw(|f| app.draw(f)).map_err(io)?;
        let wait = POLL.saturating_sub(last_poll.map(|t| t.elapsed()).unwrap_or_default());
        if event::poll(wait).map_err(io)? {
            if let Event::Key(k) = event::read().map_err(io)? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                if let Some(d) = app.key(k) {
                    app.status = match control::decide(
                        &d.id,
                        d.verdict,
                        Some(d.scope),
                        d.for_,
                        Via::Watch,
                    ) {
                        Ok(n) => format!(
                            "{} (scope {})",
                            control::decided_line(&d.id, d.verdict, n),
                            scope_name(d.scope)
                        ),
                        Err(e) => e.to_string(),
                    };
                    // Show the list without the decided hold at once.
                    last_poll = None;
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn press(app: &mut App, c: KeyCode) -> Option<Decision> {
        app.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn holds() -> Vec<Value> {
        vec![
            serde_json::json!({"id": "0000000a", "session": "s1", "pid": 7, "comm": "rm",
                "cmdline": "rm /srv/prod/db\u{1b}[2J", "kind": "unlink", "target": "/srv/prod/db",
                "rule": "protect /srv/prod", "since": "2026-01-01T00:00:00Z", "cwd": "/srv",
                "risk": {"must_survive": ["the database"], "rollback": "restore the snapshot"}}),
            serde_json::json!({"id": "0000000b", "session": "s2", "pid": 8, "comm": "git",
                "cmdline": "git clean -fdx", "kind": "rmdir", "target": "/srv/prod/x",
                "rule": "protect /srv/prod", "since": "2026-01-01T00:00:01Z"}),
        ]
    }

    #[test]
    fn keys_select_cycle_scope_set_duration_and_confirm_session_approval() {
        let mut app = App::new(None);
        app.update(holds());
        assert_eq!(app.selected.as_deref(), Some("0000000a"));
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(app.selected.as_deref(), Some("0000000b"));
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected.as_deref(), Some("0000000b"));
        press(&mut app, KeyCode::Up);
        let d = press(&mut app, KeyCode::Char('a')).unwrap();
        assert_eq!((d.id.as_str(), d.scope), ("0000000a", Scope::Once));

        press(&mut app, KeyCode::Char('f'));
        for c in "2s".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.for_, Some(Duration::from_secs(2)));

        for _ in 0..3 {
            press(&mut app, KeyCode::Char('s'));
        }
        assert_eq!(app.scope, Scope::Session);
        assert_eq!(press(&mut app, KeyCode::Char('a')), None);
        assert!(matches!(app.mode, Mode::Confirm(_)));
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.mode, Mode::Normal);
        press(&mut app, KeyCode::Char('a'));
        let d = press(&mut app, KeyCode::Char('y')).unwrap();
        assert_eq!(
            (d.verdict, d.scope, d.for_),
            (Verdict::Allow, Scope::Session, Some(Duration::from_secs(2)))
        );
        // Denying needs no confirmation, whatever its scope.
        let d = press(&mut app, KeyCode::Char('d')).unwrap();
        assert_eq!(d.verdict, Verdict::Deny);

        // The selection follows its hold; a decided hold gives way to the first one.
        app.update(holds().split_off(1));
        assert_eq!(app.selected.as_deref(), Some("0000000b"));
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn the_view_shows_every_field_of_the_selected_hold_and_no_escape_sequence() {
        let mut app = App::new(None);
        app.update(holds());
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| app.draw(f)).unwrap();
        let text: String = t
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        for want in [
            "session: s1",
            "pid 7 (rm)",
            "command: rm /srv/prod/db?[2J",
            "cwd: /srv",
            "kind: unlink",
            "target: /srv/prod/db",
            "rule: protect /srv/prod",
            "must survive: the database",
            "rollback: restore the snapshot",
            "scope: once",
            "0000000b",
        ] {
            assert!(text.contains(want), "{want:?} missing from the view");
        }
        assert!(!text.contains('\u{1b}'));
    }
}
