//! What `/metrics` reports, in the Prometheus (OpenMetrics) text format. Counters are bumped
//! where things happen; the gauges (running, queued, workers alive) are read from the pool
//! when scraped, so they can never drift.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use protocol::ExitStatus;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `http` or `fastcgi`.
    front: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    /// `exit` (with its code) or `signal` (with its number).
    how: &'static str,
    value: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    /// `queue_full` or `queue_timeout`.
    reason: &'static str,
}

/// Every metric of one gateway; shared by all requests and worker pools (a reload keeps it).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    cgi_seconds: Histogram,
    spawn_seconds: Histogram,
    cgi_exits: Family<ExitLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    worker_restarts: Counter,
    fastcgi_peers_refused: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    running: Gauge,
    queued: Gauge,
    spooled_bytes: Gauge,
    spool_refusals: Counter,
    workers: Gauge,
    workers_alive: Gauge,
}

/// The pool's state at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolState {
    pub running: usize,
    pub queued: usize,
    pub workers: usize,
    pub workers_alive: usize,
    /// Request body bytes held for CGIs now (`--spool-budget`).
    pub spooled_bytes: u64,
    /// Requests refused so far because that budget was spent.
    pub spool_refusals: u64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jailgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by front and status",
            requests.clone(),
        );
        // 1 ms to ~65 s: a hello is a few ms, a slow CGI runs up to --timeout.
        let cgi_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "cgi_duration_seconds",
            "From spawn to the CGI's exit",
            cgi_seconds.clone(),
        );
        // 50 µs to ~0.4 s: fork and exec in the worker, as the gateway sees it.
        let spawn_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "spawn_latency_seconds",
            "From the spawn request to the worker's report that the CGI runs",
            spawn_seconds.clone(),
        );
        let cgi_exits = Family::<ExitLabels, Counter>::default();
        registry.register(
            "cgi_exits",
            "CGI exits by exit code (how=exit) or by the signal that killed them (how=signal)",
            cgi_exits.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected",
            "Requests answered 503 because the queue was full or the wait too long",
            rejected.clone(),
        );
        let worker_restarts = Counter::default();
        registry.register(
            "worker_restarts",
            "Workers started again after one died",
            worker_restarts.clone(),
        );
        let fastcgi_peers_refused = Counter::default();
        registry.register(
            "fastcgi_peers_refused",
            "FastCGI connections closed unread: the peer was not a front server",
            fastcgi_peers_refused.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "request_body_bytes",
            "Request body bytes passed to CGIs",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            bytes_out.clone(),
        );
        let running = Gauge::default();
        registry.register("running_cgis", "CGIs running now", running.clone());
        let queued = Gauge::default();
        registry.register(
            "queued_requests",
            "Requests waiting for a CGI slot now",
            queued.clone(),
        );
        let spooled_bytes = Gauge::default();
        registry.register(
            "spooled_body_bytes",
            "Request body bytes held for CGIs now, all requests together (--spool-budget)",
            spooled_bytes.clone(),
        );
        let spool_refusals = Counter::default();
        registry.register(
            "spool_refused",
            "Requests answered 503 because --spool-budget was spent",
            spool_refusals.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Workers configured", workers.clone());
        let workers_alive = Gauge::default();
        registry.register(
            "workers_alive",
            "Workers in their jail and ready now",
            workers_alive.clone(),
        );
        Metrics {
            registry,
            requests,
            cgi_seconds,
            spawn_seconds,
            cgi_exits,
            rejected,
            worker_restarts,
            fastcgi_peers_refused,
            bytes_in,
            bytes_out,
            running,
            queued,
            spooled_bytes,
            spool_refusals,
            workers,
            workers_alive,
        }
    }

    /// One request answered: its status and body sizes.
    pub fn request_done(&self, front: &'static str, status: u16, bytes_in: u64, bytes_out: u64) {
        self.requests
            .get_or_create(&RequestLabels { front, status })
            .inc();
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    pub fn spawned(&self, latency: Duration) {
        self.spawn_seconds.observe(latency.as_secs_f64());
    }

    pub fn cgi_exited(&self, status: ExitStatus, ran: Duration) {
        self.cgi_seconds.observe(ran.as_secs_f64());
        let labels = match status {
            ExitStatus::Code(code) => ExitLabels {
                how: "exit",
                value: code,
            },
            ExitStatus::Signal(signal) => ExitLabels {
                how: "signal",
                value: signal,
            },
        };
        self.cgi_exits.get_or_create(&labels).inc();
    }

    pub fn rejected(&self, queue_full: bool) {
        let reason = if queue_full {
            "queue_full"
        } else {
            "queue_timeout"
        };
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn worker_restarted(&self) {
        self.worker_restarts.inc();
    }

    pub fn fastcgi_peer_refused(&self) {
        self.fastcgi_peers_refused.inc();
    }

    /// The text for `/metrics`, with the gauges set from `state`.
    pub fn render(&self, state: PoolState) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.running.set(gauge(state.running));
        self.queued.set(gauge(state.queued));
        self.workers.set(gauge(state.workers));
        self.workers_alive.set(gauge(state.workers_alive));
        self.spooled_bytes
            .set(i64::try_from(state.spooled_bytes).unwrap_or(i64::MAX));
        // The budget counts its refusals; the counter follows it (it only grows).
        let known = self.spool_refusals.get();
        self.spool_refusals
            .inc_by(state.spool_refusals.saturating_sub(known));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Writing to a String cannot fail; should it, say so rather than serve half.
            return "# encoding failed\n# EOF\n".to_owned();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        metrics.request_done("http", 200, 10, 20);
        metrics.request_done("http", 200, 0, 5);
        metrics.request_done("fastcgi", 503, 0, 0);
        metrics.cgi_exited(ExitStatus::Signal(9), Duration::from_millis(3));
        metrics.spawned(Duration::from_micros(300));
        let text = metrics.render(PoolState {
            running: 1,
            queued: 2,
            workers: 4,
            workers_alive: 3,
            spooled_bytes: 4096,
            spool_refusals: 2,
        });
        for line in [
            r#"jailgate_requests_total{front="http",status="200"} 2"#,
            r#"jailgate_requests_total{front="fastcgi",status="503"} 1"#,
            r#"jailgate_cgi_exits_total{how="signal",value="9"} 1"#,
            "jailgate_request_body_bytes_total 10",
            "jailgate_response_body_bytes_total 25",
            "jailgate_running_cgis 1",
            "jailgate_queued_requests 2",
            "jailgate_workers_alive 3",
            "jailgate_spooled_body_bytes 4096",
            "jailgate_spool_refused_total 2",
            "jailgate_spawn_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
