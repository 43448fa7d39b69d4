//! One FastCGI connection from a front server, served as a RESPONDER (FastCGI Specification
//! 1.0, section 6.2), one request at a time.
//!
//! Two halves run side by side in the caller's task: the inbound loop reads records, feeds
//! STDIN to the handler through a small queue and drives the handler's response; the outbound
//! loop writes the encoded records it is given. The response (STDOUT and STDERR pumped at the
//! same time) and the STDIN feed proceed together, so a CGI that answers before it reads its
//! input does not deadlock; when the handler does not read STDIN, the connection is not read
//! either, which is the backpressure nginx sees.
//!
//! STDOUT is held back (up to [`STDOUT_HOLD_BYTES`]) until STDIN has ended, because nginx stops
//! sending the request body once it has passed the response header on to its client
//! (`ngx_http_upstream_send_response` closes the buffered body, and the upstream write handler
//! becomes a no-op): a shell CGI that prints its headers and then reads a large POST body
//! would otherwise wait forever for the rest of it. fcgiwrap gets the same effect by writing
//! all of STDIN to the CGI before reading its output; past the hold limit we send anyway,
//! rather than deadlock the way fcgiwrap does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Decoder, Encoder};

use super::error::FcgiError;
use super::limits::{
    ADVERTISED_MAX_CONNS, MAX_PARAMS_BYTES, OUTPUT_CHUNK, OUTPUT_QUEUE_RECORDS, STDIN_QUEUE_CHUNKS,
    STDOUT_HOLD_BYTES,
};
use super::params::{decode_params, encode_params, NameValuePairs};
use super::record::{
    unknown_type_body, BeginRequestBody, EndRequestBody, Record, RecordCodec, RecordType,
    FCGI_CANT_MPX_CONN, FCGI_REQUEST_COMPLETE, FCGI_RESPONDER, FCGI_UNKNOWN_ROLE, NULL_REQUEST_ID,
};
use crate::front::linger::{linger, Stopping};

/// One RESPONDER request, handed to the handler once its PARAMS stream is complete.
pub struct FcgiRequest {
    /// The FastCGI request id (for logs; the connection takes care of it).
    pub request_id: u16,
    /// The FCGI_PARAMS name-value pairs, in the order sent.
    pub params: NameValuePairs,
    /// The FCGI_STDIN stream, read as it arrives.
    pub stdin: FcgiStdin,
}

impl FcgiRequest {
    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The FCGI_STDIN stream of a request: end of file at the empty STDIN record; an error if the
/// request ends before that record (connection closed, request aborted).
pub struct FcgiStdin {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
    ended: bool,
}

impl FcgiStdin {
    fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        FcgiStdin {
            chunks,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl AsyncRead for FcgiStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                buf.put_slice(&this.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.chunks.poll_recv(cx)) {
                // The connection sends an empty chunk for the empty STDIN record.
                Some(chunk) if chunk.is_empty() => this.ended = true,
                Some(chunk) => this.current = chunk,
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "FastCGI request ended before the end of its STDIN stream",
                    )))
                }
            }
        }
    }
}

/// What the handler gives back. `stdout` is CGI-style output (headers, blank line, body),
/// passed to the front server as FCGI_STDOUT unchanged; `stderr`, if any, goes out as
/// FCGI_STDERR (nginx logs it); `app_status` goes in END_REQUEST (like an exit status).
pub struct FcgiResponse<O, E = tokio::io::Empty> {
    pub stdout: O,
    pub stderr: Option<E>,
    pub app_status: u32,
}

impl<O> FcgiResponse<O> {
    /// A response with no stderr and app status 0.
    pub fn new(stdout: O) -> Self {
        FcgiResponse {
            stdout,
            stderr: None,
            app_status: 0,
        }
    }
}

