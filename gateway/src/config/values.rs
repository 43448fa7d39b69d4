//! The syntax of setting values, shared by the flags and the `--config` file: sizes, limits,
//! variables, modes, groups, networks and listening addresses. Each parser's error is one line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    if super::is_meta_variable(name) {
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

/// A `--listen` or `--fastcgi` value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// An absolute path for a Unix stream socket.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(format!(
                    "`{text}`: a Unix socket needs an absolute path, unix:/run/x.sock"
                ));
            }
            return Ok(ListenAddr::Unix(path.to_owned()));
        }
        text.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!("`{text}` is neither HOST:PORT (127.0.0.1:8080, [::1]:8080) nor unix:/path")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(address) => write!(f, "{address}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who may connect to a Unix socket we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketAccess {
    /// Permission bits of the socket file (only write permission matters for connecting).
    pub mode: u32,
    /// Group of the socket file (say, nginx's), or root's.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    /// Owner and group may connect, as php-fpm's `listen.mode` default.
    fn default() -> SocketAccess {
        SocketAccess {
            mode: 0o660,
            group: None,
        }
    }
}

/// `FIRST-LAST` for `--cgi-ids`: a range of ids, both ends included.
pub fn parse_id_range(text: &str) -> Result<protocol::IdRange, String> {
    let bad = || format!("`{text}` is not a range of ids like 1879048192-1879113727");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let (first, last): (u32, u32) = (
        first.parse().map_err(|_| bad())?,
        last.parse().map_err(|_| bad())?,
    );
    if last < first {
        return Err(bad());
    }
    Ok(protocol::IdRange {
        first,
        count: last - first + 1,
    })
}

/// `NAME` for `--pass-env`: a variable the front server may set for CGIs (nginx's
/// `fastcgi_param NAME value;`). Like `--env`, never a meta-variable or an `HTTP_*` name.
pub fn parse_pass_env(name: &str) -> Result<String, String> {
    if name.contains('=') {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits, _)"
        ));
    }
    let name = parse_env(&format!("{name}=")).map(|(name, _)| name)?;
    if runs_code(&name) {
        return Err(format!(
            "`{name}` makes the loader, a shell or an interpreter run code or load it from \
             where it says: a front server (or a client, through a `fastcgi_param` taken from \
             the request) must not set it; give a fixed value with --env instead"
        ));
    }
    Ok(name)
}

