//! The command line: `gateway [FLAGS]` serves, `gateway jail init|check`, `gateway demo`. The
//! serving flags are merged over the `--config` file and become one validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use protocol::Limits;

pub use super::settings::ServeArgs;
use super::{Config, EnvPolicy, SocketAccess, DEFAULT_WORKER_ID};
use crate::jailfs;

/// Jailgate: runs CGI programs confined in a chroot jail, as an unprivileged user, behind HTTP.
#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// The account the HTTP-facing process runs as [default: uid and gid 1879048190]
        #[arg(long, value_name = "NAME|UID[:GID]")]
        gateway_user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum JailOp {
    /// Build a jail in DIR: programs with their loader and libraries, devices, /etc, /tmp, /cgi-bin
    Init {
        dir: PathBuf,
        /// A program to install (a name on PATH or an absolute path); repeatable.
        /// Default: the classic shell-CGI set
        #[arg(long = "with", value_name = "PROG")]
        programs: Vec<String>,
        /// The workers' account (serving's --user), named in the jail's /etc/passwd
        #[arg(long, value_name = "NAME|UID[:GID]", default_value_t = DEFAULT_WORKER_ID.to_string())]
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
        /// The workers' account (serving's --user) the jail is for: no file may be its
        #[arg(long, value_name = "NAME|UID[:GID]", default_value_t = DEFAULT_WORKER_ID.to_string())]
        user: String,
    },
}

/// The command line, parsed; the matches tell a flag given from a default.
pub fn parse_command_line<I, T>(args: I) -> Result<(Cli, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// The serving flags over the `--config` file's settings: a flag given on the command line
/// wins (a repeatable flag's list replaces the file's), then the file, then the flag's default.
pub fn with_config_file(args: ServeArgs, matches: &ArgMatches) -> Result<ServeArgs, String> {
    let Some(path) = &args.config else {
        return Ok(args);
    };
    let file = super::settings::read(path).map_err(|error| error.to_string())?;
    Ok(args.under_file(file, matches))
}

/// The configuration the command line (`std::env::args_os`) and its `--config` file give,
/// checked: what a SIGHUP reads again.
pub fn load_from_command_line() -> Result<Config, String> {
    let (cli, matches) =
        parse_command_line(std::env::args_os()).map_err(|error| one_line(&error))?;
    load_config(with_config_file(cli.serve, &matches)?)
}

/// A clap error in one line, without its `error: ` prefix: what its first line announces (the
/// missing arguments, the possible values) and its tips included, as the rest of our errors
/// are one line each. For a missing argument, the usage it asks for too.
pub fn one_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let mut message = String::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.starts_with("For more information") {
            break;
        }
        if let Some(usage) = line.strip_prefix("Usage: ") {
            if error.kind() == clap::error::ErrorKind::MissingRequiredArgument {
                message.push_str(&format!(" (usage: {usage})"));
            }
            break;
        }
        if !message.is_empty() {
            message.push(' ');
        }
        match line.strip_prefix("tip: ") {
            Some(tip) => message.push_str(&format!("(tip: {tip})")),
            None => message.push_str(line),
        }
    }
    message
}

