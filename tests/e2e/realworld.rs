//! CGIs we did not write for Jailgate, run unmodified: a Python CGI on its standard library
//! and a Perl CGI on perl-base, each in a jail built by `jail init` with the interpreter's
//! files added (`--with`, `--add`), answering GET with PATH_INFO and a query, form POSTs with
//! and without a declared length, binary output and a large download.

use std::time::Duration;

use crate::harness::{require_root, Jail, Opts};
use crate::http::client;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A classic stdlib-only Python CGI: parses the query and an urlencoded form, answers JSON;
/// `/bytes` sends binary output of a length the query asks for.
const PYTHON_CGI: &str = r#"#!/usr/bin/python3
import json, os, sys, urllib.parse
path = os.environ.get("PATH_INFO", "")
query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
if path == "/bytes":
    size = int(query.get("size", ["0"])[0])
    block = bytes(range(256))
    out = sys.stdout.buffer
    out.write(b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size)
    for start in range(0, size, len(block)):
        out.write(block[: min(len(block), size - start)])
    sys.exit(0)
length = int(os.environ.get("CONTENT_LENGTH") or 0)
form = urllib.parse.parse_qs(sys.stdin.buffer.read(length).decode()) if length else {}
print("Content-Type: application/json")
print()
print(json.dumps({"method": os.environ["REQUEST_METHOD"], "path": path, "query": query, "form": form}, sort_keys=True))
"#;

/// A core-Perl CGI (perl-base only): reads its body, answers text.
const PERL_CGI: &str = r#"#!/usr/bin/perl
use strict;
use warnings;
my $length = $ENV{CONTENT_LENGTH} || 0;
my $body = '';
read(STDIN, $body, $length) if $length;
my %form = map { my ($k, $v) = split /=/, $_, 2; ($k, $v // '') } grep { length } split /&/, $body;
print "Content-Type: text/plain\r\n\r\n";
printf "%s %s name=%s bytes=%d\n", $ENV{REQUEST_METHOD}, $ENV{PATH_INFO} || '-', $form{name} // '-', length $body;
"#;

fn install(jail: &Jail, name: &str, script: &str) {
    jail.file(name, script, 0o755);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_stdlib_cgi_runs_unmodified() {
    require_root!();
    let jail = Jail::with_init_args(&[
        "--profile",
        "minimal",
        "--with",
        "python3",
        "--add",
        "/usr/lib/python3.11",
    ]);
    install(&jail, "app.py", PYTHON_CGI);
    let gw = jail.serve(Opts {
        workers: 1,
        ..Opts::default()
    });
    let http = client(TIMEOUT);

    let get = http
        .get(gw.url("/cgi-bin/app.py/items/7?sort=asc&tag=a&tag=b"))
        .send()
        .await
        .expect("response");
    assert_eq!(get.status().as_u16(), 200);
    assert_eq!(get.headers()["content-type"], "application/json");
    assert_eq!(
        get.text().await.expect("body"),
        r#"{"form": {}, "method": "GET", "path": "/items/7", "query": {"sort": ["asc"], "tag": ["a", "b"]}}"#.to_owned() + "\n"
    );
    // What a browser sends for name="Ann Lee", note="a&b=c".
    let posted = http
        .post(gw.url("/cgi-bin/app.py"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ann+Lee&note=a%26b%3Dc")
        .send()
        .await
        .expect("response");
    assert_eq!(
        posted.text().await.expect("body"),
        r#"{"form": {"name": ["Ann Lee"], "note": ["a&b=c"]}, "method": "POST", "path": "", "query": {}}"#.to_owned() + "\n"
    );
    // Chunked upload: the gateway spools it, so the CGI still gets its CONTENT_LENGTH.
    let parts: Vec<Result<&'static [u8], std::io::Error>> = vec![Ok(b"name=chunk"), Ok(b"ed+body")];
    let chunked = http
        .post(gw.url("/cgi-bin/app.py"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts,
        )))
        .send()
        .await
        .expect("response");
    assert!(chunked
        .text()
        .await
        .expect("body")
        .contains(r#""form": {"name": ["chunked body"]}"#));
    // Binary output and a large download arrive exact, with the CGI's own Content-Length.
    let size = 4 * 1024 * 1024 + 17;
    let download = http
        .get(gw.url(&format!("/cgi-bin/app.py/bytes?size={size}")))
        .send()
        .await
        .expect("response");
    assert_eq!(
        download.headers()["content-length"],
        size.to_string().as_str()
    );
    let bytes = download.bytes().await.expect("body");
    assert_eq!(bytes.len(), size);
    assert!(
        bytes.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8),
        "binary output intact"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn perl_core_cgi_runs_unmodified() {
    require_root!();
    let jail = Jail::with_init_args(&[
        "--profile",
        "minimal",
        "--with",
        "perl",
        "--add",
        "/usr/lib/x86_64-linux-gnu/perl-base",
    ]);
    install(&jail, "form.pl", PERL_CGI);
    let gw = jail.serve(Opts {
        workers: 1,
        ..Opts::default()
    });
    let http = client(TIMEOUT);
    let get = http
        .get(gw.url("/cgi-bin/form.pl/a/b"))
        .send()
        .await
        .expect("response");
    assert_eq!(
        (get.status().as_u16(), get.text().await.expect("body")),
        (200, "GET /a/b name=- bytes=0\n".to_owned())
    );
    let posted = http
        .post(gw.url("/cgi-bin/form.pl"))
        .body("name=perl&x=1")
        .send()
        .await
        .expect("response");
    assert_eq!(
        posted.text().await.expect("body"),
        "POST - name=perl bytes=13\n"
    );
}
