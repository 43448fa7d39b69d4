//! What root hands to the front at the fork: the sockets it bound, the supervisor channel, the
//! account to drop to, and the stop signals held. The only part of `root/` the front uses.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use crate::config::{Config, FrontUser};

/// SIGTERM and SIGINT are held (blocked) from the start of serving, across the fork, until each
/// process has its handlers: one arriving mid-start then stops it cleanly, where the default
/// action would kill it half-started (a front killed before it is ready, socket files left).
/// Threads started meanwhile inherit the block, so the signals go to the thread that releases
/// them, the one running the runtime's main future.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Everything the front starts from, in the child of the fork.
pub struct Handover {
    pub config: Config,
    pub listeners: Listeners,
    /// The front's end of the supervisor channel.
    pub control: OwnedFd,
    /// The account the front drops to.
    pub user: FrontUser,
    /// The supervisor's pid: the front checks it is still its parent after the drop.
    pub supervisor: Pid,
}

/// The sockets the front serves, bound by root before the split.
pub struct Listeners {
    pub http: Bound,
    pub fastcgi: Option<Bound>,
    pub admin: Option<Bound>,
}

/// A bound, listening socket, not yet registered with a runtime: it crosses the fork into the
/// front as it is.
#[derive(Debug)]
pub enum Bound {
    Tcp(std::net::TcpListener),
    /// `path` is `None` for an inherited socket: whoever created its file removes it.
    Unix(UnixListener, Option<PathBuf>),
}

impl Bound {
    /// The address as `--listen` would name it.
    pub fn address(&self) -> String {
        match self {
            Bound::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "tcp:?".to_owned(), |address| address.to_string()),
            Bound::Unix(listener, path) => {
                let named = listener
                    .local_addr()
                    .ok()
                    .and_then(|address| address.as_pathname().map(|path| path.to_owned()));
                match named.or_else(|| path.clone()) {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:(unnamed)".to_owned(),
                }
            }
        }
    }

    /// The socket file this process created, to remove when it stops.
    pub fn created_file(&self) -> Option<&Path> {
        match self {
            Bound::Unix(_, path) => path.as_deref(),
            Bound::Tcp(_) => None,
        }
    }
}
