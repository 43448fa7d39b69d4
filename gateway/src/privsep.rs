//! Privilege separation. `gateway` starts as root, checks the jail, binds its listener, and
//! forks once, before any thread or runtime exists:
//!
//! - the child becomes the **front**: it drops to `--gateway-user` for good (no capabilities,
//!   no-new-privs) and does everything that touches untrusted input: HTTP, routing, the CGI
//!   environment, the CGI's output;
//! - the parent stays root as the **supervisor**, and does one thing: start and stop worker
//!   processes when the front asks, over a seqpacket channel. It parses no HTTP, and the front
//!   can ask it for nothing else (at most `--workers` workers, by slot).
//!
//! A started worker's channel and its stderr pipe are handed to the front (SCM_RIGHTS), which
//! then talks to the worker directly; the supervisor keeps only the worker's holder process,
//! to reap it and to stop it. The supervisor dies with the front and the front with the
//! supervisor (parent-death signal), and holders die with the supervisor.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use protocol::{Channel, ChannelError, RecvBuffer};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::config::Config;
use crate::jailfs::CgiUser;
use crate::listen::Bound;

/// How long a holder has to exit once its worker is gone or told to go.
pub const HOLDER_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Front → supervisor.
#[derive(Debug, Serialize, Deserialize)]
enum ToSupervisor {
    StartWorker { slot: usize },
    StopWorker { slot: usize, holder: u32, how: Stop },
}

/// Supervisor → front. `Started` travels with two descriptors: the front's end of the
/// worker's channel, and the read end of the worker's stderr.
#[derive(Debug, Serialize, Deserialize)]
enum FromSupervisor {
    Started {
        slot: usize,
        holder: u32,
    },
    StartFailed {
        slot: usize,
        reason: String,
    },
    Stopped {
        slot: usize,
    },
    /// SIGHUP: the configuration, read and checked again; serve it with a fresh pool.
    Reload {
        config: Box<Config>,
    },
}

/// The sockets the front serves, bound by root before the split.
pub struct Listeners {
    pub http: Bound,
    pub fastcgi: Option<Bound>,
    pub admin: Option<Bound>,
}

/// Reads and checks the configuration again, as at the start (SIGHUP); runs as root in the
/// supervisor. The error is one line for the log.
pub type Reload = Box<dyn Fn() -> Result<Config, String>>;

/// How to stop a worker's holder.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Stop {
    /// The holder should exit by itself (its worker exited or was told to) within this many
    /// milliseconds; after that it is killed.
    Wait { millis: u64 },
    /// Ask the holder to kill its worker (SIGTERM), so the worker is still reaped by it.
    Terminate,
}

/// Splits into supervisor and front (see the module documentation) and serves `listener`
/// until SIGTERM or SIGINT. Must be called as root, before any thread is started. Returns
/// the exit code in the supervisor; the front never returns from here.
pub fn run(
    config: Config,
    listener: Bound,
    fastcgi: Option<Bound>,
    front_user: &CgiUser,
    reload: Reload,
) -> ExitCode {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    raise_descriptor_limit();
    // The admin endpoint is bound here, as root, like the others.
    let admin = match config
        .admin
        .as_ref()
        .map(|address| Bound::bind(address, config.socket_access))
    {
        Some(Err(error)) => {
            eprintln!("gateway: --admin: {error}");
            return ExitCode::FAILURE;
        }
        Some(Ok(admin)) => Some(admin),
        None => None,
    };
    let pair = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    );
    let (front_end, supervisor_end) = match pair {
        Ok(pair) => pair,
        Err(error) => {
            eprintln!("gateway: cannot create the supervisor channel: {error}");
            return ExitCode::FAILURE;
        }
    };
    let supervisor = nix::unistd::getpid();
    // SAFETY: no thread has been started yet (the runtimes are built after this), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(supervisor_end);
            // A process group of its own: a terminal's Ctrl-C (or a hangup) reaches only the
            // supervisor, which passes on one SIGTERM per signal. Otherwise one Ctrl-C would
            // arrive twice, and a second signal means "stop at once".
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            // Exit here: nothing of the caller's stack (a demo's temporary folder, say) is the
            // front's to clean up.
            let listeners = Listeners {
                http: listener,
                fastcgi,
                admin,
            };
            std::process::exit(run_front(
                config, listeners, front_end, front_user, supervisor,
            ))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(front_end);
            // Only the front accepts connections; the supervisor, still root, removes the
            // socket files it created once the front is gone.
            let socket_files: Vec<PathBuf> = [Some(&listener), fastcgi.as_ref(), admin.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|bound| bound.created_file().map(Path::to_path_buf))
                .collect();
            drop((listener, fastcgi, admin));
            let code = run_supervisor(config, child, supervisor_end, reload);
            for file in socket_files {
                if let Err(error) = std::fs::remove_file(&file) {
                    tracing::warn!("cannot remove the socket {}: {error}", file.display());
                }
            }
            code
        }
        Err(error) => {
            eprintln!("gateway: fork: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The front's side.

/// Drops to `user` for good, then serves HTTP. Returns the process exit code.
fn run_front(
    config: Config,
    listeners: Listeners,
    control: OwnedFd,
    user: &CgiUser,
    supervisor: Pid,
) -> i32 {
    if let Err(error) = drop_privileges(user, supervisor) {
        eprintln!("gateway: the HTTP front cannot drop its privileges: {error}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gateway: cannot start the runtime: {error}");
            return 1;
        }
    };
    let served = runtime.block_on(async move {
        let launcher = Launcher::new(control)?;
        crate::run(config, listeners, launcher).await
    });
    match served {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("gateway: {error:#}");
            1
        }
    }
}

