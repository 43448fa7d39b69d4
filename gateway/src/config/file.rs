//! `--config FILE`: a TOML file that sets any serving flag. Each key is the flag's long name
//! as written on the command line (kebab-case: `max-cgis-per-worker = 128`), with the flag's
//! value syntax where that is a string (`max-body = "64M"`, `limit-memory = "unlimited"`,
//! `listen = "unix:/run/jailgate/http.sock"`, `socket-mode = "0660"`), whole numbers for
//! counts and seconds (`timeout = 30`), booleans for switches (`cgi-network = true`) and arrays
//! for the repeatable flags (`trusted-proxy = ["10.0.0.0/8"]`, `env = ["A=1"]`). An unknown
//! key or a bad value is an error that names the key and its line.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use toml::{Spanned, Value};

use super::values::{parse_group, parse_limit, parse_mode, parse_size, Limit, ListenAddr};
use crate::jailfs;

/// Largest configuration file read: a few kilobytes are plenty, anything near this is not one.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A configuration file that cannot be used, named in the message.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_FILE_BYTES} bytes, not a configuration file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} {error}", path.display())]
    Content { path: PathBuf, error: LineError },
}

/// What is wrong in a file's text, and on which line (1-based) when the parser knows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LineError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The text of the file at `path`, refused past [`MAX_FILE_BYTES`].
pub fn read_text(path: &Path) -> Result<String, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read_error = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    // Without blocking on a FIFO (whose open waits for a writer, and would freeze the root
    // supervisor on a SIGHUP), and only a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    if !file.metadata().map_err(read_error)?.is_file() {
        return Err(read_error(std::io::Error::other("not a regular file")));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
        &mut text,
    )
    .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// The TOML of `text` as `T` (the keys each with its span), or the line of the first error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, LineError> {
    toml::from_str(text).map_err(|error| {
        let line = error.span().map(|span| line_of(text, span.start));
        let message = match unknown_key(error.message()) {
            Some(key) => format!("unknown key `{key}`"),
            None => format!("not valid TOML: {}", error.message().trim_end()),
        };
        LineError { line, message }
    })
}

/// serde's message for an unknown field (`deny_unknown_fields`) → the key.
fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split_once("`, expected").map_or(rest, |(key, _)| key))
}

pub(super) fn key_name(field: &str) -> String {
    field.replace('_', "-")
}

/// 1-based line of the byte offset `at`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let before = text.get(..at).unwrap_or(text);
    before.bytes().filter(|b| *b == b'\n').count() + 1
}

/// One key's value → its setting, or an error naming the key and its line (the value starts
/// on the key's line: TOML allows no line break between them).
pub(super) fn convert<T>(
    field: &str,
    raw: Option<Spanned<Value>>,
    text: &str,
    convert: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, LineError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    convert(raw.get_ref()).map(Some).map_err(|why| LineError {
        line: Some(line_of(text, raw.span().start)),
        message: format!("{}: {why}", key_name(field)),
    })
}

pub(super) fn string<'v>(value: &'v Value, what: &str) -> Result<&'v str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected {what}, not {value}"))
}

/// `"HOST:PORT"` or `"unix:/PATH"`, as the flags take them.
pub(super) fn address(value: &Value) -> Result<ListenAddr, String> {
    let what = "an address like \"127.0.0.1:8080\" or \"unix:/PATH\"";
    string(value, what)?.parse()
}

pub(super) fn path(value: &Value) -> Result<PathBuf, String> {
    match string(value, "a path")? {
        "" => Err("the path is empty".into()),
        path => Ok(PathBuf::from(path)),
    }
}

/// A whole number between `min` and `max`.
pub(super) fn whole(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let Value::Integer(number) = value else {
        return Err(format!("expected a whole number, not {value}"));
    };
    u64::try_from(*number)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| match max {
            u64::MAX => format!("{number} is less than {min}"),
            _ => format!("{number} is not between {min} and {max}"),
        })
}

pub(super) fn count(value: &Value, min: usize, max: usize) -> Result<usize, String> {
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let number = whole(value, wide(min), wide(max))?;
    usize::try_from(number).map_err(|_| format!("{number} is too large"))
}

