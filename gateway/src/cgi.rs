//! One request through one CGI: route, environment, spawn on a worker, body in and output out
//! at the same time, headers parsed, body streamed, and one teardown path that kills the CGI's
//! process group when its deadline passes or its client goes away.

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use protocol::SpawnRequest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::Instrument;

use crate::access::{Counted, RequestLog};
use crate::cgi_env::{meta_variables, Connection};
use crate::config::Config;
use crate::error::RequestError;
use crate::metrics::{Metrics, PoolState};
use crate::pool::{CgiEvent, CgiHandle, Pool};
use crate::response::{read_head, CgiBody, HeadStyle};
use crate::router::{route, Route};
use crate::stdin::BodySource;

/// What every response body is: a short text of ours, or a CGI's output.
pub type ResponseBody = Either<Full<Bytes>, CgiBody<pipe::Receiver>>;

/// Longest CGI stderr line logged; the rest of a longer line is logged as further lines.
const MAX_STDERR_LINE: usize = 4096;
/// Most stderr bytes logged per request; beyond it stderr is read and dropped, so a chatty CGI
/// neither blocks on a full pipe nor floods the log.
const MAX_STDERR_LOGGED: usize = 64 * 1024;

/// One configuration and the worker pool that serves it. A reload (SIGHUP) makes a new one;
/// each request keeps the one it started with until its CGI is done.
pub struct Generation {
    pub config: Arc<Config>,
    pub pool: Arc<Pool>,
}

/// How long past its CGIs' deadline a retiring pool waits for its last requests.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

impl Generation {
    pub fn new(config: Arc<Config>, pool: Arc<Pool>) -> Arc<Generation> {
        Arc::new(Generation { config, pool })
    }

    /// Waits until no request uses this generation any more and its workers run no CGI,
    /// then stops its workers. No CGI outlives its --timeout, so that wait is bounded.
    pub async fn retire(self: Arc<Self>) {
        let give_up = Instant::now() + self.config.timeout + RETIRE_GRACE;
        while (Arc::strong_count(&self) > 1 || self.pool.busy() > 0) && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pool.shutdown().await;
        tracing::info!("the previous worker pool is retired");
    }
}

/// Shared state of the request handlers.
pub struct Gateway {
    current: RwLock<Arc<Generation>>,
    pub metrics: Arc<Metrics>,
    next_request: AtomicU64,
}

