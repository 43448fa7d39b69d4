//! A real nginx in front (`proxy_pass`, with `examples/nginx/proxy_pass.conf` exactly): the
//! same requests give the same answers through nginx as directly.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{require_root, ChildGuard, Gateway, Jail, Opts};
use crate::http::client;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback port (closed again at once: nginx binds it right after).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/nginx")
        .join(name)
}

/// nginx, started by the test with the example config, stopped by its pid.
struct Nginx {
    _process: ChildGuard,
    addr: SocketAddr,
}

impl Nginx {
    /// `upstream`: the gateway's HTTP or FastCGI address, as the config wants.
    fn start(config_name: &str, prefix: &Path, upstream: SocketAddr) -> Nginx {
        let gateway = upstream;
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("nginx is installed (scripts/test.sh installs it)");
        std::fs::create_dir_all(prefix).expect("nginx prefix");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let template = std::fs::read_to_string(example(config_name)).expect("example config");
        let config = template
            .replace("@PREFIX@", &prefix.display().to_string())
            .replace("@LISTEN@", &addr.to_string())
            .replace("@GATEWAY@", &gateway.to_string())
            .replace("@FASTCGI@", &gateway.to_string());
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, config).expect("write nginx.conf");
        let process = ChildGuard::spawn(
            Command::new(nginx)
                .arg("-p")
                .arg(prefix)
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            _process: process,
            addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// (status, content-type, body) of a request through both fronts.
async fn both(
    http: &reqwest::Client,
    gw: &Gateway,
    nginx: &Nginx,
    request: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
    path: &str,
) -> [(u16, Option<String>, Vec<u8>); 2] {
    let mut answers = Vec::new();
    for url in [gw.url(path), nginx.url(path)] {
        let response = request(http, url).send().await.expect("response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("body").to_vec();
        answers.push((status, content_type, body));
    }
    [answers.remove(0), answers.remove(0)]
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_pass_gives_the_same_answers_as_direct() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", r"printf 'Content-Type: text/plain\n\nhello\n'");
    jail.cgi(
        "echo",
        r#"printf 'Content-Type: application/octet-stream\n\n'; exec cat"#,
    );
    jail.cgi(
        "length",
        r#"printf 'Content-Type: text/plain\n\n%s %s\n' "$CONTENT_LENGTH" "$PATH_INFO""#,
    );
    jail.cgi("redir", r"printf 'Location: /cgi-bin/hello\n\n'");
    jail.cgi(
        "teapot",
        r"printf 'Status: 418 Teapot\nContent-Type: text/plain\n\ntea\n'",
    );
    jail.cgi("broken", "exit 1");
    jail.cgi(
        "remote",
        r#"printf 'Content-Type: text/plain\n\n%s %s\n' "$REMOTE_ADDR" "$REQUEST_SCHEME""#,
    );
    let prefix = jail
        .root()
        .parent()
        .expect("the jail's temp folder")
        .join("nginx");
    let gw = jail.serve_with(Opts::default(), &["--trusted-proxy", "127.0.0.1"]);
    let nginx = Nginx::start("proxy_pass.conf", &prefix, gw.addr);
    let http = client(TIMEOUT);

    let get = |http: &reqwest::Client, url: String| http.get(url);
    let paths = [
        "/cgi-bin/hello",
        "/cgi-bin/redir",
        "/cgi-bin/teapot",
        "/cgi-bin/broken",
        "/cgi-bin/missing",
        "/cgi-bin/length/x/y",
    ];
    // nginx answers gateway errors with its own page; everything else is ours.
    assert_same_answers(&http, &gw, &nginx, get, &paths, 500).await;

    assert_uploads_match(&http, &gw, &nginx).await;

    // Through the trusted proxy, the client's address is the one nginx saw.
    let [direct, proxied] = both(&http, &gw, &nginx, get, "/cgi-bin/remote").await;
    assert_eq!(
        (direct.2.as_slice(), proxied.2.as_slice()),
        (&b"127.0.0.1 http\n"[..], &b"127.0.0.1 http\n"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fastcgi_pass_gives_the_same_answers_as_direct() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", r"printf 'Content-Type: text/plain\n\nhello\n'");
    jail.cgi(
        "echo",
        r#"printf 'Content-Type: application/octet-stream\n\n'; exec cat"#,
    );
    jail.cgi("length", r#"printf 'Content-Type: text/plain\n\n%s %s %s\n' "${CONTENT_LENGTH:-none}" "$PATH_INFO" "$SCRIPT_NAME""#);
    jail.cgi(
        "teapot",
        r"printf 'Status: 418 Teapot\nContent-Type: text/plain\n\ntea\n'",
    );
    jail.cgi("query", r#"printf 'Content-Type: text/plain\n\n%s|%s|%s\n' "$QUERY_STRING" "$REQUEST_METHOD" "${HTTP_PROXY:-no proxy}""#);
    let prefix = jail
        .root()
        .parent()
        .expect("the jail's temp folder")
        .join("nginx");
    let fastcgi: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let gw = jail.serve_with(Opts::default(), &["--fastcgi", &fastcgi.to_string()]);
    let nginx = Nginx::start("fastcgi_pass.conf", &prefix, fastcgi);
    let http = client(TIMEOUT);

    let get = |http: &reqwest::Client, url: String| http.get(url).header("proxy", "http://evil:1");
    let paths = [
        "/cgi-bin/hello",
        "/cgi-bin/teapot",
        "/cgi-bin/missing",
        "/cgi-bin/length/x/y",
        "/cgi-bin/query?a=%20b",
    ];
    assert_same_answers(&http, &gw, &nginx, get, &paths, 400).await;
    // Traversal that nginx would normalise away is refused by nginx or by us, never run.
    let escaped = http
        .get(nginx.url("/cgi-bin/%2e%2e/etc/passwd"))
        .send()
        .await
        .expect("response");
    assert!(
        matches!(escaped.status().as_u16(), 400 | 404),
        "{}",
        escaped.status()
    );

    assert_uploads_match(&http, &gw, &nginx).await;
}

/// Each path answers with the same status directly and through nginx, and, below
/// `compare_below`, with the same content type and body (error pages at or above it are the
/// front's own).
async fn assert_same_answers(
    http: &reqwest::Client,
    gw: &Gateway,
    nginx: &Nginx,
    request: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder + Copy,
    paths: &[&str],
    compare_below: u16,
) {
    for path in paths {
        let [direct, proxied] = both(http, gw, nginx, request, path).await;
        assert_eq!(direct.0, proxied.0, "{path}: status");
        if direct.0 < compare_below {
            assert_eq!(direct, proxied, "{path}");
        }
    }
}

/// A 4 MiB upload comes back byte-identical through `/cgi-bin/echo`, directly and through
/// nginx; sent chunked, it reaches `/cgi-bin/length` with the same CONTENT_LENGTH either way
/// (nginx de-chunks; the gateway spools).
async fn assert_uploads_match(http: &reqwest::Client, gw: &Gateway, nginx: &Nginx) {
    let payload: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let post = |http: &reqwest::Client, url: String| http.post(url).body(payload.clone());
    let [direct, proxied] = both(http, gw, nginx, post, "/cgi-bin/echo").await;
    assert_eq!((direct.0, proxied.0), (200, 200));
    assert!(
        direct.2 == payload && proxied.2 == payload,
        "uploads come back byte-identical"
    );
    let chunked = |http: &reqwest::Client, url: String| {
        let parts: Vec<Result<Vec<u8>, std::io::Error>> =
            payload.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
        http.post(url)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            )))
    };
    let [direct, proxied] = both(http, gw, nginx, chunked, "/cgi-bin/length").await;
    assert_eq!(
        direct, proxied,
        "a chunked upload reaches the CGI with its length either way"
    );
    assert!(
        String::from_utf8_lossy(&direct.2).starts_with(&format!("{} ", payload.len())),
        "{:?}",
        String::from_utf8_lossy(&direct.2)
    );
}
