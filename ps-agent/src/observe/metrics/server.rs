//! The endpoint's HTTP server: hyper's HTTP/1.1 connections on tokio, TLS by rustls (ring
//! provider), routes, basic authentication and response headers in an axum router, request
//! timeouts and body limits from tower-http.
//!
//! Bounds, so that no client can make the agent grow (1,000 concurrent scrapes took the
//! hand-written server to 125 MB and 188 threads; 1,100 idle connections ran it out of file
//! descriptors):
//! - at most [`MAX_CONNECTIONS`] open connections. At the cap, a new connection evicts one
//!   that sent nothing for [`SILENT_GRACE`] (a half-open connection), else one idle for
//!   [`IDLE_GRACE`] after an answer (a kept-alive scraper reconnects), oldest first, so idle
//!   connections cannot lock scrapers out. A connection in its handshake or request is never
//!   evicted; when every connection is, the next ones wait in the kernel's listen backlog;
//! - [`HANDSHAKE_TIMEOUT`] for the TLS handshake, [`HEADER_TIMEOUT`] for a request header,
//!   [`REQUEST_TIMEOUT`] for an answer;
//! - one read of the maps at a time, shared by concurrent scrapes ([`super::scrape`]), and
//!   one bcrypt at a time ([`super::auth`]): the blocking threads stay at one or two.

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
    routing::get,
};
use headers::{Authorization, HeaderMapExt as _, authorization::Basic};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::{
    auth::BasicAuth,
    negotiate,
    scrape::{Reader, Scraper},
    web_config::{ClientAuth, TlsFiles, WebConfig, WebConfigError},
};

/// Open connections at most: with the duplicate descriptor a silent one holds, 256
/// descriptors, well under the default 1,024.
pub const MAX_CONNECTIONS: usize = 128;
/// Time for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request header, from the connection's start or the previous answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that has sent nothing for this long may be evicted at the cap: a scraper
/// sends its TLS ClientHello or request at once, but on a busy host its thread may wait.
pub const SILENT_GRACE: Duration = Duration::from_millis(500);
/// A connection idle between requests for this long may be evicted at the cap.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address cannot be bound.
    #[error(
        "failed to listen for metrics on {addr}: {source} (is another agent or exporter on that port? pick another with --metrics ADDR)"
    )]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The web config is unusable.
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
}

/// A bound endpoint, ready to [`serve`].
pub struct Endpoint {
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Endpoint {
    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `http(s)://ADDR/metrics`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.local_addr().map_or_else(|e| e.to_string(), |a| format!("{scheme}://{a}/metrics"))
    }
}

/// Read the web config (if any) and bind `addr`, before anything is attached, so that a
/// taken port or a bad certificate fails start-up. Warns when a non-loopback address is
/// served without TLS or without authentication.
///
/// # Errors
///
/// The web config is unusable, or the address cannot be bound.
pub async fn bind(addr: SocketAddr, web_config: Option<&Path>) -> Result<Endpoint, MetricsError> {
    let web = web_config.map(WebConfig::load).transpose()?;
    let tls = match web.as_ref().and_then(|w| w.tls.clone().map(|t| (t, &w.path))) {
        Some((t, path)) => Some(Arc::new(TlsFiles::new(t, path)?)),
        None => None,
    };
    let users = web.as_ref().map(|w| w.users.clone()).unwrap_or_default();
    let client_certs =
        web.as_ref().and_then(|w| w.tls.as_ref()).is_some_and(|t| matches!(t.client_auth, ClientAuth::Required(_)));
    if !addr.ip().is_loopback() {
        let missing: Vec<&str> =
            [tls.is_none().then_some("TLS"), (users.is_empty() && !client_certs).then_some("authentication")]
                .into_iter()
                .flatten()
                .collect();
        if !missing.is_empty() {
            warn!(
                "metrics on {addr}: reachable from the network without {}: anyone who reaches the port reads the rule set, counters and kernel version; name a web config with tls_server_config and basic_auth_users (metrics_web_config, docs/metrics.md)",
                missing.join(" and ")
            );
        }
    }
    let headers = web
        .map(|w| w.headers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((HeaderName::try_from(k).ok()?, HeaderValue::try_from(v).ok()?)))
        .collect();
    let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Listen { addr, source })?;
    let auth = (!users.is_empty()).then(|| BasicAuth::new(users));
    Ok(Endpoint { listener, tls, auth, headers, max_connections: MAX_CONNECTIONS })
}

/// Serve `GET /metrics` (and `HEAD`) with what `reader` reads, until aborted.
pub async fn serve(ep: Endpoint, reader: Reader) {
    info!(
        "metrics: {} ({}, {}; at most {} connections)",
        ep.url(),
        if ep.tls.is_some() { "TLS" } else { "plain HTTP" },
        if ep.auth.is_some() { "basic auth" } else { "no basic auth" },
        ep.max_connections
    );
    let app = App { scraper: Arc::new(Scraper::new(reader)), auth: ep.auth.clone(), headers: Arc::new(ep.headers) };
    let router = router(app);
    let conns = Conns::new(ep.max_connections);
    loop {
        conns.room().await;
        let (stream, peer) = match ep.listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = Conns::admit(&conns, &stream) else {
            debug!("metrics: {peer}: every connection is answering a request; closed");
            continue;
        };
        let tls = ep.tls.as_ref().map(|t| TlsAcceptor::from(t.config()));
        let task = tokio::spawn(connection(stream, peer, tls, router.clone(), slot.clone()));
        slot.set_abort(task.abort_handle());
    }
}

#[derive(Clone)]
struct App {
    scraper: Arc<Scraper>,
    auth: Option<Arc<BasicAuth>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

fn router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(|| async { "ps-agent: metrics at /metrics\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /metrics\n") })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(4096))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .with_state(app)
}

