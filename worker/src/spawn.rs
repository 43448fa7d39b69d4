//! Starting one CGI: check the script, then start it (see `launch.rs`) with exactly its
//! descriptors, environment, limits and a process group of its own.

use std::collections::VecDeque;
use std::ffi::{c_char, CStr, CString, OsStr};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::unistd::{access, AccessFlags, Pid};
use protocol::{Limits, SpawnError, SpawnRequest, Stdin};

use crate::launch::{Identity, Launcher, Program};
use crate::private_tmp::TmpPool;
use crate::scope::CgiScope;

// The folder inside the jail that holds the CGIs. Nothing outside it is ever executed on a
// request, whatever the request names: a `/cgi-bin/x -> /bin/sh` symlink would otherwise turn
// a URL into a remote shell reading the request body.
use protocol::layout::{CGI_DIR, WRITABLE_AREAS};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the CGIs' Landlock domain: {0}")]
    Scope(#[from] landlock::RulesetError),
    #[error("mapping the stack CGIs start on: {0}")]
    Stack(Errno),
    #[error("opening /dev/null, the stdin of CGIs without a body: {0}")]
    Null(std::io::Error),
    #[error("turning core files off: {0}")]
    Limit(Errno),
}

/// Starts CGIs, one at a time, with what every spawn needs made once: the launcher (stack,
/// Landlock ruleset) and buffers for the path and the environment, reused from one CGI to the
/// next so that a spawn allocates next to nothing.
pub struct Spawner {
    launcher: Launcher,
    env: EnvBlock,
    path: Vec<u8>,
    cwd: Vec<u8>,
    /// The ids no running CGI has, least recently used first: an id is reused as late as the
    /// block allows, long after whatever its last CGI left has been killed and reaped.
    free_ids: VecDeque<u32>,
    tmp_size: u64,
    tmp_options: Vec<u8>,
    /// `/tmp` and the jail's other writable areas, as the CGI's mount namespace names them.
    tmp_dirs: Vec<CString>,
    /// Mount namespaces with an empty `/tmp`, ready for the next CGIs.
    tmp_pool: TmpPool,
    /// The supplementary groups every CGI's process sets (the data folder's, if there is one),
    /// or `None` when they are the worker's own already (none, without a data folder): then
    /// CGIs inherit them and skip `setgroups`.
    set_groups: Option<Vec<libc::gid_t>>,
}

impl Spawner {
    /// Call after the worker has installed its signal handlers (see [`Launcher::new`]).
    pub fn new(config: &crate::jail::Config) -> Result<Spawner, SetupError> {
        let ids = config.cgi_ids;
        // Writable areas the jail has (the worker's root is the jail now), `/tmp` first.
        let tmp_dirs: Vec<CString> = WRITABLE_AREAS
            .iter()
            .map(|area| format!("/{area}"))
            .filter(|dir| Path::new(dir).is_dir())
            .filter_map(|dir| CString::new(dir).ok())
            .collect();
        let tmp_pool = TmpPool::new(tmp_dirs.first().cloned());
        // A core file of a CGI would land in its folder or /tmp, with whatever secrets it held,
        // and one of the worker's would hold other requests'. Set here once, with the hard
        // limit too, so that every CGI inherits it and none can raise it, rather than in each
        // CGI's process.
        setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(SetupError::Limit)?;
        let groups: Vec<libc::gid_t> = config.data.iter().map(|data| data.gid).collect();
        let own_already = nix::unistd::getgroups().is_ok_and(|own| {
            own.iter()
                .map(|gid| gid.as_raw())
                .eq(groups.iter().copied())
        });
        check_null().map_err(SetupError::Null)?;
        Ok(Spawner {
            launcher: Launcher::new(CgiScope::new()?).map_err(SetupError::Stack)?,
            env: EnvBlock::default(),
            path: Vec::new(),
            cwd: Vec::new(),
            free_ids: (ids.first..).take(ids.count as usize).collect(),
            tmp_size: config.tmp_size,
            tmp_options: Vec::new(),
            tmp_dirs,
            tmp_pool,
            set_groups: (!own_already).then_some(groups),
        })
    }

    /// Gives back the id of a CGI that has exited and of which no process is left, and its
    /// mount namespace, to be used again once its `/tmp` is empty.
    pub fn release_id(&mut self, id: u32) {
        self.tmp_pool.release(id);
        self.free_ids.push_back(id);
    }

