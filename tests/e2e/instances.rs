//! Several instances behind one nginx (README "Several instances"): two gateways, each with a
//! jail, accounts, `--cgi-ids` and Unix sockets of its own, behind one nginx running the
//! commented `upstream` block of `examples/nginx/proxy_pass.conf`. Both serve; `kill -9` of one
//! under a steady load leaves none of its processes and fails only requests it had in flight
//! that nginx cannot send to the other (a GET whose answer had begun, a POST already sent);
//! started again over its stale socket files, it serves again beside the other.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::ops::RangeInclusive;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{cgi_ids_arg, one_worker, require_root, wait_dead, Gateway, Jail};
use crate::http::client;
use crate::nginx::Nginx;
use crate::procfs::{self, ProcStat};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Each instance's name (what its CGIs answer), front account and workers' account: ids only
/// this file uses, beside those of `accounts.rs`, below the default ones and every test's
/// `--cgi-ids`. README "Accounts": two gateways on one host need their own `--user`,
/// `--gateway-user` and `--cgi-ids`, so neither can signal or trace the other's processes.
const INSTANCES: [(&str, u32, u32); 2] = [
    ("a", 1_879_047_910, 1_879_047_911),
    ("b", 1_879_047_912, 1_879_047_913),
];

/// How long every process of a `kill -9`ed gateway may take to be gone. The kernel does it at
/// once (parent-death signals, then the workers' PID namespaces); the margin is for two cores
/// busy with the load and other tests.
const KILL_DEADLINE: Duration = Duration::from_secs(2);

/// Concurrent clients of the steady load; every fourth request of each is to `/cgi-bin/slow`,
/// so requests are in flight on each instance at any time.
const LOAD_CLIENTS: usize = 4;

/// One gateway of the pair, with what the test needs to know about it.
struct Instance {
    name: &'static str,
    gateway: Gateway,
    /// Its HTTP socket as nginx's `server` line names it, and as `$upstream_addr` shows it.
    upstream: String,
    /// Its `--admin` socket file (`/healthz`).
    admin_socket: PathBuf,
    /// Its HTTP socket file.
    http_socket: PathBuf,
    /// The uids its processes run as: the front's, the workers', the CGIs' `--cgi-ids`.
    front_id: u32,
    worker_id: u32,
    cgi_ids: RangeInclusive<u32>,
}

impl Instance {
    /// A jail made for its workers' account, whose CGIs answer with `name` (`/cgi-bin/slow`
    /// after a second, `/cgi-bin/store` after reading the body and a second), served on Unix
    /// sockets in the jail's temp folder.
    fn start(name: &'static str, front_id: u32, worker_id: u32) -> Instance {
        let worker = worker_id.to_string();
        let front = front_id.to_string();
        let jail = Jail::with_init_args(&["--user", &worker]);
        jail.cgi(
            "who",
            &format!(r"printf 'Content-Type: text/plain\n\n{name}\n'"),
        );
        jail.cgi(
            "slow",
            &format!(r"sleep 1; printf 'Content-Type: text/plain\n\n{name}\n'"),
        );
        jail.cgi(
            "store",
            &format!(r"cat >/dev/null; sleep 1; printf 'Content-Type: text/plain\n\n{name}\n'"),
        );
        let http = jail.folder().join("http.sock");
        let admin = jail.folder().join("admin.sock");
        let upstream = format!("unix:{}", http.display());
        let [ids_flag, ids] = cgi_ids_arg();
        let cgi_ids = ids
            .split_once('-')
            .and_then(|(first, last)| Some(first.parse().ok()?..=last.parse().ok()?))
            .expect("--cgi-ids FIRST-LAST");
        let gateway = jail.serve_with(
            one_worker(),
            &[
                "--listen",
                &upstream,
                "--admin",
                &format!("unix:{}", admin.display()),
                "--user",
                &worker,
                "--gateway-user",
                &front,
                &ids_flag,
                &ids,
            ],
        );
        Instance {
            name,
            gateway,
            upstream,
            admin_socket: admin,
            http_socket: http,
            front_id,
            worker_id,
            cgi_ids,
        }
    }

