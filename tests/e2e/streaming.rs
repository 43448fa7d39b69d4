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

/// `answer` is a whole 200 response whose body is `body`, byte for byte.
async fn assert_echoed(answer: &[u8], body: &[u8]) {
    let response = read_response(&mut BufReader::new(answer), false)
        .await
        .expect("a whole response");
    assert_eq!(response.status, 200);
    assert!(response.body == body, "the echo is byte-identical");
}

/// Sends a POST head for `total` body bytes and its first `first` bytes to an echo CGI; then
/// whether a response head came back within `wait`, while the rest of the body is unsent.
async fn answered_before_the_body_is_in(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    body: &[u8],
    first: usize,
    wait: Duration,
) -> (
    bool,
    Vec<u8>,
    impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::AsyncReadExt;
    let head = format!(
        "POST /cgi-bin/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&body[..first]).await.expect("first part");
    let mut seen = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    let end = Instant::now() + wait;
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            Ok(_) => panic!(
                "the gateway closed the connection: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Err(_) => return (false, seen, stream),
        }
    }
    (true, seen, stream)
}

/// With `--answer-while-uploading`, a client that is not a front server gets the CGI's answer
/// as the CGI writes it, while its own body still arrives: an echo of 8 MiB answers after the
/// first MiB (no spool, no wait). A front server (here root on a Unix socket, as nginx would
/// be) still gets it only once the body is all in, because nginx stops sending a body when it
/// sees a response; and so does every client without the flag.
#[tokio::test(flavor = "multi_thread")]
async fn with_answer_while_uploading_a_direct_client_gets_the_answer_while_its_body_arrives() {
    use tokio::io::AsyncReadExt;
    require_root!();
    let body = pattern(8 * MIB);
    let echo = r#"printf 'Content-Type: application/octet-stream\n\n'; exec cat"#;

    let jail = Jail::new();
    jail.cgi("echo", echo);
    let gw = jail.serve_with(Opts::default(), &["--answer-while-uploading"]);
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (answered, mut seen, mut stream) =
        answered_before_the_body_is_in(stream, &body, MIB, Duration::from_secs(10)).await;
    assert!(answered, "no answer to a direct client after 1 of 8 MiB");
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let rest = &body[MIB..];
    let (sent, received) = tokio::join!(write.write_all(rest), read.read_to_end(&mut seen));
    sent.expect("the rest of the body");
    received.expect("the rest of the answer");
    assert_echoed(&seen, &body).await;

    let jail = Jail::new();
    jail.cgi("echo", echo);
    let socket = jail.folder().join("http.sock");
    let listen = format!("unix:{}", socket.display());
    let gw = jail.serve_with(
        Opts::default(),
        &["--listen", &listen, "--answer-while-uploading"],
    );
    let stream = tokio::net::UnixStream::connect(gw.unix.as_deref().expect("a Unix socket"))
        .await
        .expect("connect");
    let (answered, seen, mut stream) =
        answered_before_the_body_is_in(stream, &body, MIB, Duration::from_secs(1)).await;
    assert!(
        !answered,
        "a front server was answered before its body was in: {:?}",
        String::from_utf8_lossy(&seen)
    );
    stream
        .write_all(&body[MIB..])
        .await
        .expect("the rest of the body");
    let mut seen = seen;
    stream.read_to_end(&mut seen).await.expect("the answer");
    assert_echoed(&seen, &body).await;

    // Without the flag, a direct client waits for its body too.
    let jail = Jail::new();
    jail.cgi("echo", echo);
    let gw = jail.serve(Opts::default());
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (answered, _, _stream) =
        answered_before_the_body_is_in(stream, &body, MIB, Duration::from_secs(1)).await;
    assert!(
        !answered,
        "answered before the body was in, without --answer-while-uploading"
    );
}

/// A CGI's output goes out as it writes it, not when it ends: a CGI that writes a line and
/// runs on, or writes more than its pipe holds and runs on, has that output out long before
/// it ends. (Any hold of the output, or of the worker's report that the CGI started, must stay
/// short and end once the pipe fills: bench/MISSES.md, "the report of a start held back".)
#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_that_runs_on_has_its_output_out_before_it_ends() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "progress",
        r"printf 'Content-Type: text/plain\n\nfirst\n'; sleep 4; printf 'second\n'",
    );
    jail.cgi(
        "bulk",
        r"printf 'Content-Type: application/octet-stream\n\n'
head -c 1048576 /dev/zero; sleep 4",
    );
    let gw = jail.serve(Opts::default());
    let http = client(Duration::from_secs(30));

    // Each script: what it writes before its sleep, and what after.
    for (script, before, after) in [
        ("progress", b"first\n".to_vec(), b"second\n".to_vec()),
        ("bulk", vec![0; MIB], Vec::new()),
    ] {
        let asked = Instant::now();
        let path = format!("/cgi-bin/{script}");
        let response = http
            .get(gw.url(&path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        assert_eq!(response.status().as_u16(), 200);
        let mut stream = response.bytes_stream();
        let mut body = Vec::new();
        while body.len() < before.len() {
            body.extend_from_slice(&stream.next().await.expect("more").expect("read"));
        }
        let waited = asked.elapsed();
        assert!(
            body == before,
            "{script}: not what it wrote before its sleep"
        );
        assert!(
            waited < Duration::from_secs(2),
            "{script}: what it wrote before its sleep came after {waited:?}"
        );
        body.clear();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.expect("read"));
        }
        assert!(body == after, "{script}: not what it wrote after its sleep");
    }
}

/// A client that asks for a large answer and never reads it has its connection closed once it
/// has taken nothing for `--send-timeout`. hyper has no write timeout, so such a connection
/// (its CGI ended, its answer in the buffers) stayed open for good, one of the front's
/// connection places with it: a few thousand of them and no new client got in.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_let_go_after_the_send_timeout() {
    use std::io::Write;
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "big",
        "printf 'Content-Type: application/octet-stream\\n\\n'\nhead -c 67108864 /dev/zero",
    );
    let gw = jail.serve_with(Opts::default(), &["--send-timeout", "2"]);
    let mut socket = std::net::TcpStream::connect(gw.addr).expect("connect");
    socket
        .write_all(b"GET /cgi-bin/big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let client_port = socket.local_addr().expect("local address").port();
    // Takes nothing; the gateway's end of the connection, as /proc/net/tcp lists it.
    let owned = || server_socket_inode(gw.addr.port(), client_port);
    let end = Instant::now() + Duration::from_secs(10);
    while owned().is_none_or(|inode| inode == 0) {
        assert!(
            Instant::now() < end,
            "the gateway did not take the connection: {:?}\n{}",
            owned(),
            std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now() + Duration::from_secs(15);
    while owned().is_some_and(|inode| inode != 0) {
        assert!(
            Instant::now() < end,
            "15 s on, the gateway still holds the connection of a client that takes nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(socket);
}

/// The inode of the socket at 127.0.0.1:`port` connected to 127.0.0.1:`peer` (0 once no
/// process holds it, the kernel only finishing it), if listed.
fn server_socket_inode(port: u16, peer: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    let remote = format!("0100007F:{peer:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}
