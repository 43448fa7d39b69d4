//! `gateway jail check DIR` and the gateway's start-up audit: everything in a jail tree
//! that would give a CGI a way back to root, to the host, or to the programs of the next
//! request.
//!
//! The whole tree is walked with `statx(AT_SYMLINK_NOFOLLOW)` relative to directory
//! descriptors opened with `O_NOFOLLOW`: no symlink in the jail is ever followed (DIR
//! itself is, being the administrator's own path). Every finding is reported, sorted by
//! jail path, not just the first; only a failure that stops the audit itself (DIR
//! unreadable, an I/O error, a tree too deep) is an error.
//!
//! Choices made here:
//! - Mount points: a mount below DIR (told by `STATX_ATTR_MOUNT_ROOT`, so a bind mount of
//!   the same file system too; on a kernel older than 5.8, which cannot say, by a device
//!   other than DIR's) is a finding, [`Problem::MountPoint`], and is not descended into. The worker bind-mounts the jail without `MS_REC`, so CGIs see what
//!   lies *under* such a mount, which cannot be audited from here; failing closed is the
//!   only safe answer, and it keeps the walk out of a mounted `/proc` or host tree.
//! - Writable places ([`WRITABLE_AREAS`]: where the worker mounts its tmpfs) are exempt
//!   from the ownership and writability rules, themselves and everything under them (CGIs
//!   create files there); a writable place must still be sticky if world-writable, and the
//!   other rules (setuid, capabilities, devices, sockets, FIFOs, hard links) apply to
//!   their contents too. The data folder's contents ([`AuditOptions::data`]) are not walked:
//!   they are the CGIs' own, and a CGI must not be able to stop the next start.
//! - The CGI user's group is only its primary gid: the worker calls `setgroups([])`.
//! - Outside the writable places everything is root's, and writable only by root (or root's
//!   group): a file another host account owns or may write is one that account can change
//!   under every CGI, and so reach every request.
//! - Permissions of symlinks mean nothing (always 0777), so only their owner is checked.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use protocol::layout::{CGI_DIR, DEFAULT_CGI_IDS, DEVICES, PROC_DIR, WRITABLE_AREAS};
use protocol::IdRange;

use super::user::CgiUser;

/// How deep the walk goes before giving up (an error, so the audit fails closed). Real
/// jails are a dozen levels deep; the limit bounds the descriptors held open, one a level.
pub(super) const MAX_AUDIT_DEPTH: usize = 128;

/// The extended attribute that holds file capabilities (capabilities(7)).
const CAPABILITY_XATTR: &CStr = c"security.capability";

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The jail's root on the host.
    pub dir: PathBuf,
    /// The account CGIs run as.
    pub user: CgiUser,
    /// Absolute jail paths where the CGI user may write.
    pub writable: Vec<PathBuf>,
    /// The ids CGIs run as (`--cgi-ids`): no file of the jail may be theirs.
    pub cgi_ids: IdRange,
    /// The data folder (`--data-dir`), a writable place whose contents are the CGIs' own and
    /// are not walked: every worker mounts it `nosuid`, `nodev` and `noexec`, so nothing a
    /// CGI leaves there (a FIFO, a setuid bit, folders nested past the audit's depth) gives
    /// anything, and none of it may stop the next start or reload.
    pub data: Option<PathBuf>,
}

impl AuditOptions {
    /// Audit `dir` for `user`, with [`WRITABLE_AREAS`] as the writable places.
    pub fn new(dir: impl Into<PathBuf>, user: CgiUser) -> Self {
        AuditOptions {
            dir: dir.into(),
            user,
            writable: WRITABLE_AREAS
                .iter()
                .map(|area| Path::new("/").join(area))
                .collect(),
            cgi_ids: DEFAULT_CGI_IDS,
            data: None,
        }
    }
}

