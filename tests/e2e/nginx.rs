//! A real nginx in front (`proxy_pass`, with `examples/nginx/proxy_pass.conf` exactly): the
//! same requests give the same answers through nginx as directly, and a CGI's answer cannot
//! make nginx serve anything else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_loopback_port, require_root, ChildGuard, Gateway, Jail, Opts};
use crate::http::client;

const TIMEOUT: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/nginx")
        .join(name)
}

/// The gateway's HTTP and FastCGI Unix sockets in `dir`, as `--listen`/`--fastcgi` and
/// nginx's upstreams take them.
fn socket_addresses(dir: &Path) -> (String, String) {
    let address = |name: &str| format!("unix:{}", dir.join(name).display());
    (address("http.sock"), address("fastcgi.sock"))
}

/// The nginx.conf each example runs in: a private nginx (its own prefix, in the foreground,
/// one process) around the example, which is a file of the http block as it would be in
/// /etc/nginx/conf.d/.
const NGINX_FRAME: &str = "daemon off;
master_process off;
pid @PREFIX@/nginx.pid;
error_log stderr warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path @PREFIX@/client_body;
    proxy_temp_path @PREFIX@/proxy;
    fastcgi_temp_path @PREFIX@/fastcgi;
    uwsgi_temp_path @PREFIX@/uwsgi;
    scgi_temp_path @PREFIX@/scgi;
@EXAMPLE@
}
";

/// nginx, started by the test with the example config, stopped by its pid.
pub(crate) struct Nginx {
    _process: ChildGuard,
    pub(crate) addr: SocketAddr,
}

impl Nginx {
    /// `upstream`: the gateway's HTTP or FastCGI address, as the config wants it
    /// (`127.0.0.1:PORT` or `unix:/PATH`).
    fn start(config_name: &str, prefix: &Path, upstream: &str) -> Nginx {
        Nginx::start_edited(config_name, prefix, upstream, |config| config)
    }

