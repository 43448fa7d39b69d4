//! The URL router: the one place that decides which file of the jail a request may name.
//! Each input is a request target, `path` or `path?query`, as a client sends it (any text:
//! the router must not rely on hyper having refused odd bytes). Checks:
//! - never a panic;
//! - an accepted path has a script segment that is neither empty nor hidden, and no segment
//!   that is `.` or `..` or holds `/`, `\` or NUL once decoded (an empty segment is allowed:
//!   `/cgi-bin/env/` has PATH_INFO `/`, and the worker never takes one into a script path);
//! - the verdict and the segments agree with a plain reference router written from the
//!   rules in `router.rs`'s documentation (strict percent-decoding: `%` and two hex digits);
//! - segments with any bytes, percent-encoded the way a client does, are accepted exactly
//!   when the rules allow them, and decode back to themselves.
#![no_main]

use gateway::front::request::error::RequestError;
use gateway::front::request::router::{route, Route, CGI_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|target: &[u8]| {
    let text = String::from_utf8_lossy(target);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*text, None),
    };
    let routed = route(path, query);
    if let Ok(route) = &routed {
        check_route(route, query);
    }
    assert_eq!(verdict(&routed), verdict(&reference(path)), "{path:?}");
    if let (Ok(route), Ok(segments)) = (&routed, reference(path)) {
        assert_eq!(route.segments, segments, "{path:?}");
    }
    // The same bytes as the segments of a path, percent-encoded.
    let segments: Vec<&[u8]> = target.split(|&b| b == b'|').collect();
    let encoded = encode_path(&segments);
    let routed = route(&encoded, None);
    let allowed = segments_allowed(&segments);
    assert_eq!(routed.is_ok(), allowed, "{encoded:?}");
    if let Ok(route) = routed {
        assert_eq!(route.segments, segments, "{encoded:?}");
    }
});

fn check_route(route: &Route, query: Option<&str>) {
    let script = &route.segments[0];
    assert!(!script.is_empty() && !script.starts_with(b"."), "{route:?}");
    for segment in &route.segments {
        assert!(segment_allowed(segment), "{route:?}");
    }
    assert_eq!(route.query_string, query.unwrap_or(""));
    for count in 0..=route.segments.len() + 1 {
        assert!(route.url_path(count).starts_with("/cgi-bin"));
    }
}

fn segment_allowed(segment: &[u8]) -> bool {
    segment != b"."
        && segment != b".."
        && !segment
            .iter()
            .any(|&b| matches!(b, b'/' | b'\\' | 0..=0x1f | 0x7f))
}

fn segments_allowed(segments: &[&[u8]]) -> bool {
    let script = segments[0];
    !script.is_empty() && !script.starts_with(b".") && segments.iter().all(|s| segment_allowed(s))
}

/// `NotFound`, `BadRequest` or accepted: the error texts are the router's business.
fn verdict<T>(result: &Result<T, RequestError>) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(RequestError::NotFound) => "not found",
        Err(RequestError::BadRequest(_)) => "bad request",
        Err(_) => "another error",
    }
}

/// The rules, written plainly: outside `/cgi-bin/NAME` is not found; then any segment of the
/// path that does not decode, or decodes to something that could name another file, is a bad
/// request; then a hidden script is not found.
fn reference(path: &str) -> Result<Vec<Vec<u8>>, RequestError> {
    let Some(rest) = path.strip_prefix("/cgi-bin/") else {
        return Err(RequestError::NotFound);
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(RequestError::NotFound);
    }
    let mut decoded = Vec::new();
    for segment in path.split('/') {
        let segment = strict_decode(segment).ok_or(RequestError::BadRequest("escape"))?;
        if !segment_allowed(&segment) {
            return Err(RequestError::BadRequest("segment"));
        }
        decoded.push(segment);
    }
    // "", "cgi-bin", then the segments below it.
    let segments = decoded.split_off(2);
    if segments[0].starts_with(b".") {
        return Err(RequestError::NotFound);
    }
    Ok(segments)
}

/// RFC 3986 §2.1: `%` HEXDIG HEXDIG, nothing else.
fn strict_decode(segment: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let high = (bytes.next()? as char).to_digit(16)?;
        let low = (bytes.next()? as char).to_digit(16)?;
        out.push((high * 16 + low) as u8);
    }
    Some(out)
}

/// `/cgi-bin/` and the segments joined by `/`, every byte but RFC 3986's unreserved ones
/// percent-encoded (in upper or lower case hex, as clients differ).
fn encode_path(segments: &[&[u8]]) -> String {
    let mut path = CGI_PREFIX.to_owned();
    for (index, segment) in segments.iter().enumerate() {
        if index > 0 {
            path.push('/');
        }
        for &byte in *segment {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                path.push(byte as char);
            } else if byte % 2 == 0 {
                path.push_str(&format!("%{byte:02X}"));
            } else {
                path.push_str(&format!("%{byte:02x}"));
            }
        }
    }
    path
}