impl Gateway {
    pub fn new(config: Arc<Config>, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Gateway {
        Gateway {
            current: RwLock::new(Generation::new(config, pool)),
            metrics,
            next_request: AtomicU64::new(1),
        }
    }

    /// The configuration and pool new requests go to.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends new requests to `next` from now on; returns the generation it replaces.
    pub fn replace(&self, next: Arc<Generation>) -> Arc<Generation> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *current, next)
    }

    /// The current pool's state, for `/metrics` and `/healthz`.
    pub fn pool_state(&self) -> PoolState {
        self.current().pool.state()
    }

    /// Answers one HTTP request. Never fails: every error becomes a status and a short body.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: Connection,
    ) -> Result<Response<Counted<ResponseBody>>, Infallible> {
        let id = self.next_request_id();
        let span = tracing::info_span!("request", id);
        let log = RequestLog::new(
            id,
            "http",
            self.current().config.access_log,
            self.metrics.clone(),
        );
        let client = match connection {
            Connection::Tcp { remote, .. } => remote.ip().to_canonical().to_string(),
            Connection::Unix => "unix".to_owned(),
        };
        log.set_request(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
            client,
        );
        let response = self.serve(request, connection, &log).instrument(span).await;
        log.set_status(response.status().as_u16());
        Ok(response.map(|body| Counted::new(body, log)))
    }

    /// Numbers requests for the logs.
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs the request's CGI, and the CGIs its local redirects name (RFC 3875 §6.2.2).
    async fn serve(
        &self,
        request: Request<Incoming>,
        connection: Connection,
        log: &Arc<RequestLog>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = request.into_parts();
        let mut body = Some(body);
        for _ in 0..=MAX_LOCAL_REDIRECTS {
            match self.run_cgi(&parts, body.take(), connection, log).await {
                Ok(Outcome::Response(response)) => return response,
                Ok(Outcome::LocalRedirect(location)) => match redirected(&parts, &location) {
                    Ok(next) => parts = next,
                    Err(error) => return error_response(&error),
                },
                Err(error) => return error_response(&error),
            }
        }
        error_response(&RequestError::BadCgiOutput(format!(
            "more than {MAX_LOCAL_REDIRECTS} local redirects"
        )))
    }

    async fn run_cgi(
        &self,
        parts: &Parts,
        body: Option<Incoming>,
        connection: Connection,
        log: &Arc<RequestLog>,
    ) -> Result<Outcome, RequestError> {
        let current = self.current();
        let config = &current.config;
        let route = route(parts.uri.path(), parts.uri.query())?;
        let declared = match parts.headers.get(header::CONTENT_LENGTH) {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(RequestError::BadRequest("invalid Content-Length"))?,
            ),
            None => None,
        };
        if let Some(length) = declared.filter(|&length| length > config.max_body_bytes) {
            return Err(RequestError::BodyTooLarge(length));
        }
        let chunked = declared.is_none() && parts.headers.contains_key(header::TRANSFER_ENCODING);
        let (body, content_length) = match body {
            Some(body) if chunked => {
                // CGI needs CONTENT_LENGTH before the body (RFC 3875 §4.1.2), and a chunked
                // body has none until it ends: spool it, up to --max-body.
                let (file, length) = spool(body, config.max_body_bytes).await?;
                (RequestBody::Spooled(file), Some(length))
            }
            Some(mut body) if declared.unwrap_or(0) > 0 => {
                // A client that sent `Expect: 100-continue` waits for the interim response
                // before sending its body, and hyper sends it when the body is first read. Read
                // now, so that it cannot lose the race with the CGI's final response (after
                // which the client would never send the body the CGI waits for).
                let expects_continue = parts
                    .headers
                    .get(header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                let first = if expects_continue {
                    match timeout_at(Instant::now() + config.timeout, body.frame()).await {
                        Ok(Some(Ok(frame))) => frame.into_data().ok(),
                        Ok(None) => None,
                        Ok(Some(Err(_))) => {
                            return Err(RequestError::BadRequest("request body ended early"))
                        }
                        Err(_) => return Err(RequestError::Timeout),
                    }
                } else {
                    None
                };
                (RequestBody::Stream(BodySource::Http(body), first), declared)
            }
            _ => (RequestBody::Empty, None),
        };
        let env = meta_variables(parts, &route, connection, content_length, &config.env);
        log.set_bytes_in(content_length.unwrap_or(0));
        let started = self.start_cgi(&current, &route, env, body, log).await?;
        let Started {
            mut stdout,
            delivered,
            mut body_received,
            deadline,
            script,
        } = started;
        // RFC 3875 §5: a script whose name starts with nph- writes the HTTP head itself.
        let style = if script
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with("nph-"))
        {
            HeadStyle::Nph
        } else {
            HeadStyle::Cgi
        };
        let (head, first_bytes) =
            read_head_unless_body_fails(&mut stdout, style, &mut body_received, deadline).await?;
        body_complete(body_received, deadline).await?;
        if let Some(location) = head.local_redirect {
            // This CGI's part is done; dropping `delivered` unsent stops whatever it still runs.
            return Ok(Outcome::LocalRedirect(location));
        }
        let on_done = Box::new(move |complete: bool| {
            if complete {
                let _ = delivered.send(());
            }
        });
        let body = CgiBody::new(
            first_bytes,
            stdout,
            head.content_length,
            config.max_output_bytes,
            deadline,
            on_done,
        );
        let mut response = Response::new(Either::Right(body));
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        Ok(Outcome::Response(response))
    }

    /// Starts the script `route` names on a worker with `env`, its stdin fed from `body`: everything a run
    /// needs before its output is read, for the HTTP and the FastCGI front alike.
    pub(crate) async fn start_cgi(
        &self,
        generation: &Arc<Generation>,
        route: &Route,
        env: Vec<Vec<u8>>,
        body: RequestBody,
        log: &Arc<RequestLog>,
    ) -> Result<Started, RequestError> {
        let Generation { config, pool } = &**generation;
        let permit = pool.admit().await?;
        let (stdin, cgi_stdin) = pipe::pipe().map_err(internal)?;
        let (cgi_stdout, stdout) = pipe::pipe().map_err(internal)?;
        let (cgi_stderr, stderr) = pipe::pipe().map_err(internal)?;
        // The CGI gets plain blocking descriptors, as a program started from a shell would.
        let (stdin, cgi_stdin) = match body {
            RequestBody::Spooled(file) => (None, OwnedFd::from(file)),
            RequestBody::Stream(body, first) => (
                Some((body, first, stdin)),
                cgi_stdin.into_blocking_fd().map_err(internal)?,
            ),
            // No body: the CGI reads end-of-file at once.
            RequestBody::Empty => (None, cgi_stdin.into_blocking_fd().map_err(internal)?),
        };
        let cgi_fds: [OwnedFd; 3] = [
            cgi_stdin,
            cgi_stdout.into_blocking_fd().map_err(internal)?,
            cgi_stderr.into_blocking_fd().map_err(internal)?,
        ];
        let deadline = Instant::now() + config.timeout;
        let spawn = SpawnRequest {
            id: 0,
            path: route.segments.clone(),
            env,
            limits: config.limits,
        };
        let spawned_at = Instant::now();
        let mut cgi = pool.spawn(spawn, &cgi_fds).await?;
        // Our copies must go, or we would never see end-of-file on the CGI's output.
        drop(cgi_fds);

        let script = match timeout_at(deadline, cgi.next_event()).await {
            // The worker is untrusted: the script it names must be a part of the request's path.
            Ok(Some(CgiEvent::Spawned {
                pid,
                script_segments,
            })) => match usize::try_from(script_segments) {
                Ok(count @ 1..) if count <= route.segments.len() => {
                    let script = route.url_path(count);
                    self.metrics.spawned(spawned_at.elapsed());
                    log.set_script(&script);
                    tracing::debug!(worker = cgi.worker(), pid, script, "CGI started");
                    script
                }
                _ => {
                    tracing::error!(
                        worker = cgi.worker(),
                        "worker named a script outside the request"
                    );
                    cgi.kill().await;
                    return Err(RequestError::WorkerLost);
                }
            },
            Ok(Some(CgiEvent::SpawnFailed(error))) => return Err(RequestError::Spawn(error)),
            Ok(Some(CgiEvent::Exited(_))) => return Err(RequestError::WorkerLost),
            Ok(None) => return Err(RequestError::WorkerLost),
            Err(_) => {
                cgi.kill().await;
                return Err(RequestError::Timeout);
            }
        };
        let body_received = stdin.map(|(body, first, stdin)| {
            let (received, body_received) = oneshot::channel();
            tokio::spawn(
                crate::stdin::feed(body, first, stdin, deadline, received).in_current_span(),
            );
            body_received
        });
        tokio::spawn(log_stderr(stderr).in_current_span());
        // Sent once the CGI's whole output is delivered; dropped unsent if the request is
        // abandoned for any reason (error, client gone, this future cancelled), which kills it.
        let (delivered, delivery) = oneshot::channel::<()>();
        let run = Run {
            started: spawned_at,
            log: log.clone(),
            _generation: generation.clone(),
            _permit: permit,
        };
        tokio::spawn(watch(cgi, deadline, delivery, run).in_current_span());
        Ok(Started {
            stdout,
            delivered,
            body_received,
            deadline,
            script,
        })
    }
}

