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

use crate::outcome::{ClientOutcome, OUTCOME_CODES};
use crate::pb::Status;
use crate::shutdown::CancellationToken;

pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub logins: IntCounter,
    /// By reason, in `KICK_REASONS` order.
    pub kicks: [IntCounter; 3],
    pub messages_local: IntCounter,
    pub messages_forwarded: IntCounter,
    /// By code, in `OUTCOME_CODES` order.
    pub outcomes: [IntCounter; 6],
    /// Offline mailbox messages, in `MAILBOX_EVENTS` order.
    pub mailbox: [IntCounter; 4],
    pub relay_links: IntGauge,
    pub routed_forwards: IntCounter,
    pub routed_outcomes: IntCounter,
    /// Envelopes the relay refused to route (see `Router::on_forward_from`
    /// and `Router::on_outcome`).
    pub dropped_forwards: IntCounter,
    pub dropped_outcomes: IntCounter,
    /// Links the relay refused: no or a wrong link token; a hello that
    /// does not match its certificate's server identity.
    pub refused_token: IntCounter,
    pub refused_identity: IntCounter,
    pub health_check_failures: IntCounter,
    pub purges: IntCounter,
    pub purged_entries: IntCounter,
    pub lookups_refused: IntCounter,
    pub forward_latency: Histogram,
    /// A server's forwards by relay link (children made at link up).
    pub link_forwards: IntCounterVec,
    /// A server's forwards sent again through another relay.
    pub forwards_resent: IntCounter,
    /// Forwards a destination dropped as copies of ones it already had.
    pub duplicates_dropped: IntCounter,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

/// A labelled family whose children are resolved once, here, so that the
/// hot path increments an atomic instead of hashing label values.
fn family<const N: usize>(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> [IntCounter; N] {
    let vec = register(
        r,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
    );
    values.map(|v| vec.with_label_values(&[v]))
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
        let messages = family(
            &r,
            "switchboard_messages_total",
            "Chats by path: local or forwarded to the relay",
            "path",
            ["local", "forwarded"],
        );
        let routed = family(
            &r,
            "switchboard_relay_routed_total",
            "Envelopes routed by the relay, by kind",
            "kind",
            ["forward", "outcome"],
        );
        let dropped = family(
            &r,
            "switchboard_relay_dropped_total",
            "Envelopes the relay dropped: forwards whose id is not their server's, outcomes for messages not in flight on their link",
            "kind",
            ["forward", "outcome"],
        );
        let refused = family(
            &r,
            "switchboard_relay_links_refused_total",
            "Links the relay refused: no or a wrong link token, a hello that does not match the certificate's server identity",
            "reason",
            ["link_token", "identity"],
        );
        Arc::new(Self {
            connections: gauge(&r, "switchboard_connections", "Open client connections"),
            logins: counter(&r, "switchboard_logins_total", "Successful logins"),
            kicks: family(
                &r,
                "switchboard_kicks_total",
                "Sessions closed by a kick, by reason",
                "reason",
                KICK_REASONS,
            ),
            messages_local: messages[0].clone(),
            messages_forwarded: messages[1].clone(),
            outcomes: family(
                &r,
                "switchboard_outcomes_total",
                "Chat outcomes sent to senders, by code",
                "code",
                OUTCOME_CODES,
            ),
            mailbox: family(
                &r,
                "switchboard_mailbox_messages_total",
                "Offline mailbox: messages stored, drained (written at login), expired (found past their TTL) and refused (mailbox full)",
                "event",
                MAILBOX_EVENTS,
            ),
            relay_links: gauge(
                &r,
                "switchboard_relay_links",
                "Relay links up (a server: relays it is linked to; a relay: linked servers)",
            ),
            routed_forwards: routed[0].clone(),
            routed_outcomes: routed[1].clone(),
            dropped_forwards: dropped[0].clone(),
            dropped_outcomes: dropped[1].clone(),
            refused_token: refused[0].clone(),
            refused_identity: refused[1].clone(),
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
            lookups_refused: counter(
                &r,
                "switchboard_lookups_refused_total",
                "Presence lookups refused: over the lookup budget (who, or relay route misses)",
            ),
            forward_latency: register(&r, Histogram::with_opts(latency).expect("valid metric")),
            link_forwards: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "switchboard_link_forwards_total",
                        "Chats a server forwarded, by the relay they left by",
                    ),
                    &["relay"],
                )
                .expect("valid metric"),
            ),
            forwards_resent: counter(
                &r,
                "switchboard_forwards_resent_total",
                "Chats sent again through another relay because theirs failed",
            ),
            duplicates_dropped: counter(
                &r,
                "switchboard_duplicates_dropped_total",
                "Forwards a destination server dropped as copies of messages it already had",
            ),
            registry: r,
        })
    }

    /// Counts one outcome given to a sender.
    pub fn outcome(&self, status: Status) {
        let code = ClientOutcome::of(status).code();
        if let Some(i) = OUTCOME_CODES.iter().position(|c| *c == code) {
            self.outcomes[i].inc();
        }
    }

    /// Counts one kick.
    pub fn kick(&self, reason: crate::protocol::KickReason) {
        let label = reason.as_str();
        if let Some(i) = KICK_REASONS.iter().position(|r| *r == label) {
            self.kicks[i].inc();
        }
    }

    /// The counters a server publishes with its heartbeat, by name.
    pub fn server_stats(&self) -> std::collections::BTreeMap<String, u64> {
        let mut stats = std::collections::BTreeMap::new();
        stats.insert("messages_local".into(), self.messages_local.get());
        stats.insert("messages_forwarded".into(), self.messages_forwarded.get());
        for (code, counter) in OUTCOME_CODES.iter().zip(&self.outcomes) {
            stats.insert(format!("outcome_{code}"), counter.get());
        }
        stats.insert("logins".into(), self.logins.get());
        let kicks = self.kicks.iter().map(IntCounter::get).sum();
        stats.insert("kicks".into(), kicks);
        stats
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// What happens to mailbox messages, in `Metrics::mailbox` order.
pub const MAILBOX_EVENTS: [&str; 4] = ["stored", "drained", "expired", "refused"];

const KICK_REASONS: [&str; 3] = ["logged_in_elsewhere", "server_shutdown", "admin"];

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
