//! What can go wrong building a jail, one variant per cause, and the one refusal every copy
//! into the jail makes (setuid and setgid files).

use std::io;
use std::path::{Path, PathBuf};

use super::limits::{MAX_ADD_DEPTH, MAX_INTERPRETER_DEPTH, MAX_LOCALTIME_BYTES, SEARCH_PATH};

/// Why `init` failed; each message names the path or program concerned.
#[derive(Debug, thiserror::Error)]
pub enum JailInitError {
    #[error("jail init must run as root: it creates root-owned files and device nodes")]
    NotRoot,
    #[error("no place for a jail: {why}")]
    NotAJail { path: PathBuf, why: String },
    #[error("refusing to run CGIs as root (CGI user has uid {uid}, gid {gid})")]
    RootUser { uid: u32, gid: u32 },
    #[error("invalid CGI user {user:?}: {reason}")]
    InvalidUser { user: String, reason: &'static str },
    #[error("invalid program name {name:?}: {reason}")]
    InvalidProgramName { name: String, reason: &'static str },
    #[error("program {name:?} not found (searched {SEARCH_PATH})")]
    ProgramNotFound { name: String },
    #[error("{path}: not executable")]
    NotExecutable { path: PathBuf },
    #[error("{path}: not a regular file, directory or symlink; it cannot go into a jail")]
    UnsupportedFileType { path: PathBuf },
    #[error("{path}: has the setuid or setgid bit; a jail must never hold one")]
    SetuidRefused { path: PathBuf },
    #[error("{path}: executable but neither an ELF file nor a #! script")]
    UnknownExecutableFormat { path: PathBuf },
    #[error("{path}: bad #! line: {reason}")]
    BadShebang { path: PathBuf, reason: &'static str },
    #[error("{script}: #! interpreter {interpreter} not found")]
    InterpreterNotFound {
        script: PathBuf,
        interpreter: PathBuf,
    },
    #[error(
        "{path}: #! interpreters nested more than {} deep",
        MAX_INTERPRETER_DEPTH
    )]
    InterpreterTooDeep { path: PathBuf },
    #[error("{path}: cannot read ELF dependencies: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: lddtree::Error,
    },
    #[error("{path}: the ELF dependency reader crashed on this file")]
    ElfReaderPanicked { path: PathBuf },
    #[error("{program}: PT_INTERP {interpreter:?} is not an absolute path")]
    RelativeInterpreter {
        program: PathBuf,
        interpreter: String,
    },
    #[error("{program}: shared library {library} not found")]
    LibraryNotFound { program: PathBuf, library: String },
    #[error(
        "{program}: library {library} was found only through LD_LIBRARY_PATH ({dir}), \
         where the loader in the jail will not look; unset LD_LIBRARY_PATH"
    )]
    LibraryFromLdLibraryPath {
        program: PathBuf,
        library: String,
        dir: PathBuf,
    },
    #[error("{path}: not an absolute path")]
    RelativePath { path: PathBuf },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    #[error("{path}: {reason}")]
    Conflict { path: PathBuf, reason: &'static str },
    #[error("{path}: larger than {MAX_LOCALTIME_BYTES} bytes, not a time zone file")]
    LocaltimeTooLarge { path: PathBuf },
    #[error(
        "{path} not found: the busybox profile needs a statically linked busybox \
         (apt-get install busybox-static)"
    )]
    BusyboxMissing { path: PathBuf },
    #[error(
        "{path} is not a statically linked ELF executable: the busybox profile puts no \
         loader and no shared library in the jail (apt-get install busybox-static)"
    )]
    BusyboxNotStatic { path: PathBuf },
    #[error("--add {0}")]
    InvalidAdd(#[from] AddSpecError),
    #[error("{path}: --add tree deeper than {} levels", MAX_ADD_DEPTH)]
    AddTooDeep { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `SetuidRefused` if `mode` has the setuid or setgid bit: a setuid file in the jail is the
/// classic way back to root from a chroot.
pub(super) fn refuse_setuid(path: &Path, mode: u32) -> Result<(), JailInitError> {
    if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return Err(JailInitError::SetuidRefused {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Why an `--add` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec:?}: {reason}")]
pub struct AddSpecError {
    pub spec: String,
    pub reason: &'static str,
}