/// Serves one FastCGI connection until it closes, one request at a time: for each request,
/// calls `handler(request).await` once the PARAMS stream is complete, and streams the returned
/// stdout and stderr as FCGI_STDOUT / FCGI_STDERR records while STDIN keeps flowing to the
/// handler (stdout held back until STDIN ends, up to [`STDOUT_HOLD_BYTES`]: see the module
/// documentation), then sends END_REQUEST. Closes the connection after a request without
/// FCGI_KEEP_CONN. Answers GET_VALUES and unknown management records; ABORT_REQUEST drops the
/// handler's future and streams (the caller's drop guards stop the CGI) and ends the request;
/// a role other than RESPONDER, or a second request while one is active, is refused with
/// END_REQUEST. Returns `Ok` when the peer closes the connection (if a request was active, it
/// is dropped, as for an abort) or after a request without FCGI_KEEP_CONN; a malformed record
/// ends the connection with an error, which is also logged. A linger after the last request
/// (see `linger.rs`) ends when `stopping` is cancelled.
pub async fn serve_connection<S, H, Fut, O, E>(
    stream: S,
    handler: H,
    stopping: Stopping,
) -> Result<(), FcgiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: FnMut(FcgiRequest) -> Fut + Send,
    Fut: Future<Output = FcgiResponse<O, E>> + Send,
    O: AsyncRead + Unpin + Send,
    E: AsyncRead + Unpin + Send,
{
    let result = serve(stream, handler, stopping).await;
    if let Err(error) = &result {
        tracing::warn!(%error, "FastCGI connection ended with an error");
    }
    result
}

