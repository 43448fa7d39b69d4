//! The HTTP/1.1 front: accept loop, connection limits, header timeouts, graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cgi::Gateway;
use crate::cgi_env::Connection;
use crate::listen::{Listener, Stream};

/// Open client connections at most; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// Time a client gets to send a request's header block (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request header block hyper buffers (it answers 431 beyond it).
pub const MAX_HEADER_BUFFER: usize = 64 * 1024;
/// Serves `listener` until `shutdown` resolves, then lets open connections finish their
/// requests for up to `drain` and closes them.
pub async fn run(
    listener: Listener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let serve = |stream: Stream, connection_info: Connection, permit: OwnedSemaphorePermit| {
        let gateway = gateway.clone();
        let service = service_fn(move |request| gateway.clone().handle(request, connection_info));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BUFFER)
            // The head's own limit: max_buf_size alone is checked only while a head is still
            // incomplete, so a head of up to twice the size could pass.
            .max_header_size(MAX_HEADER_BUFFER)
            .keep_alive(true)
            // A client that closes its side is gone, as nginx sees it too: only so does hyper
            // watch the socket while a CGI is silent, and a client that disconnects (or
            // resets) has its CGI killed at once instead of at its deadline.
            .half_close(false)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(?connection_info, "connection ended: {error}");
            }
            drop(permit);
        });
    };
    accept_until(listener, shutdown, serve).await;
    tracing::info!("stopped accepting; draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; closing them");
    }
}

/// Serves FastCGI (from nginx's `fastcgi_pass`) on `listener` until `shutdown` resolves, then
/// waits for open connections as `run` does.
pub async fn run_fastcgi(
    listener: Listener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    // nginx sends the client's address as a FastCGI parameter; the peer itself tells nothing.
    let serve = |stream: Stream, peer: Connection, permit: OwnedSemaphorePermit| {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let handler = move |request| gateway.clone().handle_fastcgi(request);
            if let Err(error) = crate::fastcgi::serve_connection(stream, handler).await {
                tracing::warn!(?peer, "fastcgi connection ended: {error}");
            }
            drop(permit);
        });
    };
    let connections = accept_until(listener, shutdown, serve).await;
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("fastcgi connections still open after {drain:?}; closing them");
    }
}

/// Accepts connections until `shutdown` resolves, at most [`MAX_CONNECTIONS`] open at once,
/// handing each to `serve` with the permit it must hold while open. Returns the semaphore, so
/// the caller can wait for the permits to come back.
async fn accept_until(
    listener: Listener,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(Stream, Connection, OwnedSemaphorePermit),
) -> Arc<Semaphore> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Admission before accepting: at the limit we stop taking connections off the backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, connection) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        serve(stream, connection, permit);
    }
    connections
}