/// The serving flags → a validated configuration, or what is wrong, in one line.
pub fn load_config(args: ServeArgs) -> Result<Config, String> {
    let jail = args
        .jail
        .ok_or("--jail DIR is required (or `jail` in the --config file)")?;
    let user = super::account_or_default(
        args.user.as_deref(),
        DEFAULT_WORKER_ID,
        "--user",
        "workers'",
    )?;
    let mut config = Config::new(jail, user);
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.fastcgi = args.fastcgi;
    if let Some(ids) = args.cgi_ids {
        config.cgi_ids = ids;
    }
    config.data = match (args.data_dir, args.data_group) {
        (Some(path), Some(gid)) => Some(protocol::DataDir { path, gid }),
        (None, None) => None,
        _ => return Err("--data-dir and --data-group go together".into()),
    };
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
    config.allow_front_server_headers = args.allow_front_server_headers;
    config.cgis_per_worker = args.max_cgis_per_worker;
    config.tmp_size = args.tmp_size;
    config.cgi_network = args.cgi_network;
    config.allow_insecure_jail = args.allow_insecure_jail;
    config.max_body_bytes = args.max_body;
    config.answer_while_uploading = args.answer_while_uploading;
    config.body_timeout = Duration::from_secs(args.body_timeout);
    config.send_timeout = Duration::from_secs(args.send_timeout);
    config.spool_budget = args.spool_budget;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    config.admin = args.admin;
    config.max_concurrent = args.max_concurrent.unwrap_or(0);
    config.queue = args.queue;
    config.queue_timeout = Duration::from_secs(args.queue_timeout);
    config.log_format = args.log_format;
    config.access_log = args.access_log;
    config.scheduling = args.scheduling;
    config.env = EnvPolicy {
        pass_authorization: args.pass_authorization,
        trusted_proxies: args.trusted_proxy,
        trusted_group: args.trusted_group.or(args.socket_group),
        fixed: args.env,
        pass_env: args.pass_env,
    };
    config.validate().map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::FileSettings;
    use crate::config::values::Limit;
    use crate::config::{LogFormat, DEFAULT_LIMIT_OPEN_FILES};

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jailgate.toml");

    /// The serving flags of `gateway ARGS...` over the `--config` file, if any.
    fn serve_args(args: &[&str]) -> Result<ServeArgs, String> {
        let (cli, matches) =
            parse_command_line(std::iter::once("gateway").chain(args.iter().copied()))
                .map_err(|error| error.to_string())?;
        with_config_file(cli.serve, &matches)
    }

    /// The one-line message of `gateway ARGS...`'s parse error.
    fn parse_error(args: &[&str]) -> String {
        match parse_command_line(std::iter::once("gateway").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(error) => one_line(&error),
        }
    }

    /// A clap error's lines after the first say what is wrong; none of them may be lost.
    #[test]
    fn a_flag_error_says_all_of_itself_in_one_line() {
        assert_eq!(
            parse_error(&["--data-dir", "/data"]),
            "the following required arguments were not provided: --data-group <GROUP|GID> \
             (usage: gateway --data-dir <JAILPATH> --data-group <GROUP|GID>)"
        );
        assert_eq!(
            parse_error(&["jail", "init"]),
            "the following required arguments were not provided: <DIR> \
             (usage: gateway jail init <DIR>)"
        );
        assert_eq!(
            parse_error(&["--access-log", "xml"]),
            "invalid value 'xml' for '--access-log <FORMAT>' \
             [possible values: combined, json, off]"
        );
        assert_eq!(
            parse_error(&["--worker", "3"]),
            "unexpected argument '--worker' found \
             (tip: a similar argument exists: '--workers')"
        );
        assert_eq!(
            parse_error(&["--workers", "x"]),
            "invalid value 'x' for '--workers <N>': invalid digit found in string"
        );
        assert_eq!(
            parse_error(&["jail", "frob"]),
            "unrecognized subcommand 'frob'"
        );
        // As in the file: a time past a day is a slip (and an instant that far out overflows).
        assert_eq!(
            parse_error(&["--body-timeout", "18446744073709551615"]),
            "invalid value '18446744073709551615' for '--body-timeout <SECS>': \
             18446744073709551615 is not in 1..=86400"
        );
        assert_eq!(
            parse_error(&["--timeout", "0"]),
            "invalid value '0' for '--timeout <SECS>': 0 is not in 1..=86400"
        );
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
        let every: Vec<&str> = include_str!("../../../examples/jailgate.toml")
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
        assert_eq!(args.trusted_proxy.len(), 1);
        assert!(args.trusted_group.is_some());
        assert_eq!(args.env.len(), 2);
        assert_eq!(args.pass_env, vec!["GIT_PROJECT_ROOT".to_owned()]);
        assert_eq!(
            args.allow_front_server_headers,
            vec![crate::config::values::parse_script_prefix("/cgi-bin/download").expect("a path")]
        );
        assert!(args.admin.is_some() && args.fastcgi.is_some() && args.listen.is_some());
    }

    #[test]
    fn the_file_sets_what_the_flags_do_not() {
        let (_dir, path) = config_file(
            "jail = \"/srv/jail\"\ntimeout = 7\nenv = [\"A=1\"]\ncgi-network = true\n\
             max-body = \"2K\"\nlisten = \"127.0.0.1:9999\"\ntrusted-proxy = [\"10.0.0.0/8\"]\n\
             log-format = \"json\"\nworkers = 3\nlimit-memory = \"unlimited\"\n",
        );
        let args = serve_args(&["--config", &path]).expect("the file alone");
        assert_eq!(args.jail, Some(PathBuf::from("/srv/jail")));
        assert_eq!(args.timeout, 7);
        assert_eq!(args.env, vec![("A".to_owned(), b"1".to_vec())]);
        assert!(args.cgi_network);
        assert_eq!(args.max_body, 2048);
        assert_eq!(
            args.listen,
            Some("127.0.0.1:9999".parse().expect("address"))
        );
        assert_eq!(args.trusted_proxy.len(), 1);
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.workers, Some(3));
        assert_eq!(args.limit_memory, Limit(None));
        // What neither sets keeps the flag's default.
        assert_eq!(args.user, None);
        assert_eq!(args.gateway_user, None);
        assert_eq!(args.max_output, Limit(None));
        assert_eq!(args.limit_open_files, DEFAULT_LIMIT_OPEN_FILES);
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
        assert_eq!(args.env, vec![("C".to_owned(), b"3".to_vec())]);
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
    fn a_bad_front_server_header_path_names_the_flag_or_the_key() {
        let flag =
            serve_args(&["--allow-front-server-headers", "cgi-bin/x"]).expect_err("not a URL path");
        assert!(
            flag.contains("--allow-front-server-headers") && flag.contains("must start with /"),
            "{flag}"
        );
        let (_dir, path) = config_file("allow-front-server-headers = [\"/cgi-bin/a/../b\"]\n");
        assert_eq!(
            serve_args(&["--config", &path]).expect_err("a dot segment"),
            format!(
                "{path} line 1: allow-front-server-headers: `/cgi-bin/a/../b` has a dot segment (..)"
            )
        );
    }

    #[test]
    fn the_jail_is_required_somewhere() {
        let args = serve_args(&["--workers", "1"]).expect("no jail yet");
        let error = load_config(args).expect_err("no jail");
        assert!(error.contains("--jail"), "{error}");
    }
}
