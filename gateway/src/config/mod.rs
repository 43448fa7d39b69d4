//! Flags and `--config FILE` → one validated [`Config`]: every number bounded, every path
//! checked, clear errors.

pub mod cli;
pub mod file;
pub mod settings;
pub mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::Limits;
pub use protocol::{DataDir, IdRange};

use crate::jailfs::CgiUser;
pub use values::{ListenAddr, ScriptPrefix, SocketAccess};

/// Most workers one gateway starts; more would only contend for the same cores.
pub const MAX_WORKERS: usize = 1024;
/// Longest `--timeout` accepted, one day: anything longer is a mistake, not a CGI.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Largest request body passed to a CGI (413 above it).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;
/// CGIs one worker runs at once; with `--workers N` the gateway runs at most N times this.
/// Enough that CGIs waiting on something else (a database, an API: `sleep 1` in the
/// benchmark) are not held back by a small cap: 1,000 of them at once run on two workers.
/// What each costs the front is stated in the README ("Slow CGIs").
pub const DEFAULT_CGIS_PER_WORKER: usize = 512;
/// Address space per CGI process: plenty for a shell and its tools, not for a memory bomb.
pub const DEFAULT_LIMIT_MEMORY: u64 = 1 << 30;
/// Largest file a CGI may write (its only writable place is the /tmp tmpfs anyway).
pub const DEFAULT_LIMIT_FILE_SIZE: u64 = 64 << 20;
pub const DEFAULT_LIMIT_OPEN_FILES: u64 = 256;
/// RLIMIT_NPROC counts the processes of one uid, and every CGI has a uid of its own: this
/// bounds a fork bomb per request (so it cannot starve the others), and all running CGIs
/// together at `--max-concurrent` times it. Plenty for a shell pipeline or git's helpers.
pub const DEFAULT_LIMIT_PROCESSES: u64 = 64;
/// Size of each CGI's private /tmp.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;
pub use protocol::layout::{DEFAULT_CGI_IDS, DEFAULT_FRONT_ID, DEFAULT_WORKER_ID};
/// Fewest ids a worker gets: its CGIs' ids are reused least recently freed first, so a block
/// at least twice `--max-cgis-per-worker` keeps any id unused long after its CGI is gone.
pub const MIN_IDS_PER_WORKER: u32 = 64;

/// How long a request body may take to arrive before the [`MIN_BODY_RATE`] allowance: enough
/// for any client on a working link to send its first bytes; a client dribbling a byte a
/// second (holding a connection and a spool) is cut off after it.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes per second a request body earns beyond `--body-timeout` (Apache's mod_reqtimeout
/// MinRate idea): a large upload on a slow but working link is never cut off, a trickle is.
pub const MIN_BODY_RATE: u64 = 4096;
/// Request body bytes held for CGIs, all requests together.
pub const DEFAULT_SPOOL_BUDGET: u64 = 1 << 30;

/// How long a client may take none of its answer (nginx's `send_timeout` default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop waits for requests in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for a CGI slot before it gets 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub use protocol::layout::CGI_DIR;

/// Folders of the jail (relative to its root) that `--data-dir` may not be, lie in or hold:
/// the program folders every CGI runs from (a Perl module or a script planted there would run
/// in every later request, and a data folder's `noexec` would stop their programs), `/etc`,
/// which every CGI reads (`/etc/hosts`, `/etc/ld.so.preload`), and what each CGI gets afresh
/// (`/dev`, `/proc`, the `/tmp`s).
fn not_data_areas() -> impl Iterator<Item = &'static str> {
    use protocol::layout::{EXEC_AREAS, PROC_DIR, WRITABLE_AREAS};
    EXEC_AREAS
        .iter()
        .chain(WRITABLE_AREAS)
        .copied()
        .chain([PROC_DIR, "etc", "dev"])
}

