//! Starting a program the way glibc's `posix_spawn` does, plus the steps `posix_spawn` cannot
//! take (an identity, a process group, rlimits, a Landlock domain): `clone(CLONE_VM | CLONE_VFORK)` on a stack of
//! its own, so the child borrows the worker's memory until it execs instead of copying it.
//!
//! Why not `fork` (which `std::process::Command` uses as soon as there is a `pre_exec`): fork
//! copies the worker's page tables and write-protects its memory; then the worker takes a
//! copy-on-write fault on every page it writes next (about 20 per spawn, in a worker of 2 MB),
//! and the child's exec tears the copy down again. Measured on the project's 2-core VM with a
//! `#!/bin/sh` hello CGI (issue 6): the worker's own CPU per request went from 174 to 65 µs,
//! the whole request's (gateway, worker and CGI) from 1093 to 832 µs, and requests per second
//! under `wrk -c16` from 1320 to 2010.
//!
//! The rules for a child that shares its parent's memory (a vfork child), and how they are kept:
//! - It must not allocate, lock, unwind, or return into the parent's frames: the child runs
//!   [`Child::run`] only, which makes system calls on data the parent prepared ([`Program`]),
//!   on a stack of its own ([`ChildStack`]), and leaves with `execve` or `_exit`. (Nothing in it
//!   can panic; were it to, the `extern "C"` entry would abort the child, not unwind.)
//! - Nothing else may touch that data meanwhile: `CLONE_VFORK` suspends the parent until the
//!   child has exec'd or exited, and the worker is single-threaded.
//! - No signal handler of the worker's may run in the child (it would run on the worker's
//!   memory): the parent blocks every signal around the clone; the child resets each handled
//!   signal to its default while they are still blocked, and unblocks them only right before
//!   `execve` (whose new program must start with an empty mask anyway). It resets the ignored
//!   ones too, which `execve` would keep: a CGI starts with every signal at its default, as a
//!   service manager starts a service, however the gateway itself was started (a shell's
//!   background job, say, has SIGINT and SIGQUIT ignored).
//! - Its errors come back through the shared memory: the child stores the errno of the step
//!   that failed, `execve`'s included, in [`Child::errno`] before it `_exit`s.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::scope::CgiScope;

/// The child's stack. The child calls a dozen thin system-call wrappers and nothing recursive,
/// so a few KiB would do; pages never touched cost nothing.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// What the child does between clone and exec, prepared by the parent: borrowed,
/// NUL-terminated data and plain numbers only, so that the child has nothing to build.
pub struct Program<'a> {
    /// The file to execute.
    pub path: &'a CStr,
    /// The argument vector, ending with a null pointer.
    pub argv: &'a [*const c_char],
    /// The whole environment, `NAME=value` strings ending with a null pointer.
    pub envp: &'a [*const c_char],
    /// The working directory.
    pub cwd: &'a CStr,
    /// Become descriptors 0, 1 and 2. Each must be numbered 3 or above, so that placing one
    /// never overwrites another still to be placed.
    pub stdio: [BorrowedFd<'a>; 3],
    /// Set with `setrlimit`, in order: (resource, soft limit, hard limit).
    pub limits: &'a [(Resource, u64, u64)],
    /// Who it runs as and the private `/tmp` it gets (always, in a worker; `None` only where
    /// this runs outside one, in tests).
    pub identity: Option<Identity<'a>>,
}

/// A CGI's own identity: a uid and gid (the same number) no other running CGI has, and a
/// mount namespace of its own whose `/tmp` is an empty tmpfs owned by it.
pub struct Identity<'a> {
    pub id: u32,
    /// A ready namespace to enter (`private_tmp.rs`); without one, the CGI's process makes
    /// its own from `tmp_options` and `tmp_dirs`.
    pub namespace: Option<BorrowedFd<'a>>,
    /// The tmpfs options: size, mode 0700, owner `id`.
    pub tmp_options: &'a CStr,
    /// `/tmp`, then the other writable areas of the jail, which get the same tmpfs bound.
    pub tmp_dirs: &'a [&'a CStr],
    /// Its supplementary groups (the data folder's, or none), or `None` to keep the worker's
    /// own when they are these already.
    pub groups: Option<&'a [libc::gid_t]>,
}