/// Variables that make the dynamic loader, a shell or an interpreter run code or load it from
/// the path they name.
fn runs_code(name: &str) -> bool {
    const EXACT: &[&str] = &[
        // The shells and the C library.
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "IFS",
        "CDPATH",
        "PATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "RES_OPTIONS",
        // Interpreters and runtimes.
        "PERLLIB",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "OPENSSL_CONF",
        "OPENSSL_MODULES",
        // git, which git-http-backend runs: configuration and the programs it calls.
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_ASKPASS",
        "GIT_EXTERNAL_DIFF",
        "GIT_PAGER",
        "GIT_EDITOR",
        "GIT_PROXY_COMMAND",
        "GIT_TEMPLATE_DIR",
    ];
    const PREFIXES: &[&str] = &[
        "LD_",
        "BASH_FUNC_",
        "GLIBC_",
        "MALLOC_",
        "PERL5",
        "LUA_",
        "GIT_CONFIG_KEY_",
        "GIT_CONFIG_VALUE_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// A script's URL path, or a folder of scripts, for `--allow-front-server-headers`: it matches
/// a script whose path is it or lies below it on whole segments (`/cgi-bin/dl` matches
/// `/cgi-bin/dl`, not `/cgi-bin/dlx`). Written as the script's path, not percent-encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScriptPrefix(String);

impl ScriptPrefix {
    /// Whether the script at the URL path `script` (`/cgi-bin/NAME`, as the router names it)
    /// is this one or below it.
    pub fn matches(&self, script: &str) -> bool {
        let prefix = self.0.as_str();
        prefix == "/"
            || script == prefix
            || script
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for ScriptPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `PATH` for `--allow-front-server-headers`: an absolute URL path, `/`, `/cgi-bin` or below
/// it (scripts are nowhere else, so any other path would silently match nothing), without dot
/// or empty segments (a script path has neither, so such a prefix would match nothing either)
/// and without control bytes. One trailing `/` is dropped: `/cgi-bin/tools/` is the folder.
pub fn parse_script_prefix(text: &str) -> Result<ScriptPrefix, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` is not a URL path: it must start with /, like /cgi-bin/download"
        ));
    }
    if text.bytes().any(|byte| byte < 0x20 || byte == 0x7f) {
        return Err(format!("{text:?} contains a control byte"));
    }
    if text == "/" {
        return Ok(ScriptPrefix(text.to_owned()));
    }
    let path = text.strip_suffix('/').unwrap_or(text);
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(format!("`{text}` has an empty segment (//)")),
            "." | ".." => return Err(format!("`{text}` has a dot segment ({segment})")),
            _ => {}
        }
    }
    if !ScriptPrefix(super::CGI_DIR.to_owned()).matches(path) {
        return Err(format!(
            "`{text}` is outside {}, where every script is",
            super::CGI_DIR
        ));
    }
    Ok(ScriptPrefix(path.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    #[test]
    fn addresses_parse_and_print_back() {
        for text in ["127.0.0.1:8080", "[::1]:9000", "unix:/run/jailgate.sock"] {
            assert_eq!(text.parse::<ListenAddr>().unwrap().to_string(), text);
        }
        for bad in [
            "unix:relative.sock",
            "unix:",
            "unix:/",
            "localhost",
            "8080",
            "",
        ] {
            let error = bad.parse::<ListenAddr>().unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn id_ranges_are_first_dash_last() {
        let range = parse_id_range("1879048192-1879113727").unwrap();
        assert_eq!((range.first, range.count), (1_879_048_192, 65_536));
        for bad in ["", "5", "5-", "-5", "9-5", "1-2-3", "x-9", "1-4294967296"] {
            assert!(parse_id_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_prefixes_are_url_paths_under_cgi_bin() {
        for (text, kept) in [
            ("/cgi-bin/download", "/cgi-bin/download"),
            ("/cgi-bin/tools/", "/cgi-bin/tools"),
            ("/cgi-bin", "/cgi-bin"),
            ("/", "/"),
            ("/cgi-bin/a b%20", "/cgi-bin/a b%20"),
        ] {
            assert_eq!(
                parse_script_prefix(text).unwrap().to_string(),
                kept,
                "{text}"
            );
        }
        for (bad, says) in [
            ("cgi-bin/x", "must start with /"),
            ("", "must start with /"),
            ("/cgi-bin/../etc", "dot segment"),
            ("/cgi-bin/./x", "dot segment"),
            ("/cgi-bin/x/..", "dot segment"),
            ("/cgi-bin//x", "empty segment"),
            ("//", "empty segment"),
            ("/cgi-bin/x\n", "control byte"),
            ("/cgi-bin/\x7f", "control byte"),
            ("/cgi-bin/x\0", "control byte"),
            ("/cgi", "outside /cgi-bin"),
            ("/cgi-binx/y", "outside /cgi-bin"),
            ("/internal/secret", "outside /cgi-bin"),
        ] {
            let error = parse_script_prefix(bad).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn script_prefixes_match_on_whole_segments() {
        let prefix = |text| parse_script_prefix(text).unwrap();
        let download = prefix("/cgi-bin/download");
        assert!(download.matches("/cgi-bin/download"));
        assert!(download.matches("/cgi-bin/download/deeper"));
        assert!(!download.matches("/cgi-bin/downloadx"));
        assert!(!download.matches("/cgi-bin/dl"));
        assert!(!download.matches("/cgi-bin"));
        assert!(!prefix("/cgi-bin/dl").matches("/cgi-bin/dlx"));
        assert!(prefix("/cgi-bin/tools/").matches("/cgi-bin/tools/x"));
        assert!(!prefix("/cgi-bin/tools/").matches("/cgi-bin/toolsx"));
        for all in ["/", "/cgi-bin"] {
            assert!(prefix(all).matches("/cgi-bin/anything"), "{all}");
        }
    }

    #[test]
    fn pass_env_takes_plain_names_only() {
        assert_eq!(
            parse_pass_env("GIT_PROJECT_ROOT"),
            Ok("GIT_PROJECT_ROOT".into())
        );
        for bad in ["PATH", "HTTP_FOO", "QUERY_STRING", "A=B", "1X", ""] {
            assert!(parse_pass_env(bad).is_err(), "{bad}");
        }
        // What would have a front server's value (or a client's, passed on) run code: the
        // loader's, the shells', the interpreters'. A fixed value with --env stays possible.
        for runs in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "ENV",
            "PERL5OPT",
            "PYTHONPATH",
            "PHPRC",
            "GIT_CONFIG_PARAMETERS",
            "GIT_CONFIG_KEY_0",
        ] {
            let refused = parse_pass_env(runs).expect_err(runs);
            assert!(refused.contains("run code"), "{refused}");
        }
        assert!(parse_env("LD_LIBRARY_PATH=/opt/lib").is_ok());
        // Names that only carry data stay possible.
        for data in ["NODE_ENV", "PYTHONIOENCODING", "TMPDIR", "GIT_PROJECT_ROOT"] {
            assert_eq!(parse_pass_env(data), Ok(data.to_owned()));
        }
    }
}