/// Serializable: on SIGHUP the root supervisor reads the configuration again and sends it to
/// the front, which cannot (it runs unprivileged).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The account the workers run as (their own uid outside their user namespace).
    pub user: CgiUser,
    /// The ids CGIs run as, one uid and gid each while it runs (`--cgi-ids`).
    pub cgi_ids: IdRange,
    /// The one folder of the jail CGIs may write, shared through its group (`--data-dir`,
    /// `--data-group`).
    pub data: Option<DataDir>,
    /// Wall-clock limit per request, from spawn to the last byte of output.
    pub timeout: Duration,
    /// The `jailgate-worker` executable.
    pub worker_exe: PathBuf,
    pub limits: Limits,
    pub max_body_bytes: u64,
    /// Answer clients that are not front servers while their body still arrives
    /// (`--answer-while-uploading`).
    pub answer_while_uploading: bool,
    /// How long a body may take, before the allowance per byte received (`--body-timeout`).
    pub body_timeout: Duration,
    /// How long a client may take none of its answer (`--send-timeout`).
    pub send_timeout: Duration,
    /// Request body bytes held for CGIs, all requests together (`--spool-budget`).
    pub spool_budget: u64,
    /// Cap on one CGI's response body; `None`: unlimited.
    pub max_output_bytes: Option<u64>,
    /// Scripts whose answers may keep the header fields a front server acts on
    /// (`--allow-front-server-headers`); every other script's lose them.
    pub allow_front_server_headers: Vec<ScriptPrefix>,
    pub cgis_per_worker: usize,
    pub tmp_size: u64,
    /// CGIs share the host's network (`--cgi-network`); else each worker's CGIs have none.
    pub cgi_network: bool,
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
    /// Requests that may wait for a CGI slot; beyond, 503. `None`: as many as
    /// `max_concurrent`; `Some(0)`: none wait.
    pub queue: Option<usize>,
    /// How long a request waits for a CGI slot before it gets 503.
    pub queue_timeout: Duration,
    /// The log's format.
    pub log_format: LogFormat,
    /// The access log's format (one line per request, on the log), or off.
    pub access_log: AccessLog,
    /// The scheduling policy of the gateway and all it starts.
    pub scheduling: Scheduling,
}

/// `--scheduling`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// SCHED_BATCH, unless the gateway was started under another policy than the default
    Batch,
    /// The policy the gateway was started with
    Inherit,
}

/// Two workers per CPU: a worker starts one CGI at a time and, under `SCHED_BATCH`, waits for
/// the running CGI's turn to end before it goes on, so one per CPU left starts queued; with two
/// per CPU, hello.sh at c=16 did 3–7 % more req/s on 2 cores (4 alternating rounds against
/// one per CPU), the same at c=1 (`bench/MISSES.md`).
fn default_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).min(MAX_WORKERS)
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
    #[error(
        "{flag} {value} is above this gateway's hard limit of {hard} (`ulimit -H`; systemd's \
         Limit*=), which its workers cannot raise for a CGI: every CGI would fail to start"
    )]
    AboveHardLimit {
        flag: &'static str,
        value: String,
        hard: u64,
    },
    #[error("--jail {0}")]
    Jail(crate::jailfs::AuditError),
    #[error("worker executable {0} not found (it is installed next to the gateway)")]
    WorkerExe(PathBuf),
    #[error("--cgi-ids {first}-{last}: {why}")]
    CgiIds { first: u32, last: u32, why: String },
    #[error("--data-dir {0}: {1}")]
    DataDir(PathBuf, String),
    #[error(
        "--trusted-proxy {network} holds {address}, an address of this host: any local process \
         (another user's, or a CGI with --cgi-network) could connect from it and set \
         X-Forwarded-User. For a front server on this host use a Unix socket and its group: \
         --listen unix:/run/jailgate/http.sock --socket-group www-data"
    )]
    LocalTrustedProxy {
        network: ipnet::IpNet,
        address: std::net::IpAddr,
    },
    #[error(
        "--fastcgi {0}: every FastCGI peer is a trusted front server, and over TCP only \
         --trusted-proxy hosts (never this one) may be. For nginx on this host use a Unix \
         socket: --fastcgi unix:/run/jailgate/fastcgi.sock --socket-group www-data"
    )]
    FastCgiOverTcp(SocketAddr),
}

