//! Binding the listening sockets, as root before the fork (a privileged port, a socket file in
//! a root-owned folder), or taking over the ones systemd passed (socket activation).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use super::handover::Bound;
use crate::config::{ListenAddr, SocketAccess};

impl Bound {
    /// Binds `address`. A Unix socket file is created with `access`; a stale one (nobody
    /// accepting on it) is replaced, a live one or any other file is an error.
    pub fn bind(address: &ListenAddr, access: SocketAccess) -> Result<Bound, String> {
        match address {
            ListenAddr::Tcp(socket) => std::net::TcpListener::bind(socket)
                .map(Bound::Tcp)
                .map_err(|error| format!("cannot listen on {socket}: {error}")),
            ListenAddr::Unix(path) => bind_unix(path, access)
                .map(|listener| Bound::Unix(listener, Some(path.clone())))
                .map_err(|error| format!("cannot listen on unix:{}: {error}", path.display())),
        }
    }

    /// Takes over a listening socket inherited as descriptor `fd` (systemd's LISTEN_FDS).
    pub fn inherit(fd: OwnedFd) -> Result<Bound, String> {
        use nix::sys::socket::{
            getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage,
        };
        let raw = fd.as_raw_fd();
        let listening = getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|error| format!("inherited descriptor {raw}: not a socket: {error}"))?;
        if !listening {
            return Err(format!(
                "inherited descriptor {raw}: socket is not listening"
            ));
        }
        let family = getsockname::<SockaddrStorage>(fd.as_fd().as_raw_fd())
            .ok()
            .and_then(|address| address.family());
        match family {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Bound::Tcp(std::net::TcpListener::from(fd)))
            }
            Some(AddressFamily::Unix) => Ok(Bound::Unix(UnixListener::from(fd), None)),
            other => Err(format!(
                "inherited descriptor {raw}: a socket of family {other:?}, not TCP or Unix"
            )),
        }
    }
}

fn bind_unix(path: &Path, access: SocketAccess) -> std::io::Result<UnixListener> {
    use std::io::{Error, ErrorKind};
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            // Left by a gateway that was killed, unless one is still accepting on it.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    "another process is accepting on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    // Made with its mode (a socket is created 0777 less the umask), and its group set without
    // following a symlink: a chmod or chown by path after the bind would follow one that
    // another user put in its place (in a folder they may write), onto a file of their
    // choosing. Called before any thread exists, so the umask changes for nothing else.
    use nix::sys::stat::{umask, Mode};
    let before = umask(Mode::from_bits_truncate(!access.mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(before);
    let listener = bound?;
    let result = (|| {
        if let Some(group) = access.group {
            let group = Some(nix::unistd::Gid::from_raw(group));
            let no_follow = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
            nix::unistd::fchownat(nix::fcntl::AT_FDCWD, path, None, group, no_follow)?;
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(listener)
}

/// Descriptors systemd passed us (sd_listen_fds(3)): `LISTEN_PID` is ours, `LISTEN_FDS` of
/// them start at 3, `LISTEN_FDNAMES` names them. Takes them (the variables are removed, so no
/// child inherits the claim) and returns them with their names.
pub fn take_inherited() -> Result<Vec<(String, OwnedFd)>, String> {
    const FIRST: i32 = 3;
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // Called before any thread exists, so changing the environment races with nothing.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    if pid.to_str() != Some(std::process::id().to_string().as_str()) {
        // Meant for another process (our parent, say): not ours to use.
        return Ok(Vec::new());
    }
    let count: i32 = count
        .parse()
        .map_err(|_| format!("LISTEN_FDS={count:?} is not a number"))?;
    if !(1..=16).contains(&count) {
        return Err(format!("LISTEN_FDS={count}: expected 1 to 16 sockets"));
    }
    let mut names = names.split(':');
    let mut inherited = Vec::new();
    for fd in FIRST..FIRST + count {
        // SAFETY: F_GETFD only reads the descriptor's flags; on a closed one it fails, EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(format!(
                "LISTEN_FDS={count}, but descriptor {fd} is not open"
            ));
        }
        // SAFETY: systemd's protocol hands descriptors 3..3+LISTEN_FDS to this process, we
        // checked it is open, and nothing else in the process owns it: we take it once, here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Keep it from leaking into workers.
        nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|error| format!("descriptor {fd}: {error}"))?;
        let name = names.next().unwrap_or("").to_owned();
        inherited.push((name, owned));
    }
    Ok(inherited)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn unix_socket_gets_its_mode_replaces_a_stale_file_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let address = ListenAddr::Unix(path.clone());
        let access = SocketAccess {
            mode: 0o600,
            group: None,
        };
        let first = Bound::bind(&address, access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(first.address(), format!("unix:{}", path.display()));
        let live = Bound::bind(&address, access).unwrap_err();
        assert!(live.contains("another process is accepting"), "{live}");
        drop(first);
        // The file stays behind when the listener is closed: a stale socket, replaced.
        assert!(path.exists());
        let second = Bound::bind(&address, SocketAccess::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert_eq!(second.created_file(), Some(path.as_path()));
        drop(second);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        let blocked = Bound::bind(&address, access).unwrap_err();
        assert!(blocked.contains("not a socket"), "{blocked}");
    }

    /// The socket's group is set on the socket itself (as root, which the gateway starts as).
    #[test]
    fn unix_socket_gets_its_group() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let access = SocketAccess {
            mode: 0o660,
            group: Some(4321),
        };
        let bound = Bound::bind(&ListenAddr::Unix(path.clone()), access).unwrap();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!((metadata.gid(), metadata.mode() & 0o777), (4321, 0o660));
        drop(bound);
    }

    #[test]
    fn an_inherited_listening_socket_is_recognised() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let bound = Bound::inherit(OwnedFd::from(tcp)).unwrap();
        assert_eq!(bound.address(), format!("127.0.0.1:{port}"));
        let dir = tempfile::tempdir().unwrap();
        let unix = UnixListener::bind(dir.path().join("s")).unwrap();
        let bound = Bound::inherit(OwnedFd::from(unix)).unwrap();
        assert!(matches!(bound, Bound::Unix(_, None)));
        assert_eq!(bound.created_file(), None);
        let file = std::fs::File::open("/dev/null").unwrap();
        let error = Bound::inherit(OwnedFd::from(file)).unwrap_err();
        assert!(error.contains("not a socket"), "{error}");
    }
}