    /// Like `start`, with the example config changed by `edit` first.
    pub(crate) fn start_edited(
        config_name: &str,
        prefix: &Path,
        upstream: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Nginx {
        let gateway = upstream;
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("nginx is installed (scripts/test.sh installs it)");
        std::fs::create_dir_all(prefix).expect("nginx prefix");
        let addr: SocketAddr = ([127, 0, 0, 1], free_loopback_port()).into();
        let template = std::fs::read_to_string(example(config_name)).expect("example config");
        let mut example = edit(template);
        // The example as shipped names the package's sockets and a port of its own: ours
        // instead. Each must be there, so a changed example fails here, not in nginx.
        for (shipped, ours) in [
            ("unix:/run/jailgate/http.sock", gateway.to_owned()),
            ("unix:/run/jailgate/fastcgi.sock", gateway.to_owned()),
            ("listen 8081;", format!("listen {addr};")),
            ("listen 8082;", format!("listen {addr};")),
        ] {
            example = example.replace(shipped, &ours);
        }
        assert!(
            example.contains(gateway) && example.contains(&format!("listen {addr};")),
            "{config_name} names no /run/jailgate socket or no `listen 8081;`/`listen 8082;`"
        );
        let config = NGINX_FRAME
            .replace("@EXAMPLE@", &example)
            .replace("@PREFIX@", &prefix.display().to_string());
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

    /// Both example configs, each edited by `edit(its prefix)`, in folders of `dir`: proxy_pass
    /// to `http` and fastcgi_pass to `fastcgi` (the gateway's sockets).
    fn start_both<E: FnOnce(String) -> String>(
        dir: &Path,
        http: &str,
        fastcgi: &str,
        edit: impl Fn(PathBuf) -> E,
    ) -> (Nginx, Nginx) {
        let http_prefix = dir.join("nginx-http");
        let fastcgi_prefix = dir.join("nginx-fastcgi");
        let proxy = Nginx::start_edited(
            "proxy_pass.conf",
            &http_prefix,
            http,
            edit(http_prefix.clone()),
        );
        let fastcgi = Nginx::start_edited(
            "fastcgi_pass.conf",
            &fastcgi_prefix,
            fastcgi,
            edit(fastcgi_prefix.clone()),
        );
        (proxy, fastcgi)
    }

    pub(crate) fn url(&self, path: &str) -> String {
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
    let direct = gw.client(TIMEOUT);
    for (client, url) in [(&direct, gw.url(path)), (http, nginx.url(path))] {
        let response = request(client, url).send().await.expect("response");
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
    let prefix = jail.folder().join("nginx");
    // nginx on this host: a Unix socket, whose peer (nginx, root here) is the front server.
    let socket = format!("unix:{}", prefix.with_extension("sock").display());
    let gw = jail.serve_with(Opts::default(), &["--listen", &socket, "--max-body", "6M"]);
    let nginx = Nginx::start("proxy_pass.conf", &prefix, &socket);
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

    // Through the front server, the client's address is the one nginx saw.
    let [direct, proxied] = both(&http, &gw, &nginx, get, "/cgi-bin/remote").await;
    assert_eq!(
        (direct.2.as_slice(), proxied.2.as_slice()),
        (&b"127.0.0.1 http\n"[..], &b"127.0.0.1 http\n"[..])
    );
}

/// The example's location for uploads, shipped commented out, switched on: every line of it
/// from `#location /cgi-bin/upload/ {` to its `#}`. Panics if the example has no such block.
fn with_upload_location(config: String) -> String {
    let mut inside = false;
    let mut found = false;
    let lines: Vec<String> = config
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("#location /cgi-bin/upload/ {") {
                inside = true;
                found = true;
            }
            if inside {
                if trimmed == "#}" {
                    inside = false;
                }
                return line.replacen('#', "", 1);
            }
            line.to_owned()
        })
        .collect();
    assert!(
        found,
        "the example has no `#location /cgi-bin/upload/` block"
    );
    lines.join("\n")
}

/// A gateway serving `script` as `/cgi-bin/upload/NAME` on a Unix socket (`flag`: `--listen`
/// or `--fastcgi`), behind the example `config` with its upload location on.
fn behind_the_upload_location(
    config: &str,
    flag: &str,
    name: &str,
    script: &str,
) -> (Gateway, Nginx) {
    let jail = Jail::new();
    std::fs::create_dir_all(jail.root().join("cgi-bin/upload")).expect("the upload folder");
    jail.cgi(&format!("upload/{name}"), script);
    let prefix = jail.folder().join("nginx");
    let socket = format!("unix:{}", prefix.with_extension("sock").display());
    let gw = jail.serve_with(Opts::default(), &[flag, &socket]);
    let nginx = Nginx::start_edited(config, &prefix, &socket, with_upload_location);
    (gw, nginx)
}

/// Each example's upload location (`proxy_request_buffering off`, `fastcgi_request_buffering
/// off`) hands the body to the CGI while the client still sends it: the CGI runs before the
/// upload's second part has left the client, and the whole body comes back byte-identical.
/// Under the shipped `/cgi-bin/` location nginx would hold all of it first, and no CGI would
/// start.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_upload_locations_stream_the_body_to_the_cgi() {
    require_root!();
    for (config, flag) in [
        ("proxy_pass.conf", "--listen"),
        ("fastcgi_pass.conf", "--fastcgi"),
    ] {
        let (gw, nginx) = behind_the_upload_location(
            config,
            flag,
            "echo",
            r#"printf 'Content-Type: application/octet-stream\n\n'; exec cat"#,
        );

        let first = vec![b'a'; 1 << 20];
        let rest = vec![b'b'; 3 << 20];
        let (parts, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let part = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(part), receiver))
        });
        let request = client(TIMEOUT)
            .post(nginx.url("/cgi-bin/upload/echo"))
            .header("content-length", first.len() + rest.len())
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let answer = tokio::spawn(async move {
            let response = request.await.expect("response");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("body").to_vec())
        });
        parts.send(first.clone()).await.expect("first part");
        let end = Instant::now() + Duration::from_secs(10);
        while !gw.descendants().iter().any(|process| process.comm == "cat") {
            assert!(
                Instant::now() < end,
                "{config}: no CGI running while the upload waits for its second part"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        parts.send(rest.clone()).await.expect("second part");
        drop(parts);
        let (status, echoed) = answer.await.expect("the request's task");
        assert_eq!(status, 200, "{config}");
        assert!(
            echoed == [first, rest].concat(),
            "{config}: the upload comes back byte-identical"
        );
    }
}

