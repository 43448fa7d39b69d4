//! `gateway`: flags → validated config → run. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use gateway::cgi_env::EnvPolicy;
use gateway::config::{self, parse_limit, parse_size, Config, Limit};
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

#[derive(Args)]
struct ServeArgs {
    /// The jail folder (build one with `gateway jail init DIR`); `/cgi-bin/` URLs run its /cgi-bin
    #[arg(long, value_name = "DIR", required = true)]
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => return usage_error(first_line(&error.to_string())),
    };
    init_tracing();
    if !nix::unistd::geteuid().is_root() {
        return usage_error(
            "must run as root: it builds the jail and drops the workers' privileges itself",
        );
    }
    match cli.command {
        Some(Command::Jail {
            op:
                JailOp::Init {
                    dir,
                    programs,
                    user,
                    profile,
                    adds,
                },
        }) => jail_init(dir, programs, &user, profile, adds),
        Some(Command::Jail {
            op: JailOp::Check { dir, user },
        }) => jail_check(dir, &user),
        Some(Command::Demo {
            listen,
            gateway_user,
        }) => demo(listen, &gateway_user),
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let user = match jailfs::parse_user(&args.user) {
        Ok(user) => user,
        Err(error) => return usage_error(&format!("--user {}: {error}", args.user)),
    };
    let mut config = Config::new(args.jail.unwrap_or_default(), user);
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    let listen_given = args.listen.is_some();
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
    config.env = EnvPolicy {
        pass_authorization: args.pass_authorization,
        trusted_proxies: args.trusted_proxies,
        fixed: args.fixed_env,
    };
    let config = match config.validate() {
        Ok(config) => config,
        Err(error) => return usage_error(&error.to_string()),
    };
    if let Err(code) = audit_before_serving(&config) {
        return code;
    }
    let front_user = match front_user(&args.gateway_user, &config.user) {
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
    gateway::privsep::run(config, listener, fastcgi, &front_user)
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

/// The same audit as `gateway jail check`, at every start: a jail with findings is refused
/// (fail closed) unless --allow-insecure-jail, which starts anyway and says so loudly.
fn audit_before_serving(config: &Config) -> Result<(), ExitCode> {
    let options = jailfs::AuditOptions::new(config.jail.clone(), config.user.clone());
    let findings = match jailfs::audit(&options) {
        Ok(findings) => findings,
        Err(error) => {
            eprintln!(
                "gateway: cannot audit the jail {}: {error}",
                config.jail.display()
            );
            return Err(ExitCode::FAILURE);
        }
    };
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
        eprintln!(
            "gateway: refusing to serve from an insecure jail ({} findings above); fix them \
             (`gateway jail check {}` lists them) or pass --allow-insecure-jail",
            findings.len(),
            config.jail.display()
        );
        return Err(ExitCode::FAILURE);
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

/// Permission bits in octal, as chmod takes them.
fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode like 0660"))
}

/// A group name or number.
fn parse_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(format!("no group `{text}` on this machine")),
    }
}

/// A network in CIDR notation, or one address.
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or a CIDR network"))
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or(text);
    line.strip_prefix("error: ").unwrap_or(line)
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Logged text includes URLs and CGI stderr: never emit their escape codes to a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
