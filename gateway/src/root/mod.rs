//! What runs as root. Nothing here parses a request: root audits the jail, binds the
//! listeners and forks once ([`startup`]); the child becomes the unprivileged front, handed
//! what [`handover`] holds; the parent stays root as the [`supervisor`], which starts and
//! stops worker processes ([`workers`]) when the front asks, and relays signals.

pub mod bind;
pub mod handover;
pub mod startup;
pub mod supervisor;
pub mod workers;