/// A chunked upload through each example's upload location reaches its CGI whole, with a
/// CONTENT_LENGTH. Over FastCGI nginx then sends no CONTENT_LENGTH at all, and the gateway
/// took that for no body: the CGI read nothing, and the client got a 200.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_upload_through_the_upload_locations_reaches_the_cgi() {
    require_root!();
    for (config, flag) in [
        ("proxy_pass.conf", "--listen"),
        ("fastcgi_pass.conf", "--fastcgi"),
    ] {
        let (_gw, nginx) = behind_the_upload_location(
            config,
            flag,
            "count",
            r#"printf 'Content-Type: text/plain\n\n%s %s\n' "$CONTENT_LENGTH" "$(wc -c)""#,
        );
        // In two parts, the second a moment later: nginx cannot know the length when it
        // begins passing the body on.
        let (parts, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let part = receiver.recv().await?;
            Some((Ok::<_, std::io::Error>(part), receiver))
        });
        let request = client(TIMEOUT)
            .post(nginx.url("/cgi-bin/upload/count"))
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let answer = tokio::spawn(async move {
            let response = request.await.expect("response");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        });
        parts.send(vec![b'a'; 60_000]).await.expect("first part");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = parts.send(vec![b'b'; 40_000]).await;
        drop(parts);
        let (status, counted) = answer.await.expect("the request's task");
        assert!(
            sent.is_ok(),
            "{config}: answered ({status}, {counted:?}) before the body was all sent"
        );
        assert_eq!(status, 200, "{config}");
        assert_eq!(counted.trim_end(), "100000 100000", "{config}");
    }
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
    let prefix = jail.folder().join("nginx");
    let fastcgi = format!("unix:{}", prefix.with_extension("sock").display());
    let gw = jail.serve_with(
        Opts::default(),
        &["--fastcgi", &fastcgi, "--max-body", "6M"],
    );
    let nginx = Nginx::start("fastcgi_pass.conf", &prefix, &fastcgi);
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

/// RFC 3875 §4.1.1 AUTH_TYPE and §4.1.11 REMOTE_USER: set when nginx authenticated the
/// request (auth_basic here), through both fronts; a client cannot claim a user itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_at_nginx_reaches_the_cgi_as_remote_user_and_auth_type() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "who",
        r#"printf 'Content-Type: text/plain\n\n%s|%s|%s\n' "${REMOTE_USER-unset}" "${AUTH_TYPE-unset}" "${HTTP_AUTHORIZATION-withheld}""#,
    );
    let dir = jail.folder().to_owned();
    let (http_address, fastcgi_address) = socket_addresses(&dir);
    let gw = jail.serve_with(
        Opts::default(),
        &["--listen", &http_address, "--fastcgi", &fastcgi_address],
    );
    // The example configs with a login in front of /cgi-bin/protected/... only.
    let with_login = |prefix: PathBuf| {
        move |config: String| {
            std::fs::create_dir_all(&prefix).expect("nginx prefix");
            std::fs::write(prefix.join("htpasswd"), "alice:{PLAIN}secret\n").expect("htpasswd");
            config
                .replace(
                    "    location /cgi-bin/ {\n",
                    "    location /cgi-bin/ {\n        auth_basic \"jailgate\";\n            \
                     auth_basic_user_file @PREFIX@/htpasswd;\n",
                )
                // As the examples say: behind auth_basic, the login checked.
                .replace(
                    "        proxy_set_header X-Forwarded-User \"\";\n",
                    "        proxy_set_header X-Forwarded-User $remote_user;\n",
                )
                .replace("        fastcgi_param REMOTE_USER \"\";\n", "")
        }
    };
    let (proxy, fastcgi) = Nginx::start_both(&dir, &http_address, &fastcgi_address, with_login);
    let http = client(TIMEOUT);
    for nginx in [&proxy, &fastcgi] {
        let anonymous = http
            .get(nginx.url("/cgi-bin/who"))
            .send()
            .await
            .expect("response");
        assert_eq!(anonymous.status().as_u16(), 401, "via {}", nginx.addr);
        let logged_in = http
            .get(nginx.url("/cgi-bin/who"))
            .basic_auth("alice", Some("secret"))
            .header("x-forwarded-user", "mallory")
            .send()
            .await
            .expect("response");
        assert_eq!(logged_in.status().as_u16(), 200);
        let body = logged_in.text().await.expect("body");
        assert_eq!(body, "alice|Basic|withheld\n", "via {}", nginx.addr);
    }
    // Both fronts' access-log lines name the client and the user nginx gave, not the Unix
    // socket nginx came in on ("unix - -" over HTTP before).
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let stderr = gw.stderr();
        let logged = stderr
            .lines()
            .filter(|line| line.contains(" access: ") && line.contains("127.0.0.1 - alice ["))
            .count();
        if logged == 2 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{logged} of 2 lines name alice:\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Straight to the gateway, nobody logged in: neither variable is set.
    let direct = gw
        .client(TIMEOUT)
        .get(gw.url("/cgi-bin/who"))
        .send()
        .await
        .expect("response");
    assert_eq!(direct.text().await.expect("body"), "unset|unset|withheld\n");
}

