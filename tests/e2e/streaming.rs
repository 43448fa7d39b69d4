//! Bodies in and out: large, streamed both ways, never buffered whole by the gateway.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{require_root, Jail, Opts};
use crate::http::{client, read_response};
use crate::procfs;

const MIB: usize = 1024 * 1024;

/// `len` bytes of a xorshift64 stream: every byte matters, no run of zeros can hide a hole.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn post_50mib_echoed_byte_identical() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "echo",
        r"printf 'Content-Type: application/octet-stream\n\n'
exec cat",
    );
    let gw = jail.serve(Opts::default());
    let sent = pattern(50 * MIB);
    let http = client(Duration::from_secs(180));
    let response = http
        .post(gw.url("/cgi-bin/echo"))
        .header("Content-Type", "application/octet-stream")
        .body(sent.clone())
        .send()
        .await
        .expect("POST 50 MiB to /cgi-bin/echo");
    assert_eq!(response.status().as_u16(), 200);

    // Compare each chunk against the pattern as it arrives.
    let mut offset = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("echo body after {offset} bytes: {e}"));
        let end = offset + chunk.len();
        assert!(
            end <= sent.len(),
            "echo returned more than was sent ({end} > {})",
            sent.len()
        );
        if chunk[..] != sent[offset..end] {
            let at = chunk
                .iter()
                .zip(&sent[offset..end])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!("echo body differs at byte {}", offset + at);
        }
        offset = end;
    }
    assert_eq!(offset, sent.len(), "echo body length");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_16mib_to_cgi_that_never_reads_stdin() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("ignore", r"printf 'Content-Type: text/plain\n\nignored\n'");
    let gw = jail.serve(Opts::default());

    // Raw TCP: the body is written by its own task while the response is read, so the
    // response counts even if the gateway stops reading the body and closes the connection.
    let total = 16 * MIB;
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let head = format!(
        "POST /cgi-bin/ignore HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {total}\r\n\r\n",
        gw.addr
    );
    let body = pattern(64 * 1024);
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let mut written = 0;
        while written < total {
            write.write_all(&body).await?;
            written += body.len();
        }
        write.flush().await?;
        // Kept open: dropping the write half would shut it down, and a client that closes
        // its side is one that went away (as nginx sees it too).
        Ok::<_, std::io::Error>((written, write))
    });
    let mut reader = BufReader::new(read);
    let response = tokio::time::timeout(Duration::from_secs(60), read_response(&mut reader, false))
        .await
        .expect("a response within 60 s")
        .expect("a complete response (the request body may be cut short, the response may not)");
    writer.abort();
    let _ = writer.await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "ignored\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_1gib_streams_with_bounded_gateway_memory() {
    require_root!();
    const GIB: u64 = 1024 * 1024 * 1024;
    const MAX_HWM_KIB: u64 = 200 * 1024;
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let jail = Jail::new();
    jail.cgi(
        "big",
        r"printf 'Content-Type: application/octet-stream\n\n'
exec head -c 1073741824 /dev/zero",
    );
    let gw = jail.serve(Opts::default());
    let http = client(Duration::from_secs(300));
    let response = http
        .get(gw.url("/cgi-bin/big"))
        .send()
        .await
        .expect("GET /cgi-bin/big");
    assert_eq!(response.status().as_u16(), 200);

    let started = Instant::now();
    let mut received: u64 = 0;
    let mut next_sample: u64 = 0;
    let mut peak_kib = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("1 GiB body after {received} bytes: {e}"));
        for piece in chunk.chunks(ZEROS.len()) {
            assert!(
                piece == &ZEROS[..piece.len()],
                "non-zero byte near {received}"
            );
        }
        received += chunk.len() as u64;
        if received >= next_sample {
            let hwm = procfs::vm_hwm_kib(gw.pid()).expect("gateway VmHWM");
            peak_kib = peak_kib.max(hwm);
            assert!(
                hwm < MAX_HWM_KIB,
                "gateway VmHWM {hwm} KiB after {received} bytes (limit {MAX_HWM_KIB} KiB)"
            );
            next_sample = received + 64 * MIB as u64;
        }
    }
    let hwm = procfs::vm_hwm_kib(gw.pid()).expect("gateway VmHWM");
    assert!(
        hwm < MAX_HWM_KIB,
        "gateway VmHWM {hwm} KiB at the end (limit {MAX_HWM_KIB} KiB)"
    );
    assert_eq!(received, GIB, "1 GiB body length");
    eprintln!(
        "1 GiB in {:?}, gateway VmHWM {} KiB",
        started.elapsed(),
        peak_kib.max(hwm)
    );
}
