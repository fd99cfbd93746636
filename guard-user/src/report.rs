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
    /// Set at the first failed audit write (the human is told once, on stderr).
    audit_failed: std::sync::atomic::AtomicBool,
}

/// Why an operation is denied when its hold or decision cannot be written to the audit log.
pub const UNRECORDED: &str = "audit log unwritable";

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
            audit_failed: std::sync::atomic::AtomicBool::new(false),
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

    /// Appends an event to the audit log; a failure is logged as a diagnostic (and said once
    /// on stderr). Returns whether the line was written.
    pub fn record(&self, kind: &str, v: Value) -> bool {
        match self.try_record(kind, v) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, kind, "cannot write the audit log");
                if !self
                    .audit_failed
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    // Said even when quiet: from now on every hold is denied, and the human
                    // must know why.
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "\r\nsandbox: cannot write the audit log ({e}): every held operation is denied from now on\r"
                    );
                }
                false
            }
        }
    }

    /// Appends an event to the audit log.
    pub fn try_record(&self, kind: &str, v: Value) -> Result<(), crate::audit::AuditError> {
        let fields = match v {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        self.audit.append(kind, fields)
    }

    /// The kernel refused `new` operations (EPERM) without holding them, because it could not
    /// report the holds (the LSM backend's hold queue was full: the supervisor did not read it
    /// in time); `total` in this session. Recorded, and said on stderr even when quiet.
    pub fn refused_unreported(&self, new: u64, total: u64) {
        self.record(
            "refused_unreported",
            json!({
                "count": new,
                "total": total,
                "reason": "the kernel's queue of holds was full: the operations failed with EPERM and nobody was asked",
            }),
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "\r\nsandbox: {new} operation(s) refused (EPERM) without a hold: the kernel's queue of holds was full\r"
        );
    }

    /// A process stopped at exec for a check was continued by the kernel (a SIGCONT the sandbox
    /// did not send: its process group became orphaned, or its terminal hung up) and not
    /// stopped again before the supervisor came to it (its parent takes no SIGCHLD stop
    /// reports), so it may have run unchecked: `killed` now, or already gone. Recorded, and said
    /// on stderr even when quiet.
    pub fn exec_continued(&self, pid: u32, filename: &str, killed: bool) {
        self.record(
            "exec_continued",
            json!({
                "pid": pid,
                "filename": filename,
                "killed": killed,
                "reason": "a SIGCONT from the kernel (orphaned process group or terminal hang-up) continued it before the check, and its parent ignores SIGCHLD stop reports, so it could not be stopped again",
            }),
        );
        let what = if killed {
            "killed"
        } else {
            "it had already ended"
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "\r\nsandbox: {filename} (pid {pid}) was continued by the kernel before its check and may have run: {what}\r"
        );
    }

    /// A new hold waits for a human. Returns false when the hold could not be written to the
    /// audit log: the caller must then deny it at once (fail closed; see [`UNRECORDED`]).
    #[must_use = "a hold that is not in the audit log must be denied"]
    pub fn held(&self, h: &HoldInfo) -> bool {
        if let Some(w) = self.webhook.get() {
            w.send("hold", json!({"event": "hold", "hold": h}));
        }
        if !self.record(
            "hold",
            json!({"id": h.id, "pid": h.pid, "comm": h.comm, "cmdline": h.cmdline, "op": h.kind,
                   "target": h.target, "rule": h.rule}),
        ) {
            return false;
        }
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
        true
    }

    /// A hold was decided (by a human, a timeout, or the end of the session). Returns whether
    /// the decision was written to the audit log: when it was not, the caller carries out a
    /// denial whatever was decided (fail closed), as the human is told here.
    #[must_use = "an approval that is not in the audit log must not be carried out"]
    pub fn decided(&self, h: &HoldInfo, v: Verdict, by: &str, waited: Duration) -> bool {
        if let Some(w) = self.webhook.get() {
            w.send(
                "decision",
                json!({"event": "decision", "hold": h, "decision": verdict_str(v), "by": by,
                       "waited_ms": waited.as_millis() as u64}),
            );
        }
        let recorded = self.record(
            "decision",
            json!({"id": h.id, "decision": verdict_str(v), "by": by,
                   "waited_ms": waited.as_millis() as u64, "op": h.kind, "target": h.target}),
        );
        let (v, by) = match recorded {
            true => (v, by),
            false => (Verdict::Deny, UNRECORDED),
        };
        // Said even when quiet: the human decided one thing and another happened.
        if !self.quiet || !recorded {
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
        recorded
    }

    /// A standing decision was applied to a new operation without a new hold. Returns the
    /// verdict to carry out: an approval that cannot be written to the audit log is a denial.
    #[must_use = "an approval that is not in the audit log must not be carried out"]
    pub fn applied(&self, h: &HoldInfo, v: Verdict, from_hold: &str) -> Verdict {
        match self.record(
            "applied",
            json!({"decision": verdict_str(v), "from": from_hold, "pid": h.pid, "op": h.kind,
                   "target": h.target}),
        ) {
            true => v,
            false => Verdict::Deny,
        }
    }
}
