//! Request → the RFC 3875 meta-variables, as the complete environment of the CGI. Nothing of
//! the gateway's own environment is passed on: the CGI sees these and a fixed PATH, no more.

use std::net::SocketAddr;

use http::request::Parts;
use http::{header, HeaderName, Version};

use crate::router::Route;

/// The only PATH a CGI gets: the jail's program folders.
pub const CGI_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
pub const SERVER_SOFTWARE: &str = concat!("jailgate/", env!("CARGO_PKG_VERSION"));

/// Where the request came from and arrived at.
#[derive(Debug, Clone, Copy)]
pub enum Connection {
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// A Unix socket (`--listen unix:/path`): the peer is a local front server, and which
    /// one the socket file's mode decides. Its X-Forwarded-* headers are believed, as a
    /// trusted proxy's.
    Unix,
}

/// REMOTE_ADDR over a Unix socket when the front server sends no X-Forwarded-For: the client
/// is a process on this machine.
const UNIX_PEER_ADDRESS: &str = "127.0.0.1";

/// Request headers never exported as `HTTP_*`.
fn is_withheld(name: &HeaderName) -> bool {
    // Content-* travel as CONTENT_TYPE/CONTENT_LENGTH. `Proxy` would become HTTP_PROXY, which
    // many HTTP libraries take as their proxy setting (httpoxy, CVE-2016-5385). Credentials are
    // for the server, not every script (Apache's default too). Hop-by-hop headers describe
    // this connection, not the request.
    matches!(
        name.as_str(),
        "content-type"
            | "content-length"
            | "proxy"
            | "authorization"
            | "proxy-authorization"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
    )
}

/// What, beyond the request itself, decides a CGI's environment.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EnvPolicy {
    /// Export `Authorization` as HTTP_AUTHORIZATION (`--pass-authorization`).
    pub pass_authorization: bool,
    /// Peers whose X-Forwarded-For/-Proto/-Host are believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Fixed variables for every CGI (`--env`); never override a meta-variable.
    pub fixed: Vec<(String, Vec<u8>)>,
}

/// Names `--env` may not set: the meta-variables and their extensions (RFC 3875 §4.1).
pub fn is_meta_variable(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "DOCUMENT_ROOT",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "REMOTE_PORT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "REQUEST_SCHEME",
        "REQUEST_URI",
        "SCRIPT_FILENAME",
        "SCRIPT_NAME",
        "SERVER_ADDR",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    ];
    NAMES.contains(&name) || name.starts_with("HTTP_")
}

/// The client as the CGI should see it: the peer, or, behind a trusted proxy, whom the proxy
/// says it serves.
struct Client<'a> {
    address: String,
    port: Option<u16>,
    https: bool,
    host: Option<&'a str>,
    /// Whom the proxy authenticated (X-Forwarded-User).
    user: Option<&'a str>,
}

fn client<'a>(request: &'a Parts, connection: Connection, policy: &EnvPolicy) -> Client<'a> {
    let trusted = |ip: std::net::IpAddr| policy.trusted_proxies.iter().any(|net| net.contains(&ip));
    let (direct, peer_trusted) = match connection {
        Connection::Tcp { remote, .. } => {
            let peer = remote.ip().to_canonical();
            let direct = Client {
                address: peer.to_string(),
                port: Some(remote.port()),
                https: false,
                host: None,
                user: None,
            };
            (direct, trusted(peer))
        }
        Connection::Unix => {
            let direct = Client {
                address: UNIX_PEER_ADDRESS.to_owned(),
                port: None,
                https: false,
                host: None,
                user: None,
            };
            (direct, true)
        }
    };
    if !peer_trusted {
        return direct;
    }
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    // The right-most address that is not itself a trusted proxy is the client: everything left
    // of it was written by the client and proves nothing.
    let forwarded_for = header("x-forwarded-for").and_then(|list| {
        list.rsplit(',')
            .filter_map(|part| part.trim().parse::<std::net::IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .find(|ip| !trusted(*ip))
    });
    Client {
        address: forwarded_for.map_or(direct.address, |ip| ip.to_string()),
        port: if forwarded_for.is_some() {
            None
        } else {
            direct.port
        },
        https: header("x-forwarded-proto")
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")),
        host: header("x-forwarded-host").map(|host| host.split(',').next().unwrap_or(host).trim()),
        user: header("x-forwarded-user")
            .map(str::trim)
            .filter(|user| !user.is_empty()),
    }
}

