//! The one rule that decides a CGI's environment, for both fronts. A front maps its request
//! onto [`RequestMeta`] (the HTTP front from hyper's request, the FastCGI front from nginx's
//! params); [`meta_variables`] turns that into the CGI's whole environment:
//!
//! - what the gateway says itself: `PATH` (fixed), `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`,
//!   `DOCUMENT_ROOT`, `QUERY_STRING` and `CONTENT_LENGTH` (from the route and the body);
//! - the RFC 3875 meta-variables the front mapped, and the usual extensions (`REQUEST_URI`,
//!   `REQUEST_SCHEME`, `HTTPS`, `SERVER_ADDR`, `REMOTE_PORT`);
//! - `HTTP_*` for the request's header fields, less [`is_withheld`] ones;
//! - what a front server sets that `--pass-env` names;
//! - the `--env` variables.
//!
//! Nothing else: not the gateway's own environment, and not any other variable a FastCGI peer
//! sends (`BASH_ENV`, `LD_PRELOAD`, `PERL5OPT`, ... are dropped, logged at debug).

use std::borrow::Cow;

use http::HeaderMap;

use super::router::Route;
use crate::config::{is_meta_variable, EnvPolicy};

/// The only PATH a CGI gets: the jail's program folders.
pub const CGI_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
pub const SERVER_SOFTWARE: &str = concat!("jailgate/", env!("CARGO_PKG_VERSION"));

/// A request in CGI terms, as a front mapped it: each field is the value of the meta-variable
/// it names (RFC 3875 §4.1), `None` where the variable is not set.
#[derive(Debug)]
pub struct RequestMeta<'a> {
    pub method: &'a [u8],
    /// SERVER_PROTOCOL, `HTTP/1.1`.
    pub protocol: &'a [u8],
    pub request_uri: Cow<'a, [u8]>,
    pub remote_addr: Cow<'a, [u8]>,
    pub remote_port: Option<Cow<'a, [u8]>>,
    /// The client spoke HTTPS to the front server: REQUEST_SCHEME `https` and HTTPS `on`.
    pub https: bool,
    /// Whom the front server authenticated, and how (§4.1.11, §4.1.1).
    pub remote_user: Option<&'a [u8]>,
    pub auth_type: Option<&'a [u8]>,
    pub server_name: Cow<'a, [u8]>,
    pub server_addr: Option<Cow<'a, [u8]>>,
    pub server_port: Cow<'a, [u8]>,
    pub content_type: Option<&'a [u8]>,
    /// Where `HTTP_*` (and `--pass-env` names) come from.
    pub variables: Variables<'a>,
}

