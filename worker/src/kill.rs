//! Ending a CGI: every process it started, whatever group or session it put itself in, and
//! nothing else.
//!
//! The worker is the init of its PID namespace, so an orphan goes to it at once (before its
//! parent can be reaped). Each CGI runs as an id no other running CGI has, and none of its
//! processes can change it (no capabilities, no-new-privs, `nosuid` everywhere). Follow any
//! process of a CGI's id up its parents: every one of them runs as that id, down to a child of
//! the worker, the CGI's main process or one of its orphans. So while a process of the id
//! lives, a child of the worker (running, or dead and not yet reaped) runs as that id; and a
//! CGI's processes are found among the worker's children, as /proc lists them ([`Leftovers`]).
//!
//! When a main process ends, every child of the worker of its id is killed by its pid: a child
//! not yet reaped keeps its pid, so the signal cannot reach a stranger. So is everything below
//! it, top down, in the same sweep ([`kill_tree`]): a killed process can no longer fork, so its
//! children are known once it is killed. Killing the worker's children alone would take one
//! generation per sweep, and a chain that grows a link at its far end whenever one dies would
//! outlive its request for ever, each death bringing the next sweep
//! (`faults::a_chain_that_renews_itself_is_killed_whole`). What still escapes a sweep (a child
//! whose parent died before its list was read) is the worker's child by then: the sweep reads
//! the worker's list again while that finds something new, and the next SIGCHLD sweeps again,
//! until none of the id is left; only then is the id given back. A kill by pid costs the same
//! on any host, where one `kill(-1)` under the CGI's id (what this did before) walks every
//! process of the host: 11 µs here, 2.4 ms with 10,000 processes, sent whenever a CGI left
//! something or a client hung up.
//! A CGI still running is stopped through its main process and its process group (`stop` in
//! `serve.rs`); what left the group dies by the sweep once the main process has ended.
//!
//! In a jail without `/proc`, or on a kernel built without `CONFIG_PROC_CHILDREN` (which gives
//! the children lists; Debian's has it), the children cannot be listed, and every ended CGI's id
//! is killed with that `kill(-1)` ([`kill_id`]), which reaches a whole tree at once. The worker
//! is root of its user namespace, and root may signal anything, so for the one call it takes
//! the CGI's id as its real and effective uid, keeping 0 as its saved uid. That clears its
//! effective capabilities (capabilities(7): euid 0 to non-zero), and taking 0 back right after
//! restores them (an unprivileged process may take its saved uid). Both uids switch, not the
//! effective one alone: kill(2) also matches the sender's *real* uid, which as 0 would reach
//! every process of uid 0. The worker is single-threaded and nothing else runs between the two
//! switches; they are raw system calls, per thread, not glibc's, which would switch every
//! thread.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The worker's children, as /proc lists them, and the ids of ended CGIs some of whose
/// processes may still run; see the module's documentation.
pub struct Leftovers {
    /// `/proc/PID/task/PID/children` of the worker, kept open and read from its start; `None`
    /// in a jail without `/proc`, where every ended CGI's id is killed instead.
    children: Option<File>,
    /// The list as last read: pids in decimal, each followed by a space.
    text: Vec<u8>,
    /// Ids whose CGI's main process has ended and of which a child of the worker was still
    /// seen at the last sweep.
    draining: Vec<u32>,
    /// The real uid of each child of the worker met in a sweep, read once: no process of a
    /// CGI can change its uid, and a pid stays its process's until the worker reaps it
    /// ([`Leftovers::forget`]). Without it, each sweep read /proc once per orphan, and a CGI
    /// that kept dozens of them running made every other CGI's end dearer.
    uids: HashMap<Pid, u32>,
}

impl Leftovers {
    /// Call on the thread that starts the CGIs: /proc lists children by the thread that
    /// started them.
    pub fn new() -> Leftovers {
        let pid = std::process::id();
        let thread = nix::unistd::gettid();
        Leftovers {
            children: File::open(format!("/proc/{pid}/task/{thread}/children")).ok(),
            text: vec![0; 4096],
            draining: Vec::new(),
            uids: HashMap::new(),
        }
    }

