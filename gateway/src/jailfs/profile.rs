//! `--profile`: the base set a jail is built from, before `--with` and `--add`.
//!
//! - `classic`: [`DEFAULT_PROGRAMS`](super::DEFAULT_PROGRAMS) from the host, each with its
//!   libraries and loader, in the host's (merged-/usr) layout.
//! - `minimal`: only `sh`, the same way.
//! - `busybox`: one statically linked busybox at `/bin/busybox`, [`BUSYBOX_APPLETS`] as
//!   symlinks `/bin/NAME -> busybox`, and `/usr/bin/env -> /bin/busybox` for
//!   `#!/usr/bin/env sh`. No loader and no shared library at all; `/bin` is a real
//!   directory. The applet list is fixed, not asked of busybox (init never runs what it
//!   copies).

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::elf;
use super::error::{refuse_setuid, JailInitError};
use super::mirror::Jail;

/// The classic shell-CGI jail set: the programs of [`Profile::Classic`].
pub const DEFAULT_PROGRAMS: &[&str] = &[
    "[", "cat", "chmod", "cp", "date", "echo", "expr", "mv", "rm", "sh", "sleep", "test", "awk",
    "egrep", "fgrep", "grep", "gunzip", "zcat", "gzip", "head", "nice", "sed", "sort", "tail",
    "touch", "tr", "true", "uniq", "wc",
];

/// Where the host's busybox is taken from: Debian's `busybox-static` installs it there
/// (and the dynamically linked `busybox` package, which conflicts with it, too).
pub const BUSYBOX_HOST_PATH: &str = "/bin/busybox";

/// The busybox binary in a busybox jail.
const BUSYBOX_JAIL_PATH: &str = "/bin/busybox";

/// `/usr/bin/env` in a busybox jail, a link to busybox so that `#!/usr/bin/env sh` works.
const ENV_JAIL_PATH: &str = "/usr/bin/env";

/// The applets linked in `/bin` of a busybox jail: the classic set (without `nice`, which
/// Debian's busybox-static 1.35 does not build), `ls`, `id`, `env`, and a few more that
/// shell CGIs commonly use. Every name is an applet of Debian 12's busybox-static (a test
/// checks it against `busybox --list`).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "[", "cat", "chmod", "cp", "date", "echo", "expr", "mv", "rm", "sh", "sleep", "test", "awk",
    "egrep", "fgrep", "grep", "gunzip", "zcat", "gzip", "head", "sed", "sort", "tail", "touch",
    "tr", "true", "uniq", "wc", "ls", "id", "env", "false", "basename", "dirname", "cut", "printf",
    "mkdir", "pwd", "xargs",
];

/// The base set of a jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The classic shell-CGI set ([`DEFAULT_PROGRAMS`](super::DEFAULT_PROGRAMS)) from the
    /// host, with their libraries.
    #[default]
    Classic,
    /// A static busybox and its applet links; no shared libraries.
    Busybox,
    /// Only `sh`, with its libraries.
    Minimal,
}

impl Profile {
    /// Every profile, in the order they are documented.
    pub const ALL: [Profile; 3] = [Profile::Classic, Profile::Busybox, Profile::Minimal];

    /// The name `--profile` takes.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Classic => "classic",
            Profile::Busybox => "busybox",
            Profile::Minimal => "minimal",
        }
    }

    /// Host programs (bare names) the profile copies with their libraries.
    pub(super) fn host_programs(self) -> &'static [&'static str] {
        match self {
            Profile::Classic => DEFAULT_PROGRAMS,
            Profile::Minimal => &["sh"],
            Profile::Busybox => &[],
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--profile` value that names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}: expected classic, busybox or minimal")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|profile| profile.name() == name)
            .ok_or_else(|| UnknownProfile(name.to_string()))
    }
}

/// The host's static busybox, checked, ready to install.
#[derive(Debug)]
pub(super) struct Busybox {
    /// Canonical host path.
    host: PathBuf,
}

impl Busybox {
    /// [`BUSYBOX_HOST_PATH`], which must be a statically linked ELF executable without the
    /// setuid bit. A dynamically linked one would need the loader and libc in the jail,
    /// which is what this profile is for avoiding.
    pub(super) fn locate() -> Result<Busybox, JailInitError> {
        let path = Path::new(BUSYBOX_HOST_PATH);
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JailInitError::BusyboxMissing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(JailInitError::io(path, e)),
        };
        if !meta.is_file() {
            return Err(JailInitError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        }
        refuse_setuid(path, meta.permissions().mode())?;
        let host = fs::canonicalize(path).map_err(|e| JailInitError::io(path, e))?;
        if !elf::is_static_elf(&host)? {
            return Err(JailInitError::BusyboxNotStatic {
                path: path.to_path_buf(),
            });
        }
        Ok(Busybox { host })
    }

    /// Jail paths of the applet links, in [`BUSYBOX_APPLETS`] order.
    pub(super) fn applet_paths() -> Vec<PathBuf> {
        BUSYBOX_APPLETS
            .iter()
            .map(|name| Path::new("/bin").join(name))
            .collect()
    }

    /// Every jail path this profile installs: `#!` interpreters among them are not
    /// collected from the host, and host programs at them are not copied.
    pub(super) fn provided() -> Vec<PathBuf> {
        let mut paths = Busybox::applet_paths();
        paths.push(PathBuf::from(BUSYBOX_JAIL_PATH));
        paths.push(PathBuf::from(ENV_JAIL_PATH));
        paths
    }

    /// `/bin` as a real directory (a `/bin` symlink left by an earlier classic init is a
    /// conflict), busybox in it, the applet links and `/usr/bin/env`.
    pub(super) fn install(&self, jail: &mut Jail) -> Result<(), JailInitError> {
        jail.dir("bin", 0o755)?;
        jail.install_file(&self.host, Path::new(BUSYBOX_JAIL_PATH))?;
        for path in Busybox::applet_paths() {
            jail.install_symlink(&path, Path::new("busybox"))?;
        }
        jail.install_symlink(Path::new(ENV_JAIL_PATH), Path::new(BUSYBOX_JAIL_PATH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
            assert_eq!(profile.to_string(), profile.name());
        }
        assert_eq!(Profile::default(), Profile::Classic);
        for bad in ["", "Classic", "busybox ", "full"] {
            let err = bad.parse::<Profile>().expect_err(bad);
            assert!(
                err.to_string()
                    .ends_with("expected classic, busybox or minimal"),
                "{err}"
            );
        }
    }
}
