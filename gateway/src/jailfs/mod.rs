//! `gateway jail init DIR`: build the chroot tree the workers enter; `gateway jail check
//! DIR`: audit one (see `audit.rs`).
//!
//! The tree holds the programs of the profile (`profile.rs`) and those named with `--with`,
//! each with exactly the files the kernel and the dynamic loader will open to start it (the
//! `#!` interpreter of a script, the ELF `PT_INTERP` loader, every `DT_NEEDED` library,
//! resolved by reading the files with `lddtree`, never by running them), the trees named
//! with `--add` (`add.rs`), the three harmless device nodes, an `/etc` that names only the
//! CGI user, a sticky `/tmp` and the CGI folder. Host paths are reproduced exactly, symlinks
//! included (`/bin -> usr/bin`, `/usr/bin/sh -> dash`), so that `#!/bin/sh` and
//! `PT_INTERP` paths work unchanged after the chroot; the busybox profile is the exception,
//! with a real `/bin` of its own.
//!
//! The work is done in two phases: first every program and every `--add` tree is located,
//! read and its dependencies resolved on the host, and only then is DIR touched. A missing
//! program or library, or a refused file, therefore leaves no half-built jail behind.
//!
//! Choices made here (see also the docs of `elf.rs` and `mirror.rs`):
//! - `LD_LIBRARY_PATH`: `lddtree` reads it when analysing against `/`. We neither clear it
//!   (the environment is process-global) nor refuse it outright (cargo sets it for every test
//!   and `cargo run`); instead a library that was found *only* through one of its directories
//!   is refused with [`JailInitError::LibraryFromLdLibraryPath`], because the loader in the
//!   jail will not search there. Where it changes nothing, it is ignored.
//! - `/etc/localtime`: copied as a regular file when the host has one; when it has none the
//!   jail gets none either (glibc then uses UTC, which is what a written UTC file would say),
//!   and one left by an earlier init is removed so the jail keeps matching the host.
//! - The [`Profile`] gives the base set; [`InitOptions::programs`] (`--with`) are added to
//!   it, and [`InitOptions::adds`] (`--add`) are copied after both (so an add can replace a
//!   program file); the fixed entries (`/dev`, `/etc/passwd`, `/etc/group`,
//!   `/etc/localtime`, `/tmp`, `/cgi-bin`) are written last and win over an add.
//! - A re-init never deletes what an earlier one put there (only `/etc/localtime`, see
//!   above): build a jail for another profile in a fresh DIR.
//! - `/dev/stdin`, `/dev/stdout`, `/dev/stderr`, `/dev/fd`: not made here, because the
//!   worker replaces `/dev` with its own tmpfs at run time and makes [`STD_DEVICE_LINKS`]
//!   there; they resolve through the `/proc` it mounts on the empty `/proc` made here.
//! - A bare name must be an executable regular file on the fixed search path, like
//!   `execvp`. An absolute path may also name a non-executable file (a library that is
//!   loaded with `dlopen`, which `lddtree` cannot see, or a data file): it is copied, with
//!   its ELF dependencies if it is an ELF file.
//! - Every directory the init passes through in the jail (DIR included) is set to 0755
//!   root:root, `/tmp` to 1777; a jail entry of the wrong kind where a directory belongs is
//!   an error ([`JailInitError::Conflict`]), never deleted.

mod add;
pub mod audit;
mod elf;
pub mod error;
mod limits;
mod mirror;
mod profile;
pub mod user;

#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod profile_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use add::AddSpec;
pub use audit::{audit, check_is_jail, AuditError, AuditOptions, DeviceKind, Finding, Problem};
use error::refuse_setuid;
pub use error::AddSpecError;
pub use error::JailInitError;
use limits::MAX_LOCALTIME_BYTES;
pub use limits::SEARCH_PATH;
pub use profile::DEFAULT_PROGRAMS;
pub use profile::{Profile, UnknownProfile, BUSYBOX_APPLETS, BUSYBOX_HOST_PATH};
pub use user::{host_account_holding, parse_user, CgiUser, HostAccount, UserSpecError};

use mirror::Jail;
use profile::Busybox;

/// Top-level folders that a merged-/usr host makes symlinks into /usr.
const MERGED_USR_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64"];

/// What `gateway jail init` was asked to build.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The jail's root on the host; created if missing.
    pub dir: PathBuf,
    /// `--with`: programs added to the profile's set. Bare names (looked up on
    /// [`SEARCH_PATH`]) or absolute host paths; each is copied with what it needs to start.
    pub programs: Vec<String>,
    /// The account named in the jail's `/etc/passwd` and `/etc/group`.
    pub user: CgiUser,
    /// `--profile`: the base set.
    pub profile: Profile,
    /// `--add`: host files and trees copied to jail paths.
    pub adds: Vec<AddSpec>,
}