/// Starts programs, one at a time. Made once per worker: the stack, the list of signals to
/// reset and the Landlock ruleset are the same for every CGI.
pub struct Launcher {
    stack: ChildStack,
    /// The signals the worker handles or ignores, read once (see [`Launcher::new`]): reading
    /// them per spawn would be 64 `sigaction` calls each time.
    signals_to_reset: Vec<c_int>,
    scope: CgiScope,
}

impl Launcher {
    /// Call only after the worker has installed every signal handler it will ever have (the
    /// tokio signal streams): a handler installed later would not be reset in the child.
    pub fn new(scope: CgiScope) -> Result<Launcher, Errno> {
        Ok(Launcher {
            stack: ChildStack::new()?,
            signals_to_reset: signals_not_at_default(),
            scope,
        })
    }

    /// Starts `program` in a process group of its own with exactly its
    /// descriptors, environment, working directory and limits, in a Landlock domain of its own,
    /// every signal at its default and none blocked. Returns its pid once it has exec'd, or
    /// the errno of the step that failed (the child is then reaped already).
    pub fn launch(&mut self, program: &Program<'_>) -> Result<Pid, Errno> {
        let null_terminated = |vector: &[*const c_char]| vector.last() == Some(&ptr::null());
        if !null_terminated(program.argv) || !null_terminated(program.envp) {
            return Err(Errno::EINVAL);
        }
        if program.stdio.iter().any(|fd| fd.as_raw_fd() < 3) {
            return Err(Errno::EBADF);
        }
        let child = Child {
            program,
            signals_to_reset: &self.signals_to_reset,
            scope: &self.scope,
            default_action: default_action(),
            empty_mask: signal_set(libc::sigemptyset),
            errno: AtomicI32::new(0),
        };
        let all_signals = signal_set(libc::sigfillset);
        let mut saved_mask = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid for the call. (glibc keeps its two internal signals,
        // for thread cancellation and set*id across threads, out of the set; the worker has one
        // thread and uses neither, so they never arrive.)
        let blocked = unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &all_signals, saved_mask.as_mut_ptr())
        };
        if blocked != 0 {
            return Err(Errno::from_raw(blocked));
        }
        // SAFETY: `child_main` follows the rules in this module's documentation: it only reads
        // `child`, which outlives the child's use of it because CLONE_VFORK suspends this thread
        // until the child has exec'd or exited, and it writes only `child.errno`. The stack is
        // ours alone (`&mut self`) and unused by anything else while the child runs on it.
        let pid = unsafe {
            libc::clone(
                child_main,
                self.stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                ptr::from_ref(&child).cast_mut().cast(),
            )
        };
        let clone_errno = Errno::last();
        // SAFETY: the successful pthread_sigmask above filled `saved_mask`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, saved_mask.as_ptr(), ptr::null_mut()) };
        if pid == -1 {
            return Err(clone_errno);
        }
        let pid = Pid::from_raw(pid);
        match child.errno.load(Ordering::Relaxed) {
            0 => Ok(pid),
            errno => {
                // It has exited: reap it now, so that it never reaches the worker's reaper as
                // a pid it does not know.
                while waitpid(pid, None) == Err(Errno::EINTR) {}
                Err(Errno::from_raw(errno))
            }
        }
    }
}

/// What the child reads, in the parent's memory.
struct Child<'a> {
    program: &'a Program<'a>,
    signals_to_reset: &'a [c_int],
    scope: &'a CgiScope,
    default_action: libc::sigaction,
    empty_mask: libc::sigset_t,
    /// The errno of the step that failed, stored by the child before it exits; 0 if it exec'd.
    errno: AtomicI32,
}

