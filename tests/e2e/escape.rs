//! Escape attempts: each test installs a real CGI that tries one way out of the jail (or one
//! way to take the machine down from inside it), asserts that the attempt failed in the
//! specific way the design says it must, and that the gateway still answers a normal `hello`
//! with 200 afterwards. The resource attacks also measure `hello` latency while they run.
//!
//! The C attacks live in `e2e/attacks/*.c`; they are compiled once per test run with
//! `cc -static -O1` (static, so they need nothing from the jail) into
//! `target/<profile>/e2e-attacks/`, and print their own CGI header and `key=value` results.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::{
    bin_dir, gateway_bin, jail_root_entries, one_worker, require_root, run_bounded, Gateway, Jail,
    Opts, FRONT_ID, LEAK_VALUE, WORKER_ID,
};
use crate::http::client;
use crate::procfs::{self, ProcStat};

pub(crate) const HELLO: &str = r"printf 'Content-Type: text/plain\n\nhello\n'";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The C attack programs.

/// The programs in `e2e/attacks/`, by file stem.
const ATTACKS: &[&str] = &[
    "chroot_break",
    "setuid_root",
    "mknod",
    "ptrace",
    "connect",
    "forkbomb",
    "membomb",
    "abstract_unix",
    "x32",
    "signal_all",
    "starve",
    "memfd_exec",
    "sysv",
    "syscalls",
    "tmp_steal",
    "tmp_pin",
    "front_server",
    "null_lock",
    "sigpending",
];

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Compiles every attack with `cc -static -O1 -o OUT SRC` into `target/<profile>/e2e-attacks`
/// (a build output like the binaries next to it, so no temp folder is left behind).
fn build_attacks() -> Result<PathBuf, String> {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/attacks");
    let out = bin_dir().join("e2e-attacks");
    fs::create_dir_all(&out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    for name in ATTACKS {
        let source = sources.join(format!("{name}.c"));
        let partial = out.join(format!("{name}.partial"));
        let mut cmd = Command::new("cc");
        cmd.args(["-static", "-O1", "-o"])
            .arg(&partial)
            .arg(&source);
        let done = run_bounded(&mut cmd, Duration::from_secs(120));
        if !done.status.success() {
            return Err(format!(
                "cc -static -O1 -o {} {} failed ({}); static glibc (libc6-dev) missing?\n{}{}",
                partial.display(),
                source.display(),
                done.status,
                done.stdout,
                done.stderr
            ));
        }
        let program = out.join(name);
        fs::rename(&partial, &program).map_err(|e| format!("rename to {name}: {e}"))?;
    }
    Ok(out)
}

/// The compiled attack `name` (built on first use, once per test run).
pub(crate) fn attack(name: &str) -> PathBuf {
    assert!(ATTACKS.contains(&name), "unknown attack {name}");
    let dir = BUILT
        .get_or_init(build_attacks)
        .as_ref()
        .unwrap_or_else(|e| panic!("building the attack programs: {e}"));
    dir.join(name)
}

// ---------------------------------------------------------------------------------------------
// Reading what a CGI reported.

/// A prelude for `#!/bin/sh` attack CGIs: the header, then `probe NAME 'COMMAND'` runs the
/// command with `sh -c` and prints `NAME|EXIT_STATUS|OUTPUT` (output on one line).
const PROBE: &str = r#"printf 'Content-Type: text/plain\n\n'
probe() {
  msg=$(sh -c "$2" 2>&1)
  rc=$?
  printf '%s|%s|%s\n' "$1" "$rc" "$(printf '%s' "$msg" | tr '\n\0' '  ')"
}"#;

#[derive(Debug)]
struct Probe {
    rc: i32,
    msg: String,
}

/// The `NAME|RC|OUTPUT` lines of a [`PROBE`] CGI.
fn probes(body: &str) -> BTreeMap<String, Probe> {
    body.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '|');
            let name = parts.next()?.to_owned();
            let rc = parts.next()?.parse().ok()?;
            let msg = parts.next()?.to_owned();
            Some((name, Probe { rc, msg }))
        })
        .collect()
}

fn probe<'a>(all: &'a BTreeMap<String, Probe>, name: &str, body: &str) -> &'a Probe {
    all.get(name)
        .unwrap_or_else(|| panic!("probe {name} did not report; the CGI said:\n{body}"))
}

/// The value of the first `key=value` line, as a C attack prints them.
pub(crate) fn value<'a>(body: &'a str, key: &str) -> &'a str {
    values(body, key)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no `{key}=` line in the CGI's report:\n{body}"))
}

fn values<'a>(body: &'a str, key: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests.

async fn get_text(gw: &Gateway, path: &str) -> (u16, String) {
    let response = client(REQUEST_TIMEOUT)
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
    (status, body)
}

/// GET a CGI that must answer 200; returns its body.
pub(crate) async fn report_of(gw: &Gateway, path: &str) -> String {
    let (status, body) = get_text(gw, path).await;
    assert_eq!(status, 200, "GET {path}: body:\n{body}");
    body
}

/// The gateway still serves a normal request: `hello` answers 200 `hello\n`.
pub(crate) async fn assert_hello(gw: &Gateway) {
    let (status, body) = get_text(gw, "/cgi-bin/hello").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello\n"),
        "a normal request after the attack"
    );
}

