//! Requests kept apart from each other and from their worker: what one CGI does to the
//! processes, the kernel objects and the system calls it shares with the others must harm no
//! other request and not the worker that starts them. Each test runs a C attack (see
//! `escape.rs` for how they are built) and then checks a victim: a request that runs during
//! the attack, or the requests that follow it.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use crate::escape::{
    assert_alive, assert_hello, attack, report_of, start_attack, value, Arm, AttackRun, Running,
    HELLO, MIB,
};
use crate::harness::{
    cgi_ids_arg, gateway_bin, one_worker, require_root, run_bounded, Gateway, Jail, Opts, WORKER_ID,
};
use crate::http::{all_answer_200_at_once, client};
use crate::procfs::{self, ProcStat};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A request that only runs: its response ends with `done` after 4 s, unless something kills
/// or stops it.
const VICTIM: &str = r"printf 'Content-Type: text/plain\n\n'
echo armed
sleep 4
echo done";

/// `count` `hello` requests one after the other, each answered 200 `hello\n` within 10 s.
async fn assert_hellos(gw: &Gateway, count: usize, after: &str) {
    let http = client(Duration::from_secs(10));
    for i in 1..=count {
        let outcome = match http.get(gw.url("/cgi-bin/hello")).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(body) => Ok((status, body)),
                    Err(e) => Err(format!("body: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((200, body)) if body == "hello\n" => {}
            other => panic!("hello {i} of {count} in a row after {after}: {other:?}"),
        }
    }
}

/// The gateway, its front, and its workers' holders and workers proper: what no CGI may harm.
fn gateway_processes(gw: &Gateway) -> Vec<ProcStat> {
    let mut recorded: Vec<ProcStat> = gw
        .wait_for_workers(Duration::from_secs(10), &[])
        .into_iter()
        .flat_map(|p| [p.holder, p.worker])
        .collect();
    recorded.push(procfs::stat(gw.pid()).expect("gateway stat"));
    recorded.push(gw.wait_for_front(Duration::from_secs(10)));
    recorded
}

/// The shell of the running CGI named `comm` (not a child it forked that has not exec'd yet):
/// its host process, and its pid in the worker's PID namespace.
async fn cgi_shell(gw: &Gateway, comm: &str) -> (ProcStat, i32) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let all = gw.descendants();
        let shell = all.iter().find(|p| {
            p.comm == comm
                && !p.is_zombie()
                && !all.iter().any(|q| q.pid == p.ppid && q.comm == comm)
        });
        if let Some(shell) = shell {
            if let Some(ns) = procfs::ns_pids(shell.pid).and_then(|ns| ns.last().copied()) {
                return (shell.clone(), ns);
            }
        }
        assert!(
            Instant::now() < end,
            "the {comm} CGI (its shell) shows up under the gateway: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `deadline` for a request started with `start_attack` to end.
async fn response_within(task: JoinHandle<AttackRun>, deadline: Duration, what: &str) -> AttackRun {
    let abort = task.abort_handle();
    match tokio::time::timeout(deadline, task).await {
        Ok(run) => run.expect("the request's reader did not panic"),
        Err(_) => {
            abort.abort();
            panic!("{what}: no complete response within {deadline:?} (killed? stopped?)");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signals.

/// `kill(-1, SIGKILL)`, then `kill(-1, SIGSTOP)`, each sent every millisecond for 3 s by a CGI
/// while another request runs on the same worker (same uid, same PID namespace): the other
/// request ends normally, nothing of the gateway is touched, and the gateway serves on.
///
/// Not asserted: `kill_all` itself. For `kill(-1, SIG)` the kernel answers 0 as soon as it
/// found any process to try, even when every one of them refused with EPERM
/// (`kill_something_info`: only errors other than EPERM are kept), so with the victim in the
/// namespace `kill_all=ok` whether or not the signal reached it. What tells is each pid asked
/// alone: `kill(PID, 0)` for every pid of the namespace (`signalable`) and `kill(victim, SIG)`.
#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_one_from_a_cgi_reaches_no_other_request() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi("victim", VICTIM);
    jail.install("signal_all", &attack("signal_all"), 0o755);
    // One worker: the victim shares the attacker's PID namespace and uid.
    let gw = jail.serve(one_worker());
    let recorded = gateway_processes(&gw);

    // A victim for each signal, so each runs through a whole attack.
    for (sig, name) in [(9, "SIGKILL"), (19, "SIGSTOP")] {
        let Running { armed, task } =
            start_attack(&gw, "/cgi-bin/victim", Arm::Line("armed"), None, MIB);
        tokio::time::timeout(Duration::from_secs(20), armed)
            .await
            .expect("the victim starts within 20 s")
            .expect("the victim answers");
        let (victim, victim_pid) = cgi_shell(&gw, "victim").await;
        let body = report_of(
            &gw,
            &format!("/cgi-bin/signal_all?sig={sig}&seconds=3&pid={victim_pid}"),
        )
        .await;
        eprintln!("NOTE: {name} to every process, every ms for 3 s, from a CGI: {body:?}");
        assert_eq!(value(&body, "survived"), "yes", "{body}");
        assert_eq!(
            value(&body, "signalable"),
            "0",
            "{name}: pids of the worker's PID namespace a CGI may signal (kill(PID, 0) works; \
             itself and the worker left out): {}\n{body}",
            value(&body, "signalable_pids")
        );
        assert_ne!(
            value(&body, "kill_victim"),
            "ok",
            "{name}: kill({victim_pid}, {sig}) of the other request's CGI {victim:?}: {body}"
        );
        assert_eq!(value(&body, "kill_victim_ok"), "0", "{name}: {body}");

        let run = response_within(task, Duration::from_secs(20), "the victim").await;
        assert!(
            run.status == 200 && run.error.is_none() && run.head.lines().any(|l| l == "done"),
            "{name}: the other request, running during the attack, must end normally: {run:?}"
        );
        assert_alive(&format!("after {name} to -1 from a CGI"), &recorded);
    }
    assert_hellos(&gw, 20, "kill(-1) from a CGI").await;
    assert_alive("after the hello requests", &recorded);
}

// ---------------------------------------------------------------------------------------------
// Scheduling and limits.

/// What a CGI could change of another process of its uid, as `/proc` shows it: the process
/// limit, nice value, scheduling policy and allowed CPUs.
#[derive(Debug, PartialEq, Eq)]
struct Sched {
    max_processes: String,
    nice: String,
    policy: String,
    cpus: String,
}

fn sched_of(pid: i32) -> Sched {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/limits: {e}"));
    let max_processes = limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .expect("a Max processes line")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // After the comm's last ')': field 3 first, so field N is at N - 3 (proc(5)).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line")
        .trim()
        .to_owned();
    Sched {
        max_processes,
        nice: fields[19 - 3].to_owned(),
        policy: fields[41 - 3].to_owned(),
        cpus,
    }
}

/// A CGI cannot take its worker's processes away (`RLIMIT_NPROC` 0: no CGI could start any
/// more), lower its priority, put it in the idle scheduling or I/O class, pin it to one CPU,
/// or renice every process of the uid; on itself it may.
#[tokio::test(flavor = "multi_thread")]
async fn a_cgi_cannot_starve_its_worker() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("starve", &attack("starve"), 0o755);
    let gw = jail.serve(one_worker());
    let recorded = gateway_processes(&gw);
    let worker = gw.wait_for_workers(Duration::from_secs(10), &[])[0]
        .worker
        .clone();
    assert_hello(&gw).await;
    let before = sched_of(worker.pid);

    let body = report_of(&gw, "/cgi-bin/starve").await;
    eprintln!("NOTE: starving the worker from a CGI: {body:?}");
    for key in [
        "prlimit_worker",
        "renice_worker",
        "idle_worker",
        "renice_user",
        "ioprio_worker",
        "affinity_worker",
    ] {
        assert_ne!(value(&body, key), "ok", "{key}: {body}");
    }
    for key in ["prlimit_self", "renice_self"] {
        assert_eq!(value(&body, key), "ok", "{key}, on itself: {body}");
    }
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_eq!(
        sched_of(worker.pid),
        before,
        "the worker's limits and scheduling after the attack"
    );
    assert_hellos(&gw, 20, "the attempts to starve the worker").await;
    assert_alive("after the attempts to starve the worker", &recorded);
}

// ---------------------------------------------------------------------------------------------
// Code from memory.

/// A program copied into a memfd cannot be executed (`fexecve`, `execveat(fd, "",
/// AT_EMPTY_PATH)`), as one copied to the `noexec` /tmp cannot.
#[tokio::test(flavor = "multi_thread")]
async fn code_from_memory_cannot_run() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("memfd_exec", &attack("memfd_exec"), 0o755);
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/memfd_exec").await;
    eprintln!("NOTE: code from a memfd in a CGI: {body:?}");
    assert_eq!(value(&body, "program"), "/cgi-bin/memfd_exec", "{body}");
    if value(&body, "memfd_create") == "ok" {
        assert_eq!(
            value(&body, "memfd_write"),
            "ok",
            "the attack got going: its program is in the memfd: {body}"
        );
    }
    assert!(
        !body.lines().any(|l| l == "executed=yes"),
        "a program copied into a memfd ran: {body}"
    );
    assert_ne!(value(&body, "fexecve"), "ok", "{body}");
    assert_ne!(value(&body, "execveat_empty"), "ok", "{body}");
    assert_ne!(value(&body, "memfd_exec_flag"), "ok", "{body}");
    // The worker's PID namespace has vm.memfd_noexec = 2: every memfd is sealed non-executable,
    // whatever route an exec would take (seccomp refuses the ones above first).
    assert_eq!(value(&body, "memfd_seal_exec"), "yes", "{body}");
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// Kernel objects that outlive a request.

/// SysV shared memory, semaphores, message queues and POSIX message queues live in the
/// worker's IPC namespace, beyond any request: a CGI can make none, so none is left for the
/// next request to find.
#[tokio::test(flavor = "multi_thread")]
async fn sysv_ipc_and_message_queues_outlive_no_request() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("sysv", &attack("sysv"), 0o755);
    // One worker: the second request runs in the first one's IPC namespace.
    let gw = jail.serve(one_worker());
    let created = report_of(&gw, "/cgi-bin/sysv?op=create").await;
    let found = report_of(&gw, "/cgi-bin/sysv?op=find").await;
    eprintln!("NOTE: SysV IPC and POSIX queues, made: {created:?}, then found: {found:?}");
    assert_eq!(value(&created, "op"), "create", "{created}");
    assert_eq!(value(&found, "op"), "find", "{found}");
    for key in ["shm", "sem", "msg", "mq"] {
        assert_ne!(value(&created, key), "ok", "{key} made by a CGI: {created}");
        assert_ne!(
            value(&found, key),
            "ok",
            "{key} made by one request, found by the next: {found}"
        );
    }
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// The system calls no CGI needs.

#[tokio::test(flavor = "multi_thread")]
async fn the_cgi_filter_refuses_what_no_cgi_needs() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("syscalls", &attack("syscalls"), 0o755);
    let gw = jail.serve(one_worker());
    let body = report_of(&gw, "/cgi-bin/syscalls").await;
    eprintln!("NOTE: system calls no CGI needs: {body:?}");
    for key in [
        "socket_netlink",
        "socket_packet",
        "socket_alg",
        "socket_vsock",
        "socket_key",
        "socket_bluetooth",
        "userfaultfd",
        "inotify_init1",
        "fanotify_init",
        "modify_ldt",
        "move_pages_worker",
        "migrate_pages_worker",
        "process_madvise",
        "add_key",
        "fsopen",
        "open_tree",
        "setns_mnt",
        "unshare_user",
        "unshare_mnt",
        "clone_newuser",
        "mount_tmpfs",
        "personality_rie",
    ] {
        assert_ne!(value(&body, key), "ok", "{key}: {body}");
    }
    // Not implemented, so that the C library falls back to clone, where the flags are seen.
    assert_eq!(value(&body, "clone3_newuser"), "ENOSYS", "{body}");
    for key in [
        "socket_unix",
        "socket_inet",
        "socket_inet6",
        "personality_query",
    ] {
        assert_eq!(value(&body, key), "ok", "{key}, which CGIs need: {body}");
    }
    assert!(body.lines().any(|l| l == "done"), "{body}");
    assert_hello(&gw).await;
}

// ---------------------------------------------------------------------------------------------
// A worker that stops answering.

/// A process the test stopped with SIGSTOP: continued when dropped, should it still exist.
struct Stopped(ProcStat);

impl Drop for Stopped {
    fn drop(&mut self) {
        if procfs::still_exists(&self.0).is_some() {
            let _ = kill(Pid::from_raw(self.0.pid), Signal::SIGCONT);
        }
    }
}

/// A worker stopped with SIGSTOP (as a CGI could once do with `kill -STOP 1`, or a debugger
/// or the kernel's freezer) answers nothing: the gateway notices, ends it, starts another, and
/// the requests that follow are served.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_is_replaced() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    let gw = jail.serve(Opts {
        workers: 2,
        timeout_secs: None,
    });
    let pairs = gw.wait_for_workers(Duration::from_secs(10), &[]);
    assert_hello(&gw).await;
    let target = pairs[0].worker.clone();
    kill(Pid::from_raw(target.pid), Signal::SIGSTOP).expect("SIGSTOP to the worker");
    // Dropped before the gateway: nothing is left stopped, whatever happens below.
    let stopped = Stopped(target.clone());
    let deadline = Instant::now() + Duration::from_secs(15);

    let mut in_a_row = 0;
    let mut failures = Vec::new();
    while in_a_row < 10 {
        assert!(
            Instant::now() < deadline,
            "15 s after SIGSTOP to worker {target:?}: {in_a_row} hello requests in a row \
             succeeded, not 10; failures: {failures:#?}"
        );
        let outcome = match client(Duration::from_secs(5))
            .get(gw.url("/cgi-bin/hello"))
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => (0, format!("{e} (timed out: {})", e.is_timeout())),
        };
        if outcome.0 == 200 && outcome.1 == "hello\n" {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            failures.push(outcome);
        }
    }
    eprintln!("NOTE: hello requests that failed after SIGSTOP to a worker: {failures:?}");

    loop {
        if procfs::still_exists(&target).is_none_or(|p| p.is_zombie()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped worker {target:?} still exists 15 s after SIGSTOP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    gw.wait_for_workers(
        left.max(Duration::from_secs(1)),
        std::slice::from_ref(&target),
    );
    let stderr = gw.stderr();
    assert!(
        stderr.lines().any(|l| {
            let l = l.to_lowercase();
            l.contains("worker") && l.contains("not answering")
        }),
        "the gateway says the worker was not answering:\n{stderr}"
    );
    drop(stopped);
    assert_hello(&gw).await;
}

/// `uid=N` of a `tmp_steal` report.
fn uid_of(body: &str) -> u32 {
    value(body, "uid").parse().expect("uid=N")
}

/// Each running CGI has a uid of its own, never the workers' account; while one request
/// runs, another on the same worker can read none of its files in `/tmp` or `/var/tmp` (0600
/// or 0644: each request has a `/tmp` of its own), sees none of its processes in `/proc`, and
/// cannot read the worker's.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_requests_files_and_processes_are_out_of_reach() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("tmp_steal", &attack("tmp_steal"), 0o755);
    let gw = jail.serve(one_worker());
    let Running { armed, task } = start_attack(
        &gw,
        "/cgi-bin/tmp_steal?plant=1&hold=3",
        Arm::Line("armed"),
        None,
        MIB,
    );
    tokio::time::timeout(Duration::from_secs(20), armed)
        .await
        .expect("the victim plants its files within 20 s")
        .expect("the victim answers");
    let body = report_of(&gw, "/cgi-bin/tmp_steal?steal=1").await;
    eprintln!("NOTE: one request looking at a running one: {body:?}");
    for file in [
        "read_tmp_secret",
        "read_tmp_open",
        "read_var_tmp_secret",
        "read_var_tmp_open",
    ] {
        assert_eq!(value(&body, file), "ENOENT", "{file}: {body}");
    }
    assert_eq!(value(&body, "others_in_proc"), "0", "{body}");
    assert_ne!(value(&body, "worker_environ"), "ok", "{body}");
    let victim = response_within(task, Duration::from_secs(20), "the victim").await;
    assert_eq!(victim.status, 200, "{victim:?}");
    assert!(
        victim.head.contains("done"),
        "the victim completes: {victim:?}"
    );
    let (victim_uid, thief_uid) = (uid_of(&victim.head), uid_of(&body));
    assert_ne!(victim_uid, thief_uid, "two running CGIs share a uid");
    for uid in [victim_uid, thief_uid] {
        assert!(
            uid >= 0x7000_0000 && uid != WORKER_ID,
            "uid {uid} is one of --cgi-ids"
        );
    }
    assert_hellos(&gw, 5, "after one request looked at another").await;
}

