//! The FastCGI front spoken to directly, by a small FastCGI 1.0 client written here: whatever
//! PARAMS the peer sends, a CGI gets the CGI variables and nothing else (no `BASH_ENV`,
//! `LD_PRELOAD`, `PATH`, ...), except the names the operator lets through with `--pass-env`.
//! And the rule shared with the HTTP front: `Proxy-Authorization` and `Connection` never
//! become variables. On the way back, the CGI's header block is parsed as over HTTP, and the
//! fields a front server would act on are gone before nginx sees it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};

use crate::harness::{one_worker, require_root, Gateway, Jail, LEAK_NAME};
use crate::http::read_response;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The CGI that shows its whole environment.
const ENV_CGI: &str = r"printf 'Content-Type: text/plain\n\n'; exec env";
/// The gateway's own `PATH` for every CGI.
const CGI_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What nginx's stock `fastcgi_params` sends for `GET /cgi-bin/env?a=1` (plus two headers).
pub(crate) const NGINX_PARAMS: &[(&str, &str)] = &[
    ("QUERY_STRING", "a=1"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("SCRIPT_NAME", "/cgi-bin/env"),
    ("REQUEST_URI", "/cgi-bin/env?a=1"),
    ("DOCUMENT_URI", "/cgi-bin/env"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx/1.22.1"),
    ("REMOTE_ADDR", "198.51.100.7"),
    ("REMOTE_PORT", "40000"),
    ("REMOTE_USER", ""),
    ("SERVER_ADDR", "127.0.0.1"),
    ("SERVER_PORT", "80"),
    ("SERVER_NAME", "www.example.org"),
    ("REDIRECT_STATUS", "200"),
    ("HTTP_HOST", "www.example.org"),
    ("HTTP_X_TRACE", "abc"),
];

/// Variables a FastCGI peer must never be able to set for a CGI.
const HOSTILE_PARAMS: &[(&str, &str)] = &[
    ("BASH_ENV", "/tmp/x"),
    ("ENV", "/tmp/x"),
    ("LD_PRELOAD", "/tmp/evil.so"),
    ("SHELLOPTS", "xtrace"),
    ("PS4", "$(id)"),
    ("PERL5OPT", "-Mevil"),
    ("HTTP_PROXY_AUTHORIZATION", "secret"),
    ("HTTP_CONNECTION", "close"),
    ("HTTP_PROXY", "http://evil"),
    ("GIT_DIR", "/x"),
    ("IFS", "x"),
    ("PATH", "/tmp"),
];

/// One worker serving `jail` with a FastCGI listener on a Unix socket in the jail's temp
/// folder (the only place a FastCGI peer can be checked on this host: SO_PEERCRED; the tests
/// run as root, which is always a front server), plus `flags`.
fn serve_fastcgi(jail: Jail, flags: &[&str]) -> (Gateway, PathBuf) {
    let socket = jail.folder().join("fastcgi.sock");
    let address = format!("unix:{}", socket.display());
    let mut args = vec!["--fastcgi", address.as_str()];
    args.extend_from_slice(flags);
    let gateway = jail.serve_with(one_worker(), &args);
    (gateway, socket)
}

/// The variables of an `env` dump.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// `(status, body)` of a CGI response: the status of its `Status` header, else 200.
fn cgi_response(stdout: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(stdout);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or_else(|| panic!("no header block in the CGI response: {text:?}"));
    let status = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("status"))
        .map_or(200, |(_, value)| {
            value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("bad Status header in {head:?}"))
        });
    (status, body.to_owned())
}

