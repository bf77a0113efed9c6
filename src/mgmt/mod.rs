//! The management plane: RabbitMQ's HTTP API, the web UI and Prometheus
//! metrics, served from a thread of its own beside the shards. It talks to
//! the broker only through the [`Admin`] handle, so a slow or busy
//! management client never touches the data path.

mod api;
mod auth;
mod definitions;
mod http;
pub mod limits;
mod listener;
mod metrics;
mod rates;
mod shapes;
mod ui;
mod write;

use crate::admin::Admin;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request body accepted (definitions imports are the big ones).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Requests handled at once; more wait, and past `MAX_QUEUED` get 503.
const MAX_CONCURRENT: usize = 8;
const MAX_QUEUED: usize = 256;

/// Where and how the management plane listens.
#[derive(Debug, Clone)]
pub struct MgmtConfig {
    pub bind: IpAddr,
    /// 0 picks an ephemeral port (tests).
    pub port: u16,
    /// How often message rates are sampled (RabbitMQ: 5 s).
    pub sample_interval: Duration,
    /// Open HTTP connections at most; more are closed at once.
    pub max_connections: usize,
    /// A connection gets a response within this long of being accepted
    /// or of its last response, or is closed (half-sent requests, idle
    /// keep-alives).
    pub request_timeout: Duration,
    /// HTTPS on this port too (RabbitMQ's `management.ssl.port`, 15671),
    /// with this server configuration.
    pub tls: Option<(u16, Arc<rustls::ServerConfig>)>,
}

impl MgmtConfig {
    /// The defaults for `bind:port`.
    pub fn new(bind: IpAddr, port: u16) -> MgmtConfig {
        MgmtConfig {
            bind,
            port,
            sample_interval: Duration::from_secs(5),
            max_connections: 1024,
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The running management plane. Dropping it stops it.
pub struct MgmtHandle {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MgmtHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTPS address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }
}

impl Drop for MgmtHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every request handler shares.
pub(crate) struct Mgmt {
    pub admin: Admin,
    pub rates: rates::Rates,
    pub node: String,
    pub listen: SocketAddr,
    pub listen_tls: Option<SocketAddr>,
    /// Bounds the requests in flight (each may block a thread on the shards).
    pub slots: tokio::sync::Semaphore,
    pub queued: std::sync::atomic::AtomicUsize,
}

/// Starts the management plane on its own thread.
pub fn start(admin: Admin, cfg: MgmtConfig) -> io::Result<MgmtHandle> {
    let listener = std::net::TcpListener::bind((cfg.bind, cfg.port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls_listener = match &cfg.tls {
        Some((port, server)) => {
            let l = std::net::TcpListener::bind((cfg.bind, *port))?;
            l.set_nonblocking(true)?;
            Some((l, server.clone()))
        }
        None => None,
    };
    let tls_addr = match &tls_listener {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mgmt = Arc::new(Mgmt {
        node: admin.config.cluster.node_name.clone(),
        rates: rates::Rates::default(),
        admin,
        listen: addr,
        listen_tls: tls_addr,
        slots: tokio::sync::Semaphore::new(MAX_CONCURRENT),
        queued: std::sync::atomic::AtomicUsize::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()?;
    let thread = std::thread::Builder::new()
        .name("warren-mgmt".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("management listener: {e}");
                        return;
                    }
                };
                tokio::spawn(rates::sampler(mgmt.clone(), cfg.sample_interval));
                let stopping = mgmt.clone();
                let app = axum::Router::new().fallback(handle).with_state(mgmt);
                // Each listener has its own cap: plain HTTP cannot starve
                // HTTPS of slots, nor the other way round.
                let https = match tls_listener {
                    Some((l, server)) => match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            let capped = listener::Capped::new(l, cfg.max_connections, cfg.request_timeout);
                            match listener::TlsCapped::new(capped, server) {
                                Ok(l) => Some(l),
                                Err(e) => {
                                    log::error!("management HTTPS listener: {e}");
                                    None
                                }
                            }
                        }
                        Err(e) => {
                            log::error!("management HTTPS listener: {e}");
                            None
                        }
                    },
                    None => None,
                };
                let (stop_tx, _) = tokio::sync::watch::channel(false);
                let stopped = |mut w: tokio::sync::watch::Receiver<bool>| async move {
                    let _ = w.wait_for(|s| *s).await;
                };
                let http = axum::serve(
                    listener::Capped::new(listener, cfg.max_connections, cfg.request_timeout),
                    app.clone()
                        .into_make_service_with_connect_info::<listener::PeerAddr>(),
                )
                .with_graceful_shutdown(stopped(stop_tx.subscribe()));
                let https = https.map(|l| {
                    axum::serve(l, app.into_make_service_with_connect_info::<listener::PeerAddr>())
                        .with_graceful_shutdown(stopped(stop_tx.subscribe()))
                });
                tokio::spawn(async move {
                    let poll = async {
                        while !stopping.admin.stopping() {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    };
                    tokio::select! {
                        _ = rx => {}
                        _ = poll => {}
                    }
                    let _ = stop_tx.send(true);
                });
                let https = async move {
                    match https {
                        Some(s) => s.await,
                        None => Ok(()),
                    }
                };
                let (a, b) = tokio::join!(http, https);
                if let Err(e) = a.and(b) {
                    log::error!("management server: {e}");
                }
            });
            // A request or sample may still wait on shards that have gone
            // (up to the admin timeout): do not let it hold up the stop.
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
    log::info!("management API and UI on http://{addr}/");
    if let Some(a) = tls_addr {
        log::info!("management API and UI on https://{a}/");
    }
    Ok(MgmtHandle {
        addr,
        tls_addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

async fn handle(
    State(m): State<Arc<Mgmt>>,
    ConnectInfo(listener::PeerAddr(peer)): ConnectInfo<listener::PeerAddr>,
    req: Request,
) -> Response {
    use std::sync::atomic::Ordering;
    if m.queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED {
        m.queued.fetch_sub(1, Ordering::SeqCst);
        return http::Reply::error(503, "service_unavailable", "too many requests in flight").into_response();
    }
    let permit = m.slots.acquire().await;
    m.queued.fetch_sub(1, Ordering::SeqCst);
    let Ok(_permit) = permit else {
        return http::Reply::error(503, "service_unavailable", "shutting down").into_response();
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return http::Reply::error(413, "bad_request", "request body too large").into_response();
        }
    };
    // Admin calls block on the shards' answers: keep them off the reactor.
    let m2 = m.clone();
    match tokio::task::spawn_blocking(move || api::dispatch(&m2, peer, parts, body)).await {
        Ok(r) => r.into_response(),
        Err(_) => http::Reply::error(500, "internal_error", "handler failed").into_response(),
    }
}