    /// Call for every child the worker reaps that is not a CGI's main process: its pid may now
    /// be another's.
    pub fn forget(&mut self, pid: Pid) {
        self.uids.remove(&pid);
    }

    /// Call after reaping, with the ids of the CGIs whose main processes were just reaped
    /// (`ended`, maybe none) and whether the reaping found the worker with no child at all
    /// (`childless`: then no process of any CGI is left, since each has a chain of parents
    /// down to a child of the worker, and the list is not read): kills every child of the
    /// worker that is not the main process of a running CGI (`is_main`) and does not run as
    /// the id of one (`is_running`), and all that is below it ([`kill_tree`]), and hands the
    /// ids of ended CGIs of which nothing is left to `release`, to be given back. An id with a
    /// process left is released by a later sweep, after the SIGCHLD of that process's end.
    pub fn sweep(
        &mut self,
        ended: impl IntoIterator<Item = u32>,
        childless: bool,
        is_main: impl Fn(Pid) -> bool,
        is_running: impl Fn(u32) -> bool,
        mut release: impl FnMut(u32),
    ) {
        let earlier = self.draining.len();
        self.draining.extend(ended);
        if self.draining.is_empty() {
            return;
        }
        // Processes this sweep has dealt with: the worker's children it killed, and those below
        // them it killed or found gone.
        let mut visited = HashSet::new();
        let mut passes = 0;
        let (left, unknown) = loop {
            let listed = if childless {
                Some(0)
            } else {
                self.read_children()
            };
            let Some(length) = listed else {
                if passes == 0 {
                    for id in self.draining.drain(earlier..) {
                        kill_id(id, Signal::SIGKILL);
                        release(id);
                    }
                    return;
                }
                break (Vec::new(), true);
            };
            passes += 1;
            let mut left = Vec::new();
            let mut unknown = false;
            let mut more = false;
            let children = self.text[..length]
                .split(|&byte| byte == b' ')
                .filter_map(|pid| std::str::from_utf8(pid).ok()?.parse().ok())
                .map(Pid::from_raw);
            for pid in children.filter(|&pid| !is_main(pid)) {
                let id = match self.uids.get(&pid) {
                    Some(&id) => id,
                    None => {
                        let Some(id) = real_uid_of(pid) else {
                            unknown = true;
                            continue;
                        };
                        self.uids.insert(pid, id);
                        id
                    }
                };
                // 0 is the worker's own (a child between clone and exec is never seen here:
                // the worker waits for its exec).
                if id == 0 || is_running(id) {
                    continue;
                }
                if !left.contains(&id) {
                    left.push(id);
                }
                if !visited.contains(&pid) {
                    kill_tree(pid, id, &mut visited);
                    more = true;
                }
            }
            // Another pass only if this one killed something: what those left as they died
            // is the worker's now.
            if !more || passes == MAX_PASSES {
                break (left, unknown);
            }
        };
        if unknown {
            // A child /proc would not tell about could be of any draining id: none is given
            // back before a later sweep can tell.
            return;
        }
        self.draining.retain(|&id| {
            let keep = left.contains(&id);
            if !keep {
                release(id);
            }
            keep
        });
    }

    /// Reads the list of the worker's children into `text`; returns its length, or `None` if
    /// /proc cannot tell. A read at offset 0 makes /proc list afresh; the list is read until a
    /// read returns nothing (/proc hands out at most a page at a time).
    fn read_children(&mut self) -> Option<usize> {
        let file = self.children.as_ref()?;
        let mut length = 0;
        loop {
            if length == self.text.len() {
                self.text.resize(self.text.len() * 2, 0);
            }
            match file.read_at(&mut self.text[length..], length as u64).ok()? {
                0 => return Some(length),
                read => length += read,
            }
        }
    }
}