/// The source of a request's `HTTP_*` variables.
#[derive(Debug, Clone, Copy)]
pub enum Variables<'a> {
    /// An HTTP request's header fields: `X-Foo` becomes HTTP_X_FOO.
    Headers(&'a HeaderMap),
    /// A front server's variables (FastCGI params): its `HTTP_*` ones, and those that
    /// `--pass-env` names; nothing else.
    FrontServer(&'a [(Vec<u8>, Vec<u8>)]),
}

/// `HTTP_*` variables a CGI never gets, whichever front the request came through.
fn is_withheld(variable: &[u8], policy: &EnvPolicy) -> bool {
    // Content-* travel as CONTENT_TYPE/CONTENT_LENGTH. `Proxy` would become HTTP_PROXY, which
    // many HTTP libraries take as their proxy setting (httpoxy, CVE-2016-5385). Credentials are
    // for the server, not every script (Apache's default too). Hop-by-hop headers describe
    // the connection to us, not the request.
    match variable {
        b"HTTP_AUTHORIZATION" => !policy.pass_authorization,
        b"HTTP_CONTENT_TYPE"
        | b"HTTP_CONTENT_LENGTH"
        | b"HTTP_PROXY"
        | b"HTTP_PROXY_AUTHORIZATION"
        | b"HTTP_CONNECTION"
        | b"HTTP_KEEP_ALIVE"
        | b"HTTP_TE"
        | b"HTTP_TRAILER"
        | b"HTTP_TRANSFER_ENCODING"
        | b"HTTP_UPGRADE"
        | b"HTTP_PROXY_CONNECTION" => true,
        _ => false,
    }
}

/// Builds the CGI's whole environment, `NAME=value` each. `content_length` is the length of
/// the body the CGI will read, if there is one (RFC 3875 §4.1.2: unset without a body).
pub fn meta_variables(
    meta: &RequestMeta<'_>,
    route: &Route,
    content_length: Option<u64>,
    policy: &EnvPolicy,
) -> Vec<Vec<u8>> {
    let mut env = Vec::with_capacity(32 + policy.fixed.len());
    let mut set = |name: &[u8], value: &[u8]| push_variable(&mut env, name, value);
    set(b"PATH", CGI_PATH.as_bytes());
    set(b"GATEWAY_INTERFACE", b"CGI/1.1");
    set(b"SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());
    // URL paths map one to one onto the jail: /cgi-bin/x is the jail's /cgi-bin/x. So the
    // jail's root is the document root, and PATH_TRANSLATED (§4.1.6) is PATH_INFO under it.
    set(b"DOCUMENT_ROOT", b"/");
    set(b"SERVER_PROTOCOL", meta.protocol);
    set(b"SERVER_NAME", &meta.server_name);
    if let Some(address) = &meta.server_addr {
        set(b"SERVER_ADDR", address);
    }
    set(b"SERVER_PORT", &meta.server_port);
    set(b"REQUEST_METHOD", meta.method);
    set(b"REQUEST_URI", &meta.request_uri);
    set(
        b"REQUEST_SCHEME",
        if meta.https { b"https" } else { b"http" },
    );
    if meta.https {
        set(b"HTTPS", b"on");
    }
    // SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO and PATH_TRANSLATED depend on which segments
    // of the path name a file: the worker sets them, from inside the jail.
    set(b"QUERY_STRING", route.query_string.as_bytes());
    set(b"REMOTE_ADDR", &meta.remote_addr);
    if let Some(port) = &meta.remote_port {
        set(b"REMOTE_PORT", port);
    }
    if let Some(user) = meta.remote_user {
        // §4.1.11 and §4.1.1: set only when the front server authenticated the request.
        set(b"REMOTE_USER", user);
        if let Some(scheme) = meta.auth_type {
            set(b"AUTH_TYPE", scheme);
        }
    }
    if let Some(length) = content_length.filter(|&length| length > 0) {
        set(b"CONTENT_LENGTH", length.to_string().as_bytes());
    }
    if let Some(content_type) = meta.content_type {
        set(b"CONTENT_TYPE", content_type);
    }
    match meta.variables {
        Variables::Headers(headers) => push_header_variables(&mut env, headers, policy),
        Variables::FrontServer(params) => push_front_server_variables(&mut env, params, policy),
    }
    // The `--env` variables, last. They are refused at start-up if they name a meta-variable;
    // checking again keeps a request's variable from ever being shadowed.
    for (name, value) in &policy.fixed {
        if !is_meta_variable(name) {
            push_variable(&mut env, name.as_bytes(), value);
        }
    }
    env
}

/// HTTP_* for each header field (RFC 3875 §4.1.18), repeated fields folded into one value.
/// A field the client's Connection header names is hop-by-hop too (RFC 9110 §7.6.1): it
/// describes the connection to us, not the request, and is not passed on.
fn push_header_variables(env: &mut Vec<Vec<u8>>, headers: &HeaderMap, policy: &EnvPolicy) {
    let connection_options = headers.get_all(http::header::CONNECTION);
    let hop_by_hop = |name: &http::HeaderName| {
        connection_options.iter().any(|value| {
            value.to_str().is_ok_and(|options| {
                options
                    .split(',')
                    .any(|option| option.trim().eq_ignore_ascii_case(name.as_str()))
            })
        })
    };
    for name in headers.keys() {
        if hop_by_hop(name) {
            continue;
        }
        // A name with `_` would collide with the `-` form after mapping (X_Foo vs X-Foo).
        if !name
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        let mut variable = Vec::with_capacity(5 + name.as_str().len());
        variable.extend_from_slice(b"HTTP_");
        variable.extend(name.as_str().bytes().map(|b| match b {
            b'-' => b'_',
            b => b.to_ascii_uppercase(),
        }));
        if is_withheld(&variable, policy) {
            continue;
        }
        // Repeated headers are folded into one value (RFC 9110 §5.3); cookies use `; `.
        let separator: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let mut value = Vec::new();
        for (i, part) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(separator);
            }
            value.extend_from_slice(part.as_bytes());
        }
        push_variable(env, &variable, &value);
    }
}