/// Median time of 5 sequential `hello` requests on `http` (kept alive), each checked.
async fn hello_median(http: &reqwest::Client, gw: &Gateway) -> Duration {
    let mut times = Vec::new();
    for i in 0..5 {
        let start = Instant::now();
        let response = http
            .get(gw.url("/cgi-bin/hello"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("hello {i}: {e}"));
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        times.push(start.elapsed());
        assert_eq!(
            (status, &body[..]),
            (200, &b"hello\n"[..]),
            "hello {i} (during the attack if one runs)"
        );
    }
    times.sort();
    times[2]
}

/// During ≤ max(2 × before, before + 50 ms): the machine is noisy, so medians and a floor.
fn assert_latency(attack: &str, before: Duration, during: Duration) {
    let limit = (before * 2).max(before + Duration::from_millis(50));
    eprintln!(
        "LATENCY {attack}: hello median before {before:?}, during {during:?} (limit {limit:?})"
    );
    assert!(
        during <= limit,
        "{attack}: hello took {during:?} (median of 5) during the attack, {before:?} before; \
         limit max(2x, +50 ms) = {limit:?}"
    );
}

/// When an attack counts as being in full effect.
#[derive(Clone, Copy)]
pub(crate) enum Arm {
    /// Its report has a line saying exactly this.
    Line(&'static str),
    /// This many body bytes have arrived.
    Bytes(u64),
}

/// How an attack's response ended.
#[derive(Debug)]
pub(crate) struct AttackRun {
    pub(crate) status: u16,
    /// The first bytes of the body (up to 1 MiB), as text.
    pub(crate) head: String,
    /// All body bytes received.
    pub(crate) total: u64,
    /// Why the body did not end cleanly (`None`: a complete response).
    pub(crate) error: Option<String>,
    /// From sending the request to the end of the body.
    pub(crate) took: Duration,
}

pub(crate) struct Running {
    pub(crate) armed: oneshot::Receiver<()>,
    pub(crate) task: JoinHandle<AttackRun>,
}

/// Sends the attack request on its own client and reads the body as it streams, at most
/// `rate` bytes per second if given and never more than `stop_after` bytes.
pub(crate) fn start_attack(
    gw: &Gateway,
    path: &str,
    arm: Arm,
    rate: Option<u64>,
    stop_after: u64,
) -> Running {
    let url = gw.url(path);
    let (tx, armed) = oneshot::channel();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut run = AttackRun {
            status: 0,
            head: String::new(),
            total: 0,
            error: None,
            took: Duration::ZERO,
        };
        let response = match client(Duration::from_secs(90)).get(url).send().await {
            Ok(response) => response,
            Err(e) => {
                run.error = Some(format!("request: {e}"));
                run.took = started.elapsed();
                return run;
            }
        };
        run.status = response.status().as_u16();
        let mut tx = Some(tx);
        let mut head = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    run.error = Some(format!("body after {} bytes: {e}", run.total));
                    break;
                }
            };
            run.total += chunk.len() as u64;
            if head.len() < MIB as usize {
                head.extend_from_slice(&chunk[..chunk.len().min(MIB as usize - head.len())]);
            }
            let is_armed = match arm {
                Arm::Line(line) => String::from_utf8_lossy(&head).lines().any(|l| l == line),
                Arm::Bytes(n) => run.total >= n,
            };
            if is_armed {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            if run.total > stop_after {
                run.error = Some(format!("stopped reading after {} bytes", run.total));
                break;
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(run.total as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        run.head = String::from_utf8_lossy(&head).into_owned();
        run.took = started.elapsed();
        run
    });
    Running { armed, task }
}

async fn finish(task: JoinHandle<AttackRun>) -> AttackRun {
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the attack request ends within 120 s")
        .expect("the attack reader did not panic")
}

/// What one resource attack showed: how its response ended, and `hello` before and during.
struct Measured {
    run: AttackRun,
    before: Duration,
    during: Duration,
    /// The gateway's descendants right after the attack was armed.
    armed_procs: Vec<ProcStat>,
}

/// Measures `hello` (median of 5), starts the attack, waits until it is armed, measures
/// `hello` again while it runs, then waits for the attack's response to end and checks that
/// `hello` still works.
async fn measure_attack(
    gw: &Gateway,
    path: &str,
    arm: Arm,
    rate: Option<u64>,
    stop_after: u64,
) -> Measured {
    let http = client(REQUEST_TIMEOUT);
    assert_hello(gw).await;
    let before = hello_median(&http, gw).await;
    let Running { armed, task } = start_attack(gw, path, arm, rate, stop_after);
    match tokio::time::timeout(Duration::from_secs(60), armed).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            let run = finish(task).await;
            panic!("{path}: the attack ended before it was armed: {run:#?}");
        }
        Err(_) => {
            task.abort();
            panic!("{path}: the attack was not armed within 60 s");
        }
    }
    let armed_procs = gw.descendants();
    let during = hello_median(&http, gw).await;
    let run = finish(task).await;
    eprintln!(
        "ATTACK {path}: status {}, {} bytes in {:?}, error {:?}, report {:?}",
        run.status,
        run.total,
        run.took,
        run.error,
        if run.head.contains('\0') {
            "(binary)"
        } else {
            run.head.get(..run.head.len().min(300)).unwrap_or_default()
        }
    );
    assert_hello(gw).await;
    Measured {
        run,
        before,
        during,
        armed_procs,
    }
}