/// One problem at one path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// The jail path, as seen after the chroot (`/bin/su`).
    pub path: PathBuf,
    pub problem: Problem,
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    Char,
    Block,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// The jail root is not owned by root, or is writable by group or others: whoever can
    /// write it can replace `/bin`. `mode` holds the permission bits.
    UnsafeJailRoot {
        uid: u32,
        mode: u32,
    },
    /// A folder on the host that holds the jail is not root's, or is writable by group or
    /// others without the sticky bit: whoever can write it can put another tree in the
    /// jail's place after the audit (each worker start finds the jail by its path again).
    UnsafeJailParent {
        folder: PathBuf,
        uid: u32,
        mode: u32,
    },
    /// `sys` at the top of the jail, `proc` that is not an empty root-owned folder, or
    /// anything in it.
    ProcOrSys,
    /// Owned by an id CGIs run as (`--cgi-ids`).
    OwnedByCgiId,
    /// A file system is mounted here; not descended into.
    MountPoint,
    /// A setuid regular file.
    Setuid,
    /// A setgid regular file.
    Setgid,
    /// A regular file with a `security.capability` attribute.
    FileCapabilities,
    /// A block device, or a character device other than `/dev/null`, `/dev/zero` and
    /// `/dev/urandom` with their own numbers.
    DeviceNode {
        kind: DeviceKind,
        major: u32,
        minor: u32,
    },
    Socket,
    Fifo,
    /// A regular file with `links` hard links, not all of them inside the jail.
    HardLinkOutside {
        links: u64,
    },
    /// A world-writable directory without the sticky bit.
    WorldWritableWithoutSticky,
    /// A world-writable file or (sticky) directory outside the writable places.
    WorldWritable,
    /// Group-writable with the CGI user's group, outside the writable places.
    WritableByCgiUser,
    /// Owned by the CGI user, outside the writable places.
    OwnedByCgiUser,
    /// Owned by another account than root (nor the CGI user's, nor an id of `--cgi-ids`),
    /// outside the writable places: whoever holds it can change what every CGI runs or
    /// reads, and with that every request.
    NotRootOwned {
        uid: u32,
    },
    /// Group-writable with a group other than root's (nor the CGI user's), outside the
    /// writable places: its members can change it.
    WritableByGroup {
        gid: u32,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnsafeJailRoot { uid, mode } => write!(
                f,
                "jail root owned by uid {uid} with mode {mode:04o}: it must be owned by root \
                 and not writable by group or others"
            ),
            Problem::UnsafeJailParent { folder, uid, mode } => write!(
                f,
                "{} holds the jail and is owned by uid {uid} with mode {mode:04o}: it must be \
                 owned by root and writable by group or others only with the sticky bit, or \
                 another tree could take the jail's place",
                folder.display()
            ),
            Problem::ProcOrSys => f.write_str(
                "proc or sys in the jail: the kernel's process and system interfaces do not \
                 belong in a jail (only an empty, root-owned /proc, where each worker mounts \
                 one that shows a CGI its own processes)",
            ),
            Problem::OwnedByCgiId => f.write_str(
                "owned by one of the ids CGIs run as (--cgi-ids): the CGI that gets that id \
                 could change or replace it",
            ),
            Problem::MountPoint => f.write_str(
                "a file system is mounted here: not audited, and the worker's bind mount \
                 would show CGIs what lies beneath it",
            ),
            Problem::Setuid => f.write_str("setuid file (the classic way back to root)"),
            Problem::Setgid => f.write_str("setgid file (runs with its group's privileges)"),
            Problem::FileCapabilities => {
                f.write_str("file capabilities (security.capability): privileges granted on exec")
            }
            Problem::DeviceNode {
                kind: DeviceKind::Char,
                major,
                minor,
            } => write!(
                f,
                "character device {major},{minor} (only /dev/null 1,3, /dev/zero 1,5 and \
                 /dev/urandom 1,9 are allowed)"
            ),
            Problem::DeviceNode {
                kind: DeviceKind::Block,
                major,
                minor,
            } => write!(f, "block device {major},{minor} (raw access to a disk)"),
            Problem::Socket => {
                f.write_str("Unix socket (a way to talk to a process outside the jail)")
            }
            Problem::Fifo => f.write_str("FIFO (a way to talk to a process outside the jail)"),
            Problem::HardLinkOutside { links } => write!(
                f,
                "regular file with {links} hard links, not all inside the jail (a host file \
                 smuggled in, or one a CGI could change)"
            ),
            Problem::WorldWritableWithoutSticky => {
                f.write_str("world-writable directory without the sticky bit")
            }
            Problem::WorldWritable => f.write_str("world-writable outside the writable places"),
            Problem::WritableByCgiUser => {
                f.write_str("writable by the CGI user's group outside the writable places")
            }
            Problem::OwnedByCgiUser => f.write_str(
                "owned by the CGI user outside the writable places (it can change or \
                 replace it)",
            ),
            Problem::NotRootOwned { uid } => write!(
                f,
                "owned by uid {uid}, not root, outside the writable places (that account \
                 can change what CGIs run or read)"
            ),
            Problem::WritableByGroup { gid } => write!(
                f,
                "writable by group {gid} outside the writable places (its members can change \
                 what CGIs run or read)"
            ),
        }
    }
}

