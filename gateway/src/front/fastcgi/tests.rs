//! Connection-level tests: a tiny FastCGI client (what nginx sends) over `tokio::io::duplex`.

use std::io::Cursor;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{
    duplex, AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf,
};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

use super::record::{
    BeginRequestBody, EndRequestBody, Record, RecordCodec, RecordType, FCGI_AUTHORIZER,
    FCGI_CANT_MPX_CONN, FCGI_FILTER, FCGI_KEEP_CONN, FCGI_REQUEST_COMPLETE, FCGI_RESPONDER,
    FCGI_UNKNOWN_ROLE, MAX_CONTENT_LEN,
};
use super::*;
use crate::front::linger::{Stopping, LINGER_TIME};

/// Every test finishes far below this; hitting it means a deadlock.
const DEADLINE: Duration = Duration::from_secs(20);
const MIB: usize = 1024 * 1024;
const HEADERS: &[u8] = b"Content-Type: application/octet-stream\r\n\r\n";

// ---------------------------------------------------------------- the test client

struct ClientWriter(WriteHalf<DuplexStream>);

impl ClientWriter {
    /// Shuts our write side: the server reads end of file (dropping one half of a split
    /// duplex stream does not close it).
    async fn close(mut self) {
        self.0.shutdown().await.expect("shutdown");
    }

    async fn record(&mut self, record_type: RecordType, id: u16, content: &[u8]) {
        let mut frame = BytesMut::new();
        RecordCodec
            .encode(
                Record::new(record_type, id, Bytes::copy_from_slice(content)),
                &mut frame,
            )
            .expect("test records fit");
        self.0.write_all(&frame).await.expect("server reads");
    }

    async fn begin(&mut self, id: u16, role: u16, keep_conn: bool) {
        let flags = if keep_conn { FCGI_KEEP_CONN } else { 0 };
        let body = BeginRequestBody { role, flags }.to_bytes();
        self.record(RecordType::BeginRequest, id, &body).await;
    }

    /// `data` in records of at most `chunk` bytes, then the empty record that ends the stream.
    async fn stream(&mut self, record_type: RecordType, id: u16, data: &[u8], chunk: usize) {
        for piece in data.chunks(chunk.min(MAX_CONTENT_LEN)) {
            self.record(record_type, id, piece).await;
        }
        self.record(record_type, id, b"").await;
    }

    /// A POST in `role` on a connection not kept, with `stdin` sent but not its end.
    async fn post_without_stdin_end(&mut self, id: u16, role: u16, stdin: &[u8]) {
        self.begin(id, role, false).await;
        self.params(id, &[("REQUEST_METHOD", "POST")], 512).await;
        for piece in stdin.chunks(8192) {
            self.record(RecordType::Stdin, id, piece).await;
        }
    }

    async fn params(&mut self, id: u16, params: &[(&str, &str)], chunk: usize) {
        let encoded = encode_params(params.iter().copied()).expect("encodable");
        self.stream(RecordType::Params, id, &encoded, chunk).await;
    }

    /// BEGIN_REQUEST (RESPONDER), PARAMS, STDIN in records of `chunk` bytes, empty STDIN.
    async fn request(&mut self, id: u16, keep_conn: bool, body: &[u8], chunk: usize) {
        self.begin(id, FCGI_RESPONDER, keep_conn).await;
        let params = [("REQUEST_METHOD", "POST"), ("SCRIPT_NAME", "/cgi-bin/t")];
        self.params(id, &params, 512).await;
        self.stream(RecordType::Stdin, id, body, chunk).await;
    }
}

struct ClientReader {
    reader: ReadHalf<DuplexStream>,
    buf: BytesMut,
}

impl ClientReader {
    /// The next record from the server, `None` at end of file.
    async fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = RecordCodec
                .decode(&mut self.buf)
                .expect("server sends valid")
            {
                return Some(record);
            }
            let n = self.reader.read_buf(&mut self.buf).await.expect("read");
            if n == 0 {
                assert!(self.buf.is_empty(), "server closed mid-record");
                return None;
            }
        }
    }

    /// Reads records up to END_REQUEST for `id`; records for other ids are kept in `others`.
    async fn reply(&mut self, id: u16) -> Reply {
        let mut reply = Reply::default();
        loop {
            let record = self.next().await.expect("END_REQUEST before end of file");
            if record.request_id != id {
                reply.others.push(record);
                continue;
            }
            match record.record_type {
                RecordType::Stdout => {
                    assert!(!reply.stdout_ended, "STDOUT after its end");
                    reply.stdout_ended = record.content.is_empty();
                    reply.stdout.extend_from_slice(&record.content);
                }
                RecordType::Stderr => reply.stderr.extend_from_slice(&record.content),
                RecordType::EndRequest => {
                    reply.end = Some(EndRequestBody::parse(&record.content).expect("8 bytes"));
                    return reply;
                }
                other => panic!("unexpected {other:?} for request {id}"),
            }
        }
    }
}

