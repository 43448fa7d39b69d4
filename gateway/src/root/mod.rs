//! What runs as root. Nothing here parses a request: root audits the jail, checks who on the
//! host has its ids ([`host_ids`]), binds the listeners and forks once ([`startup`]); the
//! child becomes the unprivileged front, handed what [`handover`] holds; the parent stays root
//! as the [`supervisor`], which starts and stops worker processes ([`workers`]) when the front
//! asks, and relays signals.

pub mod bind;
pub mod handover;
pub mod host_ids;
pub mod startup;
pub mod supervisor;
pub mod workers;