impl fmt::Display for Finding {
    /// One line: the path (control characters and bytes that are not UTF-8 escaped as
    /// `\xNN`, so that a file name cannot forge lines), `: `, the problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.path.as_os_str())?;
        write!(f, ": {}", self.problem)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, name: &OsStr) -> fmt::Result {
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for byte in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{byte:02x}")?;
                    }
                }
                c => write!(f, "{c}")?,
            }
        }
        for byte in chunk.invalid() {
            write!(f, "\\x{byte:02x}")?;
        }
    }
    Ok(())
}

/// Why the audit could not be done (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    /// A folder that is no jail at all (the host's root, `/etc`): the audit's rules would
    /// find nothing wrong with many such folders, which says nothing.
    #[error("{path} is not a jail: {why}")]
    NotAJail { path: PathBuf, why: String },
    #[error("writable place {path:?}: {reason}")]
    InvalidWritable { path: PathBuf, reason: &'static str },
    #[error("{path}: more than {MAX_AUDIT_DEPTH} levels deep; the tree was not audited")]
    TooDeep { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What makes a folder a jail at all, before any rule of the audit: it is not the host's
/// root, and it has the [`CGI_DIR`] folder that every URL maps into (`gateway jail init`
/// makes one). Returns the folder's canonical path. Serving and `gateway jail check` both
/// ask this, so `jail check /etc` says that `/etc` is no jail instead of "no findings".
pub fn check_is_jail(dir: &Path) -> Result<PathBuf, AuditError> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| AuditError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if !canonical.is_dir() {
        return Err(AuditError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let not_a_jail = |why: String| AuditError::NotAJail {
        path: dir.to_path_buf(),
        why,
    };
    if canonical == Path::new("/") {
        return Err(not_a_jail("it is the host's root".into()));
    }
    let cgi_dir = std::fs::symlink_metadata(canonical.join(CGI_DIR.trim_start_matches('/')));
    if cgi_dir.as_ref().is_ok_and(|meta| meta.is_symlink()) {
        // Its CGIs would never run: the worker runs only what lies in the CGI folder itself.
        return Err(not_a_jail(format!(
            "its {CGI_DIR} is a symlink; a jail keeps its CGIs in a real folder there"
        )));
    }
    if !cgi_dir.is_ok_and(|meta| meta.is_dir()) {
        return Err(not_a_jail(format!(
            "it has no {CGI_DIR} folder, where a jail keeps its CGIs (`gateway jail init \
             NEWDIR` builds a jail in a new folder)"
        )));
    }
    Ok(canonical)
}

/// Audit the jail at `opts.dir`. `Ok` with every finding, sorted by path (empty: the jail
/// is fit to serve from); `Err` if the folder is no jail ([`check_is_jail`]) or the audit
/// itself could not be done.
pub fn audit(opts: &AuditOptions) -> Result<Vec<Finding>, AuditError> {
    for path in opts.writable.iter().chain(&opts.data) {
        check_writable(path)?;
    }
    let canonical = check_is_jail(&opts.dir)?;
    let mut root = match Dir::open(
        &opts.dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(root) => root,
        Err(Errno::ENOTDIR) => {
            return Err(AuditError::NotADirectory {
                path: opts.dir.clone(),
            })
        }
        Err(e) => return Err(io_error(&opts.dir, Path::new("/"), e)),
    };
    let root_st = statx_at(root.as_fd(), c"", libc::AT_EMPTY_PATH)
        .map_err(|e| io_error(&opts.dir, Path::new("/"), e))?;
    let names = read_names(&mut root).map_err(|e| io_error(&opts.dir, Path::new("/"), e))?;
    let mut walk = Walk {
        opts,
        root_dev: (root_st.stx_dev_major, root_st.stx_dev_minor),
        findings: Vec::new(),
        links: HashMap::new(),
    };
    let root_mode = u32::from(root_st.stx_mode) & 0o7777;
    if root_st.stx_uid != 0 || root_mode & 0o022 != 0 {
        walk.found(
            Path::new("/"),
            Problem::UnsafeJailRoot {
                uid: root_st.stx_uid,
                mode: root_mode,
            },
        );
    }
    for folder in canonical.ancestors().skip(1) {
        use std::os::unix::fs::MetadataExt;
        let st =
            std::fs::symlink_metadata(folder).map_err(|e| io_error(folder, Path::new("/"), e))?;
        let mode = st.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if st.uid() != 0 || (mode & 0o022 != 0 && !sticky) {
            walk.found(
                Path::new("/"),
                Problem::UnsafeJailParent {
                    folder: folder.to_path_buf(),
                    uid: st.uid(),
                    mode,
                },
            );
        }
    }
    walk.run(Frame {
        dir: root,
        path: PathBuf::from("/"),
        names,
        in_writable: false,
    })?;

    let mut findings = walk.findings;
    for (nlink, paths) in walk.links.into_values() {
        if (paths.len() as u64) < nlink {
            findings.extend(paths.into_iter().map(|path| Finding {
                path,
                problem: Problem::HardLinkOutside { links: nlink },
            }));
        }
    }
    findings.sort();
    findings.dedup();
    Ok(findings)
}

/// An absolute jail path below `/`, plain names only.
fn check_writable(path: &Path) -> Result<(), AuditError> {
    let invalid = |reason| AuditError::InvalidWritable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(invalid("not an absolute jail path"));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(invalid("only plain names are allowed ('..' is not)"));
    }
    if path.components().count() < 2 {
        return Err(invalid("the jail root cannot be a writable place"));
    }
    Ok(())
}

fn io_error(dir: &Path, path: &Path, source: impl Into<io::Error>) -> AuditError {
    AuditError::Io {
        path: dir.join(path.strip_prefix("/").unwrap_or(path)),
        source: source.into(),
    }
}

/// One directory being walked: its entries not yet looked at, last first.
struct Frame {
    dir: Dir,
    /// Its jail path.
    path: PathBuf,
    names: Vec<OsString>,
    /// Inside a writable place (not the place itself).
    in_writable: bool,
}

struct Walk<'a> {
    opts: &'a AuditOptions,
    /// The device DIR is on; an entry on another one is a mount point, when the kernel
    /// cannot say so itself.
    root_dev: (u32, u32),
    findings: Vec<Finding>,
    /// Regular files with more than one link: (device, inode) → (st_nlink, jail paths seen).
    links: HashMap<(u32, u32, u64), (u64, Vec<PathBuf>)>,
}

impl Walk<'_> {
    fn found(&mut self, path: &Path, problem: Problem) {
        self.findings.push(Finding {
            path: path.to_path_buf(),
            problem,
        });
    }

    /// Depth-first over the tree under `root`, one open descriptor per level.
    fn run(&mut self, root: Frame) -> Result<(), AuditError> {
        let mut stack = vec![root];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else {
                return Ok(());
            };
            let Some(name) = frame.names.pop() else {
                stack.pop();
                continue;
            };
            let path = frame.path.join(&name);
            let in_writable = frame.in_writable;
            let cname = CString::new(name.as_bytes()).map_err(|e| self.io(&path, e))?;
            let st = match statx_at(frame.dir.as_fd(), &cname, 0) {
                Ok(st) => st,
                // Gone between readdir and statx: nothing left to audit.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(self.io(&path, e)),
            };
            let entry = Entry {
                dir: frame.dir.as_fd(),
                name: &cname,
                path: &path,
                st: &st,
                top: frame.path.as_os_str() == "/",
                in_writable,
            };
            if !self.check(&entry)? || self.opts.data.as_deref() == Some(path.as_path()) {
                continue;
            }
            if depth >= MAX_AUDIT_DEPTH {
                return Err(AuditError::TooDeep {
                    path: self.opts.dir.join(path.strip_prefix("/").unwrap_or(&path)),
                });
            }
            let mut dir = Dir::openat(
                frame.dir.as_fd(),
                cname.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.io(&path, e))?;
            let names = read_names(&mut dir).map_err(|e| self.io(&path, e))?;
            let in_writable = in_writable || self.is_writable_place(&path);
            stack.push(Frame {
                dir,
                path,
                names,
                in_writable,
            });
        }
    }

    fn io(&self, path: &Path, source: impl Into<io::Error>) -> AuditError {
        io_error(&self.opts.dir, path, source)
    }

    fn is_writable_place(&self, path: &Path) -> bool {
        self.opts
            .writable
            .iter()
            .chain(&self.opts.data)
            .any(|place| place == path)
    }

    /// Record the findings for one entry; true if it is a directory to descend into.
    fn check(&mut self, entry: &Entry<'_>) -> Result<bool, AuditError> {
        let st = entry.st;
        let path = entry.path;
        let mode = u32::from(st.stx_mode);
        let kind = mode & libc::S_IFMT;
        let other_write = mode & 0o002 != 0;
        let sticky = mode & libc::S_ISVTX != 0;
        let mut descend = false;

        let mount_point_for_proc = kind == libc::S_IFDIR && st.stx_uid == 0 && mode & 0o022 == 0;
        let proc_name = CString::new(PROC_DIR).ok();
        let is_proc = entry.top && proc_name.as_deref() == Some(entry.name);
        if (entry.top && entry.name == c"sys")
            || (is_proc && !mount_point_for_proc)
            || path.starts_with(Path::new("/").join(PROC_DIR)) && !is_proc
        {
            self.found(path, Problem::ProcOrSys);
        }

        let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
        // The attribute when the kernel gives it: a btrfs subvolume or an overlayfs layer
        // has a device of its own without being a mount, and CGIs do see it.
        let mount_point = if st.stx_attributes_mask & mount_root != 0 {
            st.stx_attributes & mount_root != 0
        } else {
            (st.stx_dev_major, st.stx_dev_minor) != self.root_dev
        };
        if mount_point {
            self.found(path, Problem::MountPoint);
        }

        match kind {
            libc::S_IFREG => {
                if mode & libc::S_ISUID != 0 {
                    self.found(path, Problem::Setuid);
                }
                if mode & libc::S_ISGID != 0 {
                    self.found(path, Problem::Setgid);
                }
                if has_capabilities(entry.dir, entry.name).map_err(|e| self.io(path, e))? {
                    self.found(path, Problem::FileCapabilities);
                }
                if st.stx_nlink > 1 {
                    let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
                    let seen = self
                        .links
                        .entry(key)
                        .or_insert_with(|| (u64::from(st.stx_nlink), Vec::new()));
                    seen.1.push(path.to_path_buf());
                }
            }
            libc::S_IFDIR => {
                // Inside a writable place a CGI made it; the place itself must be sticky.
                if other_write && !sticky && !entry.in_writable {
                    self.found(path, Problem::WorldWritableWithoutSticky);
                }
                descend = !mount_point;
            }
            libc::S_IFCHR => {
                let (major, minor) = (st.stx_rdev_major, st.stx_rdev_minor);
                if !is_allowed_device(path, major, minor) {
                    let kind = DeviceKind::Char;
                    self.found(path, Problem::DeviceNode { kind, major, minor });
                }
            }
            libc::S_IFBLK => {
                let (major, minor) = (st.stx_rdev_major, st.stx_rdev_minor);
                let kind = DeviceKind::Block;
                self.found(path, Problem::DeviceNode { kind, major, minor });
            }
            libc::S_IFSOCK => self.found(path, Problem::Socket),
            libc::S_IFIFO => self.found(path, Problem::Fifo),
            _ => {}
        }

        let exempt = entry.in_writable || self.is_writable_place(path);
        if !exempt
            && (self.opts.cgi_ids.contains(st.stx_uid) || self.opts.cgi_ids.contains(st.stx_gid))
        {
            self.found(path, Problem::OwnedByCgiId);
        }
        if !exempt {
            let user = &self.opts.user;
            let cgi_id = |id| self.opts.cgi_ids.contains(id);
            if st.stx_uid == user.uid {
                // The owner can chmod it anyway: its write bits add nothing.
                self.found(path, Problem::OwnedByCgiUser);
            } else if st.stx_uid != 0 && !cgi_id(st.stx_uid) {
                // Whoever owns it (another local user, say) can change it at any time.
                let uid = st.stx_uid;
                self.found(path, Problem::NotRootOwned { uid });
            } else if kind != libc::S_IFLNK && st.stx_gid == user.gid && mode & 0o020 != 0 {
                self.found(path, Problem::WritableByCgiUser);
            } else if kind != libc::S_IFLNK
                && mode & 0o020 != 0
                && st.stx_gid != 0
                && !cgi_id(st.stx_gid)
            {
                let gid = st.stx_gid;
                self.found(path, Problem::WritableByGroup { gid });
            }
            let file_or_dir = kind == libc::S_IFREG || kind == libc::S_IFDIR;
            let reported_unsticky = kind == libc::S_IFDIR && !sticky;
            if file_or_dir && other_write && !reported_unsticky {
                self.found(path, Problem::WorldWritable);
            }
        }
        Ok(descend)
    }
}

