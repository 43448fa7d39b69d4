//! One HTTP request: hyper's request mapped onto the request core (route, [`RequestMeta`],
//! [`Body`]), the CGI's header block parsed into the response head, its body streamed, and the
//! local redirects it asks for followed (RFC 3875 §6.2.2).

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};
use tracing::Instrument;

use super::response::{carries_no_body, read_head, CgiBody, CgiHead, HeadStyle, SETTLE_WINDOW};
use crate::config::EnvPolicy;
use crate::front::access::{Counted, RequestLog};
use crate::front::linger::LingerFlag;
use crate::front::listen::Connection;
use crate::front::request::body::BodySource;
use crate::front::request::env::{auth_scheme, is_host_name, split_port};
use crate::front::request::router::route;
use crate::front::request::{
    body_complete, render_error, Body, CgiOutput, Core, RequestError, RequestMeta, Started,
    Variables,
};

/// What every response body is: a short text of ours, or a CGI's output.
pub type ResponseBody = Either<Full<Bytes>, CgiBody>;

/// Local redirects one request may follow; more is a loop (Apache allows 10 too).
const MAX_LOCAL_REDIRECTS: usize = 10;

/// REMOTE_ADDR over a Unix socket when the front server sends no X-Forwarded-For: the client
/// is a process on this machine.
const UNIX_PEER_ADDRESS: &str = "127.0.0.1";

/// What running one CGI came to.
// Returned once per request and unpacked at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Response(Response<ResponseBody>),
    /// RFC 3875 §6.2.2: serve this local path instead.
    LocalRedirect(String),
}

