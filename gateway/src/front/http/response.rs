//! CGI output → HTTP response (RFC 3875 §6): the header block parsed under a size limit, the
//! body streamed from the CGI's stdout as it comes, never buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use crate::front::request::output::{within_content_length, CgiOutput, OutputError};
use crate::front::request::RequestError;

/// Largest CGI header block; a CGI that writes more before its blank line is broken (502).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The parsed header block of a CGI response.
#[derive(Debug)]
pub struct CgiHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The CGI's own Content-Length, enforced on the body.
    pub content_length: Option<u64>,
    /// `Location: /local/path` without a Status: the gateway serves that path itself
    /// (RFC 3875 §6.2.2) and this response is not sent.
    pub local_redirect: Option<String>,
}

/// How a CGI writes its header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStyle {
    /// CGI header fields (RFC 3875 §6.3), `Status:` optional.
    Cgi,
    /// A non-parsed-header script (`nph-` name, RFC 3875 §5): an HTTP status line first.
    Nph,
}

impl HeadStyle {
    /// How the script at the URL path `script` writes its head: RFC 3875 §5, a script whose
    /// name starts with `nph-` writes the HTTP head itself.
    pub fn of_script(script: &str) -> HeadStyle {
        match script.rsplit('/').next() {
            Some(name) if name.starts_with("nph-") => HeadStyle::Nph,
            _ => HeadStyle::Cgi,
        }
    }
}

/// Reads from `stdout` until the blank line that ends the header block. Returns the parsed head
/// and whatever body bytes came in the same reads.
pub async fn read_head<R: AsyncRead + Unpin>(
    stdout: &mut R,
    style: HeadStyle,
) -> Result<(CgiHead, Bytes), RequestError> {
    let mut buffer = BytesMut::with_capacity(4096);
    let mut scanned = 0;
    loop {
        if let Some((head_end, body_start)) = find_blank_line(&buffer, scanned) {
            let head = parse_head(&buffer[..head_end], style)?;
            let body = buffer.split_off(body_start).freeze();
            return Ok((head, body));
        }
        // Resume the search one byte early: a line end may straddle two reads.
        scanned = buffer.len().saturating_sub(1);
        if buffer.len() >= MAX_HEADER_BYTES {
            return Err(RequestError::BadCgiOutput(format!(
                "no end of headers in {MAX_HEADER_BYTES} bytes"
            )));
        }
        buffer.reserve(4096);
        let read = stdout
            .read_buf(&mut buffer)
            .await
            .map_err(|e| RequestError::BadCgiOutput(format!("reading CGI output: {e}")))?;
        if read == 0 {
            let why = if buffer.is_empty() {
                "CGI exited without output"
            } else {
                "CGI output ended inside its headers"
            };
            return Err(RequestError::BadCgiOutput(why.into()));
        }
    }
}

/// Finds the first empty line (`\n\n` or `\r\n\r\n`, or a mix) at or after `from`. Returns where
/// the header lines end and where the body starts.
fn find_blank_line(buffer: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut start = from;
    while let Some(offset) = buffer[start..].iter().position(|&b| b == b'\n') {
        let newline = start + offset;
        // The line before this newline is empty if it is preceded by "\n" or "\n\r".
        let before = &buffer[..newline];
        if newline == 0 || before.ends_with(b"\n") {
            return Some((newline, newline + 1));
        }
        if before == b"\r" || before.ends_with(b"\n\r") {
            return Some((newline - 1, newline + 1));
        }
        start = newline + 1;
    }
    None
}

