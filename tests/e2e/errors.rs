//! Failures map to exact statuses, leave no process behind, and never run what they must not.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{one_worker, require_root, wait_dead, Gateway, Jail, Opts};
use crate::http::{client, raw_get};
use crate::procfs::{self, ProcStat};

const HELLO: &str = r"printf 'Content-Type: text/plain\n\nhello\n'";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

async fn status_of(gw: &Gateway, path: &str) -> u16 {
    client(REQUEST_TIMEOUT)
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn error_statuses() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.file(
        "notexec",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n",
        0o644,
    );
    jail.cgi("fails", "exit 1");
    jail.cgi("noblank", r"printf 'Content-Type: text/plain\n'");
    let gw = jail.serve(Opts::default());

    // The control: a good CGI on the same gateway answers 200.
    assert_eq!(status_of(&gw, "/cgi-bin/hello").await, 200);
    assert_eq!(
        status_of(&gw, "/cgi-bin/missing").await,
        404,
        "missing script"
    );
    assert_eq!(
        status_of(&gw, "/cgi-bin/notexec").await,
        403,
        "mode 0644 script"
    );
    assert_eq!(
        status_of(&gw, "/cgi-bin/fails").await,
        502,
        "exit 1, no headers"
    );
    assert_eq!(
        status_of(&gw, "/cgi-bin/noblank").await,
        502,
        "a header line and no blank line"
    );
    // The gateway is still fine after all that.
    assert_eq!(status_of(&gw, "/cgi-bin/hello").await, 200);
}

/// A symlink in `/cgi-bin` runs what it points to only if that lies in `/cgi-bin` too:
/// `/cgi-bin/x -> /bin/sh` would otherwise turn a URL into a shell reading the request body.
#[tokio::test(flavor = "multi_thread")]
async fn symlinked_scripts_run_only_inside_the_cgi_folder() {
    require_root!();
    use std::os::unix::fs::symlink;
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let cgi_bin = jail.root().join("cgi-bin");
    std::fs::create_dir(cgi_bin.join("sub")).expect("mkdir sub");
    jail.cgi("sub/hi", HELLO);
    for (name, target) in [
        ("alias", "hello"),
        ("linked", "sub"),
        ("shell", "/bin/sh"),
        ("up", "../bin/sh"),
        ("tools", "/bin"),
        ("dangling", "nowhere"),
    ] {
        symlink(target, cgi_bin.join(name)).expect("symlink");
    }
    let gw = jail.serve(Opts::default());

    for (path, want) in [
        ("/cgi-bin/alias", 200),
        ("/cgi-bin/linked/hi", 200),
        ("/cgi-bin/shell", 403),
        ("/cgi-bin/up", 403),
        ("/cgi-bin/tools/sh", 403),
        ("/cgi-bin/dangling", 404),
    ] {
        assert_eq!(status_of(&gw, path).await, want, "{path}");
    }
    let body = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/alias"))
        .send()
        .await
        .expect("GET alias")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "hello\n");
}

/// Non-zombie processes named `comm` that descend from `ancestor`.
fn descendants_named(ancestor: i32, comm: &str) -> Vec<ProcStat> {
    procfs::descendants(&procfs::snapshot(), ancestor)
        .into_iter()
        .filter(|p| p.comm == comm && !p.is_zombie())
        .collect()
}