/// Polls up to `deadline` until no live descendant of the gateway is named `comm`.
fn assert_none_named(gw: &Gateway, comm: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let left: Vec<ProcStat> = gw
            .descendants()
            .into_iter()
            .filter(|p| p.comm == comm && !p.is_zombie())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "{} `{comm}` processes still live under the gateway {deadline:?} after the \
             request: {left:?}",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and writing what is not the CGI's.

#[tokio::test(flavor = "multi_thread")]
async fn host_files_cannot_be_read() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let gateway_path = gateway_bin();
    let gateway_path = gateway_path.to_str().expect("UTF-8 path");
    jail.cgi(
        "read",
        &format!(
            "{PROBE}
probe shadow 'cat /etc/shadow'
probe gateway_binary 'cat {gateway_path} >/dev/null'
probe proc1_environ 'cat /proc/1/environ'
probe ls_root 'ls -a /'"
        ),
    );
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/read").await;
    let all = probes(&body);

    let shadow = probe(&all, "shadow", &body);
    assert!(
        shadow.rc != 0 && shadow.msg.contains("No such file"),
        "reading /etc/shadow in the jail: {shadow:?}"
    );
    if let Ok(host_shadow) = fs::read_to_string("/etc/shadow") {
        let first = host_shadow.lines().next().unwrap_or_default();
        assert!(
            first.is_empty() || !body.contains(first),
            "the host's /etc/shadow reached the CGI"
        );
    }
    let binary = probe(&all, "gateway_binary", &body);
    assert!(
        binary.rc != 0 && binary.msg.contains("No such file"),
        "reading the gateway binary at its host path {gateway_path}: {binary:?}"
    );
    let environ = probe(&all, "proc1_environ", &body);
    // No /proc in the jail gives ENOENT; a /proc of the worker's PID namespace would show the
    // worker as pid 1, which is not dumpable, so EACCES. Either way, nothing is read.
    eprintln!("NOTE: cat /proc/1/environ in a CGI: {environ:?}");
    assert_ne!(environ.rc, 0, "reading /proc/1/environ: {environ:?}");
    assert!(
        !body.contains(LEAK_VALUE),
        "the gateway's environment reached the CGI: {body}"
    );
    let ls = probe(&all, "ls_root", &body);
    assert_eq!(ls.rc, 0, "ls -a /: {ls:?}");
    let seen: BTreeSet<String> = ls.msg.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        seen,
        jail_root_entries(gw.root()),
        "`ls -a /` lists exactly the jail"
    );
    assert_hello(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn program_areas_cannot_be_written() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "write",
        &format!(
            "{PROBE}
probe bin ': > /bin/jailgate-planted'
probe usr_bin ': > /usr/bin/jailgate-planted'
probe cgi_bin ': > /cgi-bin/jailgate-planted'
probe etc ': > /etc/jailgate-planted'
probe root ': > /jailgate-planted'
probe dev ': > /dev/jailgate-planted'
probe overwrite_hello 'echo pwned > /cgi-bin/hello'
probe append_hello 'echo pwned >> /cgi-bin/hello'
probe chmod_hello 'chmod 777 /cgi-bin/hello'
probe rm_hello 'rm -f /cgi-bin/hello'"
        ),
    );
    let hello_before = fs::read(jail.root().join("cgi-bin/hello")).expect("hello on the host");
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/write").await;
    let all = probes(&body);
    // The folders are root-owned 0755, so plain permissions alone would say EACCES; for
    // creating, truncating, chmod and unlink the kernel checks the read-only mount first
    // (EROFS), which is what shows the mount is there.
    for name in [
        "bin",
        "usr_bin",
        "cgi_bin",
        "etc",
        "root",
        "overwrite_hello",
        "chmod_hello",
        "rm_hello",
    ] {
        let p = probe(&all, name, &body);
        assert!(
            p.rc != 0 && p.msg.contains("Read-only file system"),
            "{name}: the write must fail with EROFS (read-only mount): {p:?}"
        );
    }
    // Opening an existing file to append checks the file's permission bits (EACCES) before
    // the mount's read-only flag, which only the superblock check would see first (a bind
    // mount's `ro` is per mount): so EACCES is the kernel's answer here either way.
    let append = probe(&all, "append_hello", &body);
    assert!(
        append.rc != 0
            && (append.msg.contains("Permission denied")
                || append.msg.contains("Read-only file system")),
        "append_hello: {append:?}"
    );
    // /dev is its own small tmpfs: read-only or root's, the contract does not say which.
    let dev = probe(&all, "dev", &body);
    assert!(
        dev.rc != 0
            && (dev.msg.contains("Read-only file system") || dev.msg.contains("Permission denied")),
        "dev: creating a file in /dev must fail: {dev:?}"
    );
    let root = gw.root();
    for dir in ["", "bin", "usr/bin", "cgi-bin", "etc", "dev"] {
        let planted = root.join(dir).join("jailgate-planted");
        assert!(!planted.exists(), "{} was created", planted.display());
    }
    let hello_after = fs::read(root.join("cgi-bin/hello")).expect("hello still on the host");
    assert_eq!(hello_after, hello_before, "/cgi-bin/hello was changed");
    let mode = fs::metadata(root.join("cgi-bin/hello"))
        .expect("hello metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "/cgi-bin/hello mode was changed");
    assert_hello(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_nodes_cannot_be_made() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("mknod", &attack("mknod"), 0o755);
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/mknod").await;
    // No CAP_MKNOD: EPERM. (Were it made, /tmp is nodev and the open would fail.)
    assert_eq!(value(&body, "mknod_null"), "EPERM", "{body}");
    assert_eq!(value(&body, "mknod_mem"), "EPERM", "{body}");
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_hello(&gw).await;
}

/// x32 system calls (the x86-64 numbers with bit 30 set) fail whatever the kernel: the
/// denylist by number would not see them.
#[cfg(target_arch = "x86_64")]
#[tokio::test(flavor = "multi_thread")]
async fn x32_system_calls_are_refused() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("x32", &attack("x32"), 0o755);
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/x32").await;
    assert_eq!(value(&body, "getpid"), "ok", "{body}");
    assert_eq!(value(&body, "x32_getpid"), "EPERM", "{body}");
    assert_eq!(value(&body, "x32_unshare"), "EPERM", "{body}");
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_hello(&gw).await;
}

/// The interpreter (program loader) of the jail's dynamically linked programs.
#[cfg(target_arch = "x86_64")]
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
const LOADER: &str = "/lib/ld-linux-aarch64.so.1";

#[tokio::test(flavor = "multi_thread")]
async fn programs_copied_to_tmp_cannot_run() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "exectmp",
        &format!(
            "{PROBE}
probe control '/bin/sh -c \"echo pwned\"'
probe copy 'cp /bin/sh /tmp/jailgate-sh && chmod 755 /tmp/jailgate-sh'
probe exec '/tmp/jailgate-sh -c \"echo pwned\"'
probe loader '{LOADER} /tmp/jailgate-sh -c \"echo pwned\"'
probe cleanup 'rm -f /tmp/jailgate-sh'"
        ),
    );
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/exectmp").await;
    let all = probes(&body);
    let control = probe(&all, "control", &body);
    assert!(
        control.rc == 0 && control.msg.contains("pwned"),
        "control: /bin/sh runs: {control:?}"
    );
    let copy = probe(&all, "copy", &body);
    assert_eq!(
        copy.rc, 0,
        "copying sh to the writable /tmp works: {copy:?}"
    );
    let exec = probe(&all, "exec", &body);
    assert!(
        exec.rc != 0 && !exec.msg.contains("pwned") && exec.msg.contains("Permission denied"),
        "running /tmp/jailgate-sh must fail with EACCES (noexec /tmp): {exec:?}"
    );
    // Through the loader: ld.so opens the file itself and maps its segments with PROT_EXEC;
    // on a noexec mount that mmap fails with EPERM, and the loader reports "error while
    // loading shared libraries: /tmp/jailgate-sh: failed to map segment from shared object"
    // (exit 127), as seen on this machine's kernel (6.x). The exec bit of the mount is not
    // what stops it here (the loader is exec'd from the exec-allowed /usr): mmap(2) refusing
    // PROT_EXEC mappings of files on a noexec mount is.
    let loader = probe(&all, "loader", &body);
    eprintln!("NOTE: {LOADER} /tmp/jailgate-sh: {loader:?}");
    assert!(
        loader.rc != 0 && !loader.msg.contains("pwned"),
        "running /tmp/jailgate-sh through {LOADER} must fail: {loader:?}"
    );
    assert!(
        loader.msg.contains("failed to map segment"),
        "the loader must fail at the PROT_EXEC mmap (noexec), not for another reason: {loader:?}"
    );
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Regaining privilege.

#[tokio::test(flavor = "multi_thread")]
async fn classic_chroot_breakout_fails() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("breakout", &attack("chroot_break"), 0o755);
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/breakout").await;
    assert_eq!(value(&body, "mkdir"), "ok", "the attack got going: {body}");
    assert_eq!(
        value(&body, "chroot"),
        "EPERM",
        "chroot needs CAP_SYS_CHROOT: {body}"
    );
    assert_eq!(value(&body, "chroot_dot"), "EPERM", "{body}");
    assert_ne!(
        value(&body, "open_shadow"),
        "ok",
        "/etc/shadow after the break-out: {body}"
    );
    let seen: BTreeSet<String> = values(&body, "root_entry")
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        seen,
        jail_root_entries(gw.root()),
        "after the break-out attempt, / is still the jail"
    );
    assert_hello(&gw).await;
}

