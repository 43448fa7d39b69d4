//! The root supervisor: after the fork it stays root and does one thing, start and stop worker
//! processes when the front asks over the control channel (`protocol::supervisor`). It parses
//! no request; what the front sends is checked against what the front may ask for
//! ([`Holders::decide`]), since a front taken over by an attacker can send anything. It also
//! relays signals: SIGTERM and SIGINT to the front, and SIGHUP as a configuration read again
//! (only root can) and sent to the front.
//!
//! The supervisor dies with the front and the front with the supervisor (parent-death
//! signal); holders die with the supervisor.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::supervisor::MAX_STOP_WAIT;
use protocol::{Channel, ChannelError, FromSupervisor, RecvBuffer, Stop, ToSupervisor};
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::handover::stop_signals;
use super::workers::{spawn_worker, stop_holder};
use crate::config::{Config, MAX_WORKERS};

/// Reads and checks the configuration again, as at the start (SIGHUP); runs as root in the
/// supervisor. The error is one line for the log.
pub type Reload = Box<dyn Fn() -> Result<Config, String>>;

/// What the supervisor sends the front.
type Reply = FromSupervisor<Config>;

/// Why the supervisor stopped before the front exited by itself.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
    #[error("control channel: {0}")]
    ControlChannel(std::io::Error),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("bad request from the front ({0}); stopping")]
    BadRequest(ChannelError),
    #[error("cannot answer the front: {0}")]
    Reply(ChannelError),
}

/// A request from the front that the supervisor does not carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a worker start beyond the {max} allowed")]
    TooManyWorkers { max: usize },
    #[error("a worker start for slot {slot}, which no configuration has")]
    NoSuchSlot { slot: usize },
    #[error("the retirement of generation {generation}, the only one left to serve")]
    RetireCurrent { generation: usize },
    #[error("a worker start with every block of --cgi-ids in use")]
    NoIds,
    #[error("a stop for process {holder}, which is no worker of ours")]
    NotOurWorker { holder: u32 },
    #[error("a stop that would wait {millis} ms, more than {MAX_STOP_WAIT:?}")]
    WaitTooLong { millis: u64 },
}

/// What to do about one request from the front.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a worker with block `block` of `--cgi-ids`.
    Start {
        slot: usize,
        block: usize,
    },
    Stop {
        slot: usize,
        holder: u32,
        how: Stop,
    },
    /// Forget the configuration of `generation` (unless it is the last one left).
    Retire {
        generation: usize,
    },
    /// Not carried out: answer `reply` and log `why`.
    Refuse {
        reply: Reply,
        why: Refusal,
    },
}

/// The worker holders the supervisor started and has not reaped yet, each with its block of
/// `--cgi-ids`, and how many it may have at once: the `--workers` of every configuration whose
/// pool serves (during a reload the old pool's and the new one's together). No two live
/// workers share a block, so no two running CGIs share an id, whichever pool they belong to.
pub struct Holders<H> {
    running: HashMap<u32, (H, usize)>,
    /// The workers of each live configuration, by its generation (see
    /// [`ToSupervisor::Retire`]): a start must name a slot of one of them.
    allowed: BTreeMap<usize, usize>,
    /// Holders being stopped, and their blocks: still live (a stop may wait up to
    /// [`MAX_STOP_WAIT`] for one to exit), so they count against `max` and keep their blocks
    /// until reaped. Let go at once, a front could have had a worker stopped "after a wait"
    /// while it kept it busy, and another started in its place and on its block, again and
    /// again: workers without bound, two of them on one block of ids.
    stopping: HashMap<u32, usize>,
    /// How many blocks `--cgi-ids` holds, and how many ids each: fixed at the start, since a
    /// block's workers may outlive a reload.
    blocks: usize,
    pub block_size: u32,
}

impl<H> Holders<H> {
    /// Holders for the first configuration, of `workers` workers.
    pub fn new(workers: usize, blocks: usize, block_size: u32) -> Holders<H> {
        Holders {
            running: HashMap::new(),
            allowed: BTreeMap::from([(0, workers)]),
            stopping: HashMap::new(),
            blocks,
            block_size,
        }
    }

    /// The lowest block no live worker has, stopping ones included.
    fn free_block(&self) -> Option<usize> {
        let used = self
            .running
            .values()
            .map(|(_, block)| block)
            .chain(self.stopping.values());
        (0..self.blocks).find(|block| !used.clone().any(|used| used == block))
    }

    /// Live holders, stopping ones included.
    fn live(&self) -> usize {
        self.running.len() + self.stopping.len()
    }

