//! The ordered steps into the jail, one function and one error per step (ARCHITECTURE.md,
//! "Start-up"). Runs while the process is still single-threaded: no runtime has started yet, so
//! `unshare` applies to the whole process and `fork` is safe.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, chroot, fork, getppid, setgroups, setresgid, setresuid, ForkResult};
use nix::unistd::{Gid, Pid, Uid};

/// What the supervisor told this worker on its command line.
pub type Config = protocol::WorkerArgs;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("unshare(mount, pid, ipc, uts[, net] namespaces): {0}")]
    Unshare(Errno),
    #[error("making the mount tree private: {0}")]
    MakePrivate(Errno),
    #[error("mount layout: {0}")]
    Mount(#[from] crate::mounts::MountError),
    #[error("chroot({0}): {1}")]
    Chroot(PathBuf, Errno),
    #[error("chdir(/) inside the jail: {0}")]
    Chdir(Errno),
    #[error("fork into the new PID namespace: {0}")]
    Fork(Errno),
    #[error("{MEMFD_NOEXEC} (Linux 6.3 or later): {0}")]
    MemfdNoexec(std::io::Error),
    #[error("setgroups([]): {0}")]
    SetGroups(Errno),
    #[error("setresgid({0}): {1}")]
    SetGid(Gid, Errno),
    #[error("setresuid({0}): {1}")]
    SetUid(Uid, Errno),
    #[error("privileges still held after dropping them")]
    PrivilegesRemain,
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(Errno),
    #[error(transparent)]
    SyscallFilter(#[from] crate::seccomp::FilterError),
    #[error("landlock scoping: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("prctl(PR_SET_DUMPABLE, 0): {0}")]
    NotDumpable(Errno),
    #[error("prctl(PR_SET_PDEATHSIG): {0}")]
    ParentDeathSignal(Errno),
    #[error("the gateway exited while this worker was starting")]
    GatewayGone,
}

/// Which of the two processes of a worker this is, after [`enter`].
pub enum Role {
    /// Outside the new PID namespace: waits for the worker and reports its exit. Jailed and
    /// unprivileged too; it exists because only a child of `unshare(CLONE_NEWPID)` is PID 1.
    Holder { worker: Pid },
    /// PID 1 of its own PID namespace: CGIs cannot signal it, and when it dies the kernel
    /// kills every CGI it started.
    Worker,
}

/// Enters the jail: namespaces, mount tree, chroot, fork, drop privileges for good.
pub fn enter(config: &Config) -> Result<Role, JailError> {
    let gateway = getppid();
    unshare_namespaces(config)?;
    make_mounts_private()?;
    crate::mounts::build_layout(&config.jail, config.tmp_size)?;
    // Opened from the host's /proc, before the chroot hides it; written from inside the new
    // PID namespace, whose setting it is.
    let memfd_noexec = open_memfd_noexec()?;
    enter_chroot(config)?;
    let role = fork_namespace_init()?;
    if let Role::Worker = role {
        forbid_executable_memfds(memfd_noexec)?;
    } else {
        drop(memfd_noexec);
    }
    // Right after the fork, in both processes, before either reads anything of the jail's.
    drop_privileges(config)?;
    forbid_privilege_regain()?;
    crate::seccomp::install()?;
    scope_ipc()?;
    match role {
        Role::Holder { .. } => die_with_parent(Some(gateway))?,
        // The holder is outside our PID namespace, so getppid() reads 0 here and cannot tell
        // whether it is gone; the worker also exits when the gateway's channel closes.
        Role::Worker => die_with_parent(None)?,
    }
    Ok(role)
}

/// The PID-namespace setting `vm.memfd_noexec`.
const MEMFD_NOEXEC: &str = "/proc/sys/vm/memfd_noexec";
/// `vm.memfd_noexec = 2`: every memfd of the namespace is created sealed non-executable, and
/// asking for an executable one (MFD_EXEC) fails; a child namespace cannot lower it.
const MEMFDS_NEVER_EXECUTABLE: &[u8] = b"2";

fn open_memfd_noexec() -> Result<std::fs::File, JailError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(MEMFD_NOEXEC)
        .map_err(JailError::MemfdNoexec)
}

/// No code from memory: a program written to a memfd (from a request body, say) cannot be
/// executed (`fexecve`, `execve("/proc/self/fd/N")`), past the `noexec` mounts.
fn forbid_executable_memfds(mut setting: std::fs::File) -> Result<(), JailError> {
    use std::io::Write;
    setting
        .write_all(MEMFDS_NEVER_EXECUTABLE)
        .map_err(JailError::MemfdNoexec)
}

