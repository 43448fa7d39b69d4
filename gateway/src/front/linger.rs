//! Lingering close (as nginx's `lingering_close`, RFC 9112 §9.6): a connection closed while
//! its peer may still be sending a body we did not read (an upload answered 413 or 503 at
//! once) is not simply closed. Unread data at `close` makes the kernel reset the connection
//! (on a Unix socket, fail the peer's writes), which a peer still writing sees instead of our
//! answer: Python's http.client and requests write the whole body before they read, and
//! nginx's fastcgi_pass answers its client 502. So once the answer is out, the rest of what
//! the peer sends is read and dropped, until it closes its side or [`LINGER_TIME`] has
//! passed (or, over FastCGI, the request's STDIN stream has ended): over HTTP by [`Lingering`]
//! when hyper shuts the connection, over FastCGI in `fastcgi/server.rs` once the connection's
//! write side is shut (nginx waits for that end of the answer). A stop ends every linger at
//! once ([`Stopping`]): the answer is out, and a stop's drain is for requests still running,
//! not for bodies nobody will read (nginx closes lingering connections at its exit too).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::front::listen::Stream;

/// The longest a closing connection reads what its client still sends. Time, not bytes,
/// bounds it, as in nginx (whose `lingering_time` is 30 s): a client on a slow link needs
/// the time to finish its write and read the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(10);

/// Whether the connection should linger when it closes: set by the request handler, per
/// request, when the request came with a body that may not have been read to its end.
#[derive(Clone, Default)]
pub struct LingerFlag(Arc<AtomicBool>);

