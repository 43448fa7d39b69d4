//! End-to-end tests of Jailgate: the real `gateway` binary (built beforehand with
//! `cargo build --workspace --bins`), a real jail made by `gateway jail init`, real `#!/bin/sh`
//! CGIs, real HTTP over loopback. Needs root; each test has its own gateway and jail.

mod harness;
mod http;
mod procfs;

mod accounts;
mod config;
mod conformance;
mod core;
mod errors;
mod escape;
mod fastcgi;
mod faults;
mod instances;
mod isolation;
mod jail;
mod lifecycle;
mod nginx;
mod operations;
mod realworld;
mod streaming;
mod trust;
mod uploads;
