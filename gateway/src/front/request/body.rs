//! Request body → the CGI's stdin: the body policy both fronts share ([`prepare`]: length,
//! `--max-body`, spooling a body of unknown length), and the copy that never makes the client
//! wait for the CGI ([`feed`]). Both are bounded the same way: a body must keep arriving
//! ([`BodyDeadline`], else 408), and what waits for a CGI counts against one budget for all
//! requests ([`super::spool`], else 503).
//!
//! Many clients, nginx among them, send a whole request body before they read any of the
//! response. A CGI that writes more output than a pipe holds before it has read all its input
//! (an echo, a filter) then blocks on its stdout, stops reading its stdin, and with a plain copy
//! the gateway stops reading the client: nobody moves again until the timeout (nginx +
//! fcgiwrap wedges exactly so). Here the body is always read as fast as the client sends it;
//! what the CGI has not read yet waits in memory, in blocks of the request's own, and
//! past [`UNCOUNTED`] bytes counts against the spool budget. The body's size is bounded by its
//! Content-Length, which is bounded by `--max-body`, and the whole copy by the request's
//! deadline.

use std::collections::VecDeque;
use std::fs::File;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout_at, Instant};

use super::error::{internal, RequestError};
use super::spool::{memory_file, seal, BudgetSpent, Reservation, SpoolBudget};
use crate::config::MIN_BODY_RATE;

/// Bytes of a body held for a CGI that is behind without counting against the spool budget:
/// most bodies fit, and never touch the budget's counter that all requests share. Small, since
/// it is held per request, outside the budget, beside the request's own 64 KiB (README,
/// "Memory per request"): with 1,024 CGIs running, 64 MiB at most.
const UNCOUNTED: usize = 64 * 1024;
/// Room made in a FastCGI body's read buffer when it runs out.
const STREAM_READ: usize = 64 * 1024;

/// What the client has sent and the CGI not yet read.
///
/// It is held in memory, in the blocks [`BodySource`] fills. Until 2026-12 what did not fit
/// [`UNCOUNTED`] went to a memory file and was read back from it: two more copies of each
/// byte and a page made and freed for each 4 KiB. A 64 MiB echo did 542-599 MB/s that way,
/// and 814-948 held in memory (bench/MISSES.md); the copy into the blocks cost none of it
/// (757 against 805 MB/s, medians of 6 alternating rounds, the copy ahead in all 6). Once freed, it
/// stays in the allocator's heaps, ready for the next upload, until the front's next quiet
/// spell (`front::give_back_memory_when_quiet`): a trim after each 64 MiB echo would have it
/// fault every page in again, and took the gain away (464-532 MB/s against 603-703 without).
#[derive(Default)]
struct Backlog {
    pieces: VecDeque<Bytes>,
    bytes: usize,
    /// What the backlog holds of the spool budget: every byte past the first [`UNCOUNTED`].
    reservation: Option<Reservation>,
    /// The client's body has ended whole.
    ended: bool,
    /// The client's body will not arrive whole (it broke off, came too slowly, or met the
    /// budget): the CGI must not read an end of file after a part of it.
    broken: bool,
    /// The CGI stopped reading (closed stdin or exited): the rest is dropped.
    cgi_gone: bool,
}

