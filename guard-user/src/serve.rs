//! `sandbox serve`: the web approval page.
//!
//! One page lists the pending holds of every live session (or one) and refreshes them every
//! 500 ms from `GET /api/holds` (the same JSON as `sandbox pending --json`); its buttons
//! approve or deny with a scope and an optional duration through `POST /api/decide`, which goes
//! the way `sandbox approve` goes ([`control::decide`], audited as `root via web page`).
//!
//! Access needs the secret token (256 random bits) printed at start as
//! `http://ADDR/?token=...`: every request without it gets 401, whatever the path. The page
//! sends it in the `X-Sandbox-Token` header (never a cookie, so the browser never adds it to
//! another site's request); `POST /api/decide` accepts it only there, refuses a cross-site
//! `Origin` or `Sec-Fetch-Site`, and takes only `application/json`. Every answer carries a strict
//! Content-Security-Policy (the page's one inline script and style run by nonce),
//! `X-Frame-Options: DENY`, `Cache-Control: no-store` and `Referrer-Policy: no-referrer` (the
//! token is in the page's URL). The page writes hold fields with `textContent` only: command
//! lines come from the agent.
//!
//! `--unix PATH` listens on a Unix socket (mode 0600) instead, for a reverse proxy; the token is
//! still required.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::{self, ControlError, Via};
use crate::hold::{Scope, Verdict};

/// Options of `sandbox serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the URL printed says which).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Listen on this Unix socket instead (for a reverse proxy); the token is still required.
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub unix: Option<PathBuf>,
    /// Only this session.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
}

/// Errors of `sandbox serve`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Setting up the listener or the runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The largest request body taken (a decision is a few dozen bytes).
const MAX_BODY: usize = 16 * 1024;

struct State {
    token: String,
    session: Option<String>,
}

/// Runs `sandbox serve` until killed.
pub fn cmd_serve(args: &ServeArgs) -> Result<u8, ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ServeError::Io { what, source }
    };
    let token = random_token().map_err(io("read random bytes"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start the runtime"))?;
    let state = Arc::new(State {
        token,
        session: args.session.clone(),
    });
    rt.block_on(async move {
        use std::io::Write;
        match &args.unix {
            Some(path) => {
                remove_stale_socket(path);
                let l = tokio::net::UnixListener::bind(path)
                    .map_err(io(&format!("listen on {}", path.display())))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&format!("chmod {}", path.display())))?;
                println!(
                    "sandbox serve: listening on unix:{}; open /?token={} through your proxy",
                    path.display(),
                    state.token
                );
                let _ = std::io::stdout().flush();
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    spawn_conn(TokioIo::new(s), state.clone());
                }
            }
            None => {
                let l = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .map_err(io(&format!("listen on {}", args.listen)))?;
                let addr = l.local_addr().map_err(io("local address"))?;
                println!(
                    "sandbox serve: open http://{addr}/?token={} (only with the token)",
                    state.token
                );
                let _ = std::io::stdout().flush();
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    spawn_conn(TokioIo::new(s), state.clone());
                }
            }
        }
    })
}

fn remove_stale_socket(path: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn spawn_conn<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let st = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&st, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(io, svc)
            .await;
    });
}

/// 32 bytes from the kernel's random pool, in hex.
fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: the pointer and length describe the unfilled rest of `b`.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (the length is not secret).
fn same_token(given: &[u8], token: &[u8]) -> bool {
    if given.len() != token.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(token)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The token of a request: the `X-Sandbox-Token` header, or (`query_ok`) `?token=`.
fn token_of<B>(req: &Request<B>, query_ok: bool) -> Option<Vec<u8>> {
    if let Some(v) = req.headers().get("x-sandbox-token") {
        return Some(v.as_bytes().to_vec());
    }
    if !query_ok {
        return None;
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(|t| t.as_bytes().to_vec()))
}

/// Whether a state-changing request comes from the page itself: `Sec-Fetch-Site` (when sent)
/// is same-origin, and `Origin` (when sent) names the host the request was sent to.
fn same_origin<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return false;
        }
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        return rest.eq_ignore_ascii_case(host);
    }
    true
}

