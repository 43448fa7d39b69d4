//! The CGI response header parser. A CGI is hostile (it runs whatever the jail lets it), and
//! what this parser accepts goes on to the client: any output must give a head or an error,
//! never a panic, and an accepted head must be one that is safe to send.
//!
//! Each input is a CGI's whole stdout, parsed in both styles (CGI and NPH):
//! - `read_head` on it as a pipe delivering it in one read, byte by byte, and in uneven
//!   pieces: the same head (or error) and the same body whatever the pieces, and the head is
//!   what `parse_head` says of the bytes before the body;
//! - `parse_head` on those bytes, and on the whole input as one header block: if accepted, the
//!   head holds the invariants below, parses the same again after being written out, and
//!   every Content-Length line in the block was digits.
#![no_main]

use std::io::Write;

use gateway::front::http::response::{parse_head, read_head, CgiHead, HeadStyle};
use http::{header, StatusCode};
use jailgate_fuzz::{block_on, PieceReader};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

fuzz_target!(|output: &[u8]| {
    for style in [HeadStyle::Cgi, HeadStyle::Nph] {
        check_block(output, style);
        let whole = read_stdout(PieceReader::whole(output), style);
        let bytewise = read_stdout(PieceReader::bytewise(output), style);
        let uneven = read_stdout(PieceReader::uneven(output, output.len()), style);
        assert_eq!(whole, bytewise, "byte-by-byte reads change the result");
        assert_eq!(whole, uneven, "uneven reads change the result");
        if let Ok((head, body)) = &whole {
            assert!(output.ends_with(body) && body.len() < output.len());
            let before_body = &output[..output.len() - body.len()];
            let parsed = parse_head(before_body, style).map(|head| format!("{head:?}"));
            assert_eq!(parsed.as_ref().ok(), Some(head));
            check_block(before_body, style);
        }
    }
});

/// Parses `block` as a header block; if accepted, checks the head.
fn check_block(block: &[u8], style: HeadStyle) {
    if let Ok(head) = parse_head(block, style) {
        check_head(&head, style);
        check_reparse(&head, style);
        check_lengths_were_digits(block, style);
    }
}

/// The head (as its Debug text: `CgiHead` has no `PartialEq`) or error, and the whole body:
/// what `read_head` returned of it plus the rest of the pipe.
fn read_stdout(mut pipe: PieceReader<'_>, style: HeadStyle) -> Result<(String, Vec<u8>), String> {
    block_on(async {
        let (head, first) = read_head(&mut pipe, style)
            .await
            .map_err(|error| format!("{error:?}"))?;
        let mut body = first.to_vec();
        pipe.read_to_end(&mut body).await.expect("in memory");
        Ok((format!("{head:?}"), body))
    })
}

/// What every accepted head must be.
fn check_head(head: &CgiHead, style: HeadStyle) {
    // A final status: 1xx would leave the client waiting for another response.
    assert!((200..=999).contains(&head.status.as_u16()), "{head:?}");
    // Framing and connection management are the gateway's, never the CGI's; Status is ours.
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "status",
    ] {
        assert!(
            !head.headers.contains_key(name),
            "{name} passed on: {head:?}"
        );
    }
    let lengths: Vec<_> = head
        .headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .collect();
    match head.content_length {
        Some(length) => assert_eq!(lengths, [&length.to_string()], "{head:?}"),
        None => assert!(lengths.is_empty(), "{head:?}"),
    }
    let location = head.headers.get(header::LOCATION);
    if let Some(path) = &head.local_redirect {
        assert_eq!(style, HeadStyle::Cgi);
        assert!(path.starts_with('/'));
        assert_eq!(location.map(|l| l.as_bytes()), Some(path.as_bytes()));
    }
    // RFC 3875 §6.3.1: a document says what it is.
    let bodiless = [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED].contains(&head.status);
    if style == HeadStyle::Cgi && !bodiless && head.local_redirect.is_none() {
        assert!(
            location.is_some() || head.headers.contains_key(header::CONTENT_TYPE),
            "{head:?}"
        );
    }
    // hyper gets it as a response: it must be one.
    let mut response = http::Response::builder().status(head.status);
    for (name, value) in &head.headers {
        response = response.header(name, value);
    }
    response.body(()).expect("a valid response");
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`. The parser is strict (a guess would be passed
/// on), so an accepted block has no other kind of Content-Length line.
fn check_lengths_were_digits(block: &[u8], style: HeadStyle) {
    let skip = usize::from(style == HeadStyle::Nph);
    for line in block.split(|&b| b == b'\n').skip(skip) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..].trim_ascii();
            assert!(
                !value.is_empty() && value.iter().all(u8::is_ascii_digit),
                "Content-Length {:?} accepted",
                String::from_utf8_lossy(value)
            );
        }
    }
}

/// Written out again (as the CGI would have, with its status made explicit unless that
/// would change its kind), an accepted head parses to the same head.
fn check_reparse(head: &CgiHead, style: HeadStyle) {
    let mut block = Vec::new();
    match style {
        HeadStyle::Nph => write!(block, "HTTP/1.1 {}\r\n", head.status.as_u16()),
        // A local redirect is one because it has no Status.
        HeadStyle::Cgi if head.local_redirect.is_some() => Ok(()),
        HeadStyle::Cgi => write!(block, "Status: {}\r\n", head.status.as_u16()),
    }
    .expect("in memory");
    for (name, value) in &head.headers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let again = parse_head(&block, style).expect("a written-out head parses");
    assert_eq!(again.status, head.status);
    assert_eq!(again.headers, head.headers);
    assert_eq!(again.content_length, head.content_length);
    assert_eq!(again.local_redirect, head.local_redirect);
}