struct Shared {
    backlog: Mutex<Backlog>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request body, as the front read its framing.
pub enum Body {
    None,
    /// Of a declared length (HTTP Content-Length, FastCGI CONTENT_LENGTH): streamed into the
    /// CGI's stdin while it runs. `expects_continue`: the client waits for a 100 Continue
    /// before it sends the body (hyper sends one when the body is first read).
    Sized {
        length: u64,
        source: BodySource,
        expects_continue: bool,
    },
    /// Of no length until it ends (HTTP chunked): spooled first, so that the CGI gets its
    /// CONTENT_LENGTH (RFC 3875 §4.1.2).
    Unsized(BodySource),
}

/// The request body, as the CGI will read it.
pub enum Prepared {
    Empty,
    /// Streamed into a pipe while the CGI runs, after the data already read, if any: its
    /// declared length, exactly.
    Stream(BodySource, Option<Bytes>, u64),
    /// Spooled whole to a sealed memory file that becomes the CGI's stdin, read-only, with
    /// its share of the spool budget (held until the CGI is gone).
    Spooled(File, Reservation),
}

/// When a request body must be in: `--body-timeout` after the request began, plus a second
/// for every [`MIN_BODY_RATE`] bytes received so far. A trickle is cut off; a large upload
/// on a slow but working link keeps earning time.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    start: Instant,
    grace: Duration,
}

impl BodyDeadline {
    /// Starts the clock now.
    pub fn new(grace: Duration) -> BodyDeadline {
        BodyDeadline {
            start: Instant::now(),
            grace,
        }
    }

    /// The deadline once `received` bytes are in.
    pub fn after(&self, received: u64) -> Instant {
        self.start + self.grace + Duration::from_secs(received / MIN_BODY_RATE)
    }
}

/// What bounds one request's body, besides its request's deadline.
pub struct BodyLimits {
    /// `--max-body`: 413 above it.
    pub max: u64,
    pub deadline: BodyDeadline,
    /// Bytes held for CGIs, all requests together, and `--spool-budget`.
    pub budget: Arc<SpoolBudget>,
    pub budget_limit: u64,
}

impl BodyLimits {
    /// An empty share of the spool budget, for this body to grow.
    fn reservation(&self) -> Reservation {
        self.budget.reservation(self.budget_limit)
    }
}

/// The body policy: a body over `--max-body` is refused with 413, a body of unknown length is
/// spooled (up to it, by its body deadline and `deadline`, within the budget), and a client
/// that waits for 100 Continue has its first piece read at once, by `deadline`. Returns the body and its
/// length, if it has one.
pub async fn prepare(
    body: Body,
    limits: &BodyLimits,
    deadline: Instant,
) -> Result<(Prepared, Option<u64>), RequestError> {
    let max = limits.max;
    match body {
        Body::None | Body::Sized { length: 0, .. } => Ok((Prepared::Empty, None)),
        Body::Sized { length, .. } if length > max => Err(RequestError::BodyTooLarge(length)),
        Body::Sized {
            length,
            mut source,
            expects_continue,
        } => {
            // Read now, so that the interim response cannot lose the race with the CGI's
            // final one (after which the client would never send the body the CGI waits for).
            let first = if expects_continue {
                match timeout_at(deadline, source.next()).await {
                    Ok(Some(Ok(data))) => Some(data),
                    Ok(None) => None,
                    Ok(Some(Err(_))) => {
                        return Err(RequestError::BadRequest("request body ended early"))
                    }
                    Err(_) => return Err(RequestError::Timeout),
                }
            } else {
                None
            };
            Ok((Prepared::Stream(source, first, length), Some(length)))
        }
        Body::Unsized(source) => {
            let (file, reservation, length) = spool(source, limits, deadline).await?;
            Ok((Prepared::Spooled(file, reservation), Some(length)))
        }
    }
}