    /// Starts the CGI described by `request`, its stdin (unless `/dev/null`), stdout and
    /// stderr being `fds` (in that order), as an id of its own.
    pub fn spawn_cgi(
        &mut self,
        request: &SpawnRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<Started, SpawnError> {
        let (got, want) = (fds.len(), request.stdin.descriptors());
        let miscounted = || SpawnError::BadRequest(format!("{got} descriptors, want {want}"));
        let mut fds = fds.into_iter();
        let stdin = match request.stdin {
            Stdin::Given => Some(fds.next().ok_or_else(miscounted)?),
            Stdin::Null => None,
        };
        let (Some(stdout), Some(stderr), None) = (fds.next(), fds.next(), fds.next()) else {
            return Err(miscounted());
        };
        // A request without a body reads an open file of `/dev/null` of its own: a lock or a
        // file flag one CGI puts on its stdin would outlive its request on a shared one.
        let stdin = above_stderr(match stdin {
            Some(stdin) => stdin,
            None => open_null().map_err(classify_exec_error)?,
        })?;
        let (stdout, stderr) = (above_stderr(stdout)?, above_stderr(stderr)?);
        let Found {
            script,
            segments: script_segments,
            linked,
        } = find_script(&request.path)?;
        check_script(&script, linked)?;
        let directory = script.parent().unwrap_or(Path::new(CGI_DIR));

        self.env.clear();
        for variable in &request.env {
            let (name, value) = split_variable(variable)?;
            self.env.push(name.as_bytes(), |buffer| {
                buffer.extend_from_slice(value.as_bytes())
            })?;
        }
        // URL paths map one to one onto the jail (`/cgi-bin/` is the CGI folder, the jail's root
        // the document root), so the script's URL path is its path, and PATH_TRANSLATED is
        // PATH_INFO (RFC 3875 §4.1.5, §4.1.6, §4.1.13).
        let script_bytes = script.as_os_str().as_bytes();
        let path_info = &request.path[script_segments..];
        let write_path_info = |buffer: &mut Vec<u8>| {
            for segment in path_info {
                buffer.push(b'/');
                buffer.extend_from_slice(segment);
            }
        };
        let write_script = |buffer: &mut Vec<u8>| buffer.extend_from_slice(script_bytes);
        self.env.push(b"SCRIPT_NAME", write_script)?;
        self.env.push(b"SCRIPT_FILENAME", write_script)?;
        self.env.push(b"PATH_INFO", write_path_info)?;
        if !path_info.is_empty() {
            self.env.push(b"PATH_TRANSLATED", write_path_info)?;
        }
        let envp = self.env.finish();
        let path = c_string(&mut self.path, script_bytes)?;
        let cwd = c_string(&mut self.cwd, directory.as_os_str().as_bytes())?;
        let (limits, count) = rlimits(&request.limits);
        let argv = [path.as_ptr(), ptr::null()];
        let id = self.free_ids.pop_front().ok_or(SpawnError::NoResources {
            errno: libc::EAGAIN,
        })?;
        self.tmp_options.clear();
        let _ = write!(
            self.tmp_options,
            "size={},mode=0700,uid={id},gid={id}\0",
            self.tmp_size
        );
        let tmp_options = CStr::from_bytes_with_nul(&self.tmp_options)
            .map_err(|_| SpawnError::BadRequest("tmpfs options".into()))?;
        let tmp_dirs: Vec<&CStr> = self.tmp_dirs.iter().map(CString::as_c_str).collect();
        let namespace = self.tmp_pool.take(id);
        let fresh = namespace.is_none();
        let launched = self.launcher.launch(&Program {
            path,
            argv: &argv,
            envp,
            cwd,
            stdio: [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
            limits: &limits[..count],
            identity: Some(Identity {
                id,
                namespace,
                tmp_options,
                tmp_dirs: &tmp_dirs,
                groups: self.set_groups.as_deref(),
            }),
        });
        match launched {
            Ok(pid) => {
                if fresh {
                    self.tmp_pool.keep(id, pid);
                }
                Ok(Started {
                    pid,
                    script_segments,
                    cgi_id: id,
                    stderr,
                })
            }
            Err(errno) => {
                self.tmp_pool.put_back(id);
                self.free_ids.push_back(id);
                Err(classify_exec_error(errno))
            }
        }
    }
}

/// A CGI that runs.
pub struct Started {
    /// Its main process, also its process group.
    pub pid: Pid,
    /// How many segments of the request's path named the script.
    pub script_segments: usize,
    /// Its id (uid and gid), to give back with [`Spawner::release_id`] once it has exited.
    pub cgi_id: u32,
    /// Our copy of its stderr's write end, to close once its main process is reaped. A process
    /// that exits releases its descriptors last to first, so the front would see the end of
    /// its stderr before the end of its stdout, and be woken (and answer) only after it had
    /// dealt with the first: held here, stderr ends beside the `Exited` report instead, and
    /// the end of stdout is the one event between the CGI's answer and the front's.
    pub stderr: OwnedFd,
}

/// Checks, once, that the worker's `/dev/null` (which it made itself on a read-only tmpfs, see
/// `mounts.rs`) is the null device: a CGI reading it gets end-of-file, and its writes go
/// nowhere. Each CGI without a body then gets an open file of its own of it ([`open_null`]).
fn check_null() -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let metadata = std::fs::metadata("/dev/null")?;
    let (major, minor) = (libc::major(metadata.rdev()), libc::minor(metadata.rdev()));
    if !metadata.file_type().is_char_device() || (major, minor) != (1, 3) {
        return Err(std::io::Error::other(format!(
            "it is not the null device (1,3) but {major},{minor}"
        )));
    }
    Ok(())
}

/// `/dev/null` opened for reading, close-on-exec (the CGI gets it through `dup2`).
fn open_null() -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        c"/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// `fd` numbered 3 or above, as [`Program::stdio`] wants: a descriptor the worker received in
/// its own 0, 1 or 2 (were those ever closed) is duplicated out of the way.
fn above_stderr(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // F_DUPFD_CLOEXEC from 3 up.
    fd.try_clone().map_err(|error| {
        classify_exec_error(Errno::from_raw(error.raw_os_error().unwrap_or(libc::EBADF)))
    })
}

/// `bytes` NUL-terminated, in `buffer`.
fn c_string<'a>(buffer: &'a mut Vec<u8>, bytes: &[u8]) -> Result<&'a CStr, SpawnError> {
    buffer.clear();
    buffer.extend_from_slice(bytes);
    buffer.push(0);
    CStr::from_bytes_with_nul(buffer)
        .map_err(|_| SpawnError::BadRequest("NUL in the script's path".into()))
}

