//! Start-up, as root and before any thread exists, in this order: audit the jail (fail
//! closed), check who on the host has our ids (`host_ids`), raise the descriptor limit, bind
//! the listeners (or take systemd's), create the control channel, fork. Each step has its own
//! error.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::unistd::{ForkResult, Pid};

use super::bind::take_inherited;
use super::handover::{Bound, Handover, Listeners};
use super::host_ids;
use super::supervisor::Reload;
use crate::config::{Config, FrontUser, Scheduling};
use crate::jailfs;

/// What a serving start needs.
pub struct Startup {
    pub config: Config,
    /// The front's account.
    pub front_user: FrontUser,
    /// `--listen` was given: it wins over a socket systemd passed.
    pub listen_given: bool,
    /// Reads the configuration again on SIGHUP.
    pub reload: Reload,
}

/// Why the gateway could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Audit(String),
    #[error("{0}")]
    Listen(String),
    #[error("{0}")]
    IdsInUse(String),
    #[error("cannot create the supervisor channel: {0}")]
    ControlChannel(nix::errno::Errno),
    #[error("fork: {0}")]
    Fork(nix::errno::Errno),
}

/// The two processes after the fork.
pub enum Split {
    /// The child, about to become the front.
    Front(Handover),
    /// The parent, which stays root as the supervisor.
    Supervisor(SupervisorStart),
}

/// What the supervisor starts from.
pub struct SupervisorStart {
    pub config: Config,
    pub front: Pid,
    pub control: OwnedFd,
    pub reload: Reload,
    /// The socket files root created, removed once the front is gone.
    pub socket_files: Vec<PathBuf>,
}

/// Audits the jail, binds, and forks. Must be called as root before any thread exists.
pub fn split(startup: Startup) -> Result<Split, StartupError> {
    let Startup {
        config,
        front_user,
        listen_given,
        reload,
    } = startup;
    audit_before_serving(&config).map_err(StartupError::Audit)?;
    // At start only: on a reload our own processes have these ids.
    host_ids::check(&config, &front_user).map_err(StartupError::IdsInUse)?;
    raise_descriptor_limit();
    if config.scheduling == Scheduling::Batch {
        schedule_as_batch();
    }
    let listeners = bind_listeners(&config, listen_given).map_err(StartupError::Listen)?;
    let (front_end, supervisor_end) = {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(StartupError::ControlChannel)?
    };
    let supervisor = nix::unistd::getpid();
    // SAFETY: no thread has been started yet (the runtimes are built after this), so the
    // child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() }.map_err(StartupError::Fork)? {
        ForkResult::Child => {
            drop(supervisor_end);
            // A process group of its own: a terminal's Ctrl-C (or a hangup) reaches only the
            // supervisor, which passes on one SIGTERM per signal. Otherwise one Ctrl-C would
            // arrive twice, and a second signal means "stop at once".
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            Ok(Split::Front(Handover {
                config,
                listeners,
                control: front_end,
                user: front_user,
                supervisor,
            }))
        }
        ForkResult::Parent { child } => {
            drop(front_end);
            // Only the front accepts connections; the supervisor, still root, removes the
            // socket files it created once the front is gone.
            let Listeners {
                http,
                fastcgi,
                admin,
            } = listeners;
            let socket_files = [Some(&http), fastcgi.as_ref(), admin.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|bound| bound.created_file().map(PathBuf::from))
                .collect();
            Ok(Split::Supervisor(SupervisorStart {
                config,
                front: child,
                control: supervisor_end,
                reload,
                socket_files,
            }))
        }
    }
}

/// Puts the gateway, and so every process and thread it will start (the front, the workers and
/// their CGIs inherit it), under `SCHED_BATCH`: woken, none of them preempts the task that
/// runs, but waits for that task to sleep or for the tick. Every request wakes three
/// processes several times (the front, a worker, its CGI), and under the default policy each
/// wake-up preempted the task on its way: at one connection the front and the worker cut into
/// the CGI's exec, and the CGI into them, 14 context switches per request instead of 7, each
/// dear on a VM. `bench/MISSES.md` has the measurements. A gateway started under another
/// policy than the default (`chrt`, systemd's `CPUSchedulingPolicy=`) keeps it. A CGI may set
/// itself back to the default; nothing here needs privileges. Best effort: a kernel that
/// refuses keeps the default.
fn schedule_as_batch() {
    // SAFETY: pid 0 is the calling thread, the only one there is yet.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: the calling thread, and a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == -1 {
        let error = std::io::Error::last_os_error();
        tracing::warn!("cannot use SCHED_BATCH, keeping the default policy: {error}");
    }
}