/// One FastCGI request with `params`, no body, answered with 200: the CGI's variables.
fn fastcgi_env(socket: &Path, params: &[(&str, &str)]) -> BTreeMap<String, String> {
    let answer = fcgi::exchange(socket, params, b"").expect("a FastCGI exchange with the gateway");
    assert_eq!(
        answer.protocol_status,
        fcgi::REQUEST_COMPLETE,
        "END_REQUEST protocol status"
    );
    let (status, body) = cgi_response(&answer.stdout);
    assert_eq!(
        status,
        200,
        "{body}\nSTDERR: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    parse_env(&body)
}

/// Panics unless `vars` has `name` set to `value`.
fn expect_var(vars: &BTreeMap<String, String>, name: &str, value: &str) {
    assert_eq!(
        vars.get(name).map(String::as_str),
        Some(value),
        "{name} in {vars:#?}"
    );
}

#[test]
fn fastcgi_peer_cannot_set_arbitrary_environment_variables() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let (_gw, fastcgi) = serve_fastcgi(jail, &[]);
    let params: Vec<(&str, &str)> = NGINX_PARAMS.iter().chain(HOSTILE_PARAMS).copied().collect();
    let vars = fastcgi_env(&fastcgi, &params);

    let set: Vec<String> = HOSTILE_PARAMS
        .iter()
        .filter(|(name, _)| *name != "PATH")
        .filter_map(|(name, _)| vars.get(*name).map(|value| format!("{name}={value}")))
        .collect();
    assert!(
        set.is_empty(),
        "the FastCGI peer set {set:?} for the CGI: {vars:#?}"
    );
    expect_var(&vars, "PATH", CGI_PATH);
    assert!(!vars.contains_key(LEAK_NAME), "{vars:#?}");

    // What nginx legitimately passes still arrives.
    expect_var(&vars, "REQUEST_METHOD", "GET");
    expect_var(&vars, "QUERY_STRING", "a=1");
    expect_var(&vars, "HTTP_X_TRACE", "abc");
    expect_var(&vars, "HTTP_HOST", "www.example.org");
    expect_var(&vars, "REMOTE_ADDR", "198.51.100.7");
    expect_var(&vars, "SERVER_PROTOCOL", "HTTP/1.1");
    expect_var(&vars, "GATEWAY_INTERFACE", "CGI/1.1");
    expect_var(&vars, "SCRIPT_NAME", "/cgi-bin/env");
}

#[test]
fn pass_env_lets_a_named_fastcgi_param_through() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    // Never an HTTP_* variable (a request header's) nor a meta-variable.
    for name in ["HTTP_FOO", "PATH"] {
        let refused = jail.start_refused(&["--pass-env", name]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "--pass-env {name}: {}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("--pass-env") && refused.stderr.contains(name),
            "the refusal of --pass-env {name} names the flag and the variable: {}",
            refused.stderr
        );
    }

    let (_gw, fastcgi) = serve_fastcgi(jail, &["--pass-env", "GIT_PROJECT_ROOT"]);
    let params: Vec<(&str, &str)> = NGINX_PARAMS
        .iter()
        .copied()
        .chain([("GIT_PROJECT_ROOT", "/srv/git"), ("GIT_DIR", "/x")])
        .collect();
    let vars = fastcgi_env(&fastcgi, &params);
    expect_var(&vars, "GIT_PROJECT_ROOT", "/srv/git");
    assert!(
        !vars.contains_key("GIT_DIR"),
        "GIT_DIR was not named by --pass-env: {vars:#?}"
    );
    expect_var(&vars, "REQUEST_METHOD", "GET");
}

/// The HTTP front's side of the same rule: a client's `Proxy-Authorization` (the credentials
/// meant for a proxy) and `Connection` (hop-by-hop) never become variables.
#[tokio::test(flavor = "multi_thread")]
async fn http_peer_cannot_pass_proxy_authorization_or_connection() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let gw = jail.serve(one_worker());
    let request = format!(
        "GET /cgi-bin/env?a=1 HTTP/1.1\r\nHost: {}\r\nX-Trace: abc\r\n\
         Proxy-Authorization: secret\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(request.as_bytes()).await?;
        read_response(&mut BufReader::new(read), false).await
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("an answer in time")
        .expect("a response");
    assert_eq!(response.status, 200, "{}", response.body_text());
    let vars = parse_env(&response.body_text());
    expect_var(&vars, "HTTP_X_TRACE", "abc");
    expect_var(&vars, "QUERY_STRING", "a=1");
    for name in ["HTTP_PROXY_AUTHORIZATION", "HTTP_CONNECTION"] {
        assert!(
            !vars.contains_key(name),
            "{name} reached the CGI: {vars:#?}"
        );
    }
}

