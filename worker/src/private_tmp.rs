//! Each CGI's private `/tmp`, made once and used again: a mount namespace whose `/tmp` is a
//! tmpfs of its own, kept by the worker after its CGI has ended and handed to a later CGI
//! (entered with `setns`) once it is empty again.
//!
//! Why: making the namespace per CGI (`unshare`, `mount`) and tearing it down when the CGI's
//! last process exits (which waits for an expedited RCU grace period) cost about 55 µs of CPU
//! per request, measured in `bench/MISSES.md`: most of what the per-request isolation cost.
//! Entering a ready namespace is one `setns`.
//!
//! What keeps one request's `/tmp` from reaching the next (SECURITY.md):
//! - A namespace goes back to the pool only when its CGI has ended (its main process reaped
//!   and every process of its id killed) and left nothing in its tmpfs; one it filled is
//!   dropped then, so what was written there is freed at once, not when a later CGI would
//!   have found it dirty. The pool is first in, first out, so a namespace is used again only
//!   after every other idle one.
//! - When it is taken, its owner and mode are set anew for the new CGI's id (the tmpfs root is
//!   the one thing a CGI owns there and could have changed), and then its `/tmp` must be
//!   empty, checked on the tmpfs root the worker holds open: no entry (a tmpfs directory's
//!   size counts its entries), no subfolder link, no extended attribute (nor an ACL), and no
//!   block or inode in use in the tmpfs but its root (a file unlinked while a process of
//!   another request, given its descriptor, holds it open). Anything else: the namespace is
//!   dropped, and the CGI gets a fresh one, as it would without the pool.
//! - Not checked: timestamps and inode numbers, which tell a later CGI only when and how many
//!   files an earlier one made, never what was in them.
//!
//! A fresh namespace is made by the CGI's own process as before (`launch.rs`); right after it
//! has started, the worker takes a handle on that namespace and its `/tmp` from `/proc` (the
//! CGI is its child, not yet reaped, so the pid cannot name another process).

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
use nix::sys::statvfs::fstatvfs;
use nix::unistd::{fchown, Gid, Pid, Uid};

/// How many namespaces the worker keeps, in use and idle together: two descriptors each, and
/// every descriptor of the worker is copied into each CGI's process and closed at its exec
/// (measured: 450 of them cost about 30 µs per request). The pool grows to the number of CGIs
/// running at once; beyond this bound a CGI gets a namespace of its own that goes away with
/// it, as without the pool.
const MAX_NAMESPACES: usize = 64;

/// Idle namespaces kept beyond one per running CGI: enough that the usual swing in how many
/// CGIs run at once finds namespaces ready, few enough that a burst (hundreds of CGIs at once,
/// the pool at [`MAX_NAMESPACES`]) does not leave the worker copying their descriptors into
/// every later CGI: measured, a worker left at 143 descriptors used 3–5 % more CPU per request
/// than at its usual 23 (`bench/MISSES.md`).
const IDLE_BEYOND_RUNNING: usize = 8;

/// The size tmpfs gives an empty directory: it counts each entry as 20 bytes (BOGO_DIRENT_SIZE)
/// and starts a directory at two, for `.` and `..` (mm/shmem.c).
const EMPTY_TMPFS_DIR_SIZE: i64 = 40;

/// A mount namespace made for a CGI, and the root of its `/tmp` tmpfs.
struct PrivateTmp {
    namespace: OwnedFd,
    tmp_root: OwnedFd,
}

/// The namespaces the worker keeps: idle ones, oldest first, and those of running CGIs.
pub struct TmpPool {
    /// `/tmp` as a CGI's namespace names it (`None`: the jail has no writable area).
    tmp_dir: Option<CString>,
    idle: VecDeque<PrivateTmp>,
    /// By the id of the CGI using it.
    in_use: HashMap<u32, PrivateTmp>,
}

impl TmpPool {
    pub fn new(tmp_dir: Option<CString>) -> TmpPool {
        TmpPool {
            tmp_dir,
            idle: VecDeque::new(),
            in_use: HashMap::new(),
        }
    }

