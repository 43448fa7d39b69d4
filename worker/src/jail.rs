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
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
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
    #[error("the holder-worker handshake: {0}")]
    Handshake(Errno),
    #[error("the worker exited before its user namespace was made")]
    WorkerGone,
    #[error("the holder exited before mapping the worker's ids")]
    HolderGone,
    #[error("writing {0}: {1}")]
    MapIds(String, std::io::Error),
    #[error("pivot_root into {0}: {1}")]
    PivotRoot(PathBuf, Errno),
    #[error("detaching the host's tree: {0}")]
    DetachHost(Errno),
    #[error("unshare(user namespace): {0}")]
    UserNamespace(Errno),
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

/// Enters the jail: namespaces, mount tree, fork; then the worker takes the jail as the root
/// of a mount namespace of its own (`/proc` for its CGIs mounted in it) and becomes root of a
/// user namespace that maps exactly its own uid and its CGIs' ids, which the holder maps;
/// both drop privileges for good.
pub fn enter(config: &Config) -> Result<Role, JailError> {
    let gateway = getppid();
    unshare_namespaces(config)?;
    make_mounts_private()?;
    let data = config.data.as_ref().map(|data| data.path.as_path());
    crate::mounts::build_layout(&config.jail, config.tmp_size, data)?;
    // Opened from the host's /proc, before the jail hides it; written from inside the new PID
    // namespace, whose setting it is.
    let memfd_noexec = open_memfd_noexec()?;
    let (handshake, worker_end) = Handshake::pair()?;
    // Scoped before the fork, so that the worker's domain (its own, made below) is nested in
    // the holder's: a scoped process may signal only its own domain and those nested in it,
    // and the holder must be able to signal its worker. Made apart, the holder's SIGKILL on a
    // SIGTERM and the parent-death signal of a killed holder were both refused, and a worker
    // whose holder was gone served on, unseen by the supervisor.
    if !scope_ipc()? {
        eprintln!(
            "jailgate-worker: this kernel does not scope abstract Unix sockets (Landlock ABI < 6): \
             without --cgi-network CGIs cannot reach the host's anyway"
        );
    }
    let role = fork_namespace_init()?;
    match role {
        Role::Holder { worker } => {
            drop((memfd_noexec, worker_end));
            // Only a process outside the worker's user namespace, privileged in its parent,
            // may map more than the creator's own id into it.
            handshake.wait(JailError::WorkerGone)?;
            map_ids(worker, config)?;
            handshake.signal()?;
            enter_chroot(config)?;
            drop_privileges(config)?;
        }
        Role::Worker => {
            drop(handshake);
            forbid_executable_memfds(memfd_noexec)?;
            // A mount namespace of its own, whose root becomes the jail: nothing of the host
            // is left in it, not even under a chroot a namespace root could leave.
            unshare(CloneFlags::CLONE_NEWNS).map_err(JailError::Unshare)?;
            crate::mounts::mount_proc(&config.jail, config.gid)?;
            pivot_into(config)?;
            // The kernel counts the signals queued by a CGI's id once for that id and once
            // more for the namespace's owner, the workers' account, up to the limit the owner
            // had when it made the namespace: one pool for every CGI of every worker. Each
            // CGI has a limit of its own (`spawn.rs`, `CGI_PENDING_SIGNALS`), so that one CGI
            // cannot empty it; unlimited here, the second count limits nothing at all. That
            // takes CAP_SYS_RESOURCE, which a container may have taken away: then the pool
            // stays the host's per-user default (SECURITY.md).
            let _ = setrlimit(Resource::RLIMIT_SIGPENDING, RLIM_INFINITY, RLIM_INFINITY);
            drop_privileges(config)?;
            // Made by the worker's own (unprivileged) account, which owns it.
            unshare(CloneFlags::CLONE_NEWUSER).map_err(JailError::UserNamespace)?;
            worker_end.signal()?;
            worker_end.wait(JailError::HolderGone)?;
        }
    }
    forbid_privilege_regain()?;
    crate::seccomp::install()?;
    if let Role::Worker = role {
        scope_ipc()?;
    }
    match role {
        Role::Holder { .. } => die_with_parent(Some(gateway))?,
        // The holder is outside our PID namespace, so getppid() reads 0 here and cannot tell
        // whether it is gone; the worker also exits when the gateway's channel closes.
        Role::Worker => die_with_parent(None)?,
    }
    Ok(role)
}

