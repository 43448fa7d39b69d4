//! The front ⇄ root supervisor messages. The front runs unprivileged and parses everything
//! untrusted; the supervisor stays root and starts and stops worker processes when the front
//! asks, nothing more. So the supervisor treats these as untrusted too: a front taken over by
//! an attacker can send any of them (the supervisor checks each against what the front may ask).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a worker's holder has to exit once its worker is gone or told to go; the front
/// asks for this wait, and the supervisor uses it after its own SIGTERM.
pub const HOLDER_EXIT_WAIT: Duration = Duration::from_secs(2);

/// The longest [`Stop::Wait`] the supervisor grants: a front that asks for more is refused
/// (every wait it is asked for is bounded, so a front cannot park it).
pub const MAX_STOP_WAIT: Duration = Duration::from_secs(60);

/// Front → supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSupervisor {
    /// Start a worker for pool slot `slot`.
    StartWorker { slot: usize },
    /// Stop the worker process `holder` that was started for `slot`.
    StopWorker { slot: usize, holder: u32, how: Stop },
    /// The pool of `generation` serves no more: it has retired after a reload, or it never
    /// started. Generation 0 is the first configuration, and each [`FromSupervisor::Reload`]
    /// is one more; a pool's slots are `generation × MAX_WORKERS + index`. The supervisor
    /// forgets that configuration and its workers' share of the limit.
    Retire { generation: usize },
}

/// Supervisor → front. `Started` travels with two descriptors: the front's end of the worker's
/// channel, and the read end of the worker's stderr. `C` is the gateway's configuration, which
/// only the supervisor (root) can read again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromSupervisor<C> {
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
        config: Box<C>,
    },
}

/// How to stop a worker's holder process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// The holder should exit by itself (its worker exited or was told to) within this many
    /// milliseconds; after that it is killed.
    Wait { millis: u64 },
    /// Ask the holder to kill its worker (SIGTERM), so the worker is still reaped by it.
    Terminate,
}
