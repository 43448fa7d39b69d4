//! The worker's loop: spawn requests in, exit reports out, kills on request. Single-threaded
//! (a current-thread runtime), so the bookkeeping needs no locks and starting a CGI on the
//! worker's own memory (`launch.rs`) stays safe.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::{
    Channel, ChannelError, ExitStatus, FromWorker, RecvBuffer, SpawnId, ToWorker, PROTOCOL_VERSION,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::kill::{id_kill_is_confined, Leftovers};
use crate::spawn::{SetupError, Spawner, Started};

/// How long a CGI told to stop with SIGTERM gets before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub fn run(channel_fd: OwnedFd, config: &crate::jail::Config) -> ExitCode {
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
    let mut children = signal(SignalKind::child()).map_err(ChannelError::from)?;
    // Made once the SIGCHLD handler above, the worker's last, is installed: see `Launcher::new`.
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
                    // CGIs that ended meanwhile first: while spawns keep arriving, the runtime
                    // may deliver SIGCHLD only hundreds of spawns later, and until then their
                    // ids and namespaces stay taken (a pool of namespaces grown to its bound,
                    // every descriptor of it copied into each new CGI and closed at its exec).
                    report_ended(&mut running, &mut spawner, &mut leftovers, &channel).await?;
                    let id = request.id;
                    let reply = match spawner.spawn_cgi(&request, fds) {
                        Ok(Started { pid, script_segments, cgi_id, stderr }) => {
                            running.by_pid.insert(pid, Cgi { id, cgi_id, stderr });
                            running.by_id.insert(id, pid);
                            let script_segments = script_segments as u32;
                            FromWorker::Spawned { id, pid: pid.as_raw() as u32, script_segments }
                        }
                        Err(error) => FromWorker::SpawnFailed { id, error },
                    };
                    channel.send(&reply, &[]).await?;
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
            _ = children.recv() => report_ended(&mut running, &mut spawner, &mut leftovers, &channel).await?,
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

/// Reaps every ended child, kills what the CGIs among them left running, gives back the ids
/// (and namespaces) of which nothing is left, and tells the front each one's exit status.
async fn report_ended(
    running: &mut Running,
    spawner: &mut Spawner,
    leftovers: &mut Leftovers,
    channel: &Channel,
) -> Result<(), ChannelError> {
    let ended = reap(running, leftovers);
    // A request ends with its CGI's main process: whatever else runs as its id (background
    // jobs, daemons, in whatever group or session) is killed, so nothing outlives the request,
    // and the id goes to another CGI only once none of it is left.
    leftovers.sweep(
        ended.iter().map(|(cgi, _)| cgi.cgi_id),
        |pid| running.by_pid.contains_key(&pid),
        |id| running.has_cgi_id(id),
        |id| spawner.release_id(id),
    );
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
fn reap(running: &mut Running, leftovers: &mut Leftovers) -> Vec<(Cgi, ExitStatus)> {
    let mut ended = Vec::new();
    loop {
        let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, ExitStatus::Signal(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        match running.by_pid.remove(&pid) {
            Some(cgi) => {
                running.by_id.remove(&cgi.id);
                ended.push((cgi, status));
            }
            None => leftovers.forget(pid),
        }
    }
    ended
}