impl Config {
    /// A configuration with every default, to be adjusted by the caller and then validated.
    pub fn new(jail: PathBuf, user: CgiUser) -> Config {
        let timeout = Duration::from_secs(30);
        Config {
            jail,
            workers: default_workers(),
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080))),
            fastcgi: None,
            socket_access: SocketAccess::default(),
            user,
            cgi_ids: DEFAULT_CGI_IDS,
            data: None,
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
            answer_while_uploading: false,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            spool_budget: DEFAULT_SPOOL_BUDGET,
            max_output_bytes: None,
            allow_front_server_headers: Vec::new(),
            cgis_per_worker: DEFAULT_CGIS_PER_WORKER,
            tmp_size: DEFAULT_TMP_SIZE,
            cgi_network: false,
            allow_insecure_jail: false,
            env: EnvPolicy::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin: None,
            max_concurrent: 0,
            queue: None,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            log_format: LogFormat::Text,
            access_log: AccessLog::Combined,
            scheduling: Scheduling::Batch,
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
        self.check_no_zero()?;
        self.check_within_hard_limits()?;
        // 0: unset, the natural value. Every worker full at once, and as many again waiting.
        if self.max_concurrent == 0 {
            self.max_concurrent = self.workers.saturating_mul(self.cgis_per_worker);
        }
        if self.queue.is_none() {
            self.queue = Some(self.max_concurrent);
        }
        let canonical = crate::jailfs::check_is_jail(&self.jail).map_err(ConfigError::Jail)?;
        if !self.worker_exe.is_file() {
            return Err(ConfigError::WorkerExe(self.worker_exe));
        }
        self.check_cgi_ids()?;
        self.check_data_dir(&canonical)?;
        self.check_front_servers(&local_addresses())?;
        self.jail = canonical;
        Ok(self)
    }
}

impl Config {
    /// Refuses a CGI limit above the hard limit this process has, which its workers inherit and
    /// cannot raise (they hold no CAP_SYS_RESOURCE over the host's limits): each CGI's
    /// `setrlimit` would fail, and every request with it (a 403, with nothing logged).
    fn check_within_hard_limits(&self) -> Result<(), ConfigError> {
        use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
        let limits = &self.limits;
        let asked = [
            // The hard CPU limit a CGI gets is a second past the soft one (`spawn.rs`).
            (
                "--limit-cpu",
                Resource::RLIMIT_CPU,
                limits.cpu_seconds.map(|s| s.saturating_add(1)),
            ),
            (
                "--limit-memory",
                Resource::RLIMIT_AS,
                limits.address_space_bytes,
            ),
            (
                "--limit-file-size",
                Resource::RLIMIT_FSIZE,
                limits.file_size_bytes,
            ),
            (
                "--limit-open-files",
                Resource::RLIMIT_NOFILE,
                limits.open_files,
            ),
            (
                "--limit-processes",
                Resource::RLIMIT_NPROC,
                limits.processes,
            ),
        ];
        for (flag, resource, value) in asked {
            let (Some(value), Ok((_, hard))) = (value, getrlimit(resource)) else {
                continue;
            };
            if hard != RLIM_INFINITY && (value == u64::MAX || value > hard) {
                let value = match value {
                    u64::MAX => "unlimited".to_owned(),
                    value => value.to_string(),
                };
                return Err(ConfigError::AboveHardLimit { flag, value, hard });
            }
        }
        Ok(())
    }

