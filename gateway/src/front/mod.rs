//! What runs unprivileged, outside the jail: everything that touches untrusted input. Handed
//! the sockets and the supervisor channel at the fork ([`crate::root::handover`]), the front
//! drops to its own account for good ([`privdrop`]), then serves:
//!
//! - [`listen`]: the listeners and the one accept loop;
//! - [`http`] and [`fastcgi`]: the two fronts, each mapping its requests onto
//! - [`request`]: the one request core (body policy, CGI environment, spawn, output, errors);
//! - [`pool`]: the workers, reached through the [`supervisor_link`];
//! - [`admin`], [`metrics`], [`access`]: `/metrics`, `/healthz` and the access log.
//!
//! It never executes CGI code and never becomes root again (no-new-privs, no capabilities).

pub mod access;
pub mod admin;
#[cfg(test)]
mod fake_workers;
pub mod fastcgi;
pub mod http;
pub mod linger;
pub mod listen;
pub mod metrics;
pub mod pool;
pub mod privdrop;
pub mod request;
pub mod supervisor_link;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::root::handover::{stop_signals, Bound, Handover, Listeners};
use listen::{Listener, OpenConnections};
use metrics::Metrics;
use pool::{Pool, WorkerSource};
use request::{Core, Generation};
use supervisor_link::SupervisorLink;

/// The front's whole life after the fork: the privilege drop, then [`serve`] on a runtime.
/// Returns the process exit code.
pub fn run(handover: Handover) -> i32 {
    let Handover {
        config,
        listeners,
        control,
        user,
        supervisor,
    } = handover;
    if let Err(error) = privdrop::drop_privileges(&user, supervisor) {
        eprintln!("gateway: the HTTP front cannot drop its privileges: {error}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gateway: cannot start the runtime: {error}");
            return 1;
        }
    };
    let served = runtime.block_on(async move {
        let stop = stop_signal();
        let _ = stop_signals().thread_unblock();
        let (supervisor, reloads) = SupervisorLink::new(control)?;
        serve(config, listeners, supervisor, reloads, stop).await
    });
    match served {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("gateway: {error:#}");
            1
        }
    }
}