/// A front server's `HTTP_*` variables (nginx has already mapped the header fields) and the
/// `--pass-env` ones. An `HTTP_*` name sent more than once is a header the client repeated
/// (nginx before 1.23 passes each line, and leaves out a header a `fastcgi_param HTTP_*`
/// sets): its values are folded into one, as over HTTP (cookies with `; `), where the last
/// alone lost the client's other cookies. Of another name sent twice, the last counts (as
/// `fastcgi_param` overrides).
fn push_front_server_variables(
    env: &mut Vec<Vec<u8>>,
    params: &[(Vec<u8>, Vec<u8>)],
    policy: &EnvPolicy,
) {
    let mut dropped: Vec<Cow<'_, str>> = Vec::new();
    let mut folded = Vec::new();
    for (at, (name, value)) in params.iter().enumerate() {
        let is_header = name
            .strip_prefix(b"HTTP_")
            .is_some_and(|rest| !rest.is_empty() && rest.iter().all(|&b| is_name_byte(b)));
        let same = |(other, _): &(Vec<u8>, Vec<u8>)| other == name;
        let value = if is_header {
            if params[..at].iter().any(same) {
                continue;
            }
            let mut repeats = params[at + 1..]
                .iter()
                .filter(|param| same(param))
                .peekable();
            if repeats.peek().is_none() {
                value
            } else {
                let separator: &[u8] = if name == b"HTTP_COOKIE" { b"; " } else { b", " };
                folded.clear();
                folded.extend_from_slice(value);
                for (_, more) in repeats {
                    folded.extend_from_slice(separator);
                    folded.extend_from_slice(more);
                }
                &folded
            }
        } else {
            if params[at + 1..].iter().any(same) {
                continue;
            }
            value
        };
        let passed = policy
            .pass_env
            .iter()
            .any(|passed| passed.as_bytes() == name.as_slice());
        if (is_header && !is_withheld(name, policy)) || passed {
            if !value.contains(&0) {
                push_variable(env, name, value);
            }
        } else if !std::str::from_utf8(name).is_ok_and(is_meta_variable) {
            // A meta-variable the front mapped already; anything else is not the peer's to set.
            dropped.push(String::from_utf8_lossy(name));
        }
    }
    if !dropped.is_empty() {
        tracing::debug!(
            ?dropped,
            "front server variables dropped (not CGI/1.1, not in --pass-env)"
        );
    }
}

/// A byte of an environment variable's name as the fronts pass it on.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
}

/// Appends `NAME=value` to a CGI environment.
pub fn push_variable(env: &mut Vec<Vec<u8>>, name: &[u8], value: &[u8]) {
    let mut variable = Vec::with_capacity(name.len() + 1 + value.len());
    variable.extend_from_slice(name);
    variable.push(b'=');
    variable.extend_from_slice(value);
    env.push(variable);
}