/// Parses header lines (RFC 3875 §6.3). Strict: a malformed line makes the response a 502
/// rather than a guess, since whatever we guess is passed on to the client.
pub fn parse_head(block: &[u8], style: HeadStyle) -> Result<CgiHead, RequestError> {
    let bad = |why: String| RequestError::BadCgiOutput(why);
    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut content_length = None;
    let mut lines = block.split(|&b| b == b'\n');
    if style == HeadStyle::Nph {
        let line = lines.next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        status = Some(
            parse_status_line(line)
                .ok_or_else(|| bad("NPH output without an HTTP status line".into()))?,
        );
    }
    for raw_line in lines {
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("header line without ':'".into()))?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| bad("invalid header name".into()))?;
        let value = line[colon + 1..].trim_ascii();
        // Bytes past ASCII must be UTF-8: Latin-1 or garbage would reach the client as bytes
        // that clients and proxies read each their own way (RFC 9110 §5.5: opaque at best).
        if std::str::from_utf8(value).is_err() {
            return Err(bad(format!("value of {name} is not UTF-8")));
        }
        let value =
            HeaderValue::from_bytes(value).map_err(|_| bad(format!("invalid value for {name}")))?;
        match name.as_str() {
            "status" => {
                status = Some(parse_status(&value).ok_or_else(|| bad("invalid Status".into()))?)
            }
            "content-length" => {
                // RFC 9110 §8.6: 1*DIGIT. `parse` alone also takes a sign ("+5").
                let digits = value.as_bytes();
                let length = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                    .then(|| value.to_str().ok()?.parse::<u64>().ok())
                    .flatten();
                let length = length.ok_or_else(|| bad("invalid Content-Length".into()))?;
                // Two lengths that differ: which one frames the body is anyone's guess (a front
                // server may take the other), so neither is (RFC 9112 §6.3).
                if content_length.is_some_and(|first| first != length) {
                    return Err(bad("two different Content-Lengths".into()));
                }
                content_length = Some(length);
            }
            // Framing and connection management are ours: a CGI's Transfer-Encoding would
            // describe bytes it did not actually encode.
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" => {}
            _ => {
                headers.append(name, value);
            }
        }
    }
    if headers.is_empty() && status.is_none() && content_length.is_none() {
        return Err(bad("no header fields".into()));
    }
    let location = headers.get(header::LOCATION).and_then(|l| l.to_str().ok());
    // RFC 3875 §6.2.2: a local path with no Status is for the server to serve.
    let local_redirect = match (style, status, location) {
        (HeadStyle::Cgi, None, Some(location)) if location.starts_with('/') => {
            Some(location.to_owned())
        }
        _ => None,
    };
    let status = match status {
        Some(status) => status,
        // An absolute Location without Status is a client redirect (§6.2.3, §6.2.4).
        None if location.is_some() => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    // §6.3.1: a document response must say what it is; redirects and body-less statuses need not.
    if style == HeadStyle::Cgi
        && location.is_none()
        && !carries_no_body(false, status)
        && !headers.contains_key(header::CONTENT_TYPE)
    {
        return Err(bad("document response without Content-Type".into()));
    }
    // No length on a 204 (RFC 9110 §8.6): a proxy that honoured one would take that many bytes
    // of the next response on the connection for this one's body.
    let content_length = content_length.filter(|_| status != StatusCode::NO_CONTENT);
    if let Some(length) = content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(CgiHead {
        status,
        headers,
        content_length,
        local_redirect,
    })
}

/// Whether an answer of `status` (to a HEAD request, if `to_head`) goes out without any body
/// (RFC 9110 §6.4.1): a HEAD's, a 1xx, a 204 or a 304. Its Content-Length, if the CGI gave one,
/// is then that of the body a GET would get, not of the CGI's output. Both fronts ask it.
pub fn carries_no_body(to_head: bool, status: StatusCode) -> bool {
    to_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// `HTTP/1.1 200 OK` (or `HTTP/1.0`, reason optional) → 200.
fn parse_status_line(line: &[u8]) -> Option<StatusCode> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next()?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    final_status(code)
}

/// A final status a CGI may answer with: 200 to 599 (RFC 9110 §15; `http` takes 100 to 999,
/// and a client meets codes past 599 as nothing it knows). 1xx are the server's own.
fn final_status(code: &str) -> Option<StatusCode> {
    StatusCode::from_bytes(code.as_bytes())
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
}