/// The same audit as `gateway jail check`, at every start and reload: a jail with findings
/// is refused (fail closed) unless --allow-insecure-jail, which starts anyway and says so
/// loudly. The findings go to stderr, one per line.
pub fn audit_before_serving(config: &Config) -> Result<(), String> {
    let mut options = jailfs::AuditOptions::new(config.jail.clone(), config.user.clone());
    options.cgi_ids = config.cgi_ids;
    // CGIs write there: its group may write it, and what they leave in it is theirs.
    options.data = config.data.as_ref().map(|data| data.path.clone());
    let findings = jailfs::audit(&options)
        .map_err(|error| format!("cannot audit the jail {}: {error}", config.jail.display()))?;
    if findings.is_empty() {
        return Ok(());
    }
    for finding in &findings {
        eprintln!(
            "gateway: insecure jail {}: {finding}",
            config.jail.display()
        );
    }
    if !config.allow_insecure_jail {
        return Err(format!(
            "refusing to serve from an insecure jail ({} findings above); fix them \
             (`gateway jail check {}` lists them) or pass --allow-insecure-jail",
            findings.len(),
            config.jail.display()
        ));
    }
    tracing::error!(
        findings = findings.len(),
        "SERVING FROM AN INSECURE JAIL (--allow-insecure-jail): the findings above weaken \
         the confinement of every CGI"
    );
    Ok(())
}

/// Every client connection, CGI pipe and spooled body is a descriptor of the front's: raise its
/// soft limit to the hard one (as nginx's worker_rlimit_nofile or Go's runtime do), so that the
/// usual soft 1024 does not starve CGIs of pipes while clients hold connections. Workers and
/// CGIs get their own limits.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {error}");
            }
        }
    }
}

/// The HTTP, FastCGI and admin listeners: the sockets systemd passed (socket activation: the
/// one named `fastcgi` in LISTEN_FDNAMES serves FastCGI, the other HTTP), else bound here.
/// An explicit --listen wins over an inherited socket. Should one fail, the socket files made
/// for the others are removed: a start that fails leaves nothing behind.
fn bind_listeners(config: &Config, listen_given: bool) -> Result<Listeners, String> {
    let mut made = Vec::new();
    let listeners = bind_each(config, listen_given, &mut made);
    if listeners.is_err() {
        for path in &made {
            let _ = std::fs::remove_file(path);
        }
    }
    listeners
}

fn bind_each(
    config: &Config,
    listen_given: bool,
    made: &mut Vec<std::path::PathBuf>,
) -> Result<Listeners, String> {
    let mut bind = |address: &crate::config::ListenAddr| {
        let bound = Bound::bind(address, config.socket_access)?;
        made.extend(bound.created_file().map(std::path::Path::to_path_buf));
        Ok::<Bound, String>(bound)
    };
    let mut http = None;
    let mut fastcgi = None;
    for (name, fd) in take_inherited()? {
        let slot = if name == "fastcgi" {
            &mut fastcgi
        } else {
            &mut http
        };
        if slot.is_some() {
            return Err(format!(
                "systemd passed more than one {} socket",
                if name == "fastcgi" { "fastcgi" } else { "HTTP" }
            ));
        }
        *slot = Some(Bound::inherit(fd)?);
    }
    let http = match http {
        Some(inherited) if !listen_given => inherited,
        _ => bind(&config.listen)?,
    };
    let fastcgi = match (fastcgi, &config.fastcgi) {
        (_, Some(address)) => Some(bind(address)?),
        (inherited, None) => inherited,
    };
    // The rule `Config::check_front_servers` applies to --fastcgi, for systemd's socket too.
    if matches!(fastcgi, Some(Bound::Tcp(_))) && config.env.trusted_proxies.is_empty() {
        return Err(
            "the fastcgi socket systemd passed is TCP: every FastCGI peer is a trusted \
                    front server, and over TCP only --trusted-proxy hosts (never this one) may \
                    be; pass a Unix socket (ListenStream=/run/jailgate/fastcgi.sock, \
                    SocketGroup=www-data) instead"
                .to_owned(),
        );
    }
    let admin = config
        .admin
        .as_ref()
        .map(&mut bind)
        .transpose()
        .map_err(|error| format!("--admin: {error}"))?;
    Ok(Listeners {
        http,
        fastcgi,
        admin,
    })
}