const ROOT_SECRET: &str = "jailgate-root-only-secret";

/// A jail with `/cgi-bin/suid-probe`: the setuid attack, root-owned, mode 4755; and a root-only
/// file `/etc/jailgate-rootonly` (0600) for it to try.
fn jail_with_setuid_root() -> Jail {
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("suid-probe", &attack("setuid_root"), 0o4755);
    let secret = jail.root().join("etc/jailgate-rootonly");
    fs::write(&secret, ROOT_SECRET).expect("write the root-only file");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    let meta = fs::metadata(jail.root().join("cgi-bin/suid-probe")).expect("suid-probe");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755, "planted setuid");
    jail
}

#[test]
fn setuid_file_in_jail_refuses_start() {
    require_root!();
    let jail = jail_with_setuid_root();
    let done = jail.start_refused(&[]);
    assert!(
        !done.status.success(),
        "the gateway must refuse a jail with a setuid-root file: {}",
        done.status
    );
    assert!(
        !done.stdout.contains("listening"),
        "it served: {}",
        done.stdout
    );
    assert!(
        done.stderr.contains("suid-probe") || done.stdout.contains("suid-probe"),
        "the refusal names the setuid file:\nstdout:\n{}\nstderr:\n{}",
        done.stdout,
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_file_with_allow_insecure_jail_gains_nothing() {
    require_root!();
    let jail = jail_with_setuid_root();
    let gw = jail.serve_with(one_worker(), &["--allow-insecure-jail"]);
    let body = report_of(&gw, "/cgi-bin/suid-probe").await;
    // nosuid on the mount and no-new-privs: the setuid bit is ignored at exec.
    assert_ne!(value(&body, "start_euid"), "0", "{body}");
    assert_eq!(value(&body, "setuid0"), "EPERM", "{body}");
    // Its own id from --cgi-ids, whatever the file's owner (root) and mode (setuid) say.
    let uid = value(&body, "uid");
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid >= 0x7000_0000),
        "{body}"
    );
    assert_eq!(value(&body, "euid"), uid, "{body}");
    assert_eq!(value(&body, "open_rootonly"), "EACCES", "{body}");
    assert!(!body.contains(ROOT_SECRET), "root-only file read: {body}");
    assert_hello(&gw).await;
    // Checked last, so the privilege checks above report first. A warning, or louder: the
    // flag's help says the findings are logged as errors.
    let stderr = gw.stderr();
    assert!(
        stderr.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("suid-probe")
                && (l.contains("warn") || l.contains("insecure") || l.contains("error"))
        }),
        "--allow-insecure-jail starts with a loud warning naming the finding:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Other processes.