/// A CGI that runs: its output still to read, and the signals that end its run.
pub(crate) struct Started {
    pub stdout: pipe::Receiver,
    /// Send once the output is delivered in full; dropping it unsent kills the CGI.
    pub delivered: oneshot::Sender<()>,
    /// Fires when the whole request body has arrived; `None` without a streamed body.
    pub body_received: Option<oneshot::Receiver<()>>,
    pub deadline: Instant,
    /// The script's URL path, as the worker found it.
    pub script: String,
}

/// Reads the CGI's header block by `deadline`, but gives up as soon as the request body fails
/// (the client went away mid-upload, or its body was malformed): the request is over, and
/// returning drops its `delivered` sender, which kills the CGI now rather than at its
/// deadline. A body that arrives whole meanwhile leaves `body_received` at `None`.
async fn read_head_unless_body_fails(
    stdout: &mut pipe::Receiver,
    style: HeadStyle,
    body_received: &mut Option<oneshot::Receiver<()>>,
    deadline: Instant,
) -> Result<(crate::response::CgiHead, Bytes), RequestError> {
    let head = timeout_at(deadline, read_head(stdout, style));
    tokio::pin!(head);
    loop {
        let body_ended = async {
            match body_received.as_mut() {
                Some(received) => Some(received.await),
                None => std::future::pending().await,
            }
        };
        let body = tokio::select! {
            biased;
            parsed = &mut head => return parsed.unwrap_or(Err(RequestError::Timeout)),
            body = body_ended => body,
        };
        match body {
            // All of it arrived: only the head is awaited now.
            Some(Ok(())) => *body_received = None,
            // The body reader stops at the deadline too: that is the CGI's timeout.
            _ if Instant::now() >= deadline => return Err(RequestError::Timeout),
            _ => return Err(RequestError::BadRequest("request body ended early")),
        }
    }
}