/// Through the example configs as shipped (no login checked), a client that sends Basic
/// credentials names no user: nginx fills `$remote_user` from any such header, checked or
/// not, and the examples passed it on as REMOTE_USER, so any client could be `admin`.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_names_no_user_through_the_examples() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "who",
        r#"printf 'Content-Type: text/plain\n\n%s|%s\n' "${REMOTE_USER-unset}" "${AUTH_TYPE-unset}""#,
    );
    let dir = jail.folder().to_owned();
    let (http_address, fastcgi_address) = socket_addresses(&dir);
    let _gw = jail.serve_with(
        Opts::default(),
        &["--listen", &http_address, "--fastcgi", &fastcgi_address],
    );
    let (proxy, fastcgi) =
        Nginx::start_both(&dir, &http_address, &fastcgi_address, |_| |config| config);
    let http = client(TIMEOUT);
    for nginx in [&proxy, &fastcgi] {
        let claimed = http
            .get(nginx.url("/cgi-bin/who"))
            .basic_auth("admin", Some("anything"))
            .header("x-forwarded-user", "mallory")
            .send()
            .await
            .expect("response");
        assert_eq!(claimed.status().as_u16(), 200, "via {}", nginx.addr);
        let body = claimed.text().await.expect("body");
        assert_eq!(body, "unset|unset\n", "via {}", nginx.addr);
    }
}

/// Through either example, a client cannot choose the CGI's SERVER_NAME with its own
/// X-Forwarded-Host, nor hand it a Host that names no host; and a CGI's local redirect to a
/// location nginx refuses is passed to nginx as a client redirect, so that the client meets
/// nginx's rule for that path instead of the gateway running it (directly, the gateway follows
/// local redirects itself: `conformance::local_redirect_is_served_by_the_gateway`).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_steer_the_gateway_past_nginx() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "name",
        r#"printf 'Content-Type: text/plain\n\n%s|%s\n' "$SERVER_NAME" "$SERVER_PORT""#,
    );
    jail.cgi("redir", r"printf 'Location: /cgi-bin/secret\n\n'");
    jail.cgi(
        "secret",
        r"printf 'Content-Type: text/plain\n\nthe secret\n'",
    );
    let dir = jail.folder().to_owned();
    let (http_address, fastcgi_address) = socket_addresses(&dir);
    let _gw = jail.serve_with(
        Opts::default(),
        &["--listen", &http_address, "--fastcgi", &fastcgi_address],
    );
    let deny_secret = |_| {
        |config: String| {
            config.replace(
                "    location /cgi-bin/ {\n",
                "    location = /cgi-bin/secret {\n        deny all;\n    }\n    location /cgi-bin/ {\n",
            )
        }
    };
    let (proxy, fastcgi) = Nginx::start_both(&dir, &http_address, &fastcgi_address, deny_secret);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    for nginx in [&proxy, &fastcgi] {
        let forwarded = http
            .get(nginx.url("/cgi-bin/name"))
            .header("host", "good.example")
            .header("x-forwarded-host", "evil.example:4443")
            .send()
            .await
            .expect("response");
        assert_eq!(forwarded.status().as_u16(), 200, "via {}", nginx.addr);
        let body = forwarded.text().await.expect("body");
        let (name, port) = body.trim_end().split_once('|').expect("NAME|PORT");
        assert_eq!(name, "good.example", "via {}", nginx.addr);
        assert_ne!(port, "4443", "via {}", nginx.addr);

        let odd = http
            .get(nginx.url("/cgi-bin/name"))
            .header("host", "a'b;$(id)")
            .send()
            .await
            .expect("response");
        assert_eq!(odd.status().as_u16(), 200, "via {}", nginx.addr);
        let body = odd.text().await.expect("body");
        let name = body.split('|').next().unwrap_or_default();
        assert!(
            name == "localhost" || name == "127.0.0.1",
            "via {}: SERVER_NAME {name:?} from a Host that names no host",
            nginx.addr
        );

        let redirect = http
            .get(nginx.url("/cgi-bin/redir"))
            .send()
            .await
            .expect("response");
        assert_eq!(redirect.status().as_u16(), 302, "via {}", nginx.addr);
        assert_eq!(
            header(&redirect, "location"),
            Some("/cgi-bin/secret"),
            "via {}",
            nginx.addr
        );
        let followed = http
            .get(nginx.url("/cgi-bin/secret"))
            .send()
            .await
            .expect("response");
        assert_eq!(followed.status().as_u16(), 403, "via {}", nginx.addr);
    }
}

