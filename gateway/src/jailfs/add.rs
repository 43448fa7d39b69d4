//! `--add HOST[:JAIL]`: a host file or whole tree copied into the jail.
//!
//! Planned on the host first (phase 1 of `init`), so that a refused entry deep in a tree
//! leaves the jail untouched: every regular file, directory and symlink is listed, anything
//! else (device, socket, FIFO) and any setuid/setgid file refuses the whole init, and the
//! libraries (or `#!` interpreters) the tree's ELF files (executable scripts) need join the
//! host paths mirrored as for programs.
//!
//! Choices made here:
//! - HOST itself is followed if it is a symlink (as `cp -r` follows a path named on its
//!   command line): `--add /etc/localtime` means the file, not a symlink into a zoneinfo
//!   tree the jail does not have. Symlinks *inside* the tree are reproduced, target as is,
//!   never followed.
//! - JAIL's existing directories are resolved inside the jail (`/bin/x` on a merged-/usr
//!   jail lands in `/usr/bin/x`); below JAIL the tree is written as it is, and a jail
//!   symlink where the tree has a directory is a conflict.
//! - Files are root-owned with the host's mode `& 0o755`, directories 0755 root:root,
//!   whoever owned them on the host. Hard links in the tree become separate copies.
//! - JAIL may not be in `/dev`, `/tmp`, `/var/tmp`, `/usr/tmp` (the worker mounts fresh
//!   file systems there, so what init puts there is never seen by CGIs), nor in `/proc` or
//!   `/sys` (which the audit refuses). A path containing `:` cannot be given.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::elf;
use super::error::{refuse_setuid, AddSpecError, JailInitError};
use super::limits::MAX_ADD_DEPTH;

/// Jail folders that an `--add` may not write into: (top folder, why).
const REFUSED_JAIL_AREAS: &[(&str, &str)] = &[
    (
        "/dev",
        "the worker mounts its own /dev at run time; CGIs would never see it",
    ),
    (
        "/tmp",
        "the worker mounts a fresh tmpfs there at run time; CGIs would never see it",
    ),
    (
        "/var/tmp",
        "the worker mounts a fresh tmpfs there at run time; CGIs would never see it",
    ),
    (
        "/usr/tmp",
        "the worker mounts a fresh tmpfs there at run time; CGIs would never see it",
    ),
    (
        "/proc",
        "proc and sys must never be in a jail (jail check refuses them)",
    ),
    (
        "/sys",
        "proc and sys must never be in a jail (jail check refuses them)",
    ),
];

/// One `--add HOST[:JAIL]`: copy host file or tree `host` to jail path `jail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSpec {
    /// Absolute host path of a regular file or a directory (followed if a symlink).
    pub host: PathBuf,
    /// Absolute path in the jail, as seen after the chroot.
    pub jail: PathBuf,
}

impl AddSpec {
    /// The refusals of [`AddSpec::from_str`], for a value built directly.
    pub fn validate(&self) -> Result<(), AddSpecError> {
        let refuse = |reason| AddSpecError {
            spec: self.to_string(),
            reason,
        };
        for path in [&self.host, &self.jail] {
            check_path(path).map_err(refuse)?;
        }
        for &(area, why) in REFUSED_JAIL_AREAS {
            if self.jail.starts_with(area) {
                return Err(refuse(why));
            }
        }
        Ok(())
    }
}

/// Absolute, below `/`, only plain names (no `.`, `..`), no NUL, no `:`.
fn check_path(path: &Path) -> Result<(), &'static str> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err("empty path");
    }
    if bytes.contains(&0) {
        return Err("path contains a NUL byte");
    }
    if bytes.contains(&b':') {
        return Err("a path cannot contain ':' (it separates HOST from JAIL)");
    }
    if !path.is_absolute() {
        return Err("HOST and JAIL must be absolute paths");
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("'..' is not allowed in HOST or JAIL");
    }
    // `Path::components` drops inner `.` and trailing slashes; refuse them all the same, so
    // that what is written is exactly what is meant.
    if bytes.split(|&b| b == b'/').skip(1).any(|part| part == b".") {
        return Err("'.' is not allowed in HOST or JAIL");
    }
    if path.components().count() < 2 {
        return Err("HOST and JAIL must name something below /");
    }
    Ok(())
}

impl FromStr for AddSpec {
    type Err = AddSpecError;

    /// `HOST` or `HOST:JAIL`; JAIL defaults to HOST.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (host, jail) = spec.split_once(':').unwrap_or((spec, spec));
        if jail.contains(':') {
            return Err(AddSpecError {
                spec: spec.to_string(),
                reason: "expected HOST or HOST:JAIL (one ':' at most)",
            });
        }
        let add = AddSpec {
            host: PathBuf::from(host),
            jail: PathBuf::from(jail),
        };
        add.validate().map_err(|e| AddSpecError {
            spec: spec.to_string(),
            reason: e.reason,
        })?;
        Ok(add)
    }
}