/// Waits for the whole request body before the response goes out: a client (nginx among
/// them) that sees a response while it is still sending stops sending, and a CGI still
/// reading its input would then wait forever. The body is read whatever the CGI does, so
/// this wait depends on the client alone.
pub(crate) async fn body_complete(
    body_received: Option<oneshot::Receiver<()>>,
    deadline: Instant,
) -> Result<(), RequestError> {
    let Some(body_received) = body_received else {
        return Ok(());
    };
    match timeout_at(deadline, body_received).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(RequestError::BadRequest("request body ended early")),
        Err(_) => Err(RequestError::Timeout),
    }
}

/// Local redirects one request may follow; more is a loop (Apache allows 10 too).
const MAX_LOCAL_REDIRECTS: usize = 10;

/// What running one CGI came to.
// Returned once per request and unpacked at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Response(Response<ResponseBody>),
    /// RFC 3875 §6.2.2: serve this local path instead.
    LocalRedirect(String),
}

/// The request body, as the CGI will read it.
pub(crate) enum RequestBody {
    Empty,
    /// Streamed into a pipe while the CGI runs (Content-Length known), after the data already
    /// read, if any.
    Stream(BodySource, Option<Bytes>),
    /// A chunked body, spooled whole to an unlinked temporary file that becomes the CGI's stdin.
    Spooled(std::fs::File),
}

/// The request a local redirect makes: a GET of `location` with the original headers but no
/// body (RFC 3875 §6.2.2: the server treats it as a new request for that path).
fn redirected(parts: &Parts, location: &str) -> Result<Parts, RequestError> {
    let uri = location
        .parse::<http::Uri>()
        .map_err(|_| RequestError::BadCgiOutput("local redirect to an invalid path".into()))?;
    let mut next = Request::new(());
    *next.method_mut() = http::Method::GET;
    *next.uri_mut() = uri;
    *next.version_mut() = parts.version;
    *next.headers_mut() = parts.headers.clone();
    for framing in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        next.headers_mut().remove(framing);
    }
    Ok(next.into_parts().0)
}

