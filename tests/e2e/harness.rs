//! The harness: finds the built binaries, builds a jail in a temp folder, starts the real
//! `gateway` on `127.0.0.1:0`, and guarantees that everything it started is stopped by its pid
//! and every temp folder removed, whatever way the test ends.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::procfs::{self, ProcStat};

/// The workers' uid and gid by default (`--user`; `DEFAULT_WORKER_ID` in
/// `protocol/src/layout.rs`): an id of their own, no account of the host's.
pub const WORKER_ID: u32 = 1_879_048_191;
/// The front's uid and gid by default (`--gateway-user`; `DEFAULT_FRONT_ID`).
pub const FRONT_ID: u32 = 1_879_048_190;

/// The gateway's default program set, plus `ls`, `id` and `env` that the tests need.
pub const JAIL_PROGRAMS: &[&str] = &[
    "[", "cat", "chmod", "cp", "date", "echo", "expr", "mv", "rm", "sh", "sleep", "test", "awk",
    "egrep", "fgrep", "grep", "gunzip", "zcat", "gzip", "head", "nice", "sed", "sort", "tail",
    "touch", "tr", "true", "uniq", "wc", "ls", "id", "env",
];

/// Name and value of a variable put into the gateway's own environment: no CGI may see it.
pub const LEAK_NAME: &str = "JAILGATE_TEST_LEAK";
pub const LEAK_VALUE: &str = "jailgate-leak-canary-1";
/// A component appended to the gateway's `PATH`, so a CGI `PATH` copied from the gateway shows.
pub const LEAK_PATH_PART: &str = "/nonexistent/jailgate-leak-canary-path";

/// How long the gateway may take to print its ready line.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopped process gets between SIGTERM and SIGKILL, and after SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long `gateway jail init` may take.
const JAIL_INIT_DEADLINE: Duration = Duration::from_secs(60);

/// True when running as root; tests that need root call [`require_root!`] first.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skip (loudly) a test that needs root when not root. CI runs as root.
macro_rules! require_root {
    () => {
        if !$crate::harness::is_root() {
            eprintln!(
                "SKIPPED {}: the end-to-end tests need root (chroot, namespaces, setuid)",
                module_path!()
            );
            return;
        }
    };
}
pub(crate) use require_root;

/// The folder holding the workspace binaries: the test executable is
/// `target/<profile>/deps/e2e-HASH`, the binaries are in `target/<profile>/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

pub fn gateway_bin() -> PathBuf {
    binary("gateway")
}

pub fn worker_bin() -> PathBuf {
    binary("jailgate-worker")
}

