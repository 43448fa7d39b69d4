//! CGI/1.1 conformance (RFC 3875) beyond the basics in `core`: the response kinds of §6,
//! request bodies (§4.1.2 CONTENT_LENGTH, chunked uploads, `Expect: 100-continue`), the common
//! extensions and the proxy-aware, policy-driven parts of the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{
    foreign_network, gateway_bin, one_worker, require_root, run_bounded, Gateway, Jail, Opts,
};
use crate::http::{client, raw_get, read_response, RawResponse};

const TIMEOUT: Duration = Duration::from_secs(15);
const ENV_CGI: &str = r"printf 'Content-Type: text/plain\n\n'; exec env";

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Sends `head` (a request head without the final blank line) and `body` on a new
/// connection, and reads one response.
async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> RawResponse {
    exchange(addr, head, body, false).await
}

async fn exchange(addr: SocketAddr, head: &str, body: &[u8], head_request: bool) -> RawResponse {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{head}\r\n\r\n").as_bytes())
            .await?;
        write.write_all(body).await?;
        let mut reader = BufReader::new(read);
        read_response(&mut reader, head_request).await
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("exchange within the timeout")
        .expect("a complete response")
}

/// CONNECT asks for a tunnel, which a CGI cannot give: 501, and the CGI is not run (hyper
/// would take its 2xx for a tunnel, drop its body and hand the connection over).
#[tokio::test(flavor = "multi_thread")]
async fn connect_is_not_implemented() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let gw = jail.serve(one_worker());
    let response = raw_exchange(gw.addr, "CONNECT /cgi-bin/env HTTP/1.1\r\nHost: x", b"").await;
    assert_eq!(response.status, 501, "{response:?}");
    let text = String::from_utf8_lossy(&response.body).into_owned();
    assert!(!text.contains("GATEWAY_INTERFACE"), "the CGI ran: {text}");
}

/// `--timeout` bounds the whole request: CGIs that each take a second and redirect to the
/// next end in a 504 at the request's deadline, not one deadline per hop (11 hops, 11 ×).
#[tokio::test(flavor = "multi_thread")]
async fn local_redirects_share_the_requests_timeout() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "slowloop",
        r"sleep 1
