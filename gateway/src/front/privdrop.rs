//! The front's privilege drop, right after the fork and before any thread or runtime, in this
//! order, one error per step: no supplementary groups, the front's gid, the front's uid (every
//! capability goes with uid 0: no SECBIT_KEEP_CAPS), a check that root cannot be regained,
//! no-new-privs (no capability comes back through exec), and the parent-death signal (cleared
//! by setresuid, so set after it), then a check that the supervisor is still the parent.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::{getppid, setgroups, setresgid, setresuid, Gid, Pid, Uid};

use crate::config::FrontUser;

#[derive(Debug, thiserror::Error)]
pub enum PrivDropError {
    #[error("setgroups([]): {0}")]
    SetGroups(Errno),
    #[error("setresgid({0}): {1}")]
    SetGid(Gid, Errno),
    #[error("setresuid({0}): {1}")]
    SetUid(Uid, Errno),
    #[error("still able to become root after setresuid")]
    RootRegained,
    #[error("PR_SET_NO_NEW_PRIVS: {0}")]
    NoNewPrivs(Errno),
    #[error("PR_SET_PDEATHSIG: {0}")]
    ParentDeathSignal(Errno),
    #[error("the supervisor exited")]
    SupervisorGone,
}

/// Drops from root to `user` for good; `supervisor` is the expected parent.
pub fn drop_privileges(user: &FrontUser, supervisor: Pid) -> Result<(), PrivDropError> {
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    setgroups(&[]).map_err(PrivDropError::SetGroups)?;
    setresgid(gid, gid, gid).map_err(|errno| PrivDropError::SetGid(gid, errno))?;
    setresuid(uid, uid, uid).map_err(|errno| PrivDropError::SetUid(uid, errno))?;
    let root = Uid::from_raw(0);
    if setresuid(root, root, root).is_ok() {
        return Err(PrivDropError::RootRegained);
    }
    nix::sys::prctl::set_no_new_privs().map_err(PrivDropError::NoNewPrivs)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(PrivDropError::ParentDeathSignal)?;
    if getppid() != supervisor {
        return Err(PrivDropError::SupervisorGone);
    }
    Ok(())
}
