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
//! what the CGI has not read yet waits in memory, and past [`SPILL_AFTER`] in an unlinked
//! memory file. The body's size is bounded by its Content-Length, which is bounded by
//! `--max-body`, and the whole copy by the request's deadline.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout_at, Instant};

use super::error::{internal, RequestError};
use super::spool::{memory_file, seal, Reservation, SpoolBudget};
use crate::config::MIN_BODY_RATE;

/// Bytes of a body kept in memory while the CGI is behind; beyond, they go to a memory file
/// that counts against the spool budget.
const SPILL_AFTER: usize = 256 * 1024;
/// Largest piece read back from the spill file at once.
const SPILL_READ: usize = 64 * 1024;

/// What the client has sent and the CGI not yet read.
#[derive(Default)]
struct Backlog {
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    spill: Option<File>,
    /// What the spill file holds of the spool budget.
    reservation: Option<Reservation>,
    /// Spill file offsets: written up to, read up to.
    spilled: u64,
    drained: u64,
    /// The client's body has ended (or failed, or the deadline passed).
    ended: bool,
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
    /// Streamed into a pipe while the CGI runs, after the data already read, if any.
    Stream(BodySource, Option<Bytes>),
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
/// spooled (up to it, by its body deadline, within the budget), and a client that waits for
/// 100 Continue has its first piece read at once, by `deadline`. Returns the body and its
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
            Ok((Prepared::Stream(source, first), Some(length)))
        }
        Body::Unsized(source) => {
            let (file, reservation, length) = spool(source, limits).await?;
            Ok((Prepared::Spooled(file, reservation), Some(length)))
        }
    }
}

/// Reads a body of unknown length into a memory file, refusing it past `--max-body`, past its
/// body deadline (408) or past the spool budget (503); then seals the file, so that the CGI
/// can only read it.
async fn spool(
    mut source: BodySource,
    limits: &BodyLimits,
) -> Result<(File, Reservation, u64), RequestError> {
    use std::io::{Seek, SeekFrom, Write};
    // Writes go to memory: short enough not to need a thread.
    let mut file = memory_file("jailgate-body").map_err(internal)?;
    let mut reservation = limits.reservation();
    let mut length: u64 = 0;
    loop {
        let next = timeout_at(limits.deadline.after(length), source.next()).await;
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
pub enum BodySource {
    Http(Incoming),
    Stream(Pin<Box<dyn AsyncRead + Send>>),
}

impl BodySource {
    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            BodySource::Http(body) => loop {
                match body.frame().await? {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            return Some(Ok(data));
                        }
                    }
                    Err(_) => return Some(Err("the client's request body ended early".into())),
                }
            },
            BodySource::Stream(reader) => {
                let mut buffer = BytesMut::with_capacity(SPILL_READ);
                match reader.read_buf(&mut buffer).await {
                    Ok(0) => None,
                    Ok(_) => Some(Ok(buffer.freeze())),
                    Err(error) => Some(Err(format!("the request body ended early: {error}"))),
                }
            }
        }
    }
}

/// Copies `first` (data already read) and the rest of `body` into the CGI's `stdin`, until the
/// body ends, its body deadline or the request's `deadline`; returns when both the client's
/// side and the CGI's are done. `received` gets how the body ended as soon as it has (not
/// when the CGI has taken the rest, which it may never): whole, or why not.
pub async fn feed(
    mut body: BodySource,
    first: Option<Bytes>,
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
            push(&shared, first).map_err(|spent| spent.into_error(&limits))?;
        }
        loop {
            let body_deadline = limits.deadline.after(length);
            let next = match timeout_at(body_deadline.min(deadline), body.next()).await {
                Ok(next) => next,
                Err(_) if body_deadline < deadline => return Err(RequestError::BodyTimeout),
                Err(_) => return Err(RequestError::Timeout),
            };
            let Some(data) = next else {
                return Ok(());
            };
            let data = data.map_err(|why| {
                tracing::debug!("{why}");
                RequestError::BadRequest("request body ended early")
            })?;
            length += data.len() as u64;
            push(&shared, data).map_err(|spent| spent.into_error(&limits))?;
        }
    };
    let outcome = read.await;
    if let Err(error) = &outcome {
        tracing::debug!("request body not received whole: {error}");
    }
    let _ = received.send(outcome);
    shared.lock().ended = true;
    shared.changed.notify_one();
    let abort = writer.abort_handle();
    if timeout_at(deadline, writer).await.is_err() {
        abort.abort();
    }
}

/// Why a piece of the body could not be queued.
#[derive(Debug)]
enum PushError {
    /// The spool budget is spent.
    BudgetSpent,
    Spill(std::io::Error),
}

impl PushError {
    fn into_error(self, limits: &BodyLimits) -> RequestError {
        match self {
            PushError::BudgetSpent => limits.budget.refused(),
            PushError::Spill(error) => internal(error),
        }
    }
}

