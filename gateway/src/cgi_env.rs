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
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

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

/// Builds the CGI's whole environment, `NAME=value` each.
pub fn meta_variables(request: &Parts, route: &Route, connection: Connection) -> Vec<Vec<u8>> {
    let mut env = Vec::with_capacity(24 + request.headers.keys_len());
    let mut set = |name: &str, value: &[u8]| {
        let mut variable = Vec::with_capacity(name.len() + 1 + value.len());
        variable.extend_from_slice(name.as_bytes());
        variable.push(b'=');
        variable.extend_from_slice(value);
        env.push(variable);
    };
    set("PATH", CGI_PATH.as_bytes());
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());
    set("SERVER_PROTOCOL", protocol_name(request.version).as_bytes());
    set("SERVER_NAME", server_name(request, connection).as_bytes());
    set("SERVER_ADDR", connection.local.ip().to_string().as_bytes());
    set(
        "SERVER_PORT",
        connection.local.port().to_string().as_bytes(),
    );
    set("REQUEST_METHOD", request.method.as_str().as_bytes());
    set("REQUEST_URI", request_uri(request).as_bytes());
    set("SCRIPT_NAME", route.script_name.as_bytes());
    set("SCRIPT_FILENAME", route.script_path.as_bytes());
    set("PATH_INFO", &route.path_info);
    set("QUERY_STRING", route.query_string.as_bytes());
    set(
        "REMOTE_ADDR",
        connection.remote.ip().to_canonical().to_string().as_bytes(),
    );
    set(
        "REMOTE_PORT",
        connection.remote.port().to_string().as_bytes(),
    );
    if let Some(length) = request.headers.get(header::CONTENT_LENGTH) {
        set("CONTENT_LENGTH", length.as_bytes());
    }
    if let Some(content_type) = request.headers.get(header::CONTENT_TYPE) {
        set("CONTENT_TYPE", content_type.as_bytes());
    }
    for name in request.headers.keys() {
        if is_withheld(name)
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
    env
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The host name the client asked for (RFC 3875 §4.1.14), else the address it connected to.
fn server_name(request: &Parts, connection: Connection) -> String {
    let host = request
        .uri
        .host()
        .or_else(|| {
            request
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .map(strip_port)
        .filter(|host| !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()));
    match host {
        Some(host) => host.to_owned(),
        None => connection.local.ip().to_string(),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port keeps its brackets, as in a URL.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
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
        let (parts, ()) = request.into_parts();
        let route = route(parts.uri.path(), parts.uri.query()).unwrap();
        let connection = Connection {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "[::ffff:10.1.2.3]:5555".parse().unwrap(),
        };
        meta_variables(&parts, &route, connection)
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
            ("SCRIPT_NAME", "/cgi-bin/form.sh"),
            ("PATH_INFO", "/a b"),
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
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("example.org:80"), "example.org");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.org"), "example.org");
    }
}