    /// A ready namespace for the CGI that is to run as `id`, owned by it, or `None`: then the
    /// CGI's process makes a fresh one, and [`TmpPool::keep`] takes it in after the start.
    pub fn take(&mut self, id: u32) -> Option<BorrowedFd<'_>> {
        while let Some(ready) = self.idle.pop_front() {
            // Handed over first, then checked: whoever else still holds the folder open (a
            // process of another CGI that got a descriptor of it passed) may have added to it
            // while it was another's, and can add nothing once it is this one's, mode 0700.
            if handed_to(&ready.tmp_root, id) && is_empty(&ready.tmp_root) {
                let taken = self.in_use.entry(id).insert_entry(ready).into_mut();
                return Some(taken.namespace.as_fd());
            }
            // Dropped: the kernel tears it down, with whatever its CGI left there.
        }
        None
    }

    /// Gives back a namespace taken for `id` whose CGI did not start.
    pub fn put_back(&mut self, id: u32) {
        if let Some(ready) = self.in_use.remove(&id) {
            self.idle.push_front(ready);
        }
    }

    /// Takes in the namespace the CGI `pid`, running as `id`, made for itself, to use again
    /// after it. Quietly does nothing where it cannot: the CGI has already exited, the jail
    /// has no `/proc` or no `/tmp`, or the pool is full.
    pub fn keep(&mut self, id: u32, pid: Pid) {
        let Some(tmp_dir) = &self.tmp_dir else { return };
        if self.idle.len() + self.in_use.len() >= MAX_NAMESPACES {
            return;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let Ok(namespace) = open(format!("/proc/{pid}/ns/mnt").as_str(), flags, Mode::empty())
        else {
            return;
        };
        // Through the CGI's root, so in its mount namespace: /proc/PID/root/tmp.
        let tmp_path = format!("/proc/{pid}/root{}", tmp_dir.to_string_lossy());
        let dir_flags = flags | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let Ok(tmp_root) = open(tmp_path.as_str(), dir_flags, Mode::empty()) else {
            return;
        };
        // Only a tmpfs root (the one the CGI's process mounted) is what the checks above read.
        match fstatfs(&tmp_root) {
            Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC => {}
            _ => return,
        }
        self.in_use.insert(
            id,
            PrivateTmp {
                namespace,
                tmp_root,
            },
        );
    }

    /// The CGI that ran as `id` has ended: its namespace waits in line for a later CGI, unless
    /// its CGI left something in it. Kept, what the CGI left would stay in memory until a
    /// later CGI took the namespace and found it dirty (up to the tmpfs's size, for each idle
    /// namespace); dropped, the kernel frees it now. After a burst the pool shrinks back to
    /// what runs now and [`IDLE_BEYOND_RUNNING`] more.
    pub fn release(&mut self, id: u32) {
        if let Some(used) = self.in_use.remove(&id) {
            if holds_nothing(&used.tmp_root) {
                self.idle.push_back(used);
            }
        }
        while self.idle.len() > self.in_use.len() + IDLE_BEYOND_RUNNING {
            // The oldest goes; the kernel tears it down.
            self.idle.pop_front();
        }
    }
}

/// No block and no inode but the root's in use in the whole tmpfs: one `fstatvfs`, which tells
/// a namespace worth keeping as its CGI ends. [`is_empty`] is the full check, when it is taken.
fn holds_nothing(tmp_root: &OwnedFd) -> bool {
    // A tmpfs without an inode limit counts no inodes (0 of 0): its blocks still tell.
    fstatvfs(tmp_root).is_ok_and(|fs| {
        fs.blocks().saturating_sub(fs.blocks_free()) == 0
            && fs.files().saturating_sub(fs.files_free()) <= 1
    })
}

/// No entry, no subfolder, no extended attribute, and nothing in the whole tmpfs but its root:
/// no block and no other inode in use. A file unlinked while a process (of another CGI, that
/// got a descriptor of it passed) keeps it open is in no folder, but fills the tmpfs for the
/// next CGI; the counts show it.
fn is_empty(tmp_root: &OwnedFd) -> bool {
    let Ok(stat) = fstat(tmp_root) else {
        return false;
    };
    // SAFETY: a null buffer of size 0 only asks for the size of the attribute list.
    let xattrs = unsafe { libc::flistxattr(tmp_root.as_raw_fd(), std::ptr::null_mut(), 0) };
    stat.st_size == EMPTY_TMPFS_DIR_SIZE
        && stat.st_nlink == 2
        && xattrs == 0
        && holds_nothing(tmp_root)
}

/// Owned by `id` (uid and gid), mode 0700, as a fresh tmpfs for it would be.
fn handed_to(tmp_root: &OwnedFd, id: u32) -> bool {
    fchown(tmp_root, Some(Uid::from_raw(id)), Some(Gid::from_raw(id))).is_ok()
        && fchmod(tmp_root, Mode::S_IRWXU).is_ok()
}
