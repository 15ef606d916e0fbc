//! A message server: client connections, local delivery, the links to the
//! relays or (mesh mode) to the other servers.
//!
//! Calls flow one way, from the socket inwards:
//! `listener` (accept, `admission`) -> `connection` (one task per client,
//! owns the socket) -> `requests` (what each request does) -> `delivery`
//! (local sessions, reply lines) / `forwards` (chats sent to the relay)
//! / `roster` (this server's entries in the presence store).
//! Beside them run `relays` (the set of relays, one `relay_link` each,
//! with `dedupe` against copies re-sent through another relay) or, in
//! mesh mode, `peers` (one link per other server: `peer_link` dials the
//! higher ids, `peer_service` answers the lower ones; `mesh` routes this
//! server's chats to them, and `crate::watch` health-checks them); what
//! arrives on any link is handled by `inbound`. Then `membership`
//! (join, heartbeat, leave), `kicks` (kick notices from the store) and
//! `admin_node` (this server as seen by the Admin API). `sessions` is the
//! local session table, the authority on local delivery; `identity` is who
//! this server is and the ids it mints; `options` what it is started with.
//!
//! A message server never routes between other servers; only its own
//! chats leave it. Each task is handed exactly the parts it may touch.

mod admin_node;
mod admission;
mod connection;
mod control;
mod dedupe;
mod delivery;
mod dial;
mod drain;
mod forwards;
mod identity;
mod inbound;
mod kicks;
mod listener;
mod mailbox;
mod membership;
mod mesh;
mod options;
mod order;
mod outbox;
mod output;
mod peer_link;
mod peer_service;
mod peers;
mod relay_link;
mod relays;
mod requests;
mod roster;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::task::TaskTracker;

use crate::admin::AdminService;
use crate::grpc::{self, Services};
use crate::mailbox::MailboxStore;
use crate::metrics::Metrics;
use crate::pb;
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;

pub use crate::watch::HealthWatch;
pub use options::{Limits, Options, RateLimit, RelayEndpoint};

/// The parts of a running server, each shared with exactly the tasks
/// that need it.
struct Parts {
    store: Arc<dyn PresenceStore>,
    me: Arc<identity::Identity>,
    metrics: Arc<Metrics>,
    sessions: Arc<sessions::Sessions>,
    roster: Arc<roster::Roster>,
    forwards: Arc<forwards::Forwards>,
    admission: Arc<admission::Admission>,
    budget: Arc<outbox::Budget>,
    reach: Arc<membership::StoreReach>,
    mailbox: Option<Arc<mailbox::Mailbox>>,
    mailbox_store: Option<Arc<dyn MailboxStore>>,
    /// Mesh mode's router; None in relay mode.
    mesh: Option<Arc<mesh::Mesh>>,
}

impl Parts {
    fn new(
        id: String,
        limits: &Limits,
        copy_budget: usize,
        store: Arc<dyn PresenceStore>,
        mailbox_store: Option<Arc<dyn MailboxStore>>,
        mesh: bool,
    ) -> Self {
        let me = Arc::new(identity::Identity::new(id));
        let metrics = Metrics::new();
        let mailbox = mailbox_store
            .clone()
            .map(|m| Arc::new(mailbox::Mailbox::new(m, store.clone(), metrics.clone())));
        let budget = Arc::new(outbox::Budget::new(
            limits.outbound_queue_bytes,
            limits.outbound_total_bytes,
        ));
        // Every server dials a relay again at least this often, and finds
        // a new one in the registry within a discovery period: by then a
        // relay that has just started is linked to all of them.
        let warmup = dial::BACKOFF_MAX + relays::DISCOVERY_PERIOD;
        let forwards = Arc::new(forwards::Forwards::new(
            me.id.clone(),
            limits.forward_timeout,
            copy_budget,
            warmup,
            metrics.clone(),
            mailbox.clone(),
        ));
        let sessions = Arc::new(sessions::Sessions::new(budget.clone()));
        let mesh = mesh.then(|| {
            Arc::new(mesh::Mesh::new(
                me.id.clone(),
                store.clone(),
                forwards.clone(),
                sessions.clone(),
            ))
        });
        Self {
            roster: Arc::new(roster::Roster::new(store.clone(), me.clone())),
            forwards,
            admission: Arc::new(admission::Admission::new(limits)),
            sessions,
            mesh,
            budget,
            reach: Arc::new(membership::StoreReach::new(limits.redis_down_after)),
            mailbox,
            mailbox_store,
            store,
            me,
            metrics,
        }
    }
}

