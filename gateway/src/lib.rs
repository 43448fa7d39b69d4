//! Jailgate's unjailed side: HTTP in, RFC 3875 environment out to a jailed worker, the CGI's
//! output back as an HTTP response. It parses everything untrusted and executes nothing itself.

pub mod access;
pub mod admin;
pub mod cgi;
pub mod cgi_env;
pub mod config;
pub mod demo;
pub mod error;
pub mod fastcgi;
pub mod fcgi_front;
pub mod jailfs;
pub mod listen;
pub mod metrics;
pub mod pool;
pub mod privsep;
pub mod response;
pub mod router;
pub mod server;
pub mod stdin;

use std::io::Write;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cgi::{Gateway, Generation};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::privsep::{Launcher, Listeners};

/// Starts the workers, serves until SIGTERM or SIGINT, then stops everything: open requests
/// drain (up to `--drain-timeout`; a second signal cuts that short), workers exit, and with
/// them every CGI. SIGHUP (relayed by the supervisor as a new configuration) starts a fresh
/// pool and retires the old one once its requests are done.
pub async fn run(
    config: Config,
    listeners: Listeners,
    launcher: Arc<Launcher>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let mut reloads = launcher.take_reloads();
    let mut generation = 0;
    let pool = Pool::start(
        config.clone(),
        launcher.clone(),
        metrics.clone(),
        generation,
    )
    .await?;
    let Listeners {
        http,
        fastcgi,
        admin,
    } = listeners;
    let address = http.address();
    tracing::info!(workers = config.workers, jail = %config.jail.display(), user = %config.user.name, %address, "serving");
    // The one line on stdout: scripts and tests read the address from it.
    let mut stdout = std::io::stdout().lock();
    match &http {
        listen::Bound::Tcp(_) => writeln!(stdout, "jailgate listening on http://{address}")?,
        listen::Bound::Unix(..) => writeln!(stdout, "jailgate listening on {address}")?,
    }
    if let Some(fastcgi) = &fastcgi {
        writeln!(stdout, "jailgate fastcgi on {}", fastcgi.address())?;
    }
    if let Some(admin) = &admin {
        writeln!(stdout, "jailgate admin on {}", admin.address())?;
    }
    stdout.flush()?;
    drop(stdout);
    let http = http.into_listener()?;
    let fastcgi = fastcgi.map(listen::Bound::into_listener).transpose()?;
    let admin = admin.map(listen::Bound::into_listener).transpose()?;
    let gateway = Arc::new(Gateway::new(config.clone(), pool, metrics.clone()));
    notify_systemd("READY=1");

    // One stop for every front.
    let (stop, stopped) = watch::channel(false);
    let stopping = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let drain = config.drain_timeout;
    let fronts = async {
        let http = server::run(http, gateway.clone(), stopping(stopped.clone()), drain);
        let fastcgi = async {
            if let Some(listener) = fastcgi {
                server::run_fastcgi(listener, gateway.clone(), stopping(stopped.clone()), drain)
                    .await;
            }
        };
        let admin = async {
            if let Some(listener) = admin {
                let state_of = gateway.clone();
                let state = Arc::new(move || state_of.pool_state());
                admin::run(listener, metrics.clone(), state, stopping(stopped.clone())).await;
            }
        };
        tokio::join!(http, fastcgi, admin);
    };
    let mut fronts = std::pin::pin!(fronts);
    let mut stop_requested = std::pin::pin!(stop_signal());
    let mut retiring = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop_requested => break,
            () = &mut fronts => {
                // The fronts only end after a stop.
                tracing::error!("the fronts stopped by themselves");
                break;
            }
            Some(new) = async { match reloads.as_mut() { Some(r) => r.recv().await, None => None } } => {
                generation += 1;
                let new = Arc::new(new);
                match Pool::start(new.clone(), launcher.clone(), metrics.clone(), generation).await {
                    Ok(pool) => {
                        let old = gateway.replace(Generation::new(new, pool));
                        tracing::info!(generation, "reloaded: new requests go to the fresh pool; the old one retires when its requests are done");
                        retiring.spawn(old.retire());
                    }
                    Err(error) => tracing::error!("reload failed, still serving the old pool: {error}"),
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
    while retiring.join_next().await.is_some() {}
    gateway.current().pool.shutdown().await;
    tracing::info!("stopped");
    Ok(())
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

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handling the default action (exit) still stops us.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
}