/// Basic authentication (when users are configured) and the configured response headers,
/// on every path.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let mut resp = match &app.auth {
        Some(auth) if !auth.allows(req.headers().typed_get::<Authorization<Basic>>()).await => {
            let mut r = (StatusCode::UNAUTHORIZED, "unauthorized: give the user and password of the web config\n")
                .into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            r
        }
        _ => next.run(req).await,
    };
    for (k, v) in app.headers.iter() {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let text = |h: HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let format = negotiate::format(text(header::ACCEPT).as_deref());
    let gzip = negotiate::gzip(text(header::ACCEPT_ENCODING).as_deref());
    let snapshot = app.scraper.snapshot().await;
    match snapshot.body(format, gzip) {
        Ok(body) => {
            let mut r = Response::new(Body::from(body));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            h.insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
            if gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Has the peer sent anything yet (without taking it from the socket)?
fn has_bytes(fd: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte recv into a buffer we own, on a socket `fd` keeps open for the
    // call; MSG_PEEK leaves the byte to the reader, MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n > 0
}

async fn connection(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, router: Router, slot: Arc<Slot>) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => slot.spoke(),
        _ => return debug!("metrics: {peer}: sent nothing"),
    }
    let result = match tls {
        None => http1(stream, router, slot).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => http1(s, router, slot).await,
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err("TLS handshake timed out".into()),
        },
    };
    if let Err(e) = result {
        debug!("metrics: {peer}: {e}");
    }
}

async fn http1<S>(io: S, router: Router, slot: Arc<Slot>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::new(&slot);
        let router = router.clone();
        async move {
            let r = router.oneshot(req).await;
            drop(busy);
            r
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .await
        .map_err(|e| e.to_string())
}

/// The open connections: how many, which are answering a request, which are idle and
/// since when.
struct Conns {
    cap: usize,
    table: Mutex<Table>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Table {
    next: u64,
    live: HashMap<u64, Entry>,
}

struct Entry {
    busy: u32,
    /// Accepted, or the end of its last request.
    since: Instant,
    /// Has sent something.
    spoke: bool,
    /// The socket, while it has not spoken: the kernel tells whether it has sent something
    /// since (the connection's task may not have run yet when the host is busy).
    silent: Option<OwnedFd>,
    /// Has been answered once (its TLS handshake and first request are done).
    served: bool,
    abort: Option<AbortHandle>,
}

impl Entry {
    /// May it be evicted now, and how eagerly (lower first)? A connection that has
    /// spoken but not been answered yet is in its TLS handshake or request: never evicted
    /// (the handshake and header timeouts bound it).
    fn eviction_rank(&mut self, now: Instant) -> Option<(bool, Instant)> {
        if self.silent.as_ref().is_some_and(|fd| has_bytes(fd.as_fd())) {
            self.spoke = true;
            self.silent = None;
        }
        let idle = now.duration_since(self.since);
        let ripe = match (self.spoke, self.served) {
            (false, _) => idle >= SILENT_GRACE,
            (true, true) => idle >= IDLE_GRACE,
            (true, false) => false,
        };
        (self.busy == 0 && self.abort.is_some() && ripe).then_some((self.spoke, self.since))
    }
}

impl Conns {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { cap, table: Mutex::new(Table::default()), changed: tokio::sync::Notify::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until a connection can be admitted: under the cap, or one to evict (checked
    /// again as connections end or age).
    async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            {
                let mut t = self.lock();
                let now = Instant::now();
                if t.live.len() < self.cap || t.live.values_mut().any(|e| e.eviction_rank(now).is_some()) {
                    return;
                }
            }
            let _ = tokio::time::timeout(SILENT_GRACE / 2, changed).await;
        }
    }

    /// A slot for the connection `stream`, evicting one at the cap; `None` when none may be
    /// evicted.
    fn admit(this: &Arc<Self>, stream: &TcpStream) -> Option<Arc<Slot>> {
        let mut t = this.lock();
        let now = Instant::now();
        if t.live.len() >= this.cap {
            let victim =
                t.live.iter_mut().filter_map(|(id, e)| Some((e.eviction_rank(now)?, *id))).min().map(|(_, id)| id)?;
            if let Some(abort) = t.live.remove(&victim).and_then(|e| e.abort) {
                abort.abort();
            }
        }
        let id = t.next;
        t.next += 1;
        let spoke = has_bytes(stream.as_fd());
        // Without a duplicate (out of descriptors), the connection's own task tells.
        let silent = if spoke { None } else { stream.as_fd().try_clone_to_owned().ok() };
        t.live.insert(id, Entry { busy: 0, since: now, spoke, silent, served: false, abort: None });
        Some(Arc::new(Slot { id, conns: this.clone() }))
    }
}

/// A connection's place in [`Conns`], given back when the connection ends.
struct Slot {
    id: u64,
    conns: Arc<Conns>,
}

impl Slot {
    fn set_abort(&self, abort: AbortHandle) {
        if let Some(e) = self.conns.lock().live.get_mut(&self.id) {
            e.abort = Some(abort);
        }
    }

    fn spoke(&self) {
        if let Some(e) = self.conns.lock().live.get_mut(&self.id) {
            e.spoke = true;
            e.silent = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().live.remove(&self.id);
        self.conns.changed.notify_one();
    }
}

/// A request in progress on a connection: it is not evicted meanwhile.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: &Arc<Slot>) -> Self {
        if let Some(e) = slot.conns.lock().live.get_mut(&slot.id) {
            e.busy += 1;
        }
        Self(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.0.conns.lock().live.get_mut(&self.0.id) {
            e.busy -= 1;
            e.served = true;
            e.since = Instant::now();
        }
        self.0.conns.changed.notify_one();
    }
}