async fn serve<S, H, Fut, O, E>(stream: S, handler: H, stopping: Stopping) -> Result<(), FcgiError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(FcgiRequest) -> Fut,
    Fut: Future<Output = FcgiResponse<O, E>>,
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut records = RecordReader {
        reader,
        buf: BytesMut::with_capacity(8 * 1024),
    };
    let (frames, queued) = mpsc::channel(OUTPUT_QUEUE_RECORDS);
    let outbound = write_frames(writer, queued);
    tokio::pin!(outbound);
    let stdin_still_coming = {
        let inbound = run_inbound(&mut records, handler, Output { frames }, &stopping);
        tokio::pin!(inbound);
        tokio::select! {
            result = &mut inbound => match result {
                // The peer closed its side: still try to deliver what is queued (the
                // END_REQUEST of a request it saw finish, for a peer that only half-closed); a
                // peer that is wholly gone makes that fail at once, which is no error of the
                // connection.
                Ok(Ending::PeerClosed) => {
                    if let Err(error) = outbound.await {
                        tracing::debug!(%error, "FastCGI peer gone before the last records");
                    }
                    None
                }
                // A request without FCGI_KEEP_CONN is done: let the queued records out (the
                // queue ends once the inbound half and its response are gone), then shut the
                // write side.
                Ok(Ending::AfterRequest { stdin_of }) => {
                    outbound.await?;
                    stdin_of
                }
                // The outbound half failed first: its error says why.
                Err(FcgiError::OutputClosed) => {
                    outbound.await?;
                    return Err(FcgiError::OutputClosed);
                }
                // What was sent of the response goes out, then the connection closes with
                // no END_REQUEST.
                Err(error @ FcgiError::ResponseCutOff { .. }) => {
                    let _ = outbound.await;
                    return Err(error);
                }
                // A bad peer: no point in sending it anything more.
                Err(error) => return Err(error),
            },
            result = &mut outbound => match result {
                // nginx closes the connection when its client goes away: not our error.
                Err(error) if peer_gone(&error) => {
                    tracing::debug!(%error, "FastCGI peer closed the connection while we wrote");
                    None
                }
                Err(error) => return Err(error.into()),
                // Unreachable in practice: the queue ends only once every sender is gone, that
                // is once inbound has returned, which ends this select in the branch above.
                Ok(()) => {
                    inbound.await?;
                    None
                }
            }
        }
    };
    if let Some(id) = stdin_still_coming {
        // Answered before its STDIN ended (413 over --max-body): closed at once, the
        // connection would fail nginx's writes of the rest, and nginx would answer its client
        // 502 instead of ours. Our side is shut, so nginx has the whole answer (it waits for
        // that end); what it still sends is read and dropped until that STDIN ends or nginx
        // closes, at most LINGER_TIME (and not past a stop's beginning).
        linger(&stopping, async {
            while let Ok(Some(record)) = records.next().await {
                let stdin_end = record.record_type == RecordType::Stdin
                    && record.request_id == id
                    && record.content.is_empty();
                if stdin_end {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}

fn peer_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// Writes encoded records in order; shuts the write side once every sender is gone.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut frames: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    while let Some(frame) = frames.recv().await {
        writer.write_all(&frame).await?;
        if frames.is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    if let Err(error) = writer.shutdown().await {
        // The peer may already be gone after the last END_REQUEST; nothing is lost.
        tracing::debug!(%error, "FastCGI connection shutdown");
    }
    Ok(())
}

/// The sending side of the outbound queue; cloned into each response.
#[derive(Clone)]
struct Output {
    frames: mpsc::Sender<Bytes>,
}

impl Output {
    async fn send(&self, record: Record) -> Result<(), FcgiError> {
        let mut frame = BytesMut::new();
        RecordCodec.encode(record, &mut frame)?;
        self.frames
            .send(frame.freeze())
            .await
            .map_err(|_| FcgiError::OutputClosed)
    }

    async fn end_request(
        &self,
        request_id: u16,
        app_status: u32,
        protocol_status: u8,
    ) -> Result<(), FcgiError> {
        let body = EndRequestBody {
            app_status,
            protocol_status,
        };
        let record = Record::new(RecordType::EndRequest, request_id, body.to_bytes().to_vec());
        self.send(record).await
    }
}

/// Reads one record at a time; cancel-safe (a partial record stays in the buffer).
struct RecordReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// The next record, or `None` when the peer closes the connection between records.
    async fn next(&mut self) -> Result<Option<Record>, FcgiError> {
        loop {
            if let Some(record) = RecordCodec.decode(&mut self.buf)? {
                return Ok(Some(record));
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(FcgiError::TruncatedRecord),
                };
            }
        }
    }
}

/// Where the connection is in its (single) request.
enum State<F> {
    Idle,
    /// BEGIN_REQUEST seen; the PARAMS stream is being collected (up to [`MAX_PARAMS_BYTES`]).
    Params {
        id: u16,
        keep_conn: bool,
        stream: BytesMut,
    },
    /// The handler has the request; its response future is `F`.
    Running(Running<F>),
}

struct Running<F> {
    id: u16,
    keep_conn: bool,
    stdin: StdinFeed,
    /// A STDIN chunk read from the connection, waiting for room in the handler's queue; while
    /// it waits the connection is not read (an empty chunk is the end of STDIN).
    pending: Option<Bytes>,
    /// Set once the handler will get no more STDIN: releases the held STDOUT.
    stdin_ended: watch::Sender<bool>,
    response: Pin<Box<F>>,
}

enum StdinFeed {
    Open(mpsc::Sender<Bytes>),
    /// The handler dropped its stdin: the rest of the stream is read and thrown away.
    Discarding,
    /// The empty STDIN record was seen.
    Done,
}

impl<F> State<F> {
    fn active(&self) -> Option<(u16, bool)> {
        match self {
            State::Idle => None,
            State::Params { id, keep_conn, .. } => Some((*id, *keep_conn)),
            State::Running(running) => Some((running.id, running.keep_conn)),
        }
    }
}

impl<F> Running<F> {
    /// Hands the pending chunk to the handler once `permit` (room in its queue) is there;
    /// `None` means the handler dropped its stdin.
    fn deliver_stdin(&mut self, permit: Option<mpsc::OwnedPermit<Bytes>>) {
        let Some(chunk) = self.pending.take() else {
            return;
        };
        let end = chunk.is_empty();
        match permit {
            Some(permit) => drop(permit.send(chunk)),
            None => self.stdin = StdinFeed::Discarding,
        }
        if end {
            self.stdin = StdinFeed::Done;
        }
        if !matches!(self.stdin, StdinFeed::Open(_)) {
            self.stdin_ended.send_replace(true);
        }
    }
}

enum Event {
    Record(Option<Record>),
    StdinRoom(Option<mpsc::OwnedPermit<Bytes>>),
    Finished(Result<u32, FcgiError>),
}

/// Why the inbound half stopped.
enum Ending {
    /// End of file between records (if a request was active, it was dropped).
    PeerClosed,
    /// A request without FCGI_KEEP_CONN (or a refused one) was answered; `stdin_of` names it
    /// if that was before its STDIN ended.
    AfterRequest { stdin_of: Option<u16> },
}

/// What the connection does after a record.
enum Flow {
    Continue,
    /// Close the connection; `stdin_of` names the request answered before its STDIN ended.
    Close {
        stdin_of: Option<u16>,
    },
    /// The PARAMS stream is complete: call the handler.
    Start {
        id: u16,
        keep_conn: bool,
        params: NameValuePairs,
    },
}

async fn run_inbound<R, H, Fut, O, E>(
    records: &mut RecordReader<R>,
    mut handler: H,
    output: Output,
    stopping: &Stopping,
) -> Result<Ending, FcgiError>
where
    R: AsyncRead + Unpin,
    H: FnMut(FcgiRequest) -> Fut,
    Fut: Future<Output = FcgiResponse<O, E>>,
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let mut state = State::Idle;
    loop {
        let event = if let State::Idle = state {
            // Between requests: a stop takes no new one on this connection (nginx sends it on
            // another, to a gateway that serves), and a connection left idle past its peer's
            // own keep-alive time is gone; both close it, which nginx expects of an idle one.
            tokio::select! {
                // A request already sent is taken before a stop is looked at.
                biased;
                event = next_event(records, &mut state) => event?,
                _ = stopping.cancelled() => return Ok(Ending::PeerClosed),
                _ = tokio::time::sleep(IDLE_TIMEOUT) => return Ok(Ending::PeerClosed),
            }
        } else {
            next_event(records, &mut state).await?
        };
        let flow = match event {
            Event::Record(None) => {
                if let Some((request_id, _)) = state.active() {
                    tracing::debug!(request_id, "FastCGI peer closed the connection mid-request");
                }
                return Ok(Ending::PeerClosed);
            }
            Event::Record(Some(record)) => on_record(&mut state, record, &output).await?,
            Event::StdinRoom(permit) => {
                if let State::Running(running) = &mut state {
                    running.deliver_stdin(permit);
                }
                Flow::Continue
            }
            Event::Finished(app_status) => {
                let app_status = app_status?;
                let Some((id, keep_conn)) = state.active() else {
                    return Err(FcgiError::Protocol {
                        request_id: NULL_REQUEST_ID,
                        what: "response finished without a request",
                    });
                };
                let stdin_unread = matches!(
                    &state,
                    State::Running(running) if !matches!(running.stdin, StdinFeed::Done)
                );
                // Drops what is left of STDIN and the handler's streams before answering.
                state = State::Idle;
                output
                    .end_request(id, app_status, FCGI_REQUEST_COMPLETE)
                    .await?;
                if keep_conn {
                    // The rest of its STDIN is ignored record by record, as any record of a
                    // request that is not active.
                    Flow::Continue
                } else {
                    // With its STDIN unread, the connection lingers (see `serve`).
                    Flow::Close {
                        stdin_of: stdin_unread.then_some(id),
                    }
                }
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Close { stdin_of } => return Ok(Ending::AfterRequest { stdin_of }),
            Flow::Start {
                id,
                keep_conn,
                params,
            } => {
                let (chunks, queue) = mpsc::channel(STDIN_QUEUE_CHUNKS);
                let (stdin_ended, stdin_end) = watch::channel(false);
                let response = handler(FcgiRequest {
                    request_id: id,
                    params,
                    stdin: FcgiStdin::new(queue),
                });
                let response = respond(id, response, stdin_end, output.clone());
                state = State::Running(Running {
                    id,
                    keep_conn,
                    stdin: StdinFeed::Open(chunks),
                    pending: None,
                    stdin_ended,
                    response: Box::pin(response),
                });
            }
        }
    }
}

/// Waits for whatever comes first: the response finishing, room for a pending STDIN chunk,
/// or (when no chunk is pending) the next record.
/// How long a connection may wait for its next request: longer than nginx's own keep-alive
/// time for upstream connections (`keepalive_timeout`, 60 s), so that nginx, not we, closes an
/// idle one it keeps (a close of ours could meet a request it just sent).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);

async fn next_event<R, F>(
    records: &mut RecordReader<R>,
    state: &mut State<F>,
) -> Result<Event, FcgiError>
where
    R: AsyncRead + Unpin,
    F: Future<Output = Result<u32, FcgiError>>,
{
    let State::Running(running) = state else {
        return Ok(Event::Record(records.next().await?));
    };
    let stdin_waiting = running.pending.is_some();
    tokio::select! {
        biased;
        result = &mut running.response => Ok(Event::Finished(result)),
        permit = reserve_stdin(&running.stdin), if stdin_waiting => Ok(Event::StdinRoom(permit)),
        record = records.next(), if !stdin_waiting => Ok(Event::Record(record?)),
    }
}

async fn reserve_stdin(feed: &StdinFeed) -> Option<mpsc::OwnedPermit<Bytes>> {
    match feed {
        StdinFeed::Open(chunks) => chunks.clone().reserve_owned().await.ok(),
        StdinFeed::Discarding | StdinFeed::Done => None,
    }
}

async fn on_record<F>(
    state: &mut State<F>,
    record: Record,
    output: &Output,
) -> Result<Flow, FcgiError> {
    let Record {
        record_type,
        request_id: id,
        content,
    } = record;
    if id == NULL_REQUEST_ID {
        on_management(record_type, &content, output).await?;
        return Ok(Flow::Continue);
    }
    match record_type {
        RecordType::BeginRequest => on_begin_request(state, id, &content, output).await,
        RecordType::AbortRequest => on_abort_request(state, id, output).await,
        RecordType::Params => on_params(state, id, content),
        RecordType::Stdin => on_stdin(state, id, content),
        // Only the FILTER role has a DATA stream; no request here has one.
        RecordType::Data => Ok(Flow::Continue),
        other => {
            let body = unknown_type_body(other).to_vec();
            output
                .send(Record::new(RecordType::UnknownType, NULL_REQUEST_ID, body))
                .await?;
            Ok(Flow::Continue)
        }
    }
}

/// GET_VALUES gets the variables we know (each once); any other management record gets
/// UNKNOWN_TYPE (section 4).
async fn on_management(
    record_type: RecordType,
    content: &[u8],
    output: &Output,
) -> Result<(), FcgiError> {
    if record_type != RecordType::GetValues {
        let body = unknown_type_body(record_type).to_vec();
        let record = Record::new(RecordType::UnknownType, NULL_REQUEST_ID, body);
        return output.send(record).await;
    }
    let asked = decode_params(content)?;
    let max = ADVERTISED_MAX_CONNS.to_string();
    let known: [(&[u8], &[u8]); 3] = [
        (b"FCGI_MAX_CONNS", max.as_bytes()),
        (b"FCGI_MAX_REQS", max.as_bytes()),
        (b"FCGI_MPXS_CONNS", b"0"),
    ];
    let answers = known
        .into_iter()
        .filter(|(name, _)| asked.iter().any(|(asked, _)| asked == name));
    let body = encode_params(answers)?;
    output
        .send(Record::new(
            RecordType::GetValuesResult,
            NULL_REQUEST_ID,
            body,
        ))
        .await
}

async fn on_begin_request<F>(
    state: &mut State<F>,
    id: u16,
    content: &[u8],
    output: &Output,
) -> Result<Flow, FcgiError> {
    let body = BeginRequestBody::parse(content)?;
    if let Some((active, _)) = state.active() {
        if active == id {
            return Err(FcgiError::Protocol {
                request_id: id,
                what: "BEGIN_REQUEST for the request already active",
            });
        }
        tracing::debug!(request_id = id, active, "FastCGI peer multiplexes: refused");
        output.end_request(id, 0, FCGI_CANT_MPX_CONN).await?;
        return Ok(Flow::Continue);
    }
    if body.role != FCGI_RESPONDER {
        tracing::debug!(request_id = id, role = body.role, "FastCGI role refused");
        output.end_request(id, 0, FCGI_UNKNOWN_ROLE).await?;
        // Refused before its PARAMS and STDIN came: closing at once would fail the peer's
        // writes of them, as an early answer would (the linger after `serve_connection`).
        return Ok(if body.keep_conn() {
            Flow::Continue
        } else {
            Flow::Close { stdin_of: Some(id) }
        });
    }
    *state = State::Params {
        id,
        keep_conn: body.keep_conn(),
        stream: BytesMut::new(),
    };
    Ok(Flow::Continue)
}

async fn on_abort_request<F>(
    state: &mut State<F>,
    id: u16,
    output: &Output,
) -> Result<Flow, FcgiError> {
    let Some((active, keep_conn)) = state.active() else {
        return Ok(Flow::Continue);
    };
    if active != id {
        return Ok(Flow::Continue);
    }
    tracing::debug!(request_id = id, "FastCGI request aborted by the peer");
    // Dropping the response future drops the handler's streams: its guards stop the CGI.
    *state = State::Idle;
    output.end_request(id, 0, FCGI_REQUEST_COMPLETE).await?;
    Ok(if keep_conn {
        Flow::Continue
    } else {
        Flow::Close { stdin_of: None }
    })
}

fn on_params<F>(state: &mut State<F>, id: u16, content: Bytes) -> Result<Flow, FcgiError> {
    match state {
        State::Params {
            id: active,
            keep_conn,
            stream,
        } if *active == id => {
            if content.is_empty() {
                return Ok(Flow::Start {
                    id,
                    keep_conn: *keep_conn,
                    params: decode_params(stream)?,
                });
            }
            if stream.len() + content.len() > MAX_PARAMS_BYTES {
                return Err(FcgiError::ParamsTooLarge {
                    limit: MAX_PARAMS_BYTES,
                });
            }
            stream.extend_from_slice(&content);
            Ok(Flow::Continue)
        }
        State::Running(running) if running.id == id => Err(FcgiError::Protocol {
            request_id: id,
            what: "PARAMS after the end of the PARAMS stream",
        }),
        // Records of a request that is not active (refused or finished) are ignored.
        _ => Ok(Flow::Continue),
    }
}

fn on_stdin<F>(state: &mut State<F>, id: u16, content: Bytes) -> Result<Flow, FcgiError> {
    match state {
        State::Running(running) if running.id == id => match running.stdin {
            StdinFeed::Open(_) => {
                running.pending = Some(content);
                Ok(Flow::Continue)
            }
            StdinFeed::Discarding => {
                if content.is_empty() {
                    running.stdin = StdinFeed::Done;
                }
                Ok(Flow::Continue)
            }
            StdinFeed::Done => Err(FcgiError::Protocol {
                request_id: id,
                what: "STDIN after the end of the STDIN stream",
            }),
        },
        State::Params { id: active, .. } if *active == id => Err(FcgiError::Protocol {
            request_id: id,
            what: "STDIN before the end of the PARAMS stream",
        }),
        _ => Ok(Flow::Continue),
    }
}

/// Awaits the handler, then pumps its stdout and stderr at the same time (a CGI blocked on a
/// full stderr pipe would otherwise never finish its stdout), stdout held back until STDIN
/// ends (see the module documentation). Returns the app status.
async fn respond<Fut, O, E>(
    id: u16,
    response: Fut,
    stdin_end: watch::Receiver<bool>,
    output: Output,
) -> Result<u32, FcgiError>
where
    Fut: Future<Output = FcgiResponse<O, E>>,
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let FcgiResponse {
        stdout,
        stderr,
        app_status,
    } = response.await;
    let stdout = async {
        let mut stdout = stdout;
        let (held, ended) = hold_until_stdin_ends(&mut stdout, id, stdin_end).await;
        let source = (!ended).then_some(stdout);
        pump_stream(source, held, RecordType::Stdout, id, &output, true).await
    };
    let stderr = async {
        match stderr {
            Some(stderr) => {
                let held = Bytes::new();
                pump_stream(Some(stderr), held, RecordType::Stderr, id, &output, false).await
            }
            None => Ok(()),
        }
    };
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    stdout?;
    stderr?;
    Ok(app_status)
}

