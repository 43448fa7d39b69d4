//! `gateway`: flags (over the `--config` file) → validated config → run. Everything else
//! lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::time::Duration;

use gateway::cgi_env::EnvPolicy;
use gateway::config::file::FileSettings;
use gateway::config::{
    self, parse_group, parse_limit, parse_mode, parse_network, parse_size, AccessLog, Config,
    Limit, LogFormat,
};
use gateway::jailfs;
use gateway::listen::{self, Bound, ListenAddr, SocketAccess};
use protocol::Limits;

/// Jailgate: runs CGI programs confined in a chroot jail, as an unprivileged user, behind HTTP.
#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// The serving flags. Each has a key of the same name in the `--config` file (`--max-body` is
/// `max-body`); a flag given on the command line wins over the file.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Read settings from this TOML file: its keys are these flags' names (`max-body = "64M"`,
    /// `env = ["A=1"]`); flags given on the command line override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The jail folder (build one with `gateway jail init DIR`); `/cgi-bin/` URLs run its
    /// /cgi-bin. Required, here or in the --config file
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>,
    /// Worker processes to prespawn [default: number of CPUs]
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Where to accept HTTP: an address, or a Unix socket [default: 127.0.0.1:8080, or the
    /// sockets systemd passes (LISTEN_FDS)]
    #[arg(long, value_name = "HOST:PORT|unix:/PATH", overrides_with = "listen")]
    listen: Option<ListenAddr>,
    /// Also accept FastCGI (nginx's fastcgi_pass, stock fastcgi_params) here
    #[arg(long, value_name = "HOST:PORT|unix:/PATH")]
    fastcgi: Option<ListenAddr>,
    /// Permissions of the Unix socket files created for --listen/--fastcgi (octal)
    #[arg(long, value_name = "MODE", default_value = "0660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group of the Unix socket files (the front server's, e.g. www-data) [default: root's]
    #[arg(long, value_name = "GROUP|GID", value_parser = parse_group)]
    socket_group: Option<u32>,
    /// The unprivileged user CGIs run as (never root)
    #[arg(long, value_name = "NAME|UID[:GID]", default_value = "nobody")]
    user: String,
    /// Wall-clock limit per request in seconds; the CGI's process group is killed after it (504)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// CPU seconds per CGI process (RLIMIT_CPU) [default: the --timeout]
    #[arg(long, value_name = "SECS")]
    limit_cpu: Option<u64>,
    /// Address space per CGI process (RLIMIT_AS), e.g. 512M, or `unlimited`
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_limit)]
    limit_memory: Limit,
    /// Largest file a CGI may write (RLIMIT_FSIZE), or `unlimited`
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_limit)]
    limit_file_size: Limit,
    /// Open files per CGI process (RLIMIT_NOFILE)
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_LIMIT_OPEN_FILES)]
    limit_open_files: u64,
    /// Processes of the CGI user, all workers and CGIs together (RLIMIT_NPROC)
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_LIMIT_PROCESSES)]
    limit_processes: u64,
    /// Largest response body of one CGI; beyond it the response is cut off and the CGI killed
    #[arg(long, value_name = "BYTES", default_value = "unlimited", value_parser = parse_limit)]
    max_output: Limit,
    /// CGIs one worker runs at once; more requests wait, then get 503
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_CGIS_PER_WORKER)]
    max_cgis_per_worker: usize,
    /// Size of each worker's private /tmp (a noexec tmpfs)
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    tmp_size: u64,
    /// Give CGIs an empty network namespace: no network at all, not even loopback
    #[arg(long)]
    no_network: bool,
    /// Serve even if the jail audit finds problems (they are logged as errors)
    #[arg(long)]
    allow_insecure_jail: bool,
    /// The account the HTTP-facing process runs as after start-up (never root, never the CGI user)
    #[arg(long, value_name = "NAME|UID[:GID]", default_value = "daemon")]
    gateway_user: String,
    /// Largest request body passed to a CGI (413 above it); chunked bodies are spooled up to it
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_size)]
    max_body: u64,
    /// Pass the Authorization header to CGIs as HTTP_AUTHORIZATION (off: credentials stay here)
    #[arg(long)]
    pass_authorization: bool,
    /// A proxy (address or CIDR) whose X-Forwarded-For/-Proto/-Host are believed; repeatable
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_network)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// A fixed variable for every CGI (like Apache's SetEnv); never a meta-variable; repeatable
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = config::parse_env)]
    fixed_env: Vec<(String, Vec<u8>)>,
    /// On SIGTERM/SIGINT, how long requests in flight may still take; a second signal stops at once
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_DRAIN_TIMEOUT.as_secs())]
    drain_timeout: u64,
    /// Serve /metrics (Prometheus) and /healthz here
    #[arg(long, value_name = "HOST:PORT|unix:/PATH")]
    admin: Option<ListenAddr>,
    /// CGIs running at once, all workers together [default: workers × max-cgis-per-worker]
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Requests waiting for a CGI slot at most; more get 503 [default: max-concurrent]
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// How long a request waits for a CGI slot before it gets 503 with Retry-After
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_QUEUE_TIMEOUT.as_secs())]
    queue_timeout: u64,
    /// Log format on stderr (RUST_LOG filters it, e.g. RUST_LOG=gateway=debug)
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// One log line per request: combined (Apache's, plus id, duration, exit status), json, off
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "combined")]
    access_log: AccessLog,
}

