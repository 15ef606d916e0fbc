//! Traffic of a test: a logged-in client that sends many chats while a
//! second task reads and sorts what comes back, so that neither side of
//! the connection blocks the other. Must not start processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Client;

/// What came back for a flood's chats, by the chat's `ref`.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// ref -> ack id, for `delivered`.
    pub delivered: BTreeMap<u64, String>,
    /// ref -> error code.
    pub failed: BTreeMap<u64, String>,
    /// Lines that were no outcome of this flood, or a second outcome.
    pub unexpected: Vec<Value>,
    /// Chats sent.
    pub sent: u64,
}

impl Outcomes {
    pub fn answered(&self) -> u64 {
        (self.delivered.len() + self.failed.len()) as u64
    }

    pub fn count(&self, code: &str) -> usize {
        self.failed.values().filter(|c| *c == code).count()
    }

    /// Exactly one outcome per chat, and nothing else.
    pub fn assert_exactly_one_each(&self) {
        let unexpected: Vec<_> = self.unexpected.iter().take(5).collect();
        assert!(
            self.unexpected.is_empty(),
            "unexpected lines (first 5): {unexpected:?}"
        );
        assert_eq!(
            self.answered(),
            self.sent,
            "chats without an outcome: {self}"
        );
    }
}

impl std::fmt::Display for Outcomes {
    /// Counts, not the (long) lists.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
        for code in self.failed.values() {
            *codes.entry(code).or_default() += 1;
        }
        write!(
            f,
            "sent {}, delivered {}, failed {codes:?}, unexpected {}",
            self.sent,
            self.delivered.len(),
            self.unexpected.len()
        )
    }
}

/// Sends `per_target` chats with `size` bytes of content to each name in
/// `to` (in turns), `ref` = 0, 1, 2..., and collects outcomes until every
/// chat has one or `limit` passes.
pub async fn flood(
    client: Client,
    to: Vec<String>,
    per_target: u64,
    size: usize,
    limit: Duration,
) -> Outcomes {
    let (mut rx, mut tx) = client.split();
    let total = per_target * to.len() as u64;
    let content = "x".repeat(size);
    let writer = tokio::spawn(async move {
        for i in 0..total {
            let recv = &to[(i % to.len() as u64) as usize];
            tx.send(json!({"cmd":"chat","recv":recv,"content":content,"ref":i}))
                .await;
        }
        tx
    });
    let deadline = Instant::now() + limit;
    let mut out = Outcomes {
        sent: total,
        ..Default::default()
    };
    while out.answered() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(v) = rx.try_recv(left).await else {
            break;
        };
        let reference = v["ref"].as_u64();
        let fresh = reference
            .is_some_and(|r| !out.delivered.contains_key(&r) && !out.failed.contains_key(&r));
        match (v["event"].as_str(), reference) {
            (Some("ack"), Some(r)) if fresh => {
                out.delivered
                    .insert(r, v["id"].as_str().unwrap_or("").to_owned());
            }
            (Some("error"), Some(r)) if fresh => {
                out.failed
                    .insert(r, v["code"].as_str().unwrap_or("").to_owned());
            }
            _ => out.unexpected.push(v),
        }
    }
    // The writer is done or blocked on a server that stopped reading us.
    writer.abort();
    out
}