/// Reads a body of unknown length into a memory file, refusing it past `--max-body`, past its
/// body deadline or the request's `deadline` (408), or past the spool budget (503); then seals
/// the file, so that the CGI can only read it. The request's deadline bounds it as it bounds a
/// body streamed to a running CGI: kept to the rate alone, a large upload sent at 4 KiB/s could
/// hold its share of the budget, which all requests share, for days.
async fn spool(
    mut source: BodySource,
    limits: &BodyLimits,
    deadline: Instant,
) -> Result<(File, Reservation, u64), RequestError> {
    use std::io::{Seek, SeekFrom, Write};
    // Writes go to memory: short enough not to need a thread.
    let mut file = memory_file("jailgate-body").map_err(internal)?;
    let mut reservation = limits.reservation();
    let mut length: u64 = 0;
    loop {
        let by = limits.deadline.after(length).min(deadline);
        let next = timeout_at(by, source.next()).await;
        let Some(data) = next.map_err(|_| RequestError::BodyTimeout)? else {
            break;
        };
        let data = data.map_err(|_| RequestError::BadRequest("request body ended early"))?;
        length += data.len() as u64;
        if length > limits.max {
            return Err(RequestError::BodyTooLarge(length));
        }
        reservation
            .grow(data.len() as u64)
            .map_err(|_| limits.budget.refused())?;
        file.write_all(&data).map_err(internal)?;
    }
    seal(&file).map_err(internal)?;
    file.seek(SeekFrom::Start(0)).map_err(internal)?;
    Ok((file, reservation, length))
}

/// Where a request body comes from: an HTTP request, or any byte stream (FastCGI's STDIN).
///
/// Either way the pieces end up in one buffer of the request's own, each split off it, so
/// that the pieces a slow CGI leaves waiting fill blocks of [`STREAM_READ`] one after the
/// other: what they hold beyond their bytes is at most the used part of the oldest block and
/// the free part of the newest.
pub enum BodySource {
    /// hyper cuts each piece out of its connection's read buffer, and a piece keeps all of
    /// that buffer alive: kept as read, a body sent a byte at a time held a fresh 8 KiB
    /// buffer for each byte (`uploads::a_body_sent_a_byte_at_a_time_holds_only_its_bytes`),
    /// none of it counted. So each piece is copied into `buffer`; `pending` is what did not
    /// fit the room left in its block, for the next piece.
    Http {
        body: Incoming,
        buffer: BytesMut,
        pending: Bytes,
    },
    /// Read straight into `buffer`.
    Stream {
        reader: Pin<Box<dyn AsyncRead + Send>>,
        buffer: BytesMut,
    },
}

impl BodySource {
    pub fn http(body: Incoming) -> BodySource {
        BodySource::Http {
            body,
            buffer: BytesMut::new(),
            pending: Bytes::new(),
        }
    }

    pub fn stream(reader: impl AsyncRead + Send + 'static) -> BodySource {
        BodySource::Stream {
            reader: Box::pin(reader),
            buffer: BytesMut::new(),
        }
    }

    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            BodySource::Http {
                body,
                buffer,
                pending,
            } => {
                while pending.is_empty() {
                    match body.frame().await? {
                        Ok(frame) => {
                            if let Ok(data) = frame.into_data() {
                                *pending = data;
                            }
                        }
                        Err(_) => return Some(Err("the client's request body ended early".into())),
                    }
                }
                Some(Ok(copy_into(buffer, pending)))
            }
            BodySource::Stream { reader, buffer } => {
                if buffer.capacity() - buffer.len() < STREAM_READ / 4 {
                    buffer.reserve(STREAM_READ);
                }
                match reader.read_buf(buffer).await {
                    Ok(0) => None,
                    Ok(_) => Some(Ok(buffer.split().freeze())),
                    Err(error) => Some(Err(format!("the request body ended early: {error}"))),
                }
            }
        }
    }
}

/// Moves what fits of `data` into `buffer` (a new block of [`STREAM_READ`] once the last is
/// full) and returns it as a piece of its own.
fn copy_into(buffer: &mut BytesMut, data: &mut Bytes) -> Bytes {
    if buffer.capacity() == buffer.len() {
        buffer.reserve(STREAM_READ);
    }
    let fits = data.len().min(buffer.capacity() - buffer.len());
    buffer.extend_from_slice(&data.split_to(fits));
    buffer.split().freeze()
}

