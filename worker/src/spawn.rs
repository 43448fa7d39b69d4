//! Starting one CGI: check the script, then fork and exec it with exactly its descriptors,
//! environment, limits and a process group of its own.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::unistd::{access, setsid, AccessFlags, Pid};
use protocol::{Limits, SpawnError, SpawnRequest};

/// The folder inside the jail that holds the CGIs. Nothing outside it is ever executed on a
/// request, whatever the request names: a `/cgi-bin/x -> /bin/sh` symlink would otherwise turn
/// a URL into a remote shell reading the request body.
pub const CGI_DIR: &str = "/cgi-bin";

/// Starts the CGI described by `request`, its stdin, stdout and stderr being `fds` (in that
/// order). Returns the CGI's pid, which is also its process group id, and how many segments
/// of the request's path named the script.
pub fn spawn_cgi(request: &SpawnRequest, fds: Vec<OwnedFd>) -> Result<(Pid, usize), SpawnError> {
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        SpawnError::BadRequest(format!("{} descriptors, want 3", fds.len()))
    })?;
    let (script, script_segments) = find_script(&request.path)?;
    check_script(&script)?;
    let directory = script.parent().unwrap_or(Path::new(CGI_DIR));

    let mut command = Command::new(&script);
    command
        .env_clear()
        .current_dir(directory)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    for variable in &request.env {
        let (name, value) = split_variable(variable)?;
        command.env(name, value);
    }
    // URL paths map one to one onto the jail (`/cgi-bin/` is the CGI folder, the jail's root
    // the document root), so the script's URL path is its path, and PATH_TRANSLATED is
    // PATH_INFO (RFC 3875 §4.1.5, §4.1.6, §4.1.13).
    let mut path_info = Vec::new();
    for segment in &request.path[script_segments..] {
        path_info.push(b'/');
        path_info.extend_from_slice(segment);
    }
    command
        .env("SCRIPT_NAME", &script)
        .env("SCRIPT_FILENAME", &script);
    command.env("PATH_INFO", OsStr::from_bytes(&path_info));
    if !path_info.is_empty() {
        command.env("PATH_TRANSLATED", OsStr::from_bytes(&path_info));
    }
    let limits = request.limits;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, setrlimit, close_range); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            setsid()?;
            apply_limits(&limits)?;
            close_other_descriptors();
            Ok(())
        });
    }
    // std's Command resets the signal mask and SIGPIPE in the child, and reports exec's errno.
    let child = command.spawn().map_err(classify_exec_error)?;
    Ok((Pid::from_raw(child.id() as i32), script_segments))
}

/// The shortest prefix of `segments` under [`CGI_DIR`] that is a regular file (symlinks are
/// followed here and judged by [`check_script`]), and its length. A hidden, empty, `.` or
/// `..` segment on the way is never part of a script's path.
fn find_script(segments: &[Vec<u8>]) -> Result<(PathBuf, usize), SpawnError> {
    let mut path = PathBuf::from(CGI_DIR);
    for (index, segment) in segments.iter().enumerate() {
        let plain = !segment.is_empty()
            && !segment.starts_with(b".")
            && !segment.contains(&b'/')
            && !segment.contains(&0);
        if !plain {
            return Err(SpawnError::NotFound);
        }
        path.push(OsStr::from_bytes(segment));
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => return Ok((path, index + 1)),
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
fn check_script(path: &Path) -> Result<(), SpawnError> {
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
    match access(&real, AccessFlags::X_OK) {
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

fn apply_limits(limits: &Limits) -> std::io::Result<()> {
    // A core file of a CGI would land in its folder or /tmp, with whatever secrets it held.
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    if let Some(seconds) = limits.cpu_seconds {
        // SIGXCPU at the soft limit, SIGKILL one second later at the hard one.
        setrlimit(Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
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
            setrlimit(resource, limit, limit)?;
        }
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so the CGI starts with exactly 0, 1 and 2
/// whatever the worker holds. (Not closed outright: std's exec-error pipe must survive to exec.)
fn close_other_descriptors() {
    // SAFETY: close_range only changes descriptor flags; with CLOSE_RANGE_CLOEXEC it closes
    // nothing now, so no descriptor owned by Rust code becomes dangling in this process.
    unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        );
    }
}

fn classify_exec_error(error: std::io::Error) -> SpawnError {
    let errno = error.raw_os_error().unwrap_or(0);
    match Errno::from_raw(errno) {
        Errno::EACCES | Errno::EPERM => SpawnError::NotExecutable,
        Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE => {
            SpawnError::NoResources { errno }
        }
        // The script exists (checked above): ENOENT here means its #! interpreter does not.
        _ => SpawnError::ExecFailed { errno },
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

    #[test]
    fn scripts_outside_the_cgi_folder_are_forbidden() {
        for script in ["/bin/sh", "/cgi-bin"] {
            assert!(check_script(Path::new(script)).is_err(), "{script}");
        }
    }
}
