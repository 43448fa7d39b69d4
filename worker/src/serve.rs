//! The worker's loop: spawn requests in, exit reports out, kills on request. Single-threaded
//! (a current-thread runtime), so the bookkeeping needs no locks and starting a CGI on the
//! worker's own memory (`launch.rs`) stays safe.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::{
    Channel, ChannelError, ExitStatus, FromWorker, RecvBuffer, SpawnId, ToWorker, PROTOCOL_VERSION,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::kill::{id_kill_is_confined, Leftovers};
use crate::spawn::{SetupError, Spawner, Started};

/// How long a CGI told to stop with SIGTERM gets before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub fn run(channel_fd: OwnedFd, config: &crate::jail::Config) -> ExitCode {
    // Before the runtime starts any thread, so that every thread has it blocked: a SIGCHLD
    // delivered to one that had not would be discarded, not queued for `ChildExits`.
    if let Err(errno) = SigSet::from(Signal::SIGCHLD).thread_block() {
        eprintln!("jailgate-worker: cannot block SIGCHLD: {errno}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jailgate-worker: cannot start the event loop: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(channel_fd, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jailgate-worker: {error}");
            ExitCode::from(1)
        }
    }
}

/// The CGIs this worker is running, by their main process's pid and by the gateway's id.
#[derive(Default)]
struct Running {
    by_pid: HashMap<Pid, Cgi>,
    by_id: HashMap<SpawnId, Pid>,
}

impl Running {
    fn has_cgi_id(&self, cgi_id: u32) -> bool {
        self.by_pid.values().any(|cgi| cgi.cgi_id == cgi_id)
    }
}

/// A running CGI, as its main process's pid finds it.
struct Cgi {
    id: SpawnId,
    cgi_id: u32,
    /// Closed once the main process is reaped ([`Started::stderr`]).
    stderr: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("cannot prepare to start CGIs: {0}")]
    Setup(#[from] SetupError),
    #[error("cannot kill CGIs by their id: {0}")]
    Kill(String),
}

async fn serve(channel_fd: OwnedFd, config: &crate::jail::Config) -> Result<(), ServeError> {
    let channel = Channel::from_owned_fd(channel_fd).map_err(ChannelError::from)?;
    let children = ChildExits::new().map_err(ChannelError::from)?;
    // Made once every signal handler is installed (the runtime's): see `Launcher::new`.
    let mut spawner = Spawner::new(config)?;
    id_kill_is_confined(config.cgi_ids.first).map_err(ServeError::Kill)?;
    let mut leftovers = Leftovers::new();
    let (deferred_kills, mut due_kills) = mpsc::unbounded_channel::<SpawnId>();
    let mut running = Running::default();
    let mut buffer = RecvBuffer::default();

    channel
        .send(
            &FromWorker::Ready {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
            },
            &[],
        )
        .await?;
    let outcome = loop {
        tokio::select! {
            received = channel.recv::<ToWorker>(&mut buffer) => match received {
                Ok((ToWorker::Spawn(request), fds)) => {
                    let id = request.id;
                    let started = match spawner.spawn_cgi(&request, fds) {
                        Ok(Started { pid, script_segments, cgi_id, stderr }) => {
                            running.by_pid.insert(pid, Cgi { id, cgi_id, stderr });
                            running.by_id.insert(id, pid);
                            let script_segments = script_segments as u32;
                            Some(JustStarted { id, pid: pid.as_raw() as u32, script_segments })
                        }
                        Err(error) => {
                            channel.send(&FromWorker::SpawnFailed { id, error }, &[]).await?;
                            None
                        }
                    };
                    // CGIs that ended meanwhile, this one included: `clone` returns once the
                    // child has exec'd, and on a busy core, with no preemption on wake-up
                    // (`SCHED_BATCH`), a short CGI has often run to its end by then; its
                    // start and end then go in one message. Reaping here also frees ids and
                    // namespaces while spawns keep arriving, when the loop might turn to
                    // `ChildExits` only hundreds of spawns later (a pool of namespaces grown
                    // to its bound, every descriptor of it copied into each new CGI).
                    report_ended(&mut running, &mut spawner, &mut leftovers, &children, started, &channel)
                        .await?;
                }
                Ok((ToWorker::Kill { id }, _)) => {
                    if let Some(&pid) = running.by_id.get(&id) {
                        stop(pid, Signal::SIGTERM);
                        let deferred_kills = deferred_kills.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(KILL_GRACE).await;
                            let _ = deferred_kills.send(id);
                        });
                    }
                }
                Ok((ToWorker::Ping { seq }, _)) => {
                    channel.send(&FromWorker::Pong { seq }, &[]).await?;
                }
                Ok((ToWorker::Shutdown, _)) => break Ok(()),
                // The gateway is gone: so is every reason to run.
                Err(ChannelError::Closed) => break Ok(()),
                Err(error) => break Err(error.into()),
            },
            Some(id) = due_kills.recv() => {
                if let Some(&pid) = running.by_id.get(&id) {
                    stop(pid, Signal::SIGKILL);
                }
            }
            ended = children.ended() => {
                ended.map_err(ChannelError::from)?;
                report_ended(&mut running, &mut spawner, &mut leftovers, &children, None, &channel).await?;
            }
        }
    };
    // Exiting as PID 1 makes the kernel kill everything left in the namespace; killing it all
    // first (as root of the namespace: every process but the worker) just makes it immediate
    // and explicit.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    outcome
}