/// setgroups, setresgid, setresuid away from root: every capability goes with uid 0 (no
/// SECBIT_KEEP_CAPS), and no-new-privs keeps any from coming back through exec.
fn drop_privileges(user: &CgiUser, supervisor: Pid) -> Result<(), String> {
    use nix::unistd::{getppid, setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err("still able to become root".into());
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no-new-privs: {e}"))?;
    // Cleared by setresuid, so set after it; then make sure the supervisor is still there.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    if getppid() != supervisor {
        return Err("the supervisor exited".into());
    }
    Ok(())
}

/// A worker the supervisor started for the front.
pub struct StartedWorker {
    pub holder: u32,
    pub channel: Channel,
    pub stderr: OwnedFd,
}

type Pending<T> = Mutex<HashMap<usize, oneshot::Sender<T>>>;

/// The front's handle on the supervisor: start and stop workers by slot.
pub struct Launcher {
    channel: Channel,
    starts: Pending<Result<StartedWorker, String>>,
    stops: Pending<()>,
    reloads: tokio::sync::mpsc::UnboundedSender<Config>,
    reloaded: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Config>>>,
}

fn locked<T>(pending: &Pending<T>) -> MutexGuard<'_, HashMap<usize, oneshot::Sender<T>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Launcher {
    /// Wraps the front's end of the control channel; must be called inside the runtime.
    pub fn new(control: OwnedFd) -> std::io::Result<Arc<Launcher>> {
        let (reloads, reloaded) = tokio::sync::mpsc::unbounded_channel();
        let launcher = Arc::new(Launcher {
            channel: Channel::from_owned_fd(control)?,
            starts: Mutex::default(),
            stops: Mutex::default(),
            reloads,
            reloaded: Mutex::new(Some(reloaded)),
        });
        tokio::spawn(read_replies(launcher.clone()));
        Ok(launcher)
    }

    /// The configurations the supervisor sends on SIGHUP, in order (for one taker only).
    pub fn take_reloads(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Config>> {
        self.reloaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    pub async fn start(&self, slot: usize) -> Result<StartedWorker, String> {
        let (reply, started) = oneshot::channel();
        locked(&self.starts).insert(slot, reply);
        self.channel
            .send(&ToSupervisor::StartWorker { slot }, &[])
            .await
            .map_err(|e| format!("supervisor unreachable: {e}"))?;
        started
            .await
            .unwrap_or_else(|_| Err("supervisor gone".into()))
    }

    /// Returns once the holder is gone and reaped.
    pub async fn stop(&self, slot: usize, holder: u32, how: Stop) {
        let (reply, stopped) = oneshot::channel();
        locked(&self.stops).insert(slot, reply);
        let request = ToSupervisor::StopWorker { slot, holder, how };
        if self.channel.send(&request, &[]).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

async fn read_replies(launcher: Arc<Launcher>) {
    let mut buffer = RecvBuffer::default();
    loop {
        match launcher.channel.recv::<FromSupervisor>(&mut buffer).await {
            Ok((FromSupervisor::Started { slot, holder }, fds)) => {
                let started = into_started(holder, fds);
                if let Some(reply) = locked(&launcher.starts).remove(&slot) {
                    let _ = reply.send(started);
                }
            }
            Ok((FromSupervisor::StartFailed { slot, reason }, _)) => {
                if let Some(reply) = locked(&launcher.starts).remove(&slot) {
                    let _ = reply.send(Err(reason));
                }
            }
            Ok((FromSupervisor::Stopped { slot }, _)) => {
                if let Some(reply) = locked(&launcher.stops).remove(&slot) {
                    let _ = reply.send(());
                }
            }
            Ok((FromSupervisor::Reload { config }, _)) => {
                let _ = launcher.reloads.send(*config);
            }
            Err(error) => {
                tracing::error!("supervisor channel closed: {error}");
                // Dropping the pending senders fails every waiting start and stop.
                locked(&launcher.starts).clear();
                locked(&launcher.stops).clear();
                return;
            }
        }
    }
}

fn into_started(holder: u32, fds: Vec<OwnedFd>) -> Result<StartedWorker, String> {
    let [channel, stderr]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|_| "supervisor sent the wrong descriptors".to_string())?;
    let channel = Channel::from_owned_fd(channel).map_err(|e| e.to_string())?;
    Ok(StartedWorker {
        holder,
        channel,
        stderr,
    })
}

// ---------------------------------------------------------------------------------------
// The supervisor's side.

/// Runs the supervisor until the front exits; returns the front's exit code. `front` is the
/// front's pid, `control` the supervisor's end of the control channel.
pub fn run_supervisor(config: Config, front: Pid, control: OwnedFd, reload: Reload) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gateway: supervisor cannot start its event loop: {error}");
            let _ = kill(front, Signal::SIGKILL);
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(supervise(config, front, control, reload));
    ExitCode::from(code)
}

async fn supervise(mut config: Config, front: Pid, control: OwnedFd, reload: Reload) -> u8 {
    let control = match Channel::from_owned_fd(control) {
        Ok(channel) => Arc::new(channel),
        Err(error) => {
            tracing::error!("supervisor: control channel: {error}");
            let _ = kill(front, Signal::SIGKILL);
            return 1;
        }
    };
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut children), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::child()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("supervisor: cannot handle signals");
        let _ = kill(front, Signal::SIGKILL);
        return 1;
    };
    let mut holders: HashMap<u32, Child> = HashMap::new();
    // During a reload the old pool's workers drain while the new pool's start: both counts.
    let mut max_holders = config.workers;
    let mut buffer = RecvBuffer::default();
    let mut front_exit = None;
    while front_exit.is_none() {
        tokio::select! {
            request = control.recv::<ToSupervisor>(&mut buffer) => match request {
                Ok((ToSupervisor::StartWorker { slot }, _)) => {
                    let reply = if holders.len() >= max_holders {
                        // A front that asks for more is not the one we started.
                        FromSupervisor::StartFailed { slot, reason: "no such worker slot".into() }
                    } else {
                        match spawn_worker(&config) {
                            Ok(started) => {
                                let fds = [started.channel.as_fd(), started.stderr.as_fd()];
                                let holder = started.holder.id().unwrap_or(0);
                                let sent = control.send(&FromSupervisor::Started { slot, holder }, &fds).await;
                                holders.insert(holder, started.holder);
                                if sent.is_err() {
                                    break;
                                }
                                continue;
                            }
                            Err(reason) => FromSupervisor::StartFailed { slot, reason },
                        }
                    };
                    if control.send(&reply, &[]).await.is_err() {
                        break;
                    }
                }
                Ok((ToSupervisor::StopWorker { slot, holder, how }, _)) => {
                    let control = control.clone();
                    let child = holders.remove(&holder);
                    tokio::spawn(async move {
                        if let Some(mut child) = child {
                            stop_holder(&mut child, how).await;
                        }
                        let _ = control.send(&FromSupervisor::Stopped { slot }, &[]).await;
                    });
                }
                Err(ChannelError::Closed) => break,
                Err(error) => {
                    tracing::error!("supervisor: bad request from the front ({error}); stopping");
                    let _ = kill(front, Signal::SIGKILL);
                    break;
                }
            },
            _ = terminate.recv() => {
                let _ = kill(front, Signal::SIGTERM);
            }
            _ = interrupt.recv() => {
                let _ = kill(front, Signal::SIGTERM);
            }
            _ = children.recv() => front_exit = reap_front(front, false),
            _ = hangup.recv() => match reload() {
                Ok(new) => {
                    let kept = unchangeable(&config, &new);
                    if !kept.is_empty() {
                        tracing::warn!("SIGHUP: {} changed; that takes a restart (the sockets stay as they are)", kept.join(", "));
                    }
                    tracing::info!(workers = new.workers, jail = %new.jail.display(), "SIGHUP: configuration read again; starting a fresh pool");
                    max_holders = config.workers + new.workers;
                    config = new;
                    let message = FromSupervisor::Reload { config: Box::new(config.clone()) };
                    if control.send(&message, &[]).await.is_err() {
                        break;
                    }
                }
                Err(error) => tracing::error!("SIGHUP: configuration not reloaded, still serving the old one: {error}"),
            },
        }
    }
    // The front is gone or going: no worker may outlive it.
    for (_, mut holder) in holders.drain() {
        stop_holder(&mut holder, Stop::Terminate).await;
    }
    let code = front_exit.or_else(|| reap_front(front, true)).unwrap_or(1);
    tracing::info!("stopped");
    code
}