/// Copies `first` (data already read) and the rest of `body`, `declared` bytes in all, into the
/// CGI's `stdin`, until the body ends, its body deadline or the request's `deadline`; returns
/// when both the client's side and the CGI's are done. `received` gets how the body ended as
/// soon as it has (not when the CGI has taken the rest, which it may never): whole, or why
/// not. A body that is not exactly its declared length (hyper sees to that for HTTP; FastCGI's
/// STDIN stream ends where the front server ends it) is a broken one: the CGI gets
/// CONTENT_LENGTH bytes, never more (past `--max-body`) or fewer (RFC 3875 §4.2).
pub async fn feed(
    mut body: BodySource,
    first: Option<Bytes>,
    declared: u64,
    stdin: pipe::Sender,
    deadline: Instant,
    limits: BodyLimits,
    received: oneshot::Sender<Result<(), RequestError>>,
) {
    let shared = Arc::new(Shared {
        backlog: Mutex::new(Backlog {
            reservation: Some(limits.reservation()),
            ..Backlog::default()
        }),
        changed: Notify::new(),
    });
    let writer = tokio::spawn(write_out(shared.clone(), stdin));
    let read = async {
        let mut length: u64 = 0;
        if let Some(first) = first {
            length += first.len() as u64;
            push(&shared, first).map_err(|BudgetSpent| limits.budget.refused())?;
        }
        loop {
            let body_deadline = limits.deadline.after(length);
            let next = match timeout_at(body_deadline.min(deadline), body.next()).await {
                Ok(next) => next,
                Err(_) if body_deadline < deadline => return Err(RequestError::BodyTimeout),
                Err(_) => return Err(RequestError::Timeout),
            };
            let Some(data) = next else {
                if length < declared {
                    return Err(RequestError::BadRequest("request body ended early"));
                }
                return Ok(());
            };
            let data = data.map_err(|why| {
                tracing::debug!("{why}");
                RequestError::BadRequest("request body ended early")
            })?;
            length += data.len() as u64;
            if length > declared {
                return Err(RequestError::BadRequest(
                    "request body longer than its declared length",
                ));
            }
            push(&shared, data).map_err(|BudgetSpent| limits.budget.refused())?;
        }
    };
    let outcome = read.await;
    // Read to its end or given up: let hyper have the connection back (to read on, or to
    // close) now, not once the CGI has taken what waits, or been stopped.
    drop(body);
    if let Err(error) = &outcome {
        tracing::debug!("request body not received whole: {error}");
    }
    {
        let mut backlog = shared.lock();
        match &outcome {
            Ok(()) => backlog.ended = true,
            Err(_) => backlog.broken = true,
        }
    }
    let _ = received.send(outcome);
    shared.changed.notify_one();
    let abort = writer.abort_handle();
    if timeout_at(deadline, writer).await.is_err() {
        abort.abort();
    }
}

/// The bytes of a backlog of `bytes` that count against the spool budget.
fn counted(bytes: usize) -> u64 {
    bytes.saturating_sub(UNCOUNTED) as u64
}

/// Queues one piece of the body for the CGI; `BudgetSpent` if it would take the spool budget
/// past its limit.
fn push(shared: &Shared, data: Bytes) -> Result<(), BudgetSpent> {
    let mut backlog = shared.lock();
    if backlog.cgi_gone {
        // Still read, so the client is never stuck sending; but nobody wants it.
        return Ok(());
    }
    let more = counted(backlog.bytes + data.len()) - counted(backlog.bytes);
    if let Some(reservation) = backlog.reservation.as_mut().filter(|_| more > 0) {
        reservation.grow(more)?;
    }
    backlog.bytes += data.len();
    backlog.pieces.push_back(data);
    drop(backlog);
    shared.changed.notify_one();
    Ok(())
}

/// What [`take`] found: bytes for the CGI, nothing yet, the end of the body, or a body that
/// will never be whole.
enum Next {
    Data(Bytes),
    Wait,
    Done,
    Broken,
}

