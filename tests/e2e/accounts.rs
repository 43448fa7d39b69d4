//! The accounts the gateway runs as: by default ids of its own, which no account of the host
//! holds and no other service runs as; a default id an account holds stops the start, a
//! process already running as one of our uids is warned about, and one with a CGI id stops it.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    cgi_ids_arg, gateway_bin, one_worker, require_root, run_bounded, ChildGuard, Finished, Jail,
    Opts, FRONT_ID, WORKER_ID,
};
use crate::http::client;
use crate::procfs;

const HELLO: &str = r"printf 'Content-Type: text/plain\n\nhello\n'";

/// Ids only the tests of this file use, below the default ones and every test's `--cgi-ids`
/// (from 1879048192 up): the gateways of other tests, running at the same time with the
/// default accounts, neither run as them nor are warned about the processes started here.
const WARNED_FRONT: u32 = 1_879_047_900;
const WARNED_WORKERS: u32 = 1_879_047_901;
const QUIET_FRONT: u32 = 1_879_047_902;
const QUIET_WORKERS: u32 = 1_879_047_903;
const GIVEN_WORKERS: u32 = 1_879_047_904;

/// Polls `/proc/PID/status` until the process has dropped root (its ids settle just after the
/// ready line), then returns its uids and gids.
fn settled_ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let ids = procfs::uids_gids(pid).unwrap_or_else(|| panic!("{pid} has no /proc status"));
        if !ids.0.contains(&0) || Instant::now() >= end {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids `/etc/passwd` (uid, primary gid) and `/etc/group` (gid) give accounts and groups.
fn host_account_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    for (file, fields) in [("/etc/passwd", 2), ("/etc/group", 1)] {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        for line in text.lines() {
            ids.extend(
                line.split(':')
                    .skip(2)
                    .take(fields)
                    .filter_map(|id| id.parse::<u32>().ok()),
            );
        }
    }
    ids
}

