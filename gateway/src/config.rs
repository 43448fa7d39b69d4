//! Flags and `--config FILE` → one validated [`Config`]: every number bounded, every path
//! checked, clear errors.

pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::Limits;

use crate::cgi_env::{is_meta_variable, EnvPolicy};
use crate::jailfs::CgiUser;
use crate::listen::{ListenAddr, SocketAccess};

/// Most workers one gateway starts; more would only contend for the same cores.
pub const MAX_WORKERS: usize = 1024;
/// Longest `--timeout` accepted, one day: anything longer is a mistake, not a CGI.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest request body passed to a CGI (413 above it).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;
/// CGIs one worker runs at once; with `--workers N` the gateway runs at most N times this.
pub const DEFAULT_CGIS_PER_WORKER: usize = 128;
/// Address space per CGI process: plenty for a shell and its tools, not for a memory bomb.
pub const DEFAULT_LIMIT_MEMORY: u64 = 1 << 30;
/// Largest file a CGI may write (its only writable place is the /tmp tmpfs anyway).
pub const DEFAULT_LIMIT_FILE_SIZE: u64 = 64 << 20;
pub const DEFAULT_LIMIT_OPEN_FILES: u64 = 256;
/// RLIMIT_NPROC counts every process of the CGI user (workers included), so this bounds a
/// fork bomb across the whole gateway, not per CGI.
/// The default leaves room for every CGI slot of a few workers (128 each) and their children.
pub const DEFAULT_LIMIT_PROCESSES: u64 = 4096;
/// Size of each worker's private /tmp.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;

/// How long a stop waits for requests in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for a CGI slot before it gets 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The folder inside the jail that `/cgi-bin/` URLs map to.
pub const CGI_DIR: &str = "/cgi-bin";

/// Serializable: on SIGHUP the root supervisor reads the configuration again and sends it to
/// the front, which cannot (it runs unprivileged).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// The jail's root on the host (canonical once validated).
    pub jail: PathBuf,
    pub workers: usize,
    /// Where HTTP is accepted.
    pub listen: ListenAddr,
    /// Where FastCGI is accepted, if anywhere.
    pub fastcgi: Option<ListenAddr>,
    /// Mode and group of the Unix socket files we create.
    pub socket_access: SocketAccess,
    pub user: CgiUser,
    /// Wall-clock limit per request, from spawn to the last byte of output.
    pub timeout: Duration,
    /// The `jailgate-worker` executable.
    pub worker_exe: PathBuf,
    pub limits: Limits,
    pub max_body_bytes: u64,
    /// Cap on one CGI's response body; `None`: unlimited.
    pub max_output_bytes: Option<u64>,
    pub cgis_per_worker: usize,
    pub tmp_size: u64,
    pub no_network: bool,
    /// Serve even if the jail audit finds problems.
    pub allow_insecure_jail: bool,
    /// What besides the request goes into a CGI's environment.
    pub env: EnvPolicy,
    /// How long a stop waits for requests in flight before it closes them.
    pub drain_timeout: Duration,
    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub admin: Option<ListenAddr>,
    /// CGIs running at once, all workers together.
    pub max_concurrent: usize,
    /// Requests that may wait for a CGI slot; beyond, 503.
    pub queue: usize,
    /// How long a request waits for a CGI slot before it gets 503.
    pub queue_timeout: Duration,
    /// The log's format.
    pub log_format: LogFormat,
    /// The access log's format (one line per request, on the log), or off.
    pub access_log: AccessLog,
}

/// `--log-format`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `--access-log`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// Apache's combined log format, with the request id, duration and exit status appended.
    Combined,
    Json,
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--workers must be between 1 and {MAX_WORKERS}, not {0}")]
    Workers(usize),
    #[error("--timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {0}")]
    Timeout(u64),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("jail {0}: {1}")]
    Jail(PathBuf, String),
    #[error("worker executable {0} not found (it is installed next to the gateway)")]
    WorkerExe(PathBuf),
}