/// The auth-scheme token of an Authorization header (`Basic`, `Digest`, ...): AUTH_TYPE.
pub fn auth_scheme(authorization: Option<&[u8]>) -> Option<&[u8]> {
    let scheme = authorization?.split(|&b| b == b' ').next()?;
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (!scheme.is_empty() && scheme.iter().all(token)).then_some(scheme)
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

/// RFC 3875 §4.1.14: SERVER_NAME is a host name (letters, digits, `-`, `.`; `_` too, as host
/// names are used), an IPv4 address, or an IPv6 address in brackets. Anything else a client
/// sends as its Host (`evil.com/x?#`, `a'b;$(id)`, `x:80:81`) names no host: SERVER_NAME is then
/// the address the request came to, as without a Host.
pub fn is_host_name(name: &str) -> bool {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    match name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
    {
        Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !name.is_empty() && name.bytes().all(plain),
    }
}

/// The variables as a map, for tests that look them up by name.
#[cfg(test)]
pub fn by_name(variables: Vec<Vec<u8>>) -> std::collections::HashMap<String, String> {
    variables
        .into_iter()
        .map(|variable| {
            let variable = String::from_utf8(variable).expect("UTF-8 in a test");
            let (name, value) = variable.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::front::request::router::route;
    use std::collections::HashMap;

    fn meta(variables: Variables<'_>) -> RequestMeta<'_> {
        RequestMeta {
            method: b"GET",
            protocol: b"HTTP/1.1",
            request_uri: Cow::Borrowed(b"/cgi-bin/x?q"),
            remote_addr: Cow::Borrowed(b"10.1.2.3"),
            remote_port: None,
            https: false,
            remote_user: None,
            auth_type: None,
            server_name: Cow::Borrowed(b"example.org"),
            server_addr: None,
            server_port: Cow::Borrowed(b"80"),
            content_type: None,
            variables,
        }
    }

    fn env_of(meta: &RequestMeta<'_>, policy: &EnvPolicy) -> HashMap<String, String> {
        let route = route("/cgi-bin/x", Some("q")).unwrap();
        by_name(meta_variables(meta, &route, None, policy))
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The bug this rule fixes: a FastCGI peer set any variable, and shells, loaders and
    /// interpreters run code from some of them.
    #[test]
    fn a_front_server_sets_no_variable_outside_the_rule() {
        let sent = params(&[
            ("BASH_ENV", "/tmp/x"),
            ("ENV", "/tmp/x"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("SHELLOPTS", "xtrace"),
            ("PS4", "$(id)"),
            ("PERL5OPT", "-Mevil"),
            ("GIT_DIR", "/x"),
            ("PATH", "/tmp"),
            ("HTTP_PROXY_AUTHORIZATION", "secret"),
            ("HTTP_CONNECTION", "close"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_AUTHORIZATION", "Basic eDp5"),
            ("HTTP_lower", "1"),
            ("HTTP_", "1"),
            ("HTTP_X_TRACE", "abc"),
            ("HTTP_X_NUL", "a\0b"),
            ("DOCUMENT_URI", "/cgi-bin/x"),
        ]);
        let env = env_of(&meta(Variables::FrontServer(&sent)), &EnvPolicy::default());
        for name in [
            "BASH_ENV",
            "ENV",
            "LD_PRELOAD",
            "SHELLOPTS",
            "PS4",
            "PERL5OPT",
            "GIT_DIR",
            "HTTP_PROXY_AUTHORIZATION",
            "HTTP_CONNECTION",
            "HTTP_PROXY",
            "HTTP_AUTHORIZATION",
            "HTTP_lower",
            "HTTP_",
            "HTTP_X_NUL",
            "DOCUMENT_URI",
        ] {
            assert!(!env.contains_key(name), "{name} must not be set");
        }
        assert_eq!(env["PATH"], CGI_PATH);
        assert_eq!(env["HTTP_X_TRACE"], "abc");
        assert_eq!(env["QUERY_STRING"], "q");
    }

    #[test]
    fn pass_env_names_what_a_front_server_may_set() {
        let sent = params(&[
            ("GIT_PROJECT_ROOT", "/srv/git"),
            ("GIT_DIR", "/x"),
            ("HTTP_X_A", "1"),
            ("HTTP_COOKIE", "a=1"),
            ("HTTP_X_A", "2"),
            ("HTTP_COOKIE", "b=2"),
            ("GIT_PROJECT_ROOT", "/srv/git/again"),
        ]);
        let policy = EnvPolicy {
            pass_env: vec!["GIT_PROJECT_ROOT".into()],
            ..EnvPolicy::default()
        };
        let env = env_of(&meta(Variables::FrontServer(&sent)), &policy);
        // A parameter sent twice: the last counts (fastcgi_param overrides).
        assert_eq!(env["GIT_PROJECT_ROOT"], "/srv/git/again");
        assert!(!env.contains_key("GIT_DIR"));
        // A header the client repeated (nginx 1.22 passes each line): folded, as over HTTP,
        // where the last alone lost the client's first cookie.
        assert_eq!(env["HTTP_X_A"], "1, 2");
        assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    }

    /// A field the Connection header names is the connection's, not the request's.
    #[test]
    fn fields_the_connection_header_names_are_not_passed_on() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, X-Drop"),
            ("x-drop", "1"),
            ("x-keep", "2"),
        ] {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        let env = env_of(&meta(Variables::Headers(&headers)), &EnvPolicy::default());
        assert!(!env.contains_key("HTTP_X_DROP"), "{env:?}");
        assert_eq!(env["HTTP_X_KEEP"], "2");
    }

    #[test]
    fn both_fronts_withhold_the_same_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("proxy-authorization", "secret"),
            ("connection", "close"),
            ("proxy", "http://evil"),
            ("authorization", "Basic eDp5"),
            ("content-type", "text/plain"),
            ("x-trace", "abc"),
        ] {
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        let sent = params(&[
            ("HTTP_PROXY_AUTHORIZATION", "secret"),
            ("HTTP_CONNECTION", "close"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_AUTHORIZATION", "Basic eDp5"),
            ("HTTP_CONTENT_TYPE", "text/plain"),
            ("HTTP_X_TRACE", "abc"),
        ]);
        for policy in [
            EnvPolicy::default(),
            EnvPolicy {
                pass_authorization: true,
                ..EnvPolicy::default()
            },
        ] {
            let http = env_of(&meta(Variables::Headers(&headers)), &policy);
            let fastcgi = env_of(&meta(Variables::FrontServer(&sent)), &policy);
            assert_eq!(http, fastcgi);
            assert_eq!(
                http.contains_key("HTTP_AUTHORIZATION"),
                policy.pass_authorization
            );
        }
    }

    #[test]
    fn fixed_variables_never_override() {
        let policy = EnvPolicy {
            fixed: vec![
                ("APP_DATA".into(), b"/data".to_vec()),
                ("QUERY_STRING".into(), b"evil".to_vec()),
            ],
            ..EnvPolicy::default()
        };
        let env = env_of(&meta(Variables::FrontServer(&[])), &policy);
        assert_eq!(env["APP_DATA"], "/data");
        assert_eq!(env["QUERY_STRING"], "q");
    }

    #[test]
    fn auth_type_is_the_scheme_token() {
        assert_eq!(
            auth_scheme(Some(b"Digest username=x")),
            Some(&b"Digest"[..])
        );
        assert_eq!(auth_scheme(Some(b"Bearer")), Some(&b"Bearer"[..]));
        assert_eq!(auth_scheme(Some(b"B@d x")), None);
        assert_eq!(auth_scheme(Some(b" Basic x")), None);
        assert_eq!(auth_scheme(None), None);
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