    /// Refuses a 0 where it would fail every request or every CGI (`--max-output 0` cuts off
    /// every answer, `--limit-memory 0` lets no program start, `--body-timeout 0` gives no
    /// body time to arrive): a slip, never a setting, and the configuration file refuses it
    /// too. (`--limit-file-size 0`, no files, and `--max-body 0`, no bodies, are settings.)
    fn check_no_zero(&self) -> Result<(), ConfigError> {
        let settings = [
            ("--max-cgis-per-worker", Some(self.cgis_per_worker as u64)),
            ("--tmp-size", Some(self.tmp_size)),
            ("--body-timeout", Some(self.body_timeout.as_secs())),
            ("--spool-budget", Some(self.spool_budget)),
            ("--max-output", self.max_output_bytes),
            ("--limit-memory", self.limits.address_space_bytes),
            ("--limit-cpu", self.limits.cpu_seconds),
            ("--limit-open-files", self.limits.open_files),
            ("--limit-processes", self.limits.processes),
        ];
        match settings.into_iter().find(|(_, value)| *value == Some(0)) {
            Some((flag, _)) => Err(ConfigError::Zero(flag)),
            None => Ok(()),
        }
    }

    /// The ids one worker gets, a block of `--cgi-ids`.
    pub fn ids_per_worker(&self) -> u32 {
        let cgis = u32::try_from(self.cgis_per_worker).unwrap_or(u32::MAX);
        cgis.saturating_mul(2).max(MIN_IDS_PER_WORKER)
    }

    /// How many workers' blocks `--cgi-ids` holds.
    pub fn id_blocks(&self) -> usize {
        (self.cgi_ids.count / self.ids_per_worker()) as usize
    }

    /// `--data-dir` is a real folder of the jail (no symlink on the way), its group the one
    /// given (`--data-group`), nobody else's to read or write, its group's to write; the group
    /// is none of root's, the workers' or the CGIs' own ids.
    fn check_data_dir(&self, jail: &std::path::Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::MetadataExt;
        let Some(data) = &self.data else {
            return Ok(());
        };
        let refuse = |why: String| ConfigError::DataDir(data.path.clone(), why);
        let relative = data
            .path
            .strip_prefix("/")
            .map_err(|_| refuse("not an absolute path in the jail".into()))?;
        if relative.as_os_str().is_empty()
            || relative
                .components()
                .any(|part| !matches!(part, std::path::Component::Normal(_)))
        {
            return Err(refuse("not a plain path below the jail's root".into()));
        }
        if let Some(area) = not_data_areas()
            .map(std::path::Path::new)
            .find(|area| relative.starts_with(area) || area.starts_with(relative))
        {
            return Err(refuse(format!(
                "it is, lies in or holds /{}, which every CGI runs, reads or gets afresh: \
                 what one request wrote there would reach every later one. Give the CGIs a \
                 folder of their own, such as /data",
                area.display()
            )));
        }
        let mut host = jail.to_path_buf();
        for part in relative.components() {
            host.push(part);
            let meta = std::fs::symlink_metadata(&host).map_err(|e| refuse(e.to_string()))?;
            if !meta.file_type().is_dir() {
                return Err(refuse(format!("{} is not a folder", host.display())));
            }
        }
        let meta = std::fs::symlink_metadata(&host).map_err(|e| refuse(e.to_string()))?;
        if meta.uid() != 0 || meta.gid() != data.gid {
            return Err(refuse(format!(
                "must belong to root and to the group {} (chown 0:{} {})",
                data.gid,
                data.gid,
                host.display()
            )));
        }
        if meta.mode() & 0o007 != 0 || meta.mode() & 0o020 == 0 {
            return Err(refuse(format!(
                "mode {:o}: its group must write it, others nothing (chmod 2770 {})",
                meta.mode() & 0o7777,
                host.display()
            )));
        }
        if data.gid == 0 || data.gid == self.user.gid || self.cgi_ids.contains(data.gid) {
            return Err(refuse(
                "--data-group must not be root's, the workers' (--user) or one of --cgi-ids".into(),
            ));
        }
        Ok(())
    }