impl fmt::Display for AddSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host.display(), self.jail.display())
    }
}

/// What an `--add` puts in the jail, read from the host.
#[derive(Debug)]
pub(super) enum Node {
    /// A regular file, copied from this host path (final component not a symlink).
    File { host: PathBuf },
    /// A symlink, reproduced with this target.
    Symlink { target: PathBuf },
    /// A directory and its entries, sorted by name.
    Dir { entries: Vec<(OsString, Node)> },
}

/// An `--add` ready to install: where, and what.
#[derive(Debug)]
pub(super) struct PlannedAdd {
    pub(super) jail: PathBuf,
    pub(super) node: Node,
}

/// Read `spec`'s host side into a plan, adding the host paths its ELF files and scripts
/// need to `needed` (interpreters in `provided` excepted, see [`elf::collect`]).
pub(super) fn plan(
    spec: &AddSpec,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
) -> Result<PlannedAdd, JailInitError> {
    spec.validate()?;
    // HOST is followed (see the module doc); canonical, so that copying opens a path whose
    // last component is not a symlink.
    let host = fs::canonicalize(&spec.host).map_err(|e| JailInitError::io(&spec.host, e))?;
    let meta = fs::symlink_metadata(&host).map_err(|e| JailInitError::io(&host, e))?;
    let node = plan_node(&host, &meta, needed, provided, 0)?;
    Ok(PlannedAdd {
        jail: spec.jail.clone(),
        node,
    })
}

fn plan_node(
    host: &Path,
    meta: &fs::Metadata,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
    depth: usize,
) -> Result<Node, JailInitError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(host).map_err(|e| JailInitError::io(host, e))?;
        Ok(Node::Symlink { target })
    } else if kind.is_file() {
        refuse_setuid(host, meta.mode())?;
        elf::collect_file_needs(host, needed, provided)?;
        Ok(Node::File {
            host: host.to_path_buf(),
        })
    } else if kind.is_dir() {
        if depth >= MAX_ADD_DEPTH {
            return Err(JailInitError::AddTooDeep {
                path: host.to_path_buf(),
            });
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(host).map_err(|e| JailInitError::io(host, e))? {
            names.push(entry.map_err(|e| JailInitError::io(host, e))?.file_name());
        }
        // Sorted, so that the copy order (and the first error) does not vary between runs.
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let path = host.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(|e| JailInitError::io(&path, e))?;
            let node = plan_node(&path, &meta, needed, provided, depth + 1)?;
            entries.push((name, node));
        }
        Ok(Node::Dir { entries })
    } else {
        Err(JailInitError::UnsupportedFileType {
            path: host.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(spec: &str) -> (PathBuf, PathBuf) {
        let add: AddSpec = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
        (add.host, add.jail)
    }

    #[test]
    fn host_and_jail_paths_are_parsed() {
        assert_eq!(
            parsed("/etc/ssl/certs"),
            ("/etc/ssl/certs".into(), "/etc/ssl/certs".into())
        );
        assert_eq!(
            parsed("/srv/app/bin/tool:/usr/local/bin/tool"),
            ("/srv/app/bin/tool".into(), "/usr/local/bin/tool".into())
        );
        assert_eq!(
            parsed("/srv/cgi:/cgi-bin/app"),
            ("/srv/cgi".into(), "/cgi-bin/app".into())
        );
        let add = AddSpec {
            host: "/a".into(),
            jail: "/b".into(),
        };
        assert_eq!(add.to_string(), "/a:/b");
        assert_eq!(add.to_string().parse::<AddSpec>(), Ok(add));
    }

    #[test]
    fn bad_add_specs_are_refused() {
        for spec in [
            "",
            ":",
            "/a:",
            ":/a",
            "relative",
            "/a:relative",
            "./a",
            "/",
            "/a:/",
            "/:/a",
            "/a/../etc/shadow",
            "/a:/usr/../etc",
            "/a:/usr/./bin",
            "/a/.:/b",
            "/a:/b:/c",
            "/a\0b",
            "/a:/dev/null",
            "/a:/dev",
            "/a:/tmp/x",
            "/a:/var/tmp",
            "/a:/usr/tmp/x",
            "/a:/proc",
            "/a:/sys/x",
        ] {
            let err = spec
                .parse::<AddSpec>()
                .expect_err(&format!("{spec:?} must be refused"));
            assert_eq!(err.spec, spec);
            assert!(err.to_string().starts_with(&format!("{spec:?}: ")), "{err}");
        }
        // Look-alikes of refused areas are fine.
        parsed("/a:/devices/x");
        parsed("/a:/tmpl");
        parsed("/a:/usr/tmpfiles");
    }
}
