//! CGIs we did not write for Jailgate, run unmodified: git's git-http-backend from Debian's
//! git package, a Python CGI on its standard library
//! and a Perl CGI on perl-base, each in a jail built by `jail init` with the interpreter's
//! files added (`--with`, `--add`), answering GET with PATH_INFO and a query, form POSTs with
//! and without a declared length, binary output and a large download.

use std::process::Command;
use std::time::Duration;

use crate::harness::{require_root, run_bounded, Jail, Opts};
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

/// Branches in the served repository: their `want` lines (50 bytes each) overflow a 64 KiB
/// request buffer, so the clone POSTs them chunked, without a length.
const GIT_BRANCHES: usize = 3_000;
/// A file of random bytes in the repository: binary output and a large download.
const GIT_BIG_FILE: usize = 16 << 20;

/// A CGI program shipped by a Debian package: git's `git-http-backend` (package git), serving
/// `git clone` over smart HTTP from a read-only repository in the jail. It needs PATH_INFO
/// (the repository and service), POSTs with a length and chunked ones without, and sends a
/// large binary download; it is configured the way Apache's SetEnv configures it (`--env`).
#[tokio::test(flavor = "multi_thread")]
async fn debian_git_http_backend_serves_a_clone() {
    require_root!();
    let git = "/usr/bin/git";
    let work = tempfile::TempDir::with_prefix("jailgate-e2e-git-").expect("temp dir");
    let repo = work.path().join("repo.git");
    let stream = work.path().join("import");
    std::fs::write(&stream, fast_import_stream()).expect("write the import stream");
    let made = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "{git} init -q --bare {repo} && {git} --git-dir={repo} fast-import --quiet < {stream} \
             && {git} --git-dir={repo} symbolic-ref HEAD refs/heads/main",
            repo = repo.display(),
            stream = stream.display()
        )),
        GIT_DEADLINE,
    );
    assert!(
        made.status.success(),
        "making the repository: {}",
        made.stderr
    );

    let jail = Jail::with_init_args(&[
        "--with",
        "/usr/lib/git-core/git",
        "--add",
        "/usr/lib/git-core/git-http-backend:/cgi-bin/git-http-backend",
        "--add",
        &format!("{}:/srv/git/repo.git", repo.display()),
    ]);
    // The repository belongs to root and git runs as nobody: safe.directory, as an Apache
    // setup would SetEnv it.
    let gw = jail.serve_with(
        Opts {
            workers: 1,
            ..Opts::default()
        },
        &[
            "--env",
            "GIT_PROJECT_ROOT=/srv/git",
            "--env",
            "GIT_HTTP_EXPORT_ALL=1",
            "--env",
            "GIT_CONFIG_COUNT=1",
            "--env",
            "GIT_CONFIG_KEY_0=safe.directory",
            "--env",
            "GIT_CONFIG_VALUE_0=*",
        ],
    );
    let clone = work.path().join("clone");
    let trace = work.path().join("curl-trace");
    let cloned = run_bounded(
        Command::new(git)
            // A request buffer just above git's smallest (LARGE_PACKET_MAX): a request that overflows it
            // goes out chunked.
            .args(["-c", "http.postBuffer=65536", "clone", "--no-checkout"])
            .arg(gw.url("/cgi-bin/git-http-backend/repo.git"))
            .arg(&clone)
            .env("GIT_TRACE_CURL", &trace)
            .env("GIT_TRACE_CURL_NO_DATA", "1"),
        GIT_DEADLINE,
    );
    assert!(
        cloned.status.success(),
        "git clone: {}\n{}",
        cloned.stderr,
        gw.stderr()
    );
    let trace = std::fs::read_to_string(&trace).expect("curl trace");
    assert!(
        trace.contains("Transfer-Encoding: chunked"),
        "the clone's request was sent chunked (else this test misses that case):\n{}",
        trace
            .lines()
            .filter(|line| line.contains("header:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Everything arrived: every branch, and the big file byte for byte.
    let branches = run_bounded(
        Command::new(git)
            .arg("--git-dir")
            .arg(clone.join(".git"))
            .args([
                "for-each-ref",
                "--format=%(refname)",
                "refs/remotes/origin/",
            ]),
        GIT_DEADLINE,
    );
    assert_eq!(
        branches
            .stdout
            .lines()
            .filter(|r| *r != "refs/remotes/origin/HEAD")
            .count(),
        GIT_BRANCHES + 1
    );
    let blob = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "{git} --git-dir={} cat-file blob main:big.bin | sha256sum",
            clone.join(".git").display()
        )),
        GIT_DEADLINE,
    );
    let expected = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "{git} --git-dir={} cat-file blob main:big.bin | sha256sum",
            repo.display()
        )),
        GIT_DEADLINE,
    );
    assert!(blob.status.success() && !blob.stdout.is_empty());
    assert_eq!(blob.stdout, expected.stdout, "big.bin arrived intact");
}

const GIT_DEADLINE: Duration = Duration::from_secs(120);

/// A `git fast-import` stream: `main` with big.bin (random bytes: incompressible), and
/// GIT_BRANCHES more branches of one small commit each.
fn fast_import_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..GIT_BIG_FILE)
        .map(|_| {
            // xorshift64: cheap, deterministic, incompressible enough for zlib.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    let commit = |stream: &mut Vec<u8>, branch: &str, message: &str| {
        stream.extend_from_slice(
            format!(
                "commit refs/heads/{branch}\ncommitter t <t@example.org> 0 +0000\ndata {}\n{message}\n",
                message.len()
            )
            .as_bytes(),
        );
    };
    commit(&mut stream, "main", "big");
    stream.extend_from_slice(format!("M 644 inline big.bin\ndata {}\n", big.len()).as_bytes());
    stream.extend_from_slice(&big);
    stream.push(b'\n');
    for i in 0..GIT_BRANCHES {
        commit(&mut stream, &format!("b{i}"), &format!("branch {i}"));
    }
    stream
}
