//! Prometheus metrics of one node (a message server or the relay), and the
//! HTTP endpoint that exposes them (`GET /metrics`, text format).
//!
//! Each node owns its own registry, so the local cluster's three in-process
//! nodes do not mix their numbers. Counters are cheap atomics: the hot path
//! only increments them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

use crate::pb::Status;
use crate::shutdown::CancellationToken;

pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub logins: IntCounter,
    pub kicks: IntCounterVec,
    pub messages: IntCounterVec,
    pub outcomes: IntCounterVec,
    pub relay_links: IntGauge,
    pub routed: IntCounterVec,
    pub health_check_failures: IntCounter,
    pub purges: IntCounter,
    pub purged_entries: IntCounter,
    pub forward_latency: Histogram,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let latency = HistogramOpts::new(
            "switchboard_forward_latency_seconds",
            "Time from forwarding a chat to the relay until its outcome came back",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        Arc::new(Self {
            connections: gauge(&r, "switchboard_connections", "Open client connections"),
            logins: counter(&r, "switchboard_logins_total", "Successful logins"),
            kicks: counter_vec(
                &r,
                "switchboard_kicks_total",
                "Sessions closed by a kick, by reason",
                "reason",
            ),
            messages: counter_vec(
                &r,
                "switchboard_messages_total",
                "Chats by path: local or forwarded to the relay",
                "path",
            ),
            outcomes: counter_vec(
                &r,
                "switchboard_outcomes_total",
                "Chat outcomes sent to senders, by code",
                "code",
            ),
            relay_links: gauge(
                &r,
                "switchboard_relay_links",
                "Relay links up (a server: 0 or 1; the relay: linked servers)",
            ),
            routed: counter_vec(
                &r,
                "switchboard_relay_routed_total",
                "Envelopes routed by the relay, by kind",
                "kind",
            ),
            health_check_failures: counter(
                &r,
                "switchboard_health_check_failures_total",
                "Failed health checks of message servers",
            ),
            purges: counter(
                &r,
                "switchboard_purges_total",
                "Servers declared dead and purged",
            ),
            purged_entries: counter(
                &r,
                "switchboard_purged_entries_total",
                "Presence entries removed by purges",
            ),
            forward_latency: register(&r, Histogram::with_opts(latency).expect("valid metric")),
            registry: r,
        })
    }

    /// Counts one outcome given to a sender.
    pub fn outcome(&self, status: Status) {
        self.outcomes
            .with_label_values(&[outcome_code(status)])
            .inc();
    }

    /// The counters a server publishes with its heartbeat, by name.
    pub fn server_stats(&self) -> std::collections::BTreeMap<String, u64> {
        let mut stats = std::collections::BTreeMap::new();
        stats.insert(
            "messages_local".into(),
            Self::count(&self.messages, "local"),
        );
        stats.insert(
            "messages_forwarded".into(),
            Self::count(&self.messages, "forwarded"),
        );
        for code in OUTCOME_CODES {
            stats.insert(format!("outcome_{code}"), Self::count(&self.outcomes, code));
        }
        stats.insert("logins".into(), self.logins.get());
        let kicks = KICK_REASONS
            .iter()
            .map(|r| Self::count(&self.kicks, r))
            .sum();
        stats.insert("kicks".into(), kicks);
        stats
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Current value of a labelled counter, for the Admin stats.
    pub fn count(vec: &IntCounterVec, label: &str) -> u64 {
        vec.with_label_values(&[label]).get()
    }
}

/// The client-visible code of an outcome (`delivered` for an ack).
pub fn outcome_code(status: Status) -> &'static str {
    match status {
        Status::Delivered => "delivered",
        Status::Offline | Status::NotHere => "offline",
        Status::Busy => "recipient_busy",
        Status::Unavailable | Status::Unspecified => "unavailable",
    }
}

/// The `reason` label of a kick.
pub fn kick_label(reason: crate::protocol::KickReason) -> &'static str {
    use crate::protocol::KickReason;
    match reason {
        KickReason::LoggedInElsewhere => "logged_in_elsewhere",
        KickReason::ServerShutdown => "server_shutdown",
        KickReason::Admin => "admin",
    }
}

const KICK_REASONS: [&str; 3] = ["logged_in_elsewhere", "server_shutdown", "admin"];

pub const OUTCOME_CODES: [&str; 4] = ["delivered", "offline", "recipient_busy", "unavailable"];

async fn scrape(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "metrics endpoint failed");
    }
}
