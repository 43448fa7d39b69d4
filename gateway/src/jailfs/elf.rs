//! What a program needs in order to start: its `#!` interpreter or its ELF loader and
//! shared libraries, read from the files (never by running `ldd` or the program).
//!
//! `lddtree` does the ELF part (PT_INTERP, DT_NEEDED, RPATH/RUNPATH with `$ORIGIN`,
//! `ld.so.conf`). It cannot see libraries opened with `dlopen` (NSS modules, gconv,
//! `libgcc_s` for thread cancellation): a profile names those by absolute path.

use std::env;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::panic;
use std::path::{Path, PathBuf};

use lddtree::{DependencyAnalyzer, DependencyTree};

use super::error::JailInitError;
use super::limits::MAX_INTERPRETER_DEPTH;

/// The kernel reads at most this many bytes of a `#!` line (`BINPRM_BUF_SIZE`, execve(2));
/// an interpreter named past it is not one the kernel would run.
const SHEBANG_MAX: usize = 256;

/// The loader's trusted directories, searched even without `ld.so.cache` (ld.so(8)).
const TRUSTED_LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64"];

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Elf,
    Script { interpreter: PathBuf },
    Other,
}

/// Add `program` and every host path it needs to start to `needed` (each once). A `#!`
/// interpreter listed in `provided` (a jail path the profile itself installs, such as
/// busybox's `/bin/sh`) is taken from the jail and not collected from the host.
pub(super) fn collect(
    program: &Path,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
) -> Result<(), JailInitError> {
    collect_at_depth(program, needed, provided, 0)
}