    /// How many may live at once: the workers of every live configuration together.
    pub fn max(&self) -> usize {
        self.allowed.values().sum()
    }

    /// A configuration of `workers` workers serves from now on, as `generation`.
    pub fn allow(&mut self, generation: usize, workers: usize) {
        self.allowed.insert(generation, workers);
    }

    /// The pool of `generation` has retired, or never started (a reload that failed, the
    /// pool before serving on): its share of the limit goes. Refused for the last one left.
    pub fn forbid(&mut self, generation: usize) -> Result<(), Refusal> {
        if self.allowed.len() == 1 && self.allowed.contains_key(&generation) {
            return Err(Refusal::RetireCurrent { generation });
        }
        self.allowed.remove(&generation);
        Ok(())
    }

    /// The generation whose configuration starts `slot`'s workers, if `slot` is one of its.
    pub fn generation_of(&self, slot: usize) -> Option<usize> {
        let (generation, index) = (slot / MAX_WORKERS, slot % MAX_WORKERS);
        self.allowed
            .get(&generation)
            .is_some_and(|&workers| index < workers)
            .then_some(generation)
    }

    /// Checks a request against what the front may ask for.
    pub fn decide(&self, request: ToSupervisor) -> Decision {
        match request {
            ToSupervisor::StartWorker { slot } if self.generation_of(slot).is_none() => {
                Decision::Refuse {
                    reply: Reply::StartFailed {
                        slot,
                        reason: "no such worker slot".into(),
                    },
                    why: Refusal::NoSuchSlot { slot },
                }
            }
            ToSupervisor::StartWorker { slot } if self.live() >= self.max() => {
                Decision::Refuse {
                    // A front that asks for more is not the one we started.
                    reply: Reply::StartFailed {
                        slot,
                        reason: "no such worker slot".into(),
                    },
                    why: Refusal::TooManyWorkers { max: self.max() },
                }
            }
            ToSupervisor::StartWorker { slot } => match self.free_block() {
                Some(block) => Decision::Start { slot, block },
                None => Decision::Refuse {
                    reply: Reply::StartFailed {
                        slot,
                        reason: "no ids left for another worker".into(),
                    },
                    why: Refusal::NoIds,
                },
            },
            ToSupervisor::StopWorker { slot, holder, .. }
                if !self.running.contains_key(&holder) =>
            {
                // Answered all the same: the front waits for it, and there is nothing to stop.
                Decision::Refuse {
                    reply: Reply::Stopped { slot },
                    why: Refusal::NotOurWorker { holder },
                }
            }
            ToSupervisor::StopWorker {
                slot,
                how: Stop::Wait { millis },
                ..
            } if Duration::from_millis(millis) > MAX_STOP_WAIT => Decision::Refuse {
                reply: Reply::Stopped { slot },
                why: Refusal::WaitTooLong { millis },
            },
            ToSupervisor::StopWorker { slot, holder, how } => Decision::Stop { slot, holder, how },
            ToSupervisor::Retire { generation } => Decision::Retire { generation },
        }
    }

    pub fn insert(&mut self, holder: u32, child: H, block: usize) {
        self.running.insert(holder, (child, block));
    }

    /// Takes a holder out to be stopped; it stays counted, with its block, until
    /// [`Holders::stopped`].
    pub fn stop(&mut self, holder: u32) -> Option<H> {
        let (child, block) = self.running.remove(&holder)?;
        self.stopping.insert(holder, block);
        Some(child)
    }

    /// A holder taken out with [`Holders::stop`] has been reaped.
    pub fn stopped(&mut self, holder: u32) {
        self.stopping.remove(&holder);
    }

    pub fn drain(&mut self) -> impl Iterator<Item = H> + '_ {
        self.running.drain().map(|(_, (child, _))| child)
    }
}

/// Runs the supervisor until the front exits; returns the front's exit code. `front` is the
/// front's pid, `control` the supervisor's end of the control channel.
pub fn run(config: Config, front: Pid, control: OwnedFd, reload: Reload) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Runtime);
    let code = match runtime {
        Ok(runtime) => runtime.block_on(supervise(config, front, control, reload)),
        Err(error) => Err(error),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            tracing::error!("supervisor: {error}");
            // The front must not outlive us: nothing would start or stop its workers.
            let _ = kill(front, Signal::SIGKILL);
            let _ = reap_front(front, true);
            ExitCode::FAILURE
        }
    }
}

