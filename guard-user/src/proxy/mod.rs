//! The egress proxy: in `--net proxy` mode the session's network namespace has only loopback, and
//! the one way out is this proxy, listening inside that namespace and connecting out from the
//! host's.
//!
//! - Hosts in the profile's `allow` list are tunnelled untouched (CONNECT) or forwarded (plain
//!   HTTP).
//! - Hosts matching `inspect` are TLS-intercepted with the session's CA; every request is
//!   classified against the hold catalogues, and a match waits for a human: approved, it goes
//!   upstream and the response comes back unchanged; denied or timed out, the client gets a 403
//!   that says so (AWS-shaped for AWS clients).
//! - Other hosts get a 403, or with `unknown_hosts = "hold"` wait for a human like a network
//!   permission prompt.

pub mod ca;
pub mod rules;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

use crate::hold::{Admission, HoldBackend, HoldInfo, Holds, ProcKey, Verdict};
use crate::profile::UnknownHosts;
use crate::report::Reporter;

/// The port the proxy listens on inside the session's network namespace (127.0.0.1). The
/// namespace is the session's own, so the port never collides with anything.
pub const PORT: u16 = 3128;

/// The largest request body buffered to classify a request (form-encoded AWS calls and the
/// like are small; a larger one is refused rather than forwarded unclassified).
const MAX_CLASSIFIED_BODY: usize = 32 << 20;

/// How long connecting upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

type Body = BoxBody<Bytes, hyper::Error>;

/// Error setting the proxy up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A rule catalogue the profile names does not exist.
    #[error("rule catalogue {0:?} not found (looked for {1}, and among the built-in ones)")]
    NoCatalogue(String, String),
    /// A rule catalogue is malformed.
    #[error("rule catalogue {0}")]
    BadCatalogue(String),
    /// A CA file for upstream verification could not be used.
    #[error("upstream CA {path}: {why}")]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The session CA could not be made.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A system call.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let what = what.into();
    move |source| ProxyError::Io { what, source }
}

/// Loads the catalogues `names`: `rules/NAME.toml` in the profile directories (in order), else
/// the built-in one of that name.
pub fn load_catalogues(names: &[String], dirs: &[PathBuf]) -> Result<rules::Catalogue, ProxyError> {
    let mut all = rules::Catalogue::default();
    for name in names {
        let mut found = None;
        for d in dirs {
            let p = d.join("rules").join(format!("{name}.toml"));
            if p.is_file() {
                let text =
                    std::fs::read_to_string(&p).map_err(io_err(format!("read {}", p.display())))?;
                found = Some(
                    rules::Catalogue::parse(&p.display().to_string(), &text)
                        .map_err(ProxyError::BadCatalogue)?,
                );
                break;
            }
        }
        let cat = match found {
            Some(c) => c,
            None => match rules::Catalogue::parse_builtin(name) {
                Some(parsed) => parsed.map_err(ProxyError::BadCatalogue)?,
                None => {
                    let looked: Vec<String> = dirs
                        .iter()
                        .map(|d| {
                            d.join("rules")
                                .join(format!("{name}.toml"))
                                .display()
                                .to_string()
                        })
                        .collect();
                    return Err(ProxyError::NoCatalogue(name.clone(), looked.join(", ")));
                }
            },
        };
        all.extend(cat);
    }
    Ok(all)
}

/// What the proxy lets through, intercepts and holds.
pub struct Config {
    /// Session name.
    pub session: String,
    /// Hosts tunnelled untouched.
    pub allow: Vec<String>,
    /// Hosts whose TLS is intercepted and whose requests are classified.
    pub inspect: Vec<String>,
    /// Hosts in neither list.
    pub unknown_hosts: UnknownHosts,
    /// The hold rules.
    pub catalogue: rules::Catalogue,
    /// Extra CAs (PEM files) trusted for upstream TLS, besides the system roots.
    pub upstream_ca: Vec<PathBuf>,
    /// The session cgroup directory (to find which process made a request).
    pub cgroup: PathBuf,
}

/// How a host is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostClass {
    /// Tunnelled untouched.
    Allow,
    /// TLS-intercepted and classified.
    Inspect,
    /// In neither list.
    Unknown,
}

/// Whether `host` (lower case, no port) matches `pattern` (`*`, `*.example.com` for any
/// subdomain, or an exact name or address).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && host.ends_with(suffix) && {
                host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
        None => pattern == host,
    }
}