/// Nothing a finished request wrote in `/tmp` is there for the next one: a namespace whose
/// `/tmp` is not empty is never used again (`worker/src/private_tmp.rs`).
#[tokio::test(flavor = "multi_thread")]
async fn a_finished_requests_files_are_gone_for_the_next() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("tmp_steal", &attack("tmp_steal"), 0o755);
    let gw = jail.serve(one_worker());
    // Alive for a second, so its namespace is surely the one the worker keeps for later
    // CGIs (a CGI that exits at once may be gone before the worker takes a handle on it).
    let planted = report_of(&gw, "/cgi-bin/tmp_steal?plant=1&hold=1").await;
    assert!(planted.contains("armed"), "{planted}");
    for _ in 0..10 {
        let body = report_of(&gw, "/cgi-bin/tmp_steal?steal=1").await;
        assert_eq!(value(&body, "read_tmp_secret"), "ENOENT", "{body}");
        assert_eq!(value(&body, "read_tmp_open"), "ENOENT", "{body}");
        assert_eq!(value(&body, "read_var_tmp_open"), "ENOENT", "{body}");
    }
    assert_hellos(&gw, 3, "after the planted files").await;
}

/// The seed's `/dev/stdin` (and `/dev/fd/N`) work: a CGI that is `cat /dev/stdin` echoes a
/// POST body byte for byte, through the `/proc` each worker mounts for its CGIs; for a GET it
/// reads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn dev_stdin_echoes_the_request_body() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "stdin",
        r"printf 'Content-Type: application/octet-stream\n\n'