/// What every CGI of [`front_server_headers_reach_no_front_server_unless_allowed`] answers:
/// fields nginx (X-Accel-Redirect) and others (X-Sendfile) would act on, and one of its own.
const FRONT_SERVER_ANSWER: &str = r"printf 'Content-Type: text/plain\nX-Accel-Redirect: /internal/secret\nX-Sendfile: /etc/passwd\nX-Custom: 1\n\nthe CGI answer\n'";

/// What nginx's internal location holds: served only if nginx honours a CGI's redirect.
const INTERNAL_SECRET: &str = "SECRET of the front server\n";

/// The example config with an `internal` location (only an upstream's X-Accel-Redirect can
/// reach it) serving [`INTERNAL_SECRET`] from the nginx prefix, as a real site's private
/// downloads would be.
fn with_internal_location(prefix: PathBuf) -> impl FnOnce(String) -> String {
    move |config: String| {
        std::fs::create_dir_all(prefix.join("internal")).expect("internal folder");
        std::fs::write(prefix.join("internal/secret"), INTERNAL_SECRET).expect("the secret");
        config.replace(
            "    location /cgi-bin/ {\n",
            "        location /internal/ {\n            internal;\n            \
             alias @PREFIX@/internal/;\n        }\n        location /cgi-bin/ {\n",
        )
    }
}