/// Answers one HTTP request. Never fails: every error becomes a status and a short body.
pub async fn handle(
    core: Arc<Core>,
    request: Request<Incoming>,
    connection: Connection,
    linger: LingerFlag,
) -> Result<Response<Counted<ResponseBody>>, Infallible> {
    // A request with a body may leave some of it unread (an upload refused at once): should
    // the connection then close, it lingers (a body read whole leaves it nothing to wait for
    // but the client's own close).
    linger.set(!request.body().is_end_stream());
    let http_1_0 = request.version() == Version::HTTP_10;
    let log = core.new_request("http");
    let span = tracing::info_span!("request", id = log.id());
    let client = match connection {
        Connection::Tcp { remote, .. } => remote.ip().to_canonical().to_string(),
        Connection::Unix { .. } => "unix".to_owned(),
    };
    log.set_request(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
        client,
    );
    let mut response = serve(&core, request, connection, &log)
        .instrument(span)
        .await;
    if http_1_0 && response.body().size_hint().exact().is_none() {
        // An HTTP/1.0 answer without a length ends when the connection closes: say so. hyper
        // takes a response of HTTP/1.1 (ours by default) to an HTTP/1.0 keep-alive request as
        // one to keep alive and says `keep-alive`, and the client then waits on a connection
        // that closes under its next request; of HTTP/1.0 without `keep-alive`, as one to end.
        *response.version_mut() = Version::HTTP_10;
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    log.set_status(response.status().as_u16());
    Ok(response.map(|body| Counted::new(body, log)))
}

/// Runs the request's CGI, and the CGIs its local redirects name (RFC 3875 §6.2.2).
async fn serve(
    core: &Core,
    request: Request<Incoming>,
    connection: Connection,
    log: &Arc<RequestLog>,
) -> Response<ResponseBody> {
    let (mut parts, body) = request.into_parts();
    let mut body = Some(body);
    // One --timeout for the request, its local redirects' CGIs included.
    let deadline = core.request_deadline();
    for _ in 0..=MAX_LOCAL_REDIRECTS {
        match run_cgi(core, &parts, body.take(), connection, log, deadline).await {
            Ok(Outcome::Response(response)) => return response,
            Ok(Outcome::LocalRedirect(location)) => match redirected(&parts, &location) {
                Ok(next) => parts = next,
                Err(error) => return error_response(&error),
            },
            Err(error) => return error_response(&error),
        }
    }
    error_response(&RequestError::BadCgiOutput(format!(
        "more than {MAX_LOCAL_REDIRECTS} local redirects"
    )))
}

async fn run_cgi(
    core: &Core,
    parts: &Parts,
    body: Option<Incoming>,
    connection: Connection,
    log: &Arc<RequestLog>,
    deadline: Instant,
) -> Result<Outcome, RequestError> {
    let generation = core.current();
    // hyper takes a 2xx answer to CONNECT for a tunnel: the CGI's body would be dropped and
    // the connection handed over. nginx refuses CONNECT too.
    if parts.method == Method::CONNECT {
        return Err(RequestError::Connect);
    }
    one_host_at_most(parts)?;
    let route = route(parts.uri.path(), parts.uri.query())?;
    let body = request_body(parts, body)?;
    let meta = request_meta(parts, connection, &generation.config.env);
    if connection.is_front_server(&generation.config.env) {
        log.set_forwarded(&meta.remote_addr, meta.remote_user);
    }
    let Started {
        mut output,
        mut body_received,
        deadline,
        script,
    } = core
        .start(&generation, &route, &meta, body, log, deadline)
        .await?;
    let style = HeadStyle::of_script(&script);
    let (mut head, first_bytes) =
        read_head_unless_body_fails(&mut output, style, &mut body_received, deadline).await?;
    // nginx stops sending a body once it sees a response, and the CGI would wait for the rest
    // of its stdin for ever: by default every client gets the answer once its body is all in.
    // With --answer-while-uploading, a client that is not a front server gets it as the CGI
    // writes it, while its body still arrives (an echo goes pipe to pipe instead of through
    // the spool); should the body then fail, the response is cut off (`CgiBody`).
    let config = &generation.config;
    let waits = !config.answer_while_uploading || connection.is_front_server(&config.env);
    let body_received = if waits {
        body_complete(body_received, deadline).await?;
        None
    } else {
        body_received
    };
    if let Some(location) = head.local_redirect {
        // This CGI's part is done; dropping its output undelivered stops whatever it still runs.
        if connection.is_front_server(&config.env) {
            // Followed here, the new path would skip the front server's own rules for it
            // (nginx's allow/deny, auth_basic on another location): the front server gets a
            // client redirect instead, as it does through the FastCGI front, and the client
            // asks it for the path.
            return Ok(Outcome::Response(client_redirect(&location)?));
        }
        return Ok(Outcome::LocalRedirect(location));
    }
    // A front server (nginx's proxy_pass) in front of us would act on these.
    core.withhold_front_server_headers(&generation.config, &script, &mut head.headers);
    // Where hyper sends no body at all, the CGI's Content-Length describes the body a GET
    // would get (RFC 9110 §8.6): it is passed on as it is, and not held against an output
    // that has none (a 304 with one is no short answer).
    let never_sent = carries_no_body(parts.method == Method::HEAD, head.status);
    let length = head.content_length.filter(|_| !never_sent);
    if let (true, Some(declared)) = (parts.method == Method::HEAD, head.content_length) {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    }
    let body = CgiBody::new(first_bytes, output, length, body_received);
    let body = match body.settle(SETTLE_WINDOW).await {
        // hyper sends no body here and drops one unread, which would stop a CGI that answered
        // first and still works (writes its data, sends its mail): its output is read to its
        // end first, as a GET's would be sent, and the answer goes out then. Not apart from
        // the connection: a client could then pipeline HEADs and run a CGI for each at once,
        // and one that leaves would not have them killed. The CGI has its deadline.
        Either::Right(body) if never_sent || head.content_length == Some(0) => {
            body.read_to_end().await;
            Either::Left(Full::new(Bytes::new()))
        }
        settled => settled,
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(Outcome::Response(response))
}

/// RFC 9112 §3.2: a request with more than one Host field line is answered 400 (a server MUST),
/// rather than handing a CGI a Host of `a, b` to build its links from. (One missing is let
/// through: nginx's `proxy_set_header Host $http_host` forwards an HTTP/1.0 client's request
/// without one as HTTP/1.1.)
fn one_host_at_most(parts: &Parts) -> Result<(), RequestError> {
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(RequestError::BadRequest("more than one Host header"));
    }
    Ok(())
}

/// Whether the Transfer-Encoding lines name the chunked coding alone.
fn only_chunked(parts: &Parts) -> bool {
    let mut codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty());
    codings
        .next()
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
        && codings.next().is_none()
}