async fn supervise(
    config: Config,
    front: Pid,
    control: OwnedFd,
    reload: Reload,
) -> Result<u8, SupervisorError> {
    let control =
        Arc::new(Channel::from_owned_fd(control).map_err(SupervisorError::ControlChannel)?);
    let listen = |kind| signal(kind).map_err(SupervisorError::Signals);
    let mut terminate = listen(SignalKind::terminate())?;
    let mut interrupt = listen(SignalKind::interrupt())?;
    let _ = stop_signals().thread_unblock();
    let mut children = listen(SignalKind::child())?;
    let mut hangup = listen(SignalKind::hangup())?;
    let mut holders: Holders<Child> =
        Holders::new(config.workers, config.id_blocks(), config.ids_per_worker());
    // Every configuration whose pool serves, by generation: a pool's workers, replacements
    // included, start with the configuration that pool was started for.
    let mut newest = 0;
    let mut configs = BTreeMap::from([(newest, config)]);
    // Holders reaped by the tasks that stop them.
    let (reaped, mut stopped) = mpsc::unbounded_channel::<u32>();
    let mut buffer = RecvBuffer::default();
    let mut front_exit = None;
    let served: Result<(), SupervisorError> = async {
        while front_exit.is_none() {
            tokio::select! {
                request = next_request(&control, &mut buffer) => match request? {
                    Some(request) => carry_out(request, &mut configs, &mut holders, &control, &reaped).await?,
                    None => break,
                },
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: passed on to the HTTP front");
                    let _ = kill(front, Signal::SIGTERM);
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: passed on to the HTTP front as SIGTERM");
                    let _ = kill(front, Signal::SIGTERM);
                }
                _ = children.recv() => front_exit = reap_front(front, false),
                Some(holder) = stopped.recv() => holders.stopped(holder),
                _ = hangup.recv() => match reload() {
                    Ok(mut new) => {
                        // The newest configuration left: a reload that failed is gone.
                        let Some(current) = configs.values().next_back() else { break };
                        let kept = unchangeable(current, &new);
                        if !kept.is_empty() {
                            tracing::warn!("SIGHUP: {} changed; that takes a restart (the sockets stay as they are)", kept.join(", "));
                        }
                        tracing::info!(workers = new.workers, jail = %new.jail.display(), "SIGHUP: configuration read again; starting a fresh pool");
                        // The ids are split into blocks at the start, once: a block's workers
                        // may still run when the new pool starts.
                        new.cgi_ids = current.cgi_ids;
                        // The workers' account was checked against the host's accounts and
                        // processes at the start, as the ids were.
                        new.user = current.user.clone();
                        // The old pools' workers drain (or, if the new pool fails, serve on)
                        // while the new pool's start.
                        newest += 1;
                        holders.allow(newest, new.workers);
                        let message = Reply::Reload { config: Box::new(new.clone()) };
                        configs.insert(newest, new);
                        control.send(&message, &[]).await.map_err(SupervisorError::Reply)?;
                    }
                    Err(error) => tracing::error!("SIGHUP: configuration not reloaded, still serving the old one: {error}"),
                },
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = &served {
        tracing::error!("supervisor: {error}");
        let _ = kill(front, Signal::SIGKILL);
    }
    // The front is gone or going: no worker may outlive it.
    for mut holder in holders.drain() {
        stop_holder(&mut holder, Stop::Terminate).await;
    }
    let code = front_exit.or_else(|| reap_front(front, true)).unwrap_or(1);
    tracing::info!("stopped");
    Ok(code)
}

/// The front's next request; `None` once it has closed the channel (it exited).
async fn next_request(
    control: &Channel,
    buffer: &mut RecvBuffer,
) -> Result<Option<ToSupervisor>, SupervisorError> {
    match control.recv::<ToSupervisor>(buffer).await {
        Ok((_, fds)) if !fds.is_empty() => {
            Err(SupervisorError::BadRequest(ChannelError::TooManyFds))
        }
        Ok((request, _)) => Ok(Some(request)),
        Err(ChannelError::Closed) => Ok(None),
        Err(error) => Err(SupervisorError::BadRequest(error)),
    }
}

/// Carries out one request of the front's, once [`Holders::decide`] allows it.
async fn carry_out(
    request: ToSupervisor,
    configs: &mut BTreeMap<usize, Config>,
    holders: &mut Holders<Child>,
    control: &Arc<Channel>,
    reaped: &mpsc::UnboundedSender<u32>,
) -> Result<(), SupervisorError> {
    let reply = match holders.decide(request) {
        Decision::Start { slot, block } => match holders
            .generation_of(slot)
            .and_then(|generation| configs.get(&generation))
            .map_or(Err("no such worker slot".to_owned()), |config| {
                spawn_worker(config, block, holders.block_size)
            }) {
            Ok(started) => {
                let fds = [started.channel.as_fd(), started.stderr.as_fd()];
                let holder = started.holder.id().unwrap_or(0);
                let sent = control.send(&Reply::Started { slot, holder }, &fds).await;
                holders.insert(holder, started.holder, block);
                return sent.map_err(SupervisorError::Reply);
            }
            Err(reason) => Reply::StartFailed { slot, reason },
        },
        Decision::Stop { slot, holder, how } => {
            let control = control.clone();
            let reaped = reaped.clone();
            let child = holders.stop(holder);
            tokio::spawn(async move {
                if let Some(mut child) = child {
                    stop_holder(&mut child, how).await;
                }
                let _ = reaped.send(holder);
                let _ = control.send(&Reply::Stopped { slot }, &[]).await;
            });
            return Ok(());
        }
        Decision::Retire { generation } => {
            match holders.forbid(generation) {
                Ok(()) => {
                    configs.remove(&generation);
                }
                Err(why) => tracing::warn!("supervisor: refused {why}"),
            }
            // No answer: the front does not wait for one.
            return Ok(());
        }
        Decision::Refuse { reply, why } => {
            tracing::warn!("supervisor: refused {why}");
            reply
        }
    };
    control
        .send(&reply, &[])
        .await
        .map_err(SupervisorError::Reply)
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
    if old.scheduling != new.scheduling {
        changed.push("--scheduling");
    }
    if old.cgi_ids != new.cgi_ids {
        changed.push("--cgi-ids");
    }
    if old.user != new.user {
        changed.push("--user");
    }
    if new.ids_per_worker() > old.ids_per_worker() {
        // Each worker still gets the ids of one block of the start's size: at most that many
        // of its CGIs run at once (more fail with 503 until one ends).
        changed.push("a larger --max-cgis-per-worker (beyond half the ids of a worker's block)");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(running: &[u32], max: usize) -> Holders<()> {
        let mut holders = Holders::new(max, 8, 64);
        for (block, &holder) in running.iter().enumerate() {
            holders.insert(holder, (), block);
        }
        holders
    }

    #[test]
    fn starts_within_the_worker_count_are_carried_out() {
        let decision = holders(&[10], 2).decide(ToSupervisor::StartWorker { slot: 1 });
        assert_eq!(decision, Decision::Start { slot: 1, block: 1 });
    }

    #[test]
    fn no_two_live_workers_share_a_block_of_ids() {
        let mut holders = holders(&[10, 11, 12], 8);
        assert!(holders.stop(11).is_some());
        // Still live while it stops: its block is not handed out.
        assert_eq!(
            holders.decide(ToSupervisor::StartWorker { slot: 5 }),
            Decision::Start { slot: 5, block: 3 }
        );
        holders.stopped(11);
        // Reaped: the block it had is free again; the others are not.
        assert_eq!(
            holders.decide(ToSupervisor::StartWorker { slot: 5 }),
            Decision::Start { slot: 5, block: 1 }
        );
        let mut full = Holders::new(8, 2, 64);
        full.insert(10, (), 0);
        full.insert(11, (), 1);
        assert_eq!(
            full.decide(ToSupervisor::StartWorker { slot: 2 }),
            Decision::Refuse {
                reply: Reply::StartFailed {
                    slot: 2,
                    reason: "no ids left for another worker".into()
                },
                why: Refusal::NoIds,
            }
        );
    }

    #[test]
    fn a_start_beyond_the_worker_count_is_refused() {
        let decision = holders(&[10, 11], 2).decide(ToSupervisor::StartWorker { slot: 1 });
        assert_eq!(
            decision,
            Decision::Refuse {
                reply: Reply::StartFailed {
                    slot: 1,
                    reason: "no such worker slot".into()
                },
                why: Refusal::TooManyWorkers { max: 2 },
            }
        );
    }

    /// A start names a slot of a configuration whose pool serves (generation × MAX_WORKERS +
    /// index, the index below its `--workers`), and gets that configuration; a retired one's
    /// slots and share of the limit are gone, and the last one left cannot be retired.
    #[test]
    fn a_start_is_for_a_slot_of_a_live_configuration() {
        let start = |slot| ToSupervisor::StartWorker { slot };
        let no_such = |slot| Decision::Refuse {
            reply: Reply::StartFailed {
                slot,
                reason: "no such worker slot".into(),
            },
            why: Refusal::NoSuchSlot { slot },
        };
        let mut holders = holders(&[], 2);
        assert_eq!(holders.decide(start(2)), no_such(2));
        assert_eq!(holders.decide(start(MAX_WORKERS)), no_such(MAX_WORKERS));
        holders.allow(1, 3);
        assert_eq!(holders.max(), 5);
        assert_eq!(holders.generation_of(MAX_WORKERS + 2), Some(1));
        assert_eq!(
            holders.decide(start(MAX_WORKERS + 2)),
            Decision::Start {
                slot: MAX_WORKERS + 2,
                block: 0
            }
        );
        // A reload that failed: its configuration goes, the one before serves on. (Refused
        // as "the newest", it stayed, and each failed reload raised the limit for good.)
        assert_eq!(holders.forbid(1), Ok(()));
        assert_eq!(holders.max(), 2);
        assert_eq!(
            holders.forbid(0),
            Err(Refusal::RetireCurrent { generation: 0 })
        );
        holders.allow(2, 3);
        assert_eq!(holders.forbid(0), Ok(()));
        assert_eq!(holders.max(), 3);
        assert_eq!(holders.decide(start(1)), no_such(1));
    }

    /// A worker being stopped counts until it is reaped: a front cannot have workers stopped
    /// "after a wait" and started anew beyond `--workers`.
    #[test]
    fn a_worker_being_stopped_counts_until_it_is_reaped() {
        let mut holders = holders(&[10, 11], 2);
        assert!(holders.stop(10).is_some());
        assert_eq!(
            holders.decide(ToSupervisor::StartWorker { slot: 0 }),
            Decision::Refuse {
                reply: Reply::StartFailed {
                    slot: 0,
                    reason: "no such worker slot".into()
                },
                why: Refusal::TooManyWorkers { max: 2 },
            }
        );
        holders.stopped(10);
        assert_eq!(
            holders.decide(ToSupervisor::StartWorker { slot: 0 }),
            Decision::Start { slot: 0, block: 0 }
        );
    }

    #[test]
    fn a_stop_of_a_process_that_is_no_worker_is_refused() {
        // Process 1 (init), or any pid the front names: the supervisor signals only its own.
        for holder in [1, 0, 12] {
            let decision = holders(&[10, 11], 2).decide(ToSupervisor::StopWorker {
                slot: 0,
                holder,
                how: Stop::Terminate,
            });
            assert_eq!(
                decision,
                Decision::Refuse {
                    reply: Reply::Stopped { slot: 0 },
                    why: Refusal::NotOurWorker { holder },
                }
            );
        }
    }

    #[test]
    fn a_stop_that_would_park_the_supervisor_is_refused() {
        let millis = u64::try_from(MAX_STOP_WAIT.as_millis()).expect("fits") + 1;
        let request = |millis| ToSupervisor::StopWorker {
            slot: 3,
            holder: 10,
            how: Stop::Wait { millis },
        };
        assert_eq!(
            holders(&[10], 1).decide(request(millis)),
            Decision::Refuse {
                reply: Reply::Stopped { slot: 3 },
                why: Refusal::WaitTooLong { millis },
            }
        );
        assert_eq!(
            holders(&[10], 1).decide(request(2000)),
            Decision::Stop {
                slot: 3,
                holder: 10,
                how: Stop::Wait { millis: 2000 },
            }
        );
    }

    #[tokio::test]
    async fn a_malformed_request_ends_the_supervision() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (front, supervisor) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let control = Channel::from_owned_fd(supervisor).expect("channel");
        let mut buffer = RecvBuffer::default();
        // Not a ToSupervisor: an unknown variant, then trailing garbage.
        nix::unistd::write(&front, &[0xff, 0xff, 0xff]).expect("write");
        let error = next_request(&control, &mut buffer)
            .await
            .expect_err("garbage is refused");
        assert!(matches!(error, SupervisorError::BadRequest(_)), "{error}");
        // A well-formed request reads as one; a closed channel as the front's exit.
        let front = Channel::from_owned_fd(front).expect("channel");
        front
            .send(&ToSupervisor::StartWorker { slot: 2 }, &[])
            .await
            .expect("send");
        let request = next_request(&control, &mut buffer)
            .await
            .expect("a request");
        assert_eq!(request, Some(ToSupervisor::StartWorker { slot: 2 }));
        drop(front);
        let request = next_request(&control, &mut buffer).await.expect("closed");
        assert_eq!(request, None);
    }
}