/// Each recorded process still exists (same pid and start time) and is not a zombie.
pub(crate) fn assert_alive(what: &str, recorded: &[ProcStat]) {
    for p in recorded {
        assert!(
            procfs::still_exists(p).is_some_and(|now| !now.is_zombie()),
            "{what}: {p:?} is gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_from_a_cgi_reach_nothing_outside() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    // Not through `probe`: its `sh -c` would kill the CGI's own shell, the reporter.
    jail.cgi(
        "killall",
        r"printf 'Content-Type: text/plain\n\n'
kill -9 -1
echo kill_all_rc=$?
echo survived=yes",
    );
    jail.cgi("killworker", &format!("{PROBE}\nprobe kill_1 'kill -9 1'"));
    jail.cgi(
        "victim",
        r"printf 'Content-Type: text/plain\n\n'
echo armed
sleep 2
echo done",
    );
    // One worker, so the victim CGI shares the attacker's PID namespace and uid: `kill -9 -1`
    // reaches it unless something keeps each request's processes apart (each CGI's own
    // Landlock domain, scoped for signals). The holders and the workers run as the CGI user
    // too, so only the PID namespace keeps the holder out of reach.
    let gw = jail.serve(one_worker());
    jail_signal_gateway_cgi(&gw);
    let pairs = gw.wait_for_workers(Duration::from_secs(10), &[]);
    let mut recorded: Vec<ProcStat> = pairs
        .iter()
        .flat_map(|p| [p.holder.clone(), p.worker.clone()])
        .collect();
    recorded.push(procfs::stat(gw.pid()).expect("gateway stat"));
    if let Some(front) = gw.front() {
        recorded.push(front);
    }

    // kill -9 -1 from one request while another runs: the other request is out of reach.
    let Running { armed, task } =
        start_attack(&gw, "/cgi-bin/victim", Arm::Line("armed"), None, MIB);
    tokio::time::timeout(Duration::from_secs(20), armed)
        .await
        .expect("the victim starts within 20 s")
        .expect("the victim answers");
    // The victim's shell and its sleep (polled: right after the fork, the child still has the
    // shell's name until it execs sleep).
    let end = Instant::now() + Duration::from_secs(5);
    let victim = loop {
        let all = gw.descendants();
        let shells: Vec<&ProcStat> = all.iter().filter(|p| p.comm == "victim").collect();
        let sleeping = all.iter().any(|p| p.comm == "sleep");
        if let ([shell], true) = (shells.as_slice(), sleeping) {
            break (*shell).clone();
        }
        assert!(
            Instant::now() < end,
            "the victim CGI and its sleep run: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body = report_of(&gw, "/cgi-bin/killall").await;
    eprintln!("NOTE: kill -9 -1 in a CGI: {body:?}");
    assert_eq!(value(&body, "survived"), "yes", "{body}");
    assert!(
        procfs::still_exists(&victim).is_some_and(|p| !p.is_zombie()),
        "kill -9 -1 in one request killed another's CGI: {victim:?}"
    );
    let victim_run = finish(task).await;
    assert!(
        victim_run.head.contains("done"),
        "the victim request completes unharmed: {victim_run:?}"
    );
    assert_none_named(&gw, "sleep", Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive("after kill -9 -1 from a CGI", &recorded);
    assert_hello(&gw).await;

    // kill -9 1: the worker is the namespace's init; the kernel drops SIGKILL sent to it
    // from inside the namespace (it may still report success).
    for _ in 0..3 {
        let body = report_of(&gw, "/cgi-bin/killworker").await;
        eprintln!("NOTE: kill -9 1 in a CGI: {:?}", probes(&body));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive("after kill -9 1 from a CGI", &recorded);
    assert_hello(&gw).await;

    // The gateway's host pid means nothing in the CGI's PID namespace.
    let path = "/cgi-bin/signalgw";
    let body = report_of(&gw, path).await;
    let all = probes(&body);
    let sig = probe(&all, "kill_0_gateway", &body);
    assert!(
        sig.rc != 0 && sig.msg.contains("No such process"),
        "kill -0 {} (the gateway's host pid) from a CGI: {sig:?}",
        gw.pid()
    );
    if let Some(sig) = all.get("kill_0_front") {
        assert!(
            sig.rc != 0 && sig.msg.contains("No such process"),
            "kill -0 of the front's host pid from a CGI: {sig:?}"
        );
    }
    assert_alive("after signalling the gateway from a CGI", &recorded);
    assert_hello(&gw).await;
}

/// `/cgi-bin/signalgw` signals the gateway's host pid (known only once it runs).
/// And the front's, when there is one (`kill_0_front`).
fn jail_signal_gateway_cgi(gw: &Gateway) {
    let path = gw.root().join("cgi-bin/signalgw");
    let pid = gw.pid();
    let mut script = format!(
        "#!/bin/sh\n{PROBE}\nprobe kill_0_gateway 'kill -0 {pid}'\nprobe kill_9_gateway 'kill -9 {pid}'\n"
    );
    if let Some(front) = gw.front() {
        let front = front.pid;
        script.push_str(&format!(
            "probe kill_0_front 'kill -0 {front}'\nprobe kill_9_front 'kill -9 {front}'\n"
        ));
    }
    fs::write(&path, script).expect("write signalgw");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod signalgw");
}

#[tokio::test(flavor = "multi_thread")]
async fn ptrace_of_worker_and_sibling_fails() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "sleeper",
        r"printf 'Content-Type: text/plain\n\n'
echo pid=$$
sleep 10
echo done",
    );
    jail.install("ptrace", &attack("ptrace"), 0o755);
    // One worker: the sibling CGI shares the attacker's PID namespace, so it is visible and
    // its pid is real (with two workers it might simply not exist there: ESRCH proves less).
    let gw = jail.serve(one_worker());
    let Running { armed, task } = start_attack(&gw, "/cgi-bin/sleeper", Arm::Bytes(1), None, MIB);
    tokio::time::timeout(Duration::from_secs(20), armed)
        .await
        .expect("the sleeper starts within 20 s")
        .expect("the sleeper answers");
    // Its first byte is out, so its shell runs.
    let mut sibling = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The shell itself, not a just-forked child that has not exec'd sleep yet.
        let all = gw.descendants();
        let shell = all.iter().find(|p| {
            p.comm == "sleeper" && !all.iter().any(|q| q.pid == p.ppid && q.comm == "sleeper")
        });
        if let Some(shell) = shell {
            sibling = procfs::ns_pids(shell.pid).and_then(|ns| ns.last().copied());
            break;
        }
    }
    let sibling = sibling.expect("the sleeper CGI (its shell) shows up under the gateway");
    let body = report_of(&gw, &format!("/cgi-bin/ptrace?pid={sibling}")).await;
    assert_eq!(
        value(&body, "attach_worker"),
        "EPERM",
        "ptrace(PTRACE_ATTACH, 1): the worker is not dumpable: {body}"
    );
    assert_eq!(
        value(&body, "attach_sibling"),
        "EPERM",
        "ptrace(PTRACE_ATTACH, {sibling}) on a sibling CGI of the same uid: {body}"
    );
    task.abort();
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Exhausting resources. Each runs alone (see harness::MachineGuard) and measures `hello`.

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_is_contained() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("forkbomb", &attack("forkbomb"), 0o755);
    let gw = jail.serve_alone(Opts::default(), &["--limit-processes", "128"]);
    let m = measure_attack(
        &gw,
        "/cgi-bin/forkbomb?hold=4",
        Arm::Line("armed"),
        None,
        MIB,
    )
    .await;
    let body = &m.run.head;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    assert_eq!(
        value(body, "fork"),
        "EAGAIN",
        "RLIMIT_NPROC stops the bomb: {body}"
    );
    let forked: u64 = value(body, "forked").parse().expect("forked=N");
    assert!(forked < 128, "the first process alone forked {forked}");
    // The bomb reached the limit and stopped there: it has a uid of its own, so exactly its
    // own 128 processes count (the lower bound only shows a real bomb).
    let bombs = m
        .armed_procs
        .iter()
        .filter(|p| p.comm == "forkbomb" && !p.is_zombie())
        .count();
    let room = 128;
    eprintln!(
        "NOTE: {bombs} fork bomb processes stood under --limit-processes 128 (room {room}); \
         the leader's later forks: {}",
        value(body, "later_forks_ok")
    );
    assert!(
        (16..=room).contains(&bombs),
        "{bombs} fork bomb processes under --limit-processes 128 (room for {room})"
    );
    // The leader's later forks may succeed now and then: other processes of the CGI user
    // (the hello requests, their zombies before reaping) held slots when the bomb hit the
    // limit and freed them since. Those children exit at once, so the bomb does not grow.
    assert!(body.lines().any(|l| l == "done"), "{body}");
    // The leader exits; the worker kills its process group, the sleeping bomb with it.
    assert_none_named(&gw, "forkbomb", Duration::from_secs(5));
    assert_latency("fork bomb", m.before, m.during);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_contained() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("membomb", &attack("membomb"), 0o755);
    let gw = jail.serve_alone(Opts::default(), &["--limit-memory", "256M"]);
    let m = measure_attack(
        &gw,
        "/cgi-bin/membomb?hold=3",
        Arm::Line("armed"),
        None,
        MIB,
    )
    .await;
    let body = &m.run.head;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    assert_eq!(
        value(body, "malloc"),
        "ENOMEM",
        "RLIMIT_AS stops the bomb: {body}"
    );
    let touched: u64 = value(body, "touched_mib").parse().expect("touched_mib=N");
    assert!(touched < 256, "touched {touched} MiB under a 256M limit");
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_latency("memory bomb", m.before, m.during);
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_loop_is_killed_by_limit_cpu() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "spin",
        r"printf 'Content-Type: text/plain\n\n'
echo armed
sh -c 'while :; do :; done'
echo status=$?",
    );
    let gw = jail.serve_alone(Opts::default(), &["--limit-cpu", "2"]);
    let m = measure_attack(&gw, "/cgi-bin/spin", Arm::Line("armed"), None, MIB).await;
    let body = &m.run.head;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    // 128 + SIGXCPU (24): killed at the soft limit of 2 s of CPU.
    assert_eq!(
        value(body, "status"),
        "152",
        "the loop dies of SIGXCPU: {body}"
    );
    assert!(
        m.run.took >= Duration::from_millis(1500) && m.run.took < Duration::from_secs(15),
        "the loop ran about 2 s of CPU, not the 30 s timeout: {:?}",
        m.run.took
    );
    assert_latency("CPU loop", m.before, m.during);
}

/// The last mount entry at `mount_point` in a worker's mountinfo.
fn worker_mount(gw: &Gateway, mount_point: &str) -> Mount {
    let pairs = gw.wait_for_workers(Duration::from_secs(10), &[]);
    let pid = pairs[0].worker.pid;
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/mountinfo: {e}"));
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mount_point)
        .unwrap_or_else(|| panic!("no {mount_point} mount in worker {pid}'s mountinfo:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_tmp_hits_enospc() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    // RLIMIT_FSIZE (64M by default) would stop head too, with SIGXFSZ: only "No space left
    // on device" shows the 8M tmpfs.
    jail.cgi(
        "filltmp",
        r"printf 'Content-Type: text/plain\n\n'
head -c 100M /dev/zero 2>&1 >/tmp/jailgate-fill
echo rc=$?
echo size=$(wc -c </tmp/jailgate-fill)
echo armed
sleep 3
rm -f /tmp/jailgate-fill
echo done",
    );
    let gw = jail.serve_alone(Opts::default(), &["--tmp-size", "8M"]);
    let tmp = worker_mount(&gw, "/tmp");
    assert!(
        tmp.super_options.iter().any(|o| o == "size=8192k"),
        "--tmp-size 8M makes an 8 MiB tmpfs: {tmp:?}"
    );
    let m = measure_attack(&gw, "/cgi-bin/filltmp", Arm::Line("armed"), None, MIB).await;
    let body = &m.run.head;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    assert!(body.contains("No space left on device"), "{body}");
    assert_ne!(value(body, "rc"), "0", "{body}");
    let size: u64 = value(body, "size").trim().parse().expect("size=N");
    assert!(
        size > 0 && size <= 8 * MIB,
        "/tmp took {size} bytes under --tmp-size 8M"
    );
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_latency("filling /tmp", m.before, m.during);
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_output_is_cut_off() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "flood",
        r"printf 'Content-Type: application/octet-stream\n\n'
exec head -c 10737418240 /dev/zero",
    );
    let gw = jail.serve_alone(Opts::default(), &["--max-output", "100M"]);
    // Read at 100 MiB/s, so the flood lasts about a second while hello is measured; stop
    // reading at 1 GiB whatever happens (the cap is 100 MiB).
    let m = measure_attack(
        &gw,
        "/cgi-bin/flood",
        Arm::Bytes(8 * MIB),
        Some(100 * MIB),
        1024 * MIB,
    )
    .await;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    assert!(
        m.run.total <= 100 * MIB,
        "{} body bytes passed a --max-output of 100M",
        m.run.total
    );
    assert!(
        m.run.error.is_some(),
        "the cut-off response must end as an aborted body, not a complete one \
         (a client could not tell it was truncated): {:?}",
        m.run
    );
    assert_none_named(&gw, "head", Duration::from_secs(5));
    assert_latency("10 GiB of output", m.before, m.during);
}

#[tokio::test(flavor = "multi_thread")]
async fn background_child_holding_stdout_is_killed() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "orphan",
        r"printf 'Content-Type: text/plain\n\n'
echo armed
(sleep 100 &)
sleep 2
echo done",
    );
    let gw = jail.serve_alone(Opts::default(), &[]);
    let m = measure_attack(&gw, "/cgi-bin/orphan", Arm::Line("armed"), None, MIB).await;
    assert_eq!(m.run.status, 200, "{:?}", m.run);
    assert!(
        m.run.error.is_none() && m.run.head.lines().any(|l| l == "done"),
        "the response completes: {:?}",
        m.run
    );
    assert!(
        m.run.took < Duration::from_secs(7),
        "the response ended {:?} after the request, the main process after 2 s: the \
         background sleep held stdout open",
        m.run.took
    );
    assert_none_named(&gw, "sleep", Duration::from_secs(2));
    assert_latency("background child holding stdout", m.before, m.during);
}