/// Reads `source` without sending it until STDIN has ended (or will never be read), the
/// source ends, or [`STDOUT_HOLD_BYTES`] are held. Returns what was read, and whether the
/// source ended (or failed).
async fn hold_until_stdin_ends<R: AsyncRead + Unpin>(
    source: &mut R,
    id: u16,
    mut stdin_end: watch::Receiver<bool>,
) -> (Bytes, bool) {
    let mut held = BytesMut::new();
    while held.len() < STDOUT_HOLD_BYTES {
        let room = STDOUT_HOLD_BYTES - held.len();
        held.reserve(room);
        let read = {
            let mut window = (&mut held).limit(room);
            tokio::select! {
                biased;
                // An error means the request is being dropped: nothing to wait for either.
                _ = stdin_end.wait_for(|ended| *ended) => None,
                read = source.read_buf(&mut window) => Some(read),
            }
        };
        match read {
            None => break,
            Some(Ok(0)) => return (held.freeze(), true),
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(request_id = id, %error, "reading the response failed");
                return (held.freeze(), true);
            }
        }
    }
    (held.freeze(), false)
}

/// Sends `held`, then copies `source` (if any), as records of `stream` type of at most
/// [`OUTPUT_CHUNK`] bytes each, then the empty record that ends the stream (always for STDOUT;
/// for STDERR only if it was used).
async fn pump_stream<R: AsyncRead + Unpin>(
    source: Option<R>,
    held: Bytes,
    stream: RecordType,
    id: u16,
    output: &Output,
    always_terminate: bool,
) -> Result<(), FcgiError> {
    let mut used = !held.is_empty();
    let mut offset = 0;
    while offset < held.len() {
        let end = held.len().min(offset + OUTPUT_CHUNK);
        output
            .send(Record::new(stream, id, held.slice(offset..end)))
            .await?;
        offset = end;
    }
    if let Some(mut source) = source {
        let mut chunk = BytesMut::new();
        loop {
            // Reuses the allocation once the previous record has been encoded and dropped.
            chunk.reserve(OUTPUT_CHUNK);
            match source.read_buf(&mut (&mut chunk).limit(OUTPUT_CHUNK)).await {
                Ok(0) => break,
                Ok(_) => {
                    output
                        .send(Record::new(stream, id, chunk.split().freeze()))
                        .await?;
                    used = true;
                }
                Err(error) if stream == RecordType::Stdout => {
                    // Cut off: ended normally, the front server would take the part for the
                    // whole (nginx ends its client's chunked answer as if it were done).
                    return Err(FcgiError::ResponseCutOff {
                        request_id: id,
                        why: error.to_string(),
                    });
                }
                Err(error) => {
                    // Only the CGI's stderr: end that stream, the answer goes on.
                    tracing::warn!(request_id = id, ?stream, %error, "reading the CGI's stderr failed");
                    break;
                }
            }
        }
    }
    if used || always_terminate {
        output.send(Record::new(stream, id, Bytes::new())).await?;
    }
    Ok(())
}
