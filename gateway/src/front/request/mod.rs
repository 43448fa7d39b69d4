//! The request core both fronts map onto. A front turns its request into a [`Route`]
//! ([`router`]), a [`RequestMeta`] ([`env`]) and a [`Body`] ([`body`]); [`Core::start`] then
//! applies the body policy, builds the CGI's environment by the one rule, admits the request
//! (backpressure), spawns the CGI on a worker with its three pipes, and returns its running
//! [`CgiOutput`] ([`output`]: deadline, output budget, delivered or abandoned). Every run has
//! one teardown path ([`watch`]) that kills the CGI's process group when its deadline passes
//! or its request is abandoned; errors are classified once ([`error`]) and rendered once
//! ([`render_error`]); the CGI's stderr is logged here. Both fronts drop from a CGI's answer
//! the fields a front server would act on ([`front_server`]).

pub mod body;
pub mod env;
pub mod error;
pub mod front_server;
pub mod output;
pub mod router;
pub mod spool;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::StatusCode;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use protocol::{SpawnRequest, Stdin};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::Instrument;

pub use body::Body;
pub use env::{RequestMeta, Variables};
pub use error::{internal, RequestError};
pub use output::{CgiOutput, RunExited};
pub use router::Route;

use super::access::RequestLog;
use super::metrics::{Metrics, PoolState};
use super::pool::{CgiEvent, CgiHandle, Pool, Spawned};
use crate::config::Config;
use spool::{Reservation, SpoolBudget};

/// A request body above this size gets [`LARGE_PIPE`]s for the CGI's stdin and stdout.
const LARGE_BODY: u64 = 256 * 1024;
/// Bytes: the most an unprivileged process may ask for (`/proc/sys/fs/pipe-max-size`).
const LARGE_PIPE: i32 = 1024 * 1024;
/// Longest CGI stderr line logged; the rest of a longer line is logged as further lines.
const MAX_STDERR_LINE: usize = 4096;
/// Most stderr bytes logged per request; beyond it stderr is read and dropped, so a chatty CGI
/// neither blocks on a full pipe nor floods the log.
const MAX_STDERR_LOGGED: usize = 64 * 1024;
/// How long past its CGIs' deadline a retiring pool waits for its last requests.
const RETIRE_GRACE: Duration = Duration::from_secs(5);
/// How long a worker has to report the exit of a CGI it was told to kill: it escalates to
/// SIGKILL after its grace period, so the report is due soon; the bound only guards against a
/// worker that stops answering.
const KILL_REPORT_WAIT: Duration = Duration::from_secs(10);

/// One configuration and the worker pool that serves it. A reload (SIGHUP) makes a new one;
/// each request keeps the one it started with until its CGI is done.
pub struct Generation {
    pub config: Arc<Config>,
    pub pool: Arc<Pool>,
}

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

/// What both fronts share: the current generation, the metrics, the request numbers.
pub struct Core {
    current: RwLock<Arc<Generation>>,
    pub metrics: Arc<Metrics>,
    /// Request body bytes held for CGIs, all requests and generations together.
    spool: Arc<SpoolBudget>,
    next_request: AtomicU64,
    /// The scripts whose front-server header fields were dropped and logged, across reloads.
    warned: front_server::WarnedScripts,
}

/// A CGI that runs: its output still to read, and when its request's body is in.
pub struct Started {
    pub output: CgiOutput,
    /// How the request body ended, once it has: whole, or why not (408, 503, ...); `None`
    /// without a streamed body.
    pub body_received: Option<oneshot::Receiver<Result<(), RequestError>>>,
    pub deadline: Instant,
    /// The script's URL path, as the worker found it.
    pub script: String,
}

