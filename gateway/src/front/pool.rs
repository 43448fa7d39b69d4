//! The workers: started before the first request, picked least-busy first, replaced with
//! back-off when they die. Everything a worker sends is untrusted (it shares the jail with the
//! CGIs): a bad message ends that one worker, never the gateway.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::supervisor::HOLDER_EXIT_WAIT;
use protocol::{
    Channel, ChannelError, ExitStatus, FromWorker, RecvBuffer, SpawnError, SpawnId, SpawnRequest,
    Stop, ToWorker,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout, Instant};

use super::metrics::{Metrics, PoolState};
use super::request::error::RequestError;
use crate::config::Config;

/// A boxed future, as [`WorkerSource`]'s methods return (starting a worker is rare: the box
/// costs nothing that matters).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What provides the pool's worker processes: the root supervisor in the gateway
/// ([`super::supervisor_link::SupervisorLink`]), a fake worker in the pool's tests.
pub trait WorkerSource: Send + Sync + 'static {
    /// Starts a worker for `slot` (unique across reloads).
    fn start(&self, slot: usize) -> BoxFuture<'_, Result<StartedWorker, String>>;
    /// Makes sure the worker's holder process is gone; returns once it is.
    fn stop(&self, slot: usize, holder: u32, how: Stop) -> BoxFuture<'_, ()>;
    /// The pool of reload `generation` serves no more (retired, or never started): no slot of
    /// it will be started again.
    fn retire(&self, generation: usize) -> BoxFuture<'_, ()>;
}

/// A worker just started: its holder process (what stopping it names), the front's end of its
/// channel, and the read end of its stderr.
pub struct StartedWorker {
    pub holder: u32,
    pub channel: Channel,
    pub stderr: OwnedFd,
}

fn wait(time: Duration) -> Stop {
    Stop::Wait {
        millis: time.as_millis() as u64,
    }
}

/// How long a new worker has to enter its jail and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker told to shut down has before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Restart back-off after a worker dies: doubles from the first to the last value, and starts
/// over once a worker has lived for [`HEALTHY_LIFETIME`].
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The back-off's cap after the death of a worker that was ready: it proved the jail works, so
/// its death (killed, crashed) is no reason to leave the slot empty for long, even in a loop
/// (at most ten starts a second per slot, a few milliseconds of CPU each): the pool is whole
/// again within a second of losing its workers, even on a busy machine.
const BACKOFF_MAX_AFTER_READY: Duration = Duration::from_millis(100);
const HEALTHY_LIFETIME: Duration = Duration::from_secs(10);
/// How long a request waits for a live worker when there is none (every worker died at once
/// and is being replaced) before it gets 503: it is not one of the dead workers' requests, so
/// it should not fail with them.
const WORKER_WAIT: Duration = Duration::from_secs(5);
/// Longest line of a worker's own stderr that is logged.
const MAX_LOG_LINE: usize = 4096;
/// All a worker process may have logged: its messages are a few lines at start and on errors.
const MAX_WORKER_LOG: usize = 256 * 1024;
/// How often a live worker is asked whether it still answers, and how long it has to: a
/// worker that is stopped (SIGSTOP), starved of CPU or stuck is replaced within their sum.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PONG_TIMEOUT: Duration = Duration::from_secs(3);
/// Spawns in a row that a worker fails for want of resources (a process limit, memory)
/// before it is taken for broken and replaced: a fresh worker starts with fresh limits.
const MAX_SPAWN_FAILURES: usize = 16;
/// The longest a message to a worker may wait for room in its socket. A live worker reads
/// its messages as they come; one that lets them pile up this long is stopped and replaced.
const SEND_LIMIT: Duration = Duration::from_secs(5);

/// What a worker reports about one CGI.
#[derive(Debug)]
pub enum CgiEvent {
    Spawned(Spawned),
    SpawnFailed(SpawnError),
    Exited(ExitStatus),
}

/// A worker's report that a CGI started.
#[derive(Debug)]
pub struct Spawned {
    /// Inside the worker's PID namespace, for logs.
    pub pid: u32,
    /// How many segments of the request's path named the script (unchecked: the worker is
    /// untrusted).
    pub script_segments: u32,
}

/// The gateway's side of one live worker.
struct WorkerLink {
    index: usize,
    channel: Channel,
    /// The CGIs running on this worker; its length is the worker's load.
    pending: Mutex<HashMap<SpawnId, PendingCgi>>,
    next_id: AtomicU64,
    /// The last `Ping` sent, and the last the worker answered.
    pinged: AtomicU64,
    answered: watch::Sender<u64>,
    /// Spawns it failed in a row for want of resources.
    spawn_failures: AtomicUsize,
    /// Told when a message to the worker could not be sent within [`SEND_LIMIT`]: a worker
    /// that does not read its socket is stopped, not waited for.
    stuck: Notify,
}