impl InitOptions {
    /// The [`Profile::Classic`] jail at `dir` for `user`, with no `--with` and no `--add`.
    pub fn new(dir: impl Into<PathBuf>, user: CgiUser) -> Self {
        InitOptions {
            dir: dir.into(),
            programs: Vec::new(),
            user,
            profile: Profile::Classic,
            adds: Vec::new(),
        }
    }
}

// Character devices created in the jail's `/dev`, the same the worker makes at run time.
use protocol::layout::{CGI_DIR, DEVICES, PROC_DIR};

pub use protocol::layout::STD_DEVICE_LINKS;

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Regular files copied from the host in this run (programs, interpreters, libraries,
    /// `/etc/localtime`), each counted once. Written files (`passwd`, `group`) and device
    /// nodes are not counted. A re-init copies everything again, so it reports the same.
    pub files_copied: usize,
    /// Jail paths of the programs: the profile's (busybox: the applet links), then the
    /// `--with` ones, in the order asked for, without duplicates.
    pub programs: Vec<PathBuf>,
}

impl JailInitError {
    /// An I/O failure on `path` (host or jail path, whichever the failing call used).
    fn io(path: &Path, source: impl Into<io::Error>) -> Self {
        JailInitError::Io {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// Build (or refresh) the jail at `opts.dir`. Idempotent: running it again refreshes the
/// copies, keeps matching symlinks and never touches the contents of `/cgi-bin`.
pub fn init(opts: &InitOptions) -> Result<InitReport, JailInitError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(JailInitError::NotRoot);
    }
    let target = Target::open(&opts.dir)?;
    let built = build(opts, &target);
    if built.is_err() {
        // Nothing of a failed init is left: the folder it made goes with what it wrote there
        // (root's, under folders only root may change: nobody else can have put anything in
        // it), and so do the folders above it that it made.
        if target.created {
            let _ = fs::remove_dir_all(&target.path);
        }
        remove_if_empty(&target.made_above);
    }
    built
}

/// Makes the folders of `path` that do not exist yet (0755), outermost first; returns those
/// made, innermost first. On an error, removes them again.
fn make_folders(path: &Path) -> Result<Vec<PathBuf>, JailInitError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut missing = Vec::new();
    let mut probe = path;
    while fs::symlink_metadata(probe).is_err() {
        missing.push(probe.to_path_buf());
        match probe.parent() {
            Some(up) if !up.as_os_str().is_empty() => probe = up,
            _ => break,
        }
    }
    let mut made = Vec::new();
    for folder in missing.into_iter().rev() {
        if let Err(error) = fs::DirBuilder::new().mode(0o755).create(&folder) {
            remove_if_empty(&made);
            return Err(JailInitError::io(&folder, error));
        }
        made.insert(0, folder);
    }
    Ok(made)
}

/// Removes each of `folders` (innermost first) that is still empty.
fn remove_if_empty(folders: &[PathBuf]) {
    for folder in folders {
        let _ = fs::remove_dir(folder);
    }
}

