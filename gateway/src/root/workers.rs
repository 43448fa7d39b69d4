//! Starting and stopping worker processes: the one thing the supervisor does for the front.
//! Each worker is a fresh exec of `jailgate-worker` (never a fork of this threaded process),
//! with its end of the channel as descriptor 3, an empty environment, and its command line
//! typed in [`protocol::WorkerArgs`]. The process started is the worker's *holder*: it enters
//! the namespaces and forks the worker proper, which it then reaps.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use protocol::supervisor::HOLDER_EXIT_WAIT;
use protocol::{Channel, IdRange, Stop, WorkerArgs};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use crate::config::Config;

/// A worker process just started: its holder (to reap and stop), the front's end of its
/// channel, and the read end of its stderr.
pub struct SpawnedWorker {
    pub holder: Child,
    pub channel: OwnedFd,
    pub stderr: OwnedFd,
}

/// The command line of a worker with the ids of block `block` (of `size` ids) of `--cgi-ids`.
pub fn worker_args(config: &Config, block: usize, size: u32) -> WorkerArgs {
    let block = u32::try_from(block).unwrap_or(u32::MAX);
    WorkerArgs {
        jail: config.jail.clone(),
        uid: config.user.uid,
        gid: config.user.gid,
        cgi_ids: IdRange {
            first: config
                .cgi_ids
                .first
                .saturating_add(block.saturating_mul(size)),
            count: size,
        },
        tmp_size: config.tmp_size,
        data: config.data.clone(),
        no_network: !config.cgi_network,
    }
}

/// Execs a fresh worker image with its end of the channel as descriptor 3. The worker's
/// environment is empty: nothing of ours goes in.
pub fn spawn_worker(config: &Config, block: usize, size: u32) -> Result<SpawnedWorker, String> {
    let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs: OwnedFd = theirs.into_owned_fd();
    let theirs_raw = theirs.as_raw_fd();
    let mut command = Command::new(&config.worker_exe);
    command
        .args(worker_args(config, block, size).to_args())
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
pub async fn stop_holder(holder: &mut Child, how: Stop) {
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
