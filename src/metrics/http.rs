//! `/metrics`, `/healthz` and `/livez` over HTTP, from a thread of its
//! own; and `/healthz` and `/livez` alone on a listener of their own
//! (`health_addr`), which a flood of the metrics port cannot fill.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::Registry;

/// A request must arrive whole within this, and the answer leave within
/// it, or the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, and from one address; more are closed at
/// once. Under `node` the port is on the node's IP, reachable by every
/// pod: one pod holding connections open must not keep the kubelet's
/// probes or Prometheus out.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_PEER: usize = 4;
const MAX_REQUEST_BYTES: usize = 8192;
/// After a failed accept (out of file descriptors): wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What can go wrong with the metrics server, at start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Bad input: nothing was started.
    #[error(
        "cannot listen on {addr} ({key}): {source}; \
         pick a free port in {key} / --{flag}, or set it to off"
    )]
    Bind {
        key: &'static str,
        flag: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics: {0}")]
    Serve(#[source] std::io::Error),
}

/// The listeners the server serves: `/metrics` (and health) on one,
/// health alone on the other.
#[derive(Default)]
pub struct Listeners {
    pub metrics: Option<std::net::TcpListener>,
    pub health: Option<std::net::TcpListener>,
}

/// Binds the address of setting `key` before anything else is started, so
/// that a port in use is bad input that changes nothing.
pub fn bind(key: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| MetricsError::Bind {
            key,
            flag: key.replace('_', "-"),
            addr,
            source,
        })
}

/// What a listener answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serves {
    Everything,
    /// `/healthz` and `/livez` only.
    Health,
}

/// The metrics server's thread: stops when dropped.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the listeners from a thread of its own, with a runtime of its
/// own at ordinary priority: a scrape, a slow client or a flood of
/// connections never takes the enforcement thread's time; `None` when
/// there is nothing to serve.
pub fn spawn_server(
    listeners: Listeners,
    registry: Arc<Registry>,
) -> Result<Option<Server>, MetricsError> {
    if listeners.metrics.is_none() && listeners.health.is_none() {
        return Ok(None);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let startup = MetricsError::Serve;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(startup)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let metrics = listeners
                    .metrics
                    .map(|l| serve(l, registry.clone(), Serves::Everything));
                let health = listeners.health.map(|l| serve(l, registry, Serves::Health));
                let both = async {
                    tokio::join!(
                        async {
                            if let Some(m) = metrics {
                                m.await
                            }
                        },
                        async {
                            if let Some(h) = health {
                                h.await
                            }
                        }
                    )
                };
                tokio::select! {
                    _ = both => {}
                    _ = stopped => {}
                }
            })
        })
        .map_err(startup)?;
    Ok(Some(Server { stop: Some(stop) }))
}

/// One listener's connections: capped in all and per address, each with
/// its deadline; the health listener's are counted apart from the
/// metrics port's.
async fn serve(listener: std::net::TcpListener, registry: Arc<Registry>, serves: Serves) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        match serves {
            Serves::Everything => {
                info!(%addr, "serving metrics at /metrics, health at /healthz and /livez")
            }
            Serves::Health => info!(%addr, "serving health at /healthz and /livez"),
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Mutex::new(std::collections::HashMap::new()));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = PeerSlot::take(&peers, peer.ip()) else {
                    debug!(%peer, "too many metrics connections from this address; closed this one");
                    continue;
                };
                let Ok(total) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "too many metrics connections; closed this one");
                    continue;
                };
                let slot = (slot, total);
                let registry = registry.clone();
                tokio::spawn(async move {
                    let answered = tokio::time::timeout(
                        REQUEST_TIMEOUT * 2,
                        answer(stream, &registry, serves),
                    )
                    .await;
                    match answered {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%peer, error = %e, "metrics request failed"),
                        Err(_) => debug!(%peer, "metrics request too slow; dropped"),
                    }
                    drop(slot);
                });
            }
            // Out of file descriptors and the like: back off a little.
            Err(e) => {
                debug!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One connection's place among those of its address; given back on drop.
struct PeerSlot {
    peers: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(
        peers: &Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<PeerSlot> {
        let mut all = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = all.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut all = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                all.remove(&self.ip);
            }
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry, serves: Serves) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"))??;
    let (status, content_type, body) = match serves {
        Serves::Health if !is_health(&head) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /healthz or /livez (metrics are on metrics_addr)\n".to_string(),
        ),
        _ => route(&head, registry),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let send = async {
        stream.write_all(response.as_bytes()).await?;
        if !head.starts_with("HEAD ") {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not read"))?
}

/// The request line and headers, up to the blank line.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Whether a request head asks for `/healthz` or `/livez`.
fn is_health(head: &str) -> bool {
    let target = head
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("");
    matches!(target.split('?').next(), Some("/healthz" | "/livez"))
}

/// (status, content type, body) for a request head.
pub(super) fn route(head: &str, registry: &Registry) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        ),
        "/healthz" => match registry.unready() {
            None => ("200 OK", TEXT, "ok\n".into()),
            Some(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/livez" => match registry.dead() {
            None => ("200 OK", TEXT, "ok\n".into()),
            Some(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("not alive: {why}\n"),
            ),
        },
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /healthz or /livez\n".into(),
        ),
    }
}
