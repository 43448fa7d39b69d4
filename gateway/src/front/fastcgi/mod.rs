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

mod error;
pub mod handler;
mod limits;
pub mod params;
pub mod record;
pub mod server;

pub use error::FcgiError;
pub use limits::*;
pub use params::{decode_params, encode_params, NameValuePairs};
pub use server::{serve_connection, FcgiRequest, FcgiResponse, FcgiStdin};

#[cfg(test)]
mod tests;
