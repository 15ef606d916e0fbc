//! Dead-server detection and purge.
//!
//! Every interval the relay health-checks (grpc.health.v1, service "")
//! every server it knows: those in the registry and those linked. A server
//! that fails `failures` checks in a row (unreachable, timeout, or not
//! SERVING) is declared dead: routing to it stops, its in-flight messages
//! get `unavailable`, its presence entries (those still pointing at that
//! incarnation) are purged and it leaves the registry. Because registry
//! entries are checked too, a relay that starts also cleans up servers
//! that died while no relay was running.
//!
//! A dropped link alone is not death: the server is alive and relinks.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::options::HealthWatch;
use super::router::Router;
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;

/// A server to check: the incarnation the verdict is about, and where.
struct Watched {
    incarnation: String,
    grpc_addr: String,
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
    async fn targets(&self) -> HashMap<String, Watched> {
        let mut targets = HashMap::new();
        for link in self.router.links.all() {
            targets.insert(
                link.server_id.clone(),
                Watched {
                    incarnation: link.incarnation.clone(),
                    grpc_addr: link.grpc_addr.clone(),
                },
            );
        }
        // The registry wins: it holds the newest incarnation of each id.
        match self.store.servers().await {
            Ok(servers) => {
                for s in servers {
                    targets.insert(
                        s.id,
                        Watched {
                            incarnation: s.incarnation,
                            grpc_addr: s.grpc_addr,
                        },
                    );
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
        let targets = self.targets().await;
        self.failures.retain(|id, _| targets.contains_key(id));
        self.channels
            .retain(|addr, _| targets.values().any(|t| &t.grpc_addr == addr));
        let checks = targets.iter().map(|(id, t)| {
            let channel = self.channel(&t.grpc_addr);
            let timeout = self.cfg.health_interval.min(Duration::from_secs(2));
            async move { (id.clone(), check(channel, timeout).await) }
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
    }

    /// Returns false if the purge could not complete (retried next round).
    async fn declare_dead(&self, id: &str, incarnation: &str) -> bool {
        let unavailable = self.router.forget_server(id, incarnation);
        let purged = match self.store.purge(id, incarnation).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "purge failed; will retry");
                return false;
            }
        };
        if let Err(e) = self.store.deregister(id, incarnation).await {
            tracing::warn!(server = %id, error = %e, "deregister failed; will retry");
            return false;
        }
        if let Err(e) = self.store.record_purge(purged).await {
            tracing::warn!(error = %e, "could not record purge totals");
        }
        self.router.metrics.purges.inc();
        self.router.metrics.purged_entries.inc_by(purged);
        tracing::warn!(server = %id, %incarnation, purged, unavailable, "server declared dead: presence purged");
        true
    }
}

async fn check(channel: Option<Channel>, timeout: Duration) -> bool {
    let Some(channel) = channel else {
        return false;
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    match tokio::time::timeout(timeout, HealthClient::new(channel).check(request)).await {
        Ok(Ok(resp)) => resp.into_inner().status() == ServingStatus::Serving,
        _ => false,
    }
}