impl Config {
    /// The class of `host`: `inspect` wins over `allow` (a host named in both is inspected).
    pub fn class(&self, host: &str) -> HostClass {
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self.inspect.iter().any(|p| host_matches(p, host)) {
            HostClass::Inspect
        } else if self.allow.iter().any(|p| host_matches(p, host)) {
            HostClass::Allow
        } else {
            HostClass::Unknown
        }
    }
}

/// The proxy of one session.
pub struct Proxy {
    cfg: Config,
    ca: ca::SessionCa,
    holds: Holds<oneshot::Sender<Verdict>>,
    report: Arc<Reporter>,
    /// The profile's upstream CAs, read at start (a bad file stops the session from starting).
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Upstream TLS (the system roots plus `extra_roots`), made on first use: reading the
    /// system's roots costs milliseconds that sessions without inspected hosts need not pay.
    upstream_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

impl HoldBackend for Proxy {
    type Op = oneshot::Sender<Verdict>;

    fn holds(&self) -> &Holds<Self::Op> {
        &self.holds
    }

    fn reporter(&self) -> &Reporter {
        &self.report
    }

    fn carry_out(&self, op: Self::Op, verdict: Verdict) {
        // The client may have gone away meanwhile: nothing to carry out then.
        let _ = op.send(verdict);
    }
}

impl Proxy {
    /// Makes the session CA and the upstream TLS configuration.
    pub fn new(cfg: Config, report: Arc<Reporter>) -> Result<Proxy, ProxyError> {
        let ca = ca::SessionCa::new(&cfg.session)?;
        let mut extra_roots = Vec::new();
        for p in &cfg.upstream_ca {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(p)
                .map_err(|e| ProxyError::UpstreamCa {
                    path: p.clone(),
                    why: e.to_string(),
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| ProxyError::UpstreamCa {
                    path: p.clone(),
                    why: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ProxyError::UpstreamCa {
                    path: p.clone(),
                    why: "no PEM certificate in it".into(),
                });
            }
            let mut probe = rustls::RootCertStore::empty();
            for c in certs {
                probe.add(c.clone()).map_err(|e| ProxyError::UpstreamCa {
                    path: p.clone(),
                    why: e.to_string(),
                })?;
                extra_roots.push(c);
            }
        }
        Ok(Proxy {
            cfg,
            ca,
            holds: Holds::default(),
            report,
            extra_roots,
            upstream_tls: std::sync::OnceLock::new(),
        })
    }

    /// The upstream TLS configuration (made on first use).
    fn upstream_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = self.upstream_tls.get() {
            return Ok(c.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot parse is skipped, like every TLS client does.
            let _ = roots.add(c);
        }
        for c in &self.extra_roots {
            roots.add(c.clone()).map_err(|e| e.to_string())?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(self.upstream_tls.get_or_init(|| Arc::new(tls)).clone())
    }

    /// How many hold rules the proxy applies.
    pub fn rule_count(&self) -> usize {
        self.cfg.catalogue.len()
    }

    /// The session CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Serves `listener` (the proxy port, bound inside the session's network namespace) and the
    /// `forwards` (listeners inside the namespace for `hold_connect` endpoints, each with the
    /// endpoint it leads to) on a thread of its own until `stop` is sent or dropped.
    pub fn serve(
        self: Arc<Self>,
        listener: StdListener,
        forwards: Vec<(StdListener, SocketAddr)>,
        stop: oneshot::Receiver<()>,
    ) -> Result<std::thread::JoinHandle<()>, ProxyError> {
        listener
            .set_nonblocking(true)
            .map_err(io_err("proxy listener"))?;
        for (l, _) in &forwards {
            l.set_nonblocking(true)
                .map_err(io_err("forward listener"))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy")
            .enable_all()
            .build()
            .map_err(io_err("proxy runtime"))?;
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "proxy listener");
                            return;
                        }
                    };
                    for (l, target) in forwards {
                        let me = self.clone();
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(async move {
                                    loop {
                                        match l.accept().await {
                                            Ok((tcp, peer)) => {
                                                tokio::spawn(me.clone().forward(tcp, peer, target));
                                            }
                                            Err(e) => {
                                                tracing::warn!(error = %e, "forward accept");
                                                tokio::time::sleep(Duration::from_millis(10)).await;
                                            }
                                        }
                                    }
                                });
                            }
                            Err(e) => tracing::error!(error = %e, "forward listener"),
                        }
                    }
                    let accept = async {
                        loop {
                            match listener.accept().await {
                                Ok((tcp, peer)) => {
                                    let _ = tcp.set_nodelay(true);
                                    tokio::spawn(self.clone().client(tcp, peer));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "proxy accept");
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stop => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(io_err("spawn proxy thread"))
    }

    /// A connection to a `hold_connect` endpoint, through its forwarded port: held before
    /// anything reaches the endpoint. Approved, the proxy connects and relays; denied, the
    /// connection is reset.
    async fn forward(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, target: SocketAddr) {
        let t = target.to_string();
        let (v, _) = self
            .hold(
                "connect",
                t.clone(),
                "network.hold_connect".into(),
                None,
                PathBuf::from(format!("/connect/{t}")),
                peer,
            )
            .await;
        if v == Verdict::Deny {
            // A reset, not an orderly close: the client sees "connection reset".
            reset(tcp);
            return;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(mut up)) => {
                let _ = up.set_nodelay(true);
                let mut tcp = tcp;
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
            }
            _ => {
                reset(tcp);
            }
        }
    }

    /// One connection from inside the sandbox: HTTP/1.1 proxy requests (CONNECT or absolute-form).
    async fn client(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let me = self.clone();
        let svc = service_fn(move |req| me.clone().front(req, peer));
        let conn = hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .serve_connection(TokioIo::new(tcp), svc)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "proxy client connection");
        }
    }

    async fn front(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        if req.method() == Method::CONNECT {
            return Ok(self.connect(req, peer).await);
        }
        let Some((host, port)) = authority(req.uri(), 80) else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "sandbox proxy: expected an absolute URL (http://host/...) or CONNECT\n",
            ));
        };
        if req.uri().scheme_str() != Some("http") {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "sandbox proxy: only http:// URLs are proxied without CONNECT\n",
            ));
        }
        match self.cfg.class(&host) {
            HostClass::Unknown => {
                if let Err(r) = self.admit_unknown(&host, port, peer).await {
                    return Ok(r);
                }
                Ok(self.forward_plain(req, &host, port).await)
            }
            HostClass::Allow => Ok(self.forward_plain(req, &host, port).await),
            HostClass::Inspect => {
                let up = Upstream::plain(host.clone(), port);
                Ok(self.inspect(req, &up, &host, "http", peer).await)
            }
        }
    }

    /// A host in neither list: refused, or held like a permission prompt.
    async fn admit_unknown(
        &self,
        host: &str,
        port: u16,
        peer: SocketAddr,
    ) -> Result<(), Response<Body>> {
        match self.cfg.unknown_hosts {
            UnknownHosts::Deny => Err(text(
                StatusCode::FORBIDDEN,
                &format!(
                    "sandbox: {host} is not in the session profile's network allow or inspect list; connection refused\n"
                ),
            )),
            UnknownHosts::Hold => {
                let target = format!("{host}:{port}");
                let v = self
                    .hold(
                        "connect",
                        target.clone(),
                        "network.unknown_hosts".into(),
                        None,
                        PathBuf::from(format!("/connect/{target}")),
                        peer,
                    )
                    .await;
                match v.0 {
                    Verdict::Allow => Ok(()),
                    Verdict::Deny => Err(text(
                        StatusCode::FORBIDDEN,
                        &format!("sandbox: connecting to {target} was held by the sandbox policy and denied\n"),
                    )),
                }
            }
        }
    }

    async fn connect(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let Some((host, port)) = authority(req.uri(), 443) else {
            return text(
                StatusCode::BAD_REQUEST,
                "sandbox proxy: CONNECT needs host:port\n",
            );
        };
        let class = self.cfg.class(&host);
        if class == HostClass::Unknown {
            if let Err(r) = self.admit_unknown(&host, port, peer).await {
                return r;
            }
        }
        if class == HostClass::Inspect {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(up) => self.intercept(TokioIo::new(up), host, port, peer).await,
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade"),
                }
            });
            return empty(StatusCode::OK);
        }
        // Tunnelled untouched: connect first, so a failure is an honest 502.
        let upstream = match dial(&host, port).await {
            Ok(s) => s,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("sandbox proxy: cannot connect to {host}:{port}: {e}\n"),
                )
            }
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut client = TokioIo::new(up);
                let mut upstream = upstream;
                // A tunnel carries TLS for the host it was opened to: a ClientHello naming
                // another host (CONNECT to an allowed address, TLS to an inspected or unlisted
                // name) would get around the lists, so it is cut off.
                let first = match first_client_hello(&mut client).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(error = %e, host, "tunnel start");
                        return;
                    }
                };
                if let Some(name) = &first.sni {
                    if self.cfg.class(name) != HostClass::Allow && !name.eq_ignore_ascii_case(&host)
                    {
                        self.report.record(
                            "tunnel_refused",
                            serde_json::json!({"connect": format!("{host}:{port}"), "sni": name,
                                               "why": "the TLS server name is not an allowed host"}),
                        );
                        return;
                    }
                }
                use tokio::io::AsyncWriteExt;
                if upstream.write_all(&first.bytes).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        empty(StatusCode::OK)
    }

    /// A CONNECT to an inspected host: TLS towards the client with a certificate of the session
    /// CA, the same protocol (h2 or HTTP/1.1) as the upstream server chose.
    async fn intercept<I>(self: Arc<Self>, io: I, host: String, port: u16, peer: SocketAddr)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let up = Upstream::tls(host.clone(), port);
        // Connect upstream first to learn its protocol; if that fails the client still gets
        // TLS and then a 502 per request, which says why.
        let proto = match up.ready(&self).await {
            Ok(p) => p,
            Err(_) => Proto::H1,
        };
        let alpn = match proto {
            Proto::H2 => vec![b"h2".to_vec()],
            Proto::H1 => vec![b"http/1.1".to_vec()],
        };
        let cfg = match self
            .ca
            .server_config(host.trim_start_matches('[').trim_end_matches(']'), &alpn)
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, host, "session CA");
                return;
            }
        };
        let tls = match tokio_rustls::TlsAcceptor::from(cfg).accept(io).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, host, "client TLS");
                return;
            }
        };
        let up = Arc::new(up);
        let me = self.clone();
        let h = host.clone();
        let svc = service_fn(move |req| {
            let (me, up, h) = (me.clone(), up.clone(), h.clone());
            async move {
                Ok::<_, std::convert::Infallible>(me.inspect(req, &up, &h, "https", peer).await)
            }
        });
        let io = TokioIo::new(tls);
        let r = match proto {
            Proto::H2 => {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            }
            Proto::H1 => {
                hyper::server::conn::http1::Builder::new()
                    .preserve_header_case(true)
                    .serve_connection(io, svc)
                    .await
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, host, "intercepted connection");
        }
    }

    /// Classifies one request to an inspected host, holds it if a rule matches, and forwards it
    /// unless denied.
    async fn inspect(
        &self,
        req: Request<Incoming>,
        up: &Upstream,
        host: &str,
        scheme: &str,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let host_l = host.to_ascii_lowercase();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().map(str::to_string);
        let probe = rules::Request {
            method: parts.method.as_str(),
            host: &host_l,
            path: &path,
            query: query.as_deref(),
            headers: &parts.headers,
            body: &[],
        };
        let (body, buffered): (Body, Option<Bytes>) = if self.cfg.catalogue.needs_body(&probe) {
            match Limited::new(body, MAX_CLASSIFIED_BODY).collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    (full(b.clone()), Some(b))
                }
                Err(e) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("sandbox proxy: the request body could not be read to classify it ({e}); not forwarded\n"),
                    )
                }
            }
        } else {
            (body.boxed(), None)
        };
        let r = rules::Request {
            body: buffered.as_deref().unwrap_or(&[]),
            ..probe
        };
        if let Some(m) = self.cfg.catalogue.classify(&r) {
            let url = display_url(scheme, host, up.port, &parts.uri);
            let target = format!("{} {}", parts.method, url);
            let (v, hold_id) = self
                .hold(
                    "http",
                    target,
                    m.rule.clone(),
                    Some(m.description.clone()),
                    PathBuf::from(format!("/{scheme}/{host_l}{path}")),
                    peer,
                )
                .await;
            if v == Verdict::Deny {
                let (status, ctype, text) = rules::denied_response(&r, &hold_id, &m.description);
                return Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, ctype)
                    .header("x-sandbox-hold", "denied")
                    .body(full(Bytes::from(text)))
                    .unwrap_or_else(|_| empty(StatusCode::FORBIDDEN));
            }
        }
        let req = Request::from_parts(parts, body);
        match up.send(self, req).await {
            Ok(resp) => resp.map(|b| b.boxed()),
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                &format!("sandbox proxy: upstream {host}:{}: {e}\n", up.port),
            ),
        }
    }

    /// A plain-HTTP request to an allowed (or admitted) host: forwarded as it is.
    async fn forward_plain(&self, req: Request<Incoming>, host: &str, port: u16) -> Response<Body> {
        let up = Upstream::plain(host.to_string(), port);
        let req = req.map(|b| b.boxed());
        match up.send(self, req).await {
            Ok(resp) => resp.map(|b| b.boxed()),
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                &format!("sandbox proxy: upstream {host}:{port}: {e}\n"),
            ),
        }
    }

    /// Holds until a decision; returns it. The process that made the request is found by its
    /// socket (for the human, and for process-scoped decisions).
    async fn hold(
        &self,
        kind: &'static str,
        target: String,
        rule: String,
        detail: Option<String>,
        path: PathBuf,
        peer: SocketAddr,
    ) -> (Verdict, String) {
        let cg = self.cfg.cgroup.clone();
        let pid = tokio::task::spawn_blocking(move || client_pid(&cg, peer))
            .await
            .ok()
            .flatten();
        let info = HoldInfo {
            id: crate::hold::new_id(),
            session: self.cfg.session.clone(),
            pid: pid.unwrap_or(0),
            ns_pid: pid.and_then(crate::files::supervise::ns_pid_of),
            comm: pid
                .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cmdline: pid
                .map(crate::files::supervise::cmdline_of)
                .unwrap_or_default(),
            kind,
            target,
            rule,
            detail,
            since: crate::audit::rfc3339_micros(std::time::SystemTime::now()),
            started: Some(Instant::now()),
            proc_key: pid.and_then(ProcKey::of),
            root: None,
            path: Some(path),
        };
        let (tx, rx) = oneshot::channel();
        match self.holds.hold_or_apply(info.clone(), tx) {
            Admission::Decided(prior, _) => {
                let v = self.report.applied(&info, prior.verdict, &prior.from_hold);
                (v, prior.from_hold)
            }
            Admission::Held(info) => {
                if !self.report.held(&info) {
                    // Fail closed: a hold the audit log does not have is denied at once.
                    let decided =
                        self.holds
                            .decide(&info.id, Verdict::Deny, crate::hold::Scope::Once, None);
                    for d in decided.unwrap_or_default() {
                        // Denied whether or not this is recorded.
                        let _ = self.report.decided(
                            &d.info,
                            d.verdict,
                            crate::report::UNRECORDED,
                            d.waited,
                        );
                    }
                    return (Verdict::Deny, info.id);
                }
                // If the client goes away meanwhile (its connection closes and this future is
                // dropped), the hold goes too: nobody is left to approve it for.
                let mut gone = ClientGone {
                    proxy: self,
                    id: Some(info.id.clone()),
                };
                // A dropped sender (the session ending) denies.
                let v = rx.await.unwrap_or(Verdict::Deny);
                gone.id = None;
                (v, info.id)
            }
        }
    }
}