/// The environment as `execve` wants it: `NAME=value\0` strings and pointers to them, in
/// buffers kept from one spawn to the next. Like `std::process::Command`'s environment, which
/// the worker used before (and so CGIs see the same): sorted by name, and of two entries with
/// the same name the later one wins.
#[derive(Default)]
struct EnvBlock {
    /// The strings, back to back.
    bytes: Vec<u8>,
    entries: Vec<EnvEntry>,
    pointers: Vec<*const c_char>,
}

struct EnvEntry {
    /// Where the string starts in `bytes`, where its `=` is, and its place among the pushes.
    start: usize,
    equals: usize,
    order: usize,
}

impl EnvBlock {
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.pointers.clear();
    }

    /// Adds `name=value`, the value written by `write_value`. `name` holds no `=` or NUL.
    fn push(
        &mut self,
        name: &[u8],
        write_value: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SpawnError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let equals = self.bytes.len();
        self.bytes.push(b'=');
        write_value(&mut self.bytes);
        // A value with a NUL in it would be cut short there: refused, as `Command` refused it.
        if self.bytes[equals..].contains(&0) {
            return Err(SpawnError::BadRequest("NUL in an environment value".into()));
        }
        self.bytes.push(0);
        let order = self.entries.len();
        self.entries.push(EnvEntry {
            start,
            equals,
            order,
        });
        Ok(())
    }

    /// The `envp` array, ending with a null pointer; valid until the next change.
    fn finish(&mut self) -> &[*const c_char] {
        let bytes = &self.bytes;
        let name = |entry: &EnvEntry| &bytes[entry.start..entry.equals];
        // Unstable sort (it allocates nothing), made stable by the order of the pushes.
        self.entries
            .sort_unstable_by(|a, b| name(a).cmp(name(b)).then(a.order.cmp(&b.order)));
        self.pointers.clear();
        for (index, entry) in self.entries.iter().enumerate() {
            let overridden = self
                .entries
                .get(index + 1)
                .is_some_and(|next| name(next) == name(entry));
            if !overridden {
                self.pointers.push(bytes[entry.start..].as_ptr().cast());
            }
        }
        self.pointers.push(ptr::null());
        &self.pointers
    }
}

/// A script found by [`find_script`].
#[derive(Debug, PartialEq)]
struct Found {
    script: PathBuf,
    /// How many of the request's segments named it.
    segments: usize,
    /// Whether a symlink (the CGI folder itself included) was followed on the way: then only
    /// the script's real path can say whether it lies in the CGI folder.
    linked: bool,
}

