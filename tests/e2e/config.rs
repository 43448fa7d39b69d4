//! `--config FILE` and `--log-format`: the real gateway reads a TOML file (flags given on the
//! command line win over it), refuses a file with an unknown key or a bad value with the key
//! and the line, and logs one JSON object per stderr line when asked.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::harness::{require_root, Gateway, Jail, Opts, FRONT_ID};
use crate::http::client;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the gateway may take to stop after SIGTERM with nothing in flight.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A config file in its own temp folder (kept alive as long as the returned guard).
fn config_file(text: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::with_prefix("jailgate-config-").expect("temp dir");
    let path = dir.path().join("jailgate.toml");
    std::fs::write(&path, text).expect("write the config file");
    (dir, path)
}

/// Every line the gateway wrote to stderr, each of which must be one JSON object.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) if value.is_object() => value,
                _ => {
                    panic!("a stderr line that is not one JSON object: {line:?}\nstderr:\n{stderr}")
                }
            },
        )
        .collect()
}

/// The `message` of each log record.
fn messages(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| record["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// Polls the gateway's stderr until `found` says yes; panics after 10 s.
fn wait_for_stderr(gw: &Gateway, found: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let stderr = gw.stderr();
        if found(&stderr) {
            return stderr;
        }
        assert!(
            Instant::now() < end,
            "not found in the gateway's stderr within 10 s:\n{stderr}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then the gateway's whole stderr once it has exited.
fn stop(mut gw: Gateway) -> String {
    gw.signal(Signal::SIGTERM);
    let status = gw.wait_exit(STOP_DEADLINE);
    assert!(
        status.is_some_and(|status| status.success()),
        "the gateway did not stop cleanly on SIGTERM: {status:?}"
    );
    gw.stderr()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_sets_the_env_timeout_and_log_format() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "greet",
        r#"printf 'Content-Type: text/plain\n\n%s|%s\n' "$GREETING" "$SECOND""#,
    );
    jail.cgi("slow", "sleep 30");
    // The harness passes --workers 2 and --listen 127.0.0.1:0 itself: those flags win over
    // the file's workers and listen, which would otherwise start 3 workers on port 1.
    let (_dir, path) = config_file(
        "# set by the file\n\
         env = [\"GREETING=hello from the file\", \"SECOND=two\"]\n\
         timeout = 2\n\
         workers = 3\n\
         listen = \"127.0.0.1:1\"\n\
         log-format = \"json\"\n",
    );
    let gw = jail.serve_with(
        Opts::default(),
        &["--config", path.to_str().expect("UTF-8 path")],
    );
    gw.wait_for_workers(Duration::from_secs(10), &[]);
    assert_ne!(gw.addr.port(), 1, "the file's listen won over --listen");
    let http = client(REQUEST_TIMEOUT);

    let response = http
        .get(gw.url("/cgi-bin/greet"))
        .send()
        .await
        .expect("GET /cgi-bin/greet");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("greet body");
    assert_eq!(body, "hello from the file|two\n");

    let started = Instant::now();
    let response = http
        .get(gw.url("/cgi-bin/slow"))
        .send()
        .await
        .expect("GET /cgi-bin/slow");
    let elapsed = started.elapsed();
    assert_eq!(response.status().as_u16(), 504, "the file's timeout = 2");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "504 after {elapsed:?} with timeout = 2 in the file"
    );

    // log-format = "json" from the file applies from the first line to the last.
    let records = json_lines(&stop(gw));
    let messages = messages(&records);
    assert!(
        messages.iter().any(|m| m == "serving"),
        "no `serving` record: {messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_gives_one_json_object_per_stderr_line() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "chatty",
        "echo 'a line on stderr with \"quotes\" and a \\ backslash' >&2\n\
         printf 'Content-Type: text/plain\\n\\nok\\n'",
    );
    let gw = jail.serve_with(Opts::default(), &["--log-format", "json"]);
    let response = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/chatty"))
        .send()
        .await
        .expect("GET /cgi-bin/chatty");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.expect("body"), "ok\n");
    // The CGI's stderr is logged asynchronously: wait for it before stopping.
    wait_for_stderr(&gw, |stderr| stderr.contains("a line on stderr"));

    let records = json_lines(&stop(gw));
    for record in &records {
        for field in ["timestamp", "level", "target"] {
            assert!(
                record.get(field).is_some(),
                "a record without {field}: {record}"
            );
        }
    }
    let messages = messages(&records);
    assert!(
        messages.iter().any(|m| m == "serving"),
        "no `serving` record: {messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("a line on stderr") && m.contains("quotes")),
        "the CGI's stderr is not logged as one record: {messages:?}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_the_key_and_line() {
    require_root!();
    let jail = Jail::new();
    let (_dir, path) = config_file("timeout = 5\n\nwrokers = 2\nmax-body = \"1M\"\n");
    let done = jail.start_refused(&["--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    assert_eq!(
        done.stderr.trim_end(),
        format!("gateway: {} line 3: unknown key `wrokers`", path.display())
    );
}

#[test]
fn a_bad_value_is_refused_with_the_key_line_and_reason() {
    require_root!();
    let jail = Jail::new();
    let (_dir, path) = config_file("timeout = 5\n# the body limit\n\n\nmax-body = \"12Q\"\n");
    let done = jail.start_refused(&["--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    assert_eq!(
        done.stderr.trim_end(),
        format!(
            "gateway: {} line 5: max-body: `12Q` is not a size like 65536, 64K, 64M or 1G",
            path.display()
        )
    );

    let (_dir, path) = config_file("workers = 2\ntimeout = \"thirty\"\n");
    let done = jail.start_refused(&["--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    assert_eq!(
        done.stderr.trim_end(),
        format!(
            "gateway: {} line 2: timeout: expected whole seconds like 30, not \"thirty\"",
            path.display()
        )
    );

    let missing = "/nonexistent/jailgate.toml";
    let done = jail.start_refused(&["--config", missing]);
    assert_eq!(done.status.code(), Some(2), "stderr:\n{}", done.stderr);
    assert!(
        done.stderr
            .starts_with(&format!("gateway: {missing}: No such file")),
        "stderr:\n{}",
        done.stderr
    );
}

/// A gateway started with `--config FILE`, FILE setting `GREETING=before` for its CGI
/// `greet`, which prints it; the file's folder, its path, and the gateway.
fn greeting_from_a_config_file() -> (TempDir, PathBuf, Gateway) {
    let jail = Jail::new();
    jail.cgi(
        "greet",
        r#"printf 'Content-Type: text/plain\n\n%s\n' "$GREETING""#,
    );
    let (dir, path) = config_file("env = [\"GREETING=before\"]\n");
    let gw = jail.serve_with(
        Opts::default(),
        &["--config", path.to_str().expect("UTF-8 path")],
    );
    (dir, path, gw)
}

/// A reload is held to the start's rules for the front's account: a configuration whose
/// workers would run as the front's uid (which could then signal them) is refused, and the old
/// one serves on. The reload skipped that check, and its new workers ran as the front.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_make_the_workers_the_fronts_account() {
    require_root!();
    let (_dir, path, mut gw) = greeting_from_a_config_file();
    std::fs::write(
        &path,
        format!("env = [\"GREETING=after\"]\nuser = \"{FRONT_ID}\"\n"),
    )
    .expect("rewrite the config file");
    gw.signal(Signal::SIGHUP);
    let end = Instant::now() + Duration::from_secs(10);
    while !gw.stderr().contains("configuration not reloaded") {
        assert!(
            !gw.stderr().contains("starting a fresh pool"),
            "the reload was taken:\n{}",
            gw.stderr()
        );
        assert!(
            Instant::now() < end,
            "no refusal within 10 s:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.stderr().contains("must not be the workers' account"),
        "{}",
        gw.stderr()
    );
    let response = client(REQUEST_TIMEOUT)
        .get(gw.url("/cgi-bin/greet"))
        .send()
        .await
        .expect("GET /cgi-bin/greet");
    assert_eq!(response.text().await.expect("body"), "before\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_config_file_again() {
    require_root!();
    let (_dir, path, mut gw) = greeting_from_a_config_file();
    let http = client(REQUEST_TIMEOUT);
    let greeting = |http: reqwest::Client, url: String| async move {
        let response = http.get(url).send().await.expect("GET /cgi-bin/greet");
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.expect("greet body")
    };
    let url = gw.url("/cgi-bin/greet");
    assert_eq!(greeting(http.clone(), url.clone()).await, "before\n");

    std::fs::write(&path, "env = [\"GREETING=after\"]\n").expect("rewrite the config file");
    gw.signal(Signal::SIGHUP);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = greeting(http.clone(), url.clone()).await;
        if now == "after\n" {
            break;
        }
        assert_eq!(now, "before\n", "neither the old nor the new value");
        assert!(
            Instant::now() < end,
            "10 s after SIGHUP the CGI still sees the old file's env"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
