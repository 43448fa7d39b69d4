//! Writing into the jail without ever following a jail symlink.
//!
//! A symlink inside the jail holds a target meant for the chroot (`/bin -> usr/bin`,
//! `/usr/bin/awk -> /etc/alternatives/awk`). Followed from the host, an absolute target
//! points at the host itself, and writing "through" it would overwrite the host's own
//! files. So every jail-side call here is relative to a directory descriptor, one path
//! component at a time, with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`; symlinks are read and
//! re-walked by this code, never by the kernel. Host-side calls use ordinary paths, built
//! from a prefix this walk has already resolved to real directories.
//!
//! Files are replaced by writing a temporary file and `renameat`-ing it over the old one:
//! that replaces a stale symlink instead of writing through it, and works while a worker is
//! executing the old copy (opening a running binary for writing fails with `ETXTBSY`).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, FileStat, Mode, SFlag,
};
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::add::Node;
use super::error::{refuse_setuid, JailInitError};

/// Linux's limit on symlinks followed while resolving one path (`MAXSYMLINKS`,
/// path_resolution(7)); the walk gives up with the same `ELOOP` meaning.
const MAX_SYMLINKS: usize = 40;

/// Mode of every directory on the way to a mirrored file: readable and searchable by the
/// CGI user, writable by root only.
const DIR_MODE: u32 = 0o755;

/// Permission bits a copied file may keep: the host's bits without group/other write (a
/// jail program area is never writable by the CGI user) and without setuid/setgid/sticky
/// (setuid files are refused before this anyway).
const FILE_MODE_MASK: u32 = 0o755;

/// One step of a path walk.
enum Step {
    Parent,
    Name(OsString),
}

/// The jail being built: its root directory, held open, and what this run has done.
pub(super) struct Jail {
    /// The jail's root on the host, for messages.
    dir: PathBuf,
    root: OwnedFd,
    /// Host paths mirrored in this run, to skip repeats (every program needs libc).
    mirrored: HashSet<PathBuf>,
    /// Host files copied in this run, each counted once.
    copied: HashSet<PathBuf>,
}

impl Jail {
    /// The jail folder `dir`, open as `root` ([`super::init`] opened it), made 0755
    /// root:root: the CGI user must be able to search `/` after the chroot (a fresh `mkdtemp`
    /// directory is 0700) and must not be able to write there.
    pub(super) fn new(dir: &Path, root: OwnedFd) -> Result<Jail, JailInitError> {
        own_and_chmod(&root, DIR_MODE).map_err(|e| JailInitError::io(dir, e))?;
        Ok(Jail {
            dir: dir.to_path_buf(),
            root,
            mirrored: HashSet::new(),
            copied: HashSet::new(),
        })
    }

    /// Regular files copied from the host by [`Jail::mirror`] in this run.
    pub(super) fn files_copied(&self) -> usize {
        self.copied.len()
    }