/// How many times one sweep reads the worker's children list at most; what is left after is
/// the next sweep's.
const MAX_PASSES: usize = 16;

/// Kills `leftover`, a child of the worker of the ended id `id`, by its pid (not reaped, so
/// still its own), and everything below it, top down; adds each process it deals with to
/// `visited`, and passes over those already there.
///
/// A process with SIGKILL pending cannot finish a fork (the kernel cancels one whose child is
/// not yet in its children list), so a process's children are those listed just before its
/// kill, and those forked until the kill, which are listed just after it unless it has died
/// already: then they are the worker's, and the sweep's next pass finds them. The lists are per
/// thread, so a fork from another thread is found too. A process below the worker's children is
/// signalled through a pidfd, after its uid is checked, because its pid comes from a list: a
/// pid freed and taken by another process in between must not be hit.
fn kill_tree(leftover: Pid, id: u32, visited: &mut HashSet<Pid>) {
    let mut below = children_of(leftover);
    let _ = kill(leftover, Signal::SIGKILL);
    below.extend(children_of(leftover));
    visited.insert(leftover);
    while let Some(pid) = below.pop() {
        // Listed twice (before and after its parent's kill), or gone: once is enough.
        if !visited.insert(pid) {
            continue;
        }
        let before = children_of(pid);
        if kill_if_of(pid, id) {
            below.extend(before);
            below.extend(children_of(pid));
        }
    }
}

/// The children of `pid`, from the children list of each of its threads; none if it is gone.
fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for thread in threads.flatten() {
        if let Ok(list) = std::fs::read_to_string(thread.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|child| child.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    children
}

/// Sends SIGKILL to `pid` if it runs as `id`; whether it was sent. The pidfd names the process
/// that had the pid when it was opened, /proc the one that has it when read: if they differ,
/// the first has died, and the signal reaches nobody whatever uid the second has.
fn kill_if_of(pid: Pid, id: u32) -> bool {
    // SAFETY: pidfd_open(2) takes a pid and flags; it returns a new descriptor, or -1.
    let opened = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let Ok(raw @ 0..) = std::os::fd::RawFd::try_from(opened) else {
        return false;
    };
    // SAFETY: a descriptor just made for us, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    if real_uid_of(pid) != Some(id) {
        return false;
    }
    // SAFETY: pidfd_send_signal(2) with a pidfd, a signal, no siginfo and no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    sent == 0
}

/// The real uid of process `pid` (from `/proc/PID/status`, readable whatever the process made
/// itself: non-dumpable, its /proc folder is root's, its status still says who it is).
fn real_uid_of(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends `signal` to every process running as `id` in the worker's PID namespace.
pub fn kill_id(id: u32, signal: Signal) {
    if take_uid(id).is_err() {
        // Without the switch the kill would reach every CGI of the worker: none is sent. The
        // switch cannot fail for a mapped id (the worker checked `id_kill_is_confined` at
        // start); the CGI is then left to its deadline and the worker's exit.
        return;
    }
    // SAFETY: kill(2) takes plain numbers.
    unsafe { libc::kill(-1, signal as libc::c_int) };
    // Back to the saved uid, 0: always allowed.
    let _ = take_uid(0);
    rearm_parent_death_signal();
}

/// A change of effective uid clears the parent-death signal (credentials(7)), which the worker
/// set so that it dies with its holder: set it again after each switch. Without it a worker
/// whose holder was killed served on, unseen by the supervisor, which could start another
/// worker on the same ids.
fn rearm_parent_death_signal() {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
}

/// Whether [`kill_id`] is confined to the id it is given: whether taking `probe` (a CGI id)
/// as real and effective uid leaves the worker without an effective capability (it would not
/// with the `SECBIT_NO_SETUID_FIXUP` secure bit), and taking 0 back restores them. Checked
/// once, at the worker's start.
pub fn id_kill_is_confined(probe: u32) -> Result<(), String> {
    let before = effective_capabilities()?;
    take_uid(probe).map_err(|errno| format!("cannot take id {probe}: {errno}"))?;
    let during = effective_capabilities();
    take_uid(0).map_err(|errno| format!("cannot take uid 0 back: {errno}"))?;
    rearm_parent_death_signal();
    let after = effective_capabilities()?;
    match during? {
        0 if after == before => Ok(()),
        0 => Err(format!(
            "capabilities {before:#x} became {after:#x} after a switch of uid"
        )),
        kept => Err(format!(
            "capabilities {kept:#x} kept under a CGI's uid (a secure bit?): a kill would reach \
             every CGI"
        )),
    }
}

/// Takes `uid` as real and effective uid; the saved uid (0) stays.
fn take_uid(uid: u32) -> Result<(), Errno> {
    const UNCHANGED: libc::uid_t = libc::uid_t::MAX;
    // SAFETY: setresuid(2) takes plain numbers; the raw call changes this thread's credentials
    // only.
    let switched = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, UNCHANGED) };
    if switched == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