/// The first bytes a client sent into a tunnel, and the server name of its TLS ClientHello (None
/// when it is not TLS or names no server).
struct FirstBytes {
    bytes: Vec<u8>,
    sni: Option<String>,
}

/// Reads from `client` until its TLS ClientHello is complete (at most 64 KiB and 30 s), or until
/// it is clear that the stream is not TLS. Everything read is returned, to be sent on.
async fn first_client_hello<R>(client: &mut R) -> std::io::Result<FirstBytes>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut acc = rustls::server::Acceptor::default();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, client.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no ClientHello"))??;
        if n == 0 {
            return Ok(FirstBytes { bytes, sni: None });
        }
        bytes.extend_from_slice(&buf[..n]);
        if acc.read_tls(&mut &buf[..n]).is_err() {
            return Ok(FirstBytes { bytes, sni: None });
        }
        match acc.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return Ok(FirstBytes { bytes, sni });
            }
            Ok(None) if bytes.len() < 64 * 1024 => {}
            // Not TLS (or a ClientHello rustls cannot read): nothing to check by name.
            Ok(None) | Err(_) => return Ok(FirstBytes { bytes, sni: None }),
        }
    }
}

/// Withdraws a pending hold whose client went away before the decision.
struct ClientGone<'a> {
    proxy: &'a Proxy,
    id: Option<String>,
}