impl Core {
    pub fn new(config: Arc<Config>, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Core {
        Core {
            current: RwLock::new(Generation::new(config, pool)),
            metrics,
            spool: Arc::default(),
            next_request: AtomicU64::new(1),
            warned: front_server::WarnedScripts::default(),
        }
    }

    /// Drops from the answer of `script` the header fields a front server would act on,
    /// unless `config` allows them for it ([`front_server::withhold`]).
    pub fn withhold_front_server_headers(
        &self,
        config: &Config,
        script: &str,
        headers: &mut http::HeaderMap,
    ) {
        front_server::withhold(
            headers,
            script,
            &config.allow_front_server_headers,
            &self.warned,
        );
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
        PoolState {
            spooled_bytes: self.spool.used(),
            spool_refusals: self.spool.refusals(),
            ..self.current().pool.state()
        }
    }

    /// How many requests have started, both fronts together.
    pub fn requests_started(&self) -> u64 {
        self.next_request.load(Ordering::Relaxed) - 1
    }

    /// When a request that starts now must be over: `--timeout` from now.
    pub fn request_deadline(&self) -> Instant {
        Instant::now() + self.current().config.timeout
    }

    /// A new request: its number and its access-log entry.
    pub fn new_request(&self, front: &'static str) -> Arc<RequestLog> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        RequestLog::new(
            id,
            front,
            self.current().config.access_log,
            self.metrics.clone(),
        )
    }

    /// Runs the script `route` names for the request `meta` describes, its stdin fed from
    /// `body`: the body policy, the environment, admission, the spawn. Returns once the CGI
    /// runs, with its output still to read. `deadline`: the request's, from its start
    /// ([`Core::request_deadline`]): a chunked body's spooling and every local redirect's CGI
    /// fall within the one `--timeout`.
    pub async fn start(
        &self,
        generation: &Arc<Generation>,
        route: &Route,
        meta: &RequestMeta<'_>,
        body: Body,
        log: &Arc<RequestLog>,
        deadline: Instant,
    ) -> Result<Started, RequestError> {
        let Generation { config, pool } = &**generation;
        let limits = body::BodyLimits {
            max: config.max_body_bytes,
            deadline: body::BodyDeadline::new(config.body_timeout),
            budget: self.spool.clone(),
            budget_limit: config.spool_budget,
        };
        let (body, content_length) = body::prepare(body, &limits, deadline).await?;
        let env = env::meta_variables(meta, route, content_length, &config.env);
        log.set_bytes_in(content_length.unwrap_or(0));
        let permit = pool.admit().await?;
        // The CGI gets plain blocking descriptors, as a program started from a shell would.
        let mut spooled = None;
        let (stdin, cgi_stdin) = match body {
            body::Prepared::Spooled(file, reservation) => {
                spooled = Some(reservation);
                (None, Some(OwnedFd::from(file)))
            }
            body::Prepared::Stream(body, first, length) => {
                let (cgi_stdin, stdin) = pipe_to_cgi().map_err(internal)?;
                (Some((body, first, length, stdin)), Some(cgi_stdin))
            }
            // No body: the worker gives the CGI its `/dev/null`, which reads end-of-file.
            body::Prepared::Empty => (None, None),
        };
        let (stdout, cgi_stdout) = pipe_from_cgi().map_err(internal)?;
        let (stderr, cgi_stderr) = pipe_from_cgi().map_err(internal)?;
        if content_length.is_some_and(|length| length > LARGE_BODY) {
            // Fewer, larger hand-offs between us and the CGI for a large body (and, for an
            // echo or a filter, its answer). Best effort: the kernel caps pipe memory per user.
            use nix::fcntl::{fcntl, FcntlArg::F_SETPIPE_SZ};
            if let Some((_, _, _, stdin)) = &stdin {
                let _ = fcntl(stdin, F_SETPIPE_SZ(LARGE_PIPE));
            }
            let _ = fcntl(&stdout, F_SETPIPE_SZ(LARGE_PIPE));
        }
        // The CGI runs as an id of its own, and `/dev/stdin` (`/proc/self/fd/0`) opens its
        // stdin anew, as the file it is: readable for stdin, writable for stdout and stderr,
        // not the other way (no CGI writes into a spooled body). Only the CGI's own processes
        // can reach these through /proc.
        let modes = cgi_stdin.iter().map(|fd| (fd, 0o444));
        let modes = modes.chain([(&cgi_stdout, 0o222), (&cgi_stderr, 0o222)]);
        for (fd, mode) in modes {
            nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(mode))
                .map_err(|errno| internal(errno.into()))?;
        }
        let spawn = SpawnRequest {
            id: 0,
            path: route.segments.clone(),
            env,
            limits: config.limits,
            stdin: match cgi_stdin {
                Some(_) => Stdin::Given,
                None => Stdin::Null,
            },
        };
        let spawned_at = Instant::now();
        let output = [cgi_stdout.as_fd(), cgi_stderr.as_fd()];
        let with_stdin;
        let cgi_fds: &[BorrowedFd] = match &cgi_stdin {
            Some(cgi_stdin) => {
                with_stdin = [cgi_stdin.as_fd(), output[0], output[1]];
                &with_stdin
            }
            None => &output,
        };
        let cgi = pool.spawn(spawn, cgi_fds).await?;
        // Our copies must go, or we would never see end-of-file on the CGI's output.
        drop((cgi_stdin, cgi_stdout, cgi_stderr));
        let worker = cgi.worker();