/// Reads a chunked request body into an unlinked temporary file, refusing it past `limit`.
async fn spool(mut body: Incoming, limit: u64) -> Result<(std::fs::File, u64), RequestError> {
    use std::io::{Seek, SeekFrom, Write};
    // Writes go to the page cache of an unlinked file: short enough not to need a thread.
    let mut file = tempfile::tempfile().map_err(internal)?;
    let mut length: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| RequestError::BadRequest("request body ended early"))?;
        if let Ok(data) = frame.into_data() {
            length += data.len() as u64;
            if length > limit {
                return Err(RequestError::BodyTooLarge(length));
            }
            file.write_all(&data).map_err(internal)?;
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(internal)?;
    Ok((file, length))
}

/// What a running CGI holds until it has exited.
struct Run {
    started: Instant,
    /// Gets the exit status.
    log: Arc<RequestLog>,
    /// Keeps its pool from retiring.
    _generation: Arc<Generation>,
    /// Its place among --max-concurrent.
    _permit: OwnedSemaphorePermit,
}

/// The one teardown path of a CGI: it ends when the CGI exits, or is killed when the deadline
/// passes or the request is abandoned. Holds the admission permit until then.
async fn watch(mut cgi: CgiHandle, deadline: Instant, delivery: oneshot::Receiver<()>, run: Run) {
    let abandoned = async {
        if delivery.await.is_ok() {
            // Output delivered: the CGI may take until the deadline to exit.
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        event = wait_exit(&mut cgi) => event,
        _ = sleep_until(deadline) => {
            tracing::warn!("CGI exceeded the timeout; killing its process group");
            cgi.kill().await;
            wait_after_kill(&mut cgi).await
        }
        _ = abandoned => {
            tracing::debug!("request abandoned; killing the CGI's process group");
            cgi.kill().await;
            wait_after_kill(&mut cgi).await
        }
    };
    match outcome {
        Some(status) => {
            tracing::debug!(%status, "CGI exited");
            run.log.set_exit(status, run.started.elapsed());
        }
        None => tracing::warn!("CGI's worker was lost"),
    }
    // Drops the permit and the generation: only now is its slot free.
    drop(cgi);
    drop(run);
}

/// The worker escalates to SIGKILL after its grace period, so an exit report is due soon; the
/// bound only guards against a worker that stops answering.
async fn wait_after_kill(cgi: &mut CgiHandle) -> Option<protocol::ExitStatus> {
    tokio::time::timeout(Duration::from_secs(10), wait_exit(cgi))
        .await
        .ok()
        .flatten()
}

async fn wait_exit(cgi: &mut CgiHandle) -> Option<protocol::ExitStatus> {
    loop {
        match cgi.next_event().await? {
            CgiEvent::Exited(status) => return Some(status),
            _ => continue,
        }
    }
}

/// Logs the CGI's stderr, tagged with the request's span, line by line and bounded.
async fn log_stderr(stderr: pipe::Receiver) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0;
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(read) if logged < MAX_STDERR_LOGGED => {
                logged += read;
                let text = String::from_utf8_lossy(&line);
                tracing::warn!("CGI stderr: {}", text.trim_end().escape_debug());
                if logged >= MAX_STDERR_LOGGED {
                    tracing::warn!(
                        "CGI stderr: more than {MAX_STDERR_LOGGED} bytes; the rest is not logged"
                    );
                }
            }
            Ok(_) => {}
        }
    }
}

fn internal(error: std::io::Error) -> RequestError {
    match error.raw_os_error() {
        // Out of descriptors (ours, or the machine's): overload, not a fault. 503 with
        // Retry-After, and the request can succeed once connections have closed.
        Some(libc::EMFILE | libc::ENFILE) => {
            tracing::warn!("cannot run a CGI: {error}");
            RequestError::Overloaded
        }
        _ => RequestError::Internal(error.to_string()),
    }
}

/// A short plain-text answer for an error, logged with the reason.
pub fn error_response(error: &RequestError) -> Response<ResponseBody> {
    let status = error.status();
    // Overload is not a fault, and comes by the thousand per second: the access log and
    // jailgate_rejected_total count it; a warning each would flood the log.
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!("{error}");
    } else {
        tracing::debug!("{error}");
    }
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