    /// The host path of jail path `path` (absolute, as seen in the chroot), for messages.
    fn shown(&self, path: &Path) -> PathBuf {
        self.dir.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Reproduce absolute host path `host` in the jail, component by component: a host
    /// symlink becomes the identical symlink and the walk continues through its target
    /// (so the target is mirrored too), a directory becomes a 0755 root-owned directory and
    /// the final regular file is copied. `..` is applied to the walked prefix, which holds
    /// only real directories, so it means what the kernel would make of it.
    pub(super) fn mirror(&mut self, host: &Path) -> Result<(), JailInitError> {
        if !host.is_absolute() {
            return Err(JailInitError::RelativePath {
                path: host.to_path_buf(),
            });
        }
        if self.mirrored.contains(host) {
            return Ok(());
        }
        let mut pending = Vec::new();
        push_steps(&mut pending, host);
        // The jail directories below the root matching `host_cur`, one per component.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut host_cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(step) = pending.pop() {
            let name = match step {
                Step::Parent => {
                    // `/..` is `/`, as in the kernel.
                    if dirs.pop().is_some() {
                        host_cur.pop();
                    }
                    continue;
                }
                Step::Name(name) => name,
            };
            let host_next = host_cur.join(&name);
            let shown = self.shown(&host_next);
            let parent = dirs.last().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let meta =
                fs::symlink_metadata(&host_next).map_err(|e| JailInitError::io(&host_next, e))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(JailInitError::SymlinkLoop {
                        path: host.to_path_buf(),
                    });
                }
                let target =
                    fs::read_link(&host_next).map_err(|e| JailInitError::io(&host_next, e))?;
                if target.as_os_str().is_empty() {
                    // The kernel resolves an empty symlink to ENOENT.
                    return Err(JailInitError::io(&host_next, Errno::ENOENT));
                }
                ensure_symlink(parent, &name, &target, &shown)?;
                if target.is_absolute() {
                    dirs.clear();
                    host_cur = PathBuf::from("/");
                }
                push_steps(&mut pending, &target);
            } else if kind.is_dir() {
                let fd = ensure_dir(parent, &name, DIR_MODE, &shown)?;
                dirs.push(fd);
                host_cur = host_next;
            } else if kind.is_file() && pending.is_empty() {
                if !self.copied.contains(&host_next) {
                    copy_file(parent, &name, &host_next, &shown)?;
                    tracing::debug!(host = %host_next.display(), "copied into jail");
                    self.copied.insert(host_next);
                }
            } else if kind.is_file() {
                return Err(JailInitError::io(&host_next, Errno::ENOTDIR));
            } else {
                return Err(JailInitError::UnsupportedFileType { path: host_next });
            }
        }
        self.mirrored.insert(host.to_path_buf());
        Ok(())
    }

    /// The directory at absolute jail path `path`, created (0755 root:root) where missing,
    /// opened. Jail symlinks met on the way are resolved inside the jail, by this code: an
    /// absolute target restarts from the jail root and `..` never climbs above it, so the
    /// walk cannot leave the jail whatever the symlinks say (`--add X:/bin/x` on a
    /// merged-/usr jail lands in `/usr/bin`). Every directory passed through is set to
    /// 0755 root:root, as [`Jail::mirror`] does.
    pub(super) fn make_dir(&self, path: &Path) -> Result<OwnedFd, JailInitError> {
        let mut pending = Vec::new();
        push_steps(&mut pending, path);
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut jail_cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(step) = pending.pop() {
            let name = match step {
                Step::Parent => {
                    if dirs.pop().is_some() {
                        jail_cur.pop();
                    }
                    continue;
                }
                Step::Name(name) => name,
            };
            let parent = dirs.last().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let jail_next = jail_cur.join(&name);
            let shown = self.shown(&jail_next);
            match readlinkat(parent, name.as_os_str()) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(JailInitError::SymlinkLoop { path: shown });
                    }
                    let target = PathBuf::from(target);
                    if target.as_os_str().is_empty() {
                        return Err(JailInitError::io(&shown, Errno::ENOENT));
                    }
                    if target.is_absolute() {
                        dirs.clear();
                        jail_cur = PathBuf::from("/");
                    }
                    push_steps(&mut pending, &target);
                }
                // EINVAL: there, but not a symlink; ensure_dir says if it is no directory.
                Err(Errno::EINVAL | Errno::ENOENT) => {
                    dirs.push(ensure_dir(parent, &name, DIR_MODE, &shown)?);
                    jail_cur = jail_next;
                }
                Err(e) => return Err(JailInitError::io(&shown, e)),
            }
        }
        match dirs.pop() {
            Some(fd) => Ok(fd),
            None => self
                .root
                .try_clone()
                .map_err(|e| JailInitError::io(&self.dir, e)),
        }
    }

    /// Copy host regular file `host` (final component not a symlink) to absolute jail path
    /// `path`, its directory made as by [`Jail::make_dir`]; whatever non-directory was at
    /// `path` is replaced, never written through.
    pub(super) fn install_file(&mut self, host: &Path, path: &Path) -> Result<(), JailInitError> {
        let (parent, name) = self.make_parent(path)?;
        copy_file(parent.as_fd(), name, host, &self.shown(path))?;
        tracing::debug!(host = %host.display(), jail = %path.display(), "copied into jail");
        self.copied.insert(host.to_path_buf());
        Ok(())
    }

    /// Symlink at absolute jail path `path` -> `target` (kept if it matches; a file or
    /// other symlink there is replaced, a directory is a conflict).
    pub(super) fn install_symlink(&self, path: &Path, target: &Path) -> Result<(), JailInitError> {
        let (parent, name) = self.make_parent(path)?;
        ensure_symlink(parent.as_fd(), name, target, &self.shown(path))
    }

    /// Install the planned `--add` tree `node` at absolute jail path `path`: the top as by
    /// [`Jail::install_file`] / [`Jail::make_dir`]; below it nothing is resolved any more,
    /// and a jail symlink where the tree has a directory is a conflict.
    pub(super) fn install_tree(&mut self, path: &Path, node: &Node) -> Result<(), JailInitError> {
        match node {
            Node::File { host } => self.install_file(host, path),
            Node::Symlink { target } => self.install_symlink(path, target),
            Node::Dir { entries } => {
                let fd = self.make_dir(path)?;
                self.install_entries(fd.as_fd(), &self.shown(path), entries)
            }
        }
    }

    fn install_entries(
        &mut self,
        dir: BorrowedFd<'_>,
        shown: &Path,
        entries: &[(OsString, Node)],
    ) -> Result<(), JailInitError> {
        for (name, node) in entries {
            let shown = shown.join(name);
            match node {
                Node::File { host } => {
                    copy_file(dir, name, host, &shown)?;
                    self.copied.insert(host.clone());
                }
                Node::Symlink { target } => ensure_symlink(dir, name, target, &shown)?,
                Node::Dir { entries } => {
                    let fd = ensure_dir(dir, name, DIR_MODE, &shown)?;
                    self.install_entries(fd.as_fd(), &shown, entries)?;
                }
            }
        }
        Ok(())
    }

    /// The directory holding absolute jail path `path` (made as by [`Jail::make_dir`]) and
    /// `path`'s last component.
    fn make_parent<'a>(&self, path: &'a Path) -> Result<(OwnedFd, &'a OsStr), JailInitError> {
        let name = match path.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(JailInitError::Conflict {
                    path: self.shown(path),
                    reason: "names no file below the jail root",
                })
            }
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((self.make_dir(parent)?, name))
    }

    /// The directory `name` directly under the jail root, with `mode`, root-owned.
    pub(super) fn dir(&self, name: &str, mode: u32) -> Result<JailDir, JailInitError> {
        let shown = self.shown(Path::new(name));
        let fd = ensure_dir(self.root.as_fd(), OsStr::new(name), mode, &shown)?;
        Ok(JailDir { fd, shown })
    }
}

