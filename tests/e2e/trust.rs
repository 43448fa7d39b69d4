//! Who may speak as the front server (issue 13.1). The front server's word sets `REMOTE_USER`
//! (X-Forwarded-User over HTTP, the `REMOTE_USER` param over FastCGI) and the client's address,
//! so only what no local process can fake counts: over TCP a `--trusted-proxy` on another
//! host, over a Unix socket root or a process of `--trusted-group` (SO_PEERCRED). Attacked
//! here as a CGI with `--cgi-network` and as another local user, with a static C program
//! (`attacks/front_server.c`) that sends a request it is given and prints the answer.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::escape::{assert_hello, attack, value, HELLO};
use crate::fastcgi::fcgi;
use crate::harness::{
    foreign_network, host_addresses, one_worker, require_root, run_bounded, Jail,
};
use crate::http::client;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Who the CGI thinks asked: `REMOTE_USER|REMOTE_ADDR`.
const WHO: &str =
    r#"printf 'Content-Type: text/plain\n\n%s|%s\n' "${REMOTE_USER-unset}" "$REMOTE_ADDR""#;
/// `nobody` and `nogroup` on Debian: a local user with no business with the gateway.
const NOBODY: u32 = 65534;
/// The front server's group in these tests (`--trusted-group`): a number no account uses.
const FRONT_GROUP: u32 = 64_999;

/// An HTTP request that claims, as a front server would, that `admin` logged in at
/// 203.0.113.9.
fn forwarded_request() -> Vec<u8> {
    b"GET /cgi-bin/who HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-User: admin\r\n\
      X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
        .to_vec()
}

/// A FastCGI request for `/cgi-bin/who`, with nginx's params and `REMOTE_USER=admin`.
fn fastcgi_request() -> Vec<u8> {
    let params: Vec<(&str, &str)> = crate::fastcgi::NGINX_PARAMS
        .iter()
        .map(|&(name, value)| match name {
            "SCRIPT_NAME" => (name, "/cgi-bin/who"),
            "REQUEST_URI" => (name, "/cgi-bin/who"),
            "QUERY_STRING" => (name, ""),
            "REMOTE_ADDR" => (name, "203.0.113.9"),
            _ => (name, value),
        })
        .chain([("REMOTE_USER", "admin")])
        .collect();
    fcgi::request(&params, b"")
}

/// What `front_server` printed after `answer:`.
fn answer(report: &str) -> &str {
    report
        .split_once("answer:\n")
        .map_or("", |(_, answer)| answer)
}

/// Trusting this host over TCP is refused at start, with the fix in the message: any local
/// process (another user's, a CGI with `--cgi-network`) could connect from a local address and
/// be believed. So is FastCGI over TCP without a `--trusted-proxy` naming another host.
#[test]
fn trusting_this_host_over_tcp_is_refused_at_start() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let mut local: Vec<String> = ["127.0.0.1", "::1", "127.0.0.0/8", "127.9.9.9", "0.0.0.0/0"]
        .map(str::to_owned)
        .to_vec();
    local.extend(host_addresses().iter().map(|ip| ip.to_string()));
    for proxy in &local {
        let refused = jail.start_refused(&["--trusted-proxy", proxy]);
        assert!(!refused.status.success(), "--trusted-proxy {proxy}");
        assert!(
            refused.stderr.contains("an address of this host")
                && refused.stderr.contains("--listen unix:"),
            "--trusted-proxy {proxy}: the message names the cause and the fix:\n{}",
            refused.stderr
        );
    }
    let refused = jail.start_refused(&["--fastcgi", "127.0.0.1:0"]);
    assert!(
        !refused.status.success()
            && refused.stderr.contains("--fastcgi unix:")
            && refused.stderr.contains("--trusted-proxy"),
        "FastCGI over TCP with no front server named:\n{}",
        refused.stderr
    );
}