/// Add what the file `path` of an `--add` tree needs (not `path` itself, which goes to its
/// own jail path): the libraries of an ELF file, executable or not (a shared library in the
/// tree needs its own dependencies), and the interpreter of an executable `#!` script. Any
/// other file needs nothing; an executable one that is neither is copied as it is (a shell
/// falls back to running such a file as a script).
pub(super) fn collect_file_needs(
    path: &Path,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
) -> Result<(), JailInitError> {
    let meta = fs::metadata(path).map_err(|e| JailInitError::io(path, e))?;
    // A file of an added tree is data first: a library module may carry a `#!` line that no
    // kernel would run (Perl's `#!perl`), or name an interpreter this host does not have
    // (Python's cgi.py names /usr/local/bin/python). Neither is a reason to refuse the tree.
    let format = match classify(path) {
        Ok(format) => format,
        Err(JailInitError::BadShebang { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    match format {
        Format::Elf => {
            for dependency in elf_dependencies(path)? {
                push_unique(needed, dependency);
            }
            Ok(())
        }
        Format::Script { interpreter } if is_executable(&meta) => {
            match collect_interpreter(path, interpreter, needed, provided, 0) {
                Err(JailInitError::InterpreterNotFound {
                    script,
                    interpreter,
                }) => {
                    tracing::warn!(
                        script = %script.display(),
                        interpreter = %interpreter.display(),
                        "added file's #! interpreter is not on this host; copied anyway"
                    );
                    Ok(())
                }
                other => other,
            }
        }
        Format::Script { .. } | Format::Other => Ok(()),
    }
}

/// True if `path` is an ELF file that needs neither a loader nor a shared library (a static
/// or static-pie executable), read from its headers.
pub(super) fn is_static_elf(path: &Path) -> Result<bool, JailInitError> {
    if classify(path)? != Format::Elf {
        return Ok(false);
    }
    let (_, tree) = analyse(path)?;
    Ok(tree.interpreter.is_none() && tree.needed.is_empty())
}

fn collect_at_depth(
    program: &Path,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
    depth: usize,
) -> Result<(), JailInitError> {
    push_unique(needed, program.to_path_buf());
    match classify(program)? {
        Format::Elf => {
            for dependency in elf_dependencies(program)? {
                push_unique(needed, dependency);
            }
        }
        Format::Script { interpreter } => {
            collect_interpreter(program, interpreter, needed, provided, depth)?;
        }
        Format::Other => {
            // A data file or a non-ELF library named by path is copied as it is; an
            // executable the kernel cannot start is a mistake in the profile.
            let meta = fs::metadata(program).map_err(|e| JailInitError::io(program, e))?;
            if is_executable(&meta) {
                return Err(JailInitError::UnknownExecutableFormat {
                    path: program.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// The `#!` interpreter of `script` and what it needs, unless the jail provides it.
fn collect_interpreter(
    script: &Path,
    interpreter: PathBuf,
    needed: &mut Vec<PathBuf>,
    provided: &[PathBuf],
    depth: usize,
) -> Result<(), JailInitError> {
    if provided.contains(&interpreter) {
        return Ok(());
    }
    if depth >= MAX_INTERPRETER_DEPTH {
        return Err(JailInitError::InterpreterTooDeep {
            path: script.to_path_buf(),
        });
    }
    let meta = fs::metadata(&interpreter).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            JailInitError::InterpreterNotFound {
                script: script.to_path_buf(),
                interpreter: interpreter.clone(),
            }
        } else {
            JailInitError::io(&interpreter, e)
        }
    })?;
    if !meta.is_file() {
        return Err(JailInitError::UnsupportedFileType { path: interpreter });
    }
    if !is_executable(&meta) {
        return Err(JailInitError::NotExecutable { path: interpreter });
    }
    collect_at_depth(&interpreter, needed, provided, depth + 1)
}

fn push_unique(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if !paths.contains(&path) {
        paths.push(path);
    }
}

fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Read the head of `path` (following symlinks, as execve does) and tell ELF from `#!`.
fn classify(path: &Path) -> Result<Format, JailInitError> {
    let file = File::open(path).map_err(|e| JailInitError::io(path, e))?;
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    file.take(SHEBANG_MAX as u64)
        .read_to_end(&mut head)
        .map_err(|e| JailInitError::io(path, e))?;
    if head.starts_with(b"\x7fELF") {
        Ok(Format::Elf)
    } else if head.starts_with(b"#!") {
        let interpreter = parse_shebang(&head).map_err(|reason| JailInitError::BadShebang {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Format::Script { interpreter })
    } else {
        Ok(Format::Other)
    }
}

/// The interpreter named by a `#!` line, as execve(2) reads it: after `#!` and optional
/// blanks, up to the next blank or newline. `head` is the file's first [`SHEBANG_MAX`]
/// bytes (fewer at end of file).
fn parse_shebang(head: &[u8]) -> Result<PathBuf, &'static str> {
    let rest = head.strip_prefix(b"#!").ok_or("does not start with #!")?;
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[..end],
        None if head.len() < SHEBANG_MAX => rest,
        None => return Err("no end of line in the first 256 bytes"),
    };
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let line = &line[start..];
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let interpreter = &line[..end];
    if interpreter.is_empty() {
        return Err("names no interpreter");
    }
    let interpreter = PathBuf::from(OsStr::from_bytes(interpreter));
    if !interpreter.is_absolute() {
        // The kernel would resolve it against the CGI's working directory.
        return Err("the interpreter is not an absolute path");
    }
    Ok(interpreter)
}

/// The dependency tree of ELF file `program`, analysed against `/` at its real path, with
/// that path.
fn analyse(program: &Path) -> Result<(PathBuf, DependencyTree), JailInitError> {
    let real = fs::canonicalize(program).map_err(|e| JailInitError::io(program, e))?;
    // lddtree panics on some malformed input (a PT_INTERP of "/", a non-UTF-8 $ORIGIN
    // directory); a bad file must be an error, not a crash of `jail init`.
    let analysed =
        panic::catch_unwind(|| DependencyAnalyzer::new(PathBuf::from("/")).analyze(&real));
    match analysed {
        Ok(Ok(tree)) => Ok((real, tree)),
        Ok(Err(source)) => Err(JailInitError::Elf {
            path: program.to_path_buf(),
            source,
        }),
        Err(_) => Err(JailInitError::ElfReaderPanicked {
            path: program.to_path_buf(),
        }),
    }
}

/// Host paths an ELF program needs: its PT_INTERP (literally, as the kernel opens it) and
/// every library of its dependency tree, at the path the search found it.
fn elf_dependencies(program: &Path) -> Result<Vec<PathBuf>, JailInitError> {
    let (real, tree) = analyse(program)?;
    let mut dependencies = Vec::new();
    if let Some(interpreter) = &tree.interpreter {
        let path = PathBuf::from(interpreter);
        if !path.is_absolute() {
            return Err(JailInitError::RelativeInterpreter {
                program: program.to_path_buf(),
                interpreter: interpreter.clone(),
            });
        }
        dependencies.push(path);
    }
    let mut libraries: Vec<_> = tree.libraries.values().collect();
    // HashMap order would make the copy order, and so the first error, vary between runs.
    libraries.sort_by(|a, b| a.name.cmp(&b.name));
    for library in &libraries {
        if !library.found() {
            return Err(JailInitError::LibraryNotFound {
                program: program.to_path_buf(),
                library: library.name.clone(),
            });
        }
    }
    refuse_ld_library_path_only(
        program,
        &real,
        &tree,
        env::var_os("LD_LIBRARY_PATH").as_deref(),
    )?;
    dependencies.extend(libraries.iter().map(|library| library.path.clone()));
    Ok(dependencies)
}

/// `LibraryFromLdLibraryPath` if a library of `tree` lies in a directory of
/// `ld_library_path` (the value of `LD_LIBRARY_PATH`, which lddtree searched) that is
/// none of the directories the loader in the jail searches: the RPATH/RUNPATH entries,
/// `ld.so.conf` and the trusted directories. CGIs start with exactly the CGI environment,
/// without `LD_LIBRARY_PATH`, so such a library would be in the jail but not be found.
fn refuse_ld_library_path_only(
    program: &Path,
    binary: &Path,
    tree: &DependencyTree,
    ld_library_path: Option<&OsStr>,
) -> Result<(), JailInitError> {
    // lddtree reads the variable with env::var, so it ignores a non-UTF-8 value too.
    let Some(value) = ld_library_path.and_then(OsStr::to_str) else {
        return Ok(());
    };
    let origin = binary.parent().unwrap_or(Path::new("/"));
    // Expanded as lddtree expands them: an empty entry is the current directory, $ORIGIN
    // the analysed binary's directory; compared after canonicalisation, as lddtree stores
    // them.
    let env_dirs: Vec<PathBuf> = value
        .split(':')
        .filter_map(|entry| {
            let dir = if entry.is_empty() {
                env::current_dir().ok()?
            } else if entry.contains("$ORIGIN") || entry.contains("${ORIGIN}") {
                let origin = origin.to_str()?;
                PathBuf::from(
                    entry
                        .replace("${ORIGIN}", origin)
                        .replace("$ORIGIN", origin),
                )
            } else {
                PathBuf::from(entry)
            };
            fs::canonicalize(dir).ok()
        })
        .collect();
    if env_dirs.is_empty() {
        return Ok(());
    }
    let conf_dirs =
        lddtree::ld_so_conf::parse_ld_so_conf("/etc/ld.so.conf", "/").unwrap_or_default();
    let loader_dirs: Vec<PathBuf> = TRUSTED_LIBRARY_DIRS
        .iter()
        .map(|dir| dir.to_string())
        .chain(conf_dirs)
        .chain(tree.rpath.iter().cloned())
        .chain(
            tree.libraries
                .values()
                .flat_map(|lib| lib.rpath.iter().cloned()),
        )
        .filter_map(|dir| fs::canonicalize(dir).ok())
        .collect();
    let mut libraries: Vec<_> = tree.libraries.values().collect();
    libraries.sort_by(|a, b| a.name.cmp(&b.name));
    for library in libraries {
        let Some(dir) = library.path.parent() else {
            continue;
        };
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if env_dirs.contains(&dir) && !loader_dirs.contains(&dir) {
            return Err(JailInitError::LibraryFromLdLibraryPath {
                program: program.to_path_buf(),
                library: library.name.clone(),
                dir,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lddtree::Library;
    use std::collections::HashMap;

    #[test]
    fn shebang_names_the_interpreter() {
        assert_eq!(
            parse_shebang(b"#!/bin/sh\necho hi\n"),
            Ok(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            parse_shebang(b"#! /usr/bin/awk -f\n"),
            Ok(PathBuf::from("/usr/bin/awk"))
        );
        assert_eq!(parse_shebang(b"#!\t/bin/sh"), Ok(PathBuf::from("/bin/sh")));
        assert!(parse_shebang(b"#!sh\n").is_err());
        assert!(parse_shebang(b"#!   \n").is_err());
        let mut long = b"#!/".to_vec();
        long.resize(SHEBANG_MAX, b'a');
        assert!(parse_shebang(&long).is_err());
    }

    fn tree_with(path: &Path) -> DependencyTree {
        let name = "libjailfs-test.so.1".to_string();
        let library = Library {
            name: name.clone(),
            path: path.to_path_buf(),
            realpath: Some(path.to_path_buf()),
            needed: Vec::new(),
            rpath: Vec::new(),
        };
        DependencyTree {
            interpreter: None,
            needed: vec![name.clone()],
            libraries: HashMap::from([(name, library)]),
            rpath: Vec::new(),
        }
    }

    #[test]
    fn library_found_only_through_ld_library_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("libjailfs-test.so.1");
        fs::write(&lib, b"").expect("write");
        let tree = tree_with(&lib);
        let program = Path::new("/usr/bin/prog");
        let err =
            refuse_ld_library_path_only(program, program, &tree, Some(dir.path().as_os_str()))
                .expect_err("must refuse");
        assert!(
            matches!(err, JailInitError::LibraryFromLdLibraryPath { .. }),
            "{err}"
        );
        // Unset, or naming other directories: harmless, ignored.
        refuse_ld_library_path_only(program, program, &tree, None).expect("unset");
        refuse_ld_library_path_only(program, program, &tree, Some(OsStr::new("/nonexistent")))
            .expect("unrelated directory");
    }

    #[test]
    fn ld_library_path_naming_a_trusted_dir_is_ignored() {
        let tree = tree_with(Path::new("/usr/lib/libjailfs-test.so.1"));
        let program = Path::new("/usr/bin/prog");
        refuse_ld_library_path_only(program, program, &tree, Some(OsStr::new("/usr/lib")))
            .expect("a directory the loader searches anyway");
    }
}