#[derive(Subcommand)]
enum Command {
    /// Build or inspect a jail tree
    Jail {
        #[command(subcommand)]
        op: JailOp,
    },
    /// Build a demo jail with sample CGIs in a temporary folder and serve it
    Demo {
        /// Address to accept HTTP on
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The account the HTTP-facing process runs as
        #[arg(long, value_name = "NAME|UID[:GID]", default_value = "daemon")]
        gateway_user: String,
    },
}

#[derive(Subcommand)]
enum JailOp {
    /// Build a jail in DIR: programs with their loader and libraries, devices, /etc, /tmp, /cgi-bin
    Init {
        dir: PathBuf,
        /// A program to install (a name on PATH or an absolute path); repeatable.
        /// Default: the classic shell-CGI set
        #[arg(long = "with", value_name = "PROG")]
        programs: Vec<String>,
        /// The CGI user to name in the jail's /etc/passwd
        #[arg(long, value_name = "NAME|UID[:GID]", default_value = "nobody")]
        user: String,
        /// The base set: classic (the shell-CGI programs from the host), busybox (one static
        /// busybox, no shared libraries) or minimal (sh only); --with adds to it
        #[arg(long, value_name = "NAME", default_value = "classic")]
        profile: jailfs::Profile,
        /// Copy a host file or tree to JAIL (default: the same path) in the jail; repeatable
        #[arg(long = "add", value_name = "HOST[:JAIL]")]
        adds: Vec<jailfs::AddSpec>,
    },
    /// Audit the jail in DIR: exit 0 if clean, 1 with one line per finding, 2 if it cannot
    Check {
        dir: PathBuf,
        /// The CGI user the jail is for
        #[arg(long, value_name = "NAME|UID[:GID]", default_value = "nobody")]
        user: String,
    },
}

/// Exit code for a usage error: a wrong flag, a missing jail, not being root.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let (cli, matches) = match parse_command_line(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => return usage_error(first_line(&error.to_string())),
    };
    match cli.command {
        Some(command) => start(LogFormat::Text, || run_command(command)),
        // The file is read before logging starts: it may choose the log format. So its errors
        // are printed plainly, as flag errors are.
        None => match with_config_file(cli.serve, &matches) {
            Ok(args) => start(args.log_format, || serve(args)),
            Err(error) => {
                eprintln!("gateway: {error}");
                ExitCode::from(USAGE)
            }
        },
    }
}

