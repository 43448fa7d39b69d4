//! Jailgate's unjailed side: HTTP in, RFC 3875 environment out to a jailed worker, the CGI's
//! output back as an HTTP response. It parses everything untrusted and executes nothing itself.

pub mod cgi;
pub mod cgi_env;
pub mod config;
pub mod demo;
pub mod error;
pub mod fastcgi;
pub mod fcgi_front;
pub mod jailfs;
pub mod listen;
pub mod pool;
pub mod privsep;
pub mod response;
pub mod router;
pub mod server;
pub mod stdin;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

/// Starts the workers, serves `listener` until `shutdown` resolves, then stops everything:
/// open requests drain, workers exit, and with them every CGI.
pub async fn run(
    config: config::Config,
    listener: listen::Bound,
    fastcgi: Option<listen::Bound>,
    launcher: Arc<privsep::Launcher>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let pool = pool::Pool::start(config.clone(), launcher).await?;
    let address = listener.address();
    tracing::info!(workers = config.workers, jail = %config.jail.display(), user = %config.user.name, %address, "serving");
    // The one line on stdout: scripts and tests read the address from it.
    let mut stdout = std::io::stdout().lock();
    match &listener {
        listen::Bound::Tcp(_) => writeln!(stdout, "jailgate listening on http://{address}")?,
        listen::Bound::Unix(..) => writeln!(stdout, "jailgate listening on {address}")?,
    }
    if let Some(fastcgi) = &fastcgi {
        writeln!(stdout, "jailgate fastcgi on {}", fastcgi.address())?;
    }
    stdout.flush()?;
    drop(stdout);
    let listener = listener.into_listener()?;
    let fastcgi = fastcgi.map(listen::Bound::into_listener).transpose()?;
    let gateway = Arc::new(cgi::Gateway::new(config, pool.clone()));
    // One stop for both fronts.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let http = server::run(listener, gateway.clone(), stopping(stopped.clone()));
    let fastcgi = async {
        if let Some(listener) = fastcgi {
            server::run_fastcgi(listener, gateway.clone(), stopping(stopped.clone())).await;
        }
    };
    let trigger = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(http, fastcgi, trigger);
    pool.shutdown().await;
    tracing::info!("stopped");
    Ok(())
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
