//! The jailed side of Jailgate, run as the `jailgate-worker` executable (built by the gateway
//! package, so that `cargo install --path gateway` installs both): exec'd by the gateway (never
//! forked from it), it enters the jail once, then starts, watches and kills CGIs on the
//! gateway's request until told to stop or the gateway goes away.
//!
//! Usage (the supervisor builds this command line, `protocol::WorkerArgs`; people do not):
//! `jailgate-worker --jail DIR --uid UID --gid GID --tmp-size BYTES [--no-network]`, with the
//! channel to the front as descriptor 3.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

mod jail;
mod kill;
mod launch;
mod mounts;
mod private_tmp;
mod scope;
mod seccomp;
mod serve;
mod spawn;

/// `waitpid` and signal masks are per process: one test that starts (and reaps) children at a
/// time.
#[cfg(test)]
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The descriptor number the gateway places the worker's end of the channel at.
const CHANNEL_FD: i32 = 3;

/// The whole `jailgate-worker` program.
pub fn main() -> ExitCode {
    let config = match jail::Config::parse(std::env::args_os().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("jailgate-worker: {message}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: the gateway places the channel at CHANNEL_FD when it execs us and nothing else
    // in this process refers to that descriptor, so this is its only owner.
    let channel_fd = unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) };
    if let Err(error) = jail::set_cloexec(&channel_fd) {
        eprintln!("jailgate-worker: descriptor {CHANNEL_FD} is not usable: {error}");
        return ExitCode::from(2);
    }
    match jail::enter(&config) {
        Ok(jail::Role::Holder { worker }) => {
            // Only the worker proper talks to the gateway; the gateway must see end-of-stream
            // as soon as the worker dies, so the holder keeps no copy of the channel.
            drop(channel_fd);
            jail::wait_for_worker(worker)
        }
        Ok(jail::Role::Worker) => serve::run(channel_fd, &config),
        Err(error) => {
            eprintln!("jailgate-worker: cannot enter the jail: {error}");
            ExitCode::from(1)
        }
    }
}
