//! `sandbox serve`: nothing without the token, no cross-site decisions, strict headers; and the page
//! itself, driven in headless Chromium, approves or denies a real held `rm`.

// Tests fail loudly on any unexpected error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{have_tools, privileged, text, World};

/// A running `sandbox serve` (killed when dropped) and the URL it printed.
struct Server {
    child: Child,
    port: u16,
    token: String,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sandbox serve --listen 127.0.0.1:0` with `state` as the state directory.
fn serve(state: &std::path::Path) -> Server {
    let mut child = Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SANDBOX_STATE_DIR", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sandbox serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, q) = rest.split_once("/?token=").unwrap();
    assert!(q.len() >= 32, "a token of at least 128 bits: {q}");
    Server {
        child,
        port: port.parse().unwrap(),
        token: q.to_string(),
        url,
    }
}

/// One HTTP/1.1 request; returns (status, lower-cased head, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn serve_answers_nothing_without_the_right_token() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = serve(&tmp.path().join("state"));
    let port = srv.port;
    let wrong_same_len: String = srv
        .token
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let json = ("Content-Type", "application/json");
    let decide = r#"{"id":"0a1b2c3d","verdict":"allow"}"#;
    for bad in [
        "",
        "x",
        wrong_same_len.as_str(),
        &srv.token[..srv.token.len() - 1],
    ] {
        for path in ["/", "/api/holds", "/api/decide", "/favicon.ico", "/nothing"] {
            let q = format!("{path}?token={bad}");
            for (method, target, hdrs) in [
                ("GET", path, vec![]),
                ("GET", q.as_str(), vec![]),
                ("GET", path, vec![("X-Sandbox-Token", bad)]),
                ("POST", path, vec![("X-Sandbox-Token", bad), json]),
                ("POST", q.as_str(), vec![json]),
            ] {
                let (st, head, _) = http(port, method, target, &hdrs, decide);
                assert_eq!(st, 401, "{method} {target} with {hdrs:?}: {head}");
                assert!(head.contains("cache-control: no-store"), "{head}");
                assert!(head.contains("x-frame-options: deny"), "{head}");
            }
        }
    }
    // The right token in the URL does not authorise a POST: only the header does.
    let (st, _, _) = http(
        port,
        "POST",
        &format!("/api/decide?token={}", srv.token),
        &[json],
        decide,
    );
    assert_eq!(st, 401);

    // With the token: the page, with its strict headers.
    let (st, head, body) = http(port, "GET", &format!("/?token={}", srv.token), &[], "");
    assert_eq!(st, 200, "{head}");
    for want in [
        "content-security-policy: default-src 'self'; script-src 'nonce-",
        "x-frame-options: deny",
        "cache-control: no-store",
        "referrer-policy: no-referrer",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(want), "{want:?} missing: {head}");
    }
    let nonce = head
        .split("script-src 'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    assert!(body.contains(&format!("<script nonce=\"{nonce}\">")));
    let (st, _, body) = http(
        port,
        "GET",
        "/api/holds",
        &[("X-Sandbox-Token", &srv.token)],
        "",
    );
    assert_eq!((st, body.as_str()), (200, r#"{"holds":[]}"#));
}

#[test]
fn serve_refuses_cross_site_and_non_json_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = serve(&tmp.path().join("state"));
    let port = srv.port;
    let tok = ("X-Sandbox-Token", srv.token.as_str());
    let json = ("Content-Type", "application/json");
    let decide = r#"{"id":"0a1b2c3d","verdict":"allow"}"#;
    let post = |hdrs: &[(&str, &str)]| http(port, "POST", "/api/decide", hdrs, decide).0;
    assert_eq!(post(&[tok, json, ("Origin", "http://evil.example")]), 403);
    assert_eq!(post(&[tok, json, ("Origin", "http://127.0.0.1:1")]), 403);
    assert_eq!(post(&[tok, json, ("Origin", "null")]), 403);
    assert_eq!(post(&[tok, json, ("Sec-Fetch-Site", "cross-site")]), 403);
    assert_eq!(post(&[tok, json, ("Sec-Fetch-Site", "same-site")]), 403);
    assert_eq!(post(&[tok, ("Content-Type", "text/plain")]), 415);
    // Through every check: the hold is unknown (no session here).
    let origin = format!("http://127.0.0.1:{port}");
    assert_eq!(
        post(&[
            tok,
            json,
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin")
        ]),
        404
    );
    let (st, _, _) = http(port, "GET", "/api/decide", &[tok], "");
    assert_eq!(st, 405);
}

/// Runs the page in headless Chromium against a real held `rm`: `action` is approve or deny.
fn web_decides(action: &str, session: &str) {
    if !privileged() || !have_tools(&["chromium", "chromedriver", "python3:selenium"]) {
        return;
    }
    let w = World::new();
    let prot = w.dir("prod");
    let f = w.file("prod/db", "precious");
    let srv = serve(&w.state);
    let r = w.run(
        session,
        &[&prot],
        &[],
        &format!("rm {}; echo rc=$?", f.display()),
    );
    let h = w.wait_hold(session, Duration::from_secs(60));
    let id = h["id"].as_str().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/web_decide.py");
    let browser = Command::new("python3")
        .arg(&script)
        .args([srv.url.as_str(), id, action, "once"])
        .output()
        .expect("run python3");
    assert!(
        browser.status.success(),
        "the browser did not {action} {id}: {}",
        text(&browser)
    );
    let seen = String::from_utf8_lossy(&browser.stdout);
    assert!(seen.contains(&f.display().to_string()), "{seen}");
    assert!(seen.contains(session), "{seen}");
    let out = r.finish(Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let d = w
        .log(session)
        .into_iter()
        .find(|l| l["kind"] == "decision")
        .expect("a decision in the audit log");
    assert!(d["by"].as_str().unwrap().contains("web page"), "{d}");
    if action == "approve" {
        assert!(stdout.contains("rc=0"), "{}", text(&out));
        assert!(!f.exists());
        assert_eq!(d["decision"], "approve", "{d}");
    } else {
        assert!(stdout.contains("rc=1"), "{}", text(&out));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "precious");
        assert_eq!(d["decision"], "deny", "{d}");
    }
}

#[test]
fn web_page_approve_button_resumes_the_held_rm() {
    web_decides("approve", &format!("web-ok-{}", std::process::id()));
}

#[test]
fn web_page_deny_button_fails_the_held_rm() {
    web_decides("deny", &format!("web-no-{}", std::process::id()));
}