/// How long the server's own clean-up after the drain may take at most:
/// background tasks, leaving the registry and stopping gRPC, each bounded
/// by `CLEAN_UP_STEP`. The Helm chart counts it in the grace period.
pub const CLEAN_UP: Duration = Duration::from_secs(6);
const CLEAN_UP_STEP: Duration = Duration::from_secs(2);

/// Runs a message server until `shutdown`, then drains it: health
/// NOT_SERVING, a lame-duck period in which it still accepts and serves,
/// then no new connections and its clients kicked one after another over
/// the drain window, presence removed.
pub async fn run(
    opts: Options,
    store: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A bad relay URL (or https:// without a CA) is a configuration error:
    // report it now rather than retrying it forever.
    for url in &opts.relay.urls {
        crate::tls::endpoint(url, opts.relay.tls.as_ref()).context("--relay")?;
    }
    let mesh_mode = opts.mesh.is_some();
    let parts = Parts::new(
        opts.id,
        &opts.limits,
        opts.link_queue_bytes,
        store,
        opts.mailbox,
        mesh_mode,
    );
    let (info, kick_stream) = membership::join(
        parts.store.as_ref(),
        &parts.me,
        &opts.advertise_grpc,
        &opts.advertise_client,
    )
    .await?;
    let hello = pb::Hello {
        server_id: parts.me.id.clone(),
        incarnation: parts.me.incarnation.clone(),
        grpc_addr: opts.advertise_grpc,
        client_addr: opts.advertise_client,
    };
    let link_parts = Arc::new(inbound::LinkParts {
        relay: opts.relay,
        queue_bytes: opts.link_queue_bytes,
        hello,
        sessions: parts.sessions.clone(),
        forwards: parts.forwards.clone(),
        dedupe: Arc::new(dedupe::Dedupe::new(
            opts.limits.forward_timeout,
            dedupe::DEDUPE_CAP,
        )),
        metrics: parts.metrics.clone(),
        mesh: parts.mesh.clone(),
    });
    // Not a child of `shutdown`: the links, heartbeat and kick notices
    // keep serving the connections that drain, and stop after them.
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    let links = Links::new(&parts, &link_parts, opts.mesh);
    let forward_timeout = opts.limits.forward_timeout;
    let services = links.services(&link_parts, &background);
    let grpc = Grpc::start(
        &parts,
        opts.grpc,
        opts.admin_token,
        forward_timeout,
        services,
    )
    .await;
    if let Some(listener) = opts.metrics_listener {
        let metrics = parts.metrics.clone();
        tasks.spawn(crate::metrics::serve(listener, metrics, background.clone()));
    }
    spawn_membership(&tasks, &parts, &opts.limits, info, kick_stream, &background);
    tasks.spawn(membership::track_readiness(
        parts.reach.clone(),
        grpc.health.clone(),
        opts.limits.heartbeat,
        background.clone(),
    ));
    links.spawn(&tasks, &parts, link_parts, &background);
    let expiry = forwards::expire_loop(parts.forwards.clone(), background.clone());
    tasks.spawn(expiry);
    tracing::info!(server = %parts.me.id, incarnation = %parts.me.incarnation, "message server started");

    let timing = Timing {
        lame_duck: opts.limits.lame_duck,
        drain_window: opts.limits.drain_timeout,
    };
    let lookup_budget = requests::lookup_budget(opts.limits.lookup_budget);
    let ctx = Arc::new(requests::Context {
        me: parts.me.clone(),
        sessions: parts.sessions.clone(),
        forwards: parts.forwards.clone(),
        mesh: parts.mesh.clone(),
        roster: parts.roster.clone(),
        limits: opts.limits,
        budget: parts.budget.clone(),
        auth: opts.auth,
        metrics: parts.metrics.clone(),
        lookup_budget,
        mailbox: parts.mailbox.clone(),
    });
    let accepting = listener::Accepting {
        ctx,
        admission: parts.admission.clone(),
        connections: TaskTracker::new(),
        drain: Arc::new(drain::Drain::new(timing.drain_window)),
    };
    shut_down(
        &parts,
        &grpc,
        accepting,
        opts.client_listener,
        timing,
        shutdown,
    )
    .await;
    background.cancel();
    tasks.close();
    let _ = tokio::time::timeout(CLEAN_UP_STEP, tasks.wait()).await;
    let leave = membership::leave(parts.store.as_ref(), &parts.me);
    if tokio::time::timeout(CLEAN_UP_STEP, leave).await.is_err() {
        tracing::warn!(server = %parts.me.id, "leaving the registry timed out; the relay will purge this server");
    }
    grpc.stop().await;
    tracing::info!(server = %parts.me.id, "message server stopped");
    Ok(())
}

/// The shutdown timings (`--lame-duck-ms`, `--drain-timeout-ms`).
#[derive(Clone, Copy)]
struct Timing {
    lame_duck: Duration,
    drain_window: Duration,
}

/// Serves clients until `shutdown`, then runs the lame duck and the
/// drain; returns once every connection ended or the drain window is
/// over. The link, heartbeat and kick notices keep running throughout.
async fn shut_down(
    parts: &Parts,
    grpc: &Grpc,
    accepting: listener::Accepting,
    client_listener: tokio::net::TcpListener,
    timing: Timing,
    shutdown: CancellationToken,
) {
    let connections = accepting.connections.clone();
    let drain = accepting.drain.clone();
    let stop_accepting = CancellationToken::new();
    let accept_loop = tokio::spawn(listener::accept_loop(
        accepting,
        client_listener,
        stop_accepting.clone(),
    ));
    shutdown.cancelled().await;
    let id = &parts.me.id;
    if !timing.lame_duck.is_zero() {
        // Kubernetes takes a while to stop sending clients here (readiness
        // probes, endpoint updates, load balancers): meanwhile they are
        // served, not refused.
        tracing::info!(server = %id, lame_duck = ?timing.lame_duck, "lame duck: NOT_SERVING, still accepting");
        not_serving(parts, grpc).await;
        tokio::time::sleep(timing.lame_duck).await;
    }
    stop_accepting.cancel();
    // The listener is closed once the loop returned; without a lame duck
    // NOT_SERVING then means no new connections.
    let _ = accept_loop.await;
    not_serving(parts, grpc).await;
    let population = parts.admission.connections();
    tracing::info!(server = %id, connections = population, window = ?timing.drain_window, "draining: kicking clients one after another");
    drain.start(population);
    connections.close();
    if tokio::time::timeout(timing.drain_window, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(server = %id, "drain timeout: exiting while some connections are still closing");
    }
}

/// Why this server is unready from the lame duck on (held for good).
const DRAINING: &str = "draining";

/// Readiness off: health "" NOT_SERVING (Kubernetes), NOT_SERVING in the
/// Admin API. The incarnation's own health service stays SERVING: the
/// relay must not take a draining server for dead.
async fn not_serving(parts: &Parts, grpc: &Grpc) {
    parts.admission.start_drain();
    grpc.health.unready(DRAINING, true).await;
}

/// The gRPC port: health (overall: SERVING until the lame duck, and
/// NOT_SERVING while the presence store is out of reach beyond the bound;
/// under this incarnation's own name, which the relay checks, and
/// `LIVE_SERVICE`: SERVING while the process serves gRPC) and the Admin
/// API.
struct Grpc {
    health: grpc::Health,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Grpc {
    async fn start(
        parts: &Parts,
        serving: grpc::Serving,
        admin_token: Option<String>,
        forward_timeout: Duration,
        services: Services,
    ) -> Self {
        let own = grpc::incarnation_service(&parts.me.id, &parts.me.incarnation);
        let live = grpc::LIVE_SERVICE.to_owned();
        let (health, health_service) = grpc::Health::new(vec![own, live]);
        health.set(true).await;
        let node = admin_node::ServerNode {
            me: parts.me.clone(),
            sessions: parts.sessions.clone(),
            forwards: parts.forwards.clone(),
            mesh: parts.mesh.clone(),
            admission: parts.admission.clone(),
            reach: parts.reach.clone(),
            metrics: parts.metrics.clone(),
            forward_timeout,
        };
        let admin = AdminService::serve_with_mailbox(
            Arc::new(node),
            parts.store.clone(),
            parts.mailbox_store.clone(),
            admin_token,
        );
        let stop = CancellationToken::new();
        let services = services.add(admin);
        let task = tokio::spawn(grpc::serve(serving, health_service, services, stop.clone()));
        Self { health, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(CLEAN_UP_STEP, self.task).await;
    }
}

/// The heartbeat and the kick notices.
fn spawn_membership(
    tasks: &TaskTracker,
    parts: &Parts,
    limits: &Limits,
    info: crate::presence::ServerInfo,
    kick_stream: crate::presence::KickStream,
    stop: &CancellationToken,
) {
    let heartbeat = membership::Heartbeat {
        store: parts.store.clone(),
        me: parts.me.clone(),
        admission: parts.admission.clone(),
        metrics: parts.metrics.clone(),
        roster: parts.roster.clone(),
        sessions: parts.sessions.clone(),
        forwards: parts.forwards.clone(),
        reach: parts.reach.clone(),
        period: limits.heartbeat,
    };
    tasks.spawn(heartbeat.run(info, stop.clone()));
    let kick_notices = kicks::KickNotices {
        store: parts.store.clone(),
        me: parts.me.clone(),
        sessions: parts.sessions.clone(),
        roster: parts.roster.clone(),
    };
    tasks.spawn(kick_notices.run(kick_stream, stop.clone()));
}

/// How this server reaches the others: through the relays, or (mesh mode)
/// over one link per other server, which it also health-checks.
enum Links {
    Relays,
    Mesh {
        peers: Arc<peers::Peers>,
        health: crate::watch::HealthWatch,
    },
}

impl Links {
    fn new(
        parts: &Parts,
        link_parts: &Arc<inbound::LinkParts>,
        health: Option<crate::watch::HealthWatch>,
    ) -> Self {
        match (health, &parts.mesh) {
            (Some(health), Some(mesh)) => Links::Mesh {
                peers: Arc::new(peers::Peers::new(link_parts.forwards.clone(), mesh.clone())),
                health,
            },
            _ => Links::Relays,
        }
    }

    /// The link services this server's gRPC port serves (mesh: `Peer`).
    fn services(&self, link_parts: &Arc<inbound::LinkParts>, stop: &CancellationToken) -> Services {
        match self {
            Links::Relays => Services::default(),
            Links::Mesh { peers, .. } => Services::default().add(peer_service::PeerService::serve(
                link_parts.clone(),
                peers.clone(),
                link_parts.relay.link_token.clone(),
                stop.clone(),
            )),
        }
    }

    /// Keeps the links up until `stop`; in mesh mode, also watches the
    /// peers' health and purges dead ones.
    fn spawn(
        self,
        tasks: &TaskTracker,
        parts: &Parts,
        link_parts: Arc<inbound::LinkParts>,
        stop: &CancellationToken,
    ) {
        let store = parts.store.clone();
        match self {
            Links::Relays => {
                let relay_set = relays::RelaySet {
                    parts: link_parts,
                    store,
                };
                tasks.spawn(relay_set.run(stop.clone()));
            }
            Links::Mesh { peers, health } => {
                let watch = crate::watch::WatchOptions {
                    cfg: health,
                    board: Arc::default(),
                    tls: link_parts.relay.tls.clone(),
                    metrics: parts.metrics.clone(),
                    me: Some(parts.me.id.clone()),
                };
                let watched: Arc<dyn crate::watch::Watched> = peers.clone();
                tasks.spawn(crate::watch::run(
                    watched,
                    store.clone(),
                    watch,
                    stop.clone(),
                ));
                let peer_set = peer_link::PeerSet {
                    parts: link_parts,
                    peers,
                    store,
                };
                tasks.spawn(peer_set.run(stop.clone()));
            }
        }
    }
}