extern "C" fn child_main(child: *mut c_void) -> c_int {
    // SAFETY: `Launcher::launch` passes a pointer to a `Child` that stays valid and unchanged
    // until this process has exec'd or exited (CLONE_VFORK).
    let child = unsafe { &*child.cast::<Child<'_>>() };
    let errno = child.run();
    child.errno.store(errno, Ordering::Relaxed);
    // SAFETY: _exit ends this process at once, without running exit handlers or flushing stdio
    // buffers, which belong to the parent.
    unsafe { libc::_exit(127) }
}

impl Child<'_> {
    /// The steps from clone to exec, in the child. Returns only if one fails, with its errno.
    /// Every call is a thin async-signal-safe system-call wrapper on prepared data.
    fn run(&self) -> c_int {
        let program = self.program;
        // The ignored ones too (an ignored signal stays ignored across exec): SIGPIPE, which
        // the Rust runtime ignores in the worker, and whatever the gateway was started with.
        for &signal in self.signals_to_reset {
            // SAFETY: a valid action, and no old action asked for.
            if unsafe { libc::sigaction(signal, &self.default_action, ptr::null_mut()) } == -1 {
                return Errno::last_raw();
            }
        }
        if let Err(errno) = self.become_itself() {
            return errno;
        }
        // SAFETY: plain numbers. A process group of its own, as a shell gives each job: a
        // signal the CGI sends to its group (`kill 0`) stays in its request. (The worker
        // signals the group to stop it, and kills what left the group by pid once the main
        // process has ended: `kill.rs`.) Not a session of its own
        // (`setsid`): that would also give it a scheduler autogroup, about 11 µs to make and
        // free per CGI (bench/MISSES.md).
        if unsafe { libc::setpgid(0, 0) } == -1 {
            return Errno::last_raw();
        }
        for (target, fd) in program.stdio.iter().enumerate() {
            // SAFETY: plain descriptor numbers; dup2 clears close-on-exec on the new one.
            if unsafe { libc::dup2(fd.as_raw_fd(), target as c_int) } == -1 {
                return Errno::last_raw();
            }
        }
        // SAFETY: `cwd` is NUL-terminated.
        if unsafe { libc::chdir(program.cwd.as_ptr()) } == -1 {
            return Errno::last_raw();
        }
        for &(resource, soft, hard) in program.limits {
            if let Err(errno) = setrlimit(resource, soft, hard) {
                return errno as c_int;
            }
        }
        // Every descriptor above stderr is closed by exec. (This child's descriptor table is
        // its own copy, without CLONE_FILES: the worker's stay as they are.)
        let cloexec = libc::CLOSE_RANGE_CLOEXEC as c_int;
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
        if unsafe { libc::close_range(3, libc::c_uint::MAX, cloexec) } == -1 {
            return Errno::last_raw();
        }
        // From here on it signals only its own processes.
        if let Err(errno) = self.scope.enter() {
            return errno;
        }
        // SAFETY: a valid signal set, and no old mask asked for.
        if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.empty_mask, ptr::null_mut()) } == -1
        {
            return Errno::last_raw();
        }
        // SAFETY: `path` is NUL-terminated, `argv` and `envp` are arrays of NUL-terminated
        // strings ending with a null pointer (checked in `launch`), all alive in the parent.
        unsafe {
            libc::execve(
                program.path.as_ptr(),
                program.argv.as_ptr(),
                program.envp.as_ptr(),
            )
        };
        Errno::last_raw()
    }
}

impl Child<'_> {
    /// A mount namespace of its own with a private `/tmp` (entered, or made here), then its own
    /// uid and gid for good (from the worker's user-namespace root, every capability goes with
    /// the uid).
    fn become_itself(&self) -> Result<(), c_int> {
        let Some(identity) = &self.program.identity else {
            return Ok(());
        };
        match identity.namespace {
            Some(namespace) => {
                // SAFETY: a descriptor of a mount namespace, open in this process too (its
                // descriptor table is a copy of the worker's).
                check(unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNS) })?;
            }
            None => {
                // SAFETY: unshare takes flags only.
                check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
                mount_tmp(identity)?;
            }
        }
        let id = identity.id;
        if let Some(groups) = identity.groups {
            // SAFETY: a slice and its length.
            check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        }
        // What it creates is its group's to change too (the data folder's files are shared
        // through that group), and nobody else's.
        // SAFETY: umask takes a mode and cannot fail.
        unsafe { libc::umask(0o007) };
        // SAFETY: plain numbers.
        check(unsafe { libc::setresgid(id, id, id) })?;
        // SAFETY: plain numbers.
        check(unsafe { libc::setresuid(id, id, id) })
    }
}

/// `Ok(())` unless `result` is -1, then the errno.
fn check(result: c_int) -> Result<(), c_int> {
    if result == -1 {
        Err(Errno::last_raw())
    } else {
        Ok(())
    }
}

/// A fresh tmpfs on `/tmp`, owned by the CGI's id, bound on the other writable areas too.
fn mount_tmp(identity: &Identity<'_>) -> Result<(), c_int> {
    let mut dirs = identity.tmp_dirs.iter();
    let Some(tmp) = dirs.next() else {
        return Ok(());
    };
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: NUL-terminated strings the parent prepared, alive until exec.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            tmp.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            identity.tmp_options.as_ptr().cast(),
        )
    })?;
    for other in dirs {
        // SAFETY: as above; a bind mount of the fresh tmpfs.
        check(unsafe {
            libc::mount(
                tmp.as_ptr(),
                other.as_ptr(),
                ptr::null(),
                libc::MS_BIND,
                ptr::null(),
            )
        })?;
    }
    Ok(())
}