/// Takes the oldest bytes not yet given to the CGI, and gives back their share of the spool
/// budget.
fn take(backlog: &mut Backlog) -> Next {
    if backlog.broken {
        backlog.drop_all();
        return Next::Broken;
    }
    if let Some(data) = backlog.pieces.pop_front() {
        let less = counted(backlog.bytes) - counted(backlog.bytes - data.len());
        backlog.bytes -= data.len();
        if let Some(reservation) = &mut backlog.reservation {
            reservation.shrink(less);
        }
        return Next::Data(data);
    }
    if backlog.ended {
        Next::Done
    } else {
        Next::Wait
    }
}

async fn write_out(shared: Arc<Shared>, mut stdin: pipe::Sender) {
    loop {
        let next = take(&mut shared.lock());
        let data = match next {
            Next::Data(data) => data,
            // notify_one keeps a permit when nobody waits, so no wake-up is lost here.
            Next::Wait => {
                shared.changed.notified().await;
                continue;
            }
            // Dropping stdin gives the CGI its end of file.
            Next::Done => return,
            // An end of file now would pass a part of the body off as the whole (RFC 3875
            // §4.2: CONTENT_LENGTH bytes, or none): the request fails, and its CGI is stopped.
            // Its stdin stays open until then, when its end closes (an error on ours), or
            // until the deadline.
            Next::Broken => {
                let _ = stdin.ready(Interest::ERROR).await;
                return;
            }
        };
        if stdin.write_all(&data).await.is_err() {
            // The CGI closed its stdin or exited: it does not want the rest.
            break;
        }
    }
    let mut backlog = shared.lock();
    backlog.cgi_gone = true;
    backlog.drop_all();
}

