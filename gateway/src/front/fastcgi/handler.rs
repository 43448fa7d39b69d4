//! The FastCGI front: nginx's `fastcgi_pass` (with the stock `fastcgi_params`), as with
//! fcgiwrap, but the CGI runs in the jail. nginx has parsed the HTTP request; this maps its
//! params onto the request core: the script is whatever its SCRIPT_NAME and PATH_INFO name
//! under `/cgi-bin/` (the same router as HTTP requests, so anything else is refused), the
//! meta-variables are read from the params, and the CGI's environment is built by the one rule
//! both fronts share (so a peer cannot set `BASH_ENV`, `LD_PRELOAD`, ...). The CGI's output
//! goes back to nginx unparsed, as CGI output, for nginx to turn into HTTP.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tracing::Instrument;

use super::server::{serve_connection, FcgiRequest, FcgiResponse};
use crate::front::access::RequestLog;
use crate::front::listen::{accept_until, Connection, Listener, Stream, MAX_CONNECTIONS};
use crate::front::request::body::BodySource;
use crate::front::request::env::{auth_scheme, split_port};
use crate::front::request::output::OutputError;
use crate::front::request::router::route;
use crate::front::request::{
    body_complete, render_error, Body, CgiOutput, Core, RequestError, RequestMeta, Started,
    Variables,
};

/// What goes back to nginx as FCGI_STDOUT.
pub enum FcgiOutput {
    /// A short CGI-style answer of ours (an error).
    Ours(std::io::Cursor<Vec<u8>>),
    Cgi(CgiStdout),
}

/// Serves FastCGI (from nginx's `fastcgi_pass`) on `listener` until `shutdown` resolves, then
/// lets open connections finish their requests for up to `drain`.
pub async fn run(
    listener: Listener,
    core: Arc<Core>,
    shutdown: impl Future<Output = ()>,
    drain: std::time::Duration,
) {
    // nginx sends the client's address as a FastCGI parameter; the peer itself tells nothing
    // about the client. But every FastCGI peer speaks as the front server (REMOTE_USER, the
    // variables --pass-env names), so a peer that is not one is closed before a byte is read.
    let serve = |stream: Stream, peer: Connection, permit: tokio::sync::OwnedSemaphorePermit| {
        let core = core.clone();
        if !peer.is_front_server(&core.current().config.env) {
            tracing::warn!(
                ?peer,
                "fastcgi connection refused: the peer is not a front server \
                 (--trusted-group on a Unix socket, --trusted-proxy over TCP)"
            );
            core.metrics.fastcgi_peer_refused();
            return;
        }
        tokio::spawn(async move {
            let handler = move |request| handle(core.clone(), request);
            if let Err(error) = serve_connection(stream, handler).await {
                tracing::warn!(?peer, "fastcgi connection ended: {error}");
            }
            drop(permit);
        });
    };
    let connections = accept_until(listener, shutdown, serve).await;
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("fastcgi connections still open after {drain:?}; closing them");
    }
}

/// Answers one FastCGI request. Never fails: errors become CGI-style error answers.
pub async fn handle(core: Arc<Core>, request: FcgiRequest) -> FcgiResponse<FcgiOutput> {
    let log = core.new_request("fastcgi");
    let span = tracing::info_span!("request", id = log.id(), via = "fastcgi");
    let output = match run_cgi(&core, request, &log).instrument(span.clone()).await {
        // The CGI's own status line is nginx's to read; for us it is a 200 we relayed.
        Ok(stdout) => {
            log.set_status(200);
            FcgiOutput::Cgi(stdout)
        }
        Err(error) => {
            let _entered = span.enter();
            log.set_status(error.status().as_u16());
            FcgiOutput::Ours(std::io::Cursor::new(cgi_error(&error)))
        }
    };
    FcgiResponse::new(output)
}

/// The value of the parameter `name` (the last one sent, as `fastcgi_param` overrides).
fn param<'a>(params: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .rev()
        .find(|(n, _)| n.as_slice() == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// A parameter that nginx sends empty when it has no value (no body, no login, no TLS).
fn param_with_value<'a>(params: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    param(params, name).filter(|value| !value.is_empty())
}

async fn run_cgi(
    core: &Core,
    request: FcgiRequest,
    log: &Arc<RequestLog>,
) -> Result<CgiStdout, RequestError> {
    let generation = core.current();
    let FcgiRequest { params, stdin, .. } = request;
    let params = params.as_slice();
    let text = |name: &str| String::from_utf8_lossy(param(params, name).unwrap_or_default());
    log.set_fastcgi_request(
        text("REQUEST_METHOD").into_owned(),
        text("REQUEST_URI").into_owned(),
        text("REMOTE_ADDR").into_owned(),
        param_with_value(params, "REMOTE_USER")
            .map(|user| String::from_utf8_lossy(user).into_owned()),
    );
    // nginx passes the decoded path; the router takes an encoded one.
    let mut path = param(params, "SCRIPT_NAME").unwrap_or_default().to_vec();
    path.extend_from_slice(param(params, "PATH_INFO").unwrap_or_default());
    let route = route(&encode_path(&path), Some(&text("QUERY_STRING")))?;
    let length = match param_with_value(params, "CONTENT_LENGTH") {
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(RequestError::BadRequest("invalid CONTENT_LENGTH"))?,
        None => 0,
    };
    let body = Body::Sized {
        length,
        source: BodySource::Stream(Box::pin(stdin)),
        expects_continue: false,
    };
    let meta = request_meta(params, &path);
    let Started {
        output,
        body_received,
        deadline,
        ..
    } = core.start(&generation, &route, &meta, body, log).await?;
    body_complete(body_received, deadline).await?;
    tracing::info!(path = %route.url_path(route.segments.len()), "fastcgi request");
    Ok(CgiStdout {
        output,
        log: log.clone(),
    })
}

