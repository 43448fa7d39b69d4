//! Request bodies as an edge (issue 13.2): a body must keep arriving (`--body-timeout`, plus a
//! second per 4 KiB received: a trickle gets 408 and loses its connection), all bodies held
//! for CGIs share one budget (`--spool-budget`: 503 beyond it, counted in `/metrics`), they
//! are held in memory files of the gateway's own, and a CGI can only read its stdin.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::escape::HELLO;
use crate::harness::{free_loopback_address, one_worker, require_root, Gateway, Jail, Opts};
use crate::http::client;
use crate::procfs;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Reads its whole body, then says how many bytes it got.
const SINK: &str = r#"n=$(cat | wc -c); printf 'Content-Type: text/plain\n\n%s\n' "$n""#;

/// What a raw client saw: the status of the answer (0: none), whether the gateway closed the
/// connection after it, and how long after the request's start.
#[derive(Debug)]
struct Seen {
    status: u16,
    closed: bool,
    after: Duration,
}

/// A client that sends `head`, then one body byte a second (`chunked`: as a one-byte chunk)
/// until the gateway answers; reads until the gateway closes, at most `limit`.
async fn trickle(
    gw_addr: std::net::SocketAddr,
    head: String,
    chunked: bool,
    limit: Duration,
) -> Seen {
    let start = Instant::now();
    let mut stream = TcpStream::connect(gw_addr).await.expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let piece: &[u8] = if chunked { b"1\r\nx\r\n" } else { b"x" };
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut closed = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() < limit {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => { closed = true; break; }
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = tick.tick(), if answer.is_empty() => {
                // The gateway may have stopped reading: a failed write is no answer yet.
                let _ = stream.write_all(piece).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if !answer.is_empty() => {}
        }
    }
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Seen {
        status,
        closed,
        after: start.elapsed(),
    }
}

/// 200 clients trickle chunked bodies and 20 more a body of announced length, one byte a
/// second: each gets 408 at the body deadline and its connection closed, while `hello`
/// requests beside them are answered at once, and afterwards too.
#[tokio::test(flavor = "multi_thread")]
async fn slow_uploads_are_cut_at_the_body_deadline_while_hello_stays_fast() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi("sink", SINK);
    let gw = jail.serve_with(Opts::default(), &["--body-timeout", "2"]);
    let chunked = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let sized = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let limit = Duration::from_secs(15);
    let mut clients = Vec::new();
    for i in 0..220 {
        let (head, is_chunked) = if i < 200 {
            (chunked, true)
        } else {
            (sized, false)
        };
        clients.push(tokio::spawn(trickle(
            gw.addr,
            head.to_owned(),
            is_chunked,
            limit,
        )));
    }
    // Meanwhile: hello, one after another.
    let http = client(TIMEOUT);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        let response = http
            .get(gw.url("/cgi-bin/hello"))
            .send()
            .await
            .expect("hello");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().await.expect("body"), "hello\n");
        slowest = slowest.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("NOTE: slowest hello beside 220 trickling uploads: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a hello took {slowest:?} beside the slow uploads"
    );
    for (i, client) in clients.into_iter().enumerate() {
        let seen = client.await.expect("client task");
        assert_eq!(seen.status, 408, "client {i}: {seen:?}");
        assert!(
            seen.closed,
            "client {i}: the connection stays open: {seen:?}"
        );
        assert!(
            seen.after < Duration::from_secs(10),
            "client {i}: cut off only after {:?}",
            seen.after
        );
    }
    let after = http
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("hello");
    assert_eq!(after.status().as_u16(), 200);
}