/// A header of `response`, as text.
fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A CGI cannot make nginx serve an internal location (X-Accel-Redirect) or a file
/// (X-Sendfile): those fields are dropped from its answer through proxy_pass, fastcgi_pass and
/// directly, while its own fields and body pass, and the drop is logged once per script.
/// `--allow-front-server-headers /cgi-bin/download` lets them through for that script alone,
/// on whole segments (not for /cgi-bin/downloadx), and nginx then serves the internal
/// location: the test sees a redirect when one is honoured.
#[tokio::test(flavor = "multi_thread")]
async fn front_server_headers_reach_no_front_server_unless_allowed() {
    require_root!();
    let jail = Jail::new();
    for name in ["accel", "download", "downloadx"] {
        jail.cgi(name, FRONT_SERVER_ANSWER);
    }
    let dir = jail.folder().to_owned();
    let (http_address, fastcgi_address) = socket_addresses(&dir);
    let gw = jail.serve_with(
        Opts::default(),
        &[
            "--listen",
            &http_address,
            "--fastcgi",
            &fastcgi_address,
            "--allow-front-server-headers",
            "/cgi-bin/download",
        ],
    );
    let (proxy, fastcgi) = Nginx::start_both(
        &dir,
        &http_address,
        &fastcgi_address,
        with_internal_location,
    );
    let http = client(TIMEOUT);
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.expect("response") }
    };
    for nginx in [&proxy, &fastcgi] {
        let via = format!("via {}", nginx.addr);
        // Not for clients to ask for: the location is internal.
        let asked = get(nginx.url("/internal/secret")).await;
        assert_eq!(asked.status().as_u16(), 404, "{via}");
        for script in ["/cgi-bin/accel", "/cgi-bin/downloadx"] {
            let response = get(nginx.url(script)).await;
            let status = response.status().as_u16();
            let fields = [
                header(&response, "x-accel-redirect").map(str::to_owned),
                header(&response, "x-sendfile").map(str::to_owned),
                header(&response, "x-custom").map(str::to_owned),
            ];
            let body = response.text().await.expect("body");
            assert_eq!(
                (status, body.as_str()),
                (200, "the CGI answer\n"),
                "{script} {via}: the CGI's own answer, not the internal location"
            );
            assert_eq!(fields, [None, None, Some("1".to_owned())], "{script} {via}");
        }
        let allowed = get(nginx.url("/cgi-bin/download")).await;
        assert_eq!(allowed.status().as_u16(), 200, "{via}");
        let body = allowed.text().await.expect("body");
        assert_eq!(
            body, INTERNAL_SECRET,
            "the allowed redirect is honoured {via}"
        );
    }

    // Directly, the same fields are gone from the gateway's own answer; allowed, they are there.
    let direct_client = gw.client(TIMEOUT);
    let get = |url: String| {
        let http = direct_client.clone();
        async move { http.get(url).send().await.expect("response") }
    };
    let direct = get(gw.url("/cgi-bin/accel")).await;
    assert_eq!(direct.status().as_u16(), 200);
    assert_eq!(header(&direct, "x-accel-redirect"), None);
    assert_eq!(header(&direct, "x-sendfile"), None);
    assert_eq!(header(&direct, "x-custom"), Some("1"));
    assert_eq!(direct.text().await.expect("body"), "the CGI answer\n");
    let allowed = get(gw.url("/cgi-bin/download")).await;
    assert_eq!(
        (
            header(&allowed, "x-accel-redirect"),
            header(&allowed, "x-sendfile")
        ),
        (Some("/internal/secret"), Some("/etc/passwd"))
    );

    // Three answers of /cgi-bin/accel lost them (through each nginx and directly): one warning.
    let stderr = gw.stderr();
    let warnings = |script: &str| {
        let marker = format!("{script}: front-server header fields dropped");
        stderr.lines().filter(|line| line.contains(&marker)).count()
    };
    assert_eq!(warnings("/cgi-bin/accel"), 1, "{stderr}");
    assert_eq!(warnings("/cgi-bin/downloadx"), 1, "{stderr}");
    assert_eq!(warnings("/cgi-bin/download"), 0, "{stderr}");
}