#[derive(Debug, Default)]
struct Reply {
    stdout: Vec<u8>,
    stdout_ended: bool,
    stderr: Vec<u8>,
    end: Option<EndRequestBody>,
    others: Vec<Record>,
}

impl Reply {
    fn assert_complete(&self, app_status: u32) {
        assert!(self.stdout_ended, "STDOUT ended with an empty record");
        assert_eq!(
            self.end,
            Some(EndRequestBody {
                app_status,
                protocol_status: FCGI_REQUEST_COMPLETE
            })
        );
    }
}

type Served = JoinHandle<Result<(), FcgiError>>;

/// Starts `serve_connection` on one end of a duplex pipe (64 KiB each way, so that
/// backpressure is real); spawning also checks that its future is `Send + 'static`.
fn start<H, Fut, O, E>(handler: H) -> (ClientWriter, ClientReader, Served)
where
    H: FnMut(FcgiRequest) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = FcgiResponse<O, E>> + Send + 'static,
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    start_stopping(handler, Stopping::new())
}

/// [`start`], the connection's lingers ending when `stopping` is cancelled.
fn start_stopping<H, Fut, O, E>(
    handler: H,
    stopping: Stopping,
) -> (ClientWriter, ClientReader, Served)
where
    H: FnMut(FcgiRequest) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = FcgiResponse<O, E>> + Send + 'static,
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    let (client, server) = duplex(64 * 1024);
    let served = tokio::spawn(serve_connection(server, handler, stopping));
    let (reader, writer) = tokio::io::split(client);
    let reader = ClientReader {
        reader,
        buf: BytesMut::new(),
    };
    (ClientWriter(writer), reader, served)
}