/// Polls until `done(found)` holds for the descendants named `comm`, or `deadline` passes.
fn poll_named(
    ancestor: i32,
    comm: &str,
    deadline: Duration,
    done: impl Fn(&[ProcStat]) -> bool,
) -> Result<Vec<ProcStat>, Vec<ProcStat>> {
    let end = Instant::now() + deadline;
    loop {
        let found = descendants_named(ancestor, comm);
        if done(&found) {
            return Ok(found);
        }
        if Instant::now() >= end {
            return Err(found);
        }
        thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_gives_504_and_kills_the_process_group() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("sleepy", "sleep 100 & sleep 100");
    let gw = jail.serve(Opts {
        workers: 2,
        timeout_secs: Some(2),
    });
    let url = gw.url("/cgi-bin/sleepy");
    let started = Instant::now();
    let request = tokio::spawn(async move { client(REQUEST_TIMEOUT).get(url).send().await });

    // Both sleeps run under the gateway before the timeout fires (so the check after it
    // means something).
    let pid = gw.pid();
    let before = tokio::task::spawn_blocking(move || {
        poll_named(pid, "sleep", Duration::from_secs(5), |f| f.len() == 2)
    })
    .await
    .expect("poll task");
    let sleeps =
        before.unwrap_or_else(|f| panic!("expected 2 sleeps under the gateway, saw {f:?}"));

    let response = request
        .await
        .expect("request task")
        .expect("a response to the timed-out CGI");
    assert_eq!(response.status().as_u16(), 504);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "504 after {elapsed:?} with --timeout 2"
    );

    let after = tokio::task::spawn_blocking(move || {
        poll_named(pid, "sleep", Duration::from_secs(3), <[ProcStat]>::is_empty)
    })
    .await
    .expect("poll task");
    if let Err(left) = after {
        panic!("3 s after the 504, sleeps still run under the gateway: {left:?} (were {sleeps:?})");
    }
    // A zombie is not running, so it does not fail the test, but it means the worker (PID 1
    // of its namespace) does not reap the orphans it inherits: say so.
    for s in &sleeps {
        if let Some(now) = procfs::still_exists(s) {
            eprintln!("WARNING: sleep {s:?} left as {now:?} 3 s after the 504");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_request_gives_502_and_is_replaced() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "slowcgi",
        r"sleep 5
printf 'Content-Type: text/plain\n\nlate\n'",
    );
    let gw = jail.serve(Opts::default());
    let original = gw.wait_for_workers(Duration::from_secs(5), &[]);
    let url = gw.url("/cgi-bin/slowcgi");
    let request =
        tokio::spawn(async move { client(Duration::from_secs(10)).get(url).send().await });

    // The CGI is the shell running the script (comm is the script's name); its parent is
    // the worker proper.
    let pid = gw.pid();
    let cgi = tokio::task::spawn_blocking(move || {
        poll_named(pid, "slowcgi", Duration::from_secs(5), |f| f.len() == 1)
    })
    .await
    .expect("poll task")
    .unwrap_or_else(|f| panic!("expected the slowcgi CGI under the gateway, saw {f:?}"));
    let worker_pid = cgi[0].ppid;
    let pair = original
        .iter()
        .find(|p| p.worker.pid == worker_pid)
        .unwrap_or_else(|| panic!("parent {worker_pid} of the CGI is not a worker: {original:?}"))
        .clone();
    assert!(procfs::still_exists(&pair.worker).is_some());
    kill(Pid::from_raw(worker_pid), Signal::SIGKILL).expect("kill -9 the worker");

    let response = request
        .await
        .expect("request task")
        .expect("a response (not a hang) when the worker dies");
    assert_eq!(response.status().as_u16(), 502);

    // Back to N workers, the killed one not among them, within 3 s.
    let dead = [pair.worker.clone()];
    let now = tokio::task::block_in_place(|| gw.wait_for_workers(Duration::from_secs(3), &dead));
    assert_eq!(now.len(), gw.workers);
    // The killed worker is dead. Its pid entry may linger as a zombie: the gateway SIGKILLs
    // the old holder without letting it reap its worker, so the zombie goes to the host's
    // init, which reaps it in its own time. Not in the contract, so only reported.
    if let Some(left) = procfs::still_exists(&pair.worker) {
        assert!(left.is_zombie(), "the killed worker still runs: {left:?}");
        eprintln!(
            "NOTE: the killed worker lingers as {left:?} (its holder was not left to reap it)"
        );
    }

    let response = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("GET /cgi-bin/hello after the worker's death");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(&response.bytes().await.expect("body")[..], b"hello\n");
}

/// A CGI killed with its worker in the middle of its answer: the client sees the answer cut
/// off (the connection ends before the last chunk), not a whole answer of half the body.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_answer_cuts_the_answer_off() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "halfway",
        r"printf 'Content-Type: text/plain\n\nfirst\n'
sleep 5
printf 'second\n'",
    );
    let gw = jail.serve(Opts::default());
    let original = gw.wait_for_workers(Duration::from_secs(5), &[]);
    let response = client(Duration::from_secs(10))
        .get(gw.url("/cgi-bin/halfway"))
        .send()
        .await
        .expect("the head");
    assert_eq!(response.status().as_u16(), 200);
    let pid = gw.pid();
    let cgi = tokio::task::spawn_blocking(move || {
        poll_named(pid, "halfway", Duration::from_secs(5), |f| f.len() == 1)
    })
    .await
    .expect("poll task")
    .unwrap_or_else(|f| panic!("expected the halfway CGI under the gateway, saw {f:?}"));
    // The CGI is the shell running the script; its parent is the worker proper.
    let worker = original
        .iter()
        .find(|p| p.worker.pid == cgi[0].ppid)
        .unwrap_or_else(|| panic!("no worker is the parent of the CGI {cgi:?}: {original:?}"));
    kill(Pid::from_raw(worker.worker.pid), Signal::SIGKILL).expect("kill -9 the worker");
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "the answer of a CGI killed with its worker ended as a whole one: {body:?}"
    );
}