// ---------------------------------------------------------------------------------------------
// Network.

async fn connect_report(extra: &[&str]) -> String {
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("connect", &attack("connect"), 0o755);
    let gw = jail.serve_with(one_worker(), extra);
    let body = report_of(&gw, &format!("/cgi-bin/connect?port={}", gw.addr.port())).await;
    assert_eq!(value(&body, "socket"), "ok", "{body}");
    assert_hello(&gw).await;
    body
}

/// By default a CGI has no network: not even the gateway's own port on 127.0.0.1.
#[tokio::test(flavor = "multi_thread")]
async fn cgis_have_no_network_by_default() {
    require_root!();
    let body = connect_report(&[]).await;
    let outcome = value(&body, "connect");
    eprintln!("NOTE: connect to 127.0.0.1 from a CGI by default: {outcome}");
    assert_ne!(
        outcome, "ok",
        "without --cgi-network a CGI reached the gateway's port: {body}"
    );
}

/// The control for the test above: the same program does reach the port with `--cgi-network`.
#[tokio::test(flavor = "multi_thread")]
async fn with_cgi_network_connect_to_loopback_works() {
    require_root!();
    let body = connect_report(&["--cgi-network"]).await;
    assert_eq!(value(&body, "connect"), "ok", "{body}");
}

/// Abstract Unix sockets belong to the network namespace, not the file tree: the chroot does
/// not hide the host's, so with `--cgi-network` only the worker's Landlock scope does.
#[tokio::test(flavor = "multi_thread")]
async fn abstract_unix_sockets_are_out_of_reach() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};

    require_root!();
    let id = std::process::id();
    let name = format!("jailgate-e2e-{id}");
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&addr).expect("bind the host's abstract socket");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let program = attack("abstract_unix");

    // Control: the same program, run on the host, reaches the socket.
    let mut control = Command::new(&program);
    control.env("QUERY_STRING", format!("id={id}"));
    let control = run_bounded(&mut control, Duration::from_secs(10));
    assert_eq!(
        value(&control.stdout, "connect"),
        "ok",
        "control: the program reaches the socket from the host"
    );
    listener
        .accept()
        .expect("the control's connection is queued on the host's socket");

    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("abstract", &program, 0o755);
    let gw = jail.serve_with(one_worker(), &["--cgi-network"]);
    let body = report_of(&gw, &format!("/cgi-bin/abstract?id={id}")).await;
    let outcome = value(&body, "connect");
    eprintln!("NOTE: connect to the host's abstract socket from a CGI: {outcome}");
    assert_ne!(
        outcome, "ok",
        "a CGI connected to the host's abstract Unix socket @{name}: {body}"
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host's socket got a connection from the jail: {other:?}"),
    }
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// The jail audit.