/// The shortest prefix of `segments` under [`CGI_DIR`] that is a regular file (symlinks are
/// followed here and judged by [`check_script`]). A hidden, empty, `.` or `..` segment on the
/// way is never part of a script's path.
///
/// Each step is an `lstat` first: with no symlink on the way (nearly always), the path is
/// its own real path, and [`check_script`] needs no `realpath` (one `readlink` per segment)
/// nor a second `stat`.
fn find_script(segments: &[Vec<u8>]) -> Result<Found, SpawnError> {
    let mut path = PathBuf::from(CGI_DIR);
    let mut linked = std::fs::symlink_metadata(&path).map_or(true, |m| m.is_symlink());
    for (index, segment) in segments.iter().enumerate() {
        let plain = !segment.is_empty()
            && !segment.starts_with(b".")
            && !segment.contains(&b'/')
            && !segment.contains(&0);
        if !plain {
            return Err(SpawnError::NotFound);
        }
        path.push(OsStr::from_bytes(segment));
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_symlink() => {
                linked = true;
                std::fs::metadata(&path)
            }
            other => other,
        };
        match metadata {
            Ok(metadata) if metadata.is_file() => {
                return Ok(Found {
                    script: path,
                    segments: index + 1,
                    linked,
                })
            }
            Ok(metadata) if metadata.is_dir() => continue,
            Ok(_) => return Err(SpawnError::Forbidden),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpawnError::NotFound)
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(SpawnError::NotFound)
            }
            Err(_) => return Err(SpawnError::Forbidden),
        }
    }
    // Only folders: nothing to run.
    Err(SpawnError::NotFound)
}

/// The script must be an executable regular file whose real path lies under [`CGI_DIR`].
/// Unless `linked`, [`find_script`] has shown the first two already: its path, plain segments
/// under the CGI folder with no symlink on the way, is its real path, and it is a regular file.
fn check_script(path: &Path, linked: bool) -> Result<(), SpawnError> {
    if linked {
        let real = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpawnError::NotFound)
            }
            Err(_) => return Err(SpawnError::Forbidden),
        };
        if !real.starts_with(CGI_DIR) || real == Path::new(CGI_DIR) {
            return Err(SpawnError::Forbidden);
        }
        let metadata = std::fs::metadata(&real).map_err(|_| SpawnError::NotFound)?;
        if !metadata.is_file() {
            return Err(SpawnError::Forbidden);
        }
    }
    // (`access` follows links: the same answer for the path as for its real path.)
    match access(path, AccessFlags::X_OK) {
        Ok(()) => Ok(()),
        Err(Errno::EACCES) => Err(SpawnError::NotExecutable),
        Err(_) => Err(SpawnError::Forbidden),
    }
}

fn split_variable(variable: &[u8]) -> Result<(&OsStr, &OsStr), SpawnError> {
    let bad = || SpawnError::BadRequest("environment entry is not NAME=value".into());
    let equals = variable.iter().position(|&b| b == b'=').ok_or_else(bad)?;
    if equals == 0 || variable.contains(&0) {
        return Err(bad());
    }
    Ok((
        OsStr::from_bytes(&variable[..equals]),
        OsStr::from_bytes(&variable[equals + 1..]),
    ))
}

/// The rlimits of a CGI, as (resource, soft, hard), in the first `count` places.
/// The signals a CGI's processes may have queued at once (RLIMIT_SIGPENDING, counted for its
/// id; only `sigqueue`, timers and the like are held to it, not `kill` or the kernel's own):
/// plenty for a CGI, and about 10 KiB of the kernel's memory. Without it a CGI inherited the
/// worker's limit, the whole of the pool the kernel also counts every CGI's signals in
/// (`jail.rs`), and one CGI could take it all from the others.
const CGI_PENDING_SIGNALS: u64 = 128;

fn rlimits(limits: &Limits) -> ([(Resource, u64, u64); 6], usize) {
    // (No core files: the worker's own limit, which CGIs inherit; see `Spawner::new`.)
    let mut list = [(Resource::RLIMIT_CORE, 0, 0); 6];
    list[0] = (
        Resource::RLIMIT_SIGPENDING,
        CGI_PENDING_SIGNALS,
        CGI_PENDING_SIGNALS,
    );
    let mut count = 1;
    if let Some(seconds) = limits.cpu_seconds {
        // SIGXCPU at the soft limit, SIGKILL one second later at the hard one.
        list[count] = (Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1));
        count += 1;
    }
    let exact = [
        (Resource::RLIMIT_AS, limits.address_space_bytes),
        (Resource::RLIMIT_FSIZE, limits.file_size_bytes),
        (Resource::RLIMIT_NOFILE, limits.open_files),
        (Resource::RLIMIT_NPROC, limits.processes),
    ];
    for (resource, limit) in exact {
        if let Some(limit) = limit {
            let limit = if limit == u64::MAX {
                RLIM_INFINITY
            } else {
                limit
            };
            list[count] = (resource, limit, limit);
            count += 1;
        }
    }
    (list, count)
}

