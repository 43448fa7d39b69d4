//! URL → script: `/cgi-bin/NAME/extra/path?query` runs the jail's `/cgi-bin/NAME` with
//! PATH_INFO `/extra/path` and QUERY_STRING `query`. Everything that could name another file
//! (dot segments, encoded slashes or dots, NUL) is refused here, before any worker sees it.

use super::error::RequestError;
use crate::config::CGI_DIR;

/// The URL prefix that maps to [`CGI_DIR`]: the same path, as URL paths map one to one onto
/// the jail.
pub const CGI_PREFIX: &str = "/cgi-bin/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path below `/cgi-bin/`, decoded, one entry per segment. Which leading segments
    /// name the script (RFC 3875 §4.1.13: the first that is a file) and which are PATH_INFO
    /// (§4.1.5) only the worker can tell, from inside the jail.
    pub segments: Vec<Vec<u8>>,
    /// The query exactly as sent, still encoded (RFC 3875 §4.1.7).
    pub query_string: String,
}

impl Route {
    /// The URL path of the first `count` segments (the script, once the worker has said),
    /// for logs and SCRIPT_NAME checks.
    pub fn url_path(&self, count: usize) -> String {
        let mut path = CGI_DIR.to_owned();
        for segment in self.segments.iter().take(count) {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(segment));
        }
        path
    }
}

pub fn route(path: &str, query: Option<&str>) -> Result<Route, RequestError> {
    let rest = path
        .strip_prefix(CGI_PREFIX)
        .ok_or(RequestError::NotFound)?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(RequestError::NotFound);
    }
    // Every segment of the whole path, not just the script's: dot segments in PATH_INFO are
    // how naive CGIs get tricked into opening other files.
    for segment in path.split('/') {
        let decoded = percent_decode(segment)?;
        // NUL cuts C strings short; CR, LF and the rest of the control bytes reach PATH_INFO,
        // where a CGI that echoes it into a header (or a log line) can be made to inject one.
        if decoded.iter().any(|&byte| byte < 0x20 || byte == 0x7f) {
            return Err(RequestError::BadRequest("control byte in path"));
        }
        if decoded == b"." || decoded == b".." {
            return Err(RequestError::BadRequest("dot segment in path"));
        }
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(RequestError::BadRequest("encoded slash in path"));
        }
    }
    let segments = rest
        .split('/')
        .map(percent_decode)
        .collect::<Result<Vec<_>, _>>()?;
    if segments[0].starts_with(b".") {
        // Hidden files in the CGI folder are not scripts (editor backups, .htaccess, ...).
        return Err(RequestError::NotFound);
    }
    Ok(Route {
        segments,
        query_string: query.unwrap_or("").to_owned(),
    })
}

/// Strict percent-decoding: a `%` not followed by two hex digits is an error, not a literal.
fn percent_decode(input: &str) -> Result<Vec<u8>, RequestError> {
    let bytes = input.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(RequestError::BadRequest("truncated %-escape"))?;
            // Exactly two hex digits: `from_str_radix` alone also takes a sign, so "%+1" would
            // decode to a control byte.
            let value = std::str::from_utf8(hex)
                .ok()
                .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(RequestError::BadRequest("invalid %-escape"))?;
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_url_prefix_is_the_cgi_folder() {
        assert_eq!(CGI_PREFIX, format!("{CGI_DIR}/"));
    }

    #[test]
    fn segments_and_query_are_kept_decoded_and_raw() {
        let route = route("/cgi-bin/hello.sh/a/b%20c", Some("x=%20y")).unwrap();
        assert_eq!(route.segments, [&b"hello.sh"[..], b"a", b"b c"]);
        assert_eq!(route.query_string, "x=%20y");
        assert_eq!(route.url_path(1), "/cgi-bin/hello.sh");
        let bare = route_ok("/cgi-bin/env");
        assert_eq!((bare.segments.len(), bare.query_string.as_str()), (1, ""));
        assert_eq!(route_ok("/cgi-bin/env/").segments, [&b"env"[..], b""]);
        assert_eq!(route_ok("/cgi-bin/hello%2Esh").segments, [&b"hello.sh"[..]]);
        // The bytes around the control range pass: space, `~`, and UTF-8 above 0x7F.
        assert_eq!(
            route_ok("/cgi-bin/env/%20~%C3%A9").segments,
            [&b"env"[..], " ~\u{e9}".as_bytes()]
        );
        assert_eq!(
            route_ok("/cgi-bin/app/run.sh/x").url_path(2),
            "/cgi-bin/app/run.sh"
        );
    }

    fn route_ok(path: &str) -> Route {
        route(path, None).unwrap()
    }

    #[test]
    fn paths_outside_the_cgi_prefix_are_not_found() {
        for path in [
            "/",
            "/cgi-bin",
            "/cgi-bin/",
            "/index.html",
            "/cgi-binx/a",
            "/x/cgi-bin/a",
            "/cgi-bin/.htaccess",
        ] {
            assert!(
                matches!(route(path, None), Err(RequestError::NotFound)),
                "{path}"
            );
        }
    }

    #[test]
    fn traversal_and_smuggling_are_bad_requests() {
        let hostile = [
            "/cgi-bin/../etc/passwd",
            "/cgi-bin/%2e%2e/etc/passwd",
            "/cgi-bin/%2E./x",
            "/cgi-bin/./hello",
            "/cgi-bin/a%2fb",
            "/cgi-bin/a%2Fb",
            "/cgi-bin/a%5cb",
            "/cgi-bin/a%00b",
            "/cgi-bin/hello/%00",
            "/cgi-bin/hello/../../x",
            "/cgi-bin/hello/x/%2e%2e/y",
            "/cgi-bin/hello%",
            "/cgi-bin/hello%4",
            "/cgi-bin/hello%zz",
            // Found by fuzzing (fuzz/corpus/router/seed-signed-escape): a sign was taken as
            // part of the escape, "%+1" decoding to 0x01.
            "/cgi-bin/hello%+1",
            "/cgi-bin/hello/%+f",
            "/cgi-bin/hello%-1",
            // Control bytes: header injection through PATH_INFO, terminal escapes in logs.
            "/cgi-bin/hello/a%0d%0aSet-Cookie:%20x=1",
            "/cgi-bin/hello/%0a",
            "/cgi-bin/hello/%0D",
            "/cgi-bin/hello%09",
            "/cgi-bin/hello/%1b[31m",
            "/cgi-bin/hello/%7f",
            "/cgi-bin/hello/%7F",
            "/cgi-bin/hello/%1F",
        ];
        for path in hostile {
            assert!(
                matches!(route(path, None), Err(RequestError::BadRequest(_))),
                "{path}"
            );
        }
    }
}