/// Starts the workers, serves until `shutdown` resolves (SIGTERM or SIGINT in the gateway),
/// then stops everything: open requests drain (up to `--drain-timeout`; a second SIGTERM or
/// SIGINT cuts that short), workers exit, and with them every CGI. Each configuration in
/// `reloads` (SIGHUP, relayed by the supervisor) starts a fresh pool and retires the old one
/// once its requests are done.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    workers: Arc<dyn WorkerSource>,
    mut reloads: mpsc::UnboundedReceiver<Config>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let pool = Pool::start(config.clone(), workers.clone(), metrics.clone(), 0, None).await?;
    let Listeners {
        http,
        fastcgi,
        admin,
    } = listeners;
    tracing::info!(workers = config.workers, jail = %config.jail.display(), user = %config.user.name, uid = config.user.uid, address = %http.address(), "serving");
    announce(&http, fastcgi.as_ref(), admin.as_ref())?;
    let http = Listener::from_bound(http)?;
    let fastcgi = fastcgi.map(Listener::from_bound).transpose()?;
    let admin = admin.map(Listener::from_bound).transpose()?;
    let core = Arc::new(Core::new(config.clone(), pool, metrics.clone()));
    let giving_back = tokio::spawn(give_back_memory_when_quiet(core.clone()));
    notify_systemd("READY=1");

    // One stop for every front.
    let (stop, stopped) = watch::channel(false);
    let stopping = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let drain = config.drain_timeout;
    let connections = OpenConnections::default();
    let fronts = async {
        let http = http::run(
            http,
            core.clone(),
            stopping(stopped.clone()),
            drain,
            connections.clone(),
        );
        let fastcgi = async {
            if let Some(listener) = fastcgi {
                let stop = stopping(stopped.clone());
                fastcgi::handler::run(listener, core.clone(), stop, drain, connections.clone())
                    .await;
            }
        };
        let admin = async {
            if let Some(listener) = admin {
                let state_of = core.clone();
                let state = Arc::new(move || state_of.pool_state());
                admin::run(listener, metrics.clone(), state, stopping(stopped.clone())).await;
            }
        };
        tokio::join!(http, fastcgi, admin);
    };
    let mut fronts = std::pin::pin!(fronts);
    let mut stop_requested = std::pin::pin!(shutdown);
    let mut retiring = tokio::task::JoinSet::new();
    // Counted as the supervisor counts them: one more for each configuration it sends.
    let mut generation = 0;
    let mut serving = 0;
    loop {
        tokio::select! {
            () = &mut stop_requested => break,
            () = &mut fronts => {
                // The fronts only end after a stop.
                tracing::error!("the fronts stopped by themselves");
                break;
            }
            Some(new) = reloads.recv() => {
                generation += 1;
                match reload(&core, new, &workers, generation).await {
                    Some(old) => {
                        let (workers, retired) = (workers.clone(), serving);
                        serving = generation;
                        retiring.spawn(async move {
                            old.retire().await;
                            workers.retire(retired).await;
                        });
                    }
                    // The old pool serves on, its workers started as before.
                    None => workers.retire(generation).await,
                }
            }
            Some(_) = retiring.join_next(), if !retiring.is_empty() => {}
        }
    }
    notify_systemd("STOPPING=1");
    let _ = stop.send(true);
    // The fronts drain; a second SIGTERM or SIGINT stops at once.
    tokio::select! {
        () = &mut fronts => {}
        () = stop_signal() => {
            tracing::warn!("second signal: stopping at once, open requests are cut off");
            // Older pools too: the supervisor stops every worker once we are gone.
            retiring.abort_all();
        }
    }
    // Whatever the drain left (none after a clean one), cut off before the workers stop.
    connections.cut().await;
    while retiring.join_next().await.is_some() {}
    giving_back.abort();
    core.current().pool.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long without a new request before the front gives its freed memory back.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(5);

/// Gives the memory a burst of requests freed back to the system once requests stop coming:
/// glibc's allocator keeps it in its per-thread arenas, so the front of a gateway that once
/// ran 1,000 `sleep 1` CGIs at once (about 50 KiB each) stayed at 48 MB when idle, instead of
/// its 5 MB. Trimming is a walk of the heap, so it waits for a quiet spell, once per burst.
async fn give_back_memory_when_quiet(core: Arc<Core>) {
    let mut ticks = tokio::time::interval(QUIET_BEFORE_TRIM);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = core.requests_started();
    let mut trimmed_at = seen;
    loop {
        ticks.tick().await;
        let started = core.requests_started();
        if started == seen && started != trimmed_at {
            // SAFETY: malloc_trim has no preconditions: it takes the allocator's own locks and
            // only returns free pages to the kernel.
            unsafe { libc::malloc_trim(0) };
            trimmed_at = started;
        }
        seen = started;
    }
}

/// A reload: a fresh pool for `config`, which new requests go to from now on. Returns the
/// generation it replaces, to retire; on failure the old one keeps serving.
async fn reload(
    core: &Core,
    config: Config,
    workers: &Arc<dyn WorkerSource>,
    generation: usize,
) -> Option<Arc<Generation>> {
    let config = Arc::new(config);
    let serving = core.current();
    match Pool::start(
        config.clone(),
        workers.clone(),
        core.metrics.clone(),
        generation,
        Some(&serving.pool),
    )
    .await
    {
        Ok(pool) => {
            let old = core.replace(Generation::new(config, pool));
            tracing::info!(generation, "reloaded: new requests go to the fresh pool; the old one retires when its requests are done");
            Some(old)
        }
        Err(error) => {
            tracing::error!("reload failed, still serving the old pool: {error}");
            None
        }
    }
}

