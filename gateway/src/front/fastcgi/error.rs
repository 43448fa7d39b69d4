//! Everything that ends a FastCGI connection.

/// Everything that ends a FastCGI connection. All of them come from the peer or the socket
/// except `ContentTooLong` (a bug on our side, refused rather than sent).
#[derive(Debug, thiserror::Error)]
pub enum FcgiError {
    #[error("FastCGI connection I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("FastCGI record with unsupported version {0} (only 1 exists)")]
    UnsupportedVersion(u8),
    #[error("FastCGI connection closed in the middle of a record")]
    TruncatedRecord,
    #[error("FastCGI record content of {0} bytes is over the 65535-byte limit")]
    ContentTooLong(usize),
    #[error("FastCGI BEGIN_REQUEST body of {0} bytes (8 expected)")]
    MalformedBeginRequest(usize),
    #[error("FastCGI END_REQUEST body of {0} bytes (8 expected)")]
    MalformedEndRequest(usize),
    #[error("FastCGI PARAMS stream over the {limit}-byte limit")]
    ParamsTooLarge { limit: usize },
    #[error("FastCGI name-value length {0} is over the limit")]
    ParamTooLong(usize),
    #[error("malformed FastCGI name-value pairs: {0}")]
    MalformedParams(&'static str),
    #[error("FastCGI protocol violation on request {request_id}: {what}")]
    Protocol { request_id: u16, what: &'static str },
    #[error("FastCGI connection output closed")]
    OutputClosed,
    /// The response was cut off (its deadline, `--max-output`, or its CGI's output short of
    /// its Content-Length): the connection is closed without END_REQUEST, so that the front
    /// server sees a response that broke off, not a whole one.
    #[error("response of request {request_id} cut off: {why}")]
    ResponseCutOff { request_id: u16, why: String },
}
