//! Jailgate's unjailed side. The folders are the privilege domains:
//!
//! - [`root`]: runs as root and parses nothing from the network: start-up (audit, bind, fork),
//!   the supervisor, starting and stopping workers;
//! - [`front`]: runs unprivileged and parses everything untrusted: the privilege drop, the
//!   listeners, the HTTP and FastCGI fronts, the request core, the worker pool, the admin
//!   endpoint; it executes nothing itself;
//! - [`config`] and [`jailfs`]: shared: the configuration, the jail builder and its audit.
//!   Root uses them at start-up (and on SIGHUP), and so do the `jail` commands; they read flags
//!   and local files, never network input.
//!
//! The jailed side is the `worker` crate; every message between processes is in `protocol`.
//! ARCHITECTURE.md has the map.

pub mod config;
pub mod demo;
pub mod front;
pub mod jailfs;
pub mod root;

#[cfg(test)]
mod boundary_tests;

use std::process::ExitCode;

use root::startup::{Split, Startup};

/// Serves as configured: root's start-up and fork, then the front in the child and the
/// supervisor in the parent. Must be called as root before any thread exists. Returns the exit
/// code in the supervisor; the front never returns from here.
pub fn serve(startup: Startup) -> ExitCode {
    let _ = root::handover::stop_signals().thread_block();
    match root::startup::split(startup) {
        Err(error) => {
            eprintln!("gateway: {error}");
            ExitCode::FAILURE
        }
        // Exit here: nothing of the caller's stack (a demo's temporary folder, say) is the
        // front's to clean up.
        Ok(Split::Front(handover)) => std::process::exit(front::run(handover)),
        Ok(Split::Supervisor(supervisor)) => {
            let code = root::supervisor::run(
                supervisor.config,
                supervisor.front,
                supervisor.control,
                supervisor.reload,
            );
            for file in supervisor.socket_files {
                if let Err(error) = std::fs::remove_file(&file) {
                    tracing::warn!("cannot remove the socket {}: {error}", file.display());
                }
            }
            code
        }
    }
}