    /// The status of its `/healthz` on its admin socket, `None` if nothing answers there.
    async fn healthz(&self) -> Option<u16> {
        let admin = reqwest::Client::builder()
            .unix_socket(self.admin_socket.as_path())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client on the admin socket");
        let response = admin.get("http://localhost/healthz").send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// Polls `/healthz` until it answers 200; panics after `deadline`.
    async fn wait_healthy(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            let status = self.healthz().await;
            if status == Some(200) {
                return;
            }
            assert!(
                Instant::now() < end,
                "instance {}: /healthz answered {status:?} for {deadline:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `uid` is one of this instance's.
    fn owns_uid(&self, uid: u32) -> bool {
        uid == self.front_id || uid == self.worker_id || self.cgi_ids.contains(&uid)
    }
}

/// What a request of the load sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// Idempotent: nginx may send it to another instance when its own dies.
    Get,
    /// Not idempotent: once sent, nginx never repeats it (its default, kept).
    Post,
}

/// One request of the load through nginx: when it started and ended, its status, which
/// instance's CGI answered and which instances nginx tried, in order (`X-Upstream`, by name).
#[derive(Debug)]
struct Outcome {
    method: Method,
    started: Instant,
    ended: Instant,
    /// `None`: no response (the detail says why).
    status: Option<u16>,
    by: Option<String>,
    tried: Vec<String>,
    detail: String,
}

impl Outcome {
    /// The instance that answered it with a 200, if one did.
    fn served_by(&self) -> Option<&str> {
        self.by.as_deref().filter(|_| self.status == Some(200))
    }

    fn in_flight_at(&self, moment: Instant) -> bool {
        self.started < moment && self.ended > moment
    }
}

/// The second instance's socket in the example's several-instances block.
const EXAMPLE_SECOND: &str = "unix:/run/jailgate-b/http.sock";

/// The commented several-instances block of the example config, uncommented, in place of the
/// config's one-gateway `upstream` ([`EXAMPLE_SECOND`] is `second`; the first is the package's
/// socket, which `Nginx::start_edited` replaces), and each answer telling which instances
/// nginx tried (`X-Upstream`, for the test only).
fn with_two_upstreams(config: String, second: &str) -> String {
    let lines: Vec<&str> = config.lines().collect();
    let first = lines
        .iter()
        .position(|line| line.trim_start() == "#upstream jailgate {")
        .expect("proxy_pass.conf has a commented several-instances upstream");
    let count = lines[first..]
        .iter()
        .position(|line| line.trim_start().starts_with("#proxy_next_upstream "))
        .expect("the block ends with proxy_next_upstream")
        + 1;
    let block: String = lines[first..first + count]
        .iter()
        .map(|line| format!("{}\n", line.replacen('#', "", 1)))
        .collect();
    let single =
        "upstream jailgate {\n    server unix:/run/jailgate/http.sock;\n    keepalive 16;\n}\n";
    let proxy_pass = "        proxy_pass http://jailgate;\n";
    assert!(config.contains(single) && config.contains(proxy_pass));
    config
        .replace(single, &block.replace(EXAMPLE_SECOND, second))
        .replace(
            proxy_pass,
            &format!("{proxy_pass}        add_header X-Upstream $upstream_addr always;\n"),
        )
}

/// The `fail_timeout` of the example's several-instances block.
fn fail_timeout(config: &str) -> Duration {
    let seconds = config
        .split(&format!("#    server {EXAMPLE_SECOND} "))
        .nth(1)
        .and_then(|rest| rest.split("fail_timeout=").nth(1))
        .and_then(|rest| rest.split('s').next())
        .and_then(|seconds| seconds.parse().ok())
        .expect("fail_timeout=SECONDSs on the second server line");
    Duration::from_secs(seconds)
}

/// `count` GETs of `/cgi-bin/who` through nginx, one after another: how many each instance
/// answered. Every one must be a 200 from one of them.
async fn spread(nginx: &Nginx, count: usize) -> BTreeMap<String, usize> {
    let http = client(TIMEOUT);
    let mut served = BTreeMap::new();
    for _ in 0..count {
        let response = http
            .get(nginx.url("/cgi-bin/who"))
            .send()
            .await
            .expect("a response through nginx");
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.expect("body");
        *served.entry(body.trim_end().to_owned()).or_insert(0) += 1;
    }
    served
}

/// `LOAD_CLIENTS` loops of GETs through nginx until `stop`, every fourth one to
/// `/cgi-bin/slow`.
fn steady_load(
    nginx: &Nginx,
    names: &BTreeMap<String, &'static str>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..LOAD_CLIENTS)
        .map(|client_index| {
            let stop = stop.clone();
            let names = names.clone();
            let who = nginx.url("/cgi-bin/who");
            let slow = nginx.url("/cgi-bin/slow");
            tokio::spawn(async move {
                let http = client(TIMEOUT);
                let mut outcomes = Vec::new();
                let mut n = client_index;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let url = if n % 4 == 0 { &slow } else { &who };
                    outcomes.push(send(&http, Method::Get, url, &names).await);
                }
                outcomes
            })
        })
        .collect()
}

/// One request, answered by a 200 whose body names an instance, or not.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    names: &BTreeMap<String, &'static str>,
) -> Outcome {
    let started = Instant::now();
    let request = match method {
        Method::Get => http.get(url),
        Method::Post => http.post(url).body(vec![b'x'; 1000]),
    };
    let mut outcome = Outcome {
        method,
        started,
        ended: started,
        status: None,
        by: None,
        tried: Vec::new(),
        detail: String::new(),
    };
    match request.send().await {
        Ok(response) => {
            outcome.status = Some(response.status().as_u16());
            outcome.tried = response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(", ")
                .map(|address| names.get(address).map_or(address, |name| *name).to_owned())
                .collect();
            match response.text().await {
                Ok(body) => {
                    let body = body.trim_end();
                    if names.values().any(|name| *name == body) {
                        outcome.by = Some(body.to_owned());
                    }
                    outcome.detail = format!("{body:?}");
                }
                Err(error) => outcome.detail = format!("body: {error}"),
            }
        }
        Err(error) => outcome.detail = format!("{error:?}"),
    }
    outcome.ended = Instant::now();
    outcome
}