pub(super) fn seconds(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    if !value.is_integer() {
        return Err(format!("expected whole seconds like 30, not {value}"));
    }
    whole(value, min, max)
}

pub(super) fn at_least_1(number: u64) -> Result<u64, String> {
    match number {
        0 => Err("must be at least 1".into()),
        number => Ok(number),
    }
}

/// A size: `"64M"` as on the command line, or a plain number of bytes.
pub(super) fn size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(_) => whole(value, 0, u64::MAX),
        Value::String(text) => parse_size(text),
        _ => Err(format!(
            "expected a size like \"64M\" or 65536, not {value}"
        )),
    }
}

/// A size, or `"unlimited"`.
pub(super) fn limit(value: &Value) -> Result<Limit, String> {
    match value {
        Value::Integer(_) => whole(value, 0, u64::MAX).map(|size| Limit(Some(size))),
        Value::String(text) => parse_limit(text),
        _ => Err(format!(
            "expected a size like \"64M\" or \"unlimited\", not {value}"
        )),
    }
}

/// `"0660"` as chmod takes it, or a TOML octal number, `0o660`.
pub(super) fn mode(value: &Value) -> Result<u32, String> {
    match value {
        Value::String(text) => parse_mode(text),
        Value::Integer(number) => u32::try_from(*number)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .ok_or_else(|| format!("{number} is not a mode; write \"0660\" or 0o660")),
        _ => Err(format!("expected an octal mode like \"0660\", not {value}")),
    }
}

/// A group name or number.
pub(super) fn group(value: &Value) -> Result<u32, String> {
    match value {
        Value::String(text) => parse_group(text),
        Value::Integer(number) => {
            u32::try_from(*number).map_err(|_| format!("{number} is not a group id"))
        }
        _ => Err(format!("expected a group name or id, not {value}")),
    }
}

/// `"NAME"`, `"UID"` or `"NAME:GID"`, checked as the flag is (a uid alone may be a number).
pub(super) fn account(value: &Value) -> Result<String, String> {
    let spec = match value {
        Value::String(text) => text.clone(),
        Value::Integer(uid) => uid.to_string(),
        _ => {
            return Err(format!(
                "expected an account like \"www-cgi\" or \"4000:4000\", not {value}"
            ))
        }
    };
    jailfs::parse_user(&spec).map_err(|error| error.to_string())?;
    Ok(spec)
}

pub(super) fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, not {value}"))
}

/// An array of strings, each parsed like one occurrence of the flag (a lone string is a list
/// of one).
pub(super) fn list<T>(
    value: &Value,
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::String(_) => std::slice::from_ref(value),
        _ => return Err(format!("expected an array of {what}, not {value}")),
    };
    items
        .iter()
        .map(|item| parse(string(item, &format!("an array of {what}"))?))
        .collect()
}

