//! Webhooks: a signed JSON POST for each new hold and each decision (`[notify] webhook`).
//!
//! Deliveries run on a thread of their own and never hold anything up: a hold is held, and a
//! decision carried out, whether or not the receiver answers. A failed delivery is retried with
//! backoff (0.5, 1, 2, 4 s; five attempts, 10 s each) and, if it never succeeds, recorded in the
//! audit log (`webhook_failed`).
//!
//! Each body is signed with HMAC-SHA256 under the key in `webhook_secret_file`:
//! `X-Sandbox-Signature: sha256=<hex>` over the exact body bytes; `X-Sandbox-Event` is `hold`
//! or `decision`, `X-Sandbox-Delivery` a unique id.
//!
//! Desktop notifications ([`desktop`]) are the watcher's side: `sandbox watch` runs
//! `notify-send` for each new hold when a graphical session is present.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;

use crate::audit::AuditLog;

/// Attempts per delivery.
const ATTEMPTS: u32 = 5;
/// Time allowed for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Signs `body` with `key`: the value of `X-Sandbox-Signature`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let out = mac.finalize().into_bytes();
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A running webhook sender.
pub struct Webhook {
    tx: tokio::sync::mpsc::UnboundedSender<(&'static str, Value)>,
    /// Deliveries queued or under way.
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl Webhook {
    /// Starts the sender for `url`, signing with `key`; failures go to `audit`.
    pub fn start(url: String, key: Vec<u8>, audit: Arc<AuditLog>) -> std::io::Result<Webhook> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, Value)>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let key = Arc::new(key);
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let busy2 = busy.clone();
        std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                rt.block_on(async move {
                    let tls = Arc::new(tls_config());
                    while let Some((event, body)) = rx.recv().await {
                        let (uri, key, audit, tls, busy) = (
                            uri.clone(),
                            key.clone(),
                            audit.clone(),
                            tls.clone(),
                            busy2.clone(),
                        );
                        tokio::spawn(async move {
                            deliver(&uri, &key, &tls, event, body, &audit).await;
                            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        });
                    }
                });
            })?;
        Ok(Webhook { tx, busy })
    }

    /// Queues a delivery (never blocks).
    pub fn send(&self, event: &'static str, body: Value) {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.tx.send((event, body)).is_err() {
            self.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits (at most `max`) for the deliveries under way, so the last decisions of a session
    /// that is ending still go out. Returns how many did not finish.
    pub fn flush(&self, max: Duration) -> usize {
        let t0 = std::time::Instant::now();
        loop {
            let n = self.busy.load(std::sync::atomic::Ordering::SeqCst);
            if n == 0 || t0.elapsed() >= max {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // Only an empty provider could fail here; ring's is not.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

async fn deliver(
    uri: &http::Uri,
    key: &[u8],
    tls: &Arc<rustls::ClientConfig>,
    event: &'static str,
    body: Value,
    audit: &AuditLog,
) {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let sig = signature(key, &bytes);
    let delivery = crate::hold::new_id();
    let mut last = String::new();
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            post(uri, tls, event, &sig, &delivery, bytes.clone()),
        )
        .await
        {
            Ok(Ok(status)) if (200..300).contains(&status) => return,
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(event, error = %last, "webhook delivery failed");
    let mut m = serde_json::Map::new();
    m.insert("event".into(), event.into());
    m.insert("url".into(), uri.to_string().into());
    m.insert("error".into(), last.into());
    m.insert("attempts".into(), ATTEMPTS.into());
    m.insert("delivery".into(), delivery.into());
    let _ = audit.append("webhook_failed", m);
}

async fn post(
    uri: &http::Uri,
    tls: &Arc<rustls::ClientConfig>,
    event: &str,
    sig: &str,
    delivery: &str,
    body: Bytes,
) -> Result<u16, String> {
    let host = uri.host().ok_or("no host")?.to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp =
        tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| e.to_string())?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    let req = http::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-sandbox-event", event)
        .header("x-sandbox-signature", sig)
        .header("x-sandbox-delivery", delivery)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let status = if https {
        let name =
            rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let io = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        send(TokioIo::new(io), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(status)
}

async fn send<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut s, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Shows a desktop notification for a new hold (its JSON, as the control socket reports it) when
/// a graphical session is present (`DISPLAY` or `WAYLAND_DISPLAY` set, `notify-send` on `PATH`).
/// Never waits: `notify-send` runs in the background and is reaped by a thread; failures are
/// ignored. Returns whether it was started. `env` looks up environment variables (the real
/// environment in `sandbox watch`, a fake one in tests).
pub fn desktop(hold: &Value, env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|k| env(k).is_some_and(|v| !v.is_empty()));
    if !graphical {
        return false;
    }
    let Some(exe) = env("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("notify-send"))
            .find(|p| is_executable(p))
    }) else {
        return false;
    };
    let s = |k: &str| hold.get(k).and_then(|v| v.as_str()).unwrap_or("");
    // Servers render a subset of HTML in the body: the agent's strings are escaped.
    let body = markup_escape(&format!(
        "{} (pid {}) {} {}\nsession {}: sudo sandbox approve {} | deny {}",
        s("comm"),
        hold.get("pid").and_then(|v| v.as_u64()).unwrap_or(0),
        s("kind"),
        s("target"),
        s("session"),
        s("id"),
        s("id"),
    ));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--app-name=sandbox", "--urgency=critical", "--"])
        .arg(format!("sandbox: HELD {}", s("id")))
        .arg(body)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for k in [
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
    ] {
        match env(k) {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    match cmd.spawn() {
        Ok(mut child) => {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "notify-send failed");
            false
        }
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn markup_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desktop_notification_runs_notify_send_only_in_a_graphical_session() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("args");
        let fake = dir.path().join("notify-send");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$DISPLAY\" \"$@\" > {}.tmp && mv {}.tmp {}\n",
                out.display(),
                out.display(),
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hold = serde_json::json!({"id": "0a1b2c3d", "session": "s1", "pid": 42,
            "comm": "rm", "kind": "unlink", "target": "/srv/prod/<b>db</b>"});
        let path = dir.path().as_os_str().to_owned();
        let no_display = |k: &str| (k == "PATH").then(|| path.clone());
        assert!(!desktop(&hold, &no_display));
        let empty_path = |k: &str| (k == "DISPLAY").then(|| ":0".into());
        assert!(!desktop(&hold, &empty_path));
        let env = |k: &str| match k {
            "PATH" => Some(path.clone()),
            "DISPLAY" => Some(":7".into()),
            _ => None,
        };
        let t0 = std::time::Instant::now();
        assert!(desktop(&hold, &env));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "it waited for notify-send"
        );
        let mut got = String::new();
        for _ in 0..500 {
            if let Ok(s) = std::fs::read_to_string(&out) {
                got = s;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.first(), Some(&":7"), "{got}");
        assert!(lines.contains(&"sandbox: HELD 0a1b2c3d"), "{got}");
        assert!(
            got.contains("rm (pid 42) unlink /srv/prod/&lt;b&gt;db&lt;/b&gt;"),
            "{got}"
        );
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
