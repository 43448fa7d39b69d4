//! Every message that crosses a process boundary in Jailgate, typed, with its encoding and the
//! passing of file descriptors beside it:
//!
//! - [`worker`]: front ⇄ jailed worker (spawn a CGI, its start, its exit);
//! - [`supervisor`]: front ⇄ root supervisor (start or stop a worker process, reload);
//! - [`worker_args`]: the worker's command line, built by the supervisor, read by the worker;
//! - [`layout`]: what both sides of the jail must agree on about its tree.
//!
//! One message per `SOCK_SEQPACKET` packet. Each side treats what it decodes here as untrusted
//! (the worker shares its jail with the CGIs it starts; the front parses untrusted input): every
//! decode is size-limited and returns an error, never panics.

pub mod codec;
pub mod fd;
pub mod layout;
pub mod supervisor;
pub mod worker;
pub mod worker_args;

pub use codec::{decode, encode, CodecError, MAX_MESSAGE_BYTES};
pub use fd::{Channel, ChannelError, RecvBuffer, MAX_FDS};
pub use supervisor::{FromSupervisor, Stop, ToSupervisor};
pub use worker::*;
pub use worker_args::{DataDir, IdRange, WorkerArgs};