impl Backlog {
    /// Lets go of every piece held, and of the budget they held.
    fn drop_all(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
        self.reservation = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(shared: &Shared) -> Vec<u8> {
        let mut out = Vec::new();
        while let Next::Data(data) = take(&mut shared.lock()) {
            out.extend_from_slice(&data);
        }
        out
    }

    /// Bytes come out in the order they went in, and what is held past [`UNCOUNTED`] is held
    /// of the spool budget until the CGI takes it; past the budget, a push is refused.
    #[test]
    fn bytes_keep_their_order_and_the_budget_counts_what_waits() {
        let budget = Arc::new(SpoolBudget::default());
        let limit = 650_000;
        let shared = Shared {
            backlog: Mutex::new(Backlog {
                reservation: Some(budget.reservation(limit)),
                ..Backlog::default()
            }),
            changed: Notify::new(),
        };
        let piece = |n: u8, len: usize| Bytes::from(vec![n; len]);
        let mut expected = Vec::new();
        for n in 0..12u8 {
            let data = piece(n, 50_000);
            expected.extend_from_slice(&data);
            push(&shared, data).expect("push");
        }
        assert_eq!(budget.used(), 600_000 - UNCOUNTED as u64);
        let mut got = Vec::new();
        for _ in 0..3 {
            if let Next::Data(data) = take(&mut shared.lock()) {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(budget.used(), 450_000 - UNCOUNTED as u64);
        for n in 12..20u8 {
            let data = piece(n, 30_000);
            expected.extend_from_slice(&data);
            push(&shared, data).expect("push");
        }
        // 690,000 held, 624,464 of them counted: one more piece of 80,000 passes the limit.
        assert_eq!(push(&shared, piece(98, 80_000)), Err(BudgetSpent));
        got.extend(drain(&shared));
        assert_eq!(budget.used(), 0, "all taken: the budget is back");
        push(&shared, piece(99, 10)).expect("push");
        expected.extend_from_slice(&[99; 10]);
        got.extend(drain(&shared));
        assert_eq!(got, expected);
        assert!(matches!(take(&mut shared.lock()), Next::Wait));
        shared.lock().ended = true;
        assert!(matches!(take(&mut shared.lock()), Next::Done));
    }

    /// A body that broke off is never ended as if whole: what waits is dropped, with its
    /// share of the budget, and the writer is told it broke, not that it ended.
    #[test]
    fn a_broken_body_does_not_end() {
        let budget = Arc::new(SpoolBudget::default());
        let shared = Shared {
            backlog: Mutex::new(Backlog {
                reservation: Some(budget.reservation(1 << 30)),
                ..Backlog::default()
            }),
            changed: Notify::new(),
        };
        push(&shared, Bytes::from(vec![7; UNCOUNTED + 1000])).expect("push");
        assert_eq!(budget.used(), 1000);
        shared.lock().broken = true;
        assert!(matches!(take(&mut shared.lock()), Next::Broken));
        assert_eq!(budget.used(), 0);
        assert!(matches!(take(&mut shared.lock()), Next::Broken));
    }

    /// HTTP pieces are copied into blocks of the request's own, filled one after the other: a
    /// piece that does not fit the room left is cut there, and the rest starts the next block.
    #[test]
    fn pieces_are_copied_into_blocks_filled_in_turn() {
        let mut buffer = BytesMut::new();
        let mut pieces = Vec::new();
        let mut expected = Vec::new();
        for n in 0..200u8 {
            // 1 byte, then 1,000: 200,100 bytes, about three blocks.
            let len = if n % 2 == 0 { 1 } else { 1000 };
            let data = vec![n; len];
            expected.extend_from_slice(&data);
            let mut pending = Bytes::from(data);
            while !pending.is_empty() {
                pieces.push(copy_into(&mut buffer, &mut pending));
            }
        }
        let got: Vec<u8> = pieces
            .iter()
            .flat_map(|piece| piece.iter().copied())
            .collect();
        assert_eq!(got, expected);
        // Adjacent pieces follow each other in a block, except where a block ends.
        let breaks = pieces
            .windows(2)
            .filter(|pair| pair[0].as_ptr().wrapping_add(pair[0].len()) != pair[1].as_ptr())
            .count();
        let blocks = expected.len().div_ceil(STREAM_READ);
        assert_eq!(breaks, blocks - 1, "one break a block");
        // The pieces cut at a block's end: one more than the 200 given.
        assert_eq!(pieces.len(), 200 + blocks - 1);
    }

    #[test]
    fn nothing_is_kept_once_the_cgi_is_gone() {
        let shared = Shared {
            backlog: Mutex::default(),
            changed: Notify::new(),
        };
        shared.lock().cgi_gone = true;
        push(&shared, Bytes::from_static(b"unwanted")).expect("push");
        assert!(matches!(take(&mut shared.lock()), Next::Wait));
    }

    /// A FastCGI body read in small pieces: each piece is its own bytes, in order, and they
    /// share the stream's buffer.
    #[tokio::test]
    async fn a_stream_is_read_in_pieces_of_one_buffer() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut source = BodySource::stream(reader);
        let mut got = Vec::new();
        let mut pieces = Vec::new();
        for n in 0..100u8 {
            writer.write_all(&[n; 100]).await.expect("write");
            let piece = source.next().await.expect("a piece").expect("data");
            got.extend_from_slice(&piece);
            pieces.push(piece);
        }
        drop(writer);
        assert!(source.next().await.is_none(), "the end");
        let expected: Vec<u8> = (0..100u8).flat_map(|n| [n; 100]).collect();
        assert_eq!(got, expected);
        // Each piece starts where the one before ended, in the same buffer: 100 pieces of
        // 100 bytes fit one buffer of 64 KiB.
        let adjacent = pieces
            .windows(2)
            .filter(|pair| pair[0].as_ptr().wrapping_add(pair[0].len()) == pair[1].as_ptr())
            .count();
        assert_eq!(
            adjacent,
            pieces.len() - 1,
            "pieces each in a buffer of its own"
        );
    }
}
