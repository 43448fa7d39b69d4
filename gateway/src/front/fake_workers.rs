//! A [`WorkerSource`] for unit tests, without root or a jail: each "worker" is a task on the
//! other end of a real channel that speaks the worker protocol. It reports Ready, answers
//! every spawn with Spawned (and keeps the CGI's descriptors, as a running CGI would), every
//! kill with Exited, and records what it was asked.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use protocol::{Channel, ExitStatus, FromWorker, RecvBuffer, SpawnId, Stop, ToWorker};

use super::pool::{BoxFuture, StartedWorker, WorkerSource};
use crate::config::Config;
use crate::jailfs::CgiUser;

/// A configuration for tests: `workers` workers, at most `max_concurrent` CGIs at once and
/// `queue` requests waiting; a jail that is never looked at.
pub fn config(workers: usize, max_concurrent: usize, queue: usize) -> Config {
    let user = CgiUser {
        name: "cgi".into(),
        uid: 60000,
        gid: 60000,
        group_name: "cgi".into(),
    };
    let mut config = Config::new("/nonexistent".into(), user);
    config.workers = workers;
    config.max_concurrent = max_concurrent;
    config.queue = Some(queue);
    config
}

/// How the fake workers behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Run every CGI until it is killed.
    Serve,
    /// Die (close the channel) on the first spawn request, as a crashed worker.
    DieOnSpawn,
    /// Run a CGI that writes [`HELLO`] and exits 0.
    Hello,
    /// The same, its start and end reported in one `SpawnedAndExited`, as a worker does when
    /// the CGI has run to its end before `clone` returned.
    HelloAtOnce,
    /// Report Ready, then answer nothing, as a stopped worker.
    Silent,
    /// Fail every spawn for want of resources, as a worker whose process limit is gone.
    Exhausted,
}

/// What a [`Behaviour::Hello`] CGI writes.
pub const HELLO: &[u8] = b"Content-Type: text/plain\r\n\r\nhello\n";

/// What the fake workers were asked, for the tests to check.
#[derive(Debug, Default)]
pub struct Record {
    /// Workers started, by slot.
    pub starts: Vec<usize>,
    /// Spawn requests, by worker (the order it was started in).
    pub spawns: HashMap<usize, Vec<SpawnId>>,
    /// Kill requests, by worker.
    pub kills: HashMap<usize, Vec<SpawnId>>,
    /// Holders stopped.
    pub stops: Vec<u32>,
}

pub struct FakeWorkers {
    behaviour: Behaviour,
    pub record: Arc<Mutex<Record>>,
}

impl FakeWorkers {
    pub fn new(behaviour: Behaviour) -> Arc<FakeWorkers> {
        Arc::new(FakeWorkers {
            behaviour,
            record: Arc::default(),
        })
    }

    pub fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WorkerSource for FakeWorkers {
    fn start(&self, slot: usize) -> BoxFuture<'_, Result<StartedWorker, String>> {
        Box::pin(async move {
            let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
            let (stderr, _stderr_writer) = nix::unistd::pipe().map_err(|e| e.to_string())?;
            let worker = {
                let mut record = self.record();
                record.starts.push(slot);
                record.starts.len() - 1
            };
            tokio::spawn(run_worker(
                worker,
                theirs,
                self.behaviour,
                self.record.clone(),
            ));
            Ok(StartedWorker {
                holder: 1000 + u32::try_from(worker).unwrap_or(0),
                channel: ours,
                stderr,
            })
        })
    }

    fn stop(&self, _slot: usize, holder: u32, _how: Stop) -> BoxFuture<'_, ()> {
        self.record().stops.push(holder);
        Box::pin(async {})
    }

    fn retire(&self, _generation: usize) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

async fn run_worker(
    worker: usize,
    channel: Channel,
    behaviour: Behaviour,
    record: Arc<Mutex<Record>>,
) {
    let record = |update: &dyn Fn(&mut Record)| {
        update(&mut record.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let ready = FromWorker::Ready {
        version: protocol::PROTOCOL_VERSION,
        pid: 1,
    };
    if channel.send(&ready, &[]).await.is_err() {
        return;
    }
    let mut buffer = RecvBuffer::default();
    // The CGIs "running": their descriptors, held until they are killed.
    let mut running: HashMap<SpawnId, Vec<OwnedFd>> = HashMap::new();
    loop {
        let reply = match channel.recv::<ToWorker>(&mut buffer).await {
            Ok((ToWorker::Spawn(request), fds)) => {
                record(&|r| r.spawns.entry(worker).or_default().push(request.id));
                let spawned = FromWorker::Spawned {
                    id: request.id,
                    pid: 100,
                    script_segments: 1,
                };
                match behaviour {
                    Behaviour::DieOnSpawn => return,
                    Behaviour::Exhausted => FromWorker::SpawnFailed {
                        id: request.id,
                        error: protocol::SpawnError::NoResources {
                            errno: libc::EAGAIN,
                        },
                    },
                    Behaviour::Serve | Behaviour::Silent => {
                        running.insert(request.id, fds);
                        spawned
                    }
                    Behaviour::Hello | Behaviour::HelloAtOnce => {
                        let at_once = behaviour == Behaviour::HelloAtOnce;
                        if !at_once && channel.send(&spawned, &[]).await.is_err() {
                            return;
                        }
                        let stdout = match request.stdin {
                            protocol::Stdin::Given => 1,
                            protocol::Stdin::Null => 0,
                        };
                        if let Some(stdout) = fds.get(stdout) {
                            let _ = nix::unistd::write(stdout, HELLO);
                        }
                        drop(fds);
                        let status = ExitStatus::Code(0);
                        if at_once {
                            FromWorker::SpawnedAndExited {
                                id: request.id,
                                pid: 100,
                                script_segments: 1,
                                status,
                            }
                        } else {
                            FromWorker::Exited {
                                id: request.id,
                                status,
                            }
                        }
                    }
                }
            }
            Ok((ToWorker::Kill { id }, _)) => {
                record(&|r| r.kills.entry(worker).or_default().push(id));
                running.remove(&id);
                FromWorker::Exited {
                    id,
                    status: ExitStatus::Signal(9),
                }
            }
            Ok((ToWorker::Ping { seq }, _)) => FromWorker::Pong { seq },
            Ok((ToWorker::Shutdown, _)) | Err(_) => return,
        };
        if behaviour == Behaviour::Silent {
            continue;
        }
        if channel.send(&reply, &[]).await.is_err() {
            return;
        }
    }
}