/// `Status: 404 Not Found` → 404. The reason phrase is not passed on (HTTP/1.1 makes it
/// optional and hyper writes the canonical one).
fn parse_status(value: &HeaderValue) -> Option<StatusCode> {
    let text = value.to_str().ok()?;
    let code = text.split_ascii_whitespace().next()?;
    if code.len() != 3 {
        return None;
    }
    final_status(code)
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("CGI sent {sent} of the {declared} bytes its Content-Length declared")]
    Short { sent: u64, declared: u64 },
    #[error("the request body failed while the response was sent: {0}")]
    RequestBody(RequestError),
}

/// Most body bytes [`CgiBody::settle`] holds back to send the response in one write.
pub const SETTLE_MAX_BYTES: usize = 64 * 1024;
/// How long [`CgiBody::settle`] waits for a CGI's output to end: a short CGI has exited by
/// then (its answer is complete only then anyway), and a streaming one's first bytes wait no
/// longer than this.
pub const SETTLE_WINDOW: Duration = Duration::from_millis(2);

/// The response body: the CGI's output after its header block, as it arrives, held to the
/// CGI's own Content-Length when it declared one.
pub struct CgiBody {
    /// Bytes read and counted already (by [`CgiBody::settle`]), to send first.
    ready: Option<Bytes>,
    /// The error that ended the body while [`CgiBody::settle`] read it: it goes to hyper
    /// after `ready`, the way [`CgiBody::fail`] hands one over.
    failed_after_ready: Option<BodyError>,
    first: Option<Bytes>,
    output: CgiOutput,
    /// Bytes still owed under the CGI's Content-Length, if it declared one.
    remaining: Option<u64>,
    declared: Option<u64>,
    finished: bool,
    /// The error that ends the body, handed to hyper on the poll after it was found.
    failed: Option<BodyError>,
    /// Read buffer, kept across reads: once hyper has written (and dropped) a chunk, the next
    /// read takes its memory back instead of allocating again.
    buffer: BytesMut,
    /// How the request body ends, while it still arrives beside the response (a client that
    /// is not a front server): a failure cuts the response off.
    request_body: Option<oneshot::Receiver<Result<(), RequestError>>>,
    /// While [`CgiBody::settle`] reads: the end of the output does not wait for the news of
    /// the CGI's exit (an answer that is whole in the window goes out whole at once).
    settling: bool,
}

impl CgiBody {
    /// `first`: body bytes that came with the header block; `request_body`: the request
    /// body's end, if it is still arriving.
    pub fn new(
        first: Bytes,
        output: CgiOutput,
        content_length: Option<u64>,
        request_body: Option<oneshot::Receiver<Result<(), RequestError>>>,
    ) -> Self {
        CgiBody {
            ready: None,
            failed_after_ready: None,
            first: (!first.is_empty()).then_some(first),
            output,
            remaining: content_length,
            declared: content_length,
            finished: false,
            failed: None,
            buffer: BytesMut::new(),
            request_body,
            settling: false,
        }
    }