/// A body arriving at a working pace is never cut off by the deadline: 64 KiB in 16 pieces
/// over 3 s (past `--body-timeout 2`, earning a second per 4 KiB).
#[tokio::test(flavor = "multi_thread")]
async fn a_steady_upload_outlives_the_body_timeout() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("sink", SINK);
    let gw = jail.serve_with(one_worker(), &["--body-timeout", "2"]);
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    for _ in 0..16 {
        stream.write_all(b"1000\r\n").await.expect("chunk size");
        stream.write_all(&[b'y'; 4096]).await.expect("chunk");
        stream.write_all(b"\r\n").await.expect("chunk end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = read_answer(stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("65536"), "{answer}");
}

/// Ends a chunked body; everything the gateway answers until it closes.
async fn read_answer(mut stream: TcpStream) -> String {
    stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
    read_until_closed(stream).await
}

/// Everything the gateway sends until it closes.
async fn read_until_closed(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The whole metrics text of `admin`.
async fn metrics(admin: &str) -> String {
    client(TIMEOUT)
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of metric `name` (a line `name VALUE`).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Sends a chunked POST head and `bytes` of body, and leaves the body unfinished.
async fn start_upload(gw: &Gateway, bytes: usize) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{bytes:x}\r\n"
    );
    // Every write succeeds, even that of an upload over the spool budget, answered 503 as
    // soon as the gateway sees it: the gateway reads the rest and drops it (lingering close).
    let mut chunk = head.into_bytes();
    chunk.extend(std::iter::repeat_n(b'z', bytes));
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await.expect("send the upload");
    stream
}

/// Sends `head`, then `bytes` of body in 64 KiB pieces (`chunked`: each as a chunk, and the
/// last chunk), without reading; then reads the whole answer. Panics if a write fails.
async fn send_all_then_read(gw: &Gateway, head: &str, bytes: usize, chunked: bool) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let piece = vec![b'q'; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let size = piece.len().min(bytes - sent);
        let written = if chunked {
            let mut chunk = format!("{size:x}\r\n").into_bytes();
            chunk.extend_from_slice(&piece[..size]);
            chunk.extend_from_slice(b"\r\n");
            stream.write_all(&chunk).await
        } else {
            stream.write_all(&piece[..size]).await
        };
        written.unwrap_or_else(|error| panic!("write after {sent} bytes: {error}"));
        sent += size;
    }
    if chunked {
        read_answer(stream).await
    } else {
        read_until_closed(stream).await
    }
}