fn unshare_namespaces(config: &Config) -> Result<(), JailError> {
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if config.no_network {
        // A new network namespace has only a loopback interface, and it is down.
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    unshare(namespaces).map_err(JailError::Unshare)
}

/// Nothing mounted in this namespace may propagate back to the host's.
fn make_mounts_private() -> Result<(), JailError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(JailError::MakePrivate)
}

fn enter_chroot(config: &Config) -> Result<(), JailError> {
    chroot(&config.jail).map_err(|errno| JailError::Chroot(config.jail.clone(), errno))?;
    chdir("/").map_err(JailError::Chdir)
}

/// `unshare(CLONE_NEWPID)` only moves later children into the new namespace: fork once so the
/// child is its PID 1.
fn fork_namespace_init() -> Result<Role, JailError> {
    // SAFETY: the process is single-threaded (no runtime or thread has started), so the child
    // may run arbitrary code after fork.
    match unsafe { fork() }.map_err(JailError::Fork)? {
        ForkResult::Parent { child } => Ok(Role::Holder { worker: child }),
        ForkResult::Child => Ok(Role::Worker),
    }
}

fn drop_privileges(config: &Config) -> Result<(), JailError> {
    setgroups(&[]).map_err(JailError::SetGroups)?;
    let (gid, uid) = (Gid::from_raw(config.gid), Uid::from_raw(config.uid));
    setresgid(gid, gid, gid).map_err(|errno| JailError::SetGid(gid, errno))?;
    setresuid(uid, uid, uid).map_err(|errno| JailError::SetUid(uid, errno))?;
    // Regaining root must now fail; if it does not, the drop did not hold.
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(JailError::PrivilegesRemain);
    }
    Ok(())
}

fn forbid_privilege_regain() -> Result<(), JailError> {
    prctl::set_no_new_privs().map_err(JailError::NoNewPrivs)?;
    // Keeps CGIs of the same uid from ptrace-attaching to the worker or reading its memory.
    prctl::set_dumpable(false).map_err(JailError::NotDumpable)
}

/// Landlock scopes (Linux 6.12+): CGIs cannot connect to abstract Unix sockets or signal
/// processes outside this worker's domain. Abstract sockets belong to the network namespace,
/// not the file system, so neither the chroot nor the mount layout hides the host's (those of
/// a desktop session or a database, say). Best effort: older kernels get a warning.
fn scope_ipc() -> Result<(), JailError> {
    use landlock::{Ruleset, RulesetAttr, RulesetStatus, Scope};
    let status = Ruleset::default()
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?
        .restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        eprintln!(
            "jailgate-worker: this kernel does not scope abstract Unix sockets (Landlock ABI < 6): \
             use --no-network to keep CGIs from the host's"
        );
    }
    Ok(())
}

/// `PR_SET_PDEATHSIG` is cleared by `setresuid`, so it is set after dropping privileges, and
/// the parent is checked afterwards in case it died in between.
fn die_with_parent(expected_parent: Option<Pid>) -> Result<(), JailError> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(JailError::ParentDeathSignal)?;
    match expected_parent {
        Some(parent) if getppid() != parent => Err(JailError::GatewayGone),
        _ => Ok(()),
    }
}

/// The worker the holder waits for, for its SIGTERM handler.
static HELD_WORKER: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_held_worker(_signal: libc::c_int) {
    let worker = HELD_WORKER.load(Ordering::SeqCst);
    if worker > 0 {
        // SAFETY: kill(2) is async-signal-safe and touches no memory of ours.
        unsafe {
            libc::kill(worker, libc::SIGKILL);
        }
    }
}

/// The holder's whole job: wait for the worker and exit the way it did. SIGTERM (the gateway
/// giving up on a worker) kills the worker first, so the holder still reaps it: a dead worker
/// never lingers as a zombie of some other process.
pub fn wait_for_worker(worker: Pid) -> ExitCode {
    HELD_WORKER.store(worker.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(kill_held_worker),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only reads an atomic and calls kill(2), both async-signal-safe.
    if unsafe { sigaction(Signal::SIGTERM, &action) }.is_err() {
        // Without the handler SIGTERM still ends the holder, and the parent-death signal the
        // worker holds takes the worker with it; only the zombie-free exit is lost.
        eprintln!("jailgate-worker: cannot handle SIGTERM in the holder");
    }
    loop {
        match waitpid(worker, None) {
            Ok(WaitStatus::Exited(_, code)) => return ExitCode::from(code as u8),
            Ok(WaitStatus::Signaled(_, signal, _)) => return ExitCode::from(128 + signal as u8),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return ExitCode::from(1),
        }
    }
}

pub fn set_cloexec(fd: &OwnedFd) -> Result<(), Errno> {
    fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ())
}
