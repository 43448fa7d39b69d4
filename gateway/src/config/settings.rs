//! Every serving setting, declared once: its flag (name, help, default, syntax), its key in the
//! `--config` file (the flag's name) with the file's value syntax, and how the file fills in
//! what the command line does not say. [`super::cli`] turns the result into a [`super::Config`].

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use std::path::Path;

use super::file::{
    account, address, at_least_1, boolean, choice, convert, count, group, key_name, limit, list,
    mode, parse_toml, path, read_text, seconds, size, string, whole, FileError, LineError,
};
use super::values::{
    parse_env, parse_group, parse_id_range, parse_limit, parse_mode, parse_network, parse_pass_env,
    parse_script_prefix, parse_size, Limit, ListenAddr, ScriptPrefix,
};
use super::{
    AccessLog, LogFormat, Scheduling, DEFAULT_BODY_TIMEOUT, DEFAULT_CGIS_PER_WORKER,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_LIMIT_OPEN_FILES, DEFAULT_LIMIT_PROCESSES,
    DEFAULT_QUEUE_TIMEOUT, DEFAULT_SEND_TIMEOUT, MAX_TIMEOUT_SECS, MAX_WORKERS,
};
use protocol::IdRange;

/// Declares each setting once: the clap field, the file's raw TOML shape (each value with its
/// span, unknown keys refused), the file's typed settings with their conversion, and the merge
/// of the two.
macro_rules! settings {
    ($( $(#[$attr:meta])* $field:ident: $flag_ty:ty, file $file_ty:ty = $convert:expr; )*) => {
        /// The serving flags. Each has a key of the same name in the `--config` file
        /// (`--max-body` is `max-body`); a flag given on the command line wins over the file.
        #[derive(Args, Debug)]
        pub struct ServeArgs {
            /// Read settings from this TOML file: its keys are these flags' names
            /// (`max-body = "64M"`, `env = ["A=1"]`); flags given on the command line override it
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $( $(#[$attr])* pub $field: $flag_ty, )*
        }

        /// The file's top level as written: each known key's value and where it is.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Raw {
            $( $field: Option<toml::Spanned<toml::Value>>, )*
        }

        /// What a configuration file sets; `None` where it says nothing. Each field is named
        /// like its key (`max_body` is `max-body`).
        #[derive(Debug, Clone, Default)]
        pub struct FileSettings {
            $( pub $field: Option<$file_ty>, )*
        }

        impl FileSettings {
            /// Every key a file may have, as written in the file.
            pub fn keys() -> Vec<String> {
                vec![$( key_name(stringify!($field)), )*]
            }

            /// The keys this file does not set.
            pub fn unset_keys(&self) -> Vec<String> {
                let mut unset = Vec::new();
                $( if self.$field.is_none() { unset.push(key_name(stringify!($field))); } )*
                unset
            }

            fn from_raw(raw: Raw, text: &str) -> Result<FileSettings, LineError> {
                Ok(FileSettings {
                    $( $field: convert(stringify!($field), raw.$field, text, $convert)?, )*
                })
            }
        }

        impl ServeArgs {
            /// Fills in from `file` every setting not given on the command line (`matches`
            /// tells a given flag from a default; a repeated flag's list replaces the file's).
            pub fn under_file(mut self, file: FileSettings, matches: &ArgMatches) -> ServeArgs {
                let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
                $(
                    if let Some(value) = file.$field.filter(|_| !given(stringify!($field))) {
                        self.$field = value.into();
                    }
                )*
                self
            }
        }
    };
}

settings! {
    /// The jail folder (build one with `gateway jail init DIR`); `/cgi-bin/` URLs run its
    /// /cgi-bin. Required, here or in the --config file
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>, file PathBuf = path;
    /// Worker processes to prespawn [default: twice the number of CPUs]
    #[arg(long, value_name = "N")]
    workers: Option<usize>, file usize = |v| count(v, 1, MAX_WORKERS);
    /// Where to accept HTTP: an address, or a Unix socket [default: 127.0.0.1:8080, or the
    /// sockets systemd passes (LISTEN_FDS)]
    #[arg(long, value_name = "HOST:PORT|unix:/PATH", overrides_with = "listen")]
    listen: Option<ListenAddr>, file ListenAddr = address;
    /// Also accept FastCGI (nginx's fastcgi_pass, stock fastcgi_params) here
    #[arg(long, value_name = "HOST:PORT|unix:/PATH")]
    fastcgi: Option<ListenAddr>, file ListenAddr = address;
    /// Permissions of the Unix socket files created for --listen/--fastcgi (octal)
    #[arg(long, value_name = "MODE", default_value = "0660", value_parser = parse_mode)]
    socket_mode: u32, file u32 = mode;
    /// Group of the Unix socket files (the front server's, e.g. www-data) [default: root's]
    #[arg(long, value_name = "GROUP|GID", value_parser = parse_group)]
    socket_group: Option<u32>, file u32 = group;
    /// The front server's group (nginx's, e.g. www-data): a peer on a Unix socket running with
    /// it (SO_PEERCRED), or as root, may set X-Forwarded-* and speak FastCGI; any other peer is
    /// a plain client, and is refused FastCGI [default: --socket-group]
    #[arg(long, value_name = "GROUP|GID", value_parser = parse_group)]
    trusted_group: Option<u32>, file u32 = group;
    /// The unprivileged account the workers run as (never root, never another service's); each
    /// CGI runs as an id of its own from --cgi-ids [default: uid and gid 1879048191, no
    /// account needed; refused if /etc/passwd or /etc/group holds it]
    #[arg(long, value_name = "NAME|UID[:GID]")]
    user: Option<String>, file String = account;
    /// The uids and gids CGIs run as, one of each for each running CGI (the same number),
    /// from a range no account, process or file of the host uses [default: 1879048192-1880096767]
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_id_range)]
    cgi_ids: Option<IdRange>, file IdRange = |v| string(v, "a range like \"1879048192-1880096767\"").and_then(parse_id_range);
    /// A folder of the jail CGIs may write (mounted read-write and noexec; everything else is
    /// read-only), shared through --data-group: root's, that group's, mode 2770
    #[arg(long, value_name = "JAILPATH", requires = "data_group")]
    data_dir: Option<PathBuf>, file PathBuf = path;
    /// The group every CGI gets, to share --data-dir
    #[arg(long, value_name = "GROUP|GID", value_parser = parse_group, requires = "data_dir")]
    data_group: Option<u32>, file u32 = group;
    /// Wall-clock limit per request in seconds; the CGI's process group is killed after it (504)
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    timeout: u64, file u64 = |v| seconds(v, 1, MAX_TIMEOUT_SECS);
    /// CPU seconds per CGI process (RLIMIT_CPU) [default: the --timeout]
    #[arg(long, value_name = "SECS")]
    limit_cpu: Option<u64>, file u64 = |v| seconds(v, 1, u64::MAX);
    /// Address space per CGI process (RLIMIT_AS), e.g. 512M, or `unlimited`
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_limit)]
    limit_memory: Limit, file Limit = limit;
    /// Largest file a CGI may write (RLIMIT_FSIZE), or `unlimited`
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_limit)]
    limit_file_size: Limit, file Limit = limit;
    /// Open files per CGI process (RLIMIT_NOFILE)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT_OPEN_FILES)]
    limit_open_files: u64, file u64 = |v| whole(v, 1, u64::MAX);
    /// Processes of one CGI, its children included (RLIMIT_NPROC of its own uid)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT_PROCESSES)]
    limit_processes: u64, file u64 = |v| whole(v, 1, u64::MAX);
    /// Largest response body of one CGI; beyond it the response is cut off and the CGI killed
    #[arg(long, value_name = "BYTES", default_value = "unlimited", value_parser = parse_limit)]
    max_output: Limit, file Limit = limit;
    /// Let the response headers a front server acts on (X-Accel-Redirect, X-Sendfile, ...)
    /// through for the scripts at this path, on whole segments (/cgi-bin/download, or a folder
    /// of them); from any other script they are dropped; repeatable
    #[arg(long, value_name = "PATH", value_parser = parse_script_prefix)]
    allow_front_server_headers: Vec<ScriptPrefix>, file Vec<ScriptPrefix> = |v| list(v, "script paths like \"/cgi-bin/download\"", parse_script_prefix);
    /// CGIs one worker runs at once; more requests wait, then get 503
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CGIS_PER_WORKER)]
    max_cgis_per_worker: usize, file usize = |v| count(v, 1, usize::MAX);
    /// Size of each worker's private /tmp (a noexec tmpfs)
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    tmp_size: u64, file u64 = |v| size(v).and_then(at_least_1);
    /// Let CGIs use the host's network. Without it each worker's CGIs get an empty network
    /// namespace: no network at all, not even loopback, so no CGI can reach a listener
    #[arg(long)]
    cgi_network: bool, file bool = boolean;
    /// Serve even if the jail audit finds problems (they are logged as errors)
    #[arg(long)]
    allow_insecure_jail: bool, file bool = boolean;
    /// The account the HTTP-facing process runs as after start-up (never root, the workers' or
    /// another service's) [default: uid and gid 1879048190, no account needed; refused if
    /// /etc/passwd or /etc/group holds it]
    #[arg(long, value_name = "NAME|UID[:GID]")]
    gateway_user: Option<String>, file String = account;
    /// Largest request body passed to a CGI (413 above it); chunked bodies are spooled up to it
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    max_body: u64, file u64 = size;
    /// Answer clients that are not a front server as the CGI writes, while their request body
    /// still arrives (an echo streams instead of waiting for the whole body). Only where
    /// clients face the gateway directly: nginx stops sending a body once it sees an answer,
    /// so an nginx it does not know for a front server (over TCP on this host) would wedge
    #[arg(long)]
    answer_while_uploading: bool, file bool = boolean;
    /// How long a request body may take to arrive, plus a second for every 4 KiB received (a
    /// client slower than that is cut off with 408 and its connection closed)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BODY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    body_timeout: u64, file u64 = |v| seconds(v, 1, MAX_TIMEOUT_SECS);
    /// How long a client may take none of its answer (its connection's send buffer full)
    /// before its connection is closed, as nginx's send_timeout
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SEND_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    send_timeout: u64, file u64 = |v| seconds(v, 1, MAX_TIMEOUT_SECS);
    /// Request body bytes the front holds in memory for all requests together (chunked bodies
    /// until they end, what a slow CGI has not read yet); beyond it, 503
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    spool_budget: u64, file u64 = |v| size(v).and_then(at_least_1);
    /// Pass the Authorization header to CGIs as HTTP_AUTHORIZATION (off: credentials stay here)
    #[arg(long)]
    pass_authorization: bool, file bool = boolean;
    /// A front server on another host (address or CIDR): over TCP, its X-Forwarded-For/-Proto/
    /// -Host/-User are believed and only it may speak FastCGI. Never an address of this host,
    /// which any local process could use (trust a Unix socket's peer with --trusted-group)
    #[arg(long, value_name = "CIDR", value_parser = parse_network)]
    trusted_proxy: Vec<ipnet::IpNet>, file Vec<ipnet::IpNet> = |v| list(v, "addresses or CIDR networks", parse_network);
    /// A fixed variable for every CGI (like Apache's SetEnv); never a meta-variable; repeatable
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, Vec<u8>)>, file Vec<(String, Vec<u8>)> = |v| list(v, "NAME=VALUE strings", parse_env);
    /// A variable the front server may set for CGIs beside the CGI/1.1 ones (nginx's
    /// `fastcgi_param NAME value;`); never a meta-variable; repeatable
    #[arg(long, value_name = "NAME", value_parser = parse_pass_env)]
    pass_env: Vec<String>, file Vec<String> = |v| list(v, "variable names", parse_pass_env);
    /// On SIGTERM/SIGINT, how long requests in flight may still take; a second signal stops at once
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs())]
    drain_timeout: u64, file u64 = |v| seconds(v, 0, u64::MAX);
    /// Serve /metrics (Prometheus) and /healthz here
    #[arg(long, value_name = "HOST:PORT|unix:/PATH")]
    admin: Option<ListenAddr>, file ListenAddr = address;
    /// CGIs running at once, all workers together [default: workers × max-cgis-per-worker]
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>, file usize = |v| count(v, 0, usize::MAX);
    /// Requests waiting for a CGI slot at most; more get 503 [default: max-concurrent]
    #[arg(long, value_name = "N")]
    queue: Option<usize>, file usize = |v| count(v, 0, usize::MAX);
    /// How long a request waits for a CGI slot before it gets 503 with Retry-After
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_QUEUE_TIMEOUT.as_secs())]
    queue_timeout: u64, file u64 = |v| seconds(v, 0, u64::MAX);
    /// Log format on stderr (RUST_LOG filters it, e.g. RUST_LOG=gateway=debug)
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat, file LogFormat = choice;
    /// One log line per request: combined (Apache's, plus id, duration, exit status), json, off
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "combined")]
    access_log: AccessLog, file AccessLog = choice;
    /// How the gateway, its workers and its CGIs are scheduled. Under SCHED_BATCH a process
    /// woken waits for the running one instead of preempting it: half the context switches
    /// per request at one connection. With fewer workers than cores, inherit can serve more
    /// at high concurrency
    #[arg(long, value_name = "POLICY", value_enum, default_value = "batch")]
    scheduling: Scheduling, file Scheduling = choice;
}

/// Reads and checks the configuration file at `path`. A relative `jail` is taken relative to
/// the file's folder, so the file means the same whatever the working directory.
pub fn read(path: &Path) -> Result<FileSettings, FileError> {
    let text = read_text(path)?;
    let mut settings = parse(&text).map_err(|error| FileError::Content {
        path: path.to_owned(),
        error,
    })?;
    if let Some(jail) = settings.jail.as_mut().filter(|jail| jail.is_relative()) {
        *jail = path.parent().unwrap_or(Path::new(".")).join(&*jail);
    }
    Ok(settings)
}

/// Parses the text of a configuration file.
pub fn parse(text: &str) -> Result<FileSettings, LineError> {
    FileSettings::from_raw(parse_toml(text)?, text)
}