/// A response with the headers every answer carries.
fn respond(
    status: StatusCode,
    ctype: &str,
    body: Bytes,
    nonce: Option<&str>,
) -> Response<Full<Bytes>> {
    let csp = match nonce {
        Some(n) => format!(
            "default-src 'self'; script-src 'nonce-{n}'; style-src 'nonce-{n}'; \
             connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        ),
        None => "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            .to_string(),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mut set = |k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, ctype);
    set(header::CONTENT_SECURITY_POLICY, &csp);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    r
}

fn json_answer(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", Bytes::from(v.to_string()), None)
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_answer(status, json!({"error": msg}))
}

/// A decision as the page posts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    id: String,
    verdict: Verdict,
    #[serde(default)]
    scope: Option<Scope>,
    /// A duration such as `2s` or `10m`; empty or absent: none.
    #[serde(default, rename = "for")]
    for_: Option<String>,
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let is_post = req.method() == Method::POST;
    // The token first, whatever the path: nothing is answered without it.
    let ok = token_of(&req, !is_post).is_some_and(|t| same_token(&t, st.token.as_bytes()));
    if !ok {
        return error(StatusCode::UNAUTHORIZED, "the token is missing or wrong");
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/") => {
            let nonce = match random_token() {
                Ok(n) => n,
                Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "no randomness"),
            };
            let page = PAGE.replace("{{NONCE}}", &nonce);
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                Bytes::from(page),
                Some(&nonce),
            )
        }
        (Method::GET, "/api/holds") => {
            let session = st.session.clone();
            match tokio::task::spawn_blocking(move || control::all_pending(session.as_deref()))
                .await
            {
                Ok(Ok(v)) => json_answer(StatusCode::OK, json!({"holds": v})),
                Ok(Err(e)) => {
                    json_answer(StatusCode::OK, json!({"holds": [], "error": e.to_string()}))
                }
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "listing failed"),
            }
        }
        (Method::POST, "/api/decide") => {
            if !same_origin(&req) {
                return error(StatusCode::FORBIDDEN, "cross-site request refused");
            }
            let json_ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().starts_with("application/json"));
            if !json_ct {
                return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
            }
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let d: DecideBody = match serde_json::from_slice(&body) {
                Ok(d) => d,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad decision: {e}")),
            };
            let for_ = match d.for_.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => match crate::hold::parse_duration(s) {
                    Ok(t) => Some(t),
                    Err(e) => return error(StatusCode::BAD_REQUEST, &e),
                },
            };
            let (id, verdict, scope) = (d.id, d.verdict, d.scope);
            let id2 = id.clone();
            match tokio::task::spawn_blocking(move || {
                control::decide(&id2, verdict, scope, for_, Via::Web)
            })
            .await
            {
                Ok(Ok(n)) => json_answer(
                    StatusCode::OK,
                    json!({"decided": control::decided_line(&id, verdict, n)}),
                ),
                Ok(Err(e @ ControlError::UnknownHold(_))) => {
                    error(StatusCode::NOT_FOUND, &e.to_string())
                }
                Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "decision failed"),
            }
        }
        (_, "/" | "/api/holds" | "/api/decide") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The page. `{{NONCE}}` is replaced per response. Hold fields are only ever set with
/// `textContent`.
const PAGE: &str = include_str!("serve_page.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_hex_and_compared_whole() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(t, random_token().unwrap());
        assert!(same_token(t.as_bytes(), t.as_bytes()));
        assert!(!same_token(&t.as_bytes()[..63], t.as_bytes()));
        let mut wrong = t.clone().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(!same_token(&wrong, t.as_bytes()));
    }

    #[test]
    fn the_page_writes_hold_fields_as_text_only() {
        assert!(!PAGE.contains("innerHTML"));
        assert!(!PAGE.contains("outerHTML"));
        assert!(!PAGE.contains("insertAdjacentHTML"));
        assert!(!PAGE.contains("document.write"));
        assert!(PAGE.contains("<script nonce=\"{{NONCE}}\">"));
    }
}