        // From here the watcher owns the CGI: `delivered` dropped unsent (an error below, or
        // this future dropped with its request) has it killed, reported or not.
        let (reported, report) = oneshot::channel();
        let (delivered, delivery) = oneshot::channel::<()>();
        let (exited, ended) = oneshot::channel::<RunExited>();
        let run = Run {
            started: spawned_at,
            log: log.clone(),
            _generation: generation.clone(),
            _permit: permit,
            _spooled: spooled,
        };
        let watcher = watch(cgi, deadline, reported, delivery, exited, run);
        tokio::spawn(watcher.in_current_span());
        let Spawned {
            pid,
            script_segments,
        } = report.await.unwrap_or(Err(RequestError::WorkerLost))?;
        // The worker is untrusted: the script it names must be a part of the request's path.
        let script = match usize::try_from(script_segments) {
            Ok(count @ 1..) if count <= route.segments.len() => route.url_path(count),
            _ => {
                tracing::error!(worker, "worker named a script outside the request");
                return Err(RequestError::WorkerLost);
            }
        };
        self.metrics.spawned(spawned_at.elapsed());
        log.set_script(&script);
        tracing::debug!(worker, pid, script, "CGI started");
        let body_received = stdin.map(|(body, first, length, stdin)| {
            let (received, body_received) = oneshot::channel();
            let feed = body::feed(body, first, length, stdin, deadline, limits, received);
            tokio::spawn(feed.in_current_span());
            body_received
        });
        tokio::spawn(log_stderr(stderr).in_current_span());
        Ok(Started {
            output: CgiOutput::new(stdout, deadline, config.max_output_bytes, delivered, ended),
            body_received,
            deadline,
            script,
        })
    }
}

/// Waits for the whole request body before the response goes out: a client (nginx among
/// them) that sees a response while it is still sending stops sending, and a CGI still
/// reading its input would then wait forever. The body is read whatever the CGI does, so
/// this wait depends on the client alone.
pub async fn body_complete(
    body_received: Option<oneshot::Receiver<Result<(), RequestError>>>,
    deadline: Instant,
) -> Result<(), RequestError> {
    let Some(body_received) = body_received else {
        return Ok(());
    };
    match timeout_at(deadline, body_received).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(RequestError::BadRequest("request body ended early")),
        Err(_) => Err(RequestError::Timeout),
    }
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
    /// A spooled body's share of the spool budget: the CGI holds the memory file until it
    /// exits.
    _spooled: Option<Reservation>,
}

/// Where the watcher tells a request how its CGI's start went: the worker's report, or why
/// there is none.
type Reported = Option<oneshot::Sender<Result<Spawned, RequestError>>>;

/// How a CGI's run ended, as far as its worker told.
enum Ended {
    Exited(protocol::ExitStatus),
    /// It could not be started; its request was told why.
    NeverStarted,
    WorkerLost,
}