exec cat /dev/stdin",
    );
    jail.cgi(
        "fd0",
        r"printf 'Content-Type: application/octet-stream\n\n'
exec cat /dev/fd/0",
    );
    let gw = jail.serve(one_worker());
    let http = client(Duration::from_secs(30));
    // Every byte value, and more than a pipe holds.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for path in ["/cgi-bin/stdin", "/cgi-bin/fd0"] {
        let response = http
            .post(gw.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "POST {path}");
        let echoed = response.bytes().await.expect("body");
        assert!(
            echoed[..] == body[..],
            "{path} echoed {} bytes",
            echoed.len()
        );
        // Without a body the CGI reads nothing, and `/dev/stdin` opens all the same.
        let response = http.get(gw.url(path)).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        assert_eq!(response.bytes().await.expect("body").len(), 0, "GET {path}");
    }
}

/// A request without a body gives its CGI the null device as stdin (no pipe is made for
/// it), and one with a body a pipe of its own: what `/proc/self/fd/0` names, and what it reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_a_body_reads_the_null_device() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "stdin_kind",
        r#"printf 'Content-Type: text/plain\n\n'
printf '%s %s\n' "$(ls -l /proc/self/fd/0 | sed 's/.* -> //')" "$(wc -c)""#,
    );
    let gw = jail.serve(one_worker());
    let http = client(Duration::from_secs(30));
    let url = gw.url("/cgi-bin/stdin_kind");
    let get = http.get(&url).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 200);
    assert_eq!(get.text().await.expect("body"), "/dev/null 0\n");
    let post = http.post(&url).body("four").send().await.expect("POST");
    assert_eq!(post.status().as_u16(), 200);
    let answer = post.text().await.expect("body");
    assert!(
        answer.starts_with("pipe:[") && answer.ends_with("] 4\n"),
        "POST: {answer:?}"
    );
}

