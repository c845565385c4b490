//! Accepting and serving client connections, with every wait bounded.
//!
//! A client that opens connections and never finishes a request must not be able to hold
//! the gateway's sockets, memory or file descriptors. So, per connection:
//!
//! - **Header-read timeout** (`limits.header_read_timeout`): a connection must deliver a
//!   complete request head within this time of being accepted, and (HTTP/1) of its previous
//!   response ending; otherwise it is closed. This also closes idle keep-alive connections.
//! - **Body-read timeout** (`limits.body_read_timeout`): the request body may not stall for
//!   longer between two chunks; the request then fails with 408.
//! - **Connection cap** (`limits.max_connections`): at the cap the gateway stops accepting
//!   (the kernel's backlog holds newcomers) until a connection closes: back-pressure, not
//!   errors. The cap is lowered to fit the process's open-file limit, so accepting never
//!   fails for want of a descriptor and `/healthz` keeps answering on connections already
//!   open. `slmgate_open_connections` shows the count.
//! - **HTTP/2**: at most `limits.http2_max_concurrent_streams` streams per connection, and a
//!   keep-alive ping every `limits.http2_keepalive_interval` that closes a connection whose
//!   peer stops answering.
//!
//! On shutdown the listener closes, every connection is asked to finish (HTTP/1 after its
//! current response, HTTP/2 with GOAWAY), and [`serve`] waits for them, up to the drain
//! timeout; then it cuts the rest and waits until their tasks have ended, so every request's
//! drop handlers (its usage record) have run before it returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::layers::body_limit::BodyReadTimeout;
use crate::metrics as m;
use crate::runtime::Limits;

/// The connection settings of `limits:` (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to deliver a complete request head.
    pub header_read_timeout: Duration,
    /// Longest stall between two chunks of a request body.
    pub body_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval (and the time to answer one).
    pub http2_keepalive_interval: Duration,
}

impl From<&Limits> for ConnectionLimits {
    fn from(l: &Limits) -> Self {
        ConnectionLimits {
            header_read_timeout: l.header_read_timeout,
            body_read_timeout: l.body_read_timeout,
            max_connections: l.max_connections,
            http2_max_concurrent_streams: l.http2_max_concurrent_streams,
            http2_keepalive_interval: l.http2_keepalive_interval,
        }
    }
}

/// Descriptors kept free for everything that is not a client connection (the listener,
/// the usage database, config files, logs).
const SPARE_FDS: u64 = 64;

/// `max_connections`, lowered to what the open-file limit allows: each client connection
/// may need a second descriptor for its upstream connection.
pub fn effective_max_connections(max_connections: usize) -> usize {
    match open_file_limit() {
        Some(limit) => {
            let fits = (limit.saturating_sub(SPARE_FDS) / 2).max(1);
            if (max_connections as u64) > fits {
                tracing::warn!(
                    max_connections,
                    open_file_limit = limit,
                    lowered_to = fits,
                    "limits.max_connections does not fit the open-file limit (raise `ulimit -n` / LimitNOFILE); lowering it"
                );
                fits as usize
            } else {
                max_connections
            }
        }
        None => max_connections,
    }
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    (soft != rlimit::INFINITY).then_some(soft)
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Runs tasks so that shutdown can wait for all of them, or cut them all: connection tasks
/// and the HTTP/2 stream tasks hyper spawns (which outlive their connection's task
/// otherwise).
#[derive(Clone)]
struct Tasks {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl Tasks {
    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = fut => {}
                // Dropping the future drops its request, body and usage record.
                _ = cut.cancelled() => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for Tasks
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(fut);
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then drains (see the module
/// docs): `draining` is set, open connections get up to `drain` to finish, the rest are
/// cut. Returns once every connection and request task has ended.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain: Duration,
    draining: Arc<AtomicBool>,
) {
    let tasks = Tasks {
        tracker: TaskTracker::new(),
        cut: CancellationToken::new(),
    };
    let max = effective_max_connections(limits.max_connections);
    let permits = Arc::new(Semaphore::new(max));
    let mut builder = auto::Builder::new(tasks.clone());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_interval);
    let builder = Arc::new(builder);
    let open = metrics::gauge!(m::OPEN_CONNECTIONS);
    open.set(0.0);

    loop {
        // At the cap, wait for a connection to close before accepting another.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = connection(
            stream,
            peer,
            app.clone(),
            builder.clone(),
            limits,
            shutdown.clone(),
        );
        let open = open.clone();
        open.increment(1.0);
        tasks.spawn(async move {
            conn.await;
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    tasks.tracker.close();
    tracing::info!(
        ?drain,
        open = tasks.tracker.len(),
        "shutting down: draining in-flight requests"
    );
    if tokio::time::timeout(drain, tasks.tracker.wait())
        .await
        .is_ok()
    {
        tracing::info!("all requests finished; bye");
        return;
    }
    tracing::warn!(
        ?drain,
        open = tasks.tracker.len(),
        "drain timeout reached; closing remaining connections"
    );
    tasks.cut.cancel();
    tasks.tracker.wait().await;
}

/// Serves one connection (see the module docs for its timeouts).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<Tasks>>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    // Set by the first request: hyper's own header timeout applies from the moment it
    // reads a head, not while it waits for a client's first bytes (or an HTTP/2 preface).
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let body_timeout = limits.body_read_timeout;
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let mut req = req.map(|b| Body::new(TimeoutBody::new(body_timeout, b)));
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(BodyReadTimeout(body_timeout));
        app.clone().oneshot(req)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let first = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first);
    let (mut watching, mut closing) = (true, false);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut first, if watching => {
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request head within header_read_timeout; closing");
                    return;
                }
                watching = false;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    // Most likely out of file descriptors (EMFILE): wait for some to close instead of
    // spinning (as hyper 0.14's server and axum do).
    tracing::error!(error = %e, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        if let Some(limit) = open_file_limit() {
            assert!(effective_max_connections(usize::MAX) as u64 <= limit / 2);
        }
        assert_eq!(effective_max_connections(1), 1);
    }

    #[tokio::test]
    async fn cut_tasks_are_dropped_and_awaited() {
        let tasks = Tasks {
            tracker: TaskTracker::new(),
            cut: CancellationToken::new(),
        };
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        tasks.spawn(async move {
            let _flag = flag;
            std::future::pending::<Infallible>().await
        });
        tasks.tracker.close();
        tasks.cut.cancel();
        tasks.tracker.wait().await;
        assert!(dropped.load(Ordering::SeqCst));
    }
}