/// One CGI of a worker, as the gateway follows its reports: at most a start (or why there is
/// none) and an exit, in that order. Any other report breaks the protocol, so a worker cannot
/// queue reports without end.
struct PendingCgi {
    events: mpsc::UnboundedSender<CgiEvent>,
    started: bool,
    ended: bool,
}

impl WorkerLink {
    /// The link to worker `index`, which has just said it is ready on `channel`.
    fn new(index: usize, channel: Channel) -> WorkerLink {
        WorkerLink {
            index,
            channel,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            pinged: AtomicU64::new(0),
            answered: watch::Sender::new(0),
            spawn_failures: AtomicUsize::new(0),
            stuck: Notify::new(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<SpawnId, PendingCgi>> {
        // A panic elsewhere cannot leave the map half-updated (each use is one call), so a
        // poisoned lock is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker's load: its CGIs, and its spawn failures in a row, so that a worker whose
    /// spawns fail at once never looks the least busy and attracts every request.
    fn load(&self) -> usize {
        self.pending().len() + self.spawn_failures.load(Ordering::Relaxed)
    }

    /// Routes one message from the worker to the request it belongs to.
    fn dispatch(&self, message: FromWorker) -> Result<(), String> {
        let (id, events) = match message {
            FromWorker::Spawned {
                id,
                pid,
                script_segments,
            } => (id, [Some(spawned(pid, script_segments)), None]),
            FromWorker::SpawnedAndExited {
                id,
                pid,
                script_segments,
                status,
            } => (
                id,
                [
                    Some(spawned(pid, script_segments)),
                    Some(CgiEvent::Exited(status)),
                ],
            ),
            FromWorker::SpawnFailed { id, error } => {
                if matches!(error, SpawnError::NoResources { .. }) {
                    self.spawn_failures.fetch_add(1, Ordering::Relaxed);
                }
                (id, [Some(CgiEvent::SpawnFailed(error)), None])
            }
            FromWorker::Exited { id, status } => (id, [Some(CgiEvent::Exited(status)), None]),
            FromWorker::Pong { seq } => {
                if seq > self.pinged.load(Ordering::Relaxed) {
                    return Err(format!("answered ping {seq}, which was never sent"));
                }
                self.answered.send_replace(seq);
                return Ok(());
            }
            FromWorker::Ready { .. } => return Err("second Ready message".into()),
        };
        if id >= self.next_id.load(Ordering::Relaxed) {
            return Err(format!("report on CGI {id}, which it was never asked for"));
        }
        let mut pending = self.pending();
        // The request may have ended already (its handle dropped): nobody listens, fine.
        let Some(cgi) = pending.get_mut(&id) else {
            return Ok(());
        };
        for event in events.into_iter().flatten() {
            match (&event, cgi.started, cgi.ended) {
                (CgiEvent::Spawned(_), false, false) => {
                    cgi.started = true;
                    self.spawn_failures.store(0, Ordering::Relaxed);
                }
                (CgiEvent::SpawnFailed(_), false, false) | (CgiEvent::Exited(_), true, false) => {
                    cgi.ended = true;
                }
                _ => return Err(format!("report on CGI {id} out of order: {event:?}")),
            }
            let _ = cgi.events.send(event);
        }
        Ok(())
    }

    /// Sends `message` to the worker, or gives up after [`SEND_LIMIT`] and has the worker
    /// stopped: only a worker that does not read its socket lets the queue fill so long.
    async fn send(&self, message: &ToWorker, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        match timeout(SEND_LIMIT, self.channel.send(message, fds)).await {
            Ok(sent) => sent,
            Err(_) => {
                self.stuck.notify_one();
                Err(ChannelError::Io(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

fn spawned(pid: u32, script_segments: u32) -> CgiEvent {
    CgiEvent::Spawned(Spawned {
        pid,
        script_segments,
    })
}

/// One running CGI as the request sees it. Dropping it forgets the CGI on the gateway side;
/// use [`CgiHandle::kill`] first if it may still run.
pub struct CgiHandle {
    link: Arc<WorkerLink>,
    id: SpawnId,
    events: mpsc::UnboundedReceiver<CgiEvent>,
}

impl CgiHandle {
    /// The next report about this CGI; `None` once its worker is gone.
    pub async fn next_event(&mut self) -> Option<CgiEvent> {
        self.events.recv().await
    }

    /// Asks the worker to kill the CGI's process group (SIGTERM, then SIGKILL).
    pub async fn kill(&self) {
        let _ = self.link.send(&ToWorker::Kill { id: self.id }, &[]).await;
    }

    pub fn worker(&self) -> usize {
        self.link.index
    }
}

impl Drop for CgiHandle {
    fn drop(&mut self) {
        self.link.pending().remove(&self.id);
    }
}

struct Slot {
    link: Mutex<Option<Arc<WorkerLink>>>,
}

impl Slot {
    fn set(&self, link: Option<Arc<WorkerLink>>) {
        *self
            .link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = link;
    }

    fn get(&self) -> Option<Arc<WorkerLink>> {
        self.link
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

pub struct Pool {
    config: Arc<Config>,
    workers: Arc<dyn WorkerSource>,
    metrics: Arc<Metrics>,
    /// Counts reloads; keeps this pool's worker slots apart from an older pool's.
    generation: usize,
    slots: Vec<Slot>,
    /// One permit per CGI that may run at once: shared by every pool a reload makes, so that
    /// the CGIs of a pool that retires still count until they end.
    admission: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Woken whenever a worker becomes ready.
    worker_ready: Notify,
    shutdown: watch::Sender<bool>,
    /// One task per slot, keeping it filled.
    slot_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("worker {index} failed to start: {reason}")]
pub struct StartError {
    pub index: usize,
    pub reason: String,
}

impl Pool {
    /// Starts `config.workers` workers and returns once every one of them is in its jail and
    /// ready, or with the first failure (a broken jail fails the start, it is not retried).
    /// `previous`: the pool this one takes over from (a reload); they share the admission of
    /// CGIs and its queue, resized to this pool's `--max-concurrent` once it has started.
    pub async fn start(
        config: Arc<Config>,
        workers: Arc<dyn WorkerSource>,
        metrics: Arc<Metrics>,
        generation: usize,
        previous: Option<&Pool>,
    ) -> Result<Arc<Pool>, StartError> {
        let (admission, waiting) = match previous {
            Some(previous) => (previous.admission.clone(), previous.waiting.clone()),
            None => (
                Arc::new(Semaphore::new(config.max_concurrent)),
                Arc::default(),
            ),
        };
        let (shutdown, _) = watch::channel(false);
        let pool = Arc::new(Pool {
            slots: (0..config.workers)
                .map(|_| Slot {
                    link: Mutex::new(None),
                })
                .collect(),
            admission,
            waiting,
            worker_ready: Notify::new(),
            config,
            workers,
            metrics,
            generation,
            shutdown,
            slot_tasks: Mutex::new(Vec::new()),
        });
        let mut first_starts = Vec::new();
        for index in 0..pool.slots.len() {
            let (started, first_start) = oneshot::channel();
            let task = tokio::spawn(keep_slot_filled(pool.clone(), index, started));
            pool.slot_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
            first_starts.push(first_start);
        }
        for (index, first_start) in first_starts.into_iter().enumerate() {
            let outcome = first_start
                .await
                .unwrap_or_else(|_| Err("the slot's task ended".into()));
            if let Err(reason) = outcome {
                pool.shutdown().await;
                return Err(StartError { index, reason });
            }
        }
        if let Some(previous) = previous {
            resize(
                &pool.admission,
                previous.config.max_concurrent,
                pool.config.max_concurrent,
            );
        }
        Ok(pool)
    }

    /// Waits for room to run one more CGI; 503 if the wait queue is full or the wait too long.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        if let Ok(permit) = self.admission.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // A place in the queue, given back however the wait ends: a request whose client goes
        // away is dropped mid-wait, and must not keep its place for good.
        let place = QueuePlace::take(&self.waiting);
        if place.ahead >= self.config.queue.unwrap_or(self.config.max_concurrent) {
            self.metrics.rejected(true);
            return Err(RequestError::Overloaded);
        }
        let permit = timeout(
            self.config.queue_timeout,
            self.admission.clone().acquire_owned(),
        )
        .await;
        drop(place);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.metrics.rejected(false);
                Err(RequestError::Overloaded)
            }
        }
    }

    /// Running CGIs, waiting requests, and workers configured and alive, for `/metrics`.
    pub fn state(&self) -> PoolState {
        let links: Vec<_> = self.slots.iter().filter_map(Slot::get).collect();
        PoolState {
            running: self
                .config
                .max_concurrent
                .saturating_sub(self.admission.available_permits()),
            queued: self.waiting.load(Ordering::SeqCst),
            workers: self.slots.len(),
            workers_alive: links.len(),
            ..PoolState::default()
        }
    }

    /// CGIs still known to this pool's workers (running, or their request still reading).
    pub fn busy(&self) -> usize {
        self.slots
            .iter()
            .filter_map(Slot::get)
            .map(|link| link.load())
            .sum()
    }

    /// The supervisor's number for this pool's slot `index`: unique across reloads.
    fn slot_id(&self, index: usize) -> usize {
        self.generation * crate::config::MAX_WORKERS + index
    }

    /// Sends a spawn request to the least-busy live worker, with the CGI's ends of its stdin,
    /// stdout and stderr pipes. The caller drops its copies of those afterwards.
    pub async fn spawn(
        &self,
        mut request: SpawnRequest,
        cgi_fds: &[BorrowedFd<'_>],
    ) -> Result<CgiHandle, RequestError> {
        let cap = self.config.cgis_per_worker;
        let (load, link) = self.least_busy_worker().await?;
        if load >= cap {
            // Only when workers are down: admission already bounds the total to workers × cap.
            return Err(RequestError::Overloaded);
        }
        request.id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_in, events) = mpsc::unbounded_channel();
        link.pending().insert(
            request.id,
            PendingCgi {
                events: events_in,
                started: false,
                ended: false,
            },
        );
        let handle = CgiHandle {
            link,
            id: request.id,
            events,
        };
        match handle.link.send(&ToWorker::Spawn(request), cgi_fds).await {
            Ok(()) => Ok(handle),
            Err(ChannelError::Codec(_)) => {
                Err(RequestError::BadRequest("request headers too large"))
            }
            // Out of descriptors or buffers on our side, not the worker's fault. ETOOMANYREFS:
            // the kernel refuses to pass more descriptors once those our user has in flight
            // exceed our RLIMIT_NOFILE (unix(7)).
            Err(ChannelError::Io(error))
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETOOMANYREFS | libc::EMFILE | libc::ENFILE | libc::ENOBUFS)
                ) =>
            {
                tracing::warn!("cannot pass a CGI's pipes to its worker: {error}");
                Err(RequestError::Overloaded)
            }
            Err(_) => Err(RequestError::WorkerLost),
        }
    }

    /// The live worker with the fewest CGIs, and that number. When no worker is live (all of
    /// them died at once and are being replaced), waits up to [`WORKER_WAIT`] for one.
    async fn least_busy_worker(&self) -> Result<(usize, Arc<WorkerLink>), RequestError> {
        let least_busy = || {
            self.slots
                .iter()
                .filter_map(Slot::get)
                .map(|link| (link.load(), link))
                .min_by_key(|(load, _)| *load)
        };
        if let Some(found) = least_busy() {
            return Ok(found);
        }
        let mut shutdown = self.shutdown.subscribe();
        let replaced = async {
            loop {
                let ready = self.worker_ready.notified();
                tokio::pin!(ready);
                // Registered before the look, so a worker ready in between is not missed.
                ready.as_mut().enable();
                if let Some(found) = least_busy() {
                    return found;
                }
                ready.await;
            }
        };
        tokio::select! {
            found = timeout(WORKER_WAIT, replaced) => found.map_err(|_| RequestError::NoWorker),
            _ = shutdown.wait_for(|stop| *stop) => Err(RequestError::NoWorker),
        }
    }

    /// How many workers are live right now.
    pub fn live_workers(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.get().is_some())
            .count()
    }

    /// Tells every worker to stop (their CGIs die with them) and waits for them to exit.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.slot_tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Makes `admission`, made for `from` CGIs at once, hold `to`. Permits that running CGIs hold
/// stay taken: a smaller count is reached as they end (the permits are taken back first, ahead
/// of new requests).
fn resize(admission: &Arc<Semaphore>, from: usize, to: usize) {
    if to >= from {
        admission.add_permits(to - from);
        return;
    }
    let excess = from - to;
    let still_held = excess - admission.forget_permits(excess);
    if still_held > 0 {
        let admission = admission.clone();
        let still_held = u32::try_from(still_held).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(permits) = admission.acquire_many_owned(still_held).await {
                permits.forget();
            }
        });
    }
}

/// One request's place among those waiting for a CGI slot; leaving it (dropped) counts it out.
struct QueuePlace<'a> {
    waiting: &'a AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> QueuePlace<'a> {
    fn take(waiting: &'a AtomicUsize) -> QueuePlace<'a> {
        let ahead = waiting.fetch_add(1, Ordering::SeqCst);
        QueuePlace { waiting, ahead }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps one slot filled: start a worker, serve its messages until it dies, start another.
async fn keep_slot_filled(
    pool: Arc<Pool>,
    index: usize,
    first_start: oneshot::Sender<Result<(), String>>,
) {
    let mut first_start = Some(first_start);
    let mut shutdown = pool.shutdown.subscribe();
    let mut backoff = BACKOFF_FIRST;
    let mut buffer = RecvBuffer::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started_at = Instant::now();
        let mut was_ready = false;
        let slot = pool.slot_id(index);
        if first_start.is_none() {
            pool.metrics.worker_restarted();
        }
        match start_worker(&*pool.workers, index, slot, &mut buffer).await {
            Ok((link, holder)) => {
                was_ready = true;
                if let Some(first_start) = first_start.take() {
                    let _ = first_start.send(Ok(()));
                }
                pool.slots[index].set(Some(link.clone()));
                pool.worker_ready.notify_waiters();
                let lost = tokio::select! {
                    reason = read_messages(&link, &mut buffer) => Some(reason),
                    reason = watch_health(&link) => Some(reason),
                    () = link.stuck.notified() => Some(WorkerGone::Unhealthy(format!(
                        "does not read its messages (one waited {SEND_LIMIT:?})"
                    ))),
                    _ = shutdown.wait_for(|stop| *stop) => None,
                };
                pool.slots[index].set(None);
                // Dropping the senders tells every waiting request that its worker is gone.
                link.pending().clear();
                match lost {
                    None => {
                        // Bounded: the holder is stopped below whether or not it went out.
                        let _ = link.send(&ToWorker::Shutdown, &[]).await;
                        pool.workers.stop(slot, holder, wait(SHUTDOWN_GRACE)).await;
                        return;
                    }
                    Some(WorkerGone::Exited) => {
                        tracing::warn!(worker = index, "worker exited; its requests fail with 502");
                        // Its holder reaps it and exits right after.
                        pool.workers
                            .stop(slot, holder, wait(HOLDER_EXIT_WAIT))
                            .await;
                    }
                    Some(WorkerGone::Misbehaved(reason)) => {
                        tracing::error!(
                            worker = index,
                            "stopping worker: {reason}; its requests fail with 502"
                        );
                        pool.workers.stop(slot, holder, Stop::Terminate).await;
                    }
                    Some(WorkerGone::Unhealthy(reason)) => {
                        tracing::error!(
                            worker = index,
                            "worker {index} {reason}: replacing it; its requests fail with 502"
                        );
                        pool.workers.stop(slot, holder, Stop::Terminate).await;
                    }
                }
            }
            Err(reason) => {
                if let Some(first_start) = first_start.take() {
                    let _ = first_start.send(Err(reason));
                    return;
                }
                tracing::error!(worker = index, "cannot restart worker: {reason}");
            }
        }
        backoff = if started_at.elapsed() >= HEALTHY_LIFETIME {
            BACKOFF_FIRST
        } else if was_ready {
            (backoff * 2).min(BACKOFF_MAX_AFTER_READY)
        } else {
            (backoff * 2).min(BACKOFF_MAX)
        };
        tokio::select! {
            _ = sleep(backoff) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Has `workers` start a worker for `index` (the supervisor's `slot`), then waits for the
/// worker's Ready.
async fn start_worker(
    workers: &dyn WorkerSource,
    index: usize,
    slot: usize,
    buffer: &mut RecvBuffer,
) -> Result<(Arc<WorkerLink>, u32), String> {
    let StartedWorker {
        holder,
        channel: ours,
        stderr,
    } = workers.start(slot).await?;
    match pipe::Receiver::from_owned_fd(stderr) {
        Ok(stderr) => {
            tokio::spawn(log_worker_stderr(index, stderr));
        }
        Err(error) => tracing::warn!(worker = index, "cannot read the worker's stderr: {error}"),
    }
    let ready = timeout(READY_TIMEOUT, ours.recv::<FromWorker>(buffer)).await;
    let failure = match ready {
        Ok(Ok((FromWorker::Ready { version, pid }, fds)))
            if version == protocol::PROTOCOL_VERSION && fds.is_empty() =>
        {
            tracing::info!(
                worker = index,
                holder_pid = holder,
                worker_pid = pid,
                "worker ready"
            );
            return Ok((Arc::new(WorkerLink::new(index, ours)), holder));
        }
        Ok(Ok((FromWorker::Ready { version, .. }, _))) => format!(
            "speaks protocol {version}, not {}",
            protocol::PROTOCOL_VERSION
        ),
        Ok(Ok((other, _))) => format!("sent {other:?} before Ready"),
        Ok(Err(ChannelError::Closed)) => {
            "exited during start-up; its message is logged above".to_string()
        }
        Ok(Err(error)) => format!("bad handshake: {error}"),
        Err(_) => format!("not ready within {READY_TIMEOUT:?}"),
    };
    workers.stop(slot, holder, Stop::Terminate).await;
    Err(failure)
}

/// Why a worker's link ended.
enum WorkerGone {
    Exited,
    /// Broke the protocol: it may be compromised, and is stopped.
    Misbehaved(String),
    /// Stopped answering, or cannot start CGIs any more: it is stopped and replaced.
    Unhealthy(String),
}

/// Asks the worker every [`PING_INTERVAL`] whether it answers; ends when it has not within
/// [`PONG_TIMEOUT`], or has failed [`MAX_SPAWN_FAILURES`] spawns in a row.
async fn watch_health(link: &WorkerLink) -> WorkerGone {
    let mut answered = link.answered.subscribe();
    let mut seq = 0;
    loop {
        sleep(PING_INTERVAL).await;
        let failures = link.spawn_failures.load(Ordering::Relaxed);
        if failures >= MAX_SPAWN_FAILURES {
            return WorkerGone::Unhealthy(format!(
                "failed {failures} spawns in a row for want of resources"
            ));
        }
        seq += 1;
        link.pinged.store(seq, Ordering::Relaxed);
        match link.send(&ToWorker::Ping { seq }, &[]).await {
            Ok(()) => {}
            Err(ChannelError::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                return WorkerGone::Unhealthy(format!(
                    "does not read its messages (a ping waited {SEND_LIMIT:?})"
                ))
            }
            Err(_) => return WorkerGone::Exited,
        }
        let pong = timeout(PONG_TIMEOUT, answered.wait_for(|&last| last >= seq)).await;
        if !matches!(pong, Ok(Ok(_))) {
            return WorkerGone::Unhealthy(format!(
                "is not answering (no answer in {PONG_TIMEOUT:?})"
            ));
        }
    }
}

/// Serves one worker's messages until it goes away or breaks the protocol.
async fn read_messages(link: &WorkerLink, buffer: &mut RecvBuffer) -> WorkerGone {
    let violation = |why: String| WorkerGone::Misbehaved(format!("protocol violation: {why}"));
    loop {
        match link.channel.recv::<FromWorker>(buffer).await {
            Ok((_, fds)) if !fds.is_empty() => return violation("sent descriptors".into()),
            Ok((message, _)) => {
                if let Err(why) = link.dispatch(message) {
                    return violation(why);
                }
            }
            Err(ChannelError::Closed) => return WorkerGone::Exited,
            // A worker that dies with a request of ours unread resets the link: a death too.
            Err(ChannelError::Io(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return WorkerGone::Exited
            }
            Err(error) => return violation(error.to_string()),
        }
    }
}

/// A worker's own messages (jail set-up failures, mostly), logged line by line, bounded: a
/// line by [`MAX_LOG_LINE`], all of one worker by [`MAX_WORKER_LOG`] (a compromised worker
/// could otherwise fill the disk through the log); the rest is read and dropped.
async fn log_worker_stderr(index: usize, stderr: pipe::Receiver) {
    let mut lines = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut budget = LogBudget::default();
    loop {
        line.clear();
        match (&mut lines)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(read) => match budget.take(read) {
                Logged::Line => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::warn!(
                        worker = index,
                        "worker says: {}",
                        text.trim_end().escape_debug()
                    );
                }
                Logged::Notice => tracing::warn!(
                    worker = index,
                    "worker wrote more than {MAX_WORKER_LOG} bytes of messages; the rest is dropped"
                ),
                Logged::Nothing => {}
            },
        }
    }
}

/// What of one worker's messages is logged: [`MAX_WORKER_LOG`] bytes, then one notice.
#[derive(Default)]
struct LogBudget {
    logged: usize,
}

/// What becomes of a line of a worker's messages.
#[derive(Debug, PartialEq)]
enum Logged {
    Line,
    /// The line that would pass the budget: a notice instead, once.
    Notice,
    Nothing,
}

impl LogBudget {
    fn take(&mut self, bytes: usize) -> Logged {
        let before = self.logged;
        self.logged = before.saturating_add(bytes);
        if before > MAX_WORKER_LOG {
            Logged::Nothing
        } else if self.logged > MAX_WORKER_LOG {
            Logged::Notice
        } else {
            Logged::Line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::fake_workers::{self, Behaviour, FakeWorkers};
    use std::os::fd::AsFd;

    fn config(workers: usize, max_concurrent: usize, queue: usize) -> Arc<Config> {
        Arc::new(fake_workers::config(workers, max_concurrent, queue))
    }

    async fn pool(config: Arc<Config>, workers: &Arc<FakeWorkers>) -> Arc<Pool> {
        let source: Arc<dyn WorkerSource> = workers.clone();
        Pool::start(config, source, Arc::new(Metrics::new()), 0, None)
            .await
            .expect("the pool starts")
    }

    /// A spawn on the pool, with the three pipe ends a request would pass.
    async fn spawn(pool: &Pool) -> Result<CgiHandle, RequestError> {
        let fds: [OwnedFd; 3] = std::array::from_fn(|_| {
            let (read, _write) = nix::unistd::pipe().expect("pipe");
            read
        });
        let request = SpawnRequest {
            id: 0,
            path: vec![b"hello".to_vec()],
            env: Vec::new(),
            limits: pool.config.limits,
            stdin: protocol::Stdin::Given,
        };
        pool.spawn(request, &fds.each_ref().map(AsFd::as_fd)).await
    }

    /// A worker's messages are logged up to [`MAX_WORKER_LOG`] bytes, then one notice, then
    /// nothing more however much it writes.
    #[test]
    fn a_workers_messages_are_logged_within_a_budget() {
        let mut budget = LogBudget::default();
        let mut logged = 0;
        let mut notices = 0;
        for _ in 0..10_000 {
            match budget.take(MAX_LOG_LINE) {
                Logged::Line => logged += MAX_LOG_LINE,
                Logged::Notice => notices += 1,
                Logged::Nothing => {}
            }
        }
        assert!(logged <= MAX_WORKER_LOG && logged > MAX_WORKER_LOG - MAX_LOG_LINE);
        assert_eq!(notices, 1);
    }

    /// A link to a worker whose socket end is `worker` (the test plays the worker).
    fn link_with_worker() -> (Arc<WorkerLink>, Channel) {
        let (ours, worker) = Channel::pair().expect("socket pair");
        (Arc::new(WorkerLink::new(0, ours)), worker)
    }

    /// A worker's reports on a CGI come at most as a start (or its failure) and an exit, in
    /// that order, for a CGI it was asked to start; a pong answers a ping sent. Anything else
    /// is a protocol violation (the worker is stopped), so a worker cannot queue reports
    /// without end or pass a health check it was not given.
    #[tokio::test]
    async fn a_worker_reports_only_what_it_was_asked_in_order() {
        let (link, _worker) = link_with_worker();
        let spawned = |id| FromWorker::Spawned {
            id,
            pid: 9,
            script_segments: 1,
        };
        let exited = |id| FromWorker::Exited {
            id,
            status: protocol::ExitStatus::Code(0),
        };
        assert!(link.dispatch(spawned(1)).is_err(), "never asked for");
        let (events_in, mut events) = mpsc::unbounded_channel();
        link.next_id.store(2, Ordering::Relaxed);
        link.pending().insert(
            1,
            PendingCgi {
                events: events_in,
                started: false,
                ended: false,
            },
        );
        assert!(link.dispatch(exited(1)).is_err(), "an exit before a start");
        assert!(link.dispatch(spawned(1)).is_ok());
        assert!(link.dispatch(spawned(1)).is_err(), "a second start");
        assert!(link.dispatch(exited(1)).is_ok());
        assert!(link.dispatch(exited(1)).is_err(), "a second exit");
        assert!(matches!(events.recv().await, Some(CgiEvent::Spawned(_))));
        assert!(matches!(events.recv().await, Some(CgiEvent::Exited(_))));
        assert!(events.try_recv().is_err(), "nothing more was queued");
        // A CGI whose request is over: its late reports are dropped, not an error.
        link.pending().remove(&1);
        assert!(link.dispatch(exited(1)).is_ok());

        assert!(
            link.dispatch(FromWorker::Pong { seq: 1 }).is_err(),
            "no ping sent"
        );
        link.pinged.store(3, Ordering::Relaxed);
        assert!(link.dispatch(FromWorker::Pong { seq: 3 }).is_ok());
        assert!(link.dispatch(FromWorker::Pong { seq: u64::MAX }).is_err());
    }

    /// A send to a worker that does not read its socket gives up after [`SEND_LIMIT`] and
    /// tells the slot to stop the worker, instead of waiting for ever.
    #[tokio::test(start_paused = true)]
    async fn a_worker_that_does_not_read_is_not_waited_for() {
        let (link, _worker) = link_with_worker();
        let started = Instant::now();
        let sent = loop {
            let sent = link.send(&ToWorker::Ping { seq: 1 }, &[]).await;
            if sent.is_err() {
                break sent;
            }
        };
        assert!(
            matches!(&sent, Err(ChannelError::Io(error)) if error.kind() == std::io::ErrorKind::TimedOut),
            "{sent:?}"
        );
        assert!(started.elapsed() >= SEND_LIMIT);
        tokio::time::timeout(Duration::from_secs(1), link.stuck.notified())
            .await
            .expect("the slot is told");
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_busy_worker_gets_the_next_cgi() {
        let workers = FakeWorkers::new(Behaviour::Serve);
        let pool = pool(config(2, 10, 10), &workers).await;
        let mut handles = Vec::new();
        for _ in 0..3 {
            let mut handle = spawn(&pool).await.expect("spawned");
            assert!(matches!(
                handle.next_event().await,
                Some(CgiEvent::Spawned(_))
            ));
            handles.push(handle);
        }
        let on = |handles: &[CgiHandle], worker| {
            handles
                .iter()
                .filter(|handle| handle.worker() == worker)
                .count()
        };
        assert_eq!((on(&handles, 0), on(&handles, 1)), (2, 1));
        // Worker 0's CGIs end: it is now the least busy one.
        handles.retain(|handle| handle.worker() != 0);
        let next = spawn(&pool).await.expect("spawned");
        assert_eq!(next.worker(), 0);
        pool.shutdown().await;
    }

    /// The pool a reload to `config` starts, as generation `generation`, after `previous`.
    async fn reloaded(
        previous: &Pool,
        config: Arc<Config>,
        workers: &Arc<FakeWorkers>,
        generation: usize,
    ) -> Arc<Pool> {
        let source: Arc<dyn WorkerSource> = workers.clone();
        Pool::start(
            config,
            source,
            Arc::new(Metrics::new()),
            generation,
            Some(previous),
        )
        .await
        .expect("the reload's pool starts")
    }

    /// A reload's pool shares the admission of the pool it replaces: the CGIs the old one
    /// still runs count against the new --max-concurrent (each reload added a full set), and a
    /// smaller one is reached as they end.
    #[tokio::test(start_paused = true)]
    async fn a_reload_does_not_add_room_for_cgis() {
        let workers = FakeWorkers::new(Behaviour::Serve);
        let old = pool(config(1, 2, 0), &workers).await;
        let first = old.admit().await.expect("room");
        let second = old.admit().await.expect("room");
        let new = reloaded(&old, config(1, 2, 0), &workers, 1).await;
        assert!(
            new.admit().await.is_err(),
            "the old pool's two CGIs still run"
        );
        assert_eq!(new.state().running, 2);
        drop(first);
        let third = new.admit().await.expect("room once one ended");
        // Smaller on the next reload: one at a time, once the two running ones end.
        let smaller = reloaded(&new, config(1, 1, 0), &workers, 2).await;
        drop((second, third));
        tokio::task::yield_now().await;
        let only = smaller.admit().await.expect("room for one");
        assert!(smaller.admit().await.is_err(), "--max-concurrent 1");
        drop(only);
        for pool in [old, new, smaller] {
            pool.shutdown().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_workers_requests_fail_and_it_is_replaced() {
        let workers = FakeWorkers::new(Behaviour::DieOnSpawn);
        let pool = pool(config(1, 10, 10), &workers).await;
        let mut handle = spawn(&pool).await.expect("sent");
        // The worker dies with the request: no event, ever (the request answers 502).
        assert!(handle.next_event().await.is_none());
        drop(handle);
        // Its slot is refilled after the back-off, and the dead one's holder stopped.
        let replaced = async {
            while workers.record().starts.len() < 2 || pool.live_workers() < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(Duration::from_secs(5), replaced)
            .await
            .expect("replaced");
        assert_eq!(workers.record().starts, [0, 0]);
        assert_eq!(workers.record().stops, [1000]);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_in_the_queue_then_gets_503() {
        let workers = FakeWorkers::new(Behaviour::Serve);
        let pool = pool(config(1, 1, 5), &workers).await;
        let running = pool.admit().await.expect("the one slot");
        let waited = Instant::now();
        let refused = pool
            .admit()
            .await
            .expect_err("no slot within the queue time-out");
        assert!(matches!(refused, RequestError::Overloaded));
        assert_eq!(waited.elapsed(), pool.config.queue_timeout);
        assert_eq!(
            pool.state().queued,
            0,
            "the place in the queue is given back"
        );
        // A slot that frees up while a request waits goes to it.
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit().await.map(drop) })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(running);
        waiting.await.expect("task").expect("admitted");
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_queue_a_request_is_refused_at_once() {
        let workers = FakeWorkers::new(Behaviour::Serve);
        let pool = pool(config(1, 1, 1), &workers).await;
        let _running = pool.admit().await.expect("the one slot");
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.admit().await.map(drop) })
        };
        while pool.state().queued < 1 {
            tokio::task::yield_now().await;
        }
        let asked = Instant::now();
        let refused = pool.admit().await.expect_err("the queue is full");
        assert!(matches!(refused, RequestError::Overloaded));
        assert_eq!(asked.elapsed(), Duration::ZERO);
        waiting.abort();
        pool.shutdown().await;
    }

    /// Waits (on the paused clock) until the fake workers were started `starts` times.
    async fn started(workers: &FakeWorkers, starts: usize) {
        let restarted = async {
            while workers.record().starts.len() < starts {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(Duration::from_secs(30), restarted)
            .await
            .expect("restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_stops_answering_is_replaced() {
        let workers = FakeWorkers::new(Behaviour::Silent);
        let pool = pool(config(1, 10, 10), &workers).await;
        let since = Instant::now();
        started(&workers, 2).await;
        // Noticed after one ping interval and the answer's time-out, stopped, started again.
        let noticed = since.elapsed();
        assert!(noticed >= PING_INTERVAL + PONG_TIMEOUT, "{noticed:?}");
        assert!(
            noticed < PING_INTERVAL + PONG_TIMEOUT + Duration::from_secs(1),
            "{noticed:?}"
        );
        assert_eq!(workers.record().stops, [1000]);
        pool.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_whose_spawns_keep_failing_is_replaced_and_avoided() {
        let workers = FakeWorkers::new(Behaviour::Exhausted);
        let pool = pool(config(1, 100, 100), &workers).await;
        for _ in 0..MAX_SPAWN_FAILURES {
            let mut handle = spawn(&pool).await.expect("sent");
            assert!(matches!(
                handle.next_event().await,
                Some(CgiEvent::SpawnFailed(SpawnError::NoResources { .. }))
            ));
        }
        // Its failures count as load: a failing worker never looks the least busy.
        let link = pool.slots[0].get().expect("live");
        assert_eq!(link.load(), MAX_SPAWN_FAILURES);
        started(&workers, 2).await;
        assert_eq!(workers.record().stops, [1000]);
        pool.shutdown().await;
    }
}
