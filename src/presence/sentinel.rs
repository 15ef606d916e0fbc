//! Following a Sentinel-managed primary across failovers.
//!
//! The primary is asked of the sentinels at the first call, and again
//! after a call that lost its connection, timed out or met `READONLY` (the
//! node was demoted): that call fails (its caller answers `unavailable`;
//! a write whose reply was lost is reconciled by the server), the next one
//! goes to whoever the sentinels name then. While no primary can be
//! reached every call fails within `RESOLVE_TIMEOUT`, and for
//! `RETRY_AFTER` after a failed resolve calls fail at once, so a dead
//! primary makes callers fail fast, never queue.
//!
//! Kick subscriptions watch `primary()`: a subscription made on one
//! primary ends when the calls move to another.
//!
//! It must not retry calls itself: a script whose reply was lost may have
//! run.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use tokio::sync::watch;

use crate::sync::Mutex;

/// Bound on asking the sentinels and connecting to the primary.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed resolve, calls fail at once for this long.
const RETRY_AFTER: Duration = Duration::from_millis(250);

pub struct Follower {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
    current: Mutex<Current>,
    /// The address of the primary calls go to ("" before the first).
    primary: watch::Sender<String>,
}

#[derive(Default)]
struct Current {
    conn: Option<(MultiplexedConnection, u64)>,
    generation: u64,
    failed: Option<(Instant, String)>,
}

/// True if `e` says the connection, or the node's role, is gone: the next
/// call asks the sentinels again.
pub fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.to_string().contains("READONLY")
}

impl Follower {
    pub fn new(sentinels: SentinelClient, config: AsyncConnectionConfig) -> Self {
        Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            config,
            current: Mutex::default(),
            primary: watch::Sender::new(String::new()),
        }
    }

    /// The connection to the current primary, and its generation (for
    /// `lost`).
    pub async fn conn(&self) -> RedisResult<(MultiplexedConnection, u64)> {
        if let Some(c) = self.cached()? {
            return Ok(c);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another caller may have resolved while this one waited.
        if let Some(c) = self.cached()? {
            return Ok(c);
        }
        match self.resolve(&mut sentinels).await {
            Ok((conn, addr)) => {
                let mut cur = self.current.lock();
                cur.generation += 1;
                cur.conn = Some((conn.clone(), cur.generation));
                cur.failed = None;
                let generation = cur.generation;
                drop(cur);
                self.primary.send_if_modified(|p| {
                    let moved = *p != addr;
                    *p = addr.clone();
                    moved
                });
                Ok((conn, generation))
            }
            Err(e) => {
                self.current.lock().failed = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    fn cached(&self) -> RedisResult<Option<(MultiplexedConnection, u64)>> {
        let cur = self.current.lock();
        if let Some(c) = &cur.conn {
            return Ok(Some(c.clone()));
        }
        match &cur.failed {
            Some((at, why)) if at.elapsed() < RETRY_AFTER => Err(RedisError::from((
                redis::ErrorKind::Io,
                "no primary reachable through the sentinels",
                why.clone(),
            ))),
            _ => Ok(None),
        }
    }

    async fn resolve(
        &self,
        sentinels: &mut SentinelClient,
    ) -> RedisResult<(MultiplexedConnection, String)> {
        let work = async {
            let client = sentinels.async_get_client().await?;
            let addr = client.get_connection_info().addr().to_string();
            let conn = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            Ok((conn, addr))
        };
        tokio::time::timeout(RESOLVE_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// The call on generation `generation` lost the primary: the next call
    /// asks the sentinels again.
    pub fn lost(&self, generation: u64) {
        let mut cur = self.current.lock();
        if cur.conn.as_ref().is_some_and(|(_, g)| *g == generation) {
            cur.conn = None;
        }
    }

    /// A client for the primary, as the sentinels name it now (for a
    /// subscription), and the address it was found at.
    pub async fn primary_client(&self) -> RedisResult<(Client, String)> {
        let mut sentinels = self.sentinels.lock().await;
        let work = async {
            let client = sentinels.async_get_client().await?;
            let addr = client.get_connection_info().addr().to_string();
            Ok((client, addr))
        };
        tokio::time::timeout(RESOLVE_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Changes of the primary that calls go to.
    pub fn primary(&self) -> watch::Receiver<String> {
        self.primary.subscribe()
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from the sentinels or the primary in time",
    ))
}