/// The signals not at their default in this process: handled or ignored.
fn signals_not_at_default() -> Vec<c_int> {
    (1..=libc::SIGRTMAX())
        .filter(|&signal| {
            let mut action = MaybeUninit::<libc::sigaction>::uninit();
            // SAFETY: only reads the current action into `action`; fails (EINVAL) for the
            // signals glibc reserves, which are then skipped.
            let read = unsafe { libc::sigaction(signal, ptr::null(), action.as_mut_ptr()) } == 0;
            // SAFETY: sigaction filled `action` when it returned 0.
            read && unsafe { action.assume_init() }.sa_sigaction != libc::SIG_DFL
        })
        .collect()
}

fn default_action() -> libc::sigaction {
    // SAFETY: sigaction is plain data for which all zeroes is valid: SIG_DFL (0), no flags, an
    // empty mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_DFL;
    action
}

/// A signal set made by `init` (`sigemptyset` or `sigfillset`).
fn signal_set(init: unsafe extern "C" fn(*mut libc::sigset_t) -> c_int) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: both initialize the whole set and cannot fail with a valid pointer.
    unsafe {
        init(set.as_mut_ptr());
        set.assume_init()
    }
}

/// The child's stack: mapped once per worker and reused (one child at a time uses it, until
/// its exec), with a guard page below so that an overflow kills the child instead of writing
/// into the worker's memory.
struct ChildStack {
    base: NonNull<c_void>,
    len: usize,
}