/// A client that sends its whole body before it reads (as Python's http.client and requests
/// do) gets the answer to an upload refused before its body was read (413 over `--max-body`),
/// not a reset connection: the gateway reads and drops the rest after answering, as nginx's
/// lingering close does. A client that never stops sending is cut off within the linger's
/// bound, and a hello beside it is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upload_is_answered_to_a_client_that_sends_it_all() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("sink", SINK);
    jail.cgi("hello", HELLO);
    let gw = jail.serve_with(one_worker(), &["--max-body", "1M"]);
    // Paced, so that its linger costs the gateway little: 64 KiB every 10 ms.
    let mut endless = TcpStream::connect(gw.addr).await.expect("connect");
    let started = Instant::now();
    let endless = tokio::spawn(async move {
        let head = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n";
        endless.write_all(head.as_bytes()).await.expect("head");
        let piece = vec![b'e'; 64 * 1024];
        while started.elapsed() < Duration::from_secs(40) {
            if endless.write_all(&piece).await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });

    const BODY: usize = 16 << 20;
    let declared =
        format!("POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n");
    let answer = send_all_then_read(&gw, &declared, BODY, false).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let chunked = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let answer = send_all_then_read(&gw, chunked, BODY, true).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Under the limit, the same client is served whole.
    let fits = format!(
        "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        512 * 1024
    );
    let answer = send_all_then_read(&gw, &fits, 512 * 1024, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Chunked ("7\r\n524288\n\r\n0\r\n\r\n") when the CGI's exit takes longer than the gateway
    // waits to send a short answer whole (a busy machine), else with a Content-Length.
    assert!(answer.contains("\r\n524288\n"), "{answer}");

    let cut_off = endless.await.expect("the endless client");
    let hello = client(TIMEOUT)
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("hello");
    assert_eq!(hello.status().as_u16(), 200);
    let cut_off = cut_off.expect("a client that never stops sending is cut off");
    eprintln!("NOTE: the endless upload was cut off after {cut_off:?}");
    assert!(
        cut_off < Duration::from_secs(25),
        "cut off after {cut_off:?}"
    );
}

/// `--spool-budget 1M`: two unfinished chunked uploads of 400 KiB fit, a third does not (503,
/// counted in `/metrics`); the first two then complete, and the budget is whole again.
#[tokio::test(flavor = "multi_thread")]
async fn the_spool_budget_holds_for_all_uploads_together() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("sink", SINK);
    let admin = free_loopback_address();
    let gw = jail.serve_with(
        one_worker(),
        &[
            "--spool-budget",
            "1M",
            "--admin",
            &admin,
            "--body-timeout",
            "60",
        ],
    );
    const PIECE: usize = 400 * 1024;
    let first = start_upload(&gw, PIECE).await;
    let second = start_upload(&gw, PIECE).await;
    let end = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&admin).await, "jailgate_spooled_body_bytes") < (2 * PIECE) as f64 {
        assert!(Instant::now() < end, "the two bodies were never spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = start_upload(&gw, PIECE).await;
    // Only the reading half: dropping the writing one would end the body early.
    let (mut third_reader, _third_writer) = third.into_split();
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, third_reader.read_to_string(&mut answer))
        .await
        .expect("the third is answered at once")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let text = metrics(&admin).await;
    assert_eq!(metric(&text, "jailgate_spool_refused_total"), 1.0, "{text}");
    assert!(
        metric(&text, "jailgate_spooled_body_bytes") <= (1 << 20) as f64,
        "{text}"
    );

    for upload in [first, second] {
        let answer = read_answer(upload).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("{PIECE}\n")), "{answer}");
    }
    let end = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&admin).await, "jailgate_spooled_body_bytes") != 0.0 {
        assert!(Instant::now() < end, "the budget did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a slow CGI has not read yet of a streamed body waits in the front's memory, counted
/// in `/metrics`; once the answers are out and requests stop coming, the front gives that
/// memory back to the system (four 16 MiB bodies held at once, beside a CGI that reads its
/// stdin only after a second).
#[tokio::test(flavor = "multi_thread")]
async fn bodies_held_for_slow_cgis_are_given_back() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "late-echo",
        "sleep 1\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec cat",
    );
    let admin = free_loopback_address();
    let gw = jail.serve_with(Opts::default(), &["--admin", &admin, "--access-log", "off"]);
    let front = gw.wait_for_front(Duration::from_secs(10)).pid;
    let idle = procfs::resident_kib(front);
    const BODY: usize = 16 << 20;
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let http = client(TIMEOUT);
    let uploads = (0..4).map(|_| {
        let request = http.post(gw.url("/cgi-bin/late-echo")).body(body.clone());
        async move {
            let response = request.send().await.expect("response");
            (
                response.status().as_u16(),
                response.bytes().await.expect("body"),
            )
        }
    });
    let watch = async {
        // The bodies arrive within the CGIs' second of sleep: held, counted.
        let mut held: f64 = 0.0;
        let end = Instant::now() + Duration::from_secs(20);
        while held < (2 * BODY) as f64 && Instant::now() < end {
            held = held.max(metric(
                &metrics(&admin).await,
                "jailgate_spooled_body_bytes",
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (held, procfs::resident_kib(front))
    };
    let (answers, (held, peak)) = tokio::join!(futures_util::future::join_all(uploads), watch);
    for (status, echoed) in answers {
        assert_eq!(status, 200);
        assert!(echoed == body, "an echo came back changed");
    }
    assert!(
        held >= (2 * BODY) as f64,
        "at most {held} bytes were held at once"
    );
    let grown = peak.saturating_sub(idle);
    assert!(
        grown >= 16 * 1024,
        "the bodies grew the front by {grown} KiB only: this test no longer tests"
    );
    drop(http);
    if let Err(now) = procfs::resident_falls_to(front, idle + grown / 4).await {
        panic!("the front keeps {now} KiB, {idle} KiB before the uploads and {peak} KiB with them");
    }
    assert_eq!(
        metric(&metrics(&admin).await, "jailgate_spooled_body_bytes"),
        0.0
    );
}

/// A client that sends its body a byte at a time to a CGI that does not read it (here, once
/// the stdin pipe is full) makes the front hold those bytes, and no more than them: hyper cuts
/// each piece out of its connection's read buffer, a fresh one of 8 KiB for a one-byte read,
/// and a piece kept as it was read kept all of it alive (8,000 bytes held 64 MB, none of it
/// counted against the spool budget, since the first 256 KiB of a backlog were not).
#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_a_byte_at_a_time_holds_only_its_bytes() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "deaf",
        "sleep 3\nprintf 'Content-Type: text/plain\\n\\ndone\\n'",
    );
    let gw = jail.serve_with(Opts::default(), &["--access-log", "off"]);
    let front = gw.wait_for_front(Duration::from_secs(10)).pid;
    // Enough to fill the CGI's stdin (a pipe of 64 KiB for a body this small), sent in small
    // pieces as a slow link would (so that the connection's read buffer stays at its first
    // 8 KiB), then the trickle.
    const FILL: usize = 96 << 10;
    const BYTES: usize = 8_000;
    let addr = gw.addr;
    let idle = procfs::resident_kib(front);
    let (grown, answer) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let head = format!(
            "POST /cgi-bin/deaf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            FILL + BYTES
        );
        stream.write_all(head.as_bytes()).expect("head");
        for _ in 0..FILL / 2048 {
            stream.write_all(&[b'f'; 2048]).expect("fill");
            std::thread::sleep(Duration::from_millis(1));
        }
        // One segment each, paced so that the front reads each apart.
        for _ in 0..BYTES {
            stream.write_all(b"x").expect("a byte");
            std::thread::sleep(Duration::from_micros(100));
        }
        let grown = procfs::resident_kib(front).saturating_sub(idle);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        (grown, answer)
    })
    .await
    .expect("the client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done\n"), "{answer}");
    assert!(
        grown < 16 * 1024,
        "{BYTES} bytes sent one at a time grew the front by {grown} KiB"
    );
}