/// One byte each way over a pair of pipes: the worker's "my user namespace exists" and the
/// holder's "its ids are mapped".
struct Handshake {
    read: std::fs::File,
    write: std::fs::File,
}

impl Handshake {
    /// The two ends: the holder's and the worker's.
    fn pair() -> Result<(Handshake, Handshake), JailError> {
        let (to_holder_read, to_holder_write) =
            nix::unistd::pipe().map_err(JailError::Handshake)?;
        let (to_worker_read, to_worker_write) =
            nix::unistd::pipe().map_err(JailError::Handshake)?;
        Ok((
            Handshake {
                read: to_holder_read.into(),
                write: to_worker_write.into(),
            },
            Handshake {
                read: to_worker_read.into(),
                write: to_holder_write.into(),
            },
        ))
    }

    fn signal(&self) -> Result<(), JailError> {
        use std::io::Write;
        (&self.write)
            .write_all(b"+")
            .map_err(|e| JailError::Handshake(Errno::from_raw(e.raw_os_error().unwrap_or(0))))
    }

    /// Waits for the other side's byte; `gone` if it exited instead.
    fn wait(&self, gone: JailError) -> Result<(), JailError> {
        use std::io::Read;
        let mut byte = [0u8; 1];
        match (&self.read).read(&mut byte) {
            Ok(1) => Ok(()),
            _ => Err(gone),
        }
    }
}

/// The worker's user namespace maps exactly two things (three with a data folder: its group):
/// its own uid and gid as 0 (root of the namespace, with its capabilities there only), and its
/// CGIs' block of ids as themselves. So
/// a worker taken over can become only those ids: never root of the host or any other
/// account, whatever it calls.
fn map_ids(worker: Pid, config: &Config) -> Result<(), JailError> {
    let ids = config.cgi_ids;
    for (file, own) in [("uid_map", config.uid), ("gid_map", config.gid)] {
        let mut map = format!("0 {own} 1\n{} {} {}\n", ids.first, ids.first, ids.count);
        // The data folder's group, which every CGI gets, as itself.
        if let (Some(data), "gid_map") = (&config.data, file) {
            map.push_str(&format!("{0} {0} 1\n", data.gid));
        }
        let path = format!("/proc/{worker}/{file}");
        std::fs::write(&path, map).map_err(|error| JailError::MapIds(path, error))?;
    }
    Ok(())
}

/// The jail becomes the root of the worker's mount namespace (`pivot_root`, the old root
/// detached), rather than a `chroot` inside the host's tree: a namespace root may chroot, and
/// a chroot is left with `..`; here there is nothing above the jail to reach.
fn pivot_into(config: &Config) -> Result<(), JailError> {
    chdir(&config.jail).map_err(JailError::Chdir)?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|errno| JailError::PivotRoot(config.jail.clone(), errno))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(JailError::DetachHost)?;
    chdir("/").map_err(JailError::Chdir)
}

/// The PID-namespace setting `vm.memfd_noexec`.
const MEMFD_NOEXEC: &str = "/proc/sys/vm/memfd_noexec";
/// `vm.memfd_noexec = 2`: every memfd of the namespace is created sealed non-executable, and
/// asking for an executable one (MFD_EXEC) fails; a child namespace cannot lower it.
const MEMFDS_NEVER_EXECUTABLE: &[u8] = b"2";

fn open_memfd_noexec() -> Result<std::fs::File, JailError> {
    let open = || std::fs::OpenOptions::new().write(true).open(MEMFD_NOEXEC);
    match open() {
        // systemd's ProtectKernelTunables= and systemd-nspawn bind /proc/sys read-only. This
        // mount namespace is the worker's own (made private above), so the bind is made
        // writable here only, for the host and the service alike unchanged; the setting
        // written is the worker's own PID namespace's.
        Err(error) if error.raw_os_error() == Some(libc::EROFS) => {
            mount(
                None::<&str>,
                "/proc/sys",
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|errno| JailError::MemfdNoexec(errno.into()))?;
            open()
        }
        opened => opened,
    }
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
/// a desktop session or a database, say). Best effort: whether this kernel enforces them.
fn scope_ipc() -> Result<bool, JailError> {
    use landlock::{Ruleset, RulesetAttr, RulesetStatus, Scope};
    let status = Ruleset::default()
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?
        .restrict_self()?;
    Ok(status.ruleset == RulesetStatus::FullyEnforced)
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