impl ChildStack {
    fn new() -> Result<ChildStack, Errno> {
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| Errno::EINVAL)?;
        let len = CHILD_STACK_BYTES + page;
        // SAFETY: a new anonymous mapping, aliasing nothing.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack {
            base: NonNull::new(base).ok_or(Errno::ENOMEM)?,
            len,
        };
        // SAFETY: the lowest page of the mapping just made; nothing uses it yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } == -1 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// Stacks grow down: the child starts at the end of the mapping (page-aligned, so aligned
    /// as every ABI wants).
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which `clone` takes as the initial stack
        // pointer; never dereferenced here.
        unsafe { self.base.as_ptr().cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which no child uses any more (`launch` returns only
        // after the child has exec'd or exited).
        unsafe { libc::munmap(self.base.as_ptr(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};

    use nix::sys::wait::WaitStatus;

    use crate::ONE_AT_A_TIME;

    struct Output {
        status: WaitStatus,
        stdout: String,
        stderr: String,
    }

    fn cstring(text: &str) -> CString {
        CString::new(text).expect("no NUL")
    }

    /// Runs `argv` with `env` in `cwd` under `limits`, stdin empty, and collects its output.
    fn run(
        argv: &[&str],
        env: &[&str],
        cwd: &str,
        limits: &[(Resource, u64, u64)],
    ) -> Result<Output, Errno> {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let argv_c: Vec<CString> = argv.iter().map(|a| cstring(a)).collect();
        let env_c: Vec<CString> = env.iter().map(|e| cstring(e)).collect();
        let mut argv_p: Vec<*const c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
        argv_p.push(ptr::null());
        let mut env_p: Vec<*const c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
        env_p.push(ptr::null());
        let cwd = cstring(cwd);
        let (stdin, stdin_w) = nix::unistd::pipe().expect("pipe");
        drop(stdin_w);
        let (stdout_r, stdout) = nix::unistd::pipe().expect("pipe");
        let (stderr_r, stderr) = nix::unistd::pipe().expect("pipe");
        let mut launcher = Launcher::new(CgiScope::new().expect("scope")).expect("launcher");
        let pid = launcher.launch(&Program {
            path: &argv_c[0],
            argv: &argv_p,
            envp: &env_p,
            cwd: &cwd,
            stdio: [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
            limits,
            identity: None,
        })?;
        drop((stdin, stdout, stderr));
        let read_all = |fd: OwnedFd| {
            let mut text = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .expect("read");
            text
        };
        let (stdout, stderr) = (read_all(stdout_r), read_all(stderr_r));
        let status = waitpid(pid, None).expect("waitpid");
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn sh(script: &str) -> Output {
        run(
            &["/bin/sh", "-c", script],
            &["PATH=/usr/bin:/bin"],
            "/",
            &[],
        )
        .expect("launch sh")
    }

    #[test]
    fn environment_and_arguments_are_exactly_those_given() {
        let output = run(&["/usr/bin/env"], &["B=2", "A=x y", "EMPTY="], "/", &[]).expect("env");
        assert_eq!(output.stdout, "B=2\nA=x y\nEMPTY=\n");
        assert!(matches!(output.status, WaitStatus::Exited(_, 0)));
    }

    #[test]
    fn working_directory_limits_and_descriptors_are_set() {
        let output = run(
            &[
                "/bin/sh",
                "-c",
                "pwd; ulimit -n; ulimit -f; ls /proc/self/fd",
            ],
            &[],
            "/usr",
            &[
                (Resource::RLIMIT_NOFILE, 37, 37),
                (Resource::RLIMIT_FSIZE, 1024 * 1024, 1024 * 1024),
            ],
        )
        .expect("sh");
        // `ls` sees 0-2 and the descriptor it reads the folder with: nothing of this process's.
        assert_eq!(
            output.stdout, "/usr\n37\n2048\n0\n1\n2\n3\n",
            "{}",
            output.stderr
        );
    }

    #[test]
    fn process_group_and_signals_are_set() {
        // A signal blocked here must not be blocked in the child, nor one ignored here (as a
        // shell's background job has SIGQUIT) ignored there. SIGQUIT, which nothing here sends.
        // SAFETY: changes the disposition of a signal no test uses.
        unsafe { libc::signal(libc::SIGQUIT, libc::SIG_IGN) };
        let mut usr1 = signal_set(libc::sigemptyset);
        // SAFETY: a valid set; SIGUSR1 is blocked in this test thread only.
        unsafe {
            libc::sigaddset(&mut usr1, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, ptr::null_mut());
        }
        // Field 5 of /proc/self/stat is the process group.
        let output = sh("read -r pid comm state ppid pgrp rest < /proc/self/stat
                         [ \"$pid\" = \"$pgrp\" ] && echo leader
                         grep -E '^(SigBlk|SigIgn):' /proc/self/status");
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr1, ptr::null_mut()) };
        assert!(output.stdout.starts_with("leader\n"), "{}", output.stdout);
        // Neither SIGPIPE (ignored by the Rust runtime) nor SIGQUIT, nor anything else but
        // the two signals glibc keeps for itself (32 and 33, which its `sigaction` refuses to
        // change, and which the test runner here may start with ignored).
        let ignored = output
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .map(|mask| u64::from_str_radix(mask.trim(), 16).expect("hex mask"))
            .expect("SigIgn line");
        let glibc_own = (1 << 31) | (1 << 32);
        assert_eq!(ignored & !glibc_own, 0, "{}", output.stdout);
        assert!(output.stdout.contains("SigBlk:\t0000000000000000\n"));
    }

    #[test]
    fn failures_before_exec_report_their_errno() {
        assert_eq!(
            run(&["/nonexistent"], &[], "/", &[]).err(),
            Some(Errno::ENOENT)
        );
        assert_eq!(
            run(&["/etc/passwd"], &[], "/", &[]).err(),
            Some(Errno::EACCES)
        );
        assert_eq!(
            run(&["/bin/true"], &[], "/nonexistent", &[]).err(),
            Some(Errno::ENOENT)
        );
        let impossible = [(Resource::RLIMIT_NOFILE, 2, 1)];
        assert_eq!(
            run(&["/bin/true"], &[], "/", &impossible).err(),
            Some(Errno::EINVAL)
        );
        // Each failed child was reaped before `launch` returned.
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: waitpid with no status pointer.
        let left = unsafe { libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) };
        assert!(left <= 0, "an unreaped child: {left}");
    }

    #[test]
    fn handled_and_ignored_signals_are_found() {
        extern "C" fn ignore(_: c_int) {}
        let handler = ignore as extern "C" fn(c_int) as libc::sighandler_t;
        // SAFETY: installs a handler that does nothing for SIGUSR2, which nothing here sends.
        unsafe { libc::signal(libc::SIGUSR2, handler) };
        let found = signals_not_at_default();
        assert!(found.contains(&libc::SIGUSR2), "handled: {found:?}");
        assert!(found.contains(&libc::SIGPIPE), "ignored: {found:?}");
        assert!(!found.contains(&libc::SIGURG), "at its default: {found:?}");
    }
}
