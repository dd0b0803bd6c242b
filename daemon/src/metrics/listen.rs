//! The metrics server: HTTP/1.1 by hyper on a Unix socket and, optionally, a loopback
//! TCP address, bounded so that no client, slow or hostile, can hold the agent: a few
//! connections at once (more wait in the kernel's backlog), small request heads, a
//! deadline for the headers and one for the whole connection, one request each.

use super::http;
use super::registry::Metrics;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// How much of the agent a client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once, over all listeners.
    pub connections: usize,
    /// The request's head must arrive within this.
    pub header_read: Duration,
    /// A connection is closed after this, whatever it is doing.
    pub connection: Duration,
}

/// The limits in production: a scrape is one small request and a ~20 KB answer.
pub const LIMITS: Limits = Limits {
    connections: 8,
    header_read: Duration::from_secs(5),
    connection: Duration::from_secs(10),
};

/// Bytes buffered per connection (hyper's minimum is 8 KiB); a request head larger
/// than `MAX_HEADER_SIZE` gets 431.
const MAX_BUF_SIZE: usize = 16 * 1024;
const MAX_HEADER_SIZE: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// The Unix socket's mode: root and the socket's group (nobody else can reach it
/// through the agent's 0700 runtime directory anyway).
pub const SOCKET_MODE: u32 = 0o660;

/// Binds the Unix socket at `path`, replacing a stale one (a previous run's), and
/// makes its directory if missing (mode 0700, as systemd's RuntimeDirectory=).
/// Anything at `path` that is not a socket is left alone: an error.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something that is not a socket is in the way; not replacing it",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// Binds the TCP address (the configuration allows loopback addresses only).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// A listener the server accepts connections from.
pub trait Accept: Send + Sync + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The next connection.
    fn next(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for UnixListener {
    type Io = UnixStream;
    async fn next(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn next(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serves `metrics` on any number of listeners, within one set of limits.
#[derive(Clone)]
pub struct Server {
    metrics: &'static Metrics,
    limits: Limits,
    slots: Arc<Semaphore>,
}

impl Server {
    /// A server of `metrics` within `limits`.
    pub fn new(metrics: &'static Metrics, limits: Limits) -> Self {
        Self {
            metrics,
            limits,
            slots: Arc::new(Semaphore::new(limits.connections)),
        }
    }

    /// Accepts and serves connections from `listener` in a task of the current
    /// runtime, for as long as it runs.
    pub fn spawn(&self, listener: impl Accept) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move { server.accept_loop(listener).await })
    }

    async fn accept_loop(self, listener: impl Accept) {
        loop {
            // A slot first, then the connection: over the limit, clients wait in the
            // listen backlog instead of costing the agent a task and a buffer each.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return;
            };
            match listener.next().await {
                Ok(io) => {
                    let server = self.clone();
                    tokio::spawn(async move {
                        server.connection(io).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    tracing::debug!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static) {
        let metrics = self.metrics;
        let service =
            service_fn(move |req| async move { Ok::<_, Infallible>(http::respond(metrics, &req)) });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read)
            .max_buf_size(MAX_BUF_SIZE)
            .max_header_size(MAX_HEADER_SIZE)
            .max_headers(MAX_HEADERS)
            // One request per connection: a scrape every few seconds gains nothing from
            // keep-alive, and an idle connection would hold a slot.
            .keep_alive(false)
            .serve_connection(TokioIo::new(io), service);
        match tokio::time::timeout(self.limits.connection, connection).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("metrics: connection: {e}"),
            Err(_) => tracing::debug!(
                "metrics: connection closed after {:?}",
                self.limits.connection
            ),
        }
    }
}

#[cfg(test)]
mod tests;
