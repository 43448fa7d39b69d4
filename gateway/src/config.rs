//! Flags → one validated [`Config`]: every number bounded, every path checked, clear errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::Limits;

use crate::jailfs::CgiUser;

/// Most workers one gateway starts; more would only contend for the same cores.
pub const MAX_WORKERS: usize = 1024;
/// Longest `--timeout` accepted, one day: anything longer is a mistake, not a CGI.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest request body passed to a CGI (413 above it).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;
/// CGIs one worker runs at once; with `--workers N` the gateway runs at most N times this.
pub const DEFAULT_CGIS_PER_WORKER: usize = 128;

/// The folder inside the jail that `/cgi-bin/` URLs map to.
pub const CGI_DIR: &str = "/cgi-bin";

#[derive(Debug, Clone)]
pub struct Config {
    /// The jail's root on the host, canonical.
    pub jail: PathBuf,
    pub workers: usize,
    pub listen: SocketAddr,
    pub user: CgiUser,
    /// Wall-clock limit per request, from spawn to the last byte of output.
    pub timeout: Duration,
    /// The `jailgate-worker` executable.
    pub worker_exe: PathBuf,
    pub limits: Limits,
    pub max_body_bytes: u64,
    pub cgis_per_worker: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--workers must be between 1 and {MAX_WORKERS}, not {0}")]
    Workers(usize),
    #[error("--timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {0}")]
    Timeout(u64),
    #[error("jail {0}: {1}")]
    Jail(PathBuf, String),
    #[error("worker executable {0} not found (it is installed next to the gateway)")]
    WorkerExe(PathBuf),
}

/// The limits every CGI gets (flags for them come with the confinement work).
pub fn default_limits(timeout: Duration) -> Limits {
    Limits {
        // CPU time can never usefully exceed the wall-clock limit.
        cpu_seconds: Some(timeout.as_secs().max(1)),
        address_space_bytes: Some(1 << 30),
        file_size_bytes: Some(64 << 20),
        open_files: Some(256),
        processes: None,
    }
}

impl Config {
    pub fn new(
        jail: PathBuf,
        workers: usize,
        listen: SocketAddr,
        user: CgiUser,
        timeout_secs: u64,
    ) -> Result<Config, ConfigError> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err(ConfigError::Workers(workers));
        }
        if timeout_secs == 0 || timeout_secs > MAX_TIMEOUT_SECS {
            return Err(ConfigError::Timeout(timeout_secs));
        }
        let jail_error = |why: String| ConfigError::Jail(jail.clone(), why);
        let canonical = std::fs::canonicalize(&jail).map_err(|e| jail_error(e.to_string()))?;
        if !canonical.is_dir() {
            return Err(jail_error("not a directory".into()));
        }
        if canonical == std::path::Path::new("/") {
            return Err(jail_error("the host's root is not a jail".into()));
        }
        if !canonical.join(CGI_DIR.trim_start_matches('/')).is_dir() {
            return Err(jail_error(format!(
                "has no {CGI_DIR} folder (build one with `gateway jail init`)"
            )));
        }
        let worker_exe = worker_exe_path();
        if !worker_exe.is_file() {
            return Err(ConfigError::WorkerExe(worker_exe));
        }
        let timeout = Duration::from_secs(timeout_secs);
        Ok(Config {
            jail: canonical,
            workers,
            listen,
            user,
            timeout,
            worker_exe,
            limits: default_limits(timeout),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            cgis_per_worker: DEFAULT_CGIS_PER_WORKER,
        })
    }
}

/// `jailgate-worker` is installed beside `gateway` (cargo puts both in the same target folder).
fn worker_exe_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gateway"));
    exe.with_file_name("jailgate-worker")
}
