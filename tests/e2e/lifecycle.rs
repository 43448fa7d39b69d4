//! Start-up errors and shutdown: bad flags fail cleanly, SIGTERM leaves nothing behind.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{gateway_bin, require_root, run_bounded, Gateway, Jail, Opts};
use crate::http::client;
use crate::procfs::{self, ProcStat};

/// SIGTERM the gateway, expect exit 0 within 10 s, then expect every process in `before`
/// (recorded by pid and start time) gone, zombies included, after a 2 s grace for processes
/// dying of their parent's death.
fn sigterm_and_expect_all_gone(gw: &mut Gateway, before: &[ProcStat]) {
    gw.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    // Waits a little past the 10 s limit so that a late exit is measured and reported.
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits after SIGTERM (not within 15 s)");
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );

    let end = Instant::now() + Duration::from_secs(2);
    let mut left: Vec<ProcStat> = before.to_vec();
    loop {
        left.retain(|p| procfs::still_exists(p).is_some());
        if left.is_empty() || Instant::now() >= end {
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let left_now: Vec<ProcStat> = left.iter().filter_map(procfs::still_exists).collect();
    assert!(
        left_now.is_empty(),
        "descendants of the gateway still exist 2 s after it exited: {left_now:?}"
    );
    // Checked last, so a slow exit still gets its leftovers checked first.
    assert!(
        took < Duration::from_secs(10),
        "the gateway took {took:?} to exit after SIGTERM (limit 10 s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_and_leaves_no_descendant() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", r"printf 'Content-Type: text/plain\n\nhello\n'");
    // May leave a sleep behind in the worker's PID namespace (output detached, so the
    // response still ends), unless the worker kills the CGI's process group at its exit.
    jail.cgi(
        "orphan",
        r"sleep 60 </dev/null >/dev/null 2>&1 &
printf 'Content-Type: text/plain\n\nok\n'",
    );
    let mut gw = jail.serve(Opts::default());
    gw.wait_for_workers(Duration::from_secs(5), &[]);
    let http = client(Duration::from_secs(15));
    for path in ["/cgi-bin/hello", "/cgi-bin/orphan"] {
        let response = http.get(gw.url(path)).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
    }
    drop(http);

    let before: Vec<ProcStat> = gw.descendants();
    assert!(
        before.len() >= 2 * gw.workers,
        "expected at least the {} holders and workers as descendants: {before:?}",
        gw.workers
    );
    tokio::task::block_in_place(|| sigterm_and_expect_all_gone(&mut gw, &before));
}

/// The same with a CGI in the middle of a request: stopping the workers stops it too, and
/// the gateway does not wait for it to finish its 30 s.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_request_leaves_no_descendant() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "busy",
        r"sleep 30
printf 'Content-Type: text/plain\n\nlate\n'",
    );
    // A stop drains open requests, each up to its own deadline: with --timeout 3 the busy CGI
    // is killed and answered 504 about 3 s in, and the gateway then exits well within 10 s.
    let mut gw = jail.serve(Opts {
        timeout_secs: Some(3),
        ..Opts::default()
    });
    gw.wait_for_workers(Duration::from_secs(5), &[]);
    let url = gw.url("/cgi-bin/busy");
    let request =
        tokio::spawn(async move { client(Duration::from_secs(20)).get(url).send().await });

    let pid = gw.pid();
    let end = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let before = procfs::descendants(&procfs::snapshot(), pid);
        if before.iter().any(|p| p.comm == "sleep") {
            break before;
        }
        assert!(
            Instant::now() < end,
            "the busy CGI's sleep never showed up under the gateway: {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        before.len() >= 2 * gw.workers + 2,
        "expected holders, workers, the CGI and its sleep: {before:?}"
    );
    tokio::task::block_in_place(|| sigterm_and_expect_all_gone(&mut gw, &before));
    let outcome = tokio::time::timeout(Duration::from_secs(25), request)
        .await
        .expect("the in-flight request ends once the gateway is gone");
    let response = outcome
        .expect("the request task did not panic")
        .expect("a request in flight at SIGTERM is answered, not dropped");
    assert_eq!(
        response.status().as_u16(),
        504,
        "the drained request ends at its deadline"
    );
}