/// Builds the CGI's whole environment, `NAME=value` each. `content_length` is the length of
/// the body the CGI will read, if there is one (RFC 3875 §4.1.2: unset without a body).
pub fn meta_variables(
    request: &Parts,
    route: &Route,
    connection: Connection,
    content_length: Option<u64>,
    policy: &EnvPolicy,
) -> Vec<Vec<u8>> {
    let client = client(request, connection, policy);
    let mut env = Vec::with_capacity(28 + request.headers.keys_len() + policy.fixed.len());
    push_gateway_variables(&mut env);
    let mut set = |name: &str, value: &[u8]| push_variable(&mut env, name.as_bytes(), value);
    set("SERVER_PROTOCOL", protocol_name(request.version).as_bytes());
    let host = requested_host(request, client.host);
    match connection {
        Connection::Tcp { local, .. } => {
            let name = host.map_or_else(|| local.ip().to_string(), |(name, _)| name.to_owned());
            set("SERVER_NAME", name.as_bytes());
            set(
                "SERVER_ADDR",
                local.ip().to_canonical().to_string().as_bytes(),
            );
            set("SERVER_PORT", local.port().to_string().as_bytes());
        }
        Connection::Unix => {
            // No address of ours the client used: the port is the one it asked for (the
            // front server's), else the scheme's.
            set(
                "SERVER_NAME",
                host.map_or("localhost", |(name, _)| name).as_bytes(),
            );
            let default_port = if client.https { 443 } else { 80 };
            let port = host.and_then(|(_, port)| port).unwrap_or(default_port);
            set("SERVER_PORT", port.to_string().as_bytes());
        }
    }
    set("REQUEST_METHOD", request.method.as_str().as_bytes());
    set("REQUEST_URI", request_uri(request).as_bytes());
    set(
        "REQUEST_SCHEME",
        if client.https { b"https" } else { b"http" },
    );
    if client.https {
        set("HTTPS", b"on");
    }
    // SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO and PATH_TRANSLATED depend on which segments
    // of the path name a file: the worker sets them, from inside the jail.
    set("QUERY_STRING", route.query_string.as_bytes());
    set("REMOTE_ADDR", client.address.as_bytes());
    if let Some(port) = client.port {
        set("REMOTE_PORT", port.to_string().as_bytes());
    }
    if let Some(user) = client.user {
        // §4.1.11 and §4.1.1: set only when the front server authenticated the request.
        set("REMOTE_USER", user.as_bytes());
        if let Some(scheme) = auth_scheme(request.headers.get(header::AUTHORIZATION)) {
            set("AUTH_TYPE", scheme);
        }
    }
    if let Some(length) = content_length.filter(|&length| length > 0) {
        set("CONTENT_LENGTH", length.to_string().as_bytes());
    }
    if let Some(content_type) = request.headers.get(header::CONTENT_TYPE) {
        set("CONTENT_TYPE", content_type.as_bytes());
    }
    for name in request.headers.keys() {
        let exported =
            !is_withheld(name) || (policy.pass_authorization && name == header::AUTHORIZATION);
        if !exported
            || !name
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            // A name with `_` would collide with the `-` form after mapping (X_Foo vs X-Foo).
            continue;
        }
        let variable = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        // Repeated headers are folded into one value (RFC 9110 §5.3); cookies use `; `.
        let separator: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
        let mut value = Vec::new();
        for (i, part) in request.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(separator);
            }
            value.extend_from_slice(part.as_bytes());
        }
        set(&variable, &value);
    }
    push_fixed_variables(&mut env, policy);
    env
}

/// The auth-scheme token of an Authorization header (`Basic`, `Digest`, ...): AUTH_TYPE.
pub fn auth_scheme(authorization: Option<&http::HeaderValue>) -> Option<&[u8]> {
    let value = authorization?.as_bytes();
    let scheme = value.split(|&b| b == b' ').next()?;
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (!scheme.is_empty() && scheme.iter().all(token)).then_some(scheme)
}

/// Appends `NAME=value` to a CGI environment.
pub fn push_variable(env: &mut Vec<Vec<u8>>, name: &[u8], value: &[u8]) {
    let mut variable = Vec::with_capacity(name.len() + 1 + value.len());
    variable.extend_from_slice(name);
    variable.push(b'=');
    variable.extend_from_slice(value);
    env.push(variable);
}