/// Sends POSTs to `/cgi-bin/store` through nginx, one every 200 ms, until `instance` runs
/// both a `slow` GET's CGI and a `store` POST's CGI that started less than half a second ago
/// (both sleep a second: they are sure to be in flight a moment later). Returns every
/// process of the instance then, its supervisor first, with the POSTs sent.
async fn requests_in_flight_on(
    instance: &Instance,
    nginx: &Nginx,
    names: &BTreeMap<String, &'static str>,
) -> (Vec<ProcStat>, Vec<tokio::task::JoinHandle<Outcome>>) {
    let end = Instant::now() + Duration::from_secs(15);
    let mut posts = Vec::new();
    let mut next_post = Instant::now();
    // When each CGI was first seen; `None` for those already running at the first look.
    let mut first_seen: HashMap<(i32, u64), Option<Instant>> = HashMap::new();
    let mut first_look = true;
    loop {
        if Instant::now() >= next_post {
            let (names, url) = (names.clone(), nginx.url("/cgi-bin/store"));
            posts.push(tokio::spawn(async move {
                send(&client(TIMEOUT), Method::Post, &url, &names).await
            }));
            next_post += Duration::from_millis(200);
        }
        let descendants = instance.gateway.descendants();
        for process in &descendants {
            let seen = (!first_look).then(Instant::now);
            first_seen
                .entry((process.pid, process.starttime))
                .or_insert(seen);
        }
        first_look = false;
        let fresh = |script: &str| {
            descendants.iter().any(|p| {
                p.comm == script
                    && first_seen[&(p.pid, p.starttime)]
                        .is_some_and(|at| at.elapsed() < Duration::from_millis(500))
            })
        };
        if fresh("slow") && fresh("store") {
            let supervisor = procfs::stat(instance.gateway.pid()).expect("the supervisor runs");
            return (
                std::iter::once(supervisor).chain(descendants).collect(),
                posts,
            );
        }
        assert!(
            Instant::now() < end,
            "no slow GET and POST in flight together on instance {}: {descendants:?}",
            instance.name
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two instances behind one nginx: both serve and are healthy; `kill -9` of one's supervisor
/// under a steady load of GETs leaves none of its processes (by pid and by uid); of the
/// requests in flight on it, nginx sends the GETs whose answer had not begun to the other
/// (`X-Upstream` shows it), and only the rest fail (a GET whose answer had begun is cut off, a
/// POST already sent is not repeated: nginx's default); then everything goes to the survivor; restarted with the same command line over its stale socket files, the killed one
/// is healthy at once and, after nginx's `fail_timeout`, serves again beside the other.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_behind_one_nginx_outlive_a_kill_9_of_one() {
    require_root!();
    // Declared first, removed last: nginx's prefix (nginx itself is stopped before it).
    let nginx_prefix = tempfile::TempDir::with_prefix("jailgate-e2e-nginx-").expect("temp dir");
    let [(name_a, front_a, worker_a), (name_b, front_b, worker_b)] = INSTANCES;
    let mut a = Instance::start(name_a, front_a, worker_a);
    let b = Instance::start(name_b, front_b, worker_b);
    let mut example = String::new();
    let nginx = Nginx::start_edited("proxy_pass.conf", nginx_prefix.path(), &a.upstream, |c| {
        example.clone_from(&c);
        with_two_upstreams(c, &b.upstream)
    });
    let fail_timeout = fail_timeout(&example);
    let names: BTreeMap<String, &'static str> = [(&a, name_a), (&b, name_b)]
        .into_iter()
        .map(|(instance, name)| (instance.upstream.clone(), name))
        .collect();

    // Both healthy, both serve: round robin gives each about half.
    for instance in [&a, &b] {
        assert_eq!(instance.healthz().await, Some(200), "{}", instance.name);
    }
    let served = spread(&nginx, 40).await;
    assert!(
        served.get(name_a) >= Some(&10) && served.get(name_b) >= Some(&10),
        "40 GETs through nginx reach both instances: {served:?}"
    );

    // The steady load; then, with a slow GET and a POST in flight on a, kill -9 of its
    // supervisor. POSTs are sent only before the kill: one sent just after it may go out on a
    // keepalive connection to a that nginx has not yet seen close, and nginx would not repeat
    // it either (that is nginx's timing, not the gateway's).
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&nginx, &names, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (processes, posts) = requests_in_flight_on(&a, &nginx, &names).await;
    let front = a.gateway.front().expect("a's front");
    assert!(
        processes.iter().any(|p| p.pid == front.pid) && a.gateway.workers_now().is_some(),
        "supervisor, front, holder, worker and CGIs: {processes:?}"
    );
    let killed_at = Instant::now();
    kill(Pid::from_raw(a.gateway.pid()), Signal::SIGKILL).expect("kill -9 a's supervisor");

    // All of a's processes die with it: those seen, by pid and start time (the supervisor is
    // reaped by the harness, the orphans by PID 1: a zombie holds nothing, so it counts as
    // dead), and any process of a's uids, wherever it was reparented.
    let left = tokio::task::block_in_place(|| wait_dead(&processes, KILL_DEADLINE));
    assert!(left.is_empty(), "alive after kill -9 of a: {left:?}");
    let left_by_uid = loop {
        let left = procfs::running_as(|uid| a.owns_uid(uid));
        if left.is_empty() || killed_at.elapsed() >= KILL_DEADLINE {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        left_by_uid.is_empty(),
        "processes of a's uids after kill -9: {left_by_uid:?}"
    );
    let dead_at = Instant::now();
    let status = tokio::task::block_in_place(|| a.gateway.wait_exit(KILL_DEADLINE));
    assert!(status.is_some(), "a's supervisor is reaped");
    assert_eq!(b.healthz().await, Some(200), "the survivor is healthy");

    // Only b serves for a while.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The socket files a left are stale (nobody accepts), and do not stop the restart.
    for socket in [&a.http_socket, &a.admin_socket] {
        let refused = UnixStream::connect(socket).map_err(|e| e.kind());
        assert_eq!(
            refused.err(),
            Some(ErrorKind::ConnectionRefused),
            "{} is left, stale",
            socket.display()
        );
    }
    let zombies_at_restart = processes
        .iter()
        .filter_map(procfs::still_exists)
        .filter(ProcStat::is_zombie)
        .count();
    let restarted_at = Instant::now();
    tokio::task::block_in_place(|| a.gateway.restart());
    a.wait_healthy(Duration::from_secs(10)).await;
    // Its own dead front and holders, zombies until PID 1 reaps them, are no other gateway.
    let stderr = a.gateway.stderr();
    assert!(
        !stderr.contains("can signal and trace each other"),
        "the restart warned of the killed instance's own processes:\n{stderr}"
    );
    let back_at = Instant::now() + fail_timeout;
    tokio::time::sleep(fail_timeout + Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for client in load {
        outcomes.extend(client.await.expect("load client"));
    }
    for post in posts {
        outcomes.push(post.await.expect("POST task"));
    }

    // Only requests in flight on a when it died fail, and only those nginx cannot send to b.
    // A GET that had no answer's head from a yet is tried again on b (nginx's
    // `proxy_next_upstream error`). One whose head nginx had already passed on (a 200 from a:
    // a short answer goes out whole only when the CGI ends within `CgiBody::settle`'s 2 ms,
    // otherwise the head goes first and the end of the body after) cannot be taken back: its
    // body is cut off. A POST already sent is never repeated (nginx's default): nginx's 502,
    // or a 200 from a cut off the same way.
    let failed = |method: Method| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.method == method && o.served_by().is_none())
            .collect()
    };
    let (failed_gets, failed_posts) = (failed(Method::Get), failed(Method::Post));
    for outcome in failed_gets.iter().chain(&failed_posts) {
        let cut_or_refused = match outcome.method {
            Method::Get => outcome.status == Some(200),
            Method::Post => matches!(outcome.status, Some(200 | 502)),
        };
        assert!(
            cut_or_refused && outcome.tried == [name_a] && outcome.in_flight_at(killed_at),
            "only a request in flight on a at the kill, and past retrying, may fail: {outcome:?}"
        );
    }
    // One POST at least: a had just started a `store` CGI when it was killed.
    let stores_at_kill = processes.iter().filter(|p| p.comm == "store").count();
    assert!(
        !failed_posts.is_empty(),
        "no POST failed, though a ran {stores_at_kill} store CGIs at the kill"
    );
    for outcome in &outcomes {
        if let Some(by) = outcome.served_by() {
            assert_eq!(
                outcome.tried.last().map(String::as_str),
                Some(by),
                "X-Upstream names the instance that answered: {outcome:?}"
            );
        }
    }
    let gets = |by: &str, window: &dyn Fn(&Outcome) -> bool| {
        outcomes
            .iter()
            .filter(|o| o.method == Method::Get && window(o) && o.served_by() == Some(by))
            .count()
    };
    let before_kill = |o: &Outcome| o.ended < killed_at;
    assert!(
        gets(name_a, &before_kill) > 0 && gets(name_b, &before_kill) > 0,
        "both served the load before the kill"
    );
    // The GETs in flight on a when it died: tried on a, then answered by b.
    let retried = outcomes
        .iter()
        .filter(|o| o.method == Method::Get && o.in_flight_at(killed_at))
        .filter(|o| o.tried == [name_a, name_b])
        .count();
    assert!(retried > 0, "the slow GET in flight on a went to b");
    let while_down = |o: &Outcome| o.started >= dead_at && o.ended <= restarted_at;
    let down_gets = outcomes.iter().filter(|o| while_down(o)).count();
    assert!(
        down_gets > 0 && gets(name_b, &while_down) == down_gets,
        "everything went to b while a was down ({down_gets} GETs)"
    );
    let after_back = |o: &Outcome| o.started >= back_at;
    let (again_a, again_b) = (gets(name_a, &after_back), gets(name_b, &after_back));
    assert!(
        again_a > 0 && again_b > 0,
        "both serve again after the restart and fail_timeout: a {again_a}, b {again_b}"
    );
    eprintln!(
        "a's {} processes dead {:?} after kill -9; {} GETs, {} failed (cut off), {retried} in \
         flight on a retried on b, {down_gets} while a was down all b's, a {again_a} and b {again_b} once \
         back; {} POSTs, {} failed ({stores_at_kill} running on a at the kill); {zombies_at_restart} \
         of a's processes were zombies at the restart",
        processes.len(),
        dead_at - killed_at,
        outcomes.iter().filter(|o| o.method == Method::Get).count(),
        failed_gets.len(),
        outcomes.iter().filter(|o| o.method == Method::Post).count(),
        failed_posts.len(),
    );
    let served = spread(&nginx, 40).await;
    assert!(
        served.get(name_a) >= Some(&10) && served.get(name_b) >= Some(&10),
        "40 GETs after the restart reach both instances: {served:?}"
    );
}