/// The CGI's answer split into its header lines and its body, as nginx would read it (the
/// head ends at the first empty line, LF or CRLF).
fn head_and_body(stdout: &[u8]) -> (Vec<String>, Vec<u8>) {
    let (end, body) = (0..stdout.len())
        .find_map(|at| match &stdout[at..] {
            [b'\n', b'\n', ..] => Some((at, at + 2)),
            [b'\n', b'\r', b'\n', ..] => Some((at, at + 3)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no header block: {:?}", String::from_utf8_lossy(stdout)));
    let head = String::from_utf8_lossy(&stdout[..end]);
    let lines = head
        .split('\n')
        .map(|line| line.trim_end_matches('\r').to_owned());
    (lines.collect(), stdout[body..].to_vec())
}

/// Over FastCGI the CGI's header block is read by the same strict parser as over HTTP before
/// nginx sees it (nginx honours X-Accel-Redirect from a fastcgi_pass upstream too): the
/// fields a front server acts on are dropped whatever their case, the CGI's own fields and
/// status pass, and the body follows byte for byte (a field name in it is no field). A
/// malformed head, or a document without Content-Type, gets a 502 answer of ours and none of
/// its bytes; an `nph-` script's status line becomes a Status field nginx can read.
#[test]
fn fastcgi_answers_lose_front_server_headers_and_malformed_heads_get_502() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "accel",
        r"printf 'Status: 201 Created\nContent-Type: text/plain\nx-ACCEL-redirect: /internal/secret\nX-Accel-Buffering: no\nX-SENDFILE: /etc/passwd\nX-Lighttpd-Send-File2: /etc/shadow 0-10\nX-Custom: 1\n\nX-Accel-Redirect: in the body\n'",
    );
    jail.cgi(
        "no-colon",
        r"printf 'Content-Type text/plain\n\nraw bytes\n'",
    );
    jail.cgi(
        "no-type",
        r"printf 'X-Accel-Redirect: /internal/secret\n\nraw bytes\n'",
    );
    jail.cgi(
        "nph-tea",
        r"printf 'HTTP/1.1 418 Teapot\r\nContent-Type: text/plain\r\nX-Sendfile: /etc/passwd\r\n\r\nshort and stout\n'",
    );
    let (_gw, fastcgi) = serve_fastcgi(jail, &[]);
    let exchange = |script: &str| {
        let mut params = NGINX_PARAMS.to_vec();
        params.push(("SCRIPT_NAME", script));
        let answer =
            fcgi::exchange(&fastcgi, &params, b"").expect("a FastCGI exchange with the gateway");
        assert_eq!(answer.protocol_status, fcgi::REQUEST_COMPLETE, "{script}");
        answer.stdout
    };
    let front_server_field = |line: &String| {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        name.starts_with("x-accel-")
            || name.starts_with("x-sendfile")
            || name.starts_with("x-lighttpd")
    };

    let (head, body) = head_and_body(&exchange("/cgi-bin/accel"));
    assert!(!head.iter().any(front_server_field), "{head:?}");
    assert!(
        head.iter()
            .any(|line| line.eq_ignore_ascii_case("x-custom: 1")),
        "{head:?}"
    );
    assert!(
        head.iter().any(|line| line.starts_with("Status: 201")),
        "{head:?}"
    );
    assert_eq!(body, b"X-Accel-Redirect: in the body\n");

    for script in ["/cgi-bin/no-colon", "/cgi-bin/no-type"] {
        let stdout = exchange(script);
        let (status, body) = cgi_response(&stdout);
        assert_eq!(status, 502, "{script}: {body}");
        let text = String::from_utf8_lossy(&stdout);
        assert!(
            !text.contains("raw bytes") && !text.contains("X-Accel"),
            "{script}: {text}"
        );
    }

    let (head, body) = head_and_body(&exchange("/cgi-bin/nph-tea"));
    assert!(
        head.iter().any(|line| line.starts_with("Status: 418")),
        "{head:?}"
    );
    assert!(!head.iter().any(front_server_field), "{head:?}");
    assert_eq!(body, b"short and stout\n");
}

/// A FastCGI 1.0 client (FastCGI Specification, Open Market, 1996): one RESPONDER request
/// per connection, request id 1, every read and write bounded by [`TIMEOUT`].
/// A FastCGI body is CONTENT_LENGTH bytes or none: STDIN longer than declared (past what
/// `--max-body` was checked against) or shorter (a part passed off as the whole) never reaches
/// the CGI as its body; the request fails and the CGI, which ignores SIGTERM, is stopped
/// before it reads an end of file. The same CGI given its declared length counts it.
#[test]
fn a_fastcgi_body_is_its_declared_length_or_none() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "count",
        r#"trap '' TERM; n=$(cat | wc -c); echo "counted $n" >&2; printf 'Content-Type: text/plain\n\n%s\n' "$n""#,
    );
    let (gw, socket) = serve_fastcgi(jail, &[]);
    let post = |declared: &str, stdin: &[u8]| {
        let mut params: Vec<(&str, &str)> = NGINX_PARAMS
            .iter()
            .copied()
            .filter(|(name, _)| !matches!(*name, "CONTENT_LENGTH" | "REQUEST_METHOD"))
            .map(|(name, value)| match name {
                "SCRIPT_NAME" | "DOCUMENT_URI" => (name, "/cgi-bin/count"),
                "REQUEST_URI" => (name, "/cgi-bin/count?a=1"),
                _ => (name, value),
            })
            .collect();
        params.push(("REQUEST_METHOD", "POST"));
        params.push(("CONTENT_LENGTH", declared));
        let answer = fcgi::exchange(&socket, &params, stdin).expect("a FastCGI exchange");
        cgi_response(&answer.stdout)
    };
    assert_eq!(post("10", &[b'b'; 10]), (200, "10\n".to_owned()));
    let (longer, _) = post("10", &[b'b'; 25]);
    let (shorter, _) = post("10", &[b'b'; 4]);
    assert_eq!((longer, shorter), (400, 400));
    // Past the 2 s between SIGTERM and SIGKILL.
    std::thread::sleep(Duration::from_secs(3));
    let counted = gw.cgi_stderr_lines("counted");
    assert_eq!(counted, ["counted 10"], "what the CGIs read: {counted:?}");
}

