//! Every limit of the FastCGI responder, each with the reason for it.

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