    /// The whole body, if the CGI ends it within `window` and it holds at most
    /// [`SETTLE_MAX_BYTES`]: the response then goes out in one write, with a Content-Length,
    /// instead of its head and chunks first and its last chunk once the CGI's output ends (one
    /// TCP send instead of two for a short CGI). Else the body streams on from what was read,
    /// `window` later at most.
    pub async fn settle(mut self, window: Duration) -> Either<Full<Bytes>, CgiBody> {
        let until = tokio::time::Instant::now() + window;
        let mut read = BytesMut::new();
        self.settling = true;
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx));
            match tokio::time::timeout_at(until, frame).await {
                Ok(None) => {
                    self.settling = false;
                    return Either::Left(Full::new(read.freeze()));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                    }
                    if read.len() > SETTLE_MAX_BYTES {
                        break;
                    }
                }
                Ok(Some(Err(error))) => {
                    // Handed over after what was read, as it would have been.
                    self.failed_after_ready = Some(error);
                    break;
                }
                Err(_) => break,
            }
        }
        self.settling = false;
        self.ready = (!read.is_empty()).then(|| read.freeze());
        Either::Right(self)
    }

    /// Reads the rest of the CGI's output and drops it, for an answer that carries no body:
    /// the output is delivered at its end (the CGI then has its deadline to exit), or cut off
    /// at the deadline or `--max-output`, as when it is sent.
    pub async fn read_to_end(mut self) {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }

    /// `Some(error)` once the request body has failed (too slow, no room, cut short);
    /// forgets it once it is all in.
    fn request_body_failed(&mut self, cx: &mut Context<'_>) -> Option<BodyError> {
        let received = self.request_body.as_mut()?;
        let outcome = match Pin::new(received).poll(cx) {
            Poll::Pending => return None,
            Poll::Ready(Ok(outcome)) => outcome,
            Poll::Ready(Err(_)) => Err(RequestError::BadRequest("request body ended early")),
        };
        self.request_body = None;
        outcome.err().map(BodyError::RequestBody)
    }

    /// Ends the body with `error`, logged: the client sees the response cut off, the
    /// connection closed before its end (an error makes hyper abort the connection, so the
    /// client cannot take it for a whole response). The error goes to hyper on the next poll,
    /// not this one: hyper drops what it has buffered when a body fails, so it first gets the
    /// chance to flush the head and the bytes so far (else a CGI that dies right after its
    /// head would leave the client with no response at all).
    fn fail(
        &mut self,
        error: BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        tracing::warn!("{error}");
        self.hand_over(error, cx)
    }

    /// Ends the body with `error` on the next poll (see [`CgiBody::fail`]), without logging.
    fn hand_over(
        &mut self,
        error: BodyError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.finished = true;
        self.failed = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Cuts `chunk` to what the CGI's Content-Length still allows, and counts it against
    /// `--max-output`.
    fn take_allowed(&mut self, mut chunk: Bytes) -> Result<Bytes, OutputError> {
        chunk.truncate(within_content_length(&mut self.remaining, chunk.len()));
        if self.remaining == Some(0) {
            self.finished = true;
            self.output.deliver();
        }
        self.output.charge(chunk.len())?;
        Ok(chunk)
    }
}

