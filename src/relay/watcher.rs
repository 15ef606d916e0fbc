//! Dead-server detection and purge.
//!
//! Every interval the relay health-checks (grpc.health.v1) every server it
//! knows: those in the registry and those linked. It asks for the health
//! of that very incarnation (`grpc::incarnation_service`), so another
//! process on a reused address answers NOT_FOUND, not SERVING. A server
//! that fails `failures` checks in a row (unreachable, timeout, not
//! SERVING) is declared dead: routing to it stops, its in-flight messages
//! get `unavailable`, and it is retired (it leaves the registry, then its
//! presence entries go). Because registry entries are checked too, a
//! relay that starts also cleans up servers that died while no relay was
//! running.
//!
//! The sweep purges the indexes of incarnations that are neither
//! registered nor linked (a retire or a leave that stopped half-way): in
//! the first round, every `SWEEP_EVERY` rounds, and after a failed retire.
//!
//! A dropped link alone is not death: the server is alive and relinks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::options::HealthWatch;
use super::router::Router;
use crate::grpc::incarnation_service;
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;

/// Rounds between two sweeps of orphaned indexes (a SCAN of the keyspace).
const SWEEP_EVERY: u64 = 30;

/// A server to check: the incarnation the verdict is about, and where.
struct Watched {
    incarnation: String,
    grpc_addr: String,
}

/// What one round checks, and the incarnations the relay knows of.
#[derive(Default)]
struct Targets {
    /// server id -> the incarnation to check (the registry's, else the
    /// link's).
    by_id: HashMap<String, Watched>,
    /// (server, incarnation) registered or linked: never swept.
    known: HashSet<(String, String)>,
    /// False if the registry could not be read (no sweep then).
    registry_read: bool,
}

/// The latest health verdict per server id, for the Admin API.
#[derive(Default)]
pub struct HealthBoard {
    verdicts: Mutex<HashMap<String, String>>,
}

impl HealthBoard {
    pub fn snapshot(&self) -> HashMap<String, String> {
        self.verdicts.lock().clone()
    }

    fn publish(&self, verdicts: HashMap<String, String>) {
        *self.verdicts.lock() = verdicts;
    }
}

struct Watcher {
    router: Arc<Router>,
    board: Arc<HealthBoard>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    store: Arc<dyn PresenceStore>,
    cfg: HealthWatch,
    /// server id -> (incarnation, consecutive failures)
    failures: HashMap<String, (String, u64)>,
    channels: HashMap<String, Channel>,
    rounds: u64,
    /// A retire or a sweep failed: sweep in the next round.
    sweep_due: bool,
}