/// Shell CGIs on a static busybox (the busybox profile: no shared library in the jail) through
/// nginx's fastcgi_pass: PATH_INFO, the query, a POST read with busybox tools, the status.
#[tokio::test(flavor = "multi_thread")]
async fn busybox_shell_cgis_through_fastcgi_pass() {
    require_root!();
    let jail = Jail::with_init_args(&["--profile", "busybox"]);
    jail.cgi(
        "info",
        r#"printf 'Content-Type: text/plain\n\n%s|%s|%s\n' "$PATH_INFO" "$QUERY_STRING" "$(echo "$REQUEST_METHOD" | tr A-Z a-z)""#,
    );
    jail.cgi(
        "count",
        r#"printf 'Status: 201 Created\nContent-Type: text/plain\n\n'; head -c "$CONTENT_LENGTH" | wc -c | tr -d ' '"#,
    );
    let dir = jail.folder().to_owned();
    let fastcgi = format!("unix:{}", dir.join("fastcgi.sock").display());
    let gw = jail.serve_with(Opts::default(), &["--fastcgi", &fastcgi]);
    let nginx = Nginx::start("fastcgi_pass.conf", &dir.join("nginx"), &fastcgi);
    let http = client(TIMEOUT);
    let get = |http: &reqwest::Client, url: String| http.get(url);
    let [direct, proxied] = both(&http, &gw, &nginx, get, "/cgi-bin/info/a/b?x=1").await;
    assert_eq!(direct, proxied);
    assert_eq!(proxied.2, b"/a/b|x=1|get\n");
    let post = |http: &reqwest::Client, url: String| http.post(url).body(vec![b'x'; 300_000]);
    let [direct, proxied] = both(&http, &gw, &nginx, post, "/cgi-bin/count").await;
    assert_eq!(direct, proxied);
    assert_eq!((proxied.0, proxied.2.as_slice()), (201, &b"300000\n"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_sockets_for_both_fronts_behind_nginx() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "where",
        r#"printf 'Content-Type: text/plain\n\n%s|%s|%s|%s\n' "$REMOTE_ADDR" "$SERVER_NAME" "$SERVER_PORT" "$PATH_INFO""#,
    );
    let dir = jail.folder().to_owned();
    let http_socket = dir.join("http.sock");
    let fastcgi_socket = dir.join("fastcgi.sock");
    let daemon_gid = nix::unistd::Group::from_name("daemon")
        .expect("group database")
        .expect("a daemon group")
        .gid
        .as_raw();
    let mut gw = jail.serve_with(
        Opts::default(),
        &[
            "--listen",
            &format!("unix:{}", http_socket.display()),
            "--fastcgi",
            &format!("unix:{}", fastcgi_socket.display()),
            "--socket-mode",
            "0660",
            "--socket-group",
            "daemon",
        ],
    );
    assert_eq!(gw.unix.as_deref(), Some(http_socket.as_path()));
    for socket in [&http_socket, &fastcgi_socket] {
        let metadata = std::fs::metadata(socket).expect("the socket file exists");
        assert_eq!(
            (metadata.permissions().mode() & 0o777, metadata.gid()),
            (0o660, daemon_gid),
            "{}",
            socket.display()
        );
    }

    // Directly: the peer is local, nothing was forwarded, Host names no port.
    let direct = unix_get(&http_socket, "/cgi-bin/where/x");
    assert!(direct.starts_with("HTTP/1.0 200"), "{direct}");
    assert!(
        direct.ends_with("\r\n\r\n127.0.0.1|localhost|80|/x\n"),
        "{direct}"
    );

    // Through nginx, over each socket: the client nginx saw, the host and port it was asked.
    let http = client(TIMEOUT);
    let proxy = Nginx::start(
        "proxy_pass.conf",
        &dir.join("nginx-http"),
        &format!("unix:{}", http_socket.display()),
    );
    let fastcgi = Nginx::start(
        "fastcgi_pass.conf",
        &dir.join("nginx-fastcgi"),
        &format!("unix:{}", fastcgi_socket.display()),
    );
    for nginx in [&proxy, &fastcgi] {
        let response = http
            .get(nginx.url("/cgi-bin/where/x"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.expect("body");
        let port = nginx.addr.port();
        assert_eq!(
            body,
            format!("127.0.0.1|127.0.0.1|{port}|/x\n"),
            "via {}",
            nginx.addr
        );
    }
    drop((proxy, fastcgi));

    // A stop removes both socket files.
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("the gateway stops");
    assert!(status.success(), "{status:?}\n{}", gw.stderr());
    assert!(!http_socket.exists() && !fastcgi_socket.exists());
}

/// An HTTP/1.0 GET over a Unix socket (so the body is not chunked and the connection closes
/// after it), the whole answer as text.
fn unix_get(socket: &Path, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
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
/// (nginx de-chunks; the gateway spools). One over `--max-body 6M` gets 413 either way, not
/// a 502 of nginx's: the gateway answers before reading the body, and must not close the
/// connection under nginx while nginx still sends it.
async fn assert_uploads_match(http: &reqwest::Client, gw: &Gateway, nginx: &Nginx) {
    let too_large = vec![b'x'; 16 << 20];
    let post = |http: &reqwest::Client, url: String| http.post(url).body(too_large.clone());
    for _ in 0..3 {
        let start = Instant::now();
        let [direct, proxied] = both(http, gw, nginx, post, "/cgi-bin/echo").await;
        assert_eq!(
            (direct.0, proxied.0),
            (413, 413),
            "16 MiB over --max-body 6M"
        );
        // Neither side waited for the other to close first.
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "the 413s took {took:?}");
    }

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
