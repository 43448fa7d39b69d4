//! The jail's mount layout, made inside the worker's private mount namespace before the
//! chroot, so nothing of it is visible on the host or outlives the worker:
//!
//! | where | how | why |
//! |---|---|---|
//! | the jail tree | read-only, `noexec,nosuid,nodev` | nothing in it may be written or run... |
//! | `/usr`, `/bin`, `/sbin`, `/lib`, `/lib64`, `/cgi-bin` | read-only, exec allowed, `nosuid,nodev` | ...but the program areas may be run |
//! | `/tmp`, `/var/tmp`, `/usr/tmp` | size-limited tmpfs, `noexec,nosuid,nodev` | the only writable places |
//! | `/dev` | read-only tmpfs with null, zero, urandom only | whatever nodes the tree holds |
//!
//! The rule: nothing writable is executable, nothing executable is writable. This is the
//! "noexec main tree with an exec-allowed read-only area inside" of the classic chroot-jail
//! advice, made with bind mounts instead of partitions.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use protocol::layout::{DEVICES, EXEC_AREAS, PROC_DIR, STD_DEVICE_LINKS, WRITABLE_AREAS};

/// Room for the device nodes; /dev holds no data.
const DEV_TMPFS_OPTIONS: &str = "size=16k,nr_inodes=16,mode=0755";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("bind-mounting the jail {0} onto itself: {1}")]
    BindJail(PathBuf, Errno),
    #[error("{0} is not a directory or is a symlink: refusing to mount over it")]
    NotADirectory(PathBuf),
    #[error("mounting the program area {0} read-only with exec: {1}")]
    ExecArea(PathBuf, Errno),
    #[error("mounting a tmpfs on {0}: {1}")]
    Tmpfs(PathBuf, Errno),
    #[error("mounting /dev: {0}")]
    Dev(Errno),
    #[error("creating /dev/{0}: {1}")]
    DeviceNode(&'static str, Errno),
    #[error("making /dev read-only: {0}")]
    SealDev(Errno),
    #[error("creating the /dev/{0} link: {1}")]
    DeviceLink(&'static str, Errno),
    #[error("mounting /proc for the CGIs: {0}")]
    Proc(Errno),
    #[error("mounting the data folder {0} writable and noexec: {1}")]
    DataDir(PathBuf, Errno),
    #[error("making the jail tree read-only and noexec: {0}")]
    SealJail(Errno),
}

/// Builds the layout on `jail` (canonical host path). Must run as root in a fresh, private
/// mount namespace; leaves `jail` ready for the chroot. `data` is the jail path of the one
/// folder CGIs may write, if any: it stays writable, and never executable.
pub fn build_layout(jail: &Path, tmp_size: u64, data: Option<&Path>) -> Result<(), MountError> {
    // The jail becomes a mount point of its own, so its flags can differ from the host's.
    bind(jail, jail).map_err(|errno| MountError::BindJail(jail.to_path_buf(), errno))?;
    for area in EXEC_AREAS {
        if let Some(path) = real_directory(jail, area)? {
            bind(&path, &path)
                .and_then(|()| seal(&path, MsFlags::MS_NOSUID | MsFlags::MS_NODEV))
                .map_err(|errno| MountError::ExecArea(path.clone(), errno))?;
        }
    }
    let tmpfs_options = format!("size={tmp_size},mode=1777");
    for area in WRITABLE_AREAS {
        if let Some(path) = real_directory(jail, area)? {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                flags,
                Some(tmpfs_options.as_str()),
            )
            .map_err(|errno| MountError::Tmpfs(path.clone(), errno))?;
        }
    }
    if let Some(dev) = real_directory(jail, "dev")? {
        let with_proc = real_directory(jail, PROC_DIR)?.is_some();
        build_dev(&dev, with_proc)?;
    }
    if let Some(data) = data {
        let relative = data.strip_prefix("/").unwrap_or(data);
        if let Some(path) = real_directory(jail, &relative.to_string_lossy())? {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags;
            bind(&path, &path)
                .and_then(|()| mount(None::<&str>, &path, None::<&str>, remount, None::<&str>))
                .map_err(|errno| MountError::DataDir(path.clone(), errno))?;
        }
    }
    let sealed = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    seal(jail, sealed).map_err(MountError::SealJail)
}

/// A fresh tmpfs with exactly the allowed nodes (and the `/dev/stdin` links, where the CGIs
/// get a `/proc`), then read-only. Device nodes from the jail tree are never used: that tree
/// is `nodev`, and whatever it holds is not ours to trust.
fn build_dev(dev: &Path, with_proc: bool) -> Result<(), MountError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        flags,
        Some(DEV_TMPFS_OPTIONS),
    )
    .map_err(MountError::Dev)?;
    for &(name, major, minor) in DEVICES {
        let mode = Mode::from_bits_truncate(0o666);
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            mode,
            makedev(major.into(), minor.into()),
        )
        .map_err(|errno| MountError::DeviceNode(name, errno))?;
        // mknod obeys the umask; the nodes must be usable by the CGI user.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &dev.join(name),
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|errno| MountError::DeviceNode(name, errno))?;
    }
    for &(name, target) in STD_DEVICE_LINKS.iter().filter(|_| with_proc) {
        nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, &dev.join(name))
            .map_err(|errno| MountError::DeviceLink(name, errno))?;
    }
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags;
    mount(
        None::<&str>,
        dev,
        None::<&str>,
        remount,
        Some(DEV_TMPFS_OPTIONS),
    )
    .map_err(MountError::SealDev)
}

/// `jail/relative` if it is a real directory (not a symlink: a jail symlink followed here
/// would resolve on the host); `None` if it does not exist.
fn real_directory(jail: &Path, relative: &str) -> Result<Option<PathBuf>, MountError> {
    let path = jail.join(relative);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_dir() => Ok(Some(path)),
        Ok(meta) if meta.file_type().is_symlink() && EXEC_AREAS.contains(&relative) => Ok(None),
        Ok(_) => Err(MountError::NotADirectory(path)),
        Err(_) => Ok(None),
    }
}

fn bind(source: &Path, target: &Path) -> Result<(), Errno> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
}

/// Remounts the bind mount at `path` read-only with `flags`.
fn seal(path: &Path, flags: MsFlags) -> Result<(), Errno> {
    let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags;
    mount(None::<&str>, path, None::<&str>, remount, None::<&str>)
}

/// A `/proc` of the calling process's PID namespace at the jail's empty `/proc`, if it has one:
/// `hidepid=invisible` (a process sees only those of its own uid: each CGI has one of its
/// own), `subset=pid` (no `/proc/sys`, no kernel tables: only processes, and `self`), and
/// every process seen by the group `worker_gid` (the worker's own, which no CGI has: the
/// gateway refuses it as the data folder's group). The worker must see what its CGIs left
/// behind to kill it: a process that runs a program it may not read (mode 0711, owned by an
/// id the worker's user namespace does not map) is not dumpable, and hidepid hides it from
/// all but that group (`faults::leftovers_of_a_program_the_worker_cannot_read_are_killed`).
/// Must be mounted by PID 1 of the namespace, as root, before the pivot into the jail.
pub fn mount_proc(jail: &Path, worker_gid: u32) -> Result<(), MountError> {
    let Some(proc) = real_directory(jail, PROC_DIR)? else {
        return Ok(());
    };
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("hidepid=invisible,subset=pid,gid={worker_gid}").as_str()),
    )
    .map_err(MountError::Proc)
}