fn jail_check(root: &Path) -> crate::harness::Finished {
    let mut cmd = Command::new(gateway_bin());
    cmd.args(["jail", "check"]).arg(root);
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// The real folder `/bin` stands for in the jail (on merged-/usr hosts, `usr/bin`).
/// Resolved by hand against the jail root, never through the host's `/`: an absolute link
/// target must not send a planted file into the host's own `/usr/bin`.
fn jail_bin_dir(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    let dir = match fs::read_link(&bin) {
        Ok(target) => root.join(target.strip_prefix("/").unwrap_or(&target)),
        Err(_) => bin,
    };
    assert!(
        dir.starts_with(root) && dir.is_dir(),
        "the jail's /bin is {}",
        dir.display()
    );
    dir
}

/// One planted problem: where, and how to undo it.
struct Plant {
    what: &'static str,
    path: PathBuf,
}

fn plant_all(root: &Path) -> Vec<Plant> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let mut plants = Vec::new();

    let suid = root.join("cgi-bin/planted-setuid");
    fs::write(&suid, "#!/bin/sh\n").expect("write planted-setuid");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).expect("chmod 4755");
    plants.push(Plant {
        what: "setuid file",
        path: suid,
    });

    let dev = root.join("dev/planted-mem");
    mknod(
        &dev,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 1),
    )
    .expect("mknod planted-mem");
    plants.push(Plant {
        what: "extra device node",
        path: dev,
    });

    let open_dir = root.join("etc/planted-world-writable");
    fs::create_dir(&open_dir).expect("mkdir planted-world-writable");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    plants.push(Plant {
        what: "world-writable folder without the sticky bit",
        path: open_dir,
    });

    // `jail check` looks for the workers' default account, as the start does.
    let owned = jail_bin_dir(root).join("planted-owned-by-cgi-user");
    fs::write(&owned, "#!/bin/sh\n").expect("write planted-owned");
    fs::set_permissions(&owned, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    std::os::unix::fs::chown(&owned, Some(WORKER_ID), Some(WORKER_ID))
        .expect("chown to the workers' id");
    plants.push(Plant {
        what: "file owned by the workers' account in /bin",
        path: owned,
    });

    let fifo = root.join("etc/planted-fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).expect("mkfifo");
    plants.push(Plant {
        what: "FIFO",
        path: fifo,
    });

    // Another local user's: it could change the CGI under every request.
    let theirs = root.join("cgi-bin/planted-another-users");
    fs::write(&theirs, "#!/bin/sh\n").expect("write planted-another-users");
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    std::os::unix::fs::chown(&theirs, Some(4321), Some(0)).expect("chown to uid 4321");
    plants.push(Plant {
        what: "CGI owned by another local user",
        path: theirs,
    });
    plants
}

fn unplant(plant: &Plant) {
    if plant.path.is_dir() {
        fs::remove_dir(&plant.path).expect("remove planted dir");
    } else {
        fs::remove_file(&plant.path).expect("remove planted file");
    }
}

/// The planted path as the jail sees it (`/usr/bin/x`): a finding names it so, or by its host
/// path, which ends the same way.
fn in_jail(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).expect("planted inside the jail");
    format!("/{}", relative.to_str().expect("UTF-8 path"))
}

/// Every jail `jail init` builds passes its own audit and serves: `jail check` exits 0, and a
/// gateway starts on it (the start-up audit finds nothing) and runs a CGI.
#[tokio::test(flavor = "multi_thread")]
async fn every_profile_passes_the_audit_and_serves() {
    require_root!();
    for profile in ["classic", "busybox", "minimal"] {
        let jail = Jail::with_init_args(&["--profile", profile]);
        let done = jail_check(jail.root());
        assert_eq!(
            done.status.code(),
            Some(0),
            "jail check of a fresh --profile {profile} jail: {}\nstdout:\n{}\nstderr:\n{}",
            done.status,
            done.stdout,
            done.stderr
        );
        jail.cgi("hello", HELLO);
        let gw = jail.serve(one_worker());
        assert_hello(&gw).await;
        assert!(
            !gw.stderr().to_lowercase().contains("insecure"),
            "--profile {profile}: the start-up audit complained:\n{}",
            gw.stderr()
        );
    }
}