/// The body's framing, as hyper read it: a Content-Length, chunked, or none.
fn request_body(parts: &Parts, body: Option<Incoming>) -> Result<Body, RequestError> {
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(RequestError::BadRequest("invalid Content-Length"))?,
        ),
        None => None,
    };
    let chunked = declared.is_none() && parts.headers.contains_key(header::TRANSFER_ENCODING);
    // RFC 9112 §6.1: hyper takes off the chunked coding and leaves any before it (`gzip,
    // chunked`), which would reach the CGI as a plain body of that many bytes; a coding we do
    // not decode is 501, as nginx answers.
    if chunked && !only_chunked(parts) {
        return Err(RequestError::UnknownTransferCoding);
    }
    Ok(match (body, declared) {
        (Some(body), Some(length)) => Body::Sized {
            length,
            source: BodySource::http(body),
            expects_continue: parts
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        },
        (Some(body), None) if chunked => Body::Unsized(BodySource::http(body)),
        _ => Body::None,
    })
}

/// The request in CGI terms. The client is the peer, or, when the peer is a front server
/// ([`Connection::is_front_server`]), whom its X-Forwarded-For/-Proto/-Host/-User say it serves.
fn request_meta<'a>(
    parts: &'a Parts,
    connection: Connection,
    policy: &EnvPolicy,
) -> RequestMeta<'a> {
    let trusted = |ip: std::net::IpAddr| policy.is_trusted_proxy(ip);
    let peer_trusted = connection.is_front_server(policy);
    let (peer_address, peer_port) = match connection {
        Connection::Tcp { remote, .. } => {
            (remote.ip().to_canonical().to_string(), Some(remote.port()))
        }
        Connection::Unix { .. } => (UNIX_PEER_ADDRESS.to_owned(), None),
    };
    // Every line of a forwarded header, in order. The front server's is the last: one that
    // adds a line of its own (HAProxy's `option forwardfor`, Apache's `RequestHeader add`)
    // leaves the client's before it, and one that sets the header (nginx's
    // `proxy_set_header`) leaves only its own.
    let forwarded_lines = |name: &str| {
        let lines = parts.headers.get_all(name).iter();
        lines.filter(move |_| peer_trusted)
    };
    // The last line as it came: one the front server wrote that is no text stands for none,
    // not for the client's line before it.
    let last_line = |name: &str| {
        let line = forwarded_lines(name).next_back()?;
        line.to_str().ok().map(str::trim)
    };
    // The last value of the last line: what the front server appended.
    let last_item =
        |name: &str| last_line(name).map(|line| line.rsplit(',').next().unwrap_or(line).trim());
    // The right-most address that is not itself a trusted proxy is the client: everything left
    // of it was written by the client and proves nothing.
    let forwarded_for = forwarded_lines("x-forwarded-for")
        .rev()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.rsplit(','))
        .filter_map(|part| part.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .find(|ip| !trusted(*ip));
    let https =
        last_item("x-forwarded-proto").is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let forwarded_host = last_item("x-forwarded-host");
    // A whole line: a user name may hold a comma.
    let remote_user = last_line("x-forwarded-user").filter(|user| !user.is_empty());
    let host = requested_host(parts, forwarded_host);
    let (server_name, server_addr, server_port) = match connection {
        Connection::Tcp { local, .. } => (
            host.map_or_else(|| local.ip().to_string(), |(name, _)| name.to_owned()),
            Some(local.ip().to_canonical().to_string()),
            local.port(),
        ),
        // No address of ours the client used: the port is the one it asked for (the front
        // server's), else the scheme's.
        Connection::Unix { .. } => (
            host.map_or("localhost", |(name, _)| name).to_owned(),
            None,
            host.and_then(|(_, port)| port)
                .unwrap_or(if https { 443 } else { 80 }),
        ),
    };
    let request_uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    RequestMeta {
        method: parts.method.as_str().as_bytes(),
        protocol: protocol_name(parts.version).as_bytes(),
        request_uri: Cow::Borrowed(request_uri.as_bytes()),
        remote_addr: Cow::Owned(
            forwarded_for
                .map_or(peer_address, |ip| ip.to_string())
                .into(),
        ),
        remote_port: peer_port
            .filter(|_| forwarded_for.is_none())
            .map(|port| Cow::Owned(port.to_string().into())),
        https,
        remote_user: remote_user.map(str::as_bytes),
        auth_type: remote_user.and_then(|_| {
            auth_scheme(
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
        }),
        server_name: Cow::Owned(server_name.into()),
        server_addr: server_addr.map(|address| Cow::Owned(address.into())),
        server_port: Cow::Owned(server_port.to_string().into()),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
        variables: Variables::Headers(&parts.headers),
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
/// trusted proxy's X-Forwarded-Host, an absolute-form target, or Host, the first of them that
/// names a host ([`is_host_name`]). An absolute-form target's user information
/// (`http://user:pw@host/`) is no part of its host.
fn requested_host<'a>(
    request: &'a Parts,
    forwarded_host: Option<&'a str>,
) -> Option<(&'a str, Option<u16>)> {
    let target = request.uri.authority().map(|authority| {
        let authority = authority.as_str();
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host)
    });
    let host = request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    [forwarded_host, target, host]
        .into_iter()
        .flatten()
        .map(split_port)
        .find(|(name, _)| is_host_name(name))
}

/// Reads the CGI's header block by `deadline`, but gives up as soon as the request body fails
/// (the client went away mid-upload, or its body was malformed): the request is over, and
/// returning drops its output undelivered, which kills the CGI now rather than at its
/// deadline. A body that arrives whole meanwhile leaves `body_received` at `None`.
async fn read_head_unless_body_fails(
    output: &mut CgiOutput,
    style: HeadStyle,
    body_received: &mut Option<oneshot::Receiver<Result<(), RequestError>>>,
    deadline: Instant,
) -> Result<(CgiHead, Bytes), RequestError> {
    let head = timeout_at(deadline, read_head(output.stdout(), style));
    tokio::pin!(head);
    loop {
        let body_ended = async {
            match body_received.as_mut() {
                Some(received) => Some(received.await),
                None => std::future::pending().await,
            }
        };
        let body = tokio::select! {
            biased;
            parsed = &mut head => return parsed.unwrap_or(Err(RequestError::Timeout)),
            body = body_ended => body,
        };
        match body {
            // All of it arrived: only the head is awaited now.
            Some(Ok(Ok(()))) => *body_received = None,
            // Too slow (408), no room for it (503), ...: that is the answer.
            Some(Ok(Err(error))) => return Err(error),
            // The body reader stops at the deadline too: that is the CGI's timeout.
            _ if Instant::now() >= deadline => return Err(RequestError::Timeout),
            _ => return Err(RequestError::BadRequest("request body ended early")),
        }
    }
}

/// The request a local redirect makes: a GET of `location` with the original headers but no
/// body (RFC 3875 §6.2.2: the server treats it as a new request for that path).
fn redirected(parts: &Parts, location: &str) -> Result<Parts, RequestError> {
    let uri = location
        .parse::<http::Uri>()
        .map_err(|_| RequestError::BadCgiOutput("local redirect to an invalid path".into()))?;
    let mut next = Request::new(());
    *next.method_mut() = http::Method::GET;
    *next.uri_mut() = uri;
    *next.version_mut() = parts.version;
    *next.headers_mut() = parts.headers.clone();
    for framing in [
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::TRANSFER_ENCODING,
    ] {
        next.headers_mut().remove(framing);
    }
    Ok(next.into_parts().0)
}

/// A local redirect passed on to a front server: 302 to the same path.
fn client_redirect(location: &str) -> Result<Response<ResponseBody>, RequestError> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| RequestError::BadCgiOutput("a Location that is no header value".into()))?;
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = http::StatusCode::FOUND;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// A short plain-text answer for an error, logged with the reason.
pub fn error_response(error: &RequestError) -> Response<ResponseBody> {
    let (status, text) = render_error(error);
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == http::StatusCode::REQUEST_TIMEOUT {
        // A client too slow to send its body: its connection goes too, not only the request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::front::listen::PeerCredentials;
    use crate::front::request::env::{by_name, meta_variables, CGI_PATH};
    use std::collections::HashMap;

    fn env_of(request: http::Request<()>) -> HashMap<String, String> {
        env_with(request, &EnvPolicy::default(), "[::ffff:10.1.2.3]:5555")
    }

    /// The environment the CGI gets for `request` from `peer`, through the HTTP front's
    /// mapping and the core's rule.
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
        // `unix:UID:GID`: a Unix-socket peer with those credentials.
        let connection = if let Some(ids) = peer.strip_prefix("unix:") {
            let (uid, gid) = ids.split_once(':').unwrap();
            Connection::Unix {
                peer: Some(PeerCredentials {
                    uid: uid.parse().unwrap(),
                    gid: gid.parse().unwrap(),
                }),
            }
        } else {
            Connection::Tcp {
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: peer.parse().unwrap(),
            }
        };
        let meta = request_meta(&parts, connection, policy);
        by_name(meta_variables(&meta, &route, length, policy))
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
    fn a_unix_socket_peer_as_root_or_of_the_trusted_group_is_a_front_server() {
        let proxied = || {
            http::Request::get("/cgi-bin/x")
                .header("host", "www.example.org:8443")
                .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-user", "alice")
                .body(())
                .unwrap()
        };
        let policy = EnvPolicy {
            trusted_group: Some(33),
            ..EnvPolicy::default()
        };
        for front_server in ["unix:0:0", "unix:33:33", "unix:1000:33"] {
            let env = env_with(proxied(), &policy, front_server);
            assert_eq!(env["REMOTE_ADDR"], "203.0.113.9", "{front_server}");
            assert_eq!(env["REMOTE_USER"], "alice", "{front_server}");
            assert_eq!(env["SERVER_NAME"], "www.example.org");
            assert_eq!(env["SERVER_PORT"], "8443");
            assert_eq!(env["HTTPS"], "on");
            assert!(!env.contains_key("SERVER_ADDR"));
            assert!(!env.contains_key("REMOTE_PORT"));
        }
        // Another local user's process, or one with another group (the group it runs with
        // counts, not its uid or supplementary groups): a client, whatever it claims.
        for client in ["unix:1000:1000", "unix:33:1000"] {
            let env = env_with(proxied(), &policy, client);
            assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{client}");
            assert!(!env.contains_key("REMOTE_USER"), "{client}");
            assert!(!env.contains_key("HTTPS"), "{client}");
        }
        // Without --trusted-group only root is a front server.
        let env = env_with(proxied(), &EnvPolicy::default(), "unix:33:33");
        assert!(!env.contains_key("REMOTE_USER"));
        // Nothing forwarded, no port in Host: a local client, the scheme's port.
        let bare = http::Request::get("/cgi-bin/x")
            .header("host", "[::1]")
            .body(())
            .unwrap();
        let env = env_with(bare, &EnvPolicy::default(), "unix:0:0");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["SERVER_NAME"], "[::1]");
        assert_eq!(env["SERVER_PORT"], "80");
        // A Host that names no host: the address the request came to, over TCP.
        for odd in ["evil.com/x?#", "a'b;$(id)", "x:80:81", "[::g]", "a\"b"] {
            let request = http::Request::get("/cgi-bin/x")
                .header("host", odd)
                .body(())
                .unwrap();
            let env = env_of(request);
            assert_eq!(env["SERVER_NAME"], "127.0.0.1", "Host: {odd}");
        }
        // An absolute-form target's user information is not its host.
        let userinfo = http::Request::get("http://user:pw@www.example.org:8080/cgi-bin/x")
            .body(())
            .unwrap();
        let env = env_of(userinfo);
        assert_eq!(env["SERVER_NAME"], "www.example.org");
        // A front server's X-Forwarded-Host that names no host stands for none: Host then.
        let forwarded_odd = http::Request::get("/cgi-bin/x")
            .header("host", "www.example.org")
            .header("x-forwarded-host", "a'b")
            .body(())
            .unwrap();
        let env = env_with(forwarded_odd, &EnvPolicy::default(), "unix:0:0");
        assert_eq!(env["SERVER_NAME"], "www.example.org");
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
}
