//! The front ⇄ worker messages: one closed enum per direction. The front speaks [`ToWorker`],
//! the worker [`FromWorker`].

use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change; the gateway refuses a worker that reports another.
pub const PROTOCOL_VERSION: u32 = 5;

/// Identifies one CGI run across both processes. Chosen by the gateway, unique per worker.
pub type SpawnId = u64;

/// Resource limits applied to one CGI with `setrlimit(2)` before it is exec'd.
/// `None` leaves the worker's own limit in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_CPU, seconds of CPU time (SIGXCPU, then SIGKILL).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_AS, bytes of address space.
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_FSIZE, largest file the CGI may write (in /tmp).
    pub file_size_bytes: Option<u64>,
    /// RLIMIT_NOFILE, open descriptors.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC: counts every process of the CGI user, workers included.
    pub processes: Option<u64>,
}

/// Gateway → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Start a CGI. Travels with the CGI's stdin (read end) if [`SpawnRequest::stdin`] says
    /// so, then its stdout and stderr (write ends), in that order.
    Spawn(SpawnRequest),
    /// Kill the process group of a running CGI: SIGTERM, then SIGKILL after a grace period.
    Kill { id: SpawnId },
    /// Kill every CGI and exit.
    Shutdown,
    /// Are you there? Answered with `Pong` at once: a worker that does not answer (stopped,
    /// starved of CPU) is replaced.
    Ping { seq: u64 },
}

/// Everything the worker needs to start one CGI; the descriptors travel beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub id: SpawnId,
    /// The request's path below the CGI folder, decoded, one entry per segment: the script is
    /// the shortest prefix that names a regular file, the rest is PATH_INFO (RFC 3875 §4.1.5,
    /// §4.1.13). Only the worker can look: the jail's files are seen right only from inside.
    /// The worker adds SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO and PATH_TRANSLATED to `env`.
    pub path: Vec<Vec<u8>>,
    /// The complete environment, `NAME=value` each: nothing else is inherited.
    /// Bytes, not strings: header values need not be UTF-8.
    pub env: Vec<Vec<u8>>,
    pub limits: Limits,
    pub stdin: Stdin,
}

/// Where a CGI's stdin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdin {
    /// The first descriptor that travels with the request: a pipe the front feeds the body
    /// into, or the body spooled whole.
    Given,
    /// The request has no body: the CGI reads the worker's `/dev/null`, and only stdout and
    /// stderr travel. A pipe made, passed and closed for nothing would cost the front five
    /// system calls per request.
    Null,
}

impl Stdin {
    /// How many descriptors travel with a spawn request whose stdin is `self`.
    pub fn descriptors(self) -> usize {
        match self {
            Stdin::Given => 3,
            Stdin::Null => 2,
        }
    }
}

/// Worker → gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// Sent once, after the worker has entered the jail and dropped its privileges.
    Ready { version: u32, pid: u32 },
    /// The CGI runs; `pid` is its pid inside the worker's PID namespace (for logs), and the
    /// first `script_segments` entries of the request's path named the script.
    Spawned {
        id: SpawnId,
        pid: u32,
        script_segments: u32,
    },
    /// The CGI could not be started; nothing is left running.
    SpawnFailed { id: SpawnId, error: SpawnError },
    /// The CGI's main process ended (anything left in its process group has been killed).
    Exited { id: SpawnId, status: ExitStatus },
    /// The answer to `Ping { seq }`.
    Pong { seq: u64 },
    /// `Spawned` and `Exited` in one: the CGI had run to its end when its start was reported.
    SpawnedAndExited {
        id: SpawnId,
        pid: u32,
        script_segments: u32,
        status: ExitStatus,
    },
}

/// Why a CGI could not be started, classified so the gateway can pick the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpawnError {
    #[error("no such script")]
    NotFound,
    #[error("script is not executable")]
    NotExecutable,
    #[error("script is outside the CGI folder or not a regular file")]
    Forbidden,
    #[error("out of resources: {}", describe(*errno))]
    NoResources { errno: i32 },
    /// exec failed for another reason, e.g. a `#!` interpreter missing from the jail.
    #[error("exec failed: {} (is its #! interpreter in the jail?)", describe(*errno))]
    ExecFailed { errno: i32 },
    /// The spawn request itself was unusable (wrong descriptor count, bad environment).
    #[error("malformed spawn request: {}", printable(.0))]
    BadRequest(String),
}

fn describe(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

/// A worker's own words, as the gateway logs them: the worker is untrusted, so its text is
/// escaped (no line breaks or terminal controls to forge log lines with) and cut short.
fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut shown: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        shown.push_str("...");
    }
    shown
}

/// How a CGI's main process ended, as `waitpid(2)` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's text cannot start a log line of its own or send terminal controls.
    #[test]
    fn a_workers_error_text_is_logged_escaped_and_short() {
        let forged = SpawnError::BadRequest("x\n2026-12-06T00:00:00Z INFO FORGED\x1b[31m".into());
        let shown = forged.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("x\\n2026"), "{shown}");
        let long = SpawnError::BadRequest("a".repeat(10_000)).to_string();
        assert!(long.len() < 300 && long.ends_with("..."), "{}", long.len());
    }
}