    /// The front server is trusted by what no other local process can fake: over TCP, an
    /// address of another host (`local` holds this host's: any local process, a CGI with
    /// `--cgi-network` included, can connect from one of them); over a Unix socket, the peer's
    /// group, checked per connection. FastCGI over TCP needs such a host named.
    pub fn check_front_servers(&self, local: &[std::net::IpAddr]) -> Result<(), ConfigError> {
        let loopback = [
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        for network in &self.env.trusted_proxies {
            // Any of 127.0.0.0/8 is this host's, not only the addresses its interfaces list.
            let in_loopback_net =
                matches!(network, ipnet::IpNet::V4(v4) if v4.addr().is_loopback());
            let local_in_it = loopback.iter().chain(local).find(|address| {
                in_loopback_net && address.is_loopback() || network.contains(*address)
            });
            if let Some(address) = local_in_it {
                return Err(ConfigError::LocalTrustedProxy {
                    network: *network,
                    address: *address,
                });
            }
        }
        if let Some(ListenAddr::Tcp(address)) = &self.fastcgi {
            if self.env.trusted_proxies.is_empty() {
                return Err(ConfigError::FastCgiOverTcp(*address));
            }
        }
        Ok(())
    }

    /// `--cgi-ids` must hold a block for every worker of two pools (a reload runs both), and
    /// no id of root's or the workers' own account.
    fn check_cgi_ids(&self) -> Result<(), ConfigError> {
        let IdRange { first, count } = self.cgi_ids;
        let last = first.saturating_add(count.saturating_sub(1));
        let refuse = |why: String| ConfigError::CgiIds { first, last, why };
        if self.cgi_ids.last().is_none() || self.cgi_ids.contains(0) {
            return Err(refuse(
                "not a range of ids above 0 and below 4294967295".into(),
            ));
        }
        if self.cgi_ids.contains(self.user.uid) || self.cgi_ids.contains(self.user.gid) {
            return Err(refuse(format!(
                "holds uid {} or gid {}, the workers' own account (--user)",
                self.user.uid, self.user.gid
            )));
        }
        let needed = self.workers.saturating_mul(2);
        if self.id_blocks() < needed {
            return Err(refuse(format!(
                "{count} ids are too few: {} workers, in two pools during a reload, need {needed} \
                 blocks of {} (twice --max-cgis-per-worker)",
                self.workers,
                self.ids_per_worker()
            )));
        }
        Ok(())
    }
}

/// Every address of this host's interfaces; none if they cannot be read (loopback is always
/// taken as local by [`Config::check_front_servers`]).
fn local_addresses() -> Vec<std::net::IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(std::net::IpAddr::from(v4.ip()))
            } else {
                address
                    .as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::from(v6.ip()))
            }
        })
        .collect()
}

/// `jailgate-worker` is installed beside `gateway` (cargo puts both in the same target folder).
fn worker_exe_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gateway"));
    exe.with_file_name("jailgate-worker")
}

/// What, beyond the request itself, decides a CGI's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvPolicy {
    /// Export `Authorization` as HTTP_AUTHORIZATION (`--pass-authorization`).
    pub pass_authorization: bool,
    /// TCP peers (other hosts) whose X-Forwarded-* are believed and who may speak FastCGI
    /// (`--trusted-proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The group of Unix-socket peers trusted the same way, besides root (`--trusted-group`,
    /// else `--socket-group`).
    pub trusted_group: Option<u32>,
    /// Fixed variables for every CGI (`--env`); never override a meta-variable.
    pub fixed: Vec<(String, Vec<u8>)>,
    /// Variables the front server may set beside the meta-variables (`--pass-env`).
    pub pass_env: Vec<String>,
}

impl EnvPolicy {
    /// Whether a TCP peer at `address` is a `--trusted-proxy`.
    pub fn is_trusted_proxy(&self, address: std::net::IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|network| network.contains(&address))
    }
}

/// Names `--env` may not set: the meta-variables and their extensions (RFC 3875 §4.1).
pub fn is_meta_variable(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "DOCUMENT_ROOT",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "REMOTE_PORT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "REQUEST_SCHEME",
        "REQUEST_URI",
        "SCRIPT_FILENAME",
        "SCRIPT_NAME",
        "SERVER_ADDR",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    ];
    NAMES.contains(&name) || name.starts_with("HTTP_")
}