/// A response the gateway cuts off (its deadline here) ends the connection without
/// END_REQUEST, so that the front server sees it break off: nginx then ends its client's
/// answer as broken too. It ended STDOUT and sent END_REQUEST as for a whole response, and
/// through nginx the client got a clean 200 with half the body.
#[test]
fn a_response_cut_off_ends_without_end_request() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "half",
        "printf 'Content-Type: text/plain\\n\\npart1\\n'\nsleep 10\necho part2",
    );
    let (_gw, socket) = serve_fastcgi(jail, &["--timeout", "2"]);
    let params: Vec<(&str, &str)> = NGINX_PARAMS
        .iter()
        .copied()
        .map(|(name, value)| match name {
            "SCRIPT_NAME" | "DOCUMENT_URI" | "REQUEST_URI" => (name, "/cgi-bin/half"),
            _ => (name, value),
        })
        .collect();
    let started = Instant::now();
    let answer = fcgi::exchange(&socket, &params, b"");
    match answer {
        Err(error) => assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}"),
        Ok(answer) => panic!(
            "a whole FastCGI response (status {}) for one cut off after {:?}: {:?}",
            answer.protocol_status,
            started.elapsed(),
            String::from_utf8_lossy(&answer.stdout)
        ),
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// An answer that carries no body (to a HEAD, a 304) may declare the Content-Length of the
/// body a GET would get: it ends with END_REQUEST like any whole answer, its length passed on.
/// Held to that length, it was cut off, and nginx lost the connection on every such answer.
#[test]
fn a_bodiless_answer_with_a_length_ends_whole() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "sized",
        r#"case "$QUERY_STRING" in