/// The null device a request without a body reads is an open file of its own: a lock or a
/// file flag one CGI puts on its stdin ends with it. On one open file the worker held for every
/// such CGI, the locks and flags of the first outlived it, and every later CGI found its stdin
/// non-blocking and locked.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_on_the_null_stdin_ends_with_its_request() {
    require_root!();
    let jail = Jail::new();
    jail.install("null_lock", &attack("null_lock"), 0o755);
    let gw = jail.serve(one_worker());
    let locked = report_of(&gw, "/cgi-bin/null_lock?lock=1").await;
    for taken in ["flock_stdin", "set_flags"] {
        assert_eq!(value(&locked, taken), "ok", "{locked}");
    }
    let after = report_of(&gw, "/cgi-bin/null_lock").await;
    assert_eq!(value(&after, "stdin_flags"), "0x0", "{after}");
    assert_eq!(value(&after, "flock_dev_null"), "ok", "{after}");
}

/// The signals a CGI may keep queued are its own to run out of (128). The kernel also counts
/// them for the owner of the worker's user namespace, the workers' account, one count for
/// every CGI of every worker: one CGI that queued signals until refused (96,000 on this host)
/// left `sigqueue` and `timer_create` failing with EAGAIN in every other request while it
/// held them.
#[tokio::test(flavor = "multi_thread")]
async fn one_cgi_cannot_queue_the_signals_of_all() {
    require_root!();
    let jail = Jail::new();
    jail.install("sigpending", &attack("sigpending"), 0o755);
    let gw = jail.serve(Opts::default());
    let Running { armed, task } = start_attack(
        &gw,
        "/cgi-bin/sigpending?hold=4",
        Arm::Line("armed"),
        None,
        MIB,
    );
    tokio::time::timeout(Duration::from_secs(20), armed)
        .await
        .expect("the attack queues its signals within 20 s")
        .expect("the attack answers");
    // Beside it, on either worker.
    for _ in 0..4 {
        let body = report_of(&gw, "/cgi-bin/sigpending").await;
        assert_eq!(value(&body, "sigqueue"), "ok", "{body}");
        assert_eq!(value(&body, "timer_create"), "ok", "{body}");
    }
    let attack = task.await.expect("the attack's request");
    assert_eq!(value(&attack.head, "stop"), "EAGAIN", "{}", attack.head);
    let queued: u64 = value(&attack.head, "queued").parse().expect("a count");
    assert!((100..=128).contains(&queued), "{}", attack.head);
}

