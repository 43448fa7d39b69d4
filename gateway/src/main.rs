//! `gateway`: the command line → one of its commands. Flags, the config file and their merge
//! live in `gateway::config`; serving in `gateway::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use gateway::config::cli::{
    load_config, load_from_command_line, one_line, parse_command_line, with_config_file, Command,
    JailOp, ServeArgs,
};
use gateway::config::{FrontUser, LogFormat, CGI_DIR};
use gateway::jailfs;
use gateway::root::startup::Startup;

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
        Err(error) => return usage_error(&one_line(&error)),
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
        } => demo(listen, gateway_user),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let listen_given = args.listen.is_some();
    let gateway_user = args.gateway_user.clone();
    let config = match load_config(args) {
        Ok(config) => config,
        Err(error) => return usage_error(&error),
    };
    let front_user = match FrontUser::parse(gateway_user.as_deref(), &config) {
        Ok(user) => user,
        Err(message) => return usage_error(&message),
    };
    let running_front = front_user.clone();
    gateway::serve(Startup {
        config,
        front_user,
        listen_given,
        // SIGHUP: the same command line and --config file read again, checked as at the start,
        // against the account the front runs as (which a reload does not change).
        reload: Box::new(move || {
            let config = load_from_command_line()?;
            running_front.check_apart(gateway_user.as_deref(), &config)?;
            gateway::root::startup::audit_before_serving(&config)?;
            Ok(config)
        }),
    })
}

fn demo(listen: SocketAddr, gateway_user: Option<String>) -> ExitCode {
    match gateway::demo::run(listen, gateway_user.as_deref()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
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
            eprintln!("gateway: jail check: {error}");
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
                dir.join(CGI_DIR.trim_start_matches('/')).display()
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