/// A directory directly under the jail root, held open, for the fixed entries (`/dev`,
/// `/etc`) that are written rather than mirrored.
pub(super) struct JailDir {
    fd: OwnedFd,
    /// Its host path, for messages.
    shown: PathBuf,
}

impl JailDir {
    /// Write `contents` as file `name`, root-owned, with `mode`.
    pub(super) fn write_file(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), JailInitError> {
        replace_file(
            self.fd.as_fd(),
            OsStr::new(name),
            mode,
            &self.shown.join(name),
            |file| file.write_all(contents),
        )
    }

    /// Remove file `name` if it is there.
    pub(super) fn remove_file(&self, name: &str) -> Result<(), JailInitError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(JailInitError::io(&self.shown.join(name), e)),
        }
    }

    /// Character device `name` (`major`, `minor`), mode 0666, root-owned. An existing node
    /// with the right numbers is kept; anything else that is not a directory is replaced.
    pub(super) fn device(&self, name: &str, major: u32, minor: u32) -> Result<(), JailInitError> {
        let dir = &self.fd;
        let shown = self.shown.join(name);
        let io_err = |e: Errno| JailInitError::io(&shown, e);
        let wanted = libc::makedev(major, minor);
        let create = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(&st) == SFlag::S_IFCHR && st.st_rdev == wanted => false,
            Ok(st) if kind_of(&st) == SFlag::S_IFDIR => {
                return Err(JailInitError::Conflict {
                    path: shown,
                    reason: "is a directory where a device node belongs; remove it",
                })
            }
            Ok(_) => {
                unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io_err)?;
                true
            }
            Err(Errno::ENOENT) => true,
            Err(e) => return Err(io_err(e)),
        };
        let mode = Mode::from_bits_truncate(0o666);
        if create {
            mknodat(dir, name, SFlag::S_IFCHR, mode, wanted).map_err(io_err)?;
        }
        // By name rather than by descriptor: opening the node would need a filesystem
        // without `nodev`, and the jail tree may well sit on one. NOFOLLOW all the same.
        fchownat(dir, name, ROOT_UID, ROOT_GID, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)?;
        // mknod applied the umask; the mode must be exactly 0666.
        match fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink) {
            // glibc before 2.39 does a no-follow chmod through /proc/self/fd, and says
            // EOPNOTSUPP when no /proc is mounted (a package installed in a chroot). The
            // node is root's, in a folder only root writes: if it is still the device
            // (checked without following), chmod it by name.
            Err(Errno::EOPNOTSUPP) => {
                let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)?;
                if kind_of(&st) != SFlag::S_IFCHR || st.st_rdev != wanted {
                    return Err(io_err(Errno::EOPNOTSUPP));
                }
                fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink).map_err(io_err)?;
            }
            done => done.map_err(io_err)?,
        }
        Ok(())
    }
}

const ROOT_UID: Option<Uid> = Some(Uid::from_raw(0));
const ROOT_GID: Option<Gid> = Some(Gid::from_raw(0));