fn build(opts: &InitOptions, target: &Target) -> Result<InitReport, JailInitError> {
    let (passwd, group) = account_files(&opts.user)?;

    // Phase 1: resolve everything on the host.
    let busybox = match opts.profile {
        Profile::Busybox => Some(Busybox::locate()?),
        Profile::Classic | Profile::Minimal => None,
    };
    let provided = if busybox.is_some() {
        Busybox::provided()
    } else {
        Vec::new()
    };
    let mut programs: Vec<PathBuf> = if busybox.is_some() {
        Busybox::applet_paths()
    } else {
        Vec::new()
    };
    let mut needed: Vec<PathBuf> = Vec::new();
    let names = opts.profile.host_programs().iter().copied();
    for name in names.chain(opts.programs.iter().map(String::as_str)) {
        let path = locate_program(name)?;
        // Also skips a --with program at a path the profile provides (busybox's /bin/sh).
        if programs.contains(&path) || provided.contains(&path) {
            continue;
        }
        elf::collect(&path, &mut needed, &provided)?;
        programs.push(path);
    }
    let adds = opts
        .adds
        .iter()
        .map(|spec| add::plan(spec, &mut needed, &provided))
        .collect::<Result<Vec<_>, _>>()?;
    // Checked again on the open descriptor when copying; checking here as well refuses
    // before anything is written.
    for path in &needed {
        let meta = fs::metadata(path).map_err(|e| JailInitError::io(path, e))?;
        refuse_setuid(path, meta.permissions().mode())?;
    }

    // Phase 2: write the jail.
    let mut jail = Jail::new(&target.path, target.root()?)?;
    if let Some(busybox) = &busybox {
        busybox.install(&mut jail)?;
        for path in &needed {
            install_beside_busybox(&mut jail, path)?;
        }
    } else {
        for path in &needed {
            jail.mirror(path)?;
        }
        // Programs are found at their /usr path first, but scripts name `#!/bin/sh`: on a
        // merged-/usr host the top-level folders are symlinks, and the jail gets them all.
        for top in MERGED_USR_LINKS {
            let top = Path::new(top);
            if fs::symlink_metadata(top).is_ok_and(|meta| meta.file_type().is_symlink()) {
                jail.mirror(top)?;
            }
        }
    }
    for add in &adds {
        jail.install_tree(&add.jail, &add.node)?;
    }
    install_devices(&jail)?;
    let localtime_copied = install_etc(&jail, &passwd, &group)?;
    write_library_cache(&jail, &target.path, &needed)?;
    // After the mirroring, which sets every directory it passes through to 0755.
    jail.dir("tmp", 0o1777)?;
    jail.dir(CGI_DIR.trim_start_matches('/'), 0o755)?;
    // Empty: each worker mounts a /proc of its own here, for its CGIs.
    jail.dir(PROC_DIR, 0o555)?;

    let report = InitReport {
        files_copied: jail.files_copied() + usize::from(localtime_copied),
        programs,
    };
    tracing::info!(
        dir = %opts.dir.display(),
        profile = %opts.profile,
        programs = report.programs.len(),
        files_copied = report.files_copied,
        "jail initialised"
    );
    Ok(report)
}

/// Where [`init`] writes, opened once so that what is checked is what is written: a folder
/// that does not exist yet (made here), an empty one, or a jail to refresh
/// ([`audit::check_is_jail`]: not the host's root, and with a real `/cgi-bin`), root's. Anything
/// else is refused before anything is read or written: `jail init /` would overwrite the
/// host's own `/etc/passwd`, `/etc/group`, `/etc/ld.so.conf` and `/etc/localtime`, and a
/// mistyped `/etc` or `/tmp` would be filled with a jail's folders and get its modes.
///
/// Every folder above it must be root's and writable by others only with the sticky bit (as
/// the start's audit asks too): otherwise another user could put a link to the host's root in
/// the jail's place between the check and the writing, and root would write the jail over
/// the host. Above such folders nothing of the path can change; the folder itself is opened
/// without following a link, and one that someone else made is refused.
struct Target {
    /// Its canonical path, for messages and for `ldconfig -r`.
    path: PathBuf,
    root: std::os::fd::OwnedFd,
    /// Made by this init.
    created: bool,
    /// The folders above it this init made, innermost first.
    made_above: Vec<PathBuf>,
}