/// Every client connection, CGI pipe and spooled body is a descriptor of the front's: raise its
/// soft limit to the hard one (as nginx's worker_rlimit_nofile or Go's runtime do), so that the
/// usual soft 1024 does not starve CGIs of pipes while clients hold connections. Workers and
/// CGIs get their own limits.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {error}");
            }
        }
    }
}

/// What a reload cannot change: the sockets are bound once, and the front's account is set.
fn unchangeable(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("--listen");
    }
    if old.fastcgi != new.fastcgi {
        changed.push("--fastcgi");
    }
    if old.admin != new.admin {
        changed.push("--admin");
    }
    if old.socket_access != new.socket_access {
        changed.push("--socket-mode/--socket-group");
    }
    if old.log_format != new.log_format {
        changed.push("--log-format");
    }
    changed
}

/// The front's exit code once it has exited (`wait`: block until it does).
fn reap_front(front: Pid, wait: bool) -> Option<u8> {
    let flags = (!wait).then_some(WaitPidFlag::WNOHANG);
    loop {
        return match waitpid(front, flags) {
            Ok(WaitStatus::Exited(_, code)) => Some(code as u8),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                tracing::error!("the HTTP front was killed by {signal}");
                Some(1)
            }
            Ok(WaitStatus::StillAlive) => None,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => Some(1),
        };
    }
}

