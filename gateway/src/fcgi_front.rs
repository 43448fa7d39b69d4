//! The FastCGI front: nginx's `fastcgi_pass` (with the stock `fastcgi_params`), as with
//! fcgiwrap, but the CGI runs in the jail. nginx has parsed the HTTP request and passes the
//! CGI variables itself; the script is whatever its SCRIPT_NAME and PATH_INFO name under
//! `/cgi-bin/`, mapped by the same router as HTTP requests (so anything else is refused), and
//! the CGI's output goes back to nginx unparsed, as CGI output, for nginx to turn into HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tracing::Instrument;

use crate::access::RequestLog;
use crate::cgi::{body_complete, Gateway, RequestBody, Started};
use crate::cgi_env::{
    auth_scheme, push_fixed_variables, push_gateway_variables, push_variable, split_port, EnvPolicy,
};
use crate::error::RequestError;
use crate::fastcgi::{FcgiRequest, FcgiResponse};
use crate::router::{route, Route};
use crate::stdin::BodySource;

/// What goes back to nginx as FCGI_STDOUT.
pub enum FcgiOutput {
    /// A short CGI-style answer of ours (an error).
    Ours(std::io::Cursor<Vec<u8>>),
    Cgi(CgiStdout),
}

impl Gateway {
    /// Answers one FastCGI request. Never fails: errors become CGI-style error answers.
    pub async fn handle_fastcgi(self: Arc<Self>, request: FcgiRequest) -> FcgiResponse<FcgiOutput> {
        let id = self.next_request_id();
        let span = tracing::info_span!("request", id, via = "fastcgi");
        let log = RequestLog::new(
            id,
            "fastcgi",
            self.current().config.access_log,
            self.metrics.clone(),
        );
        let output = match self
            .run_fastcgi(request, &log)
            .instrument(span.clone())
            .await
        {
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

    async fn run_fastcgi(
        &self,
        request: FcgiRequest,
        log: &Arc<RequestLog>,
    ) -> Result<CgiStdout, RequestError> {
        let current = self.current();
        let config = &current.config;
        let FcgiRequest { params, stdin, .. } = request;
        let param = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(n, _)| n.as_slice() == name.as_bytes())
                .map(|(_, v)| v.as_slice())
        };
        // nginx passes the decoded path; the router takes an encoded one.
        let mut path = param("SCRIPT_NAME").unwrap_or_default().to_vec();
        path.extend_from_slice(param("PATH_INFO").unwrap_or_default());
        let query = String::from_utf8_lossy(param("QUERY_STRING").unwrap_or_default()).into_owned();
        let text =
            |name: &str| String::from_utf8_lossy(param(name).unwrap_or_default()).into_owned();
        let user = Some(text("REMOTE_USER")).filter(|user| !user.is_empty());
        log.set_fastcgi_request(
            text("REQUEST_METHOD"),
            text("REQUEST_URI"),
            text("REMOTE_ADDR"),
            user,
        );
        let route = route(&encode_path(&path), Some(&query))?;
        let length = match param("CONTENT_LENGTH").filter(|v| !v.is_empty()) {
            Some(value) => std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(RequestError::BadRequest("invalid CONTENT_LENGTH"))?,
            None => 0,
        };
        if length > config.max_body_bytes {
            return Err(RequestError::BodyTooLarge(length));
        }
        let body = if length > 0 {
            RequestBody::Stream(BodySource::Stream(Box::pin(stdin)), None)
        } else {
            RequestBody::Empty
        };
        let env = Self::fastcgi_env(&params, &route, length, &config.env);
        log.set_bytes_in(length);
        let Started {
            stdout,
            delivered,
            body_received,
            deadline,
            ..
        } = self.start_cgi(&current, &route, env, body, log).await?;
        body_complete(body_received, deadline).await?;
        tracing::info!(path = %route.url_path(route.segments.len()), "fastcgi request");
        Ok(CgiStdout {
            stdout,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            budget: config.max_output_bytes,
            delivered: Some(delivered),
            log: log.clone(),
        })
    }