/// What a CGI inherits from its worker instead of setting it in its own process (a system
/// call fewer per request each). No core files: a CGI's would land in its folder or `/tmp`
/// with whatever it held, its worker's with other requests' environments; the limit is the
/// worker's own (set once as it starts), soft and hard, so no CGI can raise it. And no
/// supplementary group without a data folder (with one: `a_data_folder_is_shared_through_its_group`).
#[tokio::test(flavor = "multi_thread")]
async fn no_cgi_and_no_worker_can_dump_core() {
    require_root!();
    let jail = Jail::new();
    jail.cgi(
        "core_limit",
        r#"printf 'Content-Type: text/plain\n\n'
echo "$(ulimit -S -c) $(ulimit -H -c)"
(ulimit -c 1024 2>/dev/null && echo raised) || echo refused
grep '^Groups:' /proc/self/status"#,
    );
    let gw = jail.serve(one_worker());
    let http = client(Duration::from_secs(30));
    let answer = http
        .get(gw.url("/cgi-bin/core_limit"))
        .send()
        .await
        .expect("GET");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.text().await.expect("body"),
        "0 0\nrefused\nGroups:\t \n"
    );
    for pair in gw.wait_for_workers(Duration::from_secs(10), &[]) {
        let limits = fs::read_to_string(format!("/proc/{}/limits", pair.worker.pid))
            .expect("the worker's limits");
        let core = limits
            .lines()
            .find(|line| line.starts_with("Max core file size"))
            .expect("a core line");
        assert_eq!(
            core.split_whitespace().collect::<Vec<_>>()[4..6],
            ["0", "0"],
            "{core}"
        );
    }
}