/// The lines on stdout: scripts and tests read the addresses from them.
fn announce(http: &Bound, fastcgi: Option<&Bound>, admin: Option<&Bound>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match http {
        Bound::Tcp(_) => writeln!(stdout, "jailgate listening on http://{}", http.address())?,
        Bound::Unix(..) => writeln!(stdout, "jailgate listening on {}", http.address())?,
    }
    if let Some(fastcgi) = fastcgi {
        writeln!(stdout, "jailgate fastcgi on {}", fastcgi.address())?;
    }
    if let Some(admin) = admin {
        writeln!(stdout, "jailgate admin on {}", admin.address())?;
    }
    stdout.flush()
}

/// Tells systemd (Type=notify) where we are (sd_notify(3): one datagram to NOTIFY_SOCKET, a
/// path or, with a leading `@`, an abstract name) when it started us; otherwise does nothing.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let address = match target.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&target)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)
    })();
    if let Err(error) = sent {
        tracing::warn!(
            "cannot notify systemd ({}): {error}",
            target.to_string_lossy()
        );
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed at the call, inside the runtime,
/// not when the future is first polled: a signal in between is not lost.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut terminate), Ok(mut interrupt)) = streams else {
            // Without signal handling the default action (exit) still stops us.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::front::fake_workers::{self, Behaviour, FakeWorkers, HELLO};

    fn config() -> Config {
        fake_workers::config(1, 4, 4)
    }

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8_lossy(&response).into_owned()
    }

    /// A front serving HTTP on a free loopback port with `config` and fake workers of
    /// `behaviour`, until [`Serving::stop`].
    struct Serving {
        address: std::net::SocketAddr,
        workers: Arc<FakeWorkers>,
        reload: mpsc::UnboundedSender<Config>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Serving {
        fn start(behaviour: Behaviour, config: Config) -> Serving {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("address");
            let listeners = Listeners {
                http: Bound::Tcp(listener),
                fastcgi: None,
                admin: None,
            };
            let workers = FakeWorkers::new(behaviour);
            let (reload, reloads) = mpsc::unbounded_channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let source: Arc<dyn WorkerSource> = workers.clone();
            let task = tokio::spawn(serve(config, listeners, source, reloads, async {
                let _ = stopped.await;
            }));
            Serving {
                address,
                workers,
                reload,
                stop,
                task,
            }
        }

        /// Asserts that `/cgi-bin/hello` is answered 200 with the fake CGI's body.
        async fn assert_hello(&self) {
            let body = String::from_utf8_lossy(HELLO);
            let body = body.split("\r\n\r\n").nth(1).expect("a body");
            let response = get(self.address, "/cgi-bin/hello").await;
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            assert!(response.contains(body), "{response}");
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("stops")
                .expect("task")
                .expect("served");
        }
    }

    /// A CGI whose start and end come in one message (`SpawnedAndExited`) is answered like
    /// one reported in two, every time, and its request ends (its CGI no longer counts).
    #[tokio::test]
    async fn a_cgi_reported_started_and_ended_at_once_is_answered() {
        // One CGI at a time and no queue: a request whose CGI still counted would turn the
        // next one away.
        let mut config = config();
        config.max_concurrent = 1;
        config.queue = Some(0);
        let front = Serving::start(Behaviour::HelloAtOnce, config);
        for _ in 0..5 {
            front.assert_hello().await;
        }
        front.stop().await;
    }

    /// The whole front without root: a real listener, real HTTP, the request core, the pool,
    /// and fake workers whose CGIs answer `hello`; then a reload and a stop.
    #[tokio::test]
    async fn the_front_serves_reloads_and_stops() {
        let front = Serving::start(Behaviour::Hello, config());
        for _ in 0..2 {
            front.assert_hello().await;
        }
        let response = get(front.address, "/etc/passwd").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        // A reload starts a fresh pool, which serves from then on.
        front.reload.send(config()).expect("reload");
        let started_twice = async {
            while front.workers.record().starts.len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), started_twice)
            .await
            .expect("a second pool");
        front.assert_hello().await;
        front.stop().await;
    }
}