/// Queue the components of `path` on `pending` (a stack: last popped first).
fn push_steps(pending: &mut Vec<Step>, path: &Path) {
    let steps: Vec<Step> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(Step::Name(name.to_os_string())),
            Component::ParentDir => Some(Step::Parent),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    pending.extend(steps.into_iter().rev());
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Make `fd` root:root with `mode`. chown first: it would clear setuid/setgid bits set
/// before it (none are set here, but the order is the safe one).
fn own_and_chmod(fd: impl AsFd, mode: u32) -> Result<(), Errno> {
    fchown(fd.as_fd(), ROOT_UID, ROOT_GID)?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
}

/// Directory `name` in `parent`, created if missing, set to `mode` and root:root, and
/// opened. Anything else already there (a symlink included) is a conflict: the jail
/// holds something this init did not make, and deleting it is the administrator's call.
fn ensure_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
    shown: &Path,
) -> Result<OwnedFd, JailInitError> {
    let io_err = |e: Errno| JailInitError::io(shown, e);
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if kind_of(&st) == SFlag::S_IFDIR => {}
        Ok(st) => {
            return Err(JailInitError::Conflict {
                path: shown.to_path_buf(),
                reason: if kind_of(&st) == SFlag::S_IFLNK {
                    "is a symlink in the jail where a directory belongs; remove it"
                } else {
                    "is not a directory in the jail where a directory belongs; remove it"
                },
            });
        }
        Err(Errno::ENOENT) => match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_err(e)),
        },
        Err(e) => return Err(io_err(e)),
    }
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    own_and_chmod(&fd, mode).map_err(io_err)?;
    Ok(fd)
}

/// Symlink `name` -> `target` in `parent`. Kept if it already matches; a different
/// symlink or a file is replaced atomically; a directory is a conflict.
fn ensure_symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
    shown: &Path,
) -> Result<(), JailInitError> {
    let io_err = |e: Errno| JailInitError::io(shown, e);
    match readlinkat(parent, name) {
        Ok(existing) if existing == target.as_os_str() => {}
        Ok(_) => replace_symlink(parent, name, target, shown)?,
        Err(Errno::ENOENT) => symlinkat(target, parent, name).map_err(io_err)?,
        // EINVAL: there, but not a symlink.
        Err(Errno::EINVAL) => {
            let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)?;
            if kind_of(&st) == SFlag::S_IFDIR {
                return Err(JailInitError::Conflict {
                    path: shown.to_path_buf(),
                    reason: "is a directory in the jail where the host has a symlink; remove it",
                });
            }
            replace_symlink(parent, name, target, shown)?;
        }
        Err(e) => return Err(io_err(e)),
    }
    fchownat(
        parent,
        name,
        ROOT_UID,
        ROOT_GID,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err)
}

/// The temporary name a new file or symlink is created under before the rename. The pid
/// keeps inits in two processes apart (one process builds one DIR at a time); a leftover
/// from a crashed run is removed before use.
fn temp_name() -> OsString {
    OsString::from(format!(".jailfs-new.{}", std::process::id()))
}

fn remove_stale_temp(
    parent: BorrowedFd<'_>,
    temp: &OsStr,
    shown: &Path,
) -> Result<(), JailInitError> {
    match unlinkat(parent, temp, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(JailInitError::io(shown, e)),
    }
}

fn replace_symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
    shown: &Path,
) -> Result<(), JailInitError> {
    let temp = temp_name();
    remove_stale_temp(parent, &temp, shown)?;
    symlinkat(target, parent, temp.as_os_str()).map_err(|e| JailInitError::io(shown, e))?;
    renameat(parent, temp.as_os_str(), parent, name).map_err(|e| {
        let _ = unlinkat(parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        JailInitError::io(shown, e)
    })
}

/// Create `name` in `parent` afresh with content from `fill`, root-owned, with `mode`,
/// replacing whatever non-directory was there.
fn replace_file(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
    shown: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), JailInitError> {
    let temp = temp_name();
    remove_stale_temp(parent, &temp, shown)?;
    let fd = openat(
        parent,
        temp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| JailInitError::io(shown, e))?;
    let mut file = File::from(fd);
    let written = fill(&mut file)
        .and_then(|()| own_and_chmod(&file, mode).map_err(io::Error::from))
        .and_then(|()| renameat(parent, temp.as_os_str(), parent, name).map_err(io::Error::from));
    written.map_err(|e| {
        let _ = unlinkat(parent, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        JailInitError::io(shown, e)
    })
}

/// Copy host regular file `host` to `name` in `parent`, keeping its permission bits under
/// [`FILE_MODE_MASK`].
fn copy_file(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    host: &Path,
    shown: &Path,
) -> Result<(), JailInitError> {
    // The walk saw a regular file here; O_NOFOLLOW and the fstat below make sure that what
    // is read is still one.
    let mut source = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(host)
        .map_err(|e| JailInitError::io(host, e))?;
    let meta = source.metadata().map_err(|e| JailInitError::io(host, e))?;
    if !meta.is_file() {
        return Err(JailInitError::UnsupportedFileType {
            path: host.to_path_buf(),
        });
    }
    refuse_setuid(host, meta.mode())?;
    replace_file(parent, name, meta.mode() & FILE_MODE_MASK, shown, |file| {
        io::copy(&mut source, file).map(drop)
    })
}