/// An id comes back after its worker's whole block has been used (least recently freed
/// first). Whatever the last CGI of that id left in `/tmp` (files, an extended attribute on
/// `/tmp` itself, its mode) is not there for the next, nor for any CGI in between that is
/// given the same namespace again: every CGI gets an empty `/tmp` of its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_id_that_comes_back_finds_a_clean_tmp() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.install("tmp_steal", &attack("tmp_steal"), 0o755);
    // 32 CGIs at once: a block of 64 ids per worker.
    let gw = jail.serve_with(one_worker(), &["--max-cgis-per-worker", "32"]);
    for plant in ["1", "2", "3"] {
        // Alive for a second: see a_finished_requests_files_are_gone_for_the_next.
        let planted = report_of(&gw, &format!("/cgi-bin/tmp_steal?plant={plant}&hold=1")).await;
        assert!(planted.contains("armed"), "{planted}");
        if plant == "2" {
            assert_eq!(value(&planted, "plant_xattr"), "ok", "{planted}");
        }
        if plant != "1" {
            assert_eq!(value(&planted, "plant_mode"), "ok", "{planted}");
        }
        let id = uid_of(&planted);
        // The other 63 ids of the block, one request each, then `id` again: each looks, as
        // whichever namespace the worker hands it may be the planter's.
        for other in 0..64 {
            let body = report_of(&gw, "/cgi-bin/tmp_steal?steal=1").await;
            if other == 63 {
                assert_eq!(uid_of(&body), id, "the id came back: {body}");
            }
            assert_eq!(value(&body, "read_tmp_secret"), "ENOENT", "{body}");
            assert_eq!(value(&body, "read_tmp_open"), "ENOENT", "{body}");
            assert_eq!(value(&body, "tmp_xattr"), "ENODATA", "{body}");
            assert_eq!(value(&body, "tmp_mode"), "700", "{body}");
        }
    }
    assert_hellos(&gw, 3, "after the planted /tmp").await;
}

/// Two requests that can pass descriptors to each other (a Unix socket in the data folder)
/// cannot leave anything in the `/tmp` of a request after them: the first fills a file in its
/// `/tmp`, unlinks it and passes it to the second, which holds it after the first has ended.
/// The file is in no folder, so the first's `/tmp` looked empty and was handed to the next
/// request with its space still taken; the worker now counts the blocks and inodes in use of
/// the whole tmpfs. (What such a pair can still do: a descriptor of the folder itself lists
/// the names a later request creates there, never their content; SECURITY.md.)
#[tokio::test(flavor = "multi_thread")]
async fn a_tmp_held_through_a_passed_descriptor_is_not_handed_on() {
    require_root!();
    const GROUP: u32 = 4243;
    let (jail, data) = jail_with_data_folder(GROUP);
    jail.install("tmp_pin", &attack("tmp_pin"), 0o755);
    let gw = jail.serve_with(
        one_worker(),
        &["--data-dir", "/data", "--data-group", &GROUP.to_string()],
    );
    let keeper = {
        let request = gw.client(TIMEOUT).get(gw.url("/cgi-bin/tmp_pin?keep=3"));
        tokio::spawn(async move { request.send().await?.text().await })
    };
    let socket = data.join("pin.sock");
    let end = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pinned = report_of(&gw, "/cgi-bin/tmp_pin?pin=1").await;
    assert_eq!(value(&pinned, "sent"), "ok", "{pinned}");
    // Every namespace the worker keeps comes round in these.
    for _ in 0..12 {
        let body = report_of(&gw, "/cgi-bin/tmp_pin?look=1").await;
        assert_eq!(value(&body, "tmp_blocks_used"), "0", "{body}");
        assert_eq!(value(&body, "tmp_inodes_used"), "1", "{body}");
    }
    let kept = keeper.await.expect("the keeper").expect("its answer");
    assert_eq!(value(&kept, "kept"), "ok", "{kept}");
}

