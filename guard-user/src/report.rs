//! Tells the human and the audit log about holds and decisions: one place, so every channel
//! agrees.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::audit::AuditLog;
use crate::hold::{HoldInfo, Verdict};

/// Reports holds and decisions of one session.
pub struct Reporter {
    audit: Arc<AuditLog>,
    quiet: bool,
    /// Set after the fork (its thread must not exist when the session's init is forked).
    webhook: std::sync::OnceLock<crate::notify::Webhook>,
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "approve",
        Verdict::Deny => "deny",
    }
}

impl Reporter {
    /// A reporter writing to `audit`, and to stderr unless `quiet`.
    pub fn new(audit: Arc<AuditLog>, quiet: bool) -> Self {
        Reporter {
            audit,
            quiet,
            webhook: std::sync::OnceLock::new(),
        }
    }

    /// Gives the webhook up to `max` to deliver what is under way; records what was left.
    pub fn flush_webhook(&self, max: Duration) {
        if let Some(w) = self.webhook.get() {
            let left = w.flush(max);
            if left > 0 {
                self.record("webhook_unsent", json!({"deliveries": left}));
            }
        }
    }

    /// Also announces holds and decisions to a webhook (once; later calls are ignored).
    pub fn attach_webhook(&self, w: crate::notify::Webhook) {
        let _ = self.webhook.set(w);
    }

    /// Appends an event to the audit log; a failure is logged as a diagnostic.
    pub fn record(&self, kind: &str, v: Value) {
        let fields = match v {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        if let Err(e) = self.audit.append(kind, fields) {
            tracing::error!(error = %e, kind, "cannot write the audit log");
        }
    }

    /// A new hold waits for a human.
    pub fn held(&self, h: &HoldInfo) {
        if let Some(w) = self.webhook.get() {
            w.send("hold", json!({"event": "hold", "hold": h}));
        }
        self.record(
            "hold",
            json!({"id": h.id, "pid": h.pid, "comm": h.comm, "cmdline": h.cmdline, "op": h.kind,
                   "target": h.target, "rule": h.rule}),
        );
        if !self.quiet {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(
                e,
                "\r\nsandbox: HELD {id}: {comm} (pid {pid}) {kind} {target}\r\n\
                 sandbox:   decide: sudo sandbox approve {id}   |   sudo sandbox deny {id}\r",
                id = h.id,
                comm = h.comm,
                pid = h.pid,
                kind = h.kind,
                target = h.target
            );
        }
    }

    /// A hold was decided (by a human, a timeout, or the end of the session).
    pub fn decided(&self, h: &HoldInfo, v: Verdict, by: &str, waited: Duration) {
        if let Some(w) = self.webhook.get() {
            w.send(
                "decision",
                json!({"event": "decision", "hold": h, "decision": verdict_str(v), "by": by,
                       "waited_ms": waited.as_millis() as u64}),
            );
        }
        self.record(
            "decision",
            json!({"id": h.id, "decision": verdict_str(v), "by": by,
                   "waited_ms": waited.as_millis() as u64, "op": h.kind, "target": h.target}),
        );
        if !self.quiet {
            let _ = writeln!(
                std::io::stderr().lock(),
                "\r\nsandbox: {} {} ({}) after {:.1}s\r",
                if v == Verdict::Allow {
                    "APPROVED"
                } else {
                    "DENIED"
                },
                h.id,
                by,
                waited.as_secs_f64()
            );
        }
    }

    /// A standing decision was applied to a new operation without a new hold.
    pub fn applied(&self, h: &HoldInfo, v: Verdict, from_hold: &str) {
        self.record(
            "applied",
            json!({"decision": verdict_str(v), "from": from_hold, "pid": h.pid, "op": h.kind,
                   "target": h.target}),
        );
    }
}