#[test]
fn jail_check_finds_each_planted_problem() {
    require_root!();
    let jail = Jail::new();
    let root = jail.root();
    let clean = jail_check(root);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "a fresh jail is clean: {}\nstdout:\n{}\nstderr:\n{}",
        clean.status,
        clean.stdout,
        clean.stderr
    );

    let plants = plant_all(root);
    // All at once: exit 1, one line per finding, each naming its path.
    let all = jail_check(root);
    assert_eq!(
        all.status.code(),
        Some(1),
        "jail check with every problem planted: {}\nstdout:\n{}\nstderr:\n{}",
        all.status,
        all.stdout,
        all.stderr
    );
    for plant in &plants {
        let path = in_jail(root, &plant.path);
        assert!(
            all.stdout.lines().any(|l| l.contains(&path)),
            "a finding line names the {} {path}:\n{}",
            plant.what,
            all.stdout
        );
    }
    assert_eq!(
        all.stdout.lines().count(),
        plants.len(),
        "one finding per line, one line per planted problem:\n{}",
        all.stdout
    );
    // Then each one alone, so no finding hides behind another.
    for plant in &plants {
        unplant(plant);
    }
    for (i, _) in plants.iter().enumerate() {
        let only = plant_all(root);
        for (j, other) in only.iter().enumerate() {
            if j != i {
                unplant(other);
            }
        }
        let plant = &only[i];
        let done = jail_check(root);
        assert_eq!(
            done.status.code(),
            Some(1),
            "jail check with only a {} ({}): {}\nstdout:\n{}\nstderr:\n{}",
            plant.what,
            plant.path.display(),
            done.status,
            done.stdout,
            done.stderr
        );
        let path = in_jail(root, &plant.path);
        assert!(
            done.stdout.lines().any(|l| l.contains(&path)),
            "the finding names the {} {path}:\n{}",
            plant.what,
            done.stdout
        );
        unplant(plant);
    }
    let again = jail_check(root);
    assert_eq!(
        again.status.code(),
        Some(0),
        "clean again: {}",
        again.stdout
    );
    let missing = jail_check(Path::new("/nonexistent-jailgate-jail"));
    assert_eq!(
        missing.status.code(),
        Some(2),
        "jail check of a missing folder is an error: {}",
        missing.stderr
    );
    // A folder the rules find nothing wrong with is still no jail: `/etc` once got
    // "no findings" and exit 0.
    for not_a_jail in ["/etc", "/"] {
        let done = jail_check(Path::new(not_a_jail));
        assert_eq!(
            done.status.code(),
            Some(2),
            "jail check {not_a_jail}: {}{}",
            done.stdout,
            done.stderr
        );
        assert!(
            done.stderr.contains(&format!("{not_a_jail} is not a jail")),
            "jail check {not_a_jail} says why: {}",
            done.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts.

/// One line of `/proc/PID/mountinfo` (proc(5)).
#[derive(Debug)]
struct Mount {
    /// Field 5, relative to the root of the process whose mountinfo it is.
    mount_point: String,
    /// Field 6: per-mount options (ro, noexec, nosuid, nodev, ...).
    options: Vec<String>,
    fstype: String,
    /// The last field: per-superblock options (tmpfs `size=...`).
    super_options: Vec<String>,
}

impl Mount {
    fn has(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount.split(' ').collect();
            let fs: Vec<&str> = fs.split(' ').collect();
            Some(Mount {
                mount_point: (*fields.get(4)?).to_owned(),
                options: fields.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: (*fs.first()?).to_owned(),
                super_options: fs.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn host_lines_naming(path: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("host mountinfo")
        .lines()
        .filter(|l| l.contains(path))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_mounts_are_private_and_flagged() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "devls",
        r"printf 'Content-Type: text/plain\n\n'
exec ls -A /dev",
    );
    let gw = jail.serve(Opts::default());
    let pairs = gw.wait_for_workers(Duration::from_secs(10), &[]);
    assert_hello(&gw).await;
    let root = gw.root().to_str().expect("UTF-8 jail path").to_owned();
    let leaked = host_lines_naming(&root);
    assert!(
        leaked.is_empty(),
        "worker mounts visible in the host's mountinfo:\n{}",
        leaked.join("\n")
    );

    for pair in &pairs {
        let pid = pair.worker.pid;
        let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/mountinfo: {e}"));
        let mounts = parse_mountinfo(&text);
        let at = |point: &str| -> &Mount {
            mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == point)
                .unwrap_or_else(|| panic!("worker {pid}: no mount at {point}:\n{text}"))
        };
        let top = at("/");
        for flag in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(top.has(flag), "worker {pid}: / lacks {flag}: {top:?}");
        }
        let mut program_areas = vec!["/usr", "/cgi-bin"];
        for dir in ["bin", "sbin", "lib", "lib64"] {
            let on_host = gw.root().join(dir);
            if fs::symlink_metadata(&on_host).is_ok_and(|m| m.is_dir()) {
                program_areas.push(match dir {
                    "bin" => "/bin",
                    "sbin" => "/sbin",
                    "lib" => "/lib",
                    _ => "/lib64",
                });
            }
        }
        for point in program_areas {
            let m = at(point);
            assert!(m.has("ro"), "worker {pid}: {point} is not read-only: {m:?}");
            assert!(
                !m.has("noexec"),
                "worker {pid}: {point} must allow exec: {m:?}"
            );
            assert!(m.has("nosuid"), "worker {pid}: {point} lacks nosuid: {m:?}");
            assert!(m.has("nodev"), "worker {pid}: {point} lacks nodev: {m:?}");
        }
        let tmp = at("/tmp");
        assert_eq!(tmp.fstype, "tmpfs", "worker {pid}: /tmp: {tmp:?}");
        for flag in ["rw", "noexec", "nosuid", "nodev"] {
            assert!(tmp.has(flag), "worker {pid}: /tmp lacks {flag}: {tmp:?}");
        }
        assert!(
            tmp.super_options.iter().any(|o| o == "size=65536k"),
            "worker {pid}: /tmp is 64M by default: {tmp:?}"
        );
        let dev = at("/dev");
        assert_eq!(dev.fstype, "tmpfs", "worker {pid}: /dev: {dev:?}");
        assert!(
            dev.has("noexec") && dev.has("nosuid"),
            "worker {pid}: /dev: {dev:?}"
        );
    }
    let body = report_of(&gw, "/cgi-bin/devls").await;
    let devices: BTreeSet<&str> = body.split_whitespace().collect();
    assert_eq!(
        devices,
        BTreeSet::from(["fd", "null", "stderr", "stdin", "stdout", "urandom", "zero"]),
        "/dev in the jail holds only null, zero, urandom and the /proc/self/fd links"
    );
    assert_hello(&gw).await;

    drop(gw);
    let leaked = host_lines_naming(&root);
    assert!(
        leaked.is_empty(),
        "mounts left in the host's mountinfo after the gateway stopped:\n{}",
        leaked.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The HTTP process.

fn cap_eff(pid: i32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    Some(line["CapEff:".len()..].trim().to_owned())
}

/// The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp, proc(5)).
fn listening_inode(port: u16) -> Option<String> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
            .flatten()
    })
}

/// Whether process `pid` holds a descriptor of socket `inode`.
fn holds_socket(pid: i32, inode: &str) -> bool {
    let want = PathBuf::from(format!("socket:[{inode}]"));
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(Result::ok)
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == want))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn http_process_runs_unprivileged() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let gw = jail.serve(Opts::default());
    assert_hello(&gw).await;
    let front = gw.wait_for_front(Duration::from_secs(10));
    let (uids, _) = procfs::uids_gids(front.pid).expect("front status");
    assert!(
        !uids.contains(&0),
        "the front {} has a root uid: {uids:?}",
        front.pid
    );
    assert_eq!(
        uids,
        vec![FRONT_ID; 4],
        "the front runs as an id of its own by default"
    );
    assert_eq!(
        cap_eff(front.pid).as_deref(),
        Some("0000000000000000"),
        "the front holds no capabilities"
    );
    // The HTTP socket lives in the front only: the root supervisor holds no HTTP.
    let inode = listening_inode(gw.addr.port()).expect("the listening socket in /proc/net/tcp");
    assert!(
        holds_socket(front.pid, &inode),
        "the front {} holds the listening socket",
        front.pid
    );
    assert!(
        !holds_socket(gw.pid(), &inode),
        "the root supervisor {} still holds the listening socket",
        gw.pid()
    );
    for p in gw.descendants() {
        if p.pid != front.pid {
            assert!(
                !holds_socket(p.pid, &inode),
                "{p:?} holds the listening socket"
            );
        }
    }
    assert_hello(&gw).await;
}