/// One directory entry and what `statx` said of it.
struct Entry<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    path: &'a Path,
    st: &'a libc::statx,
    /// Directly under the jail root.
    top: bool,
    /// Inside a writable place (not the place itself).
    in_writable: bool,
}

/// `/dev/null`, `/dev/zero` or `/dev/urandom` with its own numbers ([`DEVICES`]).
fn is_allowed_device(path: &Path, major: u32, minor: u32) -> bool {
    DEVICES.iter().any(|&(name, allowed_major, allowed_minor)| {
        path == Path::new("/dev").join(name).as_path()
            && (major, minor) == (allowed_major, allowed_minor)
    })
}

/// The names in `dir` (without `.` and `..`), sorted so that they pop in ascending order.
fn read_names(dir: &mut Dir) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort_by(|a, b| b.cmp(a));
    Ok(names)
}

/// statx(2) of `name` in `dir`, never following a symlink, with at least the basic fields.
fn statx_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> Result<libc::statx, Errno> {
    const NEEDED: u32 = libc::STATX_TYPE
        | libc::STATX_MODE
        | libc::STATX_NLINK
        | libc::STATX_UID
        | libc::STATX_GID
        | libc::STATX_INO;
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is a NUL-terminated string and `buf` a writable statx buffer, both
    // alive for the call; `dir` is an open descriptor.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    // SAFETY: the buffer was zero-initialised (a valid statx: plain integers) and statx
    // succeeded, filling it.
    let st = unsafe { buf.assume_init() };
    if st.stx_mask & NEEDED != NEEDED {
        // A file system that cannot say who owns a file cannot be audited.
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(st)
}

/// Whether regular file `name` in `dir` has a `security.capability` attribute. The file is
/// opened (`O_NOFOLLOW`, so a symlink swapped in is refused, not followed) because a
/// descriptor-relative `getxattr` needs a real descriptor.
fn has_capabilities(dir: BorrowedFd<'_>, name: &CStr) -> Result<bool, Errno> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `fd` is open and `CAPABILITY_XATTR` NUL-terminated; a null buffer of size 0
    // asks only for the value's size, so nothing is written.
    let size = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            CAPABILITY_XATTR.as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if size >= 0 {
        return Ok(true);
    }
    match Errno::last() {
        // No such attribute, or a file system without extended attributes.
        Errno::ENODATA | Errno::EOPNOTSUPP => Ok(false),
        e => Err(e),
    }
}