/// A stop whose drain ends before a CGI does: the client sees that CGI's answer cut off (the
/// connection ends before the last chunk), not a whole answer of what it had written so far.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_cuts_off_an_answer_it_ends() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "halfway",
        r"printf 'Content-Type: text/plain\n\nfirst\n'
sleep 30
printf 'second\n'",
    );
    let mut gw = jail.serve_with(
        Opts {
            timeout_secs: Some(60),
            ..Opts::default()
        },
        &["--drain-timeout", "1"],
    );
    gw.wait_for_workers(Duration::from_secs(5), &[]);
    let response = client(Duration::from_secs(20))
        .get(gw.url("/cgi-bin/halfway"))
        .send()
        .await
        .expect("the head");
    assert_eq!(response.status().as_u16(), 200);
    gw.signal(Signal::SIGTERM);
    let body = tokio::time::timeout(Duration::from_secs(15), response.bytes())
        .await
        .expect("the answer ends once the drain is over");
    assert!(
        body.is_err(),
        "the answer of a CGI killed by the stop ended as a whole one: {body:?}"
    );
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(15)))
        .expect("the gateway exits");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// A stop does not wait out a lingering close: an upload refused with 413 whose client keeps
/// sending would hold the gateway for the linger's 10 s, a stop's whole drain for nothing (the
/// answer is out). Once the stop begins, the lingering connection is closed, as nginx does.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_does_not_wait_for_a_lingering_upload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "sink",
        "cat >/dev/null\nprintf 'Content-Type: text/plain\\n\\nok\\n'",
    );
    let mut gw = jail.serve_with(
        Opts {
            workers: 1,
            ..Opts::default()
        },
        &["--max-body", "1M"],
    );
    gw.wait_for_workers(Duration::from_secs(5), &[]);
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut from_gateway, mut to_gateway) = stream.into_split();
    let head = "POST /cgi-bin/sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n";
    to_gateway.write_all(head.as_bytes()).await.expect("head");
    // Paced: 64 KiB every 10 ms until the gateway closes, at most 30 s.
    let sender = tokio::spawn(async move {
        let piece = vec![b'e'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if to_gateway.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), from_gateway.read(&mut buffer))
            .await
            .expect("the 413 within 10 s")
            .expect("read the answer");
        assert!(read > 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The connection now lingers, reading what the client still sends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sender.is_finished(), "the linger ended before the stop");

    gw.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(15)))
        .expect("the gateway exits after SIGTERM");
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    sender.abort();
    eprintln!("NOTE: stopped {took:?} after SIGTERM with a lingering upload");
    assert!(
        took < Duration::from_secs(3),
        "the stop waited {took:?} for a lingering upload"
    );
}

#[test]
fn bad_flag_exits_2_with_one_line() {
    require_root!();
    let done = run_bounded(
        Command::new(gateway_bin()).arg("--bogus"),
        Duration::from_secs(10),
    );
    assert_eq!(
        done.status.code(),
        Some(2),
        "gateway --bogus: {}\nstderr:\n{}",
        done.status,
        done.stderr
    );
    assert!(!done.stderr.contains("panicked"), "panic: {}", done.stderr);
    let lines: Vec<&str> = done.stderr.trim().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "a one-line message on stderr, got:\n{}",
        done.stderr
    );
    assert!(!lines[0].trim().is_empty());
}