/// What every CGI gets from the gateway itself, whichever front the request came through.
pub fn push_gateway_variables(env: &mut Vec<Vec<u8>>) {
    push_variable(env, b"PATH", CGI_PATH.as_bytes());
    push_variable(env, b"GATEWAY_INTERFACE", b"CGI/1.1");
    push_variable(env, b"SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());
    // URL paths map one to one onto the jail: /cgi-bin/x is the jail's /cgi-bin/x. So the
    // jail's root is the document root, and PATH_TRANSLATED (§4.1.6) is PATH_INFO under it.
    push_variable(env, b"DOCUMENT_ROOT", b"/");
}

/// The `--env` variables, last. They are refused at start-up if they name a meta-variable;
/// checking again keeps a request header from ever being shadowed.
pub fn push_fixed_variables(env: &mut Vec<Vec<u8>>, policy: &EnvPolicy) {
    for (name, value) in &policy.fixed {
        if !is_meta_variable(name) {
            push_variable(env, name.as_bytes(), value);
        }
    }
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The host name the client asked for (RFC 3875 §4.1.14) and the port if it named one: from a
/// trusted proxy's X-Forwarded-Host, an absolute-form target, or Host.
fn requested_host<'a>(
    request: &'a Parts,
    forwarded_host: Option<&'a str>,
) -> Option<(&'a str, Option<u16>)> {
    let host = forwarded_host
        .or_else(|| request.uri.authority().map(|authority| authority.as_str()))
        .or_else(|| {
            request
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })?;
    let (name, port) = split_port(host);
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
    valid.then_some((name, port))
}

/// `name:port` → (name, port); `[v6]:port` keeps its brackets, as in a URL.
pub fn split_port(host: &str) -> (&str, Option<u16>) {
    let name_end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |end| end + 1)
    } else {
        host.rfind(':').unwrap_or(host.len())
    };
    let (name, rest) = host.split_at(name_end);
    let port = rest.strip_prefix(':').and_then(|port| port.parse().ok());
    (name, port)
}

