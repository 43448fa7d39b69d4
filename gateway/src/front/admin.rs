//! The admin endpoint (`--admin`): `/metrics` for Prometheus, `/healthz` for load balancers.
//! Separate from the CGI front so that neither can be reached through the other.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;

use super::listen::{accept_until, Listener, Stream};
use super::metrics::{Metrics, PoolState, CONTENT_TYPE};

/// Admin connections open at once: a scraper and a load balancer need a few. Without a bound,
/// whoever reaches `--admin` could hold connections by the thousand, each a descriptor the
/// CGI fronts need for their sockets and pipes; past it, one waits to be accepted.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Time an admin client gets to send its request: a scraper or a health check sends it at
/// once, and a connection that sends nothing holds one of the few places (the CGI fronts'
/// 10 s are for clients on slow links).
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the admin endpoint on `listener` until `shutdown` resolves. `state` reads the pool.
pub async fn run(
    listener: Listener,
    metrics: Arc<Metrics>,
    state: Arc<dyn Fn() -> PoolState + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    let serve = |stream: Stream, _, permit: OwnedSemaphorePermit| {
        let metrics = metrics.clone();
        let state = state.clone();
        let service = service_fn(move |request| {
            let answer = answer(&request, &metrics, state());
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            // One request a connection: an idle keep-alive connection would hold its place
            // for good, and a few such clients would keep /healthz from answering.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!("admin connection ended: {error}");
            }
            drop(permit);
        });
    };
    accept_until(listener, MAX_ADMIN_CONNECTIONS, shutdown, serve).await;
}

fn answer(
    request: &Request<Incoming>,
    metrics: &Metrics,
    state: PoolState,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut refused = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
        // RFC 9110 §15.5.6: a 405 says what the resource allows.
        refused
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, metrics.render(state)),
        "/healthz" => {
            let (workers, alive) = (state.workers, state.workers_alive);
            if alive >= workers {
                reply(
                    StatusCode::OK,
                    "text/plain",
                    format!("ok: {alive} of {workers} workers alive\n"),
                )
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("unhealthy: {alive} of {workers} workers alive\n"),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "/metrics or /healthz\n".into(),
        ),
    }
}