impl LingerFlag {
    pub fn set(&self, linger: bool) {
        self.0.store(linger, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancelled when the gateway begins to stop: every linger, begun or to come, ends then.
pub type Stopping = CancellationToken;

/// Runs `drain` (reading and dropping what a peer still sends) for at most [`LINGER_TIME`],
/// and not past the beginning of a stop.
pub async fn linger(stopping: &Stopping, drain: impl Future<Output = ()>) {
    tokio::select! {
        _ = tokio::time::timeout(LINGER_TIME, drain) => {}
        _ = stopping.cancelled() => {}
    }
}

/// A client connection that lingers on close when its [`LingerFlag`] says so, and fails its
/// writes once the client has taken nothing of them for its send timeout (`--send-timeout`,
/// as nginx's `send_timeout`): hyper has no write timeout of its own, and a client that never
/// reads would otherwise hold its connection, and one of the front's connection places, for
/// good once its answer fits the buffers and its CGI has ended.
pub struct Lingering {
    stream: Stream,
    flag: LingerFlag,
    stopping: Stopping,
    state: State,
    send_timeout: Duration,
    /// Runs while a write waits for room: armed at the first write that cannot go on,
    /// disarmed at the next that does.
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

enum State {
    Open,
    /// Our side is shut; reading and dropping until the client closes, the time is up, or the
    /// gateway stops.
    Draining {
        deadline: Pin<Box<Sleep>>,
        stop: Pin<Box<WaitForCancellationFutureOwned>>,
    },
    Closed,
}

impl Lingering {
    pub fn new(
        stream: Stream,
        flag: LingerFlag,
        stopping: Stopping,
        send_timeout: Duration,
    ) -> Lingering {
        Lingering {
            stream,
            flag,
            stopping,
            state: State::Open,
            send_timeout,
            stall: Box::pin(sleep(send_timeout)),
            stalled: false,
        }
    }

    /// What a write (or flush) that `polled` gave means, as to the client's progress.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.send_timeout;
            self.stall.as_mut().reset(deadline);
        }
        if self.stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took none of its answer for the send timeout",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.progress(cx, polled)
    }

    /// Shuts our side (the client sees the answer end), then, if the flag is set, drains.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                    this.state = if this.flag.is_set() {
                        State::Draining {
                            deadline: Box::pin(sleep(LINGER_TIME)),
                            stop: Box::pin(this.stopping.clone().cancelled_owned()),
                        }
                    } else {
                        State::Closed
                    };
                }
                State::Draining { deadline, stop } => {
                    if deadline.as_mut().poll(cx).is_ready() || stop.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 16 * 1024];
                    let mut dropped = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut dropped)) {
                        // More of the body: dropped; read on.
                        Ok(()) if !dropped.filled().is_empty() => {}
                        // The client closed its side, or reset: nothing more to wait for.
                        Ok(()) | Err(_) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;
    use tokio::time::Instant;
    use tokio_util::either::Either;

    use super::*;

    /// Our side wrapped, with the flag as given, and the client's side.
    fn pair(linger: bool) -> (Lingering, UnixStream) {
        pair_stopping(linger, Stopping::new())
    }

    fn pair_stopping(linger: bool, stopping: Stopping) -> (Lingering, UnixStream) {
        let (ours, client) = UnixStream::pair().expect("socket pair");
        let flag = LingerFlag::default();
        flag.set(linger);
        let send_timeout = Duration::from_secs(60);
        (
            Lingering::new(Either::Right(ours), flag, stopping, send_timeout),
            client,
        )
    }

    /// A client that takes nothing fails our writes once the send timeout has passed with no
    /// progress; one that reads, however slowly, never does.
    #[tokio::test]
    async fn a_client_that_never_reads_fails_the_writes_after_the_send_timeout() {
        let (ours, client) = UnixStream::pair().expect("socket pair");
        let send_timeout = Duration::from_millis(300);
        let mut ours = Lingering::new(
            Either::Right(ours),
            LingerFlag::default(),
            Stopping::new(),
            send_timeout,
        );
        let started = Instant::now();
        let chunk = vec![b'x'; 64 * 1024];
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(10), ours.write(&chunk)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => break error,
                Err(_) => panic!("a write waited 10 s for a client that never reads"),
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= send_timeout, "{:?}", started.elapsed());
        drop(client);

        // Reading a piece every 100 ms: progress (room for a write once most of the queue is
        // read) well within the timeout, so none.
        let (ours, mut client) = UnixStream::pair().expect("socket pair");
        let mut ours = Lingering::new(
            Either::Right(ours),
            LingerFlag::default(),
            Stopping::new(),
            Duration::from_secs(2),
        );
        let reader = tokio::spawn(async move {
            let mut piece = vec![0u8; 64 * 1024];
            let mut total = 0;
            while total < 4 << 20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match client.read(&mut piece).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let mut written = 0;
        while written < 2 << 20 {
            written += ours
                .write(&chunk)
                .await
                .expect("a slow reader is no stalled one");
        }
        drop(ours);
        assert!(reader.await.expect("reader") >= 2 << 20);
    }

    #[tokio::test]
    async fn without_the_flag_a_close_does_not_wait_for_the_client() {
        let (mut ours, mut client) = pair(false);
        tokio::time::timeout(Duration::from_secs(5), ours.shutdown())
            .await
            .expect("a close without waiting")
            .expect("shutdown");
        // The client, still connected and silent, sees the end at once.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn with_the_flag_what_the_client_still_sends_is_read_until_it_closes() {
        let (mut ours, mut client) = pair(true);
        let closing = tokio::spawn(async move { ours.shutdown().await });
        // More than the socket's buffers hold: it all goes through only if it is read.
        let body = vec![b'b'; 8 << 20];
        client.write_all(&body).await.expect("the client's body");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert!(
            !closing.is_finished(),
            "stopped lingering before the client closed"
        );
        drop(client);
        closing.await.expect("task").expect("shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_left_after_the_linger_time() {
        let (mut ours, _client) = pair(true);
        let start = Instant::now();
        ours.shutdown().await.expect("shutdown");
        assert_eq!(start.elapsed(), LINGER_TIME);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_linger_begun_or_to_come() {
        let stopping = Stopping::new();
        let (mut ours, _client) = pair_stopping(true, stopping.clone());
        let start = Instant::now();
        let closing = tokio::spawn(async move { ours.shutdown().await });
        tokio::time::sleep(LINGER_TIME / 4).await;
        assert!(!closing.is_finished(), "stopped lingering before the stop");
        stopping.cancel();
        closing.await.expect("task").expect("shutdown");
        assert_eq!(start.elapsed(), LINGER_TIME / 4);
        // A connection that closes after the stop began does not linger at all.
        let (mut ours, _client) = pair_stopping(true, stopping);
        let start = Instant::now();
        ours.shutdown().await.expect("shutdown");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn linger_is_bounded_by_time_and_by_the_stop() {
        let stopping = Stopping::new();
        let start = Instant::now();
        linger(&stopping, std::future::pending()).await;
        assert_eq!(start.elapsed(), LINGER_TIME);
        let stop = stopping.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        let start = Instant::now();
        linger(&stopping, std::future::pending()).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
