//! One access-log line and one metrics update per request, written when the request is over:
//! its response sent (or abandoned) and its CGI exited. Whoever still works on the request
//! holds an `Arc<RequestLog>`; the last one to let go writes the line.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use http::header;
use http_body::{Body, Frame, SizeHint};
use protocol::ExitStatus;

use super::metrics::Metrics;
use crate::config::AccessLog;

/// What is known about one request so far.
#[derive(Debug, Default)]
struct Entry {
    client: String,
    user: Option<String>,
    method: String,
    target: String,
    protocol: &'static str,
    referer: Option<String>,
    user_agent: Option<String>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    script: Option<String>,
    exit: Option<ExitStatus>,
}

/// nginx's status for a request whose client left before it was answered.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

pub struct RequestLog {
    id: u64,
    front: &'static str,
    format: AccessLog,
    metrics: Arc<Metrics>,
    received: SystemTime,
    started: Instant,
    entry: Mutex<Entry>,
}

impl RequestLog {
    pub fn new(
        id: u64,
        front: &'static str,
        format: AccessLog,
        metrics: Arc<Metrics>,
    ) -> Arc<RequestLog> {
        Arc::new(RequestLog {
            id,
            front,
            format,
            metrics,
            received: SystemTime::now(),
            started: Instant::now(),
            // Until a response is made: a client that goes away first is logged as nginx logs
            // it, 499 (client closed request).
            entry: Mutex::new(Entry {
                status: CLIENT_CLOSED_REQUEST,
                ..Entry::default()
            }),
        })
    }

    /// The request's number, for the logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn entry(&self) -> MutexGuard<'_, Entry> {
        self.entry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The request line and the headers the combined format shows.
    pub fn set_request(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
        client: String,
    ) {
        // Only the line needs these: with the access log off, no copies per request.
        if self.format == AccessLog::Off {
            return;
        }
        let header = |name| {
            headers.get(name).map(|value: &http::HeaderValue| {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            })
        };
        let mut entry = self.entry();
        entry.client = client;
        entry.method = method.to_string();
        entry.target = uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |pq| pq.to_string());
        entry.protocol = match version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_09 => "HTTP/0.9",
            _ => "HTTP/1.1",
        };
        entry.referer = header(header::REFERER);
        entry.user_agent = header(header::USER_AGENT);
    }

    /// The client and the user a trusted front server names (X-Forwarded-For, -User): the
    /// line shows them, as the FastCGI front's does, not the front server's own connection.
    pub fn set_forwarded(&self, client: &[u8], user: Option<&[u8]>) {
        if self.format == AccessLog::Off {
            return;
        }
        let mut entry = self.entry();
        entry.client = String::from_utf8_lossy(client).into_owned();
        entry.user = user.map(|user| String::from_utf8_lossy(user).into_owned());
    }

    /// A FastCGI request: nginx's view of it, from its parameters.
    pub fn set_fastcgi_request(
        &self,
        method: String,
        target: String,
        client: String,
        user: Option<String>,
    ) {
        let mut entry = self.entry();
        entry.method = method;
        entry.target = target;
        entry.client = client;
        entry.user = user;
        entry.protocol = "FastCGI";
    }

    pub fn set_status(&self, status: u16) {
        self.entry().status = status;
    }

    pub fn set_bytes_in(&self, bytes: u64) {
        self.entry().bytes_in = bytes;
    }

    pub fn add_bytes_out(&self, bytes: u64) {
        self.entry().bytes_out += bytes;
    }

    pub fn set_script(&self, script: &str) {
        if self.format == AccessLog::Off {
            return;
        }
        self.entry().script = Some(script.to_owned());
    }

    /// The CGI's end; also feeds the duration histogram and the exit counters.
    pub fn set_exit(&self, status: ExitStatus, ran: Duration) {
        self.metrics.cgi_exited(status, ran);
        self.entry().exit = Some(status);
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let entry = self
            .entry
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.metrics
            .request_done(self.front, entry.status, entry.bytes_in, entry.bytes_out);
        let millis = self.started.elapsed().as_millis();
        // `0`, `signal:9`, or `-` when no CGI ran.
        let exit = match entry.exit {
            Some(ExitStatus::Code(code)) => code.to_string(),
            Some(ExitStatus::Signal(signal)) => format!("signal:{signal}"),
            None => "-".to_owned(),
        };
        match self.format {
            AccessLog::Off => {}
            AccessLog::Combined => {
                let time = common_log_time(self.received);
                let quoted = |value: &Option<String>| {
                    value
                        .as_deref()
                        .map_or_else(|| "\"-\"".to_owned(), |v| format!("\"{}\"", escape(v)))
                };
                tracing::info!(
                    target: "access",
                    "{} - {} [{time}] \"{} {} {}\" {} {} {} {} id={} script={} duration_ms={millis} exit={exit}",
                    entry.client,
                    entry.user.as_deref().map_or_else(|| "-".to_owned(), escape),
                    escape(&entry.method),
                    escape(&entry.target),
                    entry.protocol,
                    entry.status,
                    entry.bytes_out,
                    quoted(&entry.referer),
                    quoted(&entry.user_agent),
                    self.id,
                    entry.script.as_deref().map_or_else(|| "-".to_owned(), escape),
                );
            }
            AccessLog::Json => tracing::info!(
                target: "access",
                id = self.id,
                front = self.front,
                client = %entry.client,
                user = entry.user.as_deref(),
                method = %entry.method,
                target = %entry.target,
                protocol = entry.protocol,
                status = entry.status,
                bytes_in = entry.bytes_in,
                bytes_out = entry.bytes_out,
                referer = entry.referer.as_deref(),
                user_agent = entry.user_agent.as_deref(),
                script = entry.script.as_deref(),
                duration_ms = u64::try_from(millis).unwrap_or(u64::MAX),
                exit = %exit,
                "access"
            ),
        }
    }
}

/// `28/Nov/2026:21:50:29 +0000`, the common log format's time, from the fixed-width
/// IMF-fixdate (`Sat, 28 Nov 2026 21:50:29 GMT`) that `httpdate` writes.
fn common_log_time(time: SystemTime) -> String {
    let date = httpdate::fmt_http_date(time);
    match (
        date.get(5..7),
        date.get(8..11),
        date.get(12..16),
        date.get(17..25),
    ) {
        (Some(day), Some(month), Some(year), Some(clock)) => {
            format!("{day}/{month}/{year}:{clock} +0000")
        }
        _ => date,
    }
}

/// Request text in a log line: no quotes, controls or non-ASCII that could forge a line.
fn escape(text: &str) -> String {
    text.escape_default().to_string()
}

/// A response body that counts the bytes it sends into the request's log.
pub struct Counted<B> {
    body: B,
    log: Arc<RequestLog>,
}

impl<B> Counted<B> {
    pub fn new(body: B, log: Arc<RequestLog>) -> Counted<B> {
        Counted { body, log }
    }
}

impl<B> Body for Counted<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if let Some(data) = frame.data_ref() {
                this.log.add_bytes_out(data.remaining() as u64);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_in_common_log_format() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_729_829);
        assert_eq!(common_log_time(time), "26/Nov/2026:21:50:29 +0000");
        assert_eq!(escape("GET \"x\"\n"), "GET \\\"x\\\"\\n");
    }
}