304) printf 'Status: 304 Not Modified\nContent-Length: 100\n\n' ;;
*) printf 'Content-Type: text/plain\nContent-Length: 100\n\n' ;;
esac"#,
    );
    let (_gw, socket) = serve_fastcgi(jail, &[]);
    for (method, query) in [("HEAD", ""), ("GET", "304")] {
        let params: Vec<(&str, &str)> = NGINX_PARAMS
            .iter()
            .copied()
            .map(|(name, value)| match name {
                "SCRIPT_NAME" | "DOCUMENT_URI" | "REQUEST_URI" => (name, "/cgi-bin/sized"),
                "REQUEST_METHOD" => (name, method),
                "QUERY_STRING" => (name, query),
                _ => (name, value),
            })
            .collect();
        let answer = fcgi::exchange(&socket, &params, b"")
            .unwrap_or_else(|error| panic!("{method} ?{query}: no whole answer: {error}"));
        assert_eq!(
            answer.protocol_status,
            fcgi::REQUEST_COMPLETE,
            "{method} ?{query}"
        );
        let head = String::from_utf8_lossy(&answer.stdout);
        assert!(
            head.contains("content-length: 100\r\n"),
            "{method} ?{query}: {head}"
        );
    }
}

pub(crate) mod fcgi {
    use super::*;

    const VERSION: u8 = 1;
    const BEGIN_REQUEST: u8 = 1;
    const END_REQUEST: u8 = 3;
    const PARAMS: u8 = 4;
    const STDIN: u8 = 5;
    const STDOUT: u8 = 6;
    const STDERR: u8 = 7;
    const RESPONDER: u16 = 1;
    pub const REQUEST_COMPLETE: u8 = 0;
    const REQUEST_ID: u16 = 1;
    /// The most content one record carries.
    const MAX_CONTENT: usize = 0xFFFF;
    /// The most STDOUT plus STDERR this client accepts.
    const MAX_OUTPUT: usize = 4 << 20;

    /// What came back for one request.
    pub struct Answer {
        pub stdout: Vec<u8>,
        pub stderr: Vec<u8>,
        pub protocol_status: u8,
    }

    fn bad(why: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// One record of request [`REQUEST_ID`], padded to a multiple of 8 bytes.
    fn put_record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
        let length = u16::try_from(content.len()).expect("record content fits 65535 bytes");
        let padding = (8 - content.len() % 8) % 8;
        out.extend_from_slice(&[VERSION, kind]);
        out.extend_from_slice(&REQUEST_ID.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&[padding as u8, 0]);
        out.extend_from_slice(content);
        out.extend_from_slice(&[0; 8][..padding]);
    }

    /// A stream (PARAMS, STDIN): `data` in records, then the empty record that ends it.
    fn put_stream(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
        for chunk in data.chunks(MAX_CONTENT) {
            put_record(out, kind, chunk);
        }
        put_record(out, kind, &[]);
    }

    /// A name-value length: one byte below 128, else four with the high bit set.
    fn put_length(out: &mut Vec<u8>, len: usize) {
        match u8::try_from(len) {
            Ok(short) if short < 0x80 => out.push(short),
            _ => {
                let long = u32::try_from(len).expect("name or value under 2 GiB");
                out.extend_from_slice(&(long | 0x8000_0000).to_be_bytes());
            }
        }
    }

