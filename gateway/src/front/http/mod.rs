//! The HTTP/1.1 front: connections served by hyper (header timeouts and limits, graceful
//! drain); each request is mapped onto the request core by [`handler`], and the CGI's output
//! turned into the response by [`response`].

pub mod handler;
pub mod response;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::OwnedSemaphorePermit;

use super::linger::{LingerFlag, Lingering, Stopping};
use super::listen::{accept_until, Connection, Listener, OpenConnections, Stream, MAX_CONNECTIONS};
use super::request::Core;

/// Time a client gets to send a request's header block (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request header block hyper buffers (it answers 431 beyond it).
pub const MAX_HEADER_BUFFER: usize = 64 * 1024;
/// How long a stop waits before draining, so that connections accepted just before it read
/// the request their client sent (see [`run`]).
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(200);
/// Serves `listener` until `shutdown` resolves, then lets open connections finish their
/// requests for up to `drain` and cuts the rest.
pub async fn run(
    listener: Listener,
    core: Arc<Core>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    connections: OpenConnections,
) {
    let graceful = GracefulShutdown::new();
    let stopping = Stopping::new();
    let serve = |stream: Stream, connection_info: Connection, permit: OwnedSemaphorePermit| {
        let core = core.clone();
        let linger = LingerFlag::default();
        // The current configuration's, at the connection's start (a reload changes it for the
        // connections after).
        let send_timeout = core.current().config.send_timeout;
        let stream = Lingering::new(stream, linger.clone(), stopping.clone(), send_timeout);
        let service = service_fn(move |request| {
            handler::handle(core.clone(), request, connection_info, linger.clone())
        });
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
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(?connection_info, "connection ended: {error}");
            }
            drop(permit);
        });
    };
    accept_until(listener, MAX_CONNECTIONS, shutdown, serve).await;
    tracing::info!("stopped accepting; draining open connections");
    stopping.cancel();
    // hyper's graceful shutdown closes a connection that has not read a byte yet, answering
    // nothing: those just accepted, the backlog above among them, whose clients have sent
    // (or are sending) a request. A moment first lets each read its request head; from then
    // on the shutdown lets it finish that request (with `Connection: close`).
    tokio::time::sleep(FIRST_REQUEST_GRACE.min(drain)).await;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {drain:?}; cutting them off");
        connections.cut().await;
    }
}