struct SpawnedWorker {
    holder: Child,
    channel: OwnedFd,
    stderr: OwnedFd,
}

/// Execs a fresh worker image (never a fork of a threaded process) with its end of the
/// channel as descriptor 3. The worker's environment is empty: nothing of ours goes in.
fn spawn_worker(config: &Config) -> Result<SpawnedWorker, String> {
    let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs: OwnedFd = theirs.into_owned_fd();
    let theirs_raw = theirs.as_raw_fd();
    let mut command = Command::new(&config.worker_exe);
    command
        .arg("--jail")
        .arg(&config.jail)
        .args(["--uid", &config.user.uid.to_string()])
        .args(["--gid", &config.user.gid.to_string()])
        .args(["--tmp-size", &config.tmp_size.to_string()])
        .args(config.no_network.then_some("--no-network"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Out of the terminal's reach too: workers stop when the front says so.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec and only calls dup2/fcntl, which are
    // async-signal-safe; it touches no memory shared with other threads.
    unsafe {
        command.pre_exec(move || {
            if theirs_raw == 3 {
                // Already in place: only the close-on-exec flag must go.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(theirs_raw, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut holder = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", config.worker_exe.display()))?;
    drop(theirs);
    let stderr = holder
        .stderr
        .take()
        .ok_or("no stderr pipe")?
        .into_owned_fd()
        .map_err(|e| format!("worker stderr: {e}"))?;
    Ok(SpawnedWorker {
        holder,
        channel: ours.into_owned_fd(),
        stderr,
    })
}

/// Makes sure a holder is gone and reaped. SIGKILL is the last resort: the holder's death
/// takes the worker with it (parent-death signal), and the worker's takes every CGI (it is
/// PID 1 of their namespace), but a worker killed that way is reaped by the host's init.
async fn stop_holder(holder: &mut Child, how: Stop) {
    let wait = match how {
        Stop::Wait { millis } => Duration::from_millis(millis),
        Stop::Terminate => {
            if let Some(pid) = holder.id().and_then(|pid| i32::try_from(pid).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            HOLDER_EXIT_WAIT
        }
    };
    if timeout(wait, holder.wait()).await.is_err() {
        let _ = holder.start_kill();
        let _ = holder.wait().await;
    }
}