async fn finished(served: Served) -> Result<(), FcgiError> {
    tokio::time::timeout(DEADLINE, served)
        .await
        .expect("connection ends in time")
        .expect("serve_connection does not panic")
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("no deadlock")
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------- handlers

type EchoOut = tokio::io::Chain<Cursor<&'static [u8]>, FcgiStdin>;

/// A CGI that copies its stdin to its stdout, after a header block.
async fn echo(request: FcgiRequest) -> FcgiResponse<EchoOut> {
    FcgiResponse::new(Cursor::new(HEADERS).chain(request.stdin))
}

/// Prints its params as `NAME=VALUE` lines.
async fn print_params(request: FcgiRequest) -> FcgiResponse<Cursor<Vec<u8>>> {
    let mut out = Vec::new();
    for (name, value) in &request.params {
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    FcgiResponse::new(Cursor::new(out))
}

/// A stream that never ends and records when it is dropped (stands for a running CGI whose
/// drop guard would kill it).
struct Endless {
    first: Cursor<&'static [u8]>,
    dropped: Arc<AtomicBool>,
    /// Kept, unread, like a CGI that has not got to its input yet.
    _stdin: FcgiStdin,
}

impl AsyncRead for Endless {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.first).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn endless_handler(
    dropped: Arc<AtomicBool>,
) -> impl FnMut(FcgiRequest) -> std::future::Ready<FcgiResponse<Endless>> {
    move |request| {
        std::future::ready(FcgiResponse::new(Endless {
            first: Cursor::new(b"Content-Type: text/plain\r\n\r\npartial"),
            dropped: dropped.clone(),
            _stdin: request.stdin,
        }))
    }
}

// ---------------------------------------------------------------- requests and responses

#[tokio::test]
async fn one_mib_body_round_trips_through_an_echo_handler() {
    let (mut writer, mut reader, served) = start(echo);
    let sent = body(MIB);
    let (_, reply) = within(async {
        tokio::join!(
            writer.request(1, true, &sent, MAX_CONTENT_LEN),
            reader.reply(1)
        )
    })
    .await;
    reply.assert_complete(0);
    assert_eq!(&reply.stdout[..HEADERS.len()], HEADERS);
    assert!(
        reply.stdout[HEADERS.len()..] == sent[..],
        "body echoed intact"
    );
    assert!(reply.others.is_empty());
    writer.close().await;
    assert!(reader.next().await.is_none());
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn body_in_odd_sized_stdin_records_round_trips() {
    let (mut writer, mut reader, served) = start(echo);
    let sent = body(300_001);
    let (_, reply) =
        within(async { tokio::join!(writer.request(1, false, &sent, 1_001), reader.reply(1)) })
            .await;
    reply.assert_complete(0);
    assert!(reply.stdout[HEADERS.len()..] == sent[..]);
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn keep_conn_serves_two_requests_on_one_connection() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (mut writer, mut reader, served) = start(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        echo(request)
    });
    for (id, len) in [(1u16, 10usize), (2, 70_000)] {
        let sent = body(len);
        let (_, reply) =
            within(async { tokio::join!(writer.request(id, true, &sent, 4096), reader.reply(id)) })
                .await;
        reply.assert_complete(0);
        assert!(reply.stdout[HEADERS.len()..] == sent[..], "request {id}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    writer.close().await;
    assert!(reader.next().await.is_none(), "server closes when we do");
    finished(served).await.expect("clean close");
}

/// A stop closes a kept connection that waits for its next request at once, instead of
/// holding the stop for its whole drain (nginx's idle keep-alive connections did, 30 s each);
/// a request still on its way is answered first.
#[tokio::test]
async fn a_stop_closes_an_idle_kept_connection() {
    let stopping = Stopping::new();
    let (mut writer, mut reader, served) = start_stopping(echo, stopping.clone());
    let sent = body(10);
    let (_, reply) =
        within(async { tokio::join!(writer.request(1, true, &sent, 4096), reader.reply(1)) }).await;
    reply.assert_complete(0);
    stopping.cancel();
    assert!(within(reader.next()).await.is_none(), "closed at the stop");
    within(finished(served)).await.expect("clean close");
}

#[tokio::test]
async fn without_keep_conn_the_server_closes_after_end_request() {
    let (mut writer, mut reader, served) = start(echo);
    let (_, reply) =
        within(async { tokio::join!(writer.request(1, false, b"hi", 100), reader.reply(1)) }).await;
    reply.assert_complete(0);
    // The writer half is still open on our side: the close is the server's.
    assert!(within(reader.next()).await.is_none(), "end of file");
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn params_arrive_in_order_even_when_split_across_records_mid_pair() {
    let long = "v".repeat(300);
    let params = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("QUERY_STRING", ""),
        ("HTTP_X_LONG", long.as_str()),
        ("SCRIPT_NAME", "/cgi-bin/env.sh"),
    ];
    let mut expected = String::new();
    for (name, value) in params {
        expected.push_str(&format!("{name}={value}\n"));
    }
    // 1-, 3- and 7-byte records: splits fall inside lengths, names and values.
    for chunk in [1usize, 3, 7, 4096] {
        let (mut writer, mut reader, served) = start(print_params);
        let (_, reply) = within(async {
            tokio::join!(
                async {
                    writer.begin(1, FCGI_RESPONDER, false).await;
                    writer.params(1, &params, chunk).await;
                    writer.stream(RecordType::Stdin, 1, b"", 1).await;
                },
                reader.reply(1)
            )
        })
        .await;
        reply.assert_complete(0);
        assert_eq!(
            String::from_utf8_lossy(&reply.stdout),
            expected,
            "chunk {chunk}"
        );
        finished(served).await.expect("clean close");
    }
}

#[tokio::test]
async fn stderr_and_app_status_are_passed_on() {
    let (mut writer, mut reader, served) = start(|_request| async {
        FcgiResponse {
            stdout: Cursor::new(b"Status: 500\r\n\r\n".to_vec()),
            stderr: Some(Cursor::new(b"script.sh: line 3: oops\n".to_vec())),
            app_status: 7,
        }
    });
    let (_, reply) =
        within(async { tokio::join!(writer.request(1, false, b"", 1), reader.reply(1)) }).await;
    reply.assert_complete(7);
    assert_eq!(reply.stderr, b"script.sh: line 3: oops\n");
    assert_eq!(reply.stdout, b"Status: 500\r\n\r\n");
    finished(served).await.expect("clean close");
}

// ---------------------------------------------------------------- deadlocks and backpressure

/// A CGI that writes its whole 1 MiB response before reading any of its 1 MiB input (through
/// a 16 KiB "pipe"), then reports how much input it read.
#[tokio::test]
async fn handler_answering_before_reading_stdin_does_not_deadlock() {
    let (mut writer, mut reader, served) = start(|request: FcgiRequest| async move {
        let (mut pipe_in, pipe_out) = duplex(16 * 1024);
        tokio::spawn(async move {
            let mut stdin = request.stdin;
            pipe_in.write_all(HEADERS).await?;
            pipe_in.write_all(&vec![b'x'; MIB]).await?;
            let read = tokio::io::copy(&mut stdin, &mut tokio::io::sink()).await?;
            pipe_in
                .write_all(format!("|read {read}").as_bytes())
                .await?;
            std::io::Result::Ok(())
        });
        FcgiResponse::new(pipe_out)
    });
    let sent = body(MIB);
    let (_, reply) = within(async {
        tokio::join!(
            writer.request(1, true, &sent, MAX_CONTENT_LEN),
            reader.reply(1)
        )
    })
    .await;
    reply.assert_complete(0);
    let out = &reply.stdout[HEADERS.len()..];
    assert_eq!(out.len(), MIB + format!("|read {MIB}").len());
    assert!(out.ends_with(format!("|read {MIB}").as_bytes()));
    writer.close().await;
    finished(served).await.expect("clean close");
}

/// A CGI that never reads its input: its response still goes out, the rest of STDIN is
/// thrown away, and the connection serves the next request.
#[tokio::test]
async fn handler_ignoring_stdin_finishes_and_the_connection_stays_usable() {
    let (mut writer, mut reader, served) = start(|request: FcgiRequest| async move {
        if request.param(b"REQUEST_METHOD") == Some(b"POST") && request.request_id == 1 {
            drop(request.stdin);
            return FcgiResponse::new(Cursor::new(b"Status: 413\r\n\r\n".to_vec()));
        }
        FcgiResponse::new(Cursor::new(b"Status: 200\r\n\r\nsecond".to_vec()))
    });
    let sent = body(MIB);
    let (_, reply) =
        within(async { tokio::join!(writer.request(1, true, &sent, 8192), reader.reply(1)) }).await;
    reply.assert_complete(0);
    assert_eq!(reply.stdout, b"Status: 413\r\n\r\n");
    let (_, reply) =
        within(async { tokio::join!(writer.request(2, true, b"", 1), reader.reply(2)) }).await;
    reply.assert_complete(0);
    assert_eq!(reply.stdout, b"Status: 200\r\n\r\nsecond");
    writer.close().await;
    finished(served).await.expect("clean close");
}

/// Without FCGI_KEEP_CONN, a request answered before its STDIN ended (413 over --max-body)
/// does not close the connection under a peer still sending the rest: nginx's failed writes
/// would make it answer its client 502. The server shuts its side (nginx waits for that end
/// of the answer) and reads and drops the rest: it closes once that STDIN ends, once the
/// peer closes (nginx, which stops sending when it has the answer), or once the gateway
/// begins to stop.
#[tokio::test]
async fn an_answer_before_stdin_ends_does_not_close_under_the_sender() {
    for end in ["STDIN ends", "the peer closes", "the gateway stops"] {
        let stopping = Stopping::new();
        let handler = |request: FcgiRequest| async move {
            drop(request.stdin);
            FcgiResponse::new(Cursor::new(b"Status: 413\r\n\r\n".to_vec()))
        };
        let (mut writer, mut reader, served) = start_stopping(handler, stopping.clone());
        // Many times what the pipe between us holds: it all goes only if the server reads it.
        let sent = body(4 * MIB);
        let send = writer.post_without_stdin_end(1, FCGI_RESPONDER, &sent);
        let (_, reply) = within(async { tokio::join!(send, reader.reply(1)) }).await;
        reply.assert_complete(0);
        assert_eq!(reply.stdout, b"Status: 413\r\n\r\n");
        assert!(within(reader.next()).await.is_none(), "the answer's end");
        assert!(!served.is_finished(), "closed before STDIN ended");
        match end {
            "STDIN ends" => writer.record(RecordType::Stdin, 1, b"").await,
            "the peer closes" => writer.close().await,
            _ => stopping.cancel(),
        }
        // At once, not at the linger's bound.
        let closed = tokio::time::timeout(LINGER_TIME / 2, served).await;
        let closed = closed.unwrap_or_else(|_| panic!("{end}: no close"));
        closed.expect("no panic").expect("clean close");
    }
}

/// While the handler does not read STDIN, the server stops reading the connection: the
/// client's writes stall instead of filling our memory; once the handler reads, all flows.
#[tokio::test]
async fn unread_stdin_stalls_the_connection_until_the_handler_reads() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let (mut writer, mut reader, served) = start(move |request: FcgiRequest| {
        let released = released.clone();
        async move {
            if let Some(wait) = released.lock().await.take() {
                let _ = wait.await;
            }
            FcgiResponse::new(Cursor::new(HEADERS).chain(request.stdin))
        }
    });
    let sent = Arc::new(body(4 * MIB));
    let progress = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (sent, progress) = (sent.clone(), progress.clone());
        tokio::spawn(async move {
            writer.begin(1, FCGI_RESPONDER, false).await;
            writer.params(1, &[], 100).await;
            for piece in sent.chunks(MAX_CONTENT_LEN) {
                writer.record(RecordType::Stdin, 1, piece).await;
                progress.fetch_add(piece.len(), Ordering::SeqCst);
            }
            writer.record(RecordType::Stdin, 1, b"").await;
            writer
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = progress.load(Ordering::SeqCst);
    // The duplex pipe (64 KiB), the read buffer, the pending chunk and the queue: well
    // under 1 MiB of the 4 MiB.
    assert!(
        accepted < MIB,
        "server took {accepted} bytes without a reader"
    );
    let _ = release.send(());
    let reply = within(reader.reply(1)).await;
    reply.assert_complete(0);
    assert!(reply.stdout[HEADERS.len()..] == sent[..]);
    within(sending).await.expect("writer task");
    finished(served).await.expect("clean close");
}

/// A shell CGI that prints its headers first and then reads its body: nginx stops sending
/// the body once it has the response header, so the output waits until STDIN has ended.
#[tokio::test]
async fn stdout_is_held_until_stdin_ends() {
    let (mut writer, mut reader, served) = start(|request: FcgiRequest| async move {
        let (mut pipe_in, pipe_out) = duplex(64 * 1024);
        tokio::spawn(async move {
            let mut stdin = request.stdin;
            pipe_in.write_all(HEADERS).await?;
            let read = tokio::io::copy(&mut stdin, &mut tokio::io::sink()).await?;
            pipe_in.write_all(format!("read {read}").as_bytes()).await?;
            std::io::Result::Ok(())
        });
        FcgiResponse::new(pipe_out)
    });
    writer.begin(1, FCGI_RESPONDER, false).await;
    writer.params(1, &[], 100).await;
    writer.record(RecordType::Stdin, 1, &body(50_000)).await;
    let early = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
    assert!(early.is_err(), "nothing sent before STDIN ends: {early:?}");
    writer.record(RecordType::Stdin, 1, &body(10_000)).await;
    writer.record(RecordType::Stdin, 1, b"").await;
    let reply = within(reader.reply(1)).await;
    reply.assert_complete(0);
    assert_eq!(&reply.stdout[HEADERS.len()..], b"read 60000");
    finished(served).await.expect("clean close");
}

/// A handler whose output ends before its STDIN does (an early error page) answers at once.
#[tokio::test]
async fn held_stdout_goes_out_when_the_handler_output_ends() {
    let (mut writer, mut reader, served) = start(|request: FcgiRequest| async move {
        // Keeps its stdin open (unread) for as long as the response lives.
        FcgiResponse::new(
            Cursor::new(b"Status: 403\r\n\r\nno".to_vec()).chain(Unread(request.stdin)),
        )
    });
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer.params(1, &[], 100).await;
    writer
        .record(RecordType::Stdin, 1, b"some of the body")
        .await;
    let reply = within(reader.reply(1)).await;
    reply.assert_complete(0);
    assert_eq!(reply.stdout, b"Status: 403\r\n\r\nno");
    // The rest of that body is ignored; the connection goes on.
    writer.stream(RecordType::Stdin, 1, b"rest", 100).await;
    writer.begin(2, FCGI_RESPONDER, false).await;
    writer.params(2, &[], 100).await;
    writer.stream(RecordType::Stdin, 2, b"", 1).await;
    let reply = within(reader.reply(2)).await;
    reply.assert_complete(0);
    finished(served).await.expect("clean close");
}

/// Holds a stream without reading it, and reads as empty.
struct Unread<T>(#[allow(dead_code)] T);

impl<T: Unpin> AsyncRead for Unread<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------- management and refusals

#[tokio::test]
async fn get_values_is_answered() {
    let (mut writer, mut reader, served) = start(echo);
    let asked = encode_params([
        ("FCGI_MAX_CONNS", ""),
        ("FCGI_MAX_REQS", ""),
        ("FCGI_MPXS_CONNS", ""),
        ("FCGI_UNHEARD_OF", ""),
        ("FCGI_MPXS_CONNS", ""),
    ])
    .expect("encodable");
    writer.record(RecordType::GetValues, 0, &asked).await;
    let answer = within(reader.next()).await.expect("an answer");
    assert_eq!(answer.record_type, RecordType::GetValuesResult);
    assert_eq!(answer.request_id, 0);
    let max = ADVERTISED_MAX_CONNS.to_string();
    let values = decode_params(&answer.content).expect("valid pairs");
    let expected: NameValuePairs = vec![
        (b"FCGI_MAX_CONNS".to_vec(), max.clone().into_bytes()),
        (b"FCGI_MAX_REQS".to_vec(), max.into_bytes()),
        (b"FCGI_MPXS_CONNS".to_vec(), b"0".to_vec()),
    ];
    assert_eq!(values, expected);
    writer.close().await;
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn unknown_management_record_gets_unknown_type() {
    let (mut writer, mut reader, served) = start(echo);
    writer.record(RecordType::Other(42), 0, b"whatever").await;
    // A known type that makes no sense as a management record is unknown too.
    writer.record(RecordType::Stdin, 0, b"").await;
    for expected in [42u8, 5] {
        let answer = within(reader.next()).await.expect("an answer");
        assert_eq!(answer.record_type, RecordType::UnknownType);
        assert_eq!(answer.request_id, 0);
        assert_eq!(&answer.content[..], &[expected, 0, 0, 0, 0, 0, 0, 0]);
    }
    writer.close().await;
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn abort_request_mid_request_drops_the_handler_and_ends_the_request() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut writer, mut reader, served) = start(endless_handler(dropped.clone()));
    // Aborted while STDIN is still arriving (the handler's output is held back meanwhile).
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer
        .params(1, &[("SCRIPT_NAME", "/cgi-bin/slow")], 100)
        .await;
    writer.record(RecordType::Stdin, 1, b"part of a body").await;
    writer.record(RecordType::AbortRequest, 1, b"").await;
    let reply = within(reader.reply(1)).await;
    assert_eq!(
        reply.end,
        Some(EndRequestBody {
            app_status: 0,
            protocol_status: FCGI_REQUEST_COMPLETE
        })
    );
    assert!(reply.stdout.is_empty(), "output held until STDIN ends");
    assert!(dropped.swap(false, Ordering::SeqCst), "the CGI was dropped");
    // Late records of the aborted request are ignored; the connection serves the next one.
    writer.stream(RecordType::Stdin, 1, b"rest", 100).await;
    // Aborted while the response streams.
    writer.begin(2, FCGI_RESPONDER, false).await;
    writer.params(2, &[], 100).await;
    writer.stream(RecordType::Stdin, 2, b"", 1).await;
    let first = within(reader.next()).await.expect("STDOUT of request 2");
    assert_eq!(
        (first.record_type, first.request_id),
        (RecordType::Stdout, 2)
    );
    assert!(first.content.ends_with(b"partial"));
    assert!(!dropped.load(Ordering::SeqCst));
    writer.record(RecordType::AbortRequest, 2, b"").await;
    let reply = within(reader.reply(2)).await;
    assert_eq!(
        reply.end.map(|end| end.protocol_status),
        Some(FCGI_REQUEST_COMPLETE)
    );
    assert!(dropped.load(Ordering::SeqCst), "the CGI was dropped");
    assert!(
        within(reader.next()).await.is_none(),
        "no KEEP_CONN: closed"
    );
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn abort_before_params_end_ends_the_request_without_calling_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (mut writer, mut reader, served) = start(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        echo(request)
    });
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer.record(RecordType::Params, 1, b"\x04").await;
    writer.record(RecordType::AbortRequest, 1, b"").await;
    let reply = within(reader.reply(1)).await;
    assert_eq!(
        reply.end.map(|end| end.protocol_status),
        Some(FCGI_REQUEST_COMPLETE)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    writer.close().await;
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn a_second_concurrent_request_id_gets_cant_mpx_conn() {
    let (mut writer, mut reader, served) = start(echo);
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer.params(1, &[("A", "1")], 100).await;
    writer.record(RecordType::Stdin, 1, b"first ").await;
    // The peer multiplexes: a whole second request while the first is active.
    writer.request(2, true, b"second", 100).await;
    writer.stream(RecordType::Stdin, 1, b"done", 100).await;
    let reply = within(reader.reply(1)).await;
    reply.assert_complete(0);
    assert_eq!(&reply.stdout[HEADERS.len()..], b"first done");
    let refusal: Vec<_> = reply.others.iter().filter(|r| r.request_id == 2).collect();
    assert_eq!(
        refusal.len(),
        1,
        "only END_REQUEST for request 2: {refusal:?}"
    );
    assert_eq!(refusal[0].record_type, RecordType::EndRequest);
    let end = EndRequestBody::parse(&refusal[0].content).expect("8 bytes");
    assert_eq!(end.protocol_status, FCGI_CANT_MPX_CONN);
    writer.close().await;
    finished(served).await.expect("clean close");
}

#[tokio::test]
async fn authorizer_role_gets_unknown_role() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (mut writer, mut reader, served) = start(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        echo(request)
    });
    writer.begin(1, FCGI_AUTHORIZER, true).await;
    writer.params(1, &[("REMOTE_USER", "x")], 100).await;
    writer.stream(RecordType::Stdin, 1, b"", 1).await;
    let reply = within(reader.reply(1)).await;
    assert_eq!(
        reply.end,
        Some(EndRequestBody {
            app_status: 0,
            protocol_status: FCGI_UNKNOWN_ROLE
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The connection is still usable (KEEP_CONN was set).
    let (_, reply) =
        within(async { tokio::join!(writer.request(3, false, b"ok", 10), reader.reply(3)) }).await;
    reply.assert_complete(0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    finished(served).await.expect("clean close");
}

/// A request refused for its role, on a connection that is not kept, is answered before its
/// PARAMS and STDIN are sent: the connection stays open to take them (as after an early
/// answer), and closes once its STDIN ends.
#[tokio::test]
async fn a_refused_role_does_not_close_under_the_sender() {
    let (mut writer, mut reader, served) = start(echo);
    let sent = body(4 * MIB);
    let send = writer.post_without_stdin_end(1, FCGI_FILTER, &sent);
    let (_, reply) = within(async { tokio::join!(send, reader.reply(1)) }).await;
    assert_eq!(
        reply.end,
        Some(EndRequestBody {
            app_status: 0,
            protocol_status: FCGI_UNKNOWN_ROLE
        })
    );
    assert!(!served.is_finished(), "closed before STDIN ended");
    writer.record(RecordType::Stdin, 1, b"").await;
    let closed = tokio::time::timeout(LINGER_TIME / 2, served).await;
    let closed = closed.unwrap_or_else(|_| panic!("no close once STDIN ended"));
    closed.expect("no panic").expect("clean close");
}

#[tokio::test]
async fn peer_closing_mid_request_drops_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut writer, mut reader, served) = start(endless_handler(dropped.clone()));
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer.params(1, &[], 100).await;
    writer.stream(RecordType::Stdin, 1, b"", 1).await;
    let first = within(reader.next()).await.expect("STDOUT");
    assert_eq!(first.record_type, RecordType::Stdout);
    writer.close().await;
    drop(reader);
    finished(served)
        .await
        .expect("a closed peer is not an error");
    assert!(dropped.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------- garbage from the peer

/// Sends `bytes`, then expects the server to end the connection with an error matching
/// `check` (and to close its side), without panicking.
async fn expect_connection_error(bytes: &[u8], check: impl Fn(&FcgiError) -> bool) {
    let (mut writer, mut reader, served) = start(echo);
    writer.0.write_all(bytes).await.expect("server reads");
    let error = finished(served).await.expect_err("connection error");
    assert!(check(&error), "unexpected error {error:?}");
    // Whatever the server still had queued, it ends with end of file.
    while reader.next().await.is_some() {}
}

#[tokio::test]
async fn http_instead_of_fastcgi_is_a_bad_version() {
    expect_connection_error(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", |e| {
        matches!(e, FcgiError::UnsupportedVersion(b'G'))
    })
    .await;
}

#[tokio::test]
async fn params_over_the_cap_end_the_connection() {
    let mut wire = BytesMut::new();
    let begin = BeginRequestBody {
        role: FCGI_RESPONDER,
        flags: FCGI_KEEP_CONN,
    };
    RecordCodec
        .encode(
            Record::new(RecordType::BeginRequest, 1, begin.to_bytes().to_vec()),
            &mut wire,
        )
        .expect("fits");
    let filler = vec![0u8; 40_000];
    for _ in 0..2 {
        RecordCodec
            .encode(
                Record::new(RecordType::Params, 1, filler.clone()),
                &mut wire,
            )
            .expect("fits");
    }
    expect_connection_error(
        &wire,
        |e| matches!(e, FcgiError::ParamsTooLarge { limit } if *limit == MAX_PARAMS_BYTES),
    )
    .await;
}

#[tokio::test]
async fn truncated_name_value_pair_ends_the_connection() {
    let mut wire = BytesMut::new();
    let begin = BeginRequestBody {
        role: FCGI_RESPONDER,
        flags: 0,
    };
    for (record_type, content) in [
        (RecordType::BeginRequest, &begin.to_bytes()[..]),
        // Name of 5 bytes, value of 3, but only 4 bytes follow.
        (RecordType::Params, &b"\x05\x03NAME"[..]),
        (RecordType::Params, &b""[..]),
    ] {
        RecordCodec
            .encode(
                Record::new(record_type, 1, Bytes::copy_from_slice(content)),
                &mut wire,
            )
            .expect("fits");
    }
    expect_connection_error(&wire, |e| matches!(e, FcgiError::MalformedParams(_))).await;
}

#[tokio::test]
async fn other_protocol_violations_end_the_connection() {
    // A header cut short by the close.
    let (mut writer, _reader, served) = start(echo);
    writer
        .0
        .write_all(&[1, 5, 0, 1, 0, 10, 0])
        .await
        .expect("written");
    writer.0.shutdown().await.expect("shut");
    let error = finished(served).await.expect_err("truncated");
    assert!(matches!(error, FcgiError::TruncatedRecord), "{error:?}");

    // A BEGIN_REQUEST body of the wrong length.
    let (mut writer, _reader, served) = start(echo);
    writer.record(RecordType::BeginRequest, 1, &[0, 1, 1]).await;
    let error = finished(served).await.expect_err("malformed");
    assert!(
        matches!(error, FcgiError::MalformedBeginRequest(3)),
        "{error:?}"
    );

    // STDIN before the end of PARAMS.
    let (mut writer, _reader, served) = start(echo);
    writer.begin(1, FCGI_RESPONDER, true).await;
    writer.record(RecordType::Stdin, 1, b"early").await;
    let error = finished(served).await.expect_err("protocol");
    assert!(matches!(error, FcgiError::Protocol { .. }), "{error:?}");
}

#[test]
fn public_types_fit_a_multi_threaded_gateway() {
    fn stream<T: AsyncRead + Send + Unpin + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    stream::<FcgiStdin>();
    sendable::<FcgiRequest>();
    shared::<FcgiError>();
}

// ---------------------------------------------------------------- random input

/// xorshift64*: a fixed-seed generator, enough to shake the parsers without a new dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic_the_record_decoder() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = rng.below(600);
        let mut input = rng.bytes(len);
        // Mostly version 1 and short contents, to get past the first check.
        if !input.is_empty() && rng.below(4) != 0 {
            input[0] = 1;
        }
        if input.len() > 5 && rng.below(2) == 0 {
            input[4] = 0;
            input[5] = rng.below(64) as u8;
        }
        let mut buf = BytesMut::new();
        let mut rest = &input[..];
        'feed: while !rest.is_empty() {
            let take = 1 + rng.below(rest.len());
            buf.put_slice(&rest[..take]);
            rest = &rest[take..];
            loop {
                match RecordCodec.decode(&mut buf) {
                    Ok(Some(record)) => assert!(record.content.len() <= MAX_CONTENT_LEN),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        // Never more than one record (plus what was fed) is held.
        assert!(buf.capacity() <= 8 + MAX_CONTENT_LEN + 255 + 600 + 64);
    }
}

#[test]
fn random_bytes_never_panic_decode_params() {
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    for _ in 0..20_000 {
        let len = rng.below(300);
        let mut input = rng.bytes(len);
        // Small lengths now and then, so that some inputs parse.
        for byte in input.iter_mut() {
            if rng.below(3) == 0 {
                *byte &= 0x0F;
            }
        }
        if let Ok(pairs) = decode_params(&input) {
            let again = encode_params(pairs.iter().map(|(n, v)| (n, v))).expect("encodable");
            assert_eq!(decode_params(&again).expect("re-encoded is valid"), pairs);
        }
    }
}

/// Random record sequences (any type, ids 0–3, small contents) against a real connection:
/// it ends, with or without an error, and never panics or hangs.
#[tokio::test]
async fn random_records_never_panic_or_hang_the_connection() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for _ in 0..300 {
        let mut wire = BytesMut::new();
        for _ in 0..rng.below(20) {
            let record_type = RecordType::from(rng.below(13) as u8);
            let id = rng.below(4) as u16;
            let content = match record_type {
                RecordType::BeginRequest if rng.below(4) != 0 => {
                    let role = 1 + rng.below(3) as u16;
                    let flags = rng.below(2) as u8;
                    BeginRequestBody { role, flags }.to_bytes().to_vec()
                }
                _ => {
                    let len = rng.below(40);
                    rng.bytes(len)
                }
            };
            RecordCodec
                .encode(Record::new(record_type, id, content), &mut wire)
                .expect("fits");
        }
        if rng.below(5) == 0 {
            let junk = rng.below(20);
            wire.put_slice(&rng.bytes(junk));
        }
        let (client, server) = duplex(1024 * 1024);
        let served = tokio::spawn(serve_connection(server, echo, Stopping::new()));
        let (mut reader, mut writer) = tokio::io::split(client);
        writer.write_all(&wire).await.expect("fits in the pipe");
        writer.shutdown().await.expect("shut");
        let mut sink = Vec::new();
        within(reader.read_to_end(&mut sink))
            .await
            .expect("read until close");
        let _ = finished(served).await;
    }
}