impl Config {
    /// A configuration with every default, to be adjusted by the caller and then validated.
    pub fn new(jail: PathBuf, user: CgiUser) -> Config {
        let timeout = Duration::from_secs(30);
        Config {
            jail,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080))),
            fastcgi: None,
            socket_access: SocketAccess::default(),
            user,
            timeout,
            worker_exe: worker_exe_path(),
            limits: Limits {
                cpu_seconds: Some(timeout.as_secs()),
                address_space_bytes: Some(DEFAULT_LIMIT_MEMORY),
                file_size_bytes: Some(DEFAULT_LIMIT_FILE_SIZE),
                open_files: Some(DEFAULT_LIMIT_OPEN_FILES),
                processes: Some(DEFAULT_LIMIT_PROCESSES),
            },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_output_bytes: None,
            cgis_per_worker: DEFAULT_CGIS_PER_WORKER,
            tmp_size: DEFAULT_TMP_SIZE,
            no_network: false,
            allow_insecure_jail: false,
            env: EnvPolicy::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin: None,
            max_concurrent: 0,
            queue: 0,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            log_format: LogFormat::Text,
            access_log: AccessLog::Combined,
        }
    }

    /// Checks every bound and the jail folder; the jail path becomes canonical.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return Err(ConfigError::Workers(self.workers));
        }
        let timeout = self.timeout.as_secs();
        if timeout == 0 || timeout > MAX_TIMEOUT_SECS {
            return Err(ConfigError::Timeout(timeout));
        }
        if self.cgis_per_worker == 0 {
            return Err(ConfigError::Zero("--max-cgis-per-worker"));
        }
        if self.tmp_size == 0 {
            return Err(ConfigError::Zero("--tmp-size"));
        }
        // 0: unset, the natural value. Every worker full at once, and as many again waiting.
        if self.max_concurrent == 0 {
            self.max_concurrent = self.workers.saturating_mul(self.cgis_per_worker);
        }
        if self.queue == 0 {
            self.queue = self.max_concurrent;
        }
        let limits = [
            (self.limits.cpu_seconds, "--limit-cpu"),
            (self.limits.open_files, "--limit-open-files"),
            (self.limits.processes, "--limit-processes"),
        ];
        for (limit, flag) in limits {
            if limit == Some(0) {
                return Err(ConfigError::Zero(flag));
            }
        }
        let jail_error = |why: String| ConfigError::Jail(self.jail.clone(), why);
        let canonical = std::fs::canonicalize(&self.jail).map_err(|e| jail_error(e.to_string()))?;
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
        if !self.worker_exe.is_file() {
            return Err(ConfigError::WorkerExe(self.worker_exe));
        }
        self.jail = canonical;
        Ok(self)
    }
}

/// `jailgate-worker` is installed beside `gateway` (cargo puts both in the same target folder).
fn worker_exe_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gateway"));
    exe.with_file_name("jailgate-worker")
}

/// A byte count with an optional binary suffix: `65536`, `64K`, `64M`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 10),
        Some((at, 'm' | 'M')) => (&text[..at], 20),
        Some((at, 'g' | 'G')) => (&text[..at], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 65536, 64K, 64M or 1G"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A size limit from the command line; `None` is `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

/// A limit: a size, or `unlimited` (which leaves the worker's own limit, i.e. none).
pub fn parse_limit(text: &str) -> Result<Limit, String> {
    if text == "unlimited" {
        return Ok(Limit(None));
    }
    parse_size(text).map(|size| Limit(Some(size)))
}

/// `NAME=VALUE` for `--env`: a portable variable name that is not a meta-variable.
pub fn parse_env(text: &str) -> Result<(String, Vec<u8>), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let portable = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !portable {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits, _)"
        ));
    }
    if is_meta_variable(name) {
        return Err(format!(
            "`{name}` is a CGI meta-variable; --env cannot set it"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of {name} contains NUL"));
    }
    Ok((name.to_owned(), value.as_bytes().to_vec()))
}

/// Permission bits in octal, as chmod takes them.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode like 0660"))
}

/// A group name or number.
pub fn parse_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(format!("no group `{text}` on this machine")),
    }
}

/// A network in CIDR notation, or one address.
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or a CIDR network"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_limit("unlimited"), Ok(Limit(None)));
        assert_eq!(parse_limit("2K"), Ok(Limit(Some(2048))));
        for bad in [
            "",
            "M",
            "1T",
            "-1",
            "1.5G",
            "99999999999999999999",
            "17179869184G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