impl Body for CgiBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(ready) = this.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(ready))));
        }
        if let Some(error) = this.failed_after_ready.take() {
            return this.hand_over(error, cx);
        }
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(first) = this.first.take() {
            return match this.take_allowed(first) {
                Ok(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                Err(error) => this.fail(error.into(), cx),
            };
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(error) = this.request_body_failed(cx) {
            return this.fail(error, cx);
        }
        let filled = match ready!(this.output.poll_read(cx, &mut this.buffer)) {
            Ok(filled) => filled,
            Err(error) => return this.fail(error.into(), cx),
        };
        if filled == 0 {
            if let (Some(remaining @ 1..), Some(declared)) = (this.remaining, this.declared) {
                // Ending here would let the client take a short body for a whole one.
                this.finished = true;
                let sent = declared - remaining;
                return this.fail(BodyError::Short { sent, declared }, cx);
            }
            // Nor a body its CGI was killed in the middle of (its worker lost, a stop).
            let whole = ready!(this.output.poll_whole(cx, !this.settling));
            this.finished = true;
            if let Err(error) = whole {
                return this.fail(error.into(), cx);
            }
            this.output.deliver();
            return Poll::Ready(None);
        }
        let chunk = this.buffer.split().freeze();
        match this.take_allowed(chunk) {
            Ok(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Err(error) => this.fail(error.into(), cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
            && self.ready.is_none()
            && self.failed_after_ready.is_none()
            && self.first.is_none()
            && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::front::request::output::tests::exited;
    use http_body_util::BodyExt;

    #[test]
    fn blank_line_is_found_with_any_line_ending() {
        assert_eq!(find_blank_line(b"A: b\n\nbody", 0), Some((5, 6)));
        assert_eq!(find_blank_line(b"A: b\r\n\r\nbody", 0), Some((6, 8)));
        assert_eq!(find_blank_line(b"A: b\r\n\nbody", 0), Some((6, 7)));
        assert_eq!(find_blank_line(b"\nbody", 0), Some((0, 1)));
        assert_eq!(find_blank_line(b"\r\nbody", 0), Some((0, 2)));
        assert_eq!(find_blank_line(b"A: b\nC: d\n", 0), None);
        assert_eq!(find_blank_line(b"A: b\r\n\r", 0), None);
    }

    /// A 204 goes out without the Content-Length its CGI gave (RFC 9110 §8.6); a 304 keeps
    /// it (the length of what a 200 would have had).
    #[test]
    fn a_no_content_answer_has_no_length() {
        let none = parse_head(b"Status: 204\nContent-Length: 40", HeadStyle::Cgi).unwrap();
        assert_eq!(none.status, StatusCode::NO_CONTENT);
        assert_eq!(none.content_length, None);
        assert!(!none.headers.contains_key(header::CONTENT_LENGTH));
        let not_modified = parse_head(b"Status: 304\nContent-Length: 40", HeadStyle::Cgi).unwrap();
        assert_eq!(not_modified.content_length, Some(40));
    }

    #[test]
    fn status_location_and_headers_are_parsed() {
        let head = parse_head(
            b"Status: 404 Not Found\nContent-Type: text/plain\nX-A: 1\nX-A: 2",
            HeadStyle::Cgi,
        )
        .unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        let redirect = parse_head(b"Location: http://example.org/", HeadStyle::Cgi).unwrap();
        assert_eq!(redirect.status, StatusCode::FOUND);
        let plain = parse_head(
            b"Content-Type: text/html\r\nContent-Length: 5\r",
            HeadStyle::Cgi,
        )
        .unwrap();
        assert_eq!(
            (plain.status, plain.content_length),
            (StatusCode::OK, Some(5))
        );
        let utf8 = parse_head(b"Content-Type: text/plain\nX: caf\xc3\xa9", HeadStyle::Cgi).unwrap();
        assert_eq!(utf8.headers.get("x").unwrap().as_bytes(), "café".as_bytes());
        let framing = parse_head(
            b"Content-Type: a/b\nTransfer-Encoding: chunked\nConnection: close",
            HeadStyle::Cgi,
        )
        .unwrap();
        assert!(
            framing.headers.get("transfer-encoding").is_none()
                && framing.headers.get("connection").is_none()
        );
    }

    #[test]
    fn nph_scripts_are_known_by_name() {
        assert_eq!(HeadStyle::of_script("/cgi-bin/nph-tea"), HeadStyle::Nph);
        assert_eq!(HeadStyle::of_script("/cgi-bin/app/nph-raw"), HeadStyle::Nph);
        assert_eq!(HeadStyle::of_script("/cgi-bin/tea"), HeadStyle::Cgi);
        assert_eq!(HeadStyle::of_script("/cgi-bin/nph-dir/tea"), HeadStyle::Cgi);
    }

    #[test]
    fn response_kinds_of_rfc3875_section_6() {
        let local = parse_head(b"Location: /cgi-bin/other?x=1", HeadStyle::Cgi).unwrap();
        assert_eq!(local.local_redirect.as_deref(), Some("/cgi-bin/other?x=1"));
        let client = parse_head(b"Location: https://example.org/", HeadStyle::Cgi).unwrap();
        assert_eq!(
            (client.status, client.local_redirect),
            (StatusCode::FOUND, None)
        );
        let with_document = parse_head(
            b"Status: 301 Moved\nLocation: https://example.org/\nContent-Type: text/html",
            HeadStyle::Cgi,
        )
        .unwrap();
        assert_eq!(with_document.status, StatusCode::MOVED_PERMANENTLY);
        let local_with_status = parse_head(b"Status: 302\nLocation: /x", HeadStyle::Cgi).unwrap();
        assert_eq!(
            (local_with_status.status, local_with_status.local_redirect),
            (StatusCode::FOUND, None)
        );
        assert!(
            parse_head(b"X-Only: 1", HeadStyle::Cgi).is_err(),
            "no Content-Type"
        );
        assert!(
            parse_head(b"Status: 204", HeadStyle::Cgi).is_ok(),
            "204 has no body to describe"
        );
        let nph = parse_head(b"HTTP/1.1 201 Created\r\nX-A: 1\r", HeadStyle::Nph).unwrap();
        assert_eq!(nph.status, StatusCode::CREATED);
        let nph_bare =
            parse_head(b"HTTP/1.0 404\nContent-Type: text/plain", HeadStyle::Nph).unwrap();
        assert_eq!(nph_bare.status, StatusCode::NOT_FOUND);
        for bad in [
            &b"Content-Type: text/plain"[..],
            b"HTTP/2 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 099 x",
        ] {
            assert!(
                parse_head(bad, HeadStyle::Nph).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_heads_are_rejected() {
        assert!(parse_head(b"HTTP/1.1 600 Odd\r\nX: 1", HeadStyle::Nph).is_err());
        for block in [
            &b"no colon here"[..],
            b"Status: abc",
            b"Status: 99 Too Small",
            b"Status: 2000",
            // Past RFC 9110's 599 (`http` takes up to 999): went out as `999 <none>`.
            b"Status: 600\nContent-Type: a/b",
            b"Status: 999 Odd\nContent-Type: a/b",
            b"Bad Name: x",
            b"X: a\rb",
            b"X: \x00",
            b"Content-Type: text/plain\nX: caf\xe9",
            b"Content-Type: text/plain\nX\xc3\xa9: a",
            b"Content-Length: -1",
            // Found with the cgi_head fuzz target's check (fuzz/corpus/cgi_head/
            // seed-content-length-sign): a sign was accepted, "+5" read as 5.
            b"Content-Type: text/plain\nContent-Length: +5",
            // Two lengths: the last one was taken, a front server might take the first.
            b"Content-Type: text/plain\nContent-Length: 3\nContent-Length: 10",
            b"",
        ] {
            assert!(
                parse_head(block, HeadStyle::Cgi).is_err(),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

    /// The CGI's output `rest` behind a pipe, as the core hands it over, and its delivery.
    async fn output_of(
        rest: &[u8],
        max_output: Option<u64>,
    ) -> (CgiOutput, tokio::sync::oneshot::Receiver<()>) {
        use tokio::io::AsyncWriteExt;
        let (mut cgi, stdout) = tokio::net::unix::pipe::pipe().unwrap();
        cgi.write_all(rest).await.unwrap();
        drop(cgi);
        let (delivered, delivery) = tokio::sync::oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        (
            CgiOutput::new(stdout, deadline, max_output, delivered, exited()),
            delivery,
        )
    }

    #[tokio::test]
    async fn head_then_body_stream() {
        let output: &[u8] = b"Content-Type: text/plain\r\n\r\nhello, world";
        let mut reader = output;
        let (head, first) = read_head(&mut reader, HeadStyle::Cgi).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        let (output, delivery) = output_of(reader, None).await;
        let body = CgiBody::new(first, output, None, None);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello, world");
        assert!(delivery.await.is_ok(), "read to its end: delivered");
    }

    #[tokio::test]
    async fn short_body_is_an_error_and_long_body_is_cut() {
        let (output, delivery) = output_of(b"", None).await;
        let short = CgiBody::new(Bytes::from_static(b"abc"), output, Some(10), None);
        assert!(short.collect().await.is_err());
        assert!(delivery.await.is_err(), "a short body is not delivered");
        let (output, delivery) = output_of(b"defgh", None).await;
        let long = CgiBody::new(Bytes::from_static(b"abc"), output, Some(4), None);
        assert_eq!(&long.collect().await.unwrap().to_bytes()[..], b"abcd");
        assert!(delivery.await.is_ok());
    }

    #[tokio::test]
    async fn output_over_the_cap_is_cut_off() {
        let (output, _) = output_of(b"de", Some(5)).await;
        let within = CgiBody::new(Bytes::from_static(b"abc"), output, None, None);
        assert_eq!(&within.collect().await.unwrap().to_bytes()[..], b"abcde");
        let (output, delivery) = output_of(b"def", Some(5)).await;
        let over = CgiBody::new(Bytes::from_static(b"abc"), output, None, None);
        assert!(matches!(
            over.collect().await,
            Err(BodyError::Output(OutputError::TooLarge(5)))
        ));
        assert!(delivery.await.is_err(), "cut off: abandoned");
    }

    /// A response sent while the request body still arrives: the body's end, once whole, lets
    /// the response finish; its failure (too slow, here) cuts the response off, even while the
    /// CGI is silent.
    #[tokio::test]
    async fn a_request_body_that_fails_cuts_the_response_off() {
        let (output, _) = output_of(b"de", None).await;
        let (whole, received) = tokio::sync::oneshot::channel();
        whole.send(Ok(())).unwrap();
        let body = CgiBody::new(Bytes::from_static(b"abc"), output, None, Some(received));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcde");

        let (_cgi, stdout) = tokio::net::unix::pipe::pipe().unwrap();
        let (delivered, _delivery) = tokio::sync::oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let output = CgiOutput::new(stdout, deadline, None, delivered, exited());
        let (failed, received) = tokio::sync::oneshot::channel();
        let body = CgiBody::new(Bytes::from_static(b"abc"), output, None, Some(received));
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            failed.send(Err(RequestError::BodyTimeout)).unwrap();
        });
        assert!(matches!(
            body.collect().await,
            Err(BodyError::RequestBody(RequestError::BodyTimeout))
        ));
    }

    /// A CGI whose output ends within the window is answered whole, as one body of known
    /// length (one write, with a Content-Length); one still writing streams on from what was
    /// read, nothing lost or counted twice against its Content-Length.
    #[tokio::test]
    async fn a_body_that_ends_at_once_is_sent_whole_and_others_stream_on() {
        let (output, delivery) = output_of(b"de", None).await;
        let body = CgiBody::new(Bytes::from_static(b"abc"), output, None, None);
        let Either::Left(whole) = body.settle(SETTLE_WINDOW).await else {
            panic!("an ended body is sent whole");
        };
        assert_eq!(whole.size_hint().exact(), Some(5));
        assert_eq!(&whole.collect().await.unwrap().to_bytes()[..], b"abcde");
        assert!(delivery.await.is_ok(), "read to its end: delivered");

        use tokio::io::AsyncWriteExt;
        let (mut cgi, stdout) = tokio::net::unix::pipe::pipe().unwrap();
        cgi.write_all(b"de").await.unwrap();
        let (delivered, delivery) = tokio::sync::oneshot::channel();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let output = CgiOutput::new(stdout, deadline, None, delivered, exited());
        let body = CgiBody::new(Bytes::from_static(b"abc"), output, Some(7), None);
        let Either::Right(streaming) = body.settle(SETTLE_WINDOW).await else {
            panic!("a body still being written streams");
        };
        cgi.write_all(b"fg").await.unwrap();
        drop(cgi);
        assert_eq!(
            &streaming.collect().await.unwrap().to_bytes()[..],
            b"abcdefg"
        );
        assert!(delivery.await.is_ok());

        // Ended short of its Content-Length: the bytes first, then the error, not a whole
        // body the client could take for the answer.
        let (output, _) = output_of(b"de", None).await;
        let body = CgiBody::new(Bytes::from_static(b"abc"), output, Some(10), None);
        let Either::Right(mut short) = body.settle(SETTLE_WINDOW).await else {
            panic!("a short body is never sent whole");
        };
        let first = short.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"abcde");
        assert!(matches!(
            short.frame().await,
            Some(Err(BodyError::Short {
                sent: 5,
                declared: 10
            }))
        ));
    }

    #[tokio::test]
    async fn endless_head_is_rejected() {
        let endless = vec![b'a'; MAX_HEADER_BYTES * 2];
        let mut reader = &endless[..];
        assert!(matches!(
            read_head(&mut reader, HeadStyle::Cgi).await,
            Err(RequestError::BadCgiOutput(_))
        ));
        let mut empty: &[u8] = b"";
        assert!(read_head(&mut empty, HeadStyle::Cgi).await.is_err());
        let mut unterminated: &[u8] = b"Content-Type: text/plain\n";
        assert!(read_head(&mut unterminated, HeadStyle::Cgi).await.is_err());
    }
}