/// A body that does not arrive whole never reaches its CGI as if it were whole: a client that
/// announces 100,000 bytes, sends 30,000 and leaves has its CGI stopped, and the CGI never
/// reads an end of file after the 30,000 (it would take the part for the whole and act on
/// it; RFC 3875 §4.2 wants CONTENT_LENGTH bytes or none). The same CGI given a whole body
/// counts it, so the test sees what it looks for.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_body_never_ends_as_if_whole() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "count",
        // SIGTERM ignored: stopped, it has the 2 s before SIGKILL to read an end of file.
        r#"trap '' TERM; n=$(cat | wc -c); echo "counted $n" >&2; printf 'Content-Type: text/plain\n\n%s\n' "$n""#,
    );
    let gw = jail.serve_with(Opts::default(), &["--access-log", "off"]);
    let head = "POST /cgi-bin/count HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    let whole = send_all_then_read_closing(&gw, head, 100_000).await;
    assert!(whole.contains("\r\n\r\n100000\n"), "{whole}");
    let mut cut = TcpStream::connect(gw.addr).await.expect("connect");
    cut.write_all(head.as_bytes()).await.expect("head");
    cut.write_all(&[b'c'; 30_000])
        .await
        .expect("a part of the body");
    // Let the CGI read the part, then leave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(cut);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counted = gw.cgi_stderr_lines("counted");
    assert_eq!(
        counted,
        ["counted 100000"],
        "what the CGIs read: {counted:?}"
    );
}

/// Sends `head` and `bytes` of body, asks the gateway to close after the answer, and reads it.
async fn send_all_then_read_closing(gw: &Gateway, head: &str, bytes: usize) -> String {
    let head = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    send_all_then_read(gw, &head, bytes, false).await
}

/// A chunked body is spooled before its CGI starts, within the request's `--timeout` as a body
/// streamed to a running CGI is: one that keeps to the rate (80 KiB/s, far above the 4 KiB/s
/// the body deadline asks) but outlasts the timeout gets 408 then. Kept to the rate alone, it
/// was read for as long as it kept coming, holding its share of the spool budget all along.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_is_spooled_within_the_request_timeout() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("sink", SINK);
    let gw = jail.serve(Opts {
        workers: 1,
        timeout_secs: Some(2),
    });
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let head = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "c".repeat(8192));
    // 6 s of 8 KiB every 100 ms, then the last chunk; a refused body stops the writes.
    for _ in 0..60 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = read_answer(stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
}

/// A CGI's stdin is read-only, whatever the body's framing: writing to descriptor 0 or to
/// `/dev/stdin` fails for a body of announced length (a pipe) and for a chunked one (a sealed
/// memory file), and the body it then reads is the client's, unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_cannot_write_to_its_stdin() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "scribble",
        r#"printf 'Content-Type: text/plain\n\n'
if (printf 'EVIL' >&0) 2>/dev/null; then echo fd0=written; else echo fd0=refused; fi
if (printf 'EVIL' > /dev/stdin) 2>/dev/null; then echo dev=written; else echo dev=refused; fi
cat"#,
    );
    let gw = jail.serve_with(one_worker(), &[]);
    let http = client(TIMEOUT);
    let body = "the client's own body\n";
    let sized = http
        .post(gw.url("/cgi-bin/scribble"))
        .body(body)
        .send()
        .await
        .expect("response");
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("the client's "), Ok("own body\n")];
    let chunked = http
        .post(gw.url("/cgi-bin/scribble"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("response");
    for (framing, response) in [("sized", sized), ("chunked", chunked)] {
        assert_eq!(response.status().as_u16(), 200, "{framing}");
        let text = response.text().await.expect("body");
        assert_eq!(
            text,
            format!("fd0=refused\ndev=refused\n{body}"),
            "{framing}: the CGI wrote into its stdin"
        );
    }
}
