//! Where the fronts accept connections: the sockets root bound (or systemd passed) before the
//! fork, registered with the front's runtime, and the one accept loop both fronts use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EnvPolicy;
use crate::root::handover::Bound;

/// Open client connections at most, per front; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long the accept loop pauses after a failed accept (EMFILE and friends) instead of
/// spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A connection accepted by either kind of listener.
pub type Stream = Either<TcpStream, UnixStream>;

/// Where a connection came from and arrived at.
#[derive(Debug, Clone, Copy)]
pub enum Connection {
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A Unix socket (`--listen unix:/path`), with the peer's credentials as it connected
    /// (SO_PEERCRED; `None` if they could not be read).
    Unix { peer: Option<PeerCredentials> },
}

/// Who a Unix-socket peer was when it connected: what the kernel vouches for, not what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
}

impl Connection {
    /// Whether the peer is a front server, whose X-Forwarded-* headers are believed and who
    /// may speak FastCGI: over TCP a `--trusted-proxy` address (never this host's, checked at
    /// start), over a Unix socket root or a process of `--trusted-group`. Anyone else is a
    /// client: a CGI with `--cgi-network` or another local user cannot pass for nginx.
    pub fn is_front_server(&self, policy: &EnvPolicy) -> bool {
        match self {
            Connection::Tcp { remote, .. } => policy.is_trusted_proxy(remote.ip()),
            Connection::Unix { peer: Some(peer) } => {
                peer.uid == 0 || policy.trusted_group == Some(peer.gid)
            }
            Connection::Unix { peer: None } => false,
        }
    }
}

/// A listener registered with the runtime.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Registers a socket root bound with the current tokio runtime.
    pub fn from_bound(bound: Bound) -> std::io::Result<Listener> {
        match bound {
            Bound::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(listener)?))
            }
            Bound::Unix(listener, _) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Unix(tokio::net::UnixListener::from_std(
                    listener,
                )?))
            }
        }
    }

    /// Accepts one connection, with what the CGI environment needs to know about it.
    pub async fn accept(&self) -> std::io::Result<(Stream, Connection)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                tcp_connection(stream, remote)
            }
            Listener::Unix(listener) => Ok(unix_connection(listener.accept().await?.0)),
        }
    }

    /// Closes the listener, first taking every connection the kernel has already completed
    /// in its backlog: closing a listener resets those, and their clients sent a request to
    /// a server that was still listening. (Under socket activation systemd keeps its copy of
    /// the socket, and what is left waits for the next gateway.) Accepts without waiting,
    /// straight on the socket: the runtime may not have seen the newest arrivals yet.
    pub fn close_taking_backlog(self) -> Vec<(Stream, Connection)> {
        match self {
            Listener::Tcp(listener) => {
                let Ok(listener) = listener.into_std() else {
                    return Vec::new();
                };
                std::iter::from_fn(|| listener.accept().ok())
                    .filter_map(|(stream, remote)| {
                        stream.set_nonblocking(true).ok()?;
                        tcp_connection(TcpStream::from_std(stream).ok()?, remote).ok()
                    })
                    .collect()
            }
            Listener::Unix(listener) => {
                let Ok(listener) = listener.into_std() else {
                    return Vec::new();
                };
                std::iter::from_fn(|| listener.accept().ok())
                    .filter_map(|(stream, _)| {
                        stream.set_nonblocking(true).ok()?;
                        Some(unix_connection(UnixStream::from_std(stream).ok()?))
                    })
                    .collect()
            }
        }
    }
}

fn tcp_connection(stream: TcpStream, remote: SocketAddr) -> std::io::Result<(Stream, Connection)> {
    let local = stream.local_addr()?;
    let _ = stream.set_nodelay(true);
    Ok((Either::Left(stream), Connection::Tcp { local, remote }))
}

fn unix_connection(stream: UnixStream) -> (Stream, Connection) {
    let peer = stream.peer_cred().ok().map(|credentials| PeerCredentials {
        uid: credentials.uid(),
        gid: credentials.gid(),
    });
    (Either::Right(stream), Connection::Unix { peer })
}

/// The fronts' open connections, to be ended at once when a stop's drain is over (or a second
/// signal comes). A connection dropped so closes before its answer's end, so that the client
/// sees the answer the stop cut off as cut off, and its CGI's output is dropped undelivered,
/// which kills the CGI, before the workers stop: left to run, the answer ended as the workers'
/// end closed the CGI's output, and read as whole.
#[derive(Clone, Default)]
pub struct OpenConnections {
    tracker: TaskTracker,
    cut: CancellationToken,
}

impl OpenConnections {
    /// Serves `connection` in a task of its own, until it ends or [`OpenConnections::cut`].
    pub fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = connection => {}
                () = cut.cancelled() => {}
            }
        });
    }

    /// Ends every connection still open, and returns once all are gone.
    pub async fn cut(&self) {
        self.cut.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Accepts connections until `shutdown` resolves, at most `limit` ([`MAX_CONNECTIONS`] for the
/// CGI fronts) open at once, handing each to `serve` with the permit it must hold while open.
/// Returns the semaphore, so the caller can wait for the permits to come back.
pub async fn accept_until(
    listener: Listener,
    limit: usize,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(Stream, Connection, OwnedSemaphorePermit),
) -> Arc<Semaphore> {
    let connections = Arc::new(Semaphore::new(limit));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Admission before accepting: at the limit we stop taking connections off the backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, connection) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        serve(stream, connection, permit);
    }
    for (stream, connection) in listener.close_taking_backlog() {
        // At the connection limit one is refused here as it would have been at the close.
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            serve(stream, connection, permit);
        }
    }
    connections
}