    fn name_value_pairs(params: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in params {
            put_length(&mut out, name.len());
            put_length(&mut out, value.len());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Fills `buf`, giving up at `deadline`.
    fn read_by(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "FastCGI answer"));
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf[filled..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => filled += n,
            }
        }
        Ok(())
    }

    /// The bytes of one request: BEGIN_REQUEST (RESPONDER, no keep-alive), `params`, `stdin`.
    pub fn request(params: &[(&str, &str)], stdin: &[u8]) -> Vec<u8> {
        let mut request = Vec::new();
        let mut begin = [0; 8];
        begin[..2].copy_from_slice(&RESPONDER.to_be_bytes());
        put_record(&mut request, BEGIN_REQUEST, &begin);
        put_stream(&mut request, PARAMS, &name_value_pairs(params));
        put_stream(&mut request, STDIN, stdin);
        request
    }

    /// Sends [`request`]; reads STDOUT and STDERR until END_REQUEST.
    pub fn exchange(socket: &Path, params: &[(&str, &str)], stdin: &[u8]) -> io::Result<Answer> {
        let deadline = Instant::now() + TIMEOUT;
        let mut stream = UnixStream::connect(socket)?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.write_all(&request(params, stdin))?;

        let mut answer = Answer {
            stdout: Vec::new(),
            stderr: Vec::new(),
            protocol_status: u8::MAX,
        };
        loop {
            let mut header = [0; 8];
            read_by(&mut stream, &mut header, deadline)?;
            let [version, kind, id_hi, id_lo, len_hi, len_lo, padding, _] = header;
            if version != VERSION || u16::from_be_bytes([id_hi, id_lo]) != REQUEST_ID {
                return Err(bad(format!("unexpected record header {header:?}")));
            }
            let length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            let mut content = vec![0; length + usize::from(padding)];
            read_by(&mut stream, &mut content, deadline)?;
            content.truncate(length);
            match kind {
                STDOUT => answer.stdout.extend_from_slice(&content),
                STDERR => answer.stderr.extend_from_slice(&content),
                END_REQUEST if content.len() == 8 => {
                    answer.protocol_status = content[4];
                    return Ok(answer);
                }
                _ => return Err(bad(format!("unexpected record {header:?}"))),
            }
            if answer.stdout.len() + answer.stderr.len() > MAX_OUTPUT {
                return Err(bad(format!("more than {MAX_OUTPUT} bytes of output")));
            }
        }
    }
}

/// nginx passes PATH_INFO decoded: a CR LF in it (from `%0d%0a` in the URL) gets 400 and runs
/// nothing, so a CGI that echoes PATH_INFO into a header cannot be made to inject one. The
/// same request with a plain PATH_INFO runs.
#[test]
fn control_bytes_in_path_info_get_400_and_run_nothing() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("env", ENV_CGI);
    let (_gw, fastcgi) = serve_fastcgi(jail, &[]);
    for path_info in [
        "/a\r\nSet-Cookie: x=1",
        "/\n",
        "/\x1b[31m",
        "/a\x7fb",
        "/\t",
    ] {
        let mut params = NGINX_PARAMS.to_vec();
        params.push(("PATH_INFO", path_info));
        let answer =
            fcgi::exchange(&fastcgi, &params, b"").expect("a FastCGI exchange with the gateway");
        let (status, body) = cgi_response(&answer.stdout);
        assert_eq!(status, 400, "PATH_INFO {path_info:?}: {body}");
        assert!(
            !body.contains("REQUEST_METHOD="),
            "PATH_INFO {path_info:?} ran the CGI: {body}"
        );
    }
    let mut params = NGINX_PARAMS.to_vec();
    params.push(("PATH_INFO", "/a b~\u{e9}"));
    expect_var(&fastcgi_env(&fastcgi, &params), "PATH_INFO", "/a b~\u{e9}");
}
