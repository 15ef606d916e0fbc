//! Dead-server detection and purge, for whichever node watches the
//! message servers: the relay, or (mesh mode) every message server
//! watching its peers.
//!
//! Every interval the watcher health-checks (grpc.health.v1) every server
//! it knows: those in the registry and those linked to it. It asks for
//! the health of that very incarnation (`grpc::incarnation_service`), so
//! another process on a reused address answers NOT_FOUND, not SERVING. A
//! server that fails `failures` checks in a row (unreachable, timeout, not
//! SERVING) is declared dead: the node stops routing to it (`Watched::
//! forget`), and it is retired (it leaves the registry, then its presence
//! entries go). Because registry entries are checked too, a node that
//! starts also cleans up servers that died while nobody watched.
//!
//! Several watchers may declare the same incarnation dead: the retire is
//! a fenced compare-and-delete, so only the one whose retire removed the
//! registry entry counts the purge (`Retired::deregistered`): a death is
//! purged and counted exactly once, whoever watches.
//!
//! The sweep purges the indexes of incarnations that are neither
//! registered nor linked (a retire or a leave that stopped half-way): in
//! the first round, every `SWEEP_EVERY` rounds, and after a failed retire.
//!
//! A dropped link alone is not death: the server is alive and relinks.
//! This module names no tier: the node hands in what it links as
//! `Watched`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::grpc::incarnation_service;
use crate::metrics::Metrics;
use crate::presence::PresenceStore;
use crate::shutdown::{CancellationToken, Ticker};
use crate::sync::Mutex;

/// Rounds between two sweeps of orphaned indexes (a SCAN of the keyspace).
const SWEEP_EVERY: u64 = 30;

/// How a node decides that a server is dead (flags of the same names).
#[derive(Debug, Clone)]
pub struct HealthWatch {
    /// Period of the grpc.health.v1 checks of every known server.
    pub health_interval: Duration,
    /// Consecutive failed checks after which a server is declared dead.
    pub health_failures: u64,
}

/// A server incarnation linked to the watching node.
pub struct Linked {
    pub id: String,
    pub incarnation: String,
    pub grpc_addr: String,
}

/// What the watching node links to, and how it stops routing to a server.
pub trait Watched: Send + Sync + 'static {
    /// The server incarnations linked to this node now.
    fn linked(&self) -> Vec<Linked>;
    /// `id`'s incarnation `incarnation` is dead: stop routing to it and
    /// answer what is in flight to it; returns how many were answered.
    fn forget(&self, id: &str, incarnation: &str) -> usize;
}

/// A server to check: the incarnation the verdict is about, and where.
struct Target {
    incarnation: String,
    grpc_addr: String,
}

/// What one round checks, and the incarnations the node knows of.
#[derive(Default)]
struct Targets {
    /// server id -> the incarnation to check (the registry's, else the
    /// link's).
    by_id: HashMap<String, Target>,
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

/// How the watcher checks: thresholds, where it posts verdicts, TLS for
/// dialing the servers, and the server it must not check (itself).
pub struct WatchOptions {
    pub cfg: HealthWatch,
    pub board: Arc<HealthBoard>,
    pub tls: Option<ClientTlsConfig>,
    pub metrics: Arc<Metrics>,
    /// A mesh server's own id: it does not watch itself.
    pub me: Option<String>,
}

struct Watcher {
    node: Arc<dyn Watched>,
    store: Arc<dyn PresenceStore>,
    opts: WatchOptions,
    /// server id -> (incarnation, consecutive failures)
    failures: HashMap<String, (String, u64)>,
    channels: HashMap<String, Channel>,
    rounds: u64,
    /// A retire or a sweep failed: sweep in the next round.
    sweep_due: bool,
}

/// Watches until `shutdown`.
pub async fn run(
    node: Arc<dyn Watched>,
    store: Arc<dyn PresenceStore>,
    opts: WatchOptions,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(opts.cfg.health_interval);
    let mut watcher = Watcher {
        node,
        store,
        opts,
        failures: HashMap::new(),
        channels: HashMap::new(),
        rounds: 0,
        sweep_due: false,
    };
    while ticker.tick(&shutdown).await {
        watcher.round().await;
    }
}

impl Watcher {
    async fn targets(&self) -> Targets {
        let mut targets = Targets::default();
        for l in self.node.linked() {
            targets.watch(&l.id, &l.incarnation, &l.grpc_addr);
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
        if let Some(me) = &self.opts.me {
            // Known (never swept), but not checked.
            targets.by_id.remove(me);
        }
        targets
    }

    fn check_timeout(&self) -> Duration {
        self.opts.cfg.health_interval.min(Duration::from_secs(2))
    }

    fn channel(&mut self, addr: &str) -> Option<Channel> {
        if let Some(c) = self.channels.get(addr) {
            return Some(c.clone());
        }
        let timeout = self.check_timeout();
        let channel = crate::tls::endpoint(addr, self.opts.tls.as_ref())
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
        let timeout = self.check_timeout();
        let checks = targets.iter().map(|(id, t)| {
            let channel = self.channel(&t.grpc_addr);
            let service = incarnation_service(id, &t.incarnation);
            async move { (id.clone(), check(channel, service, timeout).await) }
        });
        let results = futures::future::join_all(checks.collect::<Vec<_>>()).await;
        let mut verdicts = HashMap::new();
        for (id, healthy) in results {
            let verdict = self.verdict(&id, &targets[&id].incarnation, healthy).await;
            verdicts.insert(id, verdict);
        }
        self.opts.board.publish(verdicts);
        if registry_read && (self.sweep_due || self.rounds.is_multiple_of(SWEEP_EVERY)) {
            self.sweep(&known).await;
        }
        self.rounds += 1;
    }

    /// Counts one check of `id`; declares it dead after enough failures.
    async fn verdict(&mut self, id: &str, incarnation: &str, healthy: bool) -> String {
        if healthy {
            self.failures.remove(id);
            return "SERVING".to_owned();
        }
        let entry = self
            .failures
            .entry(id.to_owned())
            .or_insert_with(|| (incarnation.to_owned(), 0));
        if entry.0 != incarnation {
            *entry = (incarnation.to_owned(), 0);
        }
        entry.1 += 1;
        let failures = entry.1;
        self.opts.metrics.health_check_failures.inc();
        tracing::debug!(server = %id, failures, "health check failed");
        if failures >= self.opts.cfg.health_failures && self.declare_dead(id, incarnation).await {
            self.failures.remove(id);
        }
        format!("FAILING ({failures})")
    }

    /// Returns false if the retire could not complete (retried next
    /// round, or finished by the sweep if the server already left the
    /// registry).
    async fn declare_dead(&mut self, id: &str, incarnation: &str) -> bool {
        let unavailable = self.node.forget(id, incarnation);
        let retired = match self.store.retire(id, incarnation).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "could not retire the server; will retry");
                self.sweep_due = true;
                return false;
            }
        };
        let purged = retired.purged;
        let metrics = &self.opts.metrics;
        metrics.purged_entries.inc_by(purged);
        if !retired.deregistered {
            // Another watcher retired it first and counted the purge.
            tracing::debug!(server = %id, %incarnation, purged, unavailable, "server already retired by another watcher");
            return true;
        }
        if let Err(e) = self.store.record_purge(purged).await {
            tracing::warn!(error = %e, "could not record purge totals");
        }
        metrics.purges.inc();
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
                    self.opts.metrics.purged_entries.inc_by(purged);
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
        let target = Target {
            incarnation: incarnation.to_owned(),
            grpc_addr: grpc_addr.to_owned(),
        };
        self.by_id.insert(id.to_owned(), target);
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
