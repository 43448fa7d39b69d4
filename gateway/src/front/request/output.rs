//! A CGI's output on its way out, the same for both fronts: cut off at the request's deadline
//! and past `--max-output`. Read to its end, it is *delivered*, and the CGI may take until its
//! deadline to exit; dropped before that, the request is *abandoned*, and the CGI's process
//! group is killed at once (the request's watcher sees the `delivered` sender dropped unsent).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

/// How much of the CGI's stdout one read takes: big enough to keep syscalls per MiB low,
/// small enough that a slow client holds little memory per request.
pub const READ_CHUNK: usize = 64 * 1024;

/// How long the end of a CGI's output waits for the news of how its run ended: its exit
/// comes with the output's end (the worker reports it as it reaps), and a CGI that closes its
/// output and works on has said all it will.
const END_REPORT_WAIT: Duration = Duration::from_millis(50);

/// How a CGI's run ended, as its watcher tells the output. A run whose watcher drops the
/// sender unsent was lost: its worker died, or the gateway killed the CGI (a stop, its
/// deadline, its request abandoned).
pub struct RunExited;

/// Why a CGI's output was cut off.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("CGI lost with its worker, or killed by a stop, before its end; cut off")]
    Lost,
    #[error("CGI exceeded the timeout while sending its output; cut off")]
    Timeout,
    #[error("CGI output exceeded --max-output ({0} bytes); cut off")]
    TooLarge(u64),
    #[error("reading CGI output: {0}")]
    Io(#[from] std::io::Error),
}

/// The CGI's stdout, its deadline and output budget, and the signal that it was delivered.
pub struct CgiOutput {
    stdout: pipe::Receiver,
    deadline: Pin<Box<Sleep>>,
    /// Bytes the CGI may still send under `--max-output`, and that limit.
    budget: Option<u64>,
    max_output: Option<u64>,
    /// Sent once the output is delivered in full; dropped unsent, it has the CGI killed.
    delivered: Option<oneshot::Sender<()>>,
    /// How the run ended, awaited at the output's end ([`CgiOutput::poll_whole`]).
    ended: Option<oneshot::Receiver<RunExited>>,
    end_wait: Option<Pin<Box<Sleep>>>,
}

impl CgiOutput {
    pub fn new(
        stdout: pipe::Receiver,
        deadline: Instant,
        max_output: Option<u64>,
        delivered: oneshot::Sender<()>,
        ended: oneshot::Receiver<RunExited>,
    ) -> CgiOutput {
        CgiOutput {
            stdout,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            budget: max_output,
            max_output,
            delivered: Some(delivered),
            ended: Some(ended),
            end_wait: None,
        }
    }

    /// At the end of the output: whether it is whole. An output that ended because its CGI
    /// was killed with its worker, or by a stop, is not: sent as whole, a client would take
    /// half an answer for all of it. Waits for the news up to [`END_REPORT_WAIT`] if `wait`;
    /// without news by then (or at once if not `wait`), the output is taken as whole.
    pub fn poll_whole(
        &mut self,
        cx: &mut Context<'_>,
        wait: bool,
    ) -> Poll<Result<(), OutputError>> {
        let Some(ended) = self.ended.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let outcome = match Pin::new(ended).poll(cx) {
            Poll::Ready(Ok(RunExited)) => Ok(()),
            Poll::Ready(Err(_)) => Err(OutputError::Lost),
            Poll::Pending if !wait => Ok(()),
            Poll::Pending => {
                let grace = self
                    .end_wait
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(END_REPORT_WAIT)));
                ready!(grace.as_mut().poll(cx));
                Ok(())
            }
        };
        self.ended = None;
        Poll::Ready(outcome)
    }

    /// The pipe itself, for reading the CGI's header block before the body.
    pub fn stdout(&mut self) -> &mut pipe::Receiver {
        &mut self.stdout
    }

    /// Appends what the CGI has written next to `buffer`; `Ok(0)` at the end of its output.
    /// Past the deadline, an error instead.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut BytesMut,
    ) -> Poll<Result<usize, OutputError>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(OutputError::Timeout));
        }
        if buffer.capacity() - buffer.len() < READ_CHUNK {
            buffer.reserve(READ_CHUNK);
        }
        let read = ready!(poll_read_buf(Pin::new(&mut self.stdout), cx, buffer))?;
        Poll::Ready(Ok(read))
    }

    /// As [`CgiOutput::poll_read`], straight into a reader's buffer (no copy of ours).
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<Result<usize, OutputError>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(OutputError::Timeout));
        }
        let before = buffer.filled().len();
        ready!(Pin::new(&mut self.stdout).poll_read(cx, buffer))?;
        Poll::Ready(Ok(buffer.filled().len() - before))
    }

    /// Counts `bytes` sent on against `--max-output`.
    pub fn charge(&mut self, bytes: usize) -> Result<(), OutputError> {
        if let (Some(budget), Some(max)) = (self.budget.as_mut(), self.max_output) {
            *budget = budget
                .checked_sub(bytes as u64)
                .ok_or(OutputError::TooLarge(max))?;
        }
        Ok(())
    }

    /// The whole output has gone out: the CGI may finish in its own time.
    pub fn deliver(&mut self) {
        if let Some(delivered) = self.delivered.take() {
            let _ = delivered.send(());
        }
    }
}