/// A worker dies with its holder (the parent-death signal it sets). A worker whose holder was
/// killed served on, reparented to the host's init, while the supervisor, seeing the holder
/// gone, was free to start another worker on the same ids: a switch of uid (at the worker's
/// start, to check its kills by id) cleared the signal, and the kernel refused it anyway, the
/// holder's Landlock domain not being an ancestor of the worker's.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_dies_with_its_holder() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let gw = jail.serve(one_worker());
    let pair = gw.wait_for_workers(Duration::from_secs(5), &[])[0].clone();
    // Serving, so past its checks at start.
    let response = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("GET /cgi-bin/hello");
    assert_eq!(response.status().as_u16(), 200);
    kill(Pid::from_raw(pair.holder.pid), Signal::SIGKILL).expect("kill -9 the holder");
    let left = tokio::task::block_in_place(|| {
        wait_dead(std::slice::from_ref(&pair.worker), Duration::from_secs(5))
    });
    assert!(left.is_empty(), "the worker outlived its holder: {left:?}");
    let response = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("GET /cgi-bin/hello after the holder's death");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_is_rejected_and_runs_nothing() {
    require_root!();
    let jail = Jail::new();
    // Every request has a /tmp of its own: the marker says it ran on stderr, which the
    // gateway logs.
    jail.cgi(
        "marker",
        r"echo JAILGATE-MARKER-RAN >&2
printf 'Content-Type: text/plain\n\nran\n'",
    );
    let gw = jail.serve(Opts {
        workers: 1,
        timeout_secs: None,
    });
    let timeout = Duration::from_secs(10);
    // "yes" once the marker's line is in the log (waiting a little for it: the front logs a
    // CGI's stderr as it reads it), else "no".
    let check = |gw: &Gateway| {
        let ran = !gw.cgi_stderr_lines("JAILGATE-MARKER-RAN").is_empty();
        async move { if ran { "yes\n" } else { "no\n" }.to_owned() }
    };
    assert_eq!(check(&gw).await, "no\n", "no marker before the test");

    let targets = [
        "/cgi-bin/../cgi-bin/marker",
        "/cgi-bin/../x",
        "/cgi-bin/%2e%2e/cgi-bin/marker",
        "/cgi-bin/%2E%2E/cgi-bin/marker",
        "/cgi-bin/.%2e/cgi-bin/marker",
        "/cgi-bin/%2e%2e/x",
        "/cgi-bin/..%2fcgi-bin%2fmarker",
        "/cgi-bin/marker%2f",
        "/cgi-bin/marker%2fx",
        "/cgi-bin/%2fcgi-bin%2fmarker",
        "/cgi-bin/marker%00",
        "/cgi-bin/marker%00.sh",
        "/cgi-bin/%00marker",
    ];
    for target in targets {
        let response = raw_get(gw.addr, target, timeout)
            .await
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert!(
            response.status == 400 || response.status == 404,
            "GET {target} gave {} (want 400 or 404): {:?}",
            response.status,
            response.body_text()
        );
        assert_ne!(response.body_text(), "ran\n", "GET {target} ran the marker");
    }
    assert_eq!(
        check(&gw).await,
        "no\n",
        "a traversal request ran the marker CGI"
    );

    // The positive control: the marker, asked for properly, runs and the checker sees it.
    let response = raw_get(gw.addr, "/cgi-bin/marker", timeout)
        .await
        .expect("GET /cgi-bin/marker");
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), "ran\n");
    let end = Instant::now() + Duration::from_secs(5);
    while check(&gw).await != "yes\n" && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        check(&gw).await,
        "yes\n",
        "the checker sees a marker once it ran"
    );
}