/// Sends `signal` to a running CGI's main process and its process group. What left the group
/// is killed once the main process has ended, by [`Leftovers::sweep`]. The main process is not
/// reaped yet, so neither its pid nor its group's id can be another's.
fn stop(main: Pid, signal: Signal) {
    let _ = kill(Pid::from_raw(-main.as_raw()), signal);
    let _ = kill(main, signal);
}

/// How the worker learns that children ended: SIGCHLD, blocked in every thread (`run`), queued
/// on a signalfd. Instead of a handler that wakes the loop through a pipe (the handler's entry
/// and return, the pipe's write and two reads per wake-up), one read, which the reaping does
/// anyway.
struct ChildExits(AsyncFd<SignalFd>);

impl ChildExits {
    fn new() -> std::io::Result<ChildExits> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        let signalfd = SignalFd::with_flags(&SigSet::from(Signal::SIGCHLD), flags)?;
        // SAFETY: a SignalFd owns its descriptor: it stays open, and `as_raw_fd` gives the
        // same number, for as long as the AsyncFd holds it.
        Ok(ChildExits(unsafe { AsyncFd::register(signalfd) }?))
    }

    /// Returns once a child may have ended since the last [`ChildExits::take`].
    async fn ended(&self) -> std::io::Result<()> {
        self.0.readable().await?.clear_ready();
        Ok(())
    }

    /// Takes the pending SIGCHLD, if any, before a reaping: the reaping sees every child that
    /// ended until then, and one that ends after raises SIGCHLD again. A standard signal is
    /// pending at most once, so one read takes it.
    fn take(&self) {
        let _ = self.0.get_ref().read_signal();
    }
}

/// A CGI just started, to report with `Spawned`, or with `SpawnedAndExited` if it has ended
/// by the time it is reported.
struct JustStarted {
    id: SpawnId,
    pid: u32,
    script_segments: u32,
}

/// Reaps every ended child, kills what the CGIs among them left running, gives back the ids
/// (and namespaces) of which nothing is left, and tells the front each one's exit status,
/// after the start of `started` (in one message with its end, if it has ended already).
async fn report_ended(
    running: &mut Running,
    spawner: &mut Spawner,
    leftovers: &mut Leftovers,
    children: &ChildExits,
    started: Option<JustStarted>,
    channel: &Channel,
) -> Result<(), ChannelError> {
    children.take();
    let (mut ended, childless) = reap(running, leftovers);
    // A request ends with its CGI's main process: whatever else runs as its id (background
    // jobs, daemons, in whatever group or session) is killed, so nothing outlives the request,
    // and the id goes to another CGI only once none of it is left.
    leftovers.sweep(
        ended.iter().map(|(cgi, _)| cgi.cgi_id),
        childless,
        |pid| running.by_pid.contains_key(&pid),
        |id| running.has_cgi_id(id),
        |id| spawner.release_id(id),
    );
    if let Some(JustStarted {
        id,
        pid,
        script_segments,
    }) = started
    {
        let report = match ended.iter().position(|(cgi, _)| cgi.id == id) {
            Some(index) => {
                let (Cgi { stderr, .. }, status) = ended.swap_remove(index);
                drop(stderr);
                FromWorker::SpawnedAndExited {
                    id,
                    pid,
                    script_segments,
                    status,
                }
            }
            None => FromWorker::Spawned {
                id,
                pid,
                script_segments,
            },
        };
        channel.send(&report, &[]).await?;
    }
    for (Cgi { id, stderr, .. }, status) in ended {
        drop(stderr);
        channel
            .send(&FromWorker::Exited { id, status }, &[])
            .await?;
    }
    Ok(())
}

/// Collects every ended child. As PID 1 the worker also inherits orphans (a CGI's double-forked
/// daemons); they are reaped here too, so no zombie accumulates, and forgotten by `leftovers`.
/// Also returns whether the worker has no child left at all.
fn reap(running: &mut Running, leftovers: &mut Leftovers) -> (Vec<(Cgi, ExitStatus)>, bool) {
    let mut ended = Vec::new();
    let childless = loop {
        let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ExitStatus::Signal(signal as i32)),
            Ok(WaitStatus::StillAlive) => break false,
            Err(Errno::ECHILD) => break true,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break false,
        };
        match running.by_pid.remove(&pid) {
            Some(cgi) => {
                running.by_id.remove(&cgi.id);
                ended.push((cgi, status));
            }
            None => leftovers.forget(pid),
        }
    };
    (ended, childless)
}
