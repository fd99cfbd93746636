//! The HTTP request classifier: an HTTP/1-style request (`METHOD TARGET`, header lines, a blank
//! line, the body) classified against the built-in catalogue, as the proxy does it.
#![no_main]

use std::sync::OnceLock;

use guard_user::proxy::rules::{self, Catalogue, Request};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| {
        Catalogue::parse_builtin("cloud-deletes")
            .expect("the built-in catalogue exists")
            .expect("the built-in catalogue parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let Some(first) = lines.next() else {
        return;
    };
    let mut parts = first.splitn(3, ' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    if http::Method::from_bytes(method.as_bytes()).is_err() || !target.starts_with('/') {
        return;
    }
    let mut headers = HeaderMap::new();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => host,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let probe = Request {
        method,
        host: &host,
        path,
        query,
        headers: &headers,
        body: &[],
    };
    let c = catalogue();
    let _ = c.needs_body(&probe);
    let req = Request { body, ..probe };
    if let Some(m) = c.classify(&req) {
        let _ = rules::denied_response(&req, "h-1", &m.description);
    }
    let _ = rules::aws_scope(&req);
});