fn request_uri(request: &Parts) -> String {
    request.uri.path_and_query().map_or_else(
        || request.uri.path().to_owned(),
        |pq| pq.as_str().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::router::route;
    use std::collections::HashMap;

    fn env_of(request: http::Request<()>) -> HashMap<String, String> {
        env_with(request, &EnvPolicy::default(), "[::ffff:10.1.2.3]:5555")
    }

    fn env_with(
        request: http::Request<()>,
        policy: &EnvPolicy,
        peer: &str,
    ) -> HashMap<String, String> {
        let (parts, ()) = request.into_parts();
        let length = parts
            .headers
            .get("content-length")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let route = route(parts.uri.path(), parts.uri.query()).unwrap();
        let connection = if peer == "unix" {
            Connection::Unix
        } else {
            Connection::Tcp {
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: peer.parse().unwrap(),
            }
        };
        meta_variables(&parts, &route, connection, length, policy)
            .into_iter()
            .map(|v| {
                let v = String::from_utf8(v).unwrap();
                let (name, value) = v.split_once('=').unwrap();
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[test]
    fn rfc3875_variables_are_set() {
        let env = env_of(
            http::Request::post("/cgi-bin/form.sh/a%20b?q=%41&x")
                .header("host", "example.org:8080")
                .header("content-type", "text/plain")
                .header("content-length", "5")
                .header("x-thing", "1")
                .header("x-thing", "2")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(())
                .unwrap(),
        );
        let expect = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "example.org"),
            ("SERVER_PORT", "8080"),
            ("REQUEST_METHOD", "POST"),
            ("QUERY_STRING", "q=%41&x"),
            ("REQUEST_URI", "/cgi-bin/form.sh/a%20b?q=%41&x"),
            ("REMOTE_ADDR", "10.1.2.3"),
            ("REMOTE_PORT", "5555"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "5"),
            ("HTTP_X_THING", "1, 2"),
            ("HTTP_COOKIE", "a=1; b=2"),
            ("HTTP_HOST", "example.org:8080"),
            ("PATH", CGI_PATH),
        ];
        for (name, value) in expect {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
    }

    #[test]
    fn dangerous_and_ambiguous_headers_are_withheld() {
        let env = env_of(
            http::Request::get("/cgi-bin/env")
                .header("proxy", "http://evil:1")
                .header("authorization", "Basic eDp5")
                .header("x_under", "1")
                .header("connection", "keep-alive")
                .body(())
                .unwrap(),
        );
        for name in [
            "HTTP_PROXY",
            "HTTP_AUTHORIZATION",
            "HTTP_X_UNDER",
            "HTTP_CONNECTION",
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
        ] {
            assert!(!env.contains_key(name), "{name} must not be set");
        }
        assert_eq!(env["SERVER_NAME"], "127.0.0.1");
        assert_eq!(env["QUERY_STRING"], "");
    }

    #[test]
    fn extensions_follow_the_jail_mapping_and_path_variables_are_the_workers() {
        let env = env_of(http::Request::get("/cgi-bin/x/a/b").body(()).unwrap());
        assert_eq!(env["DOCUMENT_ROOT"], "/");
        assert_eq!(env["REQUEST_SCHEME"], "http");
        assert!(!env.contains_key("HTTPS"));
        for name in [
            "SCRIPT_NAME",
            "SCRIPT_FILENAME",
            "PATH_INFO",
            "PATH_TRANSLATED",
        ] {
            assert!(
                !env.contains_key(name),
                "{name} is set by the worker, which sees the jail"
            );
        }
    }

    #[test]
    fn empty_body_sets_no_content_length() {
        let env = env_of(
            http::Request::post("/cgi-bin/x")
                .header("content-length", "0")
                .body(())
                .unwrap(),
        );
        assert!(!env.contains_key("CONTENT_LENGTH"));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let request = || {
            http::Request::get("/cgi-bin/x")
                .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "www.example.org")
                .header("x-forwarded-user", "alice")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0")
                .body(())
                .unwrap()
        };
        let untrusted = env_with(request(), &EnvPolicy::default(), "10.0.0.1:4000");
        assert_eq!(untrusted["REMOTE_ADDR"], "10.0.0.1");
        assert_eq!(untrusted["REMOTE_PORT"], "4000");
        assert_eq!(untrusted["REQUEST_SCHEME"], "http");
        assert_eq!(untrusted["SERVER_NAME"], "127.0.0.1");
        assert!(!untrusted.contains_key("REMOTE_USER") && !untrusted.contains_key("AUTH_TYPE"));
        let policy = EnvPolicy {
            trusted_proxies: vec!["10.0.0.0/24".parse().unwrap()],
            ..EnvPolicy::default()
        };
        let trusted = env_with(request(), &policy, "10.0.0.1:4000");
        // 10.0.0.2 is a trusted hop too; 203.0.113.9 is the client; 6.6.6.6 is the client's claim.
        assert_eq!(trusted["REMOTE_ADDR"], "203.0.113.9");
        assert!(!trusted.contains_key("REMOTE_PORT"));
        assert_eq!(
            (
                trusted["REQUEST_SCHEME"].as_str(),
                trusted["HTTPS"].as_str()
            ),
            ("https", "on")
        );
        assert_eq!(trusted["SERVER_NAME"], "www.example.org");
        // The proxy authenticated alice; the credentials themselves stay withheld.
        assert_eq!(trusted["REMOTE_USER"], "alice");
        assert_eq!(trusted["AUTH_TYPE"], "Basic");
        assert!(!trusted.contains_key("HTTP_AUTHORIZATION"));
    }

    #[test]
    fn auth_type_is_the_scheme_token() {
        let value = |text: &'static str| http::HeaderValue::from_static(text);
        assert_eq!(
            auth_scheme(Some(&value("Digest username=x"))),
            Some(&b"Digest"[..])
        );
        assert_eq!(auth_scheme(Some(&value("Bearer"))), Some(&b"Bearer"[..]));
        assert_eq!(auth_scheme(Some(&value("B@d x"))), None);
        assert_eq!(auth_scheme(Some(&value(" Basic x"))), None);
        assert_eq!(auth_scheme(None), None);
    }

    #[test]
    fn a_unix_socket_peer_is_a_trusted_local_front_server() {
        let proxied = http::Request::get("/cgi-bin/x")
            .header("host", "www.example.org:8443")
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let env = env_with(proxied, &EnvPolicy::default(), "unix");
        assert_eq!(env["REMOTE_ADDR"], "203.0.113.9");
        assert_eq!(env["SERVER_NAME"], "www.example.org");
        assert_eq!(env["SERVER_PORT"], "8443");
        assert_eq!(env["HTTPS"], "on");
        assert!(!env.contains_key("SERVER_ADDR"));
        assert!(!env.contains_key("REMOTE_PORT"));
        // Nothing forwarded, no port in Host: a local client, the scheme's port.
        let bare = http::Request::get("/cgi-bin/x")
            .header("host", "[::1]")
            .body(())
            .unwrap();
        let env = env_with(bare, &EnvPolicy::default(), "unix");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["SERVER_NAME"], "[::1]");
        assert_eq!(env["SERVER_PORT"], "80");
    }

    #[test]
    fn authorization_only_on_request_and_fixed_variables_never_override() {
        let policy = EnvPolicy {
            pass_authorization: true,
            fixed: vec![
                ("APP_DATA".into(), b"/data".to_vec()),
                ("QUERY_STRING".into(), b"evil".to_vec()),
            ],
            ..EnvPolicy::default()
        };
        let request = || {
            http::Request::get("/cgi-bin/x?q")
                .header("authorization", "Basic eDp5")
                .body(())
                .unwrap()
        };
        let env = env_with(request(), &policy, "127.0.0.1:1");
        assert_eq!(env["HTTP_AUTHORIZATION"], "Basic eDp5");
        assert_eq!(env["APP_DATA"], "/data");
        assert_eq!(env["QUERY_STRING"], "q");
        assert!(!env_of(request()).contains_key("HTTP_AUTHORIZATION"));
    }

    #[test]
    fn host_ports_are_split_off() {
        assert_eq!(split_port("example.org:80"), ("example.org", Some(80)));
        assert_eq!(split_port("[::1]:8443"), ("[::1]", Some(8443)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("example.org"), ("example.org", None));
        assert_eq!(split_port("example.org:x"), ("example.org", None));
    }
}