/// The request in CGI terms, from nginx's params (`fastcgi_params`).
fn request_meta<'a>(params: &'a [(Vec<u8>, Vec<u8>)], path: &'a [u8]) -> RequestMeta<'a> {
    let get = |name| param_with_value(params, name);
    let https = get("HTTPS").is_some_and(|value| !value.eq_ignore_ascii_case(b"off"))
        || get("REQUEST_SCHEME").is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"https"));
    let remote_user = get("REMOTE_USER");
    // §4.1.1: with a login, the scheme it used (nginx passes REMOTE_USER, not AUTH_TYPE).
    let auth_type =
        remote_user.and(get("AUTH_TYPE").or_else(|| auth_scheme(get("HTTP_AUTHORIZATION"))));
    // §4.1.14: SERVER_NAME is never empty. nginx's is `$server_name`, empty in a server block
    // without one: then the host the client asked for, else the address.
    let server_name = get("SERVER_NAME")
        .or_else(|| {
            get("HTTP_HOST")
                .and_then(|host| std::str::from_utf8(host).ok())
                .map(|host| split_port(host).0.as_bytes())
        })
        .or_else(|| get("SERVER_ADDR"))
        .unwrap_or(b"localhost");
    let default_port: &[u8] = if https { b"443" } else { b"80" };
    RequestMeta {
        method: param(params, "REQUEST_METHOD").unwrap_or(b"GET"),
        protocol: get("SERVER_PROTOCOL").unwrap_or(b"HTTP/1.1"),
        request_uri: get("REQUEST_URI").map_or(Cow::Borrowed(path), Cow::Borrowed),
        remote_addr: Cow::Borrowed(param(params, "REMOTE_ADDR").unwrap_or_default()),
        remote_port: get("REMOTE_PORT").map(Cow::Borrowed),
        https,
        remote_user,
        auth_type,
        server_name: Cow::Borrowed(server_name),
        server_addr: get("SERVER_ADDR").map(Cow::Borrowed),
        server_port: Cow::Borrowed(get("SERVER_PORT").unwrap_or(default_port)),
        content_type: get("CONTENT_TYPE"),
        variables: Variables::FrontServer(params),
    }
}

/// Percent-encodes what the router would otherwise decode or refuse as text.
fn encode_path(path: &[u8]) -> String {
    let mut encoded = String::with_capacity(path.len());
    for &byte in path {
        if byte.is_ascii_graphic() && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A short CGI-style answer for an error: nginx turns it into the HTTP response.
fn cgi_error(error: &RequestError) -> Vec<u8> {
    let (status, text) = render_error(error);
    format!(
        "Status: {} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes()
}

/// The CGI's output as nginx reads it, passed on unparsed: cut off at the deadline or past
/// --max-output; read to its end, it lets the CGI finish; dropped before, it has the CGI
/// killed (see [`CgiOutput`]).
pub struct CgiStdout {
    output: CgiOutput,
    /// Counts the bytes relayed.
    log: Arc<RequestLog>,
}

impl AsyncRead for CgiStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let read = ready!(this.output.poll_read_into(cx, buf)).and_then(|read| {
            this.output.charge(read)?;
            Ok(read)
        });
        match read {
            Ok(0) => this.output.deliver(),
            Ok(read) => this.log.add_bytes_out(read as u64),
            Err(OutputError::Io(error)) => return Poll::Ready(Err(error)),
            Err(error) => {
                tracing::warn!("{error}");
                let kind = match error {
                    OutputError::TooLarge(_) => std::io::ErrorKind::FileTooLarge,
                    _ => std::io::ErrorKind::TimedOut,
                };
                return Poll::Ready(Err(kind.into()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FcgiOutput {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            FcgiOutput::Ours(text) => Pin::new(text).poll_read(cx, buf),
            FcgiOutput::Cgi(stdout) => Pin::new(stdout).poll_read(cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_paths_are_encoded_for_the_router() {
        assert_eq!(encode_path(b"/cgi-bin/a b%c"), "/cgi-bin/a%20b%25c");
        assert_eq!(encode_path(b"/cgi-bin/\xff"), "/cgi-bin/%FF");
        let routed = route(&encode_path(b"/cgi-bin/x/with space"), None).expect("routes");
        assert_eq!(
            (routed.url_path(1).as_str(), routed.segments[1].as_slice()),
            ("/cgi-bin/x", &b"with space"[..])
        );
        assert!(route(&encode_path(b"/cgi-bin/../etc/passwd"), None).is_err());
        assert!(route(&encode_path(b"/etc/passwd"), None).is_err());
    }
}