/// One of a flag's fixed values, such as `"json"`.
pub(super) fn choice<E: ValueEnum>(value: &Value) -> Result<E, String> {
    let names: Vec<String> = E::value_variants()
        .iter()
        .filter_map(|variant| variant.to_possible_value())
        .map(|possible| format!("\"{}\"", possible.get_name()))
        .collect();
    let names = names.join(", ");
    let text = string(value, &format!("one of {names}"))?;
    E::from_str(text, false).map_err(|_| format!("`{text}` is not one of {names}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{parse, read, FileSettings};
    use crate::config::{AccessLog, LogFormat, Scheduling};

    /// A configuration path that is a FIFO or a folder is refused at once: opening a FIFO
    /// waited for a writer, and froze the root supervisor on a SIGHUP.
    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("jailgate.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        for path in [fifo.as_path(), dir.path()] {
            let error = read_text(path).expect_err("refused");
            assert!(error.to_string().ends_with("not a regular file"), "{error}");
        }
    }

    /// The example shipped in the repository, with every commented-out setting (`#key = ...`,
    /// no space after `#`; prose comments have one) turned on.
    fn example_with_every_key() -> String {
        include_str!("../../../examples/jailgate.toml")
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase()) => setting,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn error(text: &str) -> LineError {
        match parse(text) {
            Ok(settings) => panic!("accepted {text:?} as {settings:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn the_example_sets_every_key() {
        let settings = parse(include_str!("../../../examples/jailgate.toml"))
            .unwrap_or_else(|e| panic!("examples/jailgate.toml: {e}"));
        assert_eq!(settings.jail, Some(PathBuf::from("/srv/jailgate")));
        let every = parse(&example_with_every_key())
            .unwrap_or_else(|e| panic!("examples/jailgate.toml, all settings on: {e}"));
        assert_eq!(every.unset_keys(), Vec::<String>::new());
    }

    #[test]
    fn every_key_is_accepted() {
        let text = r#"
            jail = "/srv/jail"
            workers = 4
            listen = "unix:/run/jailgate/http.sock"
            fastcgi = "127.0.0.1:9000"
            socket-mode = "0600"
            socket-group = 33
            trusted-group = 33
            user = "nobody"
            cgi-ids = "1879048192-1879113727"
            data-dir = "/data"
            data-group = 4242
            timeout = 10
            limit-cpu = 5
            limit-memory = "512M"
            limit-file-size = "unlimited"
            limit-open-files = 64
            limit-processes = 100
            max-output = 1048576
            allow-front-server-headers = ["/cgi-bin/download", "/cgi-bin/files/"]
            max-cgis-per-worker = 16
            tmp-size = "16M"
            cgi-network = true
            allow-insecure-jail = false
            gateway-user = "daemon"
            max-body = "2K"
            body-timeout = 9
            send-timeout = 7
            answer-while-uploading = true
            spool-budget = "64M"
            pass-authorization = true
            trusted-proxy = ["10.0.0.0/8", "127.0.0.1"]
            env = ["A=1", "B=two words"]
            pass-env = ["GIT_PROJECT_ROOT"]
            drain-timeout = 3
            admin = "127.0.0.1:9100"
            max-concurrent = 50
            queue = 20
            queue-timeout = 2
            log-format = "json"
            access-log = "off"
            scheduling = "inherit"
        "#;
        let settings = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.unset_keys(), Vec::<String>::new());
        assert_eq!(settings.workers, Some(4));
        assert_eq!(
            settings.listen,
            Some(ListenAddr::Unix("/run/jailgate/http.sock".into()))
        );
        assert_eq!(settings.socket_mode, Some(0o600));
        assert_eq!(settings.socket_group, Some(33));
        assert_eq!(settings.limit_memory, Some(Limit(Some(512 << 20))));
        assert_eq!(settings.limit_file_size, Some(Limit(None)));
        assert_eq!(settings.max_output, Some(Limit(Some(1 << 20))));
        assert_eq!(settings.tmp_size, Some(16 << 20));
        assert_eq!(settings.max_body, Some(2048));
        assert_eq!(settings.body_timeout, Some(9));
        assert_eq!(settings.send_timeout, Some(7));
        assert_eq!(settings.spool_budget, Some(64 << 20));
        assert_eq!(settings.cgi_network, Some(true));
        assert_eq!(settings.allow_insecure_jail, Some(false));
        assert_eq!(settings.trusted_proxy.map(|p| p.len()), Some(2));
        assert_eq!(
            settings.env,
            Some(vec![
                ("A".into(), b"1".to_vec()),
                ("B".into(), b"two words".to_vec())
            ])
        );
        assert_eq!(settings.log_format, Some(LogFormat::Json));
        assert_eq!(settings.access_log, Some(AccessLog::Off));
        assert_eq!(settings.scheduling, Some(Scheduling::Inherit));
        // An empty file sets nothing.
        assert_eq!(
            parse("# nothing\n").map(|s| s.unset_keys().len()),
            Ok(FileSettings::keys().len())
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let at = |line, message: &str| LineError {
            line: Some(line),
            message: message.into(),
        };
        assert_eq!(
            error("workers = 2\n\nwrokers = 3\n"),
            at(3, "unknown key `wrokers`")
        );
        // Snake case is not the flag's name: refused, not silently ignored.
        assert_eq!(
            error("max_body = \"1M\"\n"),
            at(1, "unknown key `max_body`")
        );
        assert_eq!(
            error("[server]\nworkers = 2\n"),
            at(1, "unknown key `server`")
        );
        assert_eq!(error("\"x y\" = 1\n"), at(1, "unknown key `x y`"));
        assert_eq!(
            error("config = \"/etc/other.toml\"\n"),
            at(1, "unknown key `config`")
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_key_and_line() {
        let check = |text: &str, line: usize, message: &str| {
            let expected = LineError {
                line: Some(line),
                message: message.into(),
            };
            assert_eq!(error(text), expected, "{text:?}");
        };
        check(
            "workers = 2\n\n\n\nmax-body = \"12Q\"\n",
            5,
            "max-body: `12Q` is not a size like 65536, 64K, 64M or 1G",
        );
        check(
            "workers = \"eight\"\n",
            1,
            "workers: expected a whole number, not \"eight\"",
        );
        check("workers = 0\n", 1, "workers: 0 is not between 1 and 1024");
        check("workers = -3\n", 1, "workers: -3 is not between 1 and 1024");
        check(
            "\ntimeout = \"30s\"\n",
            2,
            "timeout: expected whole seconds like 30, not \"30s\"",
        );
        check("timeout = 0\n", 1, "timeout: 0 is not between 1 and 86400");
        check(
            "limit-open-files = 0\n",
            1,
            "limit-open-files: 0 is less than 1",
        );
        check("tmp-size = \"0\"\n", 1, "tmp-size: must be at least 1");
        check(
            "limit-memory = true\n",
            1,
            "limit-memory: expected a size like \"64M\" or \"unlimited\", not true",
        );
        check(
            "socket-mode = \"999\"\n",
            1,
            "socket-mode: `999` is not an octal mode like 0660",
        );
        check(
            "socket-mode = 660\n",
            1,
            "socket-mode: 660 is not a mode; write \"0660\" or 0o660",
        );
        check(
            "cgi-network = \"yes\"\n",
            1,
            "cgi-network: expected true or false, not \"yes\"",
        );
        check(
            "listen = \"localhost\"\n",
            1,
            "listen: `localhost` is neither HOST:PORT (127.0.0.1:8080, [::1]:8080) nor unix:/path",
        );
        check(
            "trusted-proxy = [\"10.0.0.0/8\", \"nope\"]\n",
            1,
            "trusted-proxy: `nope` is not an address or a CIDR network",
        );
        check(
            "env = [\n  \"A=1\",\n  \"PATH=/x\",\n]\n",
            1,
            "env: `PATH` is a CGI meta-variable; --env cannot set it",
        );
        check(
            "env = [1]\n",
            1,
            "env: expected an array of NAME=VALUE strings, not 1",
        );
        check(
            "log-format = \"xml\"\n",
            1,
            "log-format: `xml` is not one of \"text\", \"json\"",
        );
        check(
            "access-log = \"common\"\n",
            1,
            "access-log: `common` is not one of \"combined\", \"json\", \"off\"",
        );
        check("jail = \"\"\n", 1, "jail: the path is empty");
        let user = error("workers = 1\nuser = \"no-such-user-here\"\n");
        assert_eq!(user.line, Some(2));
        assert!(user.message.starts_with("user: "), "{user}");
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        let broken = error("workers = 2\ntimeout = \n");
        assert_eq!(broken.line, Some(2));
        assert!(broken.message.starts_with("not valid TOML: "), "{broken}");
        let twice = error("workers = 2\nworkers = 3\n");
        assert_eq!(twice.line, Some(2));
        assert!(twice.message.contains("duplicate key"), "{twice}");
    }

    #[test]
    fn read_names_the_file_and_resolves_a_relative_jail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("jailgate.toml");
        std::fs::write(&file, "jail = \"jail\"\nworkers = 2\n").expect("write");
        let settings = read(&file).expect("read");
        assert_eq!(settings.jail, Some(dir.path().join("jail")));

        std::fs::write(&file, "workers = 2\nwrokers = 2\n").expect("write");
        let error = read(&file).expect_err("an unknown key").to_string();
        assert_eq!(
            error,
            format!("{} line 2: unknown key `wrokers`", file.display())
        );

        let missing = dir.path().join("missing.toml");
        let error = read(&missing).expect_err("no such file").to_string();
        assert!(
            error.starts_with(&format!("{}: ", missing.display())),
            "{error}"
        );
    }
}