/// Queues one piece of the body for the CGI.
fn push(shared: &Shared, data: Bytes) -> Result<(), PushError> {
    let mut backlog = shared.lock();
    if backlog.cgi_gone {
        // Still read, so the client is never stuck sending; but nobody wants it.
        return Ok(());
    }
    let spill_drained = backlog.spilled == backlog.drained;
    if spill_drained && backlog.memory_bytes + data.len() <= SPILL_AFTER {
        backlog.memory_bytes += data.len();
        backlog.memory.push_back(data);
    } else {
        // Once spilling, everything goes to the file until the CGI has read it all, so the
        // order of the bytes is kept (memory holds only what came before).
        if let Some(reservation) = &mut backlog.reservation {
            reservation
                .grow(data.len() as u64)
                .map_err(|_| PushError::BudgetSpent)?;
        }
        if backlog.spill.is_none() {
            backlog.spill = Some(memory_file("jailgate-spill").map_err(PushError::Spill)?);
        }
        let offset = backlog.spilled;
        if let Some(spill) = &backlog.spill {
            // Memory writes of one frame: short enough not to need a thread.
            spill
                .write_all_at(&data, offset)
                .map_err(PushError::Spill)?;
        }
        backlog.spilled += data.len() as u64;
    }
    drop(backlog);
    shared.changed.notify_one();
    Ok(())
}

/// Takes the oldest bytes not yet given to the CGI; `None` once there will be no more.
enum Next {
    Data(Bytes),
    Wait,
    Done,
}

fn take(backlog: &mut Backlog) -> Result<Next, std::io::Error> {
    if let Some(data) = backlog.memory.pop_front() {
        backlog.memory_bytes -= data.len();
        return Ok(Next::Data(data));
    }
    if backlog.drained < backlog.spilled {
        let want = (backlog.spilled - backlog.drained).min(SPILL_READ as u64) as usize;
        let mut data = vec![0; want];
        if let Some(spill) = &backlog.spill {
            spill.read_exact_at(&mut data, backlog.drained)?;
        }
        backlog.drained += want as u64;
        if backlog.drained == backlog.spilled {
            // All read back: start the file over instead of letting it grow.
            backlog.spilled = 0;
            backlog.drained = 0;
            if let Some(spill) = &backlog.spill {
                spill.set_len(0)?;
            }
            if let Some(reservation) = &mut backlog.reservation {
                reservation.release();
            }
        }
        return Ok(Next::Data(Bytes::from(data)));
    }
    Ok(if backlog.ended {
        Next::Done
    } else {
        Next::Wait
    })
}

async fn write_out(shared: Arc<Shared>, mut stdin: pipe::Sender) {
    loop {
        let next = take(&mut shared.lock());
        let data = match next {
            Ok(Next::Data(data)) => data,
            // notify_one keeps a permit when nobody waits, so no wake-up is lost here.
            Ok(Next::Wait) => {
                shared.changed.notified().await;
                continue;
            }
            // Dropping stdin gives the CGI its end of file.
            Ok(Next::Done) => return,
            Err(error) => {
                tracing::warn!("reading back the spilled request body: {error}");
                break;
            }
        };
        if stdin.write_all(&data).await.is_err() {
            // The CGI closed its stdin or exited: it does not want the rest.
            break;
        }
    }
    let mut backlog = shared.lock();
    backlog.cgi_gone = true;
    backlog.memory.clear();
    backlog.memory_bytes = 0;
    backlog.spill = None;
    backlog.reservation = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(shared: &Shared) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(Next::Data(data)) = take(&mut shared.lock()) {
            out.extend_from_slice(&data);
        }
        out
    }

    #[test]
    fn bytes_keep_their_order_through_memory_and_spill_file() {
        let shared = Shared {
            backlog: Mutex::default(),
            changed: Notify::new(),
        };
        let piece = |n: u8, len: usize| Bytes::from(vec![n; len]);
        let mut expected = Vec::new();
        // Fill memory, spill, take part, push more (must follow the spill), drain, then memory again.
        for n in 0..12u8 {
            let data = piece(n, 50_000);
            expected.extend_from_slice(&data);
            push(&shared, data).expect("push");
        }
        assert!(
            shared.lock().spilled > 0,
            "past SPILL_AFTER the backlog spills to the file"
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            if let Ok(Next::Data(data)) = take(&mut shared.lock()) {
                got.extend_from_slice(&data);
            }
        }
        for n in 12..20u8 {
            let data = piece(n, 30_000);
            expected.extend_from_slice(&data);
            push(&shared, data).expect("push");
        }
        got.extend(drain(&shared));
        assert_eq!(shared.lock().spilled, 0, "a drained spill file starts over");
        push(&shared, piece(99, 10)).expect("push");
        expected.extend_from_slice(&[99; 10]);
        got.extend(drain(&shared));
        assert_eq!(got, expected);
        assert!(matches!(take(&mut shared.lock()), Ok(Next::Wait)));
        shared.lock().ended = true;
        assert!(matches!(take(&mut shared.lock()), Ok(Next::Done)));
    }

    #[test]
    fn nothing_is_kept_once_the_cgi_is_gone() {
        let shared = Shared {
            backlog: Mutex::default(),
            changed: Notify::new(),
        };
        shared.lock().cgi_gone = true;
        push(&shared, Bytes::from_static(b"unwanted")).expect("push");
        assert!(matches!(take(&mut shared.lock()), Ok(Next::Wait)));
    }
}