/// A CGI with `--cgi-network` calls the gateway's own listeners on 127.0.0.1 as the front
/// server would: over HTTP with X-Forwarded-User and X-Forwarded-For, over FastCGI with
/// `REMOTE_USER`. It is a client like any other: nobody logged in, its own address, and the
/// FastCGI connection is closed unread (no `--trusted-proxy` is this host). A request beside
/// it is served as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_with_network_cannot_speak_as_the_front_server() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi("who", WHO);
    jail.install("front_server", &attack("front_server"), 0o755);
    let fastcgi = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let gw = jail.serve_with(
        one_worker(),
        &[
            "--cgi-network",
            "--fastcgi",
            &fastcgi.to_string(),
            "--trusted-proxy",
            &foreign_network().0,
        ],
    );
    let http = client(TIMEOUT);
    let attack = |port: u16, request: Vec<u8>| {
        let http = http.clone();
        let url = gw.url(&format!("/cgi-bin/front_server?port={port}"));
        async move {
            let response = http.post(url).body(request).send().await.expect("response");
            assert_eq!(response.status().as_u16(), 200);
            response.text().await.expect("body")
        }
    };

    let over_http = attack(gw.addr.port(), forwarded_request()).await;
    assert_eq!(value(&over_http, "connect"), "ok", "{over_http}");
    assert!(
        answer(&over_http).contains("unset|127.0.0.1\n"),
        "a CGI passed for the front server over HTTP:\n{over_http}"
    );

    let over_fastcgi = attack(fastcgi.port(), fastcgi_request()).await;
    assert_eq!(value(&over_fastcgi, "connect"), "ok", "{over_fastcgi}");
    assert_eq!(
        value(&over_fastcgi, "answer_bytes"),
        "0",
        "a CGI was answered over FastCGI:\n{over_fastcgi}"
    );
    assert!(!over_fastcgi.contains("admin|"), "{over_fastcgi}");
    assert!(
        gw.stderr().contains("fastcgi connection refused"),
        "the refusal is logged:\n{}",
        gw.stderr()
    );
    assert_hello(&gw).await;
}

/// Another local user reaches both Unix sockets (mode 0666 here, a mistake the peer check
/// survives) and claims to be the front server: over HTTP it is a client (no REMOTE_USER, its
/// own address); over FastCGI it is closed unread. The same program run with the front
/// server's group (`--trusted-group`) is believed: the check is the group, not the socket.
#[test]
fn a_local_user_cannot_speak_as_the_front_server_on_a_unix_socket() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("who", WHO);
    let dir = jail.folder().to_owned();
    // Other users may pass through the folder to the sockets and files in it, nothing more.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let http_socket = dir.join("http.sock");
    let fastcgi_socket = dir.join("fastcgi.sock");
    let program = dir.join("front_server");
    std::fs::copy(attack("front_server"), &program).expect("copy the attack");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let http_request = dir.join("http.request");
    let fastcgi_request_file = dir.join("fastcgi.request");
    for (path, bytes) in [
        (&http_request, forwarded_request()),
        (&fastcgi_request_file, fastcgi_request()),
    ] {
        std::fs::write(path, bytes).expect("write a request");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let _gw = jail.serve_with(
        one_worker(),
        &[
            "--listen",
            &format!("unix:{}", http_socket.display()),
            "--fastcgi",
            &format!("unix:{}", fastcgi_socket.display()),
            "--socket-mode",
            "0666",
            "--trusted-group",
            &FRONT_GROUP.to_string(),
        ],
    );
    let send_as = |gid: u32, socket: &Path, request: &Path| {
        let mut command = Command::new(&program);
        command
            .arg(format!("unix:{}", socket.display()))
            .arg(request)
            .uid(NOBODY)
            .gid(gid);
        let done = run_bounded(&mut command, TIMEOUT);
        assert!(
            done.status.success(),
            "{}\n{}\n{}",
            done.status,
            done.stdout,
            done.stderr
        );
        assert_eq!(value(&done.stdout, "connect"), "ok", "{}", done.stdout);
        done.stdout
    };

    let http = send_as(NOBODY, &http_socket, &http_request);
    assert!(
        answer(&http).contains("unset|127.0.0.1\n"),
        "another local user passed for the front server over HTTP:\n{http}"
    );
    let fastcgi = send_as(NOBODY, &fastcgi_socket, &fastcgi_request_file);
    assert_eq!(
        value(&fastcgi, "answer_bytes"),
        "0",
        "another local user was answered over FastCGI:\n{fastcgi}"
    );

    // The control: a process of the front server's group is believed, on both sockets.
    let http = send_as(FRONT_GROUP, &http_socket, &http_request);
    assert!(answer(&http).contains("admin|203.0.113.9\n"), "{http}");
    let fastcgi = send_as(FRONT_GROUP, &fastcgi_socket, &fastcgi_request_file);
    assert!(
        answer(&fastcgi).contains("admin|203.0.113.9\n"),
        "{fastcgi}"
    );
}
