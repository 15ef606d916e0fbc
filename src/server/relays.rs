//! The set of relays this server links to, one `RelayLink` each: either
//! the fixed list of `--relay` URLs, or (`--discover-relays`) every relay
//! in the relay registry, re-read every second, so that relays added or
//! scaled away under Kubernetes are followed. A relay that leaves the set
//! keeps its link until the link ends (a draining relay closes it once
//! its chats are done), and is not dialled again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::inbound::LinkParts;
use super::relay_link::RelayLink;
use crate::presence::PresenceStore;
use crate::shutdown::{CancellationToken, Ticker};

/// How often the relay registry is read.
pub const DISCOVERY_PERIOD: Duration = Duration::from_secs(1);

pub struct RelaySet {
    pub parts: Arc<LinkParts>,
    pub store: Arc<dyn PresenceStore>,
}

impl RelaySet {
    /// Links to the wanted relays until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let tasks = TaskTracker::new();
        let mut linked: HashMap<String, CancellationToken> = HashMap::new();
        let mut ticker = Ticker::new(DISCOVERY_PERIOD);
        while ticker.tick(&stop).await {
            let Some(wanted) = self.wanted().await else {
                continue;
            };
            linked.retain(|target, unwanted| {
                let keep = wanted.contains(target);
                if !keep {
                    unwanted.cancel();
                }
                keep
            });
            for target in wanted {
                if linked.contains_key(&target) {
                    continue;
                }
                let unwanted = CancellationToken::new();
                let link = RelayLink {
                    parts: self.parts.clone(),
                    target: target.clone(),
                };
                tasks.spawn(link.run(unwanted.clone(), stop.clone()));
                linked.insert(target, unwanted);
            }
            if !self.parts.relay.discover {
                // A fixed list: every link keeps itself up from now on.
                stop.cancelled().await;
                break;
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// The addresses to link to; None if the registry cannot be read now
    /// (the current links stay).
    async fn wanted(&self) -> Option<Vec<String>> {
        if !self.parts.relay.discover {
            return Some(self.parts.relay.urls.clone());
        }
        match self.store.relays().await {
            Ok(relays) => Some(
                relays
                    .into_iter()
                    .filter(|r| !r.draining)
                    .map(|r| r.grpc_addr)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(server = %self.parts.hello.server_id, error = %e, "cannot read the relay registry; keeping the current links");
                None
            }
        }
    }
}
