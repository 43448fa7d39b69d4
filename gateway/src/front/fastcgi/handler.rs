//! The FastCGI front: nginx's `fastcgi_pass` (with the stock `fastcgi_params`), as with
//! fcgiwrap, but the CGI runs in the jail. nginx has parsed the HTTP request; this maps its
//! params onto the request core: the script is whatever its SCRIPT_NAME and PATH_INFO name
//! under `/cgi-bin/` (the same router as HTTP requests, so anything else is refused), the
//! meta-variables are read from the params, and the CGI's environment is built by the one rule
//! both fronts share (so a peer cannot set `BASH_ENV`, `LD_PRELOAD`, ...). The CGI's output
//! goes back to nginx as CGI output, for nginx to turn into HTTP: its header block read by the
//! HTTP front's strict parser (nginx would act on an `X-Accel-Redirect` in it, so the fields a
//! front server acts on are dropped) and written again, the body after it passed on unparsed.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::timeout_at;
use tracing::Instrument;

use super::server::{serve_connection, FcgiRequest, FcgiResponse};
use crate::front::access::RequestLog;
use crate::front::http::response::{carries_no_body, read_head, CgiHead, HeadStyle};
use crate::front::linger::Stopping;
use crate::front::listen::{
    accept_until, Connection, Listener, OpenConnections, Stream, MAX_CONNECTIONS,
};
use crate::front::request::body::BodySource;
use crate::front::request::env::{auth_scheme, is_host_name, split_port};
use crate::front::request::output::{within_content_length, OutputError};
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
    connections: OpenConnections,
) {
    // nginx sends the client's address as a FastCGI parameter; the peer itself tells nothing
    // about the client. But every FastCGI peer speaks as the front server (REMOTE_USER, the
    // variables --pass-env names), so a peer that is not one is closed before a byte is read.
    let stopping = Stopping::new();
    let serve = |stream: Stream, peer: Connection, permit: tokio::sync::OwnedSemaphorePermit| {
        let core = core.clone();
        let stopping = stopping.clone();
        if !peer.is_front_server(&core.current().config.env) {
            tracing::warn!(
                ?peer,
                "fastcgi connection refused: the peer is not a front server \
                 (--trusted-group on a Unix socket, --trusted-proxy over TCP)"
            );
            core.metrics.fastcgi_peer_refused();
            return;
        }
        connections.spawn(async move {
            let handler = move |request| handle(core.clone(), request);
            if let Err(error) = serve_connection(stream, handler, stopping).await {
                tracing::warn!(?peer, "fastcgi connection ended: {error}");
            }
            drop(permit);
        });
    };
    let permits = accept_until(listener, MAX_CONNECTIONS, shutdown, serve).await;
    stopping.cancel();
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("fastcgi connections still open after {drain:?}; cutting them off");
        connections.cut().await;
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

/// The body of a request without CONTENT_LENGTH: none when STDIN ends at once (nginx's GET),
/// else one of unknown length (nginx with `fastcgi_request_buffering off` passes a chunked
/// upload so), spooled as the HTTP front spools a chunked body so that the CGI gets its
/// CONTENT_LENGTH. Taken for no body, such an upload reached its CGI as nothing, and its
/// client got a 200.
async fn body_of_unknown_length(
    mut stdin: super::FcgiStdin,
    wait: std::time::Duration,
) -> Result<Body, RequestError> {
    use tokio::io::AsyncReadExt;
    let mut first = BytesMut::with_capacity(16 * 1024);
    let read = tokio::time::timeout(wait, stdin.read_buf(&mut first))
        .await
        .map_err(|_| RequestError::BodyTimeout)?
        .map_err(|_| RequestError::BadRequest("request body ended early"))?;
    if read == 0 {
        return Ok(Body::None);
    }
    let rest = std::io::Cursor::new(first.freeze()).chain(stdin);
    Ok(Body::Unsized(BodySource::stream(rest)))
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
    // One --timeout for the request, a body of unknown length read first included.
    let deadline = core.request_deadline();
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
    let body = match param_with_value(params, "CONTENT_LENGTH") {
        Some(value) => Body::Sized {
            length: std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(RequestError::BadRequest("invalid CONTENT_LENGTH"))?,
            source: BodySource::stream(stdin),
            expects_continue: false,
        },
        None => body_of_unknown_length(stdin, generation.config.body_timeout).await?,
    };
    let meta = request_meta(params, &path);
    let Started {
        mut output,
        body_received,
        deadline,
        script,
    } = core
        .start(&generation, &route, &meta, body, log, deadline)
        .await?;
    body_complete(body_received, deadline).await?;
    tracing::info!(path = %route.url_path(route.segments.len()), "fastcgi request");
    // nginx reads this head and acts on X-Accel-Redirect from a fastcgi_pass upstream too:
    // the one strict parser reads it, as over HTTP (the same size limit and deadline, so a
    // malformed head is our 502 and a silent CGI our 504, not whatever nginx makes of them).
    let style = HeadStyle::of_script(&script);
    let (mut head, first) = timeout_at(deadline, read_head(output.stdout(), style))
        .await
        .unwrap_or(Err(RequestError::Timeout))?;
    core.withhold_front_server_headers(&generation.config, &script, &mut head.headers);
    Ok(CgiStdout {
        head: head_block(&head),
        first,
        output,
        // Where no body is sent (HEAD, 1xx, 204, 304), the CGI's Content-Length is that of the
        // body a GET would get, passed on as it is and not held against an output that has
        // none: held, such an answer was cut off and its connection closed.
        remaining: head.content_length.filter(|_| {
            let to_head = param(params, "REQUEST_METHOD") == Some(b"HEAD");
            !carries_no_body(to_head, head.status)
        }),
        log: log.clone(),
    })
}

/// `head` written out again as CGI header fields, for nginx: its status as a Status field
/// (none for a local redirect, which is one because it has none, so nginx treats it as it
/// would have), an NPH script's status line included; then its fields in the CGI's order.
/// Each name and value went through the parser, so none holds a line end.
fn head_block(head: &CgiHead) -> Bytes {
    let mut block = BytesMut::with_capacity(256);
    if head.local_redirect.is_none() {
        let reason = head.status.canonical_reason().unwrap_or("");
        let status = format!("Status: {} {reason}", head.status.as_u16());
        block.put_slice(status.trim_end().as_bytes());
        block.put_slice(b"\r\n");
    }
    for (name, value) in &head.headers {
        block.put_slice(name.as_str().as_bytes());
        block.put_slice(b": ");
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    block.put_slice(b"\r\n");
    block.freeze()
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
    // without one: then the host the client asked for if it names one (nginx lets a Host of
    // `a'b;$(id)` through), else the address.
    let server_name = get("SERVER_NAME")
        .or_else(|| {
            get("HTTP_HOST")
                .and_then(|host| std::str::from_utf8(host).ok())
                .map(|host| split_port(host).0)
                .filter(|name| is_host_name(name))
                .map(str::as_bytes)
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

/// The CGI's output as nginx reads it: its head written again, then its body passed on
/// unparsed, cut off at the deadline or past --max-output; read to its end, it lets the CGI
/// finish; dropped before, it has the CGI killed (see [`CgiOutput`]).
pub struct CgiStdout {
    /// The head as written again, sent first. As over HTTP, --max-output and the byte count
    /// are the body's.
    head: Bytes,
    /// Body bytes that came in the reads of the head, sent next.
    first: Bytes,
    output: CgiOutput,
    /// What the CGI's Content-Length still allows, which the head passed on to nginx promises:
    /// as over HTTP, what goes beyond it is dropped, and an output that ends short of it fails
    /// the request. Else a CGI could write a second response after the first's declared end,
    /// for a front server that trusts the length (nginx before 1.19.1 did).
    remaining: Option<u64>,
    /// Counts the body bytes relayed.
    log: Arc<RequestLog>,
}

impl CgiStdout {
    /// How many of `bytes` more body bytes the CGI's Content-Length allows; counts them, and
    /// marks the output delivered once it is all there.
    fn allow(&mut self, bytes: usize) -> usize {
        let allowed = within_content_length(&mut self.remaining, bytes);
        if self.remaining == Some(0) {
            self.output.deliver();
        }
        allowed
    }
}

/// A cut-off CGI output as the error the FastCGI connection reports (logged here); a read
/// error as it was.
fn cut_off(error: OutputError) -> std::io::Error {
    match error {
        OutputError::Io(error) => error,
        error => {
            tracing::warn!("{error}");
            let kind = match error {
                OutputError::TooLarge(_) => std::io::ErrorKind::FileTooLarge,
                _ => std::io::ErrorKind::TimedOut,
            };
            kind.into()
        }
    }
}

impl AsyncRead for CgiStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.head.is_empty() {
            let take = this.head.len().min(buf.remaining());
            buf.put_slice(&this.head.split_to(take));
            return Poll::Ready(Ok(()));
        }
        if this.remaining == Some(0) {
            // All the CGI declared is relayed: the end, whatever it writes after.
            return Poll::Ready(Ok(()));
        }
        if !this.first.is_empty() {
            let take = this.first.len().min(buf.remaining());
            let take = this.allow(take);
            if let Err(error) = this.output.charge(take) {
                return Poll::Ready(Err(cut_off(error)));
            }
            buf.put_slice(&this.first.split_to(take));
            if this.remaining == Some(0) {
                this.first.clear();
            }
            this.log.add_bytes_out(take as u64);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = ready!(this.output.poll_read_into(cx, buf)).and_then(|read| {
            let allowed = this.allow(read);
            buf.set_filled(before + allowed);
            this.output.charge(allowed)?;
            Ok(allowed)
        });
        match read {
            Ok(0) if this.remaining.is_some_and(|left| left > 0) => {
                tracing::warn!("CGI output ended before its Content-Length");
                return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => match ready!(this.output.poll_whole(cx, true)) {
                Ok(()) => this.output.deliver(),
                // Killed with its worker, or by a stop: nginx must not take it as whole.
                Err(error) => return Poll::Ready(Err(cut_off(error))),
            },
            Ok(read) => this.log.add_bytes_out(read as u64),
            Err(error) => {
                // A read that fails hands over nothing (AsyncRead's contract), not the bytes
                // past the cap.
                buf.set_filled(before);
                return Poll::Ready(Err(cut_off(error)));
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
    use crate::front::http::response::parse_head;

    /// `block` parsed in `style` and written again for nginx, as text.
    fn written_again(block: &[u8], style: HeadStyle) -> String {
        let head = parse_head(block, style).expect("a valid head");
        String::from_utf8(head_block(&head).to_vec()).expect("text")
    }

    #[test]
    fn a_head_is_written_again_as_cgi_fields_in_its_order() {
        assert_eq!(
            written_again(
                b"Status: 404 Gone Fishing\nContent-Type: text/plain\nX-A: 1\nSet-Cookie: a=1\n\
                  X-A:  2 \r\nContent-Length: 5\nTransfer-Encoding: chunked",
                HeadStyle::Cgi
            ),
            "Status: 404 Not Found\r\ncontent-type: text/plain\r\nx-a: 1\r\nx-a: 2\r\n\
             set-cookie: a=1\r\ncontent-length: 5\r\n\r\n"
        );
        // No Status: the parser's 200, or 302 with a Location, said explicitly.
        assert_eq!(
            written_again(b"Content-Type: text/html", HeadStyle::Cgi),
            "Status: 200 OK\r\ncontent-type: text/html\r\n\r\n"
        );
        assert_eq!(
            written_again(b"Location: https://example.org/", HeadStyle::Cgi),
            "Status: 302 Found\r\nlocation: https://example.org/\r\n\r\n"
        );
        // A local redirect stays one: no Status.
        assert_eq!(
            written_again(b"Location: /cgi-bin/other?x=1", HeadStyle::Cgi),
            "location: /cgi-bin/other?x=1\r\n\r\n"
        );
        // An NPH script's status line becomes a field nginx reads; a code without a reason.
        assert_eq!(
            written_again(b"HTTP/1.1 418 Teapot\r\nX-Nph: yes\r", HeadStyle::Nph),
            "Status: 418 I'm a teapot\r\nx-nph: yes\r\n\r\n"
        );
        assert_eq!(
            written_again(b"Status: 299\nContent-Type: a/b", HeadStyle::Cgi),
            "Status: 299\r\ncontent-type: a/b\r\n\r\n"
        );
    }

    /// A CGI output whose pipe holds `rest`, its head `head` and first body bytes `first`
    /// already read; with its delivery.
    async fn stdout_of(
        head: &'static [u8],
        first: &'static [u8],
        rest: &[u8],
        max_output: Option<u64>,
    ) -> (CgiStdout, tokio::sync::oneshot::Receiver<()>) {
        declared(head, first, rest, max_output, None).await
    }

    /// [`stdout_of`] for a CGI whose head declared `content_length`.
    async fn declared(
        head: &'static [u8],
        first: &'static [u8],
        rest: &[u8],
        max_output: Option<u64>,
        content_length: Option<u64>,
    ) -> (CgiStdout, tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::AsyncWriteExt;
        let (mut cgi, pipe) = tokio::net::unix::pipe::pipe().expect("pipe");
        cgi.write_all(rest).await.expect("write");
        drop(cgi);
        let (delivered, delivery) = tokio::sync::oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let metrics = Arc::new(crate::front::metrics::Metrics::new());
        let stdout = CgiStdout {
            head: Bytes::from_static(head),
            first: Bytes::from_static(first),
            output: CgiOutput::new(
                pipe,
                deadline,
                max_output,
                delivered,
                crate::front::request::output::tests::exited(),
            ),
            remaining: content_length,
            log: RequestLog::new(1, "fastcgi", crate::config::AccessLog::Off, metrics),
        };
        (stdout, delivery)
    }

    /// The head first, then the body; only the body counts against --max-output, as over HTTP.
    #[tokio::test]
    async fn the_head_goes_first_and_only_the_body_counts_as_output() {
        use tokio::io::AsyncReadExt;
        let head = b"Status: 200 OK\r\ncontent-type: text/plain\r\n\r\n";
        let (mut stdout, delivery) = stdout_of(head, b"abc", b"de", Some(5)).await;
        let mut relayed = Vec::new();
        stdout
            .read_to_end(&mut relayed)
            .await
            .expect("within --max-output");
        assert_eq!(relayed, [&head[..], b"abcde"].concat());
        assert!(delivery.await.is_ok(), "read to its end: delivered");
        let (mut stdout, delivery) = stdout_of(head, b"abc", b"def", Some(5)).await;
        let error = stdout.read_to_end(&mut Vec::new()).await.expect_err("over");
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        drop(stdout);
        assert!(delivery.await.is_err(), "cut off: abandoned");
        let (mut stdout, _) = stdout_of(head, b"abcdef", b"", Some(5)).await;
        let error = stdout.read_to_end(&mut Vec::new()).await.expect_err("over");
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
    }

    /// The body is what the CGI's Content-Length declared, as over HTTP: a second response
    /// written after it goes nowhere, and an output that ends short of it fails.
    #[tokio::test]
    async fn the_body_is_held_to_its_content_length() {
        use tokio::io::AsyncReadExt;
        let head = b"Status: 200 OK\r\ncontent-length: 5\r\n\r\n";
        let smuggled = b"loHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nBAD";
        let (mut stdout, delivery) = declared(head, b"hel", smuggled, None, Some(5)).await;
        let mut relayed = Vec::new();
        stdout.read_to_end(&mut relayed).await.expect("relayed");
        assert_eq!(relayed, [&head[..], b"hello"].concat());
        assert!(delivery.await.is_ok(), "all it declared: delivered");
        // Cut within the bytes that came with the head.
        let (mut stdout, _) = declared(head, b"hello, more", b"", None, Some(5)).await;
        let mut relayed = Vec::new();
        stdout.read_to_end(&mut relayed).await.expect("relayed");
        assert_eq!(relayed, [&head[..], b"hello"].concat());
        let (mut stdout, _) = declared(head, b"he", b"l", None, Some(5)).await;
        let error = stdout
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("short");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// What is written again is what the parser accepts, and it reads back as the same head.
    #[test]
    fn a_head_written_again_parses_to_the_same_head() {
        for block in [
            &b"Status: 201 Created\nContent-Type: text/plain\nX: caf\xc3\xa9\nContent-Length: 3"[..],
            b"Location: /cgi-bin/x",
            b"Location: https://example.org/\nContent-Type: text/html",
            b"Status: 204",
        ] {
            let head = parse_head(block, HeadStyle::Cgi).expect("a valid head");
            let written = head_block(&head);
            let again = parse_head(&written[..written.len() - 2], HeadStyle::Cgi)
                .expect("written again, it parses");
            assert_eq!(
                (
                    again.status,
                    again.headers,
                    again.content_length,
                    again.local_redirect
                ),
                (
                    head.status,
                    head.headers,
                    head.content_length,
                    head.local_redirect
                ),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

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