printf 'Location: /cgi-bin/slowloop\n\n'",
    );
    let gw = jail.serve(Opts {
        timeout_secs: Some(3),
        ..one_worker()
    });
    let started = std::time::Instant::now();
    let response = client(TIMEOUT)
        .get(gw.url("/cgi-bin/slowloop"))
        .send()
        .await
        .expect("response");
    let took = started.elapsed();
    assert_eq!(response.status().as_u16(), 504, "after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "--timeout 3, answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_redirect_is_served_by_the_gateway() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "redir",
        r"printf 'Location: /cgi-bin/target?from=redir\n\n'",
    );
    jail.cgi(
        "target",
        r#"printf 'Content-Type: text/plain\n\n'; echo "QS=$QUERY_STRING M=$REQUEST_METHOD CL=${CONTENT_LENGTH:-none}""#,
    );
    jail.cgi("loop", r"printf 'Location: /cgi-bin/loop\n\n'");
    jail.cgi("outside", r"printf 'Location: /etc/passwd\n\n'");
    let gw = jail.serve(one_worker());
    let http = client(TIMEOUT);

    // RFC 3875 §6.2.2: the server answers the redirect's target itself, as a GET.
    let response = http
        .get(gw.url("/cgi-bin/redir"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers().get("location").is_none(),
        "a local redirect is not seen by the client"
    );
    assert_eq!(
        response.text().await.expect("body"),
        "QS=from=redir M=GET CL=none\n"
    );
    let posted = http
        .post(gw.url("/cgi-bin/redir"))
        .body("payload")
        .send()
        .await
        .expect("response");
    assert_eq!(
        posted.text().await.expect("body"),
        "QS=from=redir M=GET CL=none\n",
        "the body is not replayed"
    );

    // A redirect loop ends (502), and a local path outside /cgi-bin/ is not a CGI (404).
    let looped = http
        .get(gw.url("/cgi-bin/loop"))
        .send()
        .await
        .expect("response");
    assert_eq!(looped.status().as_u16(), 502);
    let outside = http
        .get(gw.url("/cgi-bin/outside"))
        .send()
        .await
        .expect("response");
    assert_eq!(outside.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_redirects_with_and_without_document() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("away", r"printf 'Location: https://example.org/new\n\n'");
    jail.cgi(
        "moved",
        r"printf 'Status: 301 Moved Permanently\nLocation: https://example.org/moved\nContent-Type: text/html\n\n<a href=https://example.org/moved>moved</a>\n'",
    );
    let gw = jail.serve(one_worker());
    // §6.2.3: an absolute Location alone is a 302 to it.
    let away = raw_get(gw.addr, "/cgi-bin/away", TIMEOUT)
        .await
        .expect("response");
    assert_eq!(away.status, 302);
    assert_eq!(away.header("location"), Some("https://example.org/new"));
    // §6.2.4: with a Status and a document, both are passed on.
    let moved = raw_get(gw.addr, "/cgi-bin/moved", TIMEOUT)
        .await
        .expect("response");
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("https://example.org/moved"));
    assert_eq!(moved.header("content-type"), Some("text/html"));
    assert_eq!(
        moved.body_text(),
        "<a href=https://example.org/moved>moved</a>\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn document_responses_status_and_framing() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "bare",
        r"printf 'Status: 404\nContent-Type: text/plain\n\nnope\n'",
    );
    jail.cgi(
        "reason",
        r"printf 'Status: 404 Gone Fishing\r\nContent-Type: text/plain\r\n\r\nnope\n'",
    );
    jail.cgi("notype", r"printf 'X-Only: 1\n\nbody\n'");
    jail.cgi("nocontent", r"printf 'Status: 204\n\n'");
    jail.cgi(
        "sized",
        r"printf 'Content-Type: text/plain\nContent-Length: 6\n\nsized\n'",
    );
    jail.cgi(
        "streamed",
        r"printf 'Content-Type: text/plain\n\nstreamed\n'; sleep 0.2; printf 'on\n'",
    );
    jail.cgi("short", r"printf 'Content-Type: text/plain\n\nshort\n'");
    jail.cgi("nph-tea", r"printf 'HTTP/1.1 418 Teapot\r\nContent-Type: text/plain\r\nX-Nph: yes\r\n\r\nshort and stout\n'");
    let gw = jail.serve(one_worker());

    // §6.3.3 Status, with and without a reason phrase; LF and CRLF line ends (§6.1).
    for path in ["/cgi-bin/bare", "/cgi-bin/reason"] {
        let response = raw_get(gw.addr, path, TIMEOUT).await.expect("response");
        assert_eq!(
            (response.status, response.body_text().as_str()),
            (404, "nope\n"),
            "{path}"
        );
    }
    // §6.3.1: a document needs a Content-Type; a 204 has no document.
    assert_eq!(
        raw_get(gw.addr, "/cgi-bin/notype", TIMEOUT)
            .await
            .expect("response")
            .status,
        502
    );
    assert_eq!(
        raw_get(gw.addr, "/cgi-bin/nocontent", TIMEOUT)
            .await
            .expect("response")
            .status,
        204
    );
    // The CGI's Content-Length is passed through; without one, a body that ends at once is
    // sent whole with a Content-Length (one write), one still being written is chunked.
    let sized = raw_get(gw.addr, "/cgi-bin/sized", TIMEOUT)
        .await
        .expect("response");
    assert_eq!(
        (sized.header("content-length"), sized.body_text().as_str()),
        (Some("6"), "sized\n")
    );
    let streamed = raw_get(gw.addr, "/cgi-bin/streamed", TIMEOUT)
        .await
        .expect("response");
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(streamed.body_text(), "streamed\non\n");
    let short = raw_get(gw.addr, "/cgi-bin/short", TIMEOUT)
        .await
        .expect("response");
    assert_eq!(
        (short.header("content-length"), short.body_text().as_str()),
        (Some("6"), "short\n")
    );
    // §5: a non-parsed-header script's status line and headers are the response's.
    let nph = raw_get(gw.addr, "/cgi-bin/nph-tea", TIMEOUT)
        .await
        .expect("response");
    assert_eq!((nph.status, nph.header("x-nph")), (418, Some("yes")));
    assert_eq!(nph.body_text(), "short and stout\n");
    // HEAD: the same head, no body.
    let head_request = format!(
        "HEAD /cgi-bin/sized HTTP/1.1\r\nHost: {}\r\nConnection: close",
        gw.addr
    );
    let head = exchange(gw.addr, &head_request, b"", true).await;
    assert_eq!(
        (head.status, head.header("content-type")),
        (200, Some("text/plain"))
    );
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_chunked_and_expect_continue() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "echo",
        r#"printf 'Content-Type: text/plain\n\nCL=%s\n' "${CONTENT_LENGTH:-none}"; exec cat"#,
    );
    let gw = jail.serve_with(one_worker(), &["--max-body", "64K"]);
    let host = gw.addr;

    // A chunked body has no length up front: it is spooled so CONTENT_LENGTH is set (§4.1.2).
    let chunked = raw_exchange(
        gw.addr,
        &format!("POST /cgi-bin/echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close"),
        b"5\r\nhello\r\n7\r\n chunks\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        (chunked.status, chunked.body_text().as_str()),
        (200, "CL=12\nhello chunks")
    );

    // Over --max-body: 413, for chunked and declared lengths alike.
    let mut big = format!("{:x}\r\n", 70_000).into_bytes();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    let too_big = raw_exchange(
        gw.addr,
        &format!("POST /cgi-bin/echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close"),
        &big,
    )
    .await;
    assert_eq!(too_big.status, 413);
    let declared = raw_exchange(
        gw.addr,
        &format!("POST /cgi-bin/echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 70000\r\nConnection: close"),
        b"",
    )
    .await;
    assert_eq!(declared.status, 413);

    // Expect: 100-continue: the client waits for the interim response before sending the body.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let head = format!("POST /cgi-bin/echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    write.write_all(head.as_bytes()).await.expect("send head");
    let mut interim = String::new();
    tokio::time::timeout(TIMEOUT, reader.read_line(&mut interim))
        .await
        .expect("interim in time")
        .expect("read");
    assert!(interim.starts_with("HTTP/1.1 100"), "got {interim:?}");
    let mut blank = String::new();
    reader.read_line(&mut blank).await.expect("read");
    write.write_all(b"ping").await.expect("send body");
    let response = tokio::time::timeout(TIMEOUT, read_response(&mut reader, false))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(
        (response.status, response.body_text().as_str()),
        (200, "CL=4\nping")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_extensions_and_defaults() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let gw = jail.serve(one_worker());
    let http = client(TIMEOUT);
    let text = http
        .post(gw.url("/cgi-bin/env/a/b?x=1"))
        .header("authorization", "Basic eDp5")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("response")
        .text()
        .await
        .expect("body");
    let env = parse_env(&text);
    // §4.1.2: an empty body sets no CONTENT_LENGTH.
    assert!(!env.contains_key("CONTENT_LENGTH"), "{text}");
    // §4.1.6 and the extensions: URL paths map 1:1 onto the jail, whose root is the docroot.
    assert_eq!(env.get("PATH_TRANSLATED").map(String::as_str), Some("/a/b"));
    assert_eq!(env.get("DOCUMENT_ROOT").map(String::as_str), Some("/"));
    assert_eq!(
        env.get("SCRIPT_FILENAME").map(String::as_str),
        Some("/cgi-bin/env")
    );
    // Untrusted peer: forwarded headers change nothing; credentials are not passed.
    assert_eq!(
        env.get("REMOTE_ADDR").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(env.get("REQUEST_SCHEME").map(String::as_str), Some("http"));
    assert!(
        !env.contains_key("HTTPS") && !env.contains_key("HTTP_AUTHORIZATION"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn front_server_forwarding_authorization_and_fixed_variables() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    // A front server on this host speaks over a Unix socket (this test, as root, is one);
    // a documentation network stands for proxies on other hosts it forwards through.
    let (network, proxy) = foreign_network();
    let socket = jail.folder().join("http.sock");
    let listen = format!("unix:{}", socket.display());
    let flags = [
        "--listen",
        &listen,
        "--trusted-proxy",
        &network,
        "--pass-authorization",
        "--env",
        "APP_DATA=/srv/data",
    ];
    let gw = jail.serve_with(one_worker(), &flags);
    let forwarded_for = format!("6.6.6.6, 10.9.8.7, {proxy}");
    let (text, env) = env_of(
        &gw,
        "/cgi-bin/env?QUERY_STRING=evil",
        &[
            ("authorization", "Basic eDp5"),
            ("x-forwarded-for", &forwarded_for),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "www.example.org"),
        ],
    )
    .await;
    let get = |name: &str| env.get(name).map(String::as_str);
    // The right-most untrusted address is the client; what the client itself claimed is not.
    assert_eq!(get("REMOTE_ADDR"), Some("10.9.8.7"), "{text}");
    assert_eq!(
        (get("HTTPS"), get("REQUEST_SCHEME")),
        (Some("on"), Some("https"))
    );
    assert_eq!(get("SERVER_NAME"), Some("www.example.org"));
    assert_eq!(get("HTTP_AUTHORIZATION"), Some("Basic eDp5"));
    assert_eq!(get("APP_DATA"), Some("/srv/data"));
    assert_eq!(get("QUERY_STRING"), Some("QUERY_STRING=evil"));
}

/// A front server that adds a line of its own to each forwarded header (HAProxy's `option
/// forwardfor`, Apache's `RequestHeader add`) leaves the client's lines before it: its own, the
/// last, is the one believed, not the client's first (which once set REMOTE_ADDR, HTTPS and
/// REMOTE_USER).
#[tokio::test(flavor = "multi_thread")]
async fn the_front_servers_own_forwarded_line_is_the_one_believed() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let socket = jail.folder().join("http.sock");
    let listen = format!("unix:{}", socket.display());
    let gw = jail.serve_with(one_worker(), &["--listen", &listen]);
    let (text, env) = env_of(
        &gw,
        "/cgi-bin/env",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-user", "admin"),
            ("x-forwarded-user", "alice"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-host", "www.example.org"),
        ],
    )
    .await;
    let get = |name: &str| env.get(name).map(String::as_str);
    assert_eq!(get("REMOTE_ADDR"), Some("10.0.0.9"), "{text}");
    assert_eq!(get("REQUEST_SCHEME"), Some("http"), "{text}");
    assert_eq!(get("HTTPS"), None, "{text}");
    assert_eq!(get("REMOTE_USER"), Some("alice"), "{text}");
    assert_eq!(get("SERVER_NAME"), Some("www.example.org"), "{text}");
}

/// The environment the `env` CGI at `path` shows for a GET with `headers` (each a line of its
/// own, in order), and the text it came in.
async fn env_of(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, BTreeMap<String, String>) {
    let mut request = gw.client(TIMEOUT).get(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("response");
    let text = response.text().await.expect("body");
    let env = parse_env(&text);
    (text, env)
}

#[test]
fn env_flag_cannot_set_a_meta_variable() {
    require_root!();
    let jail = Jail::new();
    for flag in ["QUERY_STRING=x", "HTTP_HOST=x", "PATH=/tmp", "1BAD=x"] {
        let done = run_bounded(
            std::process::Command::new(gateway_bin())
                .arg("--jail")
                .arg(jail.root())
                .args(["--listen", "127.0.0.1:0", "--env", flag]),
            Duration::from_secs(20),
        );
        assert_eq!(done.status.code(), Some(2), "--env {flag}: {}", done.stderr);
        assert_eq!(
            done.stderr.trim().lines().count(),
            1,
            "one line: {}",
            done.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn script_is_the_first_path_segment_that_is_a_file() {
    require_root!();
    let jail = Jail::new();
    std::fs::create_dir_all(jail.root().join("cgi-bin/app/deeper")).expect("sub-folders");
    let show = r#"printf 'Content-Type: text/plain\n\n%s|%s|%s|%s\n' "$SCRIPT_NAME" "$PATH_INFO" "$SCRIPT_FILENAME" "${PATH_TRANSLATED:-unset}""#;
    jail.cgi("app/run", show);
    jail.cgi(
        "app/deeper/nph-raw",
        r"printf 'HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\n\r\nraw\n'",
    );
    jail.cgi("top", show);
    let gw = jail.serve(one_worker());
    let http = client(TIMEOUT);
    let text = |path: &'static str| {
        let http = http.clone();
        let url = gw.url(path);
        async move {
            let response = http.get(url).send().await.expect("response");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    };
    // RFC 3875 §4.1.13 / §4.1.5: SCRIPT_NAME ends at the first segment that is a file.
    assert_eq!(
        text("/cgi-bin/app/run/x/y%20z").await,
        (
            200,
            "/cgi-bin/app/run|/x/y z|/cgi-bin/app/run|/x/y z\n".into()
        )
    );
    assert_eq!(
        text("/cgi-bin/app/run").await,
        (200, "/cgi-bin/app/run||/cgi-bin/app/run|unset\n".into())
    );
    assert_eq!(
        text("/cgi-bin/top/app/run").await,
        (200, "/cgi-bin/top|/app/run|/cgi-bin/top|/app/run\n".into())
    );
    // NPH is decided by the script's own name, however deep.
    assert_eq!(
        text("/cgi-bin/app/deeper/nph-raw/extra").await,
        (202, "raw\n".into())
    );
    // A folder alone, or a path through a missing one, names no script.
    assert_eq!(text("/cgi-bin/app").await.0, 404);
    assert_eq!(text("/cgi-bin/app/deeper").await.0, 404);
    assert_eq!(text("/cgi-bin/nope/run").await.0, 404);
    // Hidden segments are never part of a script's path.
    assert_eq!(text("/cgi-bin/app/.hidden/run").await.0, 404);
}

/// A CGI that answers without a body (a 204, a Content-Length of 0, or any answer to a HEAD)
/// and then goes on with its work (writing its data, sending its mail) is not stopped: its
/// output is read to its end as for any answer. hyper sends no body for these and dropped
/// the CGI's unread, which killed the CGI 2 ms after its head (HEAD from a crawler killed the
/// script it asked for).
#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_that_answers_without_a_body_finishes_its_work() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "work",
        r#"case "$QUERY_STRING" in
204) printf 'Status: 204 No Content\n\n' ;;
304) printf 'Status: 304 Not Modified\nContent-Length: 100\n\n' ;;
len0) printf 'Content-Type: text/plain\nContent-Length: 0\n\n' ;;
*) printf 'Content-Type: text/plain\nContent-Length: 5\n\nbody\n' ;;
esac
sleep 1
echo "work finished for $REQUEST_METHOD $QUERY_STRING" >&2"#,
    );
    let gw = jail.serve(Opts::default());
    let http = client(TIMEOUT);
    let no_content = http
        .get(gw.url("/cgi-bin/work?204"))
        .send()
        .await
        .expect("204");
    assert_eq!(no_content.status().as_u16(), 204);
    let empty = http
        .get(gw.url("/cgi-bin/work?len0"))
        .send()
        .await
        .expect("len0");
    assert_eq!(empty.status().as_u16(), 200);
    let unchanged = http
        .get(gw.url("/cgi-bin/work?304"))
        .send()
        .await
        .expect("304");
    assert_eq!(unchanged.status().as_u16(), 304);
    let head = http
        .head(gw.url("/cgi-bin/work?body"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("5"),
        "a HEAD says what the GET's answer would"
    );
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut finished = gw.cgi_stderr_lines("work finished");
        finished.sort();
        if finished.len() == 4 {
            assert_eq!(
                finished,
                [
                    "work finished for GET 204",
                    "work finished for GET 304",
                    "work finished for GET len0",
                    "work finished for HEAD body"
                ]
            );
            // A 304's Content-Length is that of the body a GET would get: no short answer.
            let stderr = gw.stderr();
            assert!(
                !stderr.contains("bytes its Content-Length declared"),
                "{stderr}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "10 s on, the CGIs finished only {finished:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP/1.0 answer without a length (its CGI still writing past the moment an answer is
/// sent whole) ends with the connection, and says so: hyper answered a keep-alive request
/// with `connection: keep-alive`, then closed, and a client's next request on it got nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_1_0_answer_without_a_length_says_it_closes() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "slow",
        "printf 'Content-Type: text/plain\\n\\none\\n'\nsleep 0.2\necho two",
    );
    let gw = jail.serve(one_worker());
    let answer = raw_exchange(
        gw.addr,
        "GET /cgi-bin/slow HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive",
        b"",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"one\ntwo\n");
    assert_eq!(answer.header("content-length"), None);
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{:?}",
        answer.headers
    );
}

/// A body in a transfer coding besides chunked (`gzip, chunked`) is 501 and runs nothing:
/// hyper takes the chunked coding off and leaves the rest, and the CGI got the gzip bytes as
/// a plain body with a CONTENT_LENGTH.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_coding_besides_chunked_is_not_implemented() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "count",
        r#"printf 'Content-Type: text/plain\n\n%s\n' "$(wc -c)""#,
    );
    let gw = jail.serve(one_worker());
    let head = "POST /cgi-bin/count HTTP/1.1\r\nHost: localhost\r\nConnection: close";
    let gzip = raw_exchange(
        gw.addr,
        &format!("{head}\r\nTransfer-Encoding: gzip, chunked"),
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        gzip.status,
        501,
        "{:?}",
        String::from_utf8_lossy(&gzip.body)
    );
    let chunked = raw_exchange(
        gw.addr,
        &format!("{head}\r\nTransfer-Encoding: chunked"),
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((chunked.status, chunked.body), (200, b"5\n".to_vec()));
}