    /// nginx's variables, less what is ours to say (the script's place in the jail, PATH),
    /// what must never reach a CGI (HTTP_PROXY; credentials unless --pass-authorization),
    /// and anything that is not a plain `NAME=value`.
    fn fastcgi_env(
        params: &[(Vec<u8>, Vec<u8>)],
        route: &Route,
        length: u64,
        policy: &EnvPolicy,
    ) -> Vec<Vec<u8>> {
        const OURS: &[&str] = &[
            "PATH",
            "GATEWAY_INTERFACE",
            "SERVER_SOFTWARE",
            "SCRIPT_NAME",
            "SCRIPT_FILENAME",
            "PATH_INFO",
            "PATH_TRANSLATED",
            "DOCUMENT_ROOT",
            "CONTENT_LENGTH",
            "QUERY_STRING",
            "SERVER_NAME",
        ];
        let mut env = Vec::with_capacity(params.len() + 12);
        push_gateway_variables(&mut env);
        let mut set = |name: &[u8], value: &[u8]| push_variable(&mut env, name, value);
        // SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO, PATH_TRANSLATED: the worker's (see cgi_env).
        set(b"QUERY_STRING", route.query_string.as_bytes());
        if length > 0 {
            set(b"CONTENT_LENGTH", length.to_string().as_bytes());
        }
        // Set only with a value: nginx sends them empty when it has none (no body, no login).
        const ONLY_WITH_A_VALUE: &[&str] = &["CONTENT_TYPE", "REMOTE_USER", "AUTH_TYPE", "HTTPS"];
        let param = |wanted: &str| {
            params
                .iter()
                .find(|(name, _)| name == wanted.as_bytes())
                .map(|(_, value)| value.as_slice())
                .filter(|value| !value.is_empty())
        };
        // §4.1.14: SERVER_NAME is never empty. nginx's is `$server_name`, empty in a server
        // block without one: then the host the client asked for, else the address.
        let server_name = param("SERVER_NAME")
            .or_else(|| {
                param("HTTP_HOST")
                    .and_then(|host| std::str::from_utf8(host).ok())
                    .map(|host| split_port(host).0.as_bytes())
            })
            .or_else(|| param("SERVER_ADDR"))
            .unwrap_or(b"localhost");
        set(b"SERVER_NAME", server_name);
        // §4.1.1: with a login, the scheme it used (nginx passes REMOTE_USER, not AUTH_TYPE).
        if param("REMOTE_USER").is_some() && param("AUTH_TYPE").is_none() {
            let authorization = param("HTTP_AUTHORIZATION")
                .and_then(|value| http::HeaderValue::from_bytes(value).ok());
            if let Some(scheme) = auth_scheme(authorization.as_ref()) {
                set(b"AUTH_TYPE", scheme);
            }
        }
        for (name, value) in params {
            let Ok(text) = std::str::from_utf8(name) else {
                continue;
            };
            let plain =
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let withheld = text == "HTTP_PROXY"
                || (text == "HTTP_AUTHORIZATION" && !policy.pass_authorization)
                || (value.is_empty() && ONLY_WITH_A_VALUE.contains(&text));
            if plain && !withheld && !OURS.contains(&text) && !value.contains(&0) {
                set(name, value);
            }
        }
        push_fixed_variables(&mut env, policy);
        env
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
    let status = error.status();
    // As for HTTP (cgi::error_response): overload is counted, not warned about one by one.
    if status.is_server_error() && status != http::StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!("{error}");
    } else {
        tracing::debug!("{error}");
    }
    let reason = status.canonical_reason().unwrap_or("");
    format!(
        "Status: {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{} {reason}\n",
        status.as_u16(),
        status.as_u16()
    )
    .into_bytes()
}

/// The CGI's stdout as nginx reads it: cut off at the deadline or past --max-output; read to
/// its end, it lets the CGI finish; dropped before, it has the CGI killed.
pub struct CgiStdout {
    stdout: pipe::Receiver,
    deadline: Pin<Box<Sleep>>,
    budget: Option<u64>,
    delivered: Option<oneshot::Sender<()>>,
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
        if this.deadline.as_mut().poll(cx).is_ready() {
            tracing::warn!("CGI exceeded the timeout while sending its output; cut off");
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        this.log.add_bytes_out(read);
        if read == 0 {
            if let Some(delivered) = this.delivered.take() {
                let _ = delivered.send(());
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(budget) = this.budget.as_mut() {
            *budget = budget.checked_sub(read).ok_or_else(|| {
                tracing::warn!("CGI output exceeded --max-output; cut off");
                std::io::Error::from(std::io::ErrorKind::FileTooLarge)
            })?;
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