impl Drop for ClientGone<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.proxy.withdraw(&id, "client went away");
        }
    }
}

/// The upstream protocol of an intercepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

enum Sender {
    H1(client1::SendRequest<Body>),
    H2(client2::SendRequest<Body>),
}

/// The upstream side of one client connection: connected lazily, reconnected when the server
/// closes it.
struct Upstream {
    host: String,
    port: u16,
    tls: bool,
    conn: AsyncMutex<Option<Sender>>,
}

impl Upstream {
    fn tls(host: String, port: u16) -> Upstream {
        Upstream {
            host,
            port,
            tls: true,
            conn: AsyncMutex::new(None),
        }
    }

    fn plain(host: String, port: u16) -> Upstream {
        Upstream {
            host,
            port,
            tls: false,
            conn: AsyncMutex::new(None),
        }
    }

    /// Connects if needed; returns the protocol spoken.
    async fn ready(&self, proxy: &Proxy) -> Result<Proto, String> {
        let mut g = self.conn.lock().await;
        self.ensure(&mut g, proxy).await
    }

    async fn ensure(&self, g: &mut Option<Sender>, proxy: &Proxy) -> Result<Proto, String> {
        let alive = match g.as_ref() {
            Some(Sender::H1(s)) => !s.is_closed(),
            Some(Sender::H2(s)) => !s.is_closed(),
            None => false,
        };
        if !alive {
            *g = Some(self.connect(proxy).await?);
        }
        Ok(match g {
            Some(Sender::H2(_)) => Proto::H2,
            _ => Proto::H1,
        })
    }