/// capget(2)'s header and data, version 3 (64-bit sets, in two halves).
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapabilitySets {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This thread's effective capability set.
fn effective_capabilities() -> Result<u64, String> {
    let mut header = CapabilityHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut sets = [CapabilitySets::default(); 2];
    // SAFETY: a version 3 header and the two structs that version fills, laid out as the
    // kernel's.
    let read = unsafe { libc::syscall(libc::SYS_capget, &mut header, sets.as_mut_ptr()) };
    if read == -1 {
        return Err(format!("capget: {}", Errno::last()));
    }
    Ok(u64::from(sets[0].effective) | (u64::from(sets[1].effective) << 32))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    use super::*;

    /// Ids of the gateway's default CGI range that nothing on a test machine runs as.
    const VICTIM: u32 = 1_896_800_001;
    const BYSTANDER: u32 = 1_896_800_002;

    /// A process running as `id` that leaves its process group and session (`setsid`), forks
    /// a grandchild, and sleeps; returns its pid.
    fn sleeper(id: u32) -> Pid {
        // SAFETY: the child makes system calls only and ends with `_exit` or exec's death.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                // SAFETY: plain numbers; each process just sleeps until killed.
                unsafe {
                    libc::setsid();
                    libc::setresgid(id, id, id);
                    libc::setresuid(id, id, id);
                    libc::fork();
                    libc::sleep(30);
                    libc::_exit(0)
                }
            }
            ForkResult::Parent { child } => child,
        }
    }

    /// Every pid whose real uid is `id` (from /proc).
    fn processes_of(id: u32) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let zombie = status.lines().any(|line| line.starts_with("State:\tZ"));
            let uid = status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
            if uid == Some(id) && !zombie {
                pids.push(pid);
            }
        }
        pids
    }

    /// The lock of the tests that start children, or `None` (said on stderr) unless root.
    fn as_root_alone() -> Option<std::sync::MutexGuard<'static, ()>> {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        Some(
            crate::ONE_AT_A_TIME
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The ids one sweep gives back.
    fn swept(
        leftovers: &mut Leftovers,
        ended: &[u32],
        is_main: impl Fn(Pid) -> bool,
        is_running: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        let mut released = Vec::new();
        leftovers.sweep(ended.iter().copied(), false, is_main, is_running, |id| {
            released.push(id)
        });
        released
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// As root: the kill reaches both processes of the victim's id, the one that left its
    /// session included, and neither of the bystander's; the caller keeps its capabilities.
    #[test]
    fn a_kill_reaches_every_process_of_the_id_and_no_other() {
        let Some(_one) = as_root_alone() else {
            return;
        };
        id_kill_is_confined(VICTIM).expect("confined");
        let victim = sleeper(VICTIM);
        let bystander = sleeper(BYSTANDER);
        wait_until("both sleepers and their children", || {
            processes_of(VICTIM).len() == 2 && processes_of(BYSTANDER).len() == 2
        });
        let capabilities = effective_capabilities().expect("capget");
        kill_id(VICTIM, Signal::SIGKILL);
        assert_eq!(effective_capabilities().expect("capget"), capabilities);
        wait_until("the victim's processes gone", || {
            processes_of(VICTIM).is_empty()
        });
        assert_eq!(processes_of(BYSTANDER).len(), 2, "the bystander was hit");
        kill_id(BYSTANDER, Signal::SIGKILL);
        wait_until("the bystander's processes gone", || {
            processes_of(BYSTANDER).is_empty()
        });
        for child in [victim, bystander] {
            let status = waitpid(child, Some(WaitPidFlag::empty())).expect("waitpid");
            assert!(
                matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
                "{status:?}"
            );
        }
    }

    /// A child of this thread running as `id` that sleeps until killed; with a `length` above
    /// 1, the first of a chain of that many processes, each the child of the one before.
    fn chain(id: u32, length: usize) -> Pid {
        // SAFETY: the child makes system calls only and ends by a signal or `_exit`.
        match unsafe { fork() }.expect("fork") {
            // SAFETY: plain numbers; each link forks the next (the last none) and sleeps.
            ForkResult::Child => unsafe {
                libc::syscall(libc::SYS_setresgid, id, id, id);
                libc::syscall(libc::SYS_setresuid, id, id, id);
                for _ in 1..length {
                    if libc::fork() != 0 {
                        break;
                    }
                }
                libc::sleep(30);
                libc::_exit(0)
            },
            ForkResult::Parent { child } => child,
        }
    }

    /// As root: of this thread's children, the one of an ended id is killed; the "main
    /// process" of a running CGI and the processes of a running id are not. The ended id is
    /// given back by the first sweep after its process is reaped, not before. Each child's uid
    /// is read once, and forgotten at its reap. More children
    /// than /proc lists in one read (a page), the ended one last, so the list must be read
    /// whole.
    #[test]
    fn leftovers_are_found_among_the_children_and_killed_by_pid() {
        const MAIN: u32 = 1_896_800_011;
        const ENDED: u32 = 1_896_800_012;
        const RUNNING: u32 = 1_896_800_013;
        let Some(_one) = as_root_alone() else {
            return;
        };
        let mut leftovers = Leftovers::new();
        let main = chain(MAIN, 1);
        // Children until their list is longer than a page (pids' lengths vary), then one more.
        let mut running = Vec::new();
        while leftovers.read_children().expect("the children list") <= 4096 {
            assert!(running.len() < 4000, "a page of pids never filled");
            running.extend((0..100).map(|_| chain(RUNNING, 1)));
        }
        // Last: past the first page of the list.
        let left = chain(ENDED, 1);
        wait_until("every child as its id", || {
            processes_of(RUNNING).len() == running.len() && processes_of(ENDED).len() == 1
        });
        let is_main = |pid| pid == main;
        let is_running = |id| id == RUNNING;
        let free = swept(&mut leftovers, &[ENDED], is_main, is_running);
        assert!(free.is_empty(), "{free:?} given back with a process left");
        assert_eq!(leftovers.uids.len(), running.len() + 1, "uids read");
        let status = waitpid(left, Some(WaitPidFlag::empty())).expect("waitpid");
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "{status:?}"
        );
        leftovers.forget(left);
        assert_eq!(swept(&mut leftovers, &[], is_main, is_running), [ENDED]);
        assert!(swept(&mut leftovers, &[], is_main, is_running).is_empty());
        assert_eq!(
            leftovers.uids.len(),
            running.len(),
            "uids kept or forgotten"
        );
        assert!(running
            .iter()
            .all(|pid| leftovers.uids.get(pid) == Some(&RUNNING)));
        assert_eq!(processes_of(MAIN).len(), 1, "the main process was killed");
        assert_eq!(
            processes_of(RUNNING).len(),
            running.len(),
            "a running CGI was hit"
        );
        for child in running.into_iter().chain([main]) {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, Some(WaitPidFlag::empty()));
        }
    }

    /// As root: a sweep signals the worker's own children and nothing else. A process of the
    /// ended id that is no descendant of this thread (a grandchild whose parent exited, so it
    /// went to the host's init) is not touched, where a kill by id (which walks every process
    /// of the host) would reach it.
    #[test]
    fn a_sweep_reaches_only_the_workers_children() {
        const ENDED: u32 = 1_896_800_021;
        let Some(_one) = as_root_alone() else {
            return;
        };
        let mut leftovers = Leftovers::new();
        // The stranger: forked by a child that exits at once.
        let parent = sleeper(ENDED);
        wait_until("the stranger", || processes_of(ENDED).len() == 2);
        nix::sys::signal::kill(parent, Signal::SIGKILL).expect("kill the stranger's parent");
        waitpid(parent, Some(WaitPidFlag::empty())).expect("waitpid");
        let stranger = processes_of(ENDED);
        assert_eq!(stranger.len(), 1, "{stranger:?}");
        let left = chain(ENDED, 1);
        wait_until("the child", || processes_of(ENDED).len() == 2);

        assert!(swept(&mut leftovers, &[ENDED], |_| false, |_| false).is_empty());
        let status = waitpid(left, Some(WaitPidFlag::empty())).expect("waitpid");
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "{status:?}"
        );
        assert_eq!(
            processes_of(ENDED),
            stranger,
            "the stranger was hit, or another appeared"
        );
        assert_eq!(swept(&mut leftovers, &[], |_| false, |_| false), [ENDED]);
        let stranger = Pid::from_raw(stranger[0] as i32);
        nix::sys::signal::kill(stranger, Signal::SIGKILL).expect("kill the stranger");
        wait_until("the stranger gone", || processes_of(ENDED).is_empty());
    }

    /// A child forked by another thread of a process is in that thread's children list, not
    /// the first thread's: the list of a process's children is read thread by thread.
    #[test]
    fn the_children_of_every_thread_are_listed() {
        const CHILD: u32 = 1_896_800_041;
        let Some(_one) = as_root_alone() else {
            return;
        };
        // The thread stays until the list is read: its children go to another thread when it
        // ends.
        let (forked, child) = std::sync::mpsc::channel();
        let (read, listed) = std::sync::mpsc::channel::<()>();
        let forker = std::thread::spawn(move || {
            let _ = forked.send(chain(CHILD, 1));
            let _ = listed.recv();
        });
        let child = child.recv().expect("the forking thread's child");
        let listed = children_of(nix::unistd::getpid());
        drop(read);
        forker.join().expect("the forking thread");
        nix::sys::signal::kill(child, Signal::SIGKILL).expect("kill");
        waitpid(child, Some(WaitPidFlag::empty())).expect("waitpid");
        assert!(listed.contains(&child), "{child} not in {listed:?}");
    }

    /// As root: one sweep kills a leftover and everything below it, down to a chain's end,
    /// though only its first process is this thread's child. (Killed one generation per sweep,
    /// the rest would go to the host's init, out of the sweeps' reach.)
    #[test]
    fn a_sweep_kills_a_leftover_and_all_it_started() {
        const ENDED: u32 = 1_896_800_031;
        let Some(_one) = as_root_alone() else {
            return;
        };
        let mut leftovers = Leftovers::new();
        let first = chain(ENDED, 4);
        wait_until("the chain", || processes_of(ENDED).len() == 4);
        assert!(swept(&mut leftovers, &[ENDED], |_| false, |_| false).is_empty());
        let status = waitpid(first, Some(WaitPidFlag::empty())).expect("waitpid");
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "{status:?}"
        );
        wait_until("the whole chain gone", || processes_of(ENDED).is_empty());
    }
}
