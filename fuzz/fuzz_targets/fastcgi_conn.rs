//! A whole FastCGI connection: `fastcgi::serve_connection` serving whatever bytes a peer
//! sends, over an in-memory stream, with a handler that behaves like four kinds of CGI
//! (chosen by the request id, so the fuzzer reaches each): one that ignores its input, one
//! that echoes it, one that never reads it and writes more than the STDOUT hold limit, and
//! one that reads all of it first. Checks:
//! - never a panic, and never stuck: the clock is paused, so a connection that can make no
//!   more progress after the peer has sent everything and closed its side times out at once;
//! - everything sent back is well-formed records of the kinds a responder sends, all of them
//!   whole when the connection ends without an error (one that ends for a bad peer stops
//!   writing at once, possibly inside a record: the peer then sees a cut-off connection);
//! - at most one END_REQUEST per BEGIN_REQUEST received.
#![no_main]

use std::cell::RefCell;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use gateway::front::fastcgi::record::{EndRequestBody, Record, RecordCodec, RecordType, NULL_REQUEST_ID};
use gateway::front::fastcgi::{serve_connection, FcgiRequest, FcgiResponse, FcgiStdin};
use gateway::front::linger::Stopping;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio_util::codec::Decoder;

/// Far more (virtual) time than any input needs: reaching it means nothing can move.
const STUCK: Duration = Duration::from_secs(3600);
/// What the never-reading CGI writes: over `fastcgi::STDOUT_HOLD_BYTES`, so that STDOUT goes
/// out while STDIN is still pending.
const LARGE_OUTPUT: usize = gateway::front::fastcgi::STDOUT_HOLD_BYTES + 5000;
const HEADERS: &[u8] = b"Content-Type: text/plain\r\n\r\n";

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime"),
    );
}

fuzz_target!(|input: &[u8]| {
    let (served, output) = RUNTIME.with(|runtime| {
        runtime.borrow().block_on(async {
            tokio::time::timeout(STUCK, exchange(input))
                .await
                .expect("the connection is stuck")
        })
    });
    check_output(input, served, &output);
});

/// Sends `input` and closes the sending side, while reading everything the server sends
/// until it closes the connection. Returns whether the server ended without an error (both
/// are fine answers to arbitrary input), and what it sent.
async fn exchange(input: &[u8]) -> (bool, Vec<u8>) {
    let (client, server) = tokio::io::duplex(16 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let send = async {
        // The server may close before reading everything (a bad record ends the connection).
        if to_server.write_all(input).await.is_ok() {
            let _ = to_server.shutdown().await;
        }
    };
    let receive = async {
        let mut output = Vec::new();
        from_server
            .read_to_end(&mut output)
            .await
            .expect("in memory");
        output
    };
    let serve = serve_connection(server, handler, Stopping::new());
    let (served, (), output) = tokio::join!(serve, send, receive);
    (served.is_ok(), output)
}

type Stream = Box<dyn AsyncRead + Unpin + Send>;

async fn handler(request: FcgiRequest) -> FcgiResponse<Stream, Stream> {
    let mut stdin = request.stdin;
    let (stdout, stderr): (Stream, Option<Stream>) = match request.request_id % 4 {
        // Ignores its input (dropped: the rest of STDIN is discarded).
        0 => (Box::new(HEADERS), None),
        // Echoes its input as it arrives.
        1 => (Box::new(HEADERS.chain(stdin)), None),
        // Never reads its input, and writes more than the hold limit, and to stderr.
        2 => {
            let mut output = HEADERS.to_vec();
            output.resize(LARGE_OUTPUT, b'x');
            let stdout = Holding {
                output: Cursor::new(output),
                _stdin: stdin,
            };
            (Box::new(stdout), Some(Box::new(&b"a warning\n"[..])))
        }
        // Reads all its input before it answers (an aborted input is an error: 500).
        _ => {
            let mut body = Vec::new();
            let answer = match stdin.read_to_end(&mut body).await {
                Ok(read) => format!("Content-Type: text/plain\r\n\r\n{read}"),
                Err(_) => "Status: 500\r\n\r\n".to_owned(),
            };
            (Box::new(Cursor::new(answer.into_bytes())), None)
        }
    };
    FcgiResponse {
        stdout,
        stderr,
        app_status: u32::from(request.request_id),
    }
}

/// Output that keeps the request's STDIN open without ever reading it.
struct Holding {
    output: Cursor<Vec<u8>>,
    _stdin: FcgiStdin,
}

impl AsyncRead for Holding {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_read(cx, buf)
    }
}

fn check_output(input: &[u8], served: bool, output: &[u8]) {
    let (sent, left) = decode_all(output);
    let left = left.expect("a bad record sent");
    assert!(!served || left == 0, "a partial record sent");
    let (received, _) = decode_all(input);
    for record in &sent {
        match record.record_type {
            RecordType::Stdout | RecordType::Stderr => {
                assert_ne!(record.request_id, NULL_REQUEST_ID)
            }
            RecordType::EndRequest => {
                assert_ne!(record.request_id, NULL_REQUEST_ID);
                EndRequestBody::parse(&record.content).expect("an 8-byte body");
            }
            RecordType::GetValuesResult | RecordType::UnknownType => {
                assert_eq!(record.request_id, NULL_REQUEST_ID)
            }
            other => panic!("a responder sent a {other:?} record"),
        }
    }
    let count = |records: &[Record], kind| {
        records
            .iter()
            .filter(|record| record.record_type == kind && record.request_id != NULL_REQUEST_ID)
            .count()
    };
    assert!(count(&sent, RecordType::EndRequest) <= count(&received, RecordType::BeginRequest));
}

/// The records of `bytes` up to the first bad one, then how many bytes of an incomplete
/// record were left, or `Err` if a bad record came first.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, Result<usize, ()>) {
    let mut buffer = BytesMut::from(bytes);
    let mut records = Vec::new();
    loop {
        match RecordCodec.decode(&mut buffer) {
            Ok(Some(record)) => records.push(record),
            Ok(None) => return (records, Ok(buffer.len())),
            Err(_) => return (records, Err(())),
        }
    }
}