/// The account a `--user` or `--gateway-user` value names (`flag`); without one, `default`, an
/// id of Jailgate's own (uid and gid the same number) that needs no account: refused if the
/// host's `/etc/passwd` or `/etc/group` holds it, since an account there may run services as
/// that id, and the fix is to give the flag. `whose` names the processes for the message.
pub fn account_or_default(
    spec: Option<&str>,
    default: u32,
    flag: &str,
    whose: &str,
) -> Result<CgiUser, String> {
    if let Some(spec) = spec {
        return crate::jailfs::parse_user(spec).map_err(|e| format!("{flag} {spec}: {e}"));
    }
    if let Some(holder) = crate::jailfs::host_account_holding(|id| id == default) {
        return Err(format!(
            "{flag} not given, and {} has `{}` with id {default}, the {whose} default uid and \
             gid: that id must be no account's or group's; give {flag} explicitly (an account \
             for the {whose} processes alone, or an id nothing uses)",
            holder.file, holder.name
        ));
    }
    crate::jailfs::parse_user(&default.to_string()).map_err(|e| format!("{flag}: {e}"))
}

/// The front's own account (`--gateway-user`): the unprivileged process that parses every
/// request runs as it. Never root, never the workers' account, whose processes could otherwise
/// signal or trace the front, none of `--cgi-ids`, for the same reason with CGIs, and not of
/// `--data-group`, whose folder every CGI writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl FrontUser {
    /// Resolves `spec` (`NAME|UID[:GID]`, as `--user`; [`DEFAULT_FRONT_ID`] when not given)
    /// and checks it against the workers' account and the CGIs' ids of `config`.
    pub fn parse(spec: Option<&str>, config: &Config) -> Result<FrontUser, String> {
        let account = account_or_default(spec, DEFAULT_FRONT_ID, "--gateway-user", "front's")?;
        let front = FrontUser {
            name: account.name,
            uid: account.uid,
            gid: account.gid,
        };
        front.check_apart(spec, config)?;
        Ok(front)
    }

    /// The account kept apart from the workers' account, the CGIs' ids and the data group of
    /// `config`: at the start, and for every configuration a SIGHUP reads again (the front's
    /// account stays the one it started with).
    pub fn check_apart(&self, spec: Option<&str>, config: &Config) -> Result<(), String> {
        let account = self;
        let shown = spec.map_or_else(|| account.uid.to_string(), str::to_owned);
        if account.uid == config.user.uid {
            return Err(format!(
                "--gateway-user {shown}: must not be the workers' account (--user, uid {})",
                config.user.uid
            ));
        }
        if config.cgi_ids.contains(account.uid) || config.cgi_ids.contains(account.gid) {
            return Err(format!(
                "--gateway-user {shown}: uid {} or gid {} is one of --cgi-ids, which CGIs run as",
                account.uid, account.gid
            ));
        }
        if config
            .data
            .as_ref()
            .is_some_and(|data| data.gid == account.gid)
        {
            return Err(format!(
                "--gateway-user {shown}: gid {} is --data-group, whose folder every CGI writes",
                account.gid
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trusted: &[&str], fastcgi: Option<&str>) -> Config {
        let user = crate::jailfs::parse_user("65534:65534").expect("a numeric account");
        let mut config = Config::new(PathBuf::from("/srv/jail"), user);
        config.env.trusted_proxies = trusted
            .iter()
            .map(|net| net.parse().expect("a network"))
            .collect();
        config.fastcgi = fastcgi.map(|address| address.parse().expect("an address"));
        config
    }

    /// What `--data-dir` says of `path` in a jail that holds nothing (the overlap with the
    /// jail's own folders is judged before any file is looked at).
    fn data_dir_verdict(path: &str) -> String {
        let jail = tempfile::tempdir().expect("tempdir");
        let mut config = config(&[], None);
        config.data = Some(DataDir {
            path: PathBuf::from(path),
            gid: 33,
        });
        match config.check_data_dir(jail.path()) {
            Ok(()) => "accepted".into(),
            Err(error) => error.to_string(),
        }
    }

    /// Each setting a 0 would make fail every request or CGI is refused at 0, and only there.
    #[test]
    fn a_zero_that_would_fail_every_request_is_refused() {
        type Set = fn(&mut Config, u64);
        let settings: [(&str, Set); 9] = [
            ("--max-cgis-per-worker", |c, v| {
                c.cgis_per_worker = v as usize
            }),
            ("--tmp-size", |c, v| c.tmp_size = v),
            ("--body-timeout", |c, v| {
                c.body_timeout = Duration::from_secs(v)
            }),
            ("--spool-budget", |c, v| c.spool_budget = v),
            ("--max-output", |c, v| c.max_output_bytes = Some(v)),
            ("--limit-memory", |c, v| {
                c.limits.address_space_bytes = Some(v)
            }),
            ("--limit-cpu", |c, v| c.limits.cpu_seconds = Some(v)),
            ("--limit-open-files", |c, v| c.limits.open_files = Some(v)),
            ("--limit-processes", |c, v| c.limits.processes = Some(v)),
        ];
        for (flag, set) in settings {
            let mut zero = config(&[], None);
            set(&mut zero, 0);
            let refused = zero.check_no_zero().map_err(|error| error.to_string());
            assert_eq!(refused, Err(format!("{flag} must be at least 1")));
            let mut one = config(&[], None);
            set(&mut one, 1);
            assert!(one.check_no_zero().is_ok(), "{flag} 1 refused");
        }
        // No files, or no bodies, are settings.
        let mut config = config(&[], None);
        config.limits.file_size_bytes = Some(0);
        config.max_body_bytes = 0;
        assert!(config.check_no_zero().is_ok());
    }

    /// A CGI limit above the hard limit the workers inherit is refused at the start, naming the
    /// flag: every CGI's setrlimit failed, and every request got 403 with nothing logged.
    #[test]
    fn a_limit_above_the_hard_one_is_refused() {
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let mut config = config(&[], None);
        config.limits.open_files = Some(hard);
        assert!(config.check_within_hard_limits().is_ok());
        config.limits.open_files = Some(hard + 1);
        let refused = config.check_within_hard_limits().expect_err("refused");
        assert!(
            refused
                .to_string()
                .starts_with(&format!("--limit-open-files {} is above", hard + 1)),
            "{refused}"
        );
    }

    /// A data folder that is, lies in or holds a folder every CGI runs, reads or gets afresh
    /// would let one request plant code or settings for every later one (`/etc/hosts`, a Perl
    /// module under `/usr/share`), or stop every CGI (a `noexec` `/cgi-bin`).
    #[test]
    fn the_data_folder_is_a_folder_of_its_own() {
        for (path, area) in [
            ("/etc", "/etc"),
            ("/etc/app", "/etc"),
            ("/cgi-bin", "/cgi-bin"),
            ("/cgi-bin/data", "/cgi-bin"),
            ("/usr", "/usr"),
            ("/usr/share/perl5", "/usr"),
            ("/bin", "/bin"),
            ("/lib64/x", "/lib64"),
            ("/var", "/var/tmp"),
            ("/var/tmp", "/var/tmp"),
            ("/tmp/shared", "/tmp"),
            ("/dev", "/dev"),
            ("/proc", "/proc"),
        ] {
            let verdict = data_dir_verdict(path);
            assert!(
                verdict.contains(&format!("lies in or holds {area},")),
                "{path}: {verdict}"
            );
        }
        // Beyond the overlap, what is checked next: the folder itself (here, missing).
        for path in ["/data", "/var/lib/app", "/srv/x", "/usrdata", "/etcetera"] {
            let verdict = data_dir_verdict(path);
            assert!(
                verdict.contains("No such file or directory"),
                "{path}: {verdict}"
            );
        }
    }

    #[test]
    fn the_default_accounts_are_ids_of_their_own() {
        // No account or group of this host has them (else the start refuses, as below).
        let workers = account_or_default(None, DEFAULT_WORKER_ID, "--user", "workers'")
            .expect("the workers' default");
        assert_eq!(
            (workers.uid, workers.gid),
            (DEFAULT_WORKER_ID, DEFAULT_WORKER_ID)
        );
        let mut config = config(&[], None);
        config.user = workers;
        let front = FrontUser::parse(None, &config).expect("the front's default");
        assert_eq!((front.uid, front.gid), (DEFAULT_FRONT_ID, DEFAULT_FRONT_ID));
        // A name given still works.
        let given = account_or_default(Some("nobody"), DEFAULT_WORKER_ID, "--user", "workers'")
            .expect("a name");
        assert_eq!(given.uid, 65534);
    }

    #[test]
    fn a_default_id_an_account_holds_is_refused_with_the_fix() {
        // Every /etc/passwd has root with uid 0: a default of 0 stands for one an account has.
        let error = account_or_default(None, 0, "--user", "workers'").expect_err("root's id");
        assert!(
            error.contains("/etc/passwd has `root` with id 0, the workers' default uid")
                && error.contains("give --user explicitly"),
            "{error}"
        );
    }

    #[test]
    fn the_front_shares_no_id_with_root_the_workers_or_the_cgis() {
        let config = config(&[], None);
        for (spec, why) in [
            ("0", "refusing to run"),
            ("nobody", "must not be the workers' account"),
            ("65534:1", "must not be the workers' account"),
            ("1879048192", "one of --cgi-ids"),
            ("4000:1879113727", "one of --cgi-ids"),
        ] {
            let error = FrontUser::parse(Some(spec), &config).expect_err(spec);
            assert!(
                error.starts_with(&format!("--gateway-user {spec}: ")) && error.contains(why),
                "{spec}: {error}"
            );
        }
        let front = FrontUser::parse(Some("4000"), &config).expect("an id of its own");
        assert_eq!((front.uid, front.gid), (4000, 4000));
        let mut config = config;
        config.data = Some(DataDir {
            path: PathBuf::from("/data"),
            gid: 4000,
        });
        let error = FrontUser::parse(Some("4000"), &config).expect_err("the data group");
        assert!(error.contains("is --data-group"), "{error}");
    }

    #[test]
    fn a_trusted_proxy_never_holds_an_address_of_this_host() {
        let host: Vec<std::net::IpAddr> = vec!["192.0.2.2".parse().expect("an address")];
        for local in [
            "127.0.0.1/32",
            "127.0.0.0/8",
            "127.9.9.9/32",
            "0.0.0.0/0",
            "::1/128",
            "::/0",
            "192.0.2.0/24",
            "192.0.2.2/32",
        ] {
            let refused = config(&["10.0.0.0/8", local], None).check_front_servers(&host);
            assert!(
                matches!(refused, Err(ConfigError::LocalTrustedProxy { .. })),
                "{local}: {refused:?}"
            );
        }
        for other_host in ["10.0.0.0/8", "192.0.3.0/24", "2001:db8::/32"] {
            config(&[other_host], None)
                .check_front_servers(&host)
                .unwrap_or_else(|e| panic!("{other_host}: {e}"));
        }
    }

    #[test]
    fn fastcgi_over_tcp_needs_a_front_server_on_another_host() {
        let refused = config(&[], Some("127.0.0.1:9000")).check_front_servers(&[]);
        assert!(matches!(refused, Err(ConfigError::FastCgiOverTcp(_))));
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("--fastcgi unix:"), "{message}");
        for allowed in [
            config(&["10.0.0.0/8"], Some("0.0.0.0:9000")),
            config(&[], Some("unix:/run/jailgate/fastcgi.sock")),
        ] {
            allowed.check_front_servers(&[]).expect("allowed");
        }
    }
}