/// What a CGI leaves in the data folder is its own: a setuid bit on its file there (the folder
/// is mounted nosuid, nodev and noexec, so the bit gives nothing) must not stop the next
/// reload or start. The start-up audit walked the folder, and one request could keep the
/// gateway from ever reloading or starting again.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_cgi_leaves_in_the_data_folder_stops_no_reload_or_start() {
    require_root!();
    const GROUP: u32 = 4244;
    let (jail, _) = jail_with_data_folder(GROUP);
    jail.cgi(
        "plant",
        r"printf 'Content-Type: text/plain\n\n'
echo x >/data/planted 2>&1 && chmod 4770 /data/planted 2>&1 && echo planted",
    );
    jail.cgi("hello", HELLO);
    let mut gw = jail.serve_with(
        one_worker(),
        &["--data-dir", "/data", "--data-group", &GROUP.to_string()],
    );
    assert_eq!(report_of(&gw, "/cgi-bin/plant").await, "planted\n");

    gw.signal(Signal::SIGHUP);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let stderr = gw.stderr();
        assert!(!stderr.contains("not reloaded"), "{stderr}");
        if stderr.contains("reloaded: new requests go to the fresh pool") {
            break;
        }
        assert!(Instant::now() < end, "no reload within 20 s:\n{stderr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_hello(&gw).await;

    gw.signal(Signal::SIGTERM);
    assert!(gw.wait_exit(TIMEOUT).is_some(), "the gateway did not stop");
    gw.restart();
    assert_hello(&gw).await;
}

/// `--data-dir` with `--data-group`: the one folder CGIs may write, shared through a group of
/// its own. A file one request writes there, another request (another uid) may append to, and
/// a third reads back; nothing there can be executed; without the flags it is read-only.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_folder_is_shared_through_its_group() {
    require_root!();
    const GROUP: u32 = 4242;
    let (jail, _) = jail_with_data_folder(GROUP);
    jail.cgi(
        "append",
        r"printf 'Content-Type: text/plain\n\n'
if echo line >>/data/log 2>/dev/null; then echo wrote; else echo failed; fi
id -u",
    );
    jail.cgi(
        "show",
        r"printf 'Content-Type: text/plain\n\n'
cat /data/log",
    );
    jail.cgi(
        "run",
        r"printf 'Content-Type: text/plain\n\n'
cp /bin/true /data/program 2>/dev/null
if /data/program 2>/dev/null; then echo ran; else echo refused; fi",
    );
    let gw = jail.serve_with(
        one_worker(),
        &["--data-dir", "/data", "--data-group", &GROUP.to_string()],
    );
    let first = report_of(&gw, "/cgi-bin/append").await;
    let second = report_of(&gw, "/cgi-bin/append").await;
    assert!(
        first.starts_with("wrote\n") && second.starts_with("wrote\n"),
        "{first} {second}"
    );
    assert_ne!(first, second, "two requests, two uids");
    assert_eq!(report_of(&gw, "/cgi-bin/show").await, "line\nline\n");
    assert_eq!(report_of(&gw, "/cgi-bin/run").await, "refused\n", "noexec");
    drop(gw);

    // The same jail without the flags: the folder is read-only like the rest.
    let gw = jail_again();
    let body = report_of(&gw, "/cgi-bin/append").await;
    assert!(body.starts_with("failed\n"), "{body}");
}

/// A data folder over what every CGI reads or runs would carry one request's writes into every
/// later one: with `--data-dir /etc` a CGI appended `6.6.6.6 bank.example` to the jail's
/// `/etc/hosts` for all that followed. Such a folder, owned and moded as the data folder must
/// be, is refused at the start, in one line, and nothing runs.
#[test]
fn a_data_folder_over_etc_or_the_programs_is_refused() {
    require_root!();
    const GROUP: u32 = 4242;
    let jail = Jail::new();
    for folder in ["/etc", "/cgi-bin", "/usr/lib"] {
        as_data_folder(&jail.root().join(folder.trim_start_matches('/')), GROUP);
        let done = run_bounded(
            std::process::Command::new(gateway_bin())
                .arg("--jail")
                .arg(jail.root())
                .args(["--workers", "1", "--listen", "127.0.0.1:0"])
                .args(cgi_ids_arg())
                .args(["--data-dir", folder, "--data-group", &GROUP.to_string()]),
            Duration::from_secs(20),
        );
        assert_eq!(done.status.code(), Some(2), "{folder}: {}", done.stderr);
        let lines: Vec<&str> = done.stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "{folder}: one line, got:\n{}", done.stderr);
        assert!(
            lines[0].contains(&format!("--data-dir {folder}: it is, lies in or holds")),
            "{folder}: {}",
            lines[0]
        );
    }
}