/// The one teardown path of a CGI: it ends when the CGI exits, or is killed when the deadline
/// passes or the request is abandoned (its output dropped undelivered, or the request dropped
/// before the CGI was reported started). Tells the request the worker's report of the start
/// (`reported`), and holds the admission permit until the end.
async fn watch(
    mut cgi: CgiHandle,
    deadline: Instant,
    reported: oneshot::Sender<Result<Spawned, RequestError>>,
    delivery: oneshot::Receiver<()>,
    exited: oneshot::Sender<RunExited>,
    run: Run,
) {
    let mut reported = Some(reported);
    let abandoned = async {
        if delivery.await.is_ok() {
            // Output delivered: the CGI may take until the deadline to exit.
            std::future::pending::<()>().await;
        }
    };
    // Sent only for a CGI that exited by itself: dropped unsent, it tells the output that
    // the CGI was lost or killed (`CgiOutput::poll_whole`).
    let mut exited = Some(exited);
    let ended = tokio::select! {
        ended = follow(&mut cgi, &mut reported) => {
            if let (Ended::Exited(_), Some(exited)) = (&ended, exited.take()) {
                let _ = exited.send(RunExited);
            }
            ended
        }
        _ = sleep_until(deadline) => {
            tell(&mut reported, Err(RequestError::Timeout));
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
    match ended {
        Ended::Exited(status) => {
            tracing::debug!(%status, "CGI exited");
            run.log.set_exit(status, run.started.elapsed());
        }
        Ended::NeverStarted => {}
        Ended::WorkerLost => tracing::warn!("CGI's worker was lost"),
    }
    // Drops the permit and the generation: only now is its slot free.
    drop(cgi);
    drop(run);
}

async fn wait_after_kill(cgi: &mut CgiHandle) -> Ended {
    tokio::time::timeout(KILL_REPORT_WAIT, follow(cgi, &mut None))
        .await
        .unwrap_or(Ended::WorkerLost)
}

/// Follows the worker's reports on a CGI to its end, passing on the first, its start or why it
/// could not start, to `reported`.
async fn follow(cgi: &mut CgiHandle, reported: &mut Reported) -> Ended {
    loop {
        let Some(event) = cgi.next_event().await else {
            return Ended::WorkerLost;
        };
        match event {
            CgiEvent::Spawned(spawned) => tell(reported, Ok(spawned)),
            CgiEvent::SpawnFailed(error) => {
                tell(reported, Err(RequestError::Spawn(error)));
                return Ended::NeverStarted;
            }
            // An exit before any start is the worker's error: the request gets WorkerLost.
            CgiEvent::Exited(status) => return Ended::Exited(status),
        }
    }
}

/// Tells the request how its CGI's start went, if it was not told yet (and still listens).
fn tell(reported: &mut Reported, outcome: Result<Spawned, RequestError>) {
    if let Some(reported) = reported.take() {
        let _ = reported.send(outcome);
    }
}

/// A pipe the CGI reads (its stdin): `(the CGI's end, ours)`.
fn pipe_to_cgi() -> std::io::Result<(OwnedFd, pipe::Sender)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    set_nonblocking(&write)?;
    Ok((read, pipe::Sender::from_owned_fd_unchecked(write)?))
}

/// A pipe the CGI writes (its stdout or stderr): `(ours, the CGI's end)`.
fn pipe_from_cgi() -> std::io::Result<(pipe::Receiver, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    set_nonblocking(&read)?;
    Ok((pipe::Receiver::from_owned_fd_unchecked(read)?, write))
}

/// Makes our end of a CGI's pipe non-blocking; the CGI's end stays blocking, as a program
/// started from a shell expects. (tokio's `pipe()` would make and register both ends, and the
/// CGI's would need deregistering and making blocking again: three system calls more per
/// pipe, on every request's path.)
fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map(drop)
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

/// An error's status and short text (`404 Not Found\n`), logged with the reason: what both
/// fronts answer, each in its own framing.
pub fn render_error(error: &RequestError) -> (StatusCode, String) {
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
    (status, text)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::front::fake_workers::{self, Behaviour, FakeWorkers};
    use crate::front::pool::WorkerSource;

    /// A core over one fake worker, with a 30-second `--timeout`.
    async fn core(behaviour: Behaviour) -> (Core, Arc<FakeWorkers>) {
        let config = Arc::new(fake_workers::config(1, 4, 4));
        let workers = FakeWorkers::new(behaviour);
        let source: Arc<dyn WorkerSource> = workers.clone();
        let metrics = Arc::new(Metrics::new());
        let pool = Pool::start(config.clone(), source, metrics.clone(), 0, None)
            .await
            .expect("pool");
        (Core::new(config, pool, metrics), workers)
    }

    async fn start(core: &Core) -> Started {
        let generation = core.current();
        let route = router::route("/cgi-bin/hello", None).expect("route");
        let headers = http::HeaderMap::new();
        let meta = RequestMeta {
            method: b"GET",
            protocol: b"HTTP/1.1",
            request_uri: Cow::Borrowed(b"/cgi-bin/hello"),
            remote_addr: Cow::Borrowed(b"127.0.0.1"),
            remote_port: None,
            https: false,
            remote_user: None,
            auth_type: None,
            server_name: Cow::Borrowed(b"localhost"),
            server_addr: None,
            server_port: Cow::Borrowed(b"80"),
            content_type: None,
            variables: Variables::Headers(&headers),
        };
        let log = core.new_request("http");
        let deadline = core.request_deadline();
        core.start(&generation, &route, &meta, Body::None, &log, deadline)
            .await
            .expect("started")
    }

    /// Waits (on the paused clock) until the fake worker was told to kill something.
    async fn killed(workers: &FakeWorkers) -> Instant {
        while workers.record().kills.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_has_its_cgi_killed_at_once() {
        let (core, workers) = core(Behaviour::Serve).await;
        let started = start(&core).await;
        assert_eq!(started.script, "/cgi-bin/hello");
        let abandoned = Instant::now();
        drop(started);
        let at = killed(&workers).await;
        assert!(
            at - abandoned < Duration::from_secs(1),
            "{:?}",
            at - abandoned
        );
        // Its slot is free once the worker reports the exit.
        while core.pool_state().running > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        core.current().pool.shutdown().await;
    }

    /// A request dropped (its client gone) before its worker reported the CGI started: the
    /// CGI is killed, not left running outside `--max-concurrent` with nobody to stop it.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_before_its_cgi_is_reported_has_it_killed() {
        let (core, workers) = core(Behaviour::Silent).await;
        let mut starting = Box::pin(start(&core));
        let spawned = async {
            while workers.record().spawns.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            _ = &mut starting => panic!("a silent worker reported a start"),
            _ = spawned => {}
        }
        let dropped = Instant::now();
        drop(starting);
        let at = tokio::time::timeout(Duration::from_secs(60), killed(&workers))
            .await
            .expect("the CGI is killed");
        assert!(at - dropped < Duration::from_secs(1), "{:?}", at - dropped);
        core.current().pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_cgi_past_its_deadline_is_killed_even_once_delivered() {
        let (core, workers) = core(Behaviour::Serve).await;
        let mut started = start(&core).await;
        let deadline = started.deadline;
        // Its output went out whole: it may run on, but not past its deadline.
        started.output.deliver();
        let at = killed(&workers).await;
        assert!(at >= deadline, "killed {:?} early", deadline - at);
        assert!(
            at - deadline < Duration::from_secs(1),
            "{:?}",
            at - deadline
        );
        while core.pool_state().running > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(started);
        core.current().pool.shutdown().await;
    }

    #[test]
    fn errors_render_as_their_status() {
        let (status, text) = render_error(&RequestError::NotFound);
        assert_eq!((status.as_u16(), text.as_str()), (404, "404 Not Found\n"));
        let (status, text) = render_error(&RequestError::Overloaded);
        assert_eq!(
            (status.as_u16(), text.as_str()),
            (503, "503 Service Unavailable\n")
        );
    }
}
