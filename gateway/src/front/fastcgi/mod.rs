//! FastCGI responder: lets a front server (nginx `fastcgi_pass`, stock `fastcgi_params`, as
//! with fcgiwrap) hand requests to the gateway over FastCGI instead of HTTP.
//!
//! Written here rather than taken from a crate because the async FastCGI crates buffer whole
//! request bodies without a cap. This one streams both ways with bounded memory:
//! - [`record`]: the record codec (tokio-util `Decoder`/`Encoder`), at most one record in memory;
//! - [`params`]: the name-value pairs of PARAMS and GET_VALUES;
//! - `server`: [`serve_connection`], one connection, one request at a time;
//! - [`handler`]: the front itself, nginx's params mapped onto the request core.
//!
//! Specification: "FastCGI Specification", Mark R. Brown, Open Market, 1996 (version 1.0).

pub mod handler;
pub mod params;
pub mod record;
mod server;

pub use params::{decode_params, encode_params, NameValuePairs};
pub use server::{serve_connection, FcgiRequest, FcgiResponse, FcgiStdin};

/// The PARAMS stream of one request is at most this long (all records joined): nginx's stock
/// `fastcgi_params` plus the request headers take a few KiB, and the stream is held whole
/// until its empty record, so it needs a cap.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;

/// One request at a time per connection: we answer GET_VALUES with `FCGI_MPXS_CONNS=0`, and
/// nginx never multiplexes; a peer that does gets END_REQUEST with `FCGI_CANT_MPX_CONN`.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1;

/// `FCGI_MAX_CONNS` and `FCGI_MAX_REQS` as answered to GET_VALUES: advisory only (the
/// gateway's own admission control is the real limit), so a round number a front server
/// will not exceed in practice.
pub const ADVERTISED_MAX_CONNS: u32 = 1024;

/// STDIN chunks (≤ 65535 bytes each) queued for a handler that has not read them yet: small,
/// so that the connection stops being read (and nginx stops sending) while the CGI is not
/// reading its input.
pub const STDIN_QUEUE_CHUNKS: usize = 2;

/// Output records queued for the socket per connection: bounds what a slow front server
/// costs us; the CGI's output pipe waits when this is full.
pub const OUTPUT_QUEUE_RECORDS: usize = 4;

/// STDOUT held back while STDIN is still arriving: nginx stops sending the request body once
/// the response header is out, so a CGI's early output waits (like fcgiwrap, which writes all
/// of STDIN before reading any output) — but only this much, so a CGI that writes a lot before
/// reading its input is not deadlocked. About what a pipe holds.
pub const STDOUT_HOLD_BYTES: usize = 64 * 1024;

/// Bytes of STDOUT/STDERR per record: below the 65535-byte record limit and a multiple of 8,
/// so no padding is needed; bounded memory is [`OUTPUT_QUEUE_RECORDS`] times this.
pub const OUTPUT_CHUNK: usize = 32 * 1024;

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
}

#[cfg(test)]
mod tests;
