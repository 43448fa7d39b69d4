//! What a CGI may tell the front server. nginx, Apache and lighttpd act on some fields of an
//! upstream's answer instead of passing them on: `X-Accel-Redirect` makes nginx serve an
//! internal location (one no client may ask for), `X-Sendfile` makes Apache or lighttpd send a
//! file of the host's, outside the jail. A CGI is untrusted, so those fields are dropped from
//! every CGI's answer, by both fronts, unless `--allow-front-server-headers` names the script.
//! Each script that sends them is logged once, not once per request.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;

use http::{HeaderMap, HeaderName};

use crate::config::ScriptPrefix;

/// A response header field a front server acts on.
#[derive(Debug, Clone, Copy)]
pub enum FrontServerField {
    /// Every field whose name starts with this (lowercase).
    Prefix(&'static str),
    /// The field of this name (lowercase).
    Name(&'static str),
}

/// The fields of a CGI's answer that a common front server acts on rather than passing to
/// the client, each of which lets the CGI reach past the jail or past the front server's own
/// access rules. Names are lowercase: a parsed [`HeaderName`] always is, so any case a CGI
/// writes matches.
pub const FRONT_SERVER_HEADERS: &[FrontServerField] = &[
    // nginx, from proxy_pass and fastcgi_pass upstreams alike: X-Accel-Redirect (an internal
    // redirect to any location, `internal` ones included), -Limit-Rate, -Buffering, -Charset,
    // -Expires; the whole family, so a field nginx adds later is covered too.
    FrontServerField::Prefix("x-accel-"),
    // Apache's mod_xsendfile, lighttpd, Cherokee: send this file of the host's instead.
    FrontServerField::Name("x-sendfile"),
    // mod_xsendfile: the same, then delete the file.
    FrontServerField::Name("x-sendfile-temporary"),
    // lighttpd: send these files (and byte ranges) instead.
    FrontServerField::Name("x-sendfile2"),
    // lighttpd 1.4's older names for the two above.
    FrontServerField::Name("x-lighttpd-send-file"),
    FrontServerField::Name("x-lighttpd-send-file2"),
    // lighttpd 1.5's proxy core (with allow-x-rewrite): serve another URI, from another host
    // or backend, instead.
    FrontServerField::Name("x-rewrite-uri"),
    FrontServerField::Name("x-rewrite-host"),
    FrontServerField::Name("x-rewrite-backend"),
];

/// Most scripts remembered as already warned about. Scripts are the files of the jail's
/// /cgi-bin, rarely more than a few hundred; the bound keeps the memory fixed should a
/// compromised worker name endless different ones. Once full the set starts again, so a
/// script may be warned about once more after that many others.
pub const MAX_WARNED_SCRIPTS: usize = 1024;

/// Whether a front server acts on the field `name`.
pub fn is_front_server_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    FRONT_SERVER_HEADERS.iter().any(|field| match field {
        FrontServerField::Prefix(prefix) => name.starts_with(prefix),
        FrontServerField::Name(exact) => name == *exact,
    })
}

/// The scripts already warned about, shared by both fronts.
#[derive(Default)]
pub struct WarnedScripts {
    /// Hashes of the script paths, not the paths: a few bytes each, whatever a path's length.
    /// A collision only spares a warning.
    seen: Mutex<HashSet<u64>>,
    hasher: std::collections::hash_map::RandomState,
}

impl WarnedScripts {
    /// True the first time it is asked about `script` (since the set last filled up).
    fn first_time(&self, script: &str) -> bool {
        let hash = self.hasher.hash_one(script);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(&hash) {
            return false;
        }
        if seen.len() >= MAX_WARNED_SCRIPTS {
            seen.clear();
        }
        seen.insert(hash);
        true
    }
}

/// Removes the fields a front server acts on from the answer of `script` (its URL path, as
/// the router names it), unless one of `allowed` matches the script; the first time a script
/// loses some, says which, at warn level.
pub fn withhold(
    headers: &mut HeaderMap,
    script: &str,
    allowed: &[ScriptPrefix],
    warned: &WarnedScripts,
) {
    if allowed.iter().any(|prefix| prefix.matches(script)) {
        return;
    }
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_front_server_header(name))
        .cloned()
        .collect();
    if dropped.is_empty() {
        return;
    }
    // Built anew rather than with `remove`, which moves the last field into the gap: the
    // fields kept stay in the order the CGI wrote them.
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        if !is_front_server_header(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    *headers = kept;
    if warned.first_time(script) {
        let names: Vec<&str> = dropped.iter().map(HeaderName::as_str).collect();
        tracing::warn!(
            "{script}: front-server header fields dropped from its answer: {} (logged once \
             per script; --allow-front-server-headers {script} would let them through)",
            names.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::values::parse_script_prefix;
    use crate::front::http::response::{parse_head, HeadStyle};

    /// The fields of a head a CGI wrote with every front-server field in odd cases.
    fn answer() -> HeaderMap {
        parse_head(
            b"Content-Type: text/plain\n\
              X-ACCEL-REDIRECT: /internal/secret\n\
              x-accel-buffering: no\n\
              X-Accel-Some-Future-Field: 1\n\
              X-Sendfile: /etc/passwd\n\
              x-SENDFILE2: /etc/shadow 0-10\n\
              X-Sendfile-Temporary: /tmp/x\n\
              X-LIGHTTPD-send-file: /etc/passwd\n\
              X-Lighttpd-Send-File2: /etc/passwd 0-1\n\
              X-Rewrite-URI: /admin\n\
              X-Custom: 1\n\
              X-Accelerated: yes\n\
              X-Sendfile-Type: X-Accel-Redirect\n\
              Set-Cookie: a=1",
            HeadStyle::Cgi,
        )
        .unwrap()
        .headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn front_server_fields_are_dropped_in_any_case_and_others_kept() {
        let mut headers = answer();
        withhold(&mut headers, "/cgi-bin/x", &[], &WarnedScripts::default());
        // x-accelerated is no X-Accel- field; x-sendfile-type is no field anyone acts on.
        assert_eq!(
            names(&headers),
            [
                "content-type",
                "x-custom",
                "x-accelerated",
                "x-sendfile-type",
                "set-cookie"
            ]
        );
    }

    #[test]
    fn the_allow_rule_keeps_them_for_the_scripts_it_names() {
        let allowed = [parse_script_prefix("/cgi-bin/download").unwrap()];
        let warned = WarnedScripts::default();
        for script in ["/cgi-bin/download", "/cgi-bin/download/x"] {
            let mut headers = answer();
            withhold(&mut headers, script, &allowed, &warned);
            assert_eq!(headers, answer(), "{script}");
        }
        for script in ["/cgi-bin/downloadx", "/cgi-bin/dl", "/cgi-bin/other"] {
            let mut headers = answer();
            withhold(&mut headers, script, &allowed, &warned);
            assert!(headers.get("x-accel-redirect").is_none(), "{script}");
            assert!(headers.get("x-custom").is_some(), "{script}");
        }
        let everything = [parse_script_prefix("/cgi-bin").unwrap()];
        let mut headers = answer();
        withhold(&mut headers, "/cgi-bin/any", &everything, &warned);
        assert_eq!(headers, answer());
    }

    #[test]
    fn each_script_is_warned_about_once_within_the_bound() {
        let warned = WarnedScripts::default();
        assert!(warned.first_time("/cgi-bin/a"));
        assert!(!warned.first_time("/cgi-bin/a"));
        assert!(warned.first_time("/cgi-bin/b"));
        for n in 2..MAX_WARNED_SCRIPTS {
            assert!(warned.first_time(&format!("/cgi-bin/{n}")));
        }
        assert!(
            !warned.first_time("/cgi-bin/a"),
            "still remembered at the bound"
        );
        // One more fills it: the set starts again, and stays bounded.
        assert!(warned.first_time("/cgi-bin/one-too-many"));
        assert!(warned.first_time("/cgi-bin/a"));
        assert!(warned.seen.lock().unwrap().len() <= MAX_WARNED_SCRIPTS);
    }
}
