//! The messages that cross the jail boundary between the gateway (outside) and its workers
//! (inside), how they are encoded, and how file descriptors travel with them.
//!
//! One message per `SOCK_SEQPACKET` packet. The worker shares its jail with the CGIs it starts,
//! so the gateway treats everything it decodes here as untrusted: every decode is size-limited
//! and returns an error, never panics.

pub mod codec;
pub mod fd;
pub mod message;

pub use codec::{decode, encode, CodecError, MAX_MESSAGE_BYTES};
pub use fd::{Channel, ChannelError, RecvBuffer, MAX_FDS};
pub use message::*;