/// How the watcher checks: thresholds, where it posts verdicts, and TLS
/// for dialing the servers.
pub struct WatchOptions {
    pub cfg: HealthWatch,
    pub board: Arc<HealthBoard>,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

pub async fn run(
    router: Arc<Router>,
    store: Arc<dyn PresenceStore>,
    opts: WatchOptions,
    shutdown: CancellationToken,
) {
    let WatchOptions { cfg, board, tls } = opts;
    let mut tick = tokio::time::interval(cfg.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watcher = Watcher {
        router,
        board,
        tls,
        store,
        cfg,
        failures: HashMap::new(),
        channels: HashMap::new(),
        rounds: 0,
        sweep_due: false,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        watcher.round().await;
    }
}

impl Watcher {
    async fn targets(&self) -> Targets {
        let mut targets = Targets::default();
        for link in self.router.links.all() {
            targets.watch(&link.server_id, &link.incarnation, &link.grpc_addr);
        }
        // The registry wins: it holds the newest incarnation of each id.
        match self.store.servers().await {
            Ok(servers) => {
                targets.registry_read = true;
                for s in servers {
                    targets.watch(&s.id, &s.incarnation, &s.grpc_addr);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the server registry"),
        }
        targets
    }

    fn channel(&mut self, addr: &str) -> Option<Channel> {
        if let Some(c) = self.channels.get(addr) {
            return Some(c.clone());
        }
        let timeout = self.cfg.health_interval.min(Duration::from_secs(2));
        let channel = crate::tls::endpoint(addr, self.tls.as_ref())
            .ok()?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        self.channels.insert(addr.to_owned(), channel.clone());
        Some(channel)
    }

    async fn round(&mut self) {
        let Targets {
            by_id: targets,
            known,
            registry_read,
        } = self.targets().await;
        self.failures.retain(|id, _| targets.contains_key(id));
        self.channels
            .retain(|addr, _| targets.values().any(|t| &t.grpc_addr == addr));
        let checks = targets.iter().map(|(id, t)| {
            let channel = self.channel(&t.grpc_addr);
            let service = incarnation_service(id, &t.incarnation);
            let timeout = self.cfg.health_interval.min(Duration::from_secs(2));
            async move { (id.clone(), check(channel, service, timeout).await) }
        });
        let results = futures::future::join_all(checks.collect::<Vec<_>>()).await;
        let mut verdicts = HashMap::new();
        for (id, healthy) in results {
            let target = &targets[&id];
            if healthy {
                self.failures.remove(&id);
                verdicts.insert(id, "SERVING".to_owned());
                continue;
            }
            let entry = self
                .failures
                .entry(id.clone())
                .or_insert_with(|| (target.incarnation.clone(), 0));
            if entry.0 != target.incarnation {
                *entry = (target.incarnation.clone(), 0);
            }
            entry.1 += 1;
            self.router.metrics.health_check_failures.inc();
            tracing::debug!(server = %id, failures = entry.1, "health check failed");
            verdicts.insert(id.clone(), format!("FAILING ({})", entry.1));
            if entry.1 >= self.cfg.health_failures
                && self.declare_dead(&id, &target.incarnation).await
            {
                self.failures.remove(&id);
            }
        }
        self.board.publish(verdicts);
        if registry_read && (self.sweep_due || self.rounds.is_multiple_of(SWEEP_EVERY)) {
            self.sweep(&known).await;
        }
        self.rounds += 1;
    }

    /// Returns false if the retire could not complete (retried next
    /// round, or finished by the sweep if the server already left the
    /// registry).
    async fn declare_dead(&mut self, id: &str, incarnation: &str) -> bool {
        let unavailable = self.router.forget_server(id, incarnation);
        let retired = match self.store.retire(id, incarnation).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "could not retire the server; will retry");
                self.sweep_due = true;
                return false;
            }
        };
        let purged = retired.purged;
        self.router.metrics.purged_entries.inc_by(purged);
        if !retired.deregistered {
            // Another relay retired it first and counted the purge.
            tracing::debug!(server = %id, %incarnation, purged, unavailable, "server already retired by another relay");
            return true;
        }
        if let Err(e) = self.store.record_purge(purged).await {
            tracing::warn!(error = %e, "could not record purge totals");
        }
        self.router.metrics.purges.inc();
        tracing::warn!(server = %id, %incarnation, purged, unavailable, "server declared dead: presence purged");
        true
    }

    /// Purges the indexes of incarnations that are neither registered nor
    /// linked. The purge itself is fenced (nothing goes while an
    /// incarnation is registered), so a server registering meanwhile is
    /// safe.
    async fn sweep(&mut self, known: &HashSet<(String, String)>) {
        let incarnations = match self.store.incarnations().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list presence indexes; sweeping later");
                self.sweep_due = true;
                return;
            }
        };
        self.sweep_due = false;
        for (server, incarnation) in incarnations {
            if known.contains(&(server.clone(), incarnation.clone())) {
                continue;
            }
            match self.store.purge(&server, &incarnation).await {
                Ok(0) => {}
                Ok(purged) => {
                    self.router.metrics.purged_entries.inc_by(purged);
                    tracing::warn!(%server, %incarnation, purged, "swept presence entries of an incarnation neither registered nor linked");
                }
                Err(e) => {
                    tracing::warn!(%server, error = %e, "sweep failed; will retry");
                    self.sweep_due = true;
                }
            }
        }
    }
}

impl Targets {
    fn watch(&mut self, id: &str, incarnation: &str, grpc_addr: &str) {
        self.known.insert((id.to_owned(), incarnation.to_owned()));
        let watched = Watched {
            incarnation: incarnation.to_owned(),
            grpc_addr: grpc_addr.to_owned(),
        };
        self.by_id.insert(id.to_owned(), watched);
    }
}

/// True if the incarnation's own health service answers SERVING.
async fn check(channel: Option<Channel>, service: String, timeout: Duration) -> bool {
    let Some(channel) = channel else {
        return false;
    };
    let request = HealthCheckRequest { service };
    match tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await {
        Ok(Ok(resp)) => resp.into_inner().status() == ServingStatus::Serving,
        _ => false,
    }
}