/// The command line, parsed; the matches tell a flag given from a default.
fn parse_command_line<I, T>(args: I) -> Result<(Cli, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Logging on, root checked, then `run`.
fn start(log_format: LogFormat, run: impl FnOnce() -> ExitCode) -> ExitCode {
    init_tracing(log_format);
    if !nix::unistd::geteuid().is_root() {
        return usage_error(
            "must run as root: it builds the jail and drops the workers' privileges itself",
        );
    }
    run()
}

fn run_command(command: Command) -> ExitCode {
    match command {
        Command::Jail {
            op:
                JailOp::Init {
                    dir,
                    programs,
                    user,
                    profile,
                    adds,
                },
        } => jail_init(dir, programs, &user, profile, adds),
        Command::Jail {
            op: JailOp::Check { dir, user },
        } => jail_check(dir, &user),
        Command::Demo {
            listen,
            gateway_user,
        } => demo(listen, &gateway_user),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let listen_given = args.listen.is_some();
    let gateway_user = args.gateway_user.clone();
    let config = match load_config(args) {
        Ok(config) => config,
        Err(error) => return usage_error(&error),
    };
    if let Err(error) = audit_before_serving(&config) {
        eprintln!("gateway: {error}");
        return ExitCode::FAILURE;
    }
    let front_user = match front_user(&gateway_user, &config.user) {
        Ok(user) => user,
        Err(message) => return usage_error(&message),
    };
    let (listener, fastcgi) = match listeners(&config, listen_given) {
        Ok(listeners) => listeners,
        Err(error) => {
            eprintln!("gateway: {error}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP: the same command line and --config file read again, checked as at the start.
    let reload = Box::new(|| -> Result<Config, String> {
        let (cli, matches) = parse_command_line(std::env::args_os())
            .map_err(|error| first_line(&error.to_string()).to_owned())?;
        let config = load_config(with_config_file(cli.serve, &matches)?)?;
        audit_before_serving(&config)?;
        Ok(config)
    });
    gateway::privsep::run(config, listener, fastcgi, &front_user, reload)
}

/// The serving flags over the `--config` file's settings: a flag given on the command line
/// wins (a repeatable flag's list replaces the file's), then the file, then the flag's default.
fn with_config_file(mut args: ServeArgs, matches: &ArgMatches) -> Result<ServeArgs, String> {
    let Some(path) = &args.config else {
        return Ok(args);
    };
    let file = config::file::read(path).map_err(|error| error.to_string())?;
    // Taken apart field by field, so a key added to the file and not merged here is an unused
    // variable: a compile error with -D warnings.
    let FileSettings {
        jail,
        workers,
        listen,
        fastcgi,
        socket_mode,
        socket_group,
        user,
        timeout,
        limit_cpu,
        limit_memory,
        limit_file_size,
        limit_open_files,
        limit_processes,
        max_output,
        max_cgis_per_worker,
        tmp_size,
        no_network,
        allow_insecure_jail,
        gateway_user,
        max_body,
        pass_authorization,
        trusted_proxy,
        env,
        drain_timeout,
        admin,
        max_concurrent,
        queue,
        queue_timeout,
        log_format,
        access_log,
    } = file;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    // `field <- setting`: the file's setting goes into the flag's field unless the flag was given.
    macro_rules! under_flags {
        ($($field:ident <- $setting:ident),* $(,)?) => {$(
            if let Some(value) = $setting.filter(|_| !given(stringify!($field))) {
                args.$field = value.into();
            }
        )*};
    }
    under_flags!(
        jail <- jail,
        workers <- workers,
        listen <- listen,
        fastcgi <- fastcgi,
        socket_mode <- socket_mode,
        socket_group <- socket_group,
        user <- user,
        timeout <- timeout,
        limit_cpu <- limit_cpu,
        limit_memory <- limit_memory,
        limit_file_size <- limit_file_size,
        limit_open_files <- limit_open_files,
        limit_processes <- limit_processes,
        max_output <- max_output,
        max_cgis_per_worker <- max_cgis_per_worker,
        tmp_size <- tmp_size,
        no_network <- no_network,
        allow_insecure_jail <- allow_insecure_jail,
        gateway_user <- gateway_user,
        max_body <- max_body,
        pass_authorization <- pass_authorization,
        trusted_proxies <- trusted_proxy,
        fixed_env <- env,
        drain_timeout <- drain_timeout,
        admin <- admin,
        max_concurrent <- max_concurrent,
        queue <- queue,
        queue_timeout <- queue_timeout,
        log_format <- log_format,
        access_log <- access_log,
    );
    Ok(args)
}

/// The serving flags → a validated configuration, or what is wrong, in one line.
fn load_config(args: ServeArgs) -> Result<Config, String> {
    let jail = args
        .jail
        .ok_or("--jail DIR is required (or `jail` in the --config file)")?;
    let user = jailfs::parse_user(&args.user).map_err(|e| format!("--user {}: {e}", args.user))?;
    let mut config = Config::new(jail, user);
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.fastcgi = args.fastcgi;
    config.socket_access = SocketAccess {
        mode: args.socket_mode,
        group: args.socket_group,
    };
    config.timeout = Duration::from_secs(args.timeout);
    config.limits = Limits {
        cpu_seconds: Some(args.limit_cpu.unwrap_or(args.timeout)),
        address_space_bytes: args.limit_memory.0,
        file_size_bytes: args.limit_file_size.0,
        open_files: Some(args.limit_open_files),
        processes: Some(args.limit_processes),
    };
    config.max_output_bytes = args.max_output.0;
    config.cgis_per_worker = args.max_cgis_per_worker;
    config.tmp_size = args.tmp_size;
    config.no_network = args.no_network;
    config.allow_insecure_jail = args.allow_insecure_jail;
    config.max_body_bytes = args.max_body;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    config.admin = args.admin;
    config.max_concurrent = args.max_concurrent.unwrap_or(0);
    config.queue = args.queue.unwrap_or(0);
    config.queue_timeout = Duration::from_secs(args.queue_timeout);
    config.log_format = args.log_format;
    config.access_log = args.access_log;
    config.env = EnvPolicy {
        pass_authorization: args.pass_authorization,
        trusted_proxies: args.trusted_proxies,
        fixed: args.fixed_env,
    };
    config.validate().map_err(|error| error.to_string())
}

/// The HTTP and FastCGI listeners: the sockets systemd passed (socket activation: the one
/// named `fastcgi` in LISTEN_FDNAMES serves FastCGI, the other HTTP), else bound here.
/// An explicit --listen wins over an inherited socket.
fn listeners(config: &Config, listen_given: bool) -> Result<(Bound, Option<Bound>), String> {
    let mut http = None;
    let mut fastcgi = None;
    for (name, fd) in listen::take_inherited()? {
        let slot = if name == "fastcgi" {
            &mut fastcgi
        } else {
            &mut http
        };
        if slot.is_some() {
            return Err(format!(
                "systemd passed more than one {} socket",
                if name == "fastcgi" { "fastcgi" } else { "HTTP" }
            ));
        }
        *slot = Some(Bound::inherit(fd)?);
    }
    let http = match http {
        Some(inherited) if !listen_given => inherited,
        _ => Bound::bind(&config.listen, config.socket_access)?,
    };
    let fastcgi = match (fastcgi, &config.fastcgi) {
        (_, Some(address)) => Some(Bound::bind(address, config.socket_access)?),
        (inherited, None) => inherited,
    };
    Ok((http, fastcgi))
}

/// The same audit as `gateway jail check`, at every start and reload: a jail with findings
/// is refused (fail closed) unless --allow-insecure-jail, which starts anyway and says so
/// loudly. The findings go to stderr, one per line.
fn audit_before_serving(config: &Config) -> Result<(), String> {
    let options = jailfs::AuditOptions::new(config.jail.clone(), config.user.clone());
    let findings = jailfs::audit(&options)
        .map_err(|error| format!("cannot audit the jail {}: {error}", config.jail.display()))?;
    if findings.is_empty() {
        return Ok(());
    }
    for finding in &findings {
        eprintln!(
            "gateway: insecure jail {}: {finding}",
            config.jail.display()
        );
    }
    if !config.allow_insecure_jail {
        return Err(format!(
            "refusing to serve from an insecure jail ({} findings above); fix them \
             (`gateway jail check {}` lists them) or pass --allow-insecure-jail",
            findings.len(),
            config.jail.display()
        ));
    }
    tracing::error!(
        findings = findings.len(),
        "SERVING FROM AN INSECURE JAIL (--allow-insecure-jail): the findings above weaken \
         the confinement of every CGI"
    );
    Ok(())
}

fn demo(listen: SocketAddr, gateway_user: &str) -> ExitCode {
    let cgi_user = jailfs::parse_user("nobody");
    let front_user = cgi_user
        .map_err(|e| e.to_string())
        .and_then(|cgi_user| front_user(gateway_user, &cgi_user));
    let front_user = match front_user {
        Ok(user) => user,
        Err(message) => return usage_error(&message),
    };
    match gateway::demo::run(listen, &front_user) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP front's account: never root (parse_user refuses it) and never the CGI user, whose
/// processes (the CGIs) could otherwise signal or trace it.
fn front_user(spec: &str, cgi_user: &jailfs::CgiUser) -> Result<jailfs::CgiUser, String> {
    let user = jailfs::parse_user(spec).map_err(|e| format!("--gateway-user {spec}: {e}"))?;
    if user.uid == cgi_user.uid {
        return Err(format!(
            "--gateway-user {spec}: must not be the CGI user ({})",
            cgi_user.name
        ));
    }
    Ok(user)
}

fn jail_check(dir: PathBuf, user: &str) -> ExitCode {
    let user = match jailfs::parse_user(user) {
        Ok(user) => user,
        Err(error) => return usage_error(&format!("--user {user}: {error}")),
    };
    match jailfs::audit(&jailfs::AuditOptions::new(dir.clone(), user)) {
        Ok(findings) if findings.is_empty() => {
            println!("jail {}: no findings", dir.display());
            ExitCode::SUCCESS
        }
        Ok(findings) => {
            for finding in &findings {
                println!("{finding}");
            }
            eprintln!(
                "gateway: jail check {}: {} findings",
                dir.display(),
                findings.len()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("gateway: jail check {}: {error}", dir.display());
            ExitCode::from(USAGE)
        }
    }
}

fn jail_init(
    dir: PathBuf,
    programs: Vec<String>,
    user: &str,
    profile: jailfs::Profile,
    adds: Vec<jailfs::AddSpec>,
) -> ExitCode {
    let user = match jailfs::parse_user(user) {
        Ok(user) => user,
        Err(error) => return usage_error(&format!("--user {user}: {error}")),
    };
    // --with adds to the profile's set (classic here until --profile is wired).
    let mut options = jailfs::InitOptions::new(dir.clone(), user);
    options.programs = programs;
    options.profile = profile;
    options.adds = adds;
    match jailfs::init(&options) {
        Ok(report) => {
            println!(
                "jail ready in {}: {} programs, {} files; put CGIs in {}",
                dir.display(),
                report.programs.len(),
                report.files_copied,
                dir.join("cgi-bin").display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gateway: jail init {}: {error}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("gateway: {message} (see gateway --help)");
    ExitCode::from(USAGE)
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or(text);
    line.strip_prefix("error: ").unwrap_or(line)
}

/// Logs on stderr, filtered by RUST_LOG (default `info`): text, or one JSON object per line.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Logged text includes URLs and CGI stderr: never emit their escape codes to a terminal.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jailgate.toml");

    /// The serving flags of `gateway ARGS...` over the `--config` file, if any.
    fn serve_args(args: &[&str]) -> Result<ServeArgs, String> {
        let (cli, matches) =
            parse_command_line(std::iter::once("gateway").chain(args.iter().copied()))
                .map_err(|error| error.to_string())?;
        with_config_file(cli.serve, &matches)
    }

    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("jailgate.toml");
        std::fs::write(&path, text).expect("write the config file");
        let path = path.to_str().expect("UTF-8 temp path").to_owned();
        (dir, path)
    }

    #[test]
    fn every_serving_flag_has_a_key_and_every_key_a_flag() {
        let keys = FileSettings::keys();
        let flags: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["config", "help", "version"].contains(long))
            .map(str::to_owned)
            .collect();
        for flag in &flags {
            assert!(
                keys.contains(flag),
                "--{flag} has no key in the config file"
            );
        }
        for key in &keys {
            assert!(flags.contains(key), "the config file's `{key}` is no flag");
        }
    }

    /// examples/jailgate.toml sets each key it sets to the flag's default.
    #[test]
    fn the_example_holds_the_defaults() {
        let mut from_file = serve_args(&["--config", EXAMPLE]).expect("the example");
        let defaults = serve_args(&["--jail", "/srv/jailgate"]).expect("no flags");
        from_file.config = None;
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    /// Every key set (the example with its commented-out settings on) reaches its flag's
    /// field; clap's debug assertions check each flag id the merge looks up.
    #[test]
    fn every_key_reaches_its_flag() {
        let every: Vec<&str> = include_str!("../../examples/jailgate.toml")
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase()) => setting,
                _ => line,
            })
            .collect();
        let (_dir, path) = config_file(&every.join("\n"));
        let args = serve_args(&["--config", &path]).expect("every key");
        assert_eq!(args.workers, Some(8));
        assert!(args.socket_group.is_some());
        assert_eq!(args.limit_cpu, Some(30));
        assert_eq!(args.max_concurrent, Some(1024));
        assert_eq!(args.trusted_proxies.len(), 2);
        assert_eq!(args.fixed_env.len(), 2);
        assert!(args.admin.is_some() && args.fastcgi.is_some() && args.listen.is_some());
    }

    #[test]
    fn the_file_sets_what_the_flags_do_not() {
        let (_dir, path) = config_file(
            "jail = \"/srv/jail\"\ntimeout = 7\nenv = [\"A=1\"]\nno-network = true\n\
             max-body = \"2K\"\nlisten = \"127.0.0.1:9999\"\ntrusted-proxy = [\"10.0.0.0/8\"]\n\
             log-format = \"json\"\nworkers = 3\nlimit-memory = \"unlimited\"\n",
        );
        let args = serve_args(&["--config", &path]).expect("the file alone");
        assert_eq!(args.jail, Some(PathBuf::from("/srv/jail")));
        assert_eq!(args.timeout, 7);
        assert_eq!(args.fixed_env, vec![("A".to_owned(), b"1".to_vec())]);
        assert!(args.no_network);
        assert_eq!(args.max_body, 2048);
        assert_eq!(
            args.listen,
            Some("127.0.0.1:9999".parse().expect("address"))
        );
        assert_eq!(args.trusted_proxies.len(), 1);
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.workers, Some(3));
        assert_eq!(args.limit_memory, Limit(None));
        // What neither sets keeps the flag's default.
        assert_eq!(args.user, "nobody");
        assert_eq!(args.max_output, Limit(None));
        assert_eq!(args.limit_open_files, config::DEFAULT_LIMIT_OPEN_FILES);
    }

    #[test]
    fn flags_override_the_file() {
        let (_dir, path) = config_file(
            "jail = \"/srv/jail\"\ntimeout = 7\nenv = [\"A=1\", \"B=2\"]\nmax-body = \"2K\"\n\
             listen = \"127.0.0.1:9999\"\nlog-format = \"json\"\nworkers = 3\n\
             user = \"nobody\"\n",
        );
        let args = serve_args(&[
            "--jail",
            "/other",
            "--config",
            &path,
            "--timeout",
            "9",
            "--env",
            "C=3",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--workers",
            "1",
        ])
        .expect("file and flags");
        assert_eq!(args.jail, Some(PathBuf::from("/other")));
        assert_eq!(args.timeout, 9);
        // A repeatable flag's list replaces the file's.
        assert_eq!(args.fixed_env, vec![("C".to_owned(), b"3".to_vec())]);
        assert_eq!(args.listen, Some("127.0.0.1:0".parse().expect("address")));
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.workers, Some(1));
        // Not given as a flag: the file's.
        assert_eq!(args.max_body, 2048);
        // A flag given with its default value still wins.
        let args = serve_args(&["--config", &path, "--timeout", "30"]).expect("default value");
        assert_eq!(args.timeout, 30);
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let (_dir, path) = config_file("workers = 2\n\nwrokers = 3\n");
        assert_eq!(
            serve_args(&["--config", &path]).expect_err("unknown key"),
            format!("{path} line 3: unknown key `wrokers`")
        );
        let (_dir, path) = config_file("jail = \"/srv\"\n\n\n\nmax-body = \"12Q\"\n");
        assert_eq!(
            serve_args(&["--config", &path]).expect_err("bad value"),
            format!("{path} line 5: max-body: `12Q` is not a size like 65536, 64K, 64M or 1G")
        );
        let missing =
            serve_args(&["--config", "/nonexistent/jailgate.toml"]).expect_err("missing file");
        assert!(
            missing.starts_with("/nonexistent/jailgate.toml: "),
            "{missing}"
        );
    }

    #[test]
    fn the_jail_is_required_somewhere() {
        let args = serve_args(&["--workers", "1"]).expect("no jail yet");
        let error = load_config(args).expect_err("no jail");
        assert!(error.contains("--jail"), "{error}");
    }
}