/// `sleep 30` as uid and gid `id`: a process of another service's, stopped by its pid when
/// dropped.
fn sleeping_as(id: u32) -> ChildGuard {
    ChildGuard::spawn(
        Command::new("sleep")
            .arg("30")
            .uid(id)
            .gid(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The log lines that warn of a process sharing one of our accounts.
fn sharing_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains("can signal and trace each other"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_and_the_workers_run_as_ids_no_account_has() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let gw = jail.serve(Opts::default());
    let response = client(Duration::from_secs(15))
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status().as_u16(), 200);

    let front = gw.wait_for_front(Duration::from_secs(10));
    let (uids, gids) = settled_ids(front.pid);
    assert_eq!(
        (uids, gids),
        (vec![FRONT_ID; 4], vec![FRONT_ID; 4]),
        "the front {}",
        front.pid
    );
    for pair in gw.wait_for_workers(Duration::from_secs(10), &[]) {
        for (role, process) in [("holder", &pair.holder), ("worker", &pair.worker)] {
            let (uids, gids) = settled_ids(process.pid);
            assert_eq!(
                (uids, gids),
                (vec![WORKER_ID; 4], vec![WORKER_ID; 4]),
                "{role} {}",
                process.pid
            );
        }
    }
    let held = host_account_ids();
    for id in [FRONT_ID, WORKER_ID] {
        assert!(
            !held.contains(&id),
            "{id} is an account or group of /etc/passwd or /etc/group"
        );
    }
}

/// A process already running as the front's or the workers' uid (another gateway, another
/// service) gets one warning line per account, with its pid, and the gateway serves anyway;
/// a gateway whose ids no process has says nothing of the kind.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_running_as_our_uid_is_warned_about_at_start() {
    require_root!();
    let front_sleeper = sleeping_as(WARNED_FRONT);
    let worker_sleeper = sleeping_as(WARNED_WORKERS);
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let (front, workers) = (WARNED_FRONT.to_string(), WARNED_WORKERS.to_string());
    let gw = jail.serve_with(
        one_worker(),
        &["--gateway-user", &front, "--user", &workers],
    );
    let stderr = gw.stderr();
    let warnings = sharing_warnings(&stderr);
    assert_eq!(warnings.len(), 2, "one line per account:\n{stderr}");
    for (sleeper, id, whose) in [
        (&front_sleeper, WARNED_FRONT, "the front's (--gateway-user)"),
        (&worker_sleeper, WARNED_WORKERS, "the workers' (--user)"),
    ] {
        let named = format!(
            "process {} (sleep) runs as uid {id}, {whose} account",
            sleeper.pid()
        );
        assert!(
            warnings.iter().any(|line| line.contains("WARN")
                && line.contains(&named)
                && line.contains("its own --user, --gateway-user and --cgi-ids")),
            "no warning naming {named:?}:\n{stderr}"
        );
    }
    let response = client(Duration::from_secs(15))
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("a response");
    assert_eq!(response.status().as_u16(), 200, "a warning, not a refusal");
    drop(gw);
    drop(front_sleeper);
    drop(worker_sleeper);

    let jail = Jail::new();
    let (front, workers) = (QUIET_FRONT.to_string(), QUIET_WORKERS.to_string());
    let gw = jail.serve_with(
        one_worker(),
        &["--gateway-user", &front, "--user", &workers],
    );
    let stderr = gw.stderr();
    assert_eq!(sharing_warnings(&stderr), Vec::<&str>::new(), "{stderr}");
}

/// The gateway started in a mount namespace of its own where `/etc/passwd` and `/etc/group`
/// are the host's plus `passwd_line` and `group_line` (bind mounts, gone with the namespace:
/// the host's files are never touched), with `extra` flags; it is expected to exit by itself.
fn start_with_accounts(
    jail: &Jail,
    passwd_line: &str,
    group_line: &str,
    extra: &[&str],
) -> Finished {
    let folder = tempfile::TempDir::with_prefix("jailgate-accounts-").expect("temp dir");
    let passwd = folder.path().join("passwd");
    let group = folder.path().join("group");
    for (file, host, line) in [
        (&passwd, "/etc/passwd", passwd_line),
        (&group, "/etc/group", group_line),
    ] {
        let text = fs::read_to_string(host).unwrap_or_else(|e| panic!("{host}: {e}"));
        fs::write(file, format!("{text}{line}")).expect("write an account file");
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group && shift 2 && \
             exec \"$@\"",
        )
        .arg("sh")
        .arg(&passwd)
        .arg(&group)
        .arg(gateway_bin())
        .arg("--jail")
        .arg(jail.root())
        .args(["--workers", "1", "--listen", "127.0.0.1:0"])
        .args(cgi_ids_arg())
        .args(extra);
    run_bounded(&mut cmd, Duration::from_secs(20))
}

/// A default id that an account or group of the host holds stops the start, with the fix (the
/// flag) in the message.
#[test]
fn a_default_id_an_account_holds_stops_the_start() {
    require_root!();
    let jail = Jail::new();
    let account = format!("jailgate-test:x:{WORKER_ID}:{WORKER_ID}::/nonexistent:/bin/false\n");
    let done = start_with_accounts(&jail, &account, "", &[]);
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "--user not given, and /etc/passwd has `jailgate-test` with id {WORKER_ID}"
        )) && done.stderr.contains("give --user explicitly"),
        "{}",
        done.stderr
    );

    let group = format!("jailgate-test:x:{FRONT_ID}:\n");
    let given = GIVEN_WORKERS.to_string();
    let done = start_with_accounts(&jail, "", &group, &["--user", &given]);
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "--gateway-user not given, and /etc/group has `jailgate-test` with id {FRONT_ID}"
        )) && done.stderr.contains("give --gateway-user explicitly"),
        "{}",
        done.stderr
    );
}

/// A process running with one of `--cgi-ids` stops the start, named with its pid: the same
/// scan of `/proc` as the warnings.
#[test]
fn a_process_with_a_cgi_id_stops_the_start() {
    require_root!();
    let [flag, range] = cgi_ids_arg();
    let first: u32 = range
        .split('-')
        .next()
        .and_then(|first| first.parse().ok())
        .expect("FIRST-LAST");
    let sleeper = sleeping_as(first + 7);
    let jail = Jail::new();
    let done = jail.start_refused(&[&flag, &range]);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "--cgi-ids {range}: process {} (sleep) runs with one of these ids",
            sleeper.pid()
        )),
        "{}",
        done.stderr
    );
}
