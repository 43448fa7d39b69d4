//! A Landlock domain of its own for every CGI, nested in the worker's: a CGI may signal, and
//! connect to the abstract Unix sockets of, only processes of its own request. So `kill -9 -1`
//! or `kill -STOP -1` from one CGI reaches its own processes and nothing else: not the CGIs of
//! other requests on the same worker (same PID namespace; their ids differ too, which the
//! kernel's own check on signals already refuses, but nothing checks ids on an abstract
//! socket), not the worker's child between clone and exec, not the worker (which the worker's
//! own domain already covers).
//!
//! The ruleset is made once per worker; each CGI's process enters it between clone and exec,
//! with one system call.

use std::os::fd::{AsRawFd, OwnedFd};

use landlock::{Ruleset, RulesetAttr, RulesetError, Scope};

pub struct CgiScope {
    /// `None` where the kernel has no Landlock scopes (before Linux 6.12): the worker has
    /// warned about that already.
    ruleset: Option<OwnedFd>,
}

impl CgiScope {
    pub fn new() -> Result<CgiScope, RulesetError> {
        let ruleset = Ruleset::default()
            .scope(Scope::AbstractUnixSocket | Scope::Signal)?
            .create()?;
        Ok(CgiScope {
            ruleset: ruleset.into(),
        })
    }

    /// Puts the calling process in a new domain, for good. Async-signal-safe (one system call
    /// on a descriptor made beforehand), so it may run between clone and exec in a child that
    /// shares the worker's memory. Needs no-new-privs, which the worker set for itself and
    /// every child.
    pub fn enter(&self) -> Result<(), i32> {
        let Some(ruleset) = &self.ruleset else {
            return Ok(());
        };
        // SAFETY: landlock_restrict_self(2) takes a ruleset descriptor and flags, and touches
        // no memory of ours.
        let entered =
            unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) };
        if entered == -1 {
            return Err(nix::errno::Errno::last_raw());
        }
        Ok(())
    }
}