#[test]
fn missing_jail_exits_2() {
    require_root!();
    let done = run_bounded(
        Command::new(gateway_bin()).args([
            "--jail",
            "/nonexistent",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(
        done.status.code(),
        Some(2),
        "gateway --jail /nonexistent: {}\nstderr:\n{}",
        done.status,
        done.stderr
    );
    assert!(!done.stderr.contains("panicked"), "panic: {}", done.stderr);
    assert!(!done.stderr.trim().is_empty(), "no error message");
    assert!(
        !done.stdout.contains("listening"),
        "it started serving: {}",
        done.stdout
    );
}

/// Socket activation as systemd does it (sd_listen_fds(3)): the listening socket arrives as
/// descriptor 3 with LISTEN_PID and LISTEN_FDS, and no --listen is given. The gateway serves on
/// it, does not pass the variables on to CGIs, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_serves_on_the_inherited_socket() {
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "hello",
        r#"printf 'Content-Type: text/plain\n\nhello %s\n' "${LISTEN_FDS-unset}""#,
    );
    // Started by hand, not by the harness: it must still share the machine by its rules.
    let _machine = crate::harness::MachineGuard::acquire(false);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    // The socket goes to `sh` as descriptor 3; `sh` sets the variables for its own pid and
    // execs the gateway: the same pid, as with systemd.
    let fd = listener.as_raw_fd();
    let script = format!(
        "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec {} --jail {} --workers 1 {}",
        gateway_bin().display(),
        jail.root().display(),
        crate::harness::cgi_ids_arg().join(" ")
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    // SAFETY: between fork and exec the child calls only dup2 or fcntl, which are
    // async-signal-safe and touch no memory; the new descriptor 3 is not close-on-exec.
    unsafe {
        command.pre_exec(move || {
            let result = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if result == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut gateway = crate::harness::ChildGuard::spawn(&mut command);
    drop(listener);
    let stdout = gateway.take_stdout().expect("piped stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("a ready line within 30 s")
        .expect("reader thread")
        .expect("read stdout");
    assert_eq!(
        line.trim_end(),
        format!("jailgate listening on http://{address}")
    );

    let http = client(Duration::from_secs(30));
    let response = http
        .get(format!("http://{address}/cgi-bin/hello"))
        .send()
        .await
        .expect("response on the inherited socket");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.expect("body"), "hello unset\n");

    gateway.signal(Signal::SIGTERM);
    let status = gateway
        .wait_timeout(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// A SIGTERM while the gateway starts (its front forked but not yet serving) stops it cleanly:
/// exit 0, nothing left behind. Before the stop signals were held across the start, the
/// default action killed the half-started front, and the gateway exited 1.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_starting_stops_cleanly() {
    require_root!();
    let jail = Jail::new();
    for attempt in 1..=5 {
        let stderr_path = jail
            .root()
            .with_file_name(format!("starting-{attempt}.stderr"));
        let mut gateway = crate::harness::ChildGuard::spawn(
            Command::new(gateway_bin())
                .arg("--jail")
                .arg(jail.root())
                .args(["--workers", "2", "--listen", "127.0.0.1:0"])
                .args(crate::harness::cgi_ids_arg())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).expect("stderr file")),
        );
        let pid = gateway.pid();
        // The moment the front exists: the fork is done, the front's start has just begun.
        let deadline = Instant::now() + Duration::from_secs(10);
        let front = loop {
            let all = procfs::snapshot();
            if let Some(front) = procfs::children(&all, pid).into_iter().next() {
                break front;
            }
            assert!(
                gateway.try_wait().is_none() && Instant::now() < deadline,
                "the gateway never forked its front"
            );
        };
        let mut before = procfs::descendants(&procfs::snapshot(), pid);
        before.push(front);
        gateway.signal(Signal::SIGTERM);
        let status = gateway
            .wait_timeout(Duration::from_secs(15))
            .expect("the gateway exits after a SIGTERM while starting");
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: exit status {status} after a SIGTERM while starting; stderr:\n{stderr}"
        );
        let end = Instant::now() + Duration::from_secs(2);
        while !before.is_empty() && Instant::now() < end {
            before.retain(|p| procfs::still_exists(p).is_some());
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            before.is_empty(),
            "attempt {attempt}: these outlived the gateway by 2 s: {before:?}"
        );
    }
}