/// A child process that is stopped by its pid when dropped: SIGTERM, up to 5 s, SIGKILL,
/// up to 5 s more. Never blocks forever.
pub struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard {
            child,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status if the process has exited (and is now reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to this child (by its pid), unless it has been reaped already.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_wait().is_none() {
            // The child is not reaped, so the pid is still ours: no reuse possible.
            let _ = kill(Pid::from_raw(self.pid()), signal);
        }
    }

    /// SIGTERM, wait up to 5 s, SIGKILL, wait up to 5 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_timeout(STOP_GRACE) {
            return Some(status);
        }
        self.signal(Signal::SIGKILL);
        let status = self.wait_timeout(STOP_GRACE);
        if status.is_none() {
            eprintln!(
                "harness: pid {} did not die within {STOP_GRACE:?} of SIGKILL",
                self.pid()
            );
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a short-lived command left behind.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion with a deadline (it is killed past it, and this panics), its
/// output captured into files of a temp folder (no pipe can fill up and block it).
pub fn run_bounded(cmd: &mut Command, deadline: Duration) -> Finished {
    let out = TempDir::new().expect("temp dir for command output");
    let stdout_path = out.path().join("stdout");
    let stderr_path = out.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"));
    let mut child = ChildGuard::spawn(cmd);
    let status = child.wait_timeout(deadline);
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let Some(status) = status else {
        drop(child);
        panic!("{cmd:?} did not finish within {deadline:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Who is using the machine's shared resources right now: any number of ordinary gateways, or
/// one test that must have the machine to itself. The resources in question are real and
/// machine-wide: `RLIMIT_NPROC` counts every process of the CGI uid (a fork bomb in one test
/// would make every other test's CGIs fail to fork), and the escape tests measure request
/// latency during an attack, which a concurrent 50 MiB upload would drown. A nested shared
/// use (a test with two gateways) never waits for a queued exclusive one, so nothing deadlocks.
struct MachineUse {
    shared: usize,
    exclusive: bool,
}

static MACHINE: Mutex<MachineUse> = Mutex::new(MachineUse {
    shared: 0,
    exclusive: false,
});
static MACHINE_FREED: Condvar = Condvar::new();

/// Held by every running [`Gateway`]: shared by default, exclusive for [`Jail::serve_alone`].
pub struct MachineGuard {
    exclusive: bool,
}

fn machine() -> MutexGuard<'static, MachineUse> {
    // A test that panicked while holding the lock left consistent counters: carry on.
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

impl MachineGuard {
    pub fn acquire(exclusive: bool) -> MachineGuard {
        let mut state = machine();
        loop {
            let free = if exclusive {
                !state.exclusive && state.shared == 0
            } else {
                !state.exclusive
            };
            if free {
                break;
            }
            state = MACHINE_FREED.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if exclusive {
            state.exclusive = true;
        } else {
            state.shared += 1;
        }
        MachineGuard { exclusive }
    }
}

impl Drop for MachineGuard {
    fn drop(&mut self) {
        let mut state = machine();
        if self.exclusive {
            state.exclusive = false;
        } else {
            state.shared -= 1;
        }
        MACHINE_FREED.notify_all();
    }
}

/// A jail built by `gateway jail init` in a fresh temp folder, not yet served.
pub struct Jail {
    dir: TempDir,
    root: PathBuf,
}

impl Jail {
    /// `gateway jail init DIR --with PROG...` with [`JAIL_PROGRAMS`].
    pub fn new() -> Jail {
        Jail::with_programs(JAIL_PROGRAMS)
    }

    /// `gateway jail init DIR --with PROG...` with exactly `programs`.
    pub fn with_programs(programs: &[&str]) -> Jail {
        let args: Vec<&str> = programs.iter().flat_map(|p| ["--with", p]).collect();
        Jail::with_init_args(&args)
    }

    /// `gateway jail init DIR ARGS...` (for instance `--profile minimal`).
    pub fn with_init_args(args: &[&str]) -> Jail {
        let dir = TempDir::with_prefix("jailgate-e2e-").expect("temp dir");
        let root = dir.path().join("jail");
        let mut cmd = Command::new(gateway_bin());
        cmd.args(["jail", "init"]).arg(&root).args(args);
        cmd.env_remove("LD_LIBRARY_PATH");
        let done = run_bounded(&mut cmd, JAIL_INIT_DEADLINE);
        assert!(
            done.status.success(),
            "`gateway jail init` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            done.status,
            done.stdout,
            done.stderr
        );
        let root = root.canonicalize().expect("jail init created the jail dir");
        assert!(
            root.join("cgi-bin").is_dir(),
            "jail init made no cgi-bin in {}",
            root.display()
        );
        Jail { dir, root }
    }

    /// The jail folder on the host, canonicalised.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The temporary folder that holds the jail, removed with it: for a test's sockets,
    /// nginx prefixes and other files beside the jail.
    pub fn folder(&self) -> &Path {
        self.root.parent().expect("the jail's temp folder")
    }

    /// Writes `/cgi-bin/NAME` as a `#!/bin/sh` script with `body`, mode 0755, root-owned.
    pub fn cgi(&self, name: &str, body: &str) -> &Jail {
        self.file(name, &format!("#!/bin/sh\n{body}\n"), 0o755)
    }

    /// Writes `/cgi-bin/NAME` with the exact `contents` and `mode`.
    pub fn file(&self, name: &str, contents: &str, mode: u32) -> &Jail {
        let path = self.root.join("cgi-bin").join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        self
    }

    /// Copies the file at `source` to `/cgi-bin/NAME` with `mode` (root-owned: the tests run
    /// as root). For compiled attack programs.
    pub fn install(&self, name: &str, source: &Path, mode: u32) -> &Jail {
        let path = self.root.join("cgi-bin").join(name);
        fs::copy(source, &path)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", source.display(), path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        self
    }

    /// Starts the gateway on this jail.
    pub fn serve(self, opts: Opts) -> Gateway {
        Gateway::start(self, opts, &[], false)
    }

    /// Starts the gateway on this jail with `extra` flags after the usual ones.
    pub fn serve_with(self, opts: Opts, extra: &[&str]) -> Gateway {
        Gateway::start(self, opts, extra, false)
    }

    /// Like [`Jail::serve_with`], but first waits until no other gateway of this test binary
    /// runs, and keeps every other one from starting until this one is dropped (see
    /// [`MachineGuard`]): for attacks on machine-wide resources and latency measurements.
    pub fn serve_alone(self, opts: Opts, extra: &[&str]) -> Gateway {
        Gateway::start(self, opts, extra, true)
    }

    /// Starts the gateway on this jail with `extra` flags and expects it to refuse: to exit by
    /// itself within 20 s without a ready line. If it serves instead, it is stopped and this
    /// panics with what it printed.
    pub fn start_refused(&self, extra: &[&str]) -> Finished {
        let out = TempDir::new().expect("temp dir for gateway output");
        let stdout_path = out.path().join("stdout");
        let stderr_path = out.path().join("stderr");
        let mut cmd = Command::new(gateway_bin());
        cmd.arg("--jail")
            .arg(&self.root)
            .args(["--workers", "1", "--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--cgi-ids") {
            cmd.args(cgi_ids_arg());
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        let _machine = MachineGuard::acquire(false);
        let mut child = ChildGuard::spawn(&mut cmd);
        // Exits by itself (the refusal), or prints its ready line (it serves: stop it now).
        let end = Instant::now() + READY_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait() {
                break Some(status);
            }
            let serving = fs::read_to_string(&stdout_path).is_ok_and(|t| t.contains("listening"));
            if serving || Instant::now() >= end {
                child.stop();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "the gateway did not refuse to start (it served, or still ran after \
                 {READY_DEADLINE:?}; now stopped)\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        };
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// This host's own IPv4 addresses other than loopback (any local process can connect from
/// one of them).
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    nix::ifaddrs::getifaddrs()
        .expect("the host's interfaces")
        .filter_map(|interface| interface.address)
        .filter_map(|address| address.as_sockaddr_in().map(|v4| v4.ip().into()))
        .filter(|ip: &std::net::IpAddr| !ip.is_loopback())
        .collect()
}

/// A documentation network (RFC 5737) none of this host's addresses is in, for a
/// `--trusted-proxy` on another host, with an address in it: `("198.51.100.0/24",
/// "198.51.100.7")`.
pub fn foreign_network() -> (String, String) {
    let local = host_addresses();
    ["192.0.2", "198.51.100", "203.0.113"]
        .into_iter()
        .find(|prefix| {
            !local
                .iter()
                .any(|ip| ip.to_string().starts_with(&format!("{prefix}.")))
        })
        .map(|prefix| (format!("{prefix}.0/24"), format!("{prefix}.7")))
        .expect("a documentation network this host has no address in")
}

/// A free loopback port (closed again at once: what binds it comes right after).
pub fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// `127.0.0.1:PORT` of a free loopback port, for a listener flag (`--admin`, `--fastcgi`).
pub fn free_loopback_address() -> String {
    format!("127.0.0.1:{}", free_loopback_port())
}

/// One worker, every other option at its default.
pub fn one_worker() -> Opts {
    Opts {
        workers: 1,
        ..Opts::default()
    }
}

/// `--cgi-ids` with a range of its own for each gateway a test starts: gateways running at once
/// must not share the ids their CGIs run as (each refuses to start while a process has one of
/// its ids, and the tests run several at a time). The ranges lie above the default one
/// (`DEFAULT_CGI_IDS`, 0x7000_0000 to 0x700f_ffff) and below 0x8000_0000: a gateway running
/// with the defaults on the same host (an installed service) has CGIs there, and one running
/// at the wrong moment would stop a test's start. Each run of the tests starts at a block of
/// its own, from its pid (times 61, so that runs whose pids are close start far apart): two
/// runs at once on one machine seldom meet either.
pub fn cgi_ids_arg() -> [String; 2] {
    const FIRST: u32 = 0x7010_0000;
    const BLOCKS: u32 = (0x8000_0000 - FIRST) / 0x1_0000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let block = std::process::id().wrapping_mul(61).wrapping_add(n) % BLOCKS;
    let first = FIRST + block * 0x1_0000;
    [
        "--cgi-ids".to_owned(),
        format!("{first}-{}", first + 0xffff),
    ]
}

/// Gateway flags a test may change. `--listen 127.0.0.1:0` is always passed.
#[derive(Clone, Debug)]
pub struct Opts {
    pub workers: usize,
    pub timeout_secs: Option<u64>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            workers: 2,
            timeout_secs: None,
        }
    }
}

/// A running gateway. Dropping it stops it by its pid (and, should any outlive it, the
/// processes that were its descendants, each checked by pid and start time), prints its
/// stderr if the test is failing, then removes the temp folder.
pub struct Gateway {
    child: ChildGuard,
    /// The HTTP address (unspecified when it listens on a Unix socket: see `unix`).
    pub addr: SocketAddr,
    /// The Unix socket HTTP is served on, with `--listen unix:PATH` among the extra flags.
    pub unix: Option<PathBuf>,
    pub workers: usize,
    stderr_path: PathBuf,
    root: PathBuf,
    /// The command line it was started with, for [`Gateway::restart`].
    args: Vec<OsString>,
    // Last fields: dropped after the processes are stopped.
    _dir: TempDir,
    _machine: MachineGuard,
}

/// One prespawned worker: the holder (a child of the gateway) and the worker proper.
#[derive(Clone, Debug)]
pub struct WorkerPair {
    pub holder: ProcStat,
    pub worker: ProcStat,
}

impl Gateway {
    fn start(jail: Jail, opts: Opts, extra: &[&str], exclusive: bool) -> Gateway {
        let machine = MachineGuard::acquire(exclusive);
        let Jail { dir, root } = jail;
        let stderr_path = dir.path().join("gateway.stderr");
        let stderr = File::create(&stderr_path).expect("gateway stderr file");
        let mut args: Vec<OsString> = vec!["--jail".into(), root.clone().into()];
        args.extend(
            [
                "--workers",
                &opts.workers.to_string(),
                "--listen",
                "127.0.0.1:0",
            ]
            .map(OsString::from),
        );
        if let Some(secs) = opts.timeout_secs {
            args.extend(["--timeout", &secs.to_string()].map(OsString::from));
        }
        if !extra.contains(&"--cgi-ids") {
            args.extend(cgi_ids_arg().map(OsString::from));
        }
        args.extend(extra.iter().map(OsString::from));
        let (child, ready) = launch(&args, stderr);
        let mut gateway = Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            unix: None,
            workers: opts.workers,
            stderr_path,
            root,
            args,
            _dir: dir,
            _machine: machine,
        };
        gateway.await_ready(&ready);
        gateway
    }

    /// Starts the gateway again with the same command line (the same jail, accounts and
    /// sockets) once its process has exited, after a `kill -9` say; its stderr goes on in the
    /// same file. Panics if it still runs or does not get ready.
    pub fn restart(&mut self) {
        let status = self.child.try_wait();
        assert!(
            status.is_some(),
            "restart: gateway {} still runs",
            self.pid()
        );
        let stderr = fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr_path)
            .expect("gateway stderr file");
        let (child, ready) = launch(&self.args, stderr);
        // The old guard's process is reaped: dropping it signals nothing.
        self.child = child;
        self.unix = None;
        self.await_ready(&ready);
    }

    /// Takes the ready line the stdout reader of [`launch`] hands over and notes the address
    /// it names.
    fn await_ready(&mut self, ready: &mpsc::Receiver<std::io::Result<String>>) {
        let line = match ready.recv_timeout(READY_DEADLINE) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) => self.fail("gateway closed stdout without a ready line"),
            Ok(Err(e)) => self.fail(&format!("reading gateway stdout: {e}")),
            Err(_) => self.fail(&format!("no ready line within {READY_DEADLINE:?}")),
        };
        let line = line.trim_end_matches('\n');
        if let Some(path) = line.strip_prefix("jailgate listening on unix:") {
            self.unix = Some(PathBuf::from(path));
            return;
        }
        let Some(addr) = line
            .strip_prefix("jailgate listening on http://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            self.fail(&format!("unexpected ready line {line:?}"))
        };
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "gateway listens on loopback"
        );
        assert_ne!(addr.port(), 0, "gateway reports its real port");
        self.addr = addr;
    }

    /// Panics with `why` and the exit status if any (`Drop` then prints the stderr).
    fn fail(&mut self, why: &str) -> ! {
        let status = self.child.try_wait();
        panic!("gateway start: {why} (exit status: {status:?}); its stderr follows");
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// The jail folder on the host, canonicalised.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URL of `path` for [`Gateway::client`]: on a Unix socket the host is only a name.
    pub fn url(&self, path: &str) -> String {
        match self.unix {
            Some(_) => format!("http://localhost{path}"),
            None => format!("http://{}{path}", self.addr),
        }
    }

    /// A reqwest client that reaches this gateway's HTTP listener, TCP or Unix socket (as
    /// root: a Unix-socket peer the gateway takes for a front server).
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        match &self.unix {
            Some(socket) => reqwest::Client::builder()
                .unix_socket(socket.as_path())
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("reqwest client on a Unix socket"),
            None => crate::http::client(timeout),
        }
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// What CGIs wrote to stderr starting with `tag`, in the order the gateway logged it (one
    /// entry a line, `tag` included). The only way one request can learn what another did:
    /// every request has a `/tmp` of its own.
    pub fn cgi_stderr_lines(&self, tag: &str) -> Vec<String> {
        let marker = format!("CGI stderr: {tag}");
        self.stderr()
            .lines()
            .filter_map(|line| line.find(&marker).map(|at| line[at + 12..].to_owned()))
            .collect()
    }

    /// The front: the process that accepts and parses HTTP, a child of the gateway pid (the
    /// root supervisor) next to the worker holders. The criterion is the executable, not the
    /// user: the front is the one live child whose `/proc/PID/exe` is the gateway binary
    /// (fork or re-exec of the gateway alike), while every holder runs `jailgate-worker`. The
    /// users are configurable (`--user`, `--gateway-user`) and may even be equal, so a uid
    /// cannot tell the two apart; the binary always does. `None` while there is none (a
    /// gateway built before the front existed has none at all).
    pub fn front(&self) -> Option<ProcStat> {
        let gateway_bin = gateway_bin();
        let fronts: Vec<ProcStat> = procfs::children(&procfs::snapshot(), self.pid())
            .into_iter()
            .filter(|p| !p.is_zombie() && procfs::exe_is(p.pid, &gateway_bin))
            .collect();
        match fronts.as_slice() {
            [front] => Some(front.clone()),
            _ => None,
        }
    }

    /// Polls for [`Gateway::front`]; panics after `deadline`.
    pub fn wait_for_front(&self, deadline: Duration) -> ProcStat {
        let end = Instant::now() + deadline;
        loop {
            if let Some(front) = self.front() {
                return front;
            }
            if Instant::now() >= end {
                let children = procfs::children(&procfs::snapshot(), self.pid());
                panic!(
                    "gateway {} has no front (a child running the gateway binary) within \
                     {deadline:?}; its children: {children:?}",
                    self.pid()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The live (non-zombie) workers: each live child of the gateway with its live children,
    /// leaving out the front (see [`Gateway::front`]). Returns `None` unless every holder has
    /// exactly one live child.
    pub fn workers_now(&self) -> Option<Vec<WorkerPair>> {
        let all = procfs::snapshot();
        let gateway_bin = gateway_bin();
        let mut pairs = Vec::new();
        for holder in procfs::children(&all, self.pid()) {
            if holder.is_zombie() || procfs::exe_is(holder.pid, &gateway_bin) {
                continue;
            }
            let kids: Vec<ProcStat> = procfs::children(&all, holder.pid)
                .into_iter()
                .filter(|p| !p.is_zombie())
                .collect();
            let [worker] = kids.as_slice() else {
                return None;
            };
            pairs.push(WorkerPair {
                holder,
                worker: worker.clone(),
            });
        }
        Some(pairs)
    }

    /// Polls until the gateway has exactly `self.workers` workers whose worker proper runs
    /// the `jailgate-worker` binary, none of them in `excluded`; panics after `deadline`.
    pub fn wait_for_workers(&self, deadline: Duration, excluded: &[ProcStat]) -> Vec<WorkerPair> {
        let worker_bin = worker_bin();
        let end = Instant::now() + deadline;
        let mut last = None;
        loop {
            if let Some(pairs) = self.workers_now() {
                let fresh = pairs.iter().all(|p| {
                    procfs::exe_is(p.worker.pid, &worker_bin)
                        && !excluded
                            .iter()
                            .any(|x| x.pid == p.worker.pid && x.starttime == p.worker.starttime)
                });
                if pairs.len() == self.workers && fresh {
                    return pairs;
                }
                last = Some(pairs);
            }
            if Instant::now() >= end {
                panic!(
                    "gateway {} did not have {} workers within {deadline:?}; last seen: {last:?}",
                    self.pid(),
                    self.workers,
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// All current descendants of the gateway.
    pub fn descendants(&self) -> Vec<ProcStat> {
        procfs::descendants(&procfs::snapshot(), self.pid())
    }

    /// Sends `signal` to the gateway by its pid.
    pub fn signal(&mut self, signal: Signal) {
        self.child.signal(signal);
    }

    /// Waits up to `timeout` for the gateway to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }
}

/// Runs `gateway ARGS` with the leak canaries in its environment and `stderr` as its stderr.
/// A thread reads its stdout: it hands over the first line (the ready line), then drains the
/// rest until EOF so the gateway can never block on a full pipe. It ends when the pipe closes.
fn launch(
    args: &[OsString],
    stderr: File,
) -> (ChildGuard, mpsc::Receiver<std::io::Result<String>>) {
    let mut cmd = Command::new(gateway_bin());
    cmd.args(args);
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
    cmd.env(LEAK_NAME, LEAK_VALUE)
        .env("PATH", format!("{path}:{LEAK_PATH_PART}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = ChildGuard::spawn(&mut cmd);
    let stdout = child.take_stdout().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    (child, rx)
}

/// Waits up to `within` for every process of `processes` to be gone (zombies count as
/// present); returns those still there.
pub fn wait_gone(processes: &[ProcStat], within: Duration) -> Vec<ProcStat> {
    let end = Instant::now() + within;
    loop {
        let left: Vec<ProcStat> = processes.iter().filter_map(procfs::still_exists).collect();
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `within` for every process of `processes` to be dead: gone, or a zombie
/// (dead, holding nothing; an orphan waits for PID 1 to reap it, which a container's PID 1 may
/// do late or never). Returns those still alive.
pub fn wait_dead(processes: &[ProcStat], within: Duration) -> Vec<ProcStat> {
    let end = Instant::now() + within;
    loop {
        let alive: Vec<ProcStat> = processes
            .iter()
            .filter_map(procfs::still_exists)
            .filter(|process| !process.is_zombie())
            .collect();
        if alive.is_empty() || Instant::now() >= end {
            return alive;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let before = self.descendants();
        let status = self.child.stop();
        // The workers should die with the gateway; should one outlive it (a bug the lifecycle
        // test reports), kill it by pid after checking its start time, so no test leaks.
        let end = Instant::now() + Duration::from_secs(2);
        let mut left: Vec<ProcStat> = before.clone();
        while !left.is_empty() && Instant::now() < end {
            left.retain(|p| procfs::still_exists(p).is_some_and(|now| !now.is_zombie()));
            thread::sleep(Duration::from_millis(20));
        }
        for p in &left {
            eprintln!("harness: {p:?} outlived gateway {}; SIGKILL", self.pid());
            if procfs::still_exists(p).is_some() {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- gateway {} (exit status {status:?}) stderr ---\n{}\n--- end of gateway stderr ---",
                self.pid(),
                self.stderr()
            );
        }
    }
}

/// The entries of the jail's root folder on the host, plus `.` and `..`.
pub fn jail_root_entries(root: &Path) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = fs::read_dir(root)
        .expect("read jail dir")
        .map(|e| {
            e.expect("jail dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.insert(".".to_owned());
    names.insert("..".to_owned());
    names
}