/// Makes `folder` what `--data-dir` asks of a data folder: root's and `group`'s, mode 2770.
/// A fresh jail with a `/data` folder of `group`'s, and that folder's path on the host.
fn jail_with_data_folder(group: u32) -> (Jail, std::path::PathBuf) {
    let jail = Jail::new();
    let data = jail.root().join("data");
    fs::create_dir(&data).expect("mkdir data");
    as_data_folder(&data, group);
    (jail, data)
}

fn as_data_folder(folder: &std::path::Path, group: u32) {
    use std::os::unix::fs::PermissionsExt;
    nix::unistd::chown(
        folder,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(group)),
    )
    .expect("chown the data folder");
    fs::set_permissions(folder, fs::Permissions::from_mode(0o2770)).expect("chmod the data folder");
}

/// A gateway on a fresh jail with a `/data` folder every CGI could write by its mode (0777,
/// which the audit flags: hence --allow-insecure-jail), and no data flags: only the mount
/// keeps it read-only.
fn jail_again() -> Gateway {
    use std::os::unix::fs::PermissionsExt;
    let jail = Jail::new();
    let copy = jail.root().join("data");
    fs::create_dir(&copy).expect("mkdir data");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    jail.cgi(
        "append",
        r"printf 'Content-Type: text/plain\n\n'
if echo line >>/data/log 2>/dev/null; then echo wrote; else echo failed; fi",
    );
    jail.serve_with(one_worker(), &["--allow-insecure-jail"])
}

/// A CGI that leaves files in its `/tmp` has its namespace dropped as it ends, so what it
/// wrote is freed then. Kept in the pool, it stayed in memory until a later CGI took the
/// namespace and found it dirty: up to the tmpfs's size for each idle namespace.
#[tokio::test(flavor = "multi_thread")]
async fn a_tmp_left_full_is_freed_when_its_cgi_ends() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "fill",
        r"printf 'Content-Type: text/plain\n\n'
head -c 1048576 /dev/zero >/tmp/left && echo left",
    );
    let gw = jail.serve(one_worker());
    let worker = gw.wait_for_workers(Duration::from_secs(10), &[])[0]
        .worker
        .pid;
    // A hello whose namespace the worker keeps (one that ends before the worker takes its
    // handle on it, on a busy machine, leaves none).
    let ready = || procfs::mount_namespaces_held(worker);
    let end = Instant::now() + Duration::from_secs(20);
    while ready() != 1 {
        assert!(
            Instant::now() < end,
            "no hello's namespace was kept: {}",
            ready()
        );
        assert_hello(&gw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(report_of(&gw, "/cgi-bin/fill").await, "left\n");
    let end = Instant::now() + Duration::from_secs(10);
    while ready() != 0 {
        assert!(
            Instant::now() < end,
            "10 s after its CGI ended, the worker still keeps the namespace it filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_hello(&gw).await;
}

/// The ready namespaces a burst of CGIs leaves (two descriptors each, copied into every later
/// CGI's process) shrink back as the burst ends, to what runs and a few more.
#[tokio::test(flavor = "multi_thread")]
async fn the_ready_namespaces_of_a_burst_are_let_go() {
    require_root!();
    let jail = Jail::new();
    jail.cgi("hello", HELLO);
    jail.cgi(
        "slow",
        "sleep 1\nprintf 'Content-Type: text/plain\\n\\nslept\\n'",
    );
    let gw = jail.serve(one_worker());
    let worker = gw.wait_for_workers(Duration::from_secs(10), &[])[0]
        .worker
        .pid;
    assert_hellos(&gw, 5, "before the burst").await;
    let before = procfs::descriptors(worker);
    let http = client(Duration::from_secs(30));
    let url = gw.url("/cgi-bin/slow");
    let burst = tokio::spawn(async move { all_answer_200_at_once(&http, &url, 40).await });
    let mut most = before;
    while !burst.is_finished() {
        most = most.max(procfs::descriptors(worker));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    burst.await.expect("the burst");
    assert!(
        most >= before + 40,
        "40 CGIs at once held at most {most} descriptors against {before}: this test no longer tests"
    );
    // As the CGIs end, the idle namespaces go down to 8 beyond those running.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let after = procfs::descriptors(worker);
        if after <= before + 2 * 8 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the worker holds {after} descriptors, {before} before the burst"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_hellos(&gw, 20, "after the burst").await;
}
