//! The front's link to the root supervisor: asks it to start and stop worker processes (by
//! pool slot), and receives the configurations it reads again on SIGHUP. The supervisor is the
//! pool's [`WorkerSource`] in the gateway.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::{Channel, FromSupervisor, RecvBuffer, Stop, ToSupervisor};
use tokio::sync::{mpsc, oneshot};

use super::pool::{BoxFuture, StartedWorker, WorkerSource};
use crate::config::Config;

type Pending<T> = Mutex<HashMap<usize, oneshot::Sender<T>>>;

/// The front's end of the control channel, with the requests waiting for their answers.
pub struct SupervisorLink {
    channel: Channel,
    starts: Pending<Result<StartedWorker, String>>,
    stops: Pending<()>,
    reloads: mpsc::UnboundedSender<Config>,
}

fn locked<T>(pending: &Pending<T>) -> MutexGuard<'_, HashMap<usize, oneshot::Sender<T>>> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SupervisorLink {
    /// Wraps the front's end of the control channel; must be called inside the runtime.
    /// Returns the link and the configurations the supervisor sends on SIGHUP, in order.
    pub fn new(
        control: OwnedFd,
    ) -> std::io::Result<(Arc<SupervisorLink>, mpsc::UnboundedReceiver<Config>)> {
        let (reloads, reloaded) = mpsc::unbounded_channel();
        let link = Arc::new(SupervisorLink {
            channel: Channel::from_owned_fd(control)?,
            starts: Mutex::default(),
            stops: Mutex::default(),
            reloads,
        });
        tokio::spawn(read_replies(link.clone()));
        Ok((link, reloaded))
    }

    async fn start(&self, slot: usize) -> Result<StartedWorker, String> {
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
    async fn stop(&self, slot: usize, holder: u32, how: Stop) {
        let (reply, stopped) = oneshot::channel();
        locked(&self.stops).insert(slot, reply);
        let request = ToSupervisor::StopWorker { slot, holder, how };
        if self.channel.send(&request, &[]).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

impl WorkerSource for SupervisorLink {
    fn start(&self, slot: usize) -> BoxFuture<'_, Result<StartedWorker, String>> {
        Box::pin(SupervisorLink::start(self, slot))
    }

    fn stop(&self, slot: usize, holder: u32, how: Stop) -> BoxFuture<'_, ()> {
        Box::pin(SupervisorLink::stop(self, slot, holder, how))
    }

    fn retire(&self, generation: usize) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Unanswered; if the channel is gone, so is the supervisor.
            let _ = self
                .channel
                .send(&ToSupervisor::Retire { generation }, &[])
                .await;
        })
    }
}

async fn read_replies(link: Arc<SupervisorLink>) {
    let mut buffer = RecvBuffer::default();
    loop {
        match link
            .channel
            .recv::<FromSupervisor<Config>>(&mut buffer)
            .await
        {
            Ok((FromSupervisor::Started { slot, holder }, fds)) => {
                let started = into_started(holder, fds);
                if let Some(reply) = locked(&link.starts).remove(&slot) {
                    let _ = reply.send(started);
                }
            }
            Ok((FromSupervisor::StartFailed { slot, reason }, _)) => {
                if let Some(reply) = locked(&link.starts).remove(&slot) {
                    let _ = reply.send(Err(reason));
                }
            }
            Ok((FromSupervisor::Stopped { slot }, _)) => {
                if let Some(reply) = locked(&link.stops).remove(&slot) {
                    let _ = reply.send(());
                }
            }
            Ok((FromSupervisor::Reload { config }, _)) => {
                let _ = link.reloads.send(*config);
            }
            Err(error) => {
                tracing::error!("supervisor channel closed: {error}");
                // Dropping the pending senders fails every waiting start and stop.
                locked(&link.starts).clear();
                locked(&link.stops).clear();
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