/// What a failed start means to the gateway: the errno of `clone`, or of the child's step that
/// failed (`execve` above all).
fn classify_exec_error(errno: Errno) -> SpawnError {
    match errno {
        Errno::EACCES | Errno::EPERM => SpawnError::NotExecutable,
        Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE => SpawnError::NoResources {
            errno: errno as i32,
        },
        // The script exists (checked above): ENOENT here means its #! interpreter does not.
        _ => SpawnError::ExecFailed {
            errno: errno as i32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_entries_split_at_the_first_equals() {
        let (name, value) = split_variable(b"QUERY_STRING=a=b").expect("valid entry");
        assert_eq!(
            (name.as_bytes(), value.as_bytes()),
            (&b"QUERY_STRING"[..], &b"a=b"[..])
        );
        assert!(split_variable(b"=x").is_err());
        assert!(split_variable(b"NOEQUALS").is_err());
        assert!(split_variable(b"A=\0").is_err());
    }

    #[test]
    fn odd_segments_are_never_part_of_a_script_path() {
        for segments in [
            &[&b".."[..]][..],
            &[b"."],
            &[b""],
            &[b".hidden"],
            &[b"a/b"],
            &[b"a\0"],
            &[],
        ] {
            let segments: Vec<Vec<u8>> = segments.iter().map(|s| s.to_vec()).collect();
            assert_eq!(
                find_script(&segments),
                Err(SpawnError::NotFound),
                "{segments:?}"
            );
        }
    }

    /// The strings `envp` points to.
    fn strings(envp: &[*const c_char]) -> Vec<String> {
        let (last, strings) = envp.split_last().expect("a null pointer at least");
        assert!(last.is_null());
        strings
            .iter()
            .map(|&string| {
                // SAFETY: pointers into the block's buffer, each to a NUL-terminated string.
                let string = unsafe { CStr::from_ptr(string) };
                string.to_string_lossy().into_owned()
            })
            .collect()
    }

    #[test]
    fn environment_is_sorted_by_name_and_the_last_of_a_name_wins() {
        let mut env = EnvBlock::default();
        for round in 0..2 {
            // The buffers are reused: nothing of the first round may remain in the second.
            env.clear();
            let value = if round == 0 { "first" } else { "second" };
            for (name, value) in [
                ("B", "1"),
                ("A", value),
                ("AB", ""),
                ("A", "again"),
                ("a", "x"),
            ] {
                env.push(name.as_bytes(), |buffer| {
                    buffer.extend_from_slice(value.as_bytes())
                })
                .expect("no NUL");
            }
            assert_eq!(strings(env.finish()), ["A=again", "AB=", "B=1", "a=x"]);
        }
        env.clear();
        assert!(env
            .push(b"PATH_INFO", |buffer| buffer.extend_from_slice(b"/a\0b"))
            .is_err());
        env.clear();
        assert_eq!(strings(env.finish()), Vec::<String>::new());
    }

    #[test]
    fn limits_are_those_asked_for_and_give_cpu_a_grace_second() {
        let none = Limits {
            cpu_seconds: None,
            address_space_bytes: None,
            file_size_bytes: None,
            open_files: None,
            processes: None,
        };
        // (Core files are off through the worker's own limit: `isolation.rs` in the e2e tests.)
        let pending = (
            Resource::RLIMIT_SIGPENDING,
            CGI_PENDING_SIGNALS,
            CGI_PENDING_SIGNALS,
        );
        let (list, count) = rlimits(&none);
        assert_eq!(list[..count], [pending]);
        let all = Limits {
            cpu_seconds: Some(30),
            address_space_bytes: Some(u64::MAX),
            file_size_bytes: Some(1 << 20),
            open_files: Some(256),
            processes: Some(512),
        };
        let (list, count) = rlimits(&all);
        assert_eq!(
            list[..count],
            [
                pending,
                (Resource::RLIMIT_CPU, 30, 31),
                (Resource::RLIMIT_AS, RLIM_INFINITY, RLIM_INFINITY),
                (Resource::RLIMIT_FSIZE, 1 << 20, 1 << 20),
                (Resource::RLIMIT_NOFILE, 256, 256),
                (Resource::RLIMIT_NPROC, 512, 512),
            ]
        );
    }

    #[test]
    fn scripts_outside_the_cgi_folder_are_forbidden() {
        for script in ["/bin/sh", "/cgi-bin"] {
            assert!(check_script(Path::new(script), true).is_err(), "{script}");
        }
    }
}