impl Target {
    fn open(dir: &Path) -> Result<Target, JailInitError> {
        use nix::fcntl::{open, openat, OFlag};
        use nix::sys::stat::{fstat, mkdirat, Mode};
        use std::os::unix::fs::MetadataExt;
        let refuse = |why: String| JailInitError::NotAJail {
            path: dir.to_path_buf(),
            why,
        };
        // A folder that is there is taken where it resolves to (`.`, `..`, and the
        // administrator's own link to a jail elsewhere: one root made); the checks below look
        // at that folder and those above it. A link someone else made is theirs to turn.
        let resolved;
        let dir = match fs::symlink_metadata(dir) {
            Ok(meta) if meta.file_type().is_symlink() && meta.uid() != 0 => {
                return Err(refuse(format!(
                    "it is a symbolic link uid {} made, not root",
                    meta.uid()
                )))
            }
            Ok(_) => {
                resolved = fs::canonicalize(dir).map_err(|e| JailInitError::io(dir, e))?;
                resolved.as_path()
            }
            Err(_) => dir,
        };
        // None for `/` and for a path ending in `..` that is not there to resolve.
        let Some(name) = dir.file_name().map(std::ffi::OsStr::to_owned) else {
            return Err(refuse("it names no folder of its own".into()));
        };
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let made_above = make_folders(parent)?;
        let opened = (|| {
            let parent = fs::canonicalize(parent).map_err(|e| JailInitError::io(parent, e))?;
            for folder in parent.ancestors() {
                let meta =
                    fs::symlink_metadata(folder).map_err(|e| JailInitError::io(folder, e))?;
                let mode = meta.mode() & 0o7777;
                if meta.uid() != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
                    return Err(refuse(format!(
                        "{} (uid {}, mode {mode:04o}) is not root's, or others may write it: they \
                         could put a link to the host's root in the jail's place while it is built",
                        folder.display(),
                        meta.uid()
                    )));
                }
            }
            let directory =
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let parent_fd = open(&parent, directory, Mode::empty())
                .map_err(|e| JailInitError::io(&parent, e))?;
            let path = parent.join(&name);
            let created = match mkdirat(
                &parent_fd,
                name.as_os_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) => true,
                Err(nix::errno::Errno::EEXIST) => false,
                Err(e) => return Err(JailInitError::io(&path, e)),
            };
            let root = match openat(&parent_fd, name.as_os_str(), directory, Mode::empty()) {
                Ok(root) => root,
                Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
                    return Err(refuse("it is a symbolic link, or not a folder".into()))
                }
                Err(e) => return Err(JailInitError::io(&path, e)),
            };
            let owner = fstat(&root)
                .map_err(|e| JailInitError::io(&path, e))?
                .st_uid;
            if owner != 0 {
                return Err(refuse(format!(
                    "it is not root's but uid {owner}'s, who could change the jail under every CGI"
                )));
            }
            let target = Target {
                path,
                root,
                created,
                made_above: Vec::new(),
            };
            if !created {
                target.check_empty_or_jail().map_err(refuse)?;
            }
            Ok(target)
        })();
        match opened {
            Ok(mut target) => {
                target.made_above = made_above;
                Ok(target)
            }
            Err(error) => {
                remove_if_empty(&made_above);
                Err(error)
            }
        }
    }

    /// The folder, read through its descriptor.
    fn check_empty_or_jail(&self) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", self.root.as_raw_fd()));
        let mut entries = fs::read_dir(&by_descriptor).map_err(|e| e.to_string())?;
        if entries.next().is_none() {
            return Ok(());
        }
        match audit::check_is_jail(&by_descriptor) {
            Ok(_) => Ok(()),
            Err(audit::AuditError::NotAJail { why, .. }) => {
                Err(format!("it is neither empty nor a jail: {why}"))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Its descriptor, for the writing.
    fn root(&self) -> Result<std::os::fd::OwnedFd, JailInitError> {
        self.root
            .try_clone()
            .map_err(|e| JailInitError::io(&self.path, e))
    }
}

/// Mirror host path `path` into a busybox jail, whose `/bin` is a real directory. A path
/// under a host `/bin` that is a symlink (merged /usr) cannot be mirrored through it, so
/// it is mirrored at its host location (`/usr/bin/x`), with a jail symlink `/bin/x` to it
/// for the `#!` lines and `--with` paths that name it.
fn install_beside_busybox(jail: &mut Jail, path: &Path) -> Result<(), JailInitError> {
    let host_bin = Path::new("/bin");
    let bin_is_symlink =
        fs::symlink_metadata(host_bin).is_ok_and(|meta| meta.file_type().is_symlink());
    if !(bin_is_symlink && path.starts_with(host_bin)) {
        return jail.mirror(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return jail.mirror(path);
    };
    let resolved = fs::canonicalize(parent)
        .map_err(|e| JailInitError::io(parent, e))?
        .join(name);
    jail.mirror(&resolved)?;
    jail.install_symlink(path, &resolved)
}

/// A bare name on [`SEARCH_PATH`] (first executable regular file, like `execvp`), or an
/// absolute path to a regular file.
fn locate_program(name: &str) -> Result<PathBuf, JailInitError> {
    let invalid = |reason| JailInitError::InvalidProgramName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if name.starts_with('/') {
        let path = PathBuf::from(name);
        return match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(JailInitError::UnsupportedFileType { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(JailInitError::ProgramNotFound {
                name: name.to_string(),
            }),
            Err(e) => Err(JailInitError::io(&path, e)),
        };
    }
    if name.contains('/') || name == "." || name == ".." {
        return Err(invalid("must be a bare name or an absolute path"));
    }
    SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| JailInitError::ProgramNotFound {
            name: name.to_string(),
        })
}

/// The jail's `/etc/passwd` and `/etc/group`: the CGI user and its group, nobody else (not
/// even root), so that a CGI learns no host account names.
fn account_files(user: &CgiUser) -> Result<(String, String), JailInitError> {
    if user.uid == 0 || user.gid == 0 {
        return Err(JailInitError::RootUser {
            uid: user.uid,
            gid: user.gid,
        });
    }
    let invalid = |reason| JailInitError::InvalidUser {
        user: user.name.clone(),
        reason,
    };
    // (uid_t)-1 and (gid_t)-1 mean "leave unchanged" to setresuid/setresgid(2): a worker
    // told to switch to them would stay root.
    if user.uid == u32::MAX || user.gid == u32::MAX {
        return Err(invalid(
            "uid and gid 4294967295 mean \"unchanged\" to setresuid",
        ));
    }
    for field in [&user.name, &user.group_name] {
        if field.is_empty() || field.contains([':', '\n', '\0']) {
            return Err(invalid(
                "user and group names must be non-empty, without ':' or newlines",
            ));
        }
    }
    let passwd = format!(
        "{}:x:{}:{}:CGI user:/nonexistent:/bin/false\n",
        user.name, user.uid, user.gid
    );
    let group = format!("{}:x:{}:\n", user.group_name, user.gid);
    Ok((passwd, group))
}

/// `/dev` with only [`DEVICES`], mode 0666, root-owned.
fn install_devices(jail: &Jail) -> Result<(), JailInitError> {
    let dev = jail.dir("dev", 0o755)?;
    for &(name, major, minor) in DEVICES {
        dev.device(name, major, minor)?;
    }
    Ok(())
}

/// `/etc/passwd`, `/etc/group` and `/etc/localtime`; true if the host's localtime was copied.
///
/// A host without `/etc/localtime` gives a jail without one (glibc then uses UTC, which is
/// what a written UTC file would say); one left by an earlier init is removed.
/// The loader's index of the jail's shared libraries, `/etc/ld.so.cache`, made by the host's
/// `ldconfig -r` from an `/etc/ld.so.conf` naming the folders the libraries were copied to.
/// Without it every exec of a dynamically linked program probes some twenty missing paths
/// before it finds libc. A jail without shared libraries (busybox) needs none; a host without
/// ldconfig gets a jail that works without one (and a warning).
fn write_library_cache(jail: &Jail, dir: &Path, needed: &[PathBuf]) -> Result<(), JailInitError> {
    let mut folders: Vec<&Path> = needed
        .iter()
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.contains(".so"))
        })
        .filter_map(|path| path.parent())
        .collect();
    folders.sort();
    folders.dedup();
    if folders.is_empty() {
        return Ok(());
    }
    let conf: String = folders
        .iter()
        .map(|folder| format!("{}\n", folder.display()))
        .collect();
    jail.dir("etc", 0o755)?
        .write_file("ld.so.conf", conf.as_bytes(), 0o644)?;
    let Some(ldconfig) = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
    else {
        tracing::warn!("no ldconfig on this host: the jail has no library cache (slower execs)");
        return Ok(());
    };
    // -X: index only; the jail's library links stay exactly as copied.
    let made = std::process::Command::new(ldconfig)
        .arg("-X")
        .arg("-r")
        .arg(dir)
        .env_clear()
        .output();
    match made {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => {
            tracing::warn!(
                "ldconfig -r {} failed ({}): {}; the jail works without a library cache",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            Ok(())
        }
        Err(error) => {
            tracing::warn!("cannot run {ldconfig}: {error}; the jail has no library cache");
            Ok(())
        }
    }
}

fn install_etc(jail: &Jail, passwd: &str, group: &str) -> Result<bool, JailInitError> {
    let etc = jail.dir("etc", 0o755)?;
    etc.write_file("passwd", passwd.as_bytes(), 0o644)?;
    etc.write_file("group", group.as_bytes(), 0o644)?;

    // Follows the host's symlink (into /usr/share/zoneinfo) on purpose: the jail gets the
    // content as a plain file, not the whole zoneinfo tree.
    let host = Path::new("/etc/localtime");
    let file = match File::open(host) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            etc.remove_file("localtime")?;
            return Ok(false);
        }
        Err(e) => return Err(JailInitError::io(host, e)),
    };
    let meta = file.metadata().map_err(|e| JailInitError::io(host, e))?;
    if !meta.is_file() {
        return Err(JailInitError::UnsupportedFileType {
            path: host.to_path_buf(),
        });
    }
    let mut content = Vec::new();
    file.take(MAX_LOCALTIME_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| JailInitError::io(host, e))?;
    if content.len() as u64 > MAX_LOCALTIME_BYTES {
        return Err(JailInitError::LocaltimeTooLarge {
            path: host.to_path_buf(),
        });
    }
    etc.write_file("localtime", &content, 0o644)?;
    Ok(true)
}