    async fn connect(&self, proxy: &Proxy) -> Result<Sender, String> {
        let tcp = dial(&self.host, self.port).await.map_err(estr)?;
        if !self.tls {
            let (s, conn) = client1::Builder::new()
                .preserve_header_case(true)
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(estr)?;
            tokio::spawn(conn);
            return Ok(Sender::H1(s));
        }
        let name = rustls_pki_types::ServerName::try_from(
            self.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(estr)?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(proxy.upstream_tls()?).connect(name, tcp),
        )
        .await
        .map_err(|_| String::from("TLS handshake timed out"))?
        .map_err(|e| format!("TLS: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (s, conn) = client2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(estr)?;
            tokio::spawn(conn);
            Ok(Sender::H2(s))
        } else {
            let (s, conn) = client1::Builder::new()
                .preserve_header_case(true)
                .handshake(io)
                .await
                .map_err(estr)?;
            tokio::spawn(conn);
            Ok(Sender::H1(s))
        }
    }

    /// Sends `req` upstream in the form the upstream protocol wants.
    async fn send(&self, proxy: &Proxy, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let mut g = self.conn.lock().await;
        let proto = self.ensure(&mut g, proxy).await?;
        let (mut parts, body) = req.into_parts();
        for h in ["proxy-connection", "proxy-authorization"] {
            parts.headers.remove(h);
        }
        let authority = if (self.tls && self.port == 443) || (!self.tls && self.port == 80) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match proto {
            Proto::H1 => {
                parts.version = Version::HTTP_11;
                parts.uri = pq.parse::<Uri>().map_err(estr)?;
                if !parts.headers.contains_key(http::header::HOST) {
                    parts.headers.insert(
                        http::header::HOST,
                        HeaderValue::from_str(&authority).map_err(estr)?,
                    );
                }
            }
            Proto::H2 => {
                parts.version = Version::HTTP_2;
                parts.uri = format!("https://{authority}{pq}")
                    .parse::<Uri>()
                    .map_err(estr)?;
                for h in [
                    "connection",
                    "keep-alive",
                    "transfer-encoding",
                    "upgrade",
                    "host",
                ] {
                    parts.headers.remove(h);
                }
            }
        }
        let req = Request::from_parts(parts, body);
        match g.as_mut() {
            Some(Sender::H1(s)) => {
                s.ready().await.map_err(estr)?;
                let fut = s.send_request(req);
                // HTTP/1.1 carries one request at a time: the lock is held until the response
                // head arrives (the body streams after).
                fut.await.map_err(estr)
            }
            Some(Sender::H2(s)) => {
                let mut s = s.clone();
                drop(g);
                s.ready().await.map_err(estr)?;
                s.send_request(req).await.map_err(estr)
            }
            None => Err(String::from("no upstream connection")),
        }
    }
}

fn estr(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn dial(host: &str, port: u16) -> Result<TcpStream, std::io::Error> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((h, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Host (lower case; IPv6 in brackets) and port of a request target.
fn authority(uri: &Uri, default_port: u16) -> Option<(String, u16)> {
    let a = uri.authority()?;
    let host = a.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, a.port_u16().unwrap_or(default_port)))
}

fn display_url(scheme: &str, host: &str, port: u16, uri: &Uri) -> String {
    let default = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if default {
        format!("{scheme}://{host}{pq}")
    } else {
        format!("{scheme}://{host}:{port}{pq}")
    }
}

/// Drops a connection with a reset (SO_LINGER 0) rather than an orderly close.
fn reset(tcp: TcpStream) {
    if let Ok(std) = tcp.into_std() {
        let _ = socket_linger_zero(&std);
    }
}

fn socket_linger_zero(s: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on an open socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(msg.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The process of the session whose socket is the proxy client at `peer`: the socket's inode
/// from the namespace's TCP table, then the process holding it.
fn client_pid(cgroup: &Path, peer: SocketAddr) -> Option<u32> {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    // Any process of the session sees the namespace's table.
    let inode = pids.iter().find_map(|p| {
        ["tcp", "tcp6"].iter().find_map(|t| {
            socket_inode(
                &std::fs::read_to_string(format!("/proc/{p}/net/{t}")).ok()?,
                peer,
            )
        })
    })?;
    let want = format!("socket:[{inode}]");
    pids.into_iter().find(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.as_os_str() == want.as_str())
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    })
}

/// The inode of the socket whose local address is `local` in a /proc/net/tcp{,6} table.
fn socket_inode(table: &str, local: SocketAddr) -> Option<u64> {
    let want_port = format!("{:04X}", local.port());
    let want_addr = match local.ip() {
        std::net::IpAddr::V4(a) => format!("{:08X}", u32::from_ne_bytes(a.octets())),
        std::net::IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (addr, port) = f.get(1)?.split_once(':')?;
        (addr == want_addr && port == want_port)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_matches("*", "anything.example"));
        assert!(host_matches(
            "*.amazonaws.com",
            "s3.us-east-1.amazonaws.com"
        ));
        assert!(!host_matches("*.amazonaws.com", "amazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "evilamazonaws.com"));
        assert!(host_matches("api.anthropic.com", "api.anthropic.com"));
        assert!(host_matches("api.anthropic.com", "api.anthropic.com."));
        assert!(!host_matches("api.anthropic.com", "x.api.anthropic.com"));
    }

    #[test]
    fn inspect_wins_over_allow() {
        let cfg = Config {
            session: "s".into(),
            allow: vec!["*".into()],
            inspect: vec!["*.amazonaws.com".into()],
            unknown_hosts: UnknownHosts::Deny,
            catalogue: rules::Catalogue::default(),
            upstream_ca: vec![],
            cgroup: PathBuf::new(),
        };
        assert_eq!(cfg.class("ec2.us-east-1.amazonaws.com"), HostClass::Inspect);
        assert_eq!(cfg.class("example.org"), HostClass::Allow);
        let cfg = Config {
            allow: vec![],
            ..cfg
        };
        assert_eq!(cfg.class("example.org"), HostClass::Unknown);
    }

    #[test]
    fn tcp_table_lookup() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:A1B2 0100007F:0C38 01 00000000:00000000 00:00000000 00000000 65534        0 67890 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddr = "127.0.0.1:41394".parse().unwrap();
        assert_eq!(socket_inode(t, peer), Some(67890));
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_inode(t, other), None);
    }

    #[test]
    fn urls_for_humans() {
        let u: Uri = "/bucket/key?x=1".parse().unwrap();
        assert_eq!(
            display_url("https", "localhost", 4566, &u),
            "https://localhost:4566/bucket/key?x=1"
        );
        assert_eq!(
            display_url("https", "s3.amazonaws.com", 443, &u),
            "https://s3.amazonaws.com/bucket/key?x=1"
        );
    }
}
