//! Errors classified by origin. One match decides the HTTP status: the client's fault is 4xx,
//! the CGI's or worker's 502/504, overload 503, our own 500.

use http::StatusCode;
use protocol::SpawnError;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("not found")]
    NotFound,
    #[error("request body of {0} bytes exceeds the limit")]
    BodyTooLarge(u64),
    #[error("request body without Content-Length")]
    LengthRequired,
    #[error("a transfer coding other than chunked")]
    UnknownTransferCoding,
    #[error("CONNECT: a tunnel is no CGI request")]
    Connect,
    #[error("request body too slow: not all in by its deadline")]
    BodyTimeout,
    #[error("no room to hold the request body (--spool-budget)")]
    SpoolFull,
    #[error("CGI could not be started: {0}")]
    Spawn(SpawnError),
    #[error("no worker available")]
    NoWorker,
    #[error("too many CGIs running")]
    Overloaded,
    #[error("worker connection lost")]
    WorkerLost,
    #[error("CGI did not answer within the timeout")]
    Timeout,
    #[error("bad CGI response: {0}")]
    BadCgiOutput(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound => StatusCode::NOT_FOUND,
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            RequestError::UnknownTransferCoding | RequestError::Connect => {
                StatusCode::NOT_IMPLEMENTED
            }
            RequestError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            RequestError::SpoolFull => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Spawn(error) => match error {
                SpawnError::NotFound => StatusCode::NOT_FOUND,
                SpawnError::NotExecutable | SpawnError::Forbidden => StatusCode::FORBIDDEN,
                SpawnError::NoResources { .. } => StatusCode::SERVICE_UNAVAILABLE,
                SpawnError::ExecFailed { .. } => StatusCode::BAD_GATEWAY,
                SpawnError::BadRequest(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            RequestError::NoWorker | RequestError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::WorkerLost | RequestError::BadCgiOutput(_) => StatusCode::BAD_GATEWAY,
            RequestError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An I/O failure of ours while setting a run up.
pub fn internal(error: std::io::Error) -> RequestError {
    match error.raw_os_error() {
        // Out of descriptors (ours, or the machine's): overload, not a fault. 503 with
        // Retry-After, and the request can succeed once connections have closed.
        Some(libc::EMFILE | libc::ENFILE) => {
            tracing::warn!("cannot run a CGI: {error}");
            RequestError::Overloaded
        }
        _ => RequestError::Internal(error.to_string()),
    }
}