/// How many of `bytes` more body bytes the CGI's Content-Length still allows (`remaining`, if
/// it gave one), counted down; the rest is dropped (and logged here). Both fronts hold a CGI
/// to its length so: a CGI cannot write a second response after the first's declared end.
pub fn within_content_length(remaining: &mut Option<u64>, bytes: usize) -> usize {
    let Some(remaining) = remaining.as_mut() else {
        return bytes;
    };
    let allowed = bytes.min(usize::try_from(*remaining).unwrap_or(usize::MAX));
    if allowed < bytes {
        tracing::warn!(
            extra = bytes - allowed,
            "CGI wrote more than its Content-Length; extra bytes dropped"
        );
    }
    *remaining -= allowed as u64;
    allowed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// The news of a CGI that exited by itself, as its watcher sends it.
    pub fn exited() -> oneshot::Receiver<RunExited> {
        let (exited, ended) = oneshot::channel();
        let _ = exited.send(RunExited);
        ended
    }

    async fn read(output: &mut CgiOutput, buffer: &mut BytesMut) -> Result<usize, OutputError> {
        poll_fn(|cx| output.poll_read(cx, buffer)).await
    }

    fn output(
        deadline: Duration,
        max_output: Option<u64>,
    ) -> (CgiOutput, pipe::Sender, oneshot::Receiver<()>) {
        let (cgi, stdout) = pipe::pipe().expect("pipe");
        let (delivered, delivery) = oneshot::channel();
        let output = CgiOutput::new(
            stdout,
            Instant::now() + deadline,
            max_output,
            delivered,
            exited(),
        );
        (output, cgi, delivery)
    }

    #[tokio::test(start_paused = true)]
    async fn output_read_to_its_end_is_delivered() {
        let (mut output, mut cgi, delivery) = output(Duration::from_secs(30), None);
        cgi.write_all(b"hello").await.expect("write");
        drop(cgi);
        let mut buffer = BytesMut::new();
        assert_eq!(read(&mut output, &mut buffer).await.expect("read"), 5);
        assert_eq!(read(&mut output, &mut buffer).await.expect("end"), 0);
        output.deliver();
        assert!(delivery.await.is_ok(), "delivered");
    }

    /// The end of an output is whole when its CGI exited by itself, or when it works on
    /// without news past the wait; not when its run was lost (the watcher dropped the news).
    #[tokio::test(start_paused = true)]
    async fn the_end_of_an_output_is_whole_unless_its_run_was_lost() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let output_with = |ended| {
            let (_cgi, stdout) = pipe::pipe().expect("pipe");
            let (delivered, _delivery) = oneshot::channel();
            CgiOutput::new(stdout, deadline, None, delivered, ended)
        };
        let mut whole = output_with(exited());
        assert!(poll_fn(|cx| whole.poll_whole(cx, true)).await.is_ok());

        let (lost, ended) = oneshot::channel::<RunExited>();
        drop(lost);
        let mut cut = output_with(ended);
        let error = poll_fn(|cx| cut.poll_whole(cx, true))
            .await
            .expect_err("lost");
        assert!(matches!(error, OutputError::Lost), "{error}");

        let (_running, ended) = oneshot::channel::<RunExited>();
        let mut lingering = output_with(ended);
        let started = Instant::now();
        assert!(poll_fn(|cx| lingering.poll_whole(cx, true)).await.is_ok());
        assert_eq!(started.elapsed(), END_REPORT_WAIT);
        let (_running, ended) = oneshot::channel::<RunExited>();
        let mut settling = output_with(ended);
        assert!(poll_fn(|cx| settling.poll_whole(cx, false)).await.is_ok());
        assert_eq!(started.elapsed(), END_REPORT_WAIT, "no wait while settling");
    }

    #[tokio::test(start_paused = true)]
    async fn output_dropped_before_its_end_is_abandoned() {
        let (output, _cgi, delivery) = output(Duration::from_secs(30), None);
        drop(output);
        assert!(delivery.await.is_err(), "abandoned: the CGI is killed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cgi_silent_past_its_deadline_is_cut_off() {
        let (mut output, _cgi, delivery) = output(Duration::from_secs(30), None);
        let started = Instant::now();
        let mut buffer = BytesMut::new();
        let error = read(&mut output, &mut buffer).await.expect_err("timeout");
        assert!(matches!(error, OutputError::Timeout), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(output);
        assert!(delivery.await.is_err(), "abandoned at the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn output_past_the_budget_is_refused() {
        let (mut output, _cgi, _delivery) = output(Duration::from_secs(30), Some(10));
        output.charge(6).expect("within");
        output.charge(4).expect("exactly the budget");
        let error = output.charge(1).expect_err("one byte too many");
        assert!(matches!(error, OutputError::TooLarge(10)), "{error}");
    }
}
