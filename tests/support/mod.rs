//! Test support: real processes on free loopback ports.
//!
//! `Redis`, `Relay` and `Server` start the real `redis-server` and the
//! real binaries; dropping one kills and reaps it. `Client` is a plain TCP
//! client of the NDJSON protocol. Every wait has a deadline, and waits
//! poll for a condition, never sleep for a guess.
//!
//! One file per thing it starts: `process` (a child process and its log),
//! `redis` (redis-server), `redis_ha` (a Redis Cluster, a Sentinel
//! group), `cluster` (relay, message servers, a linked
//! cluster), `client` (the protocol client), `tools` (grpcurl, a link
//! held open with grpcurl, metrics scrapes, /proc, the `switchboard-load`
//! binary), `pki` (certificates for TLS tests), `traffic` (a flooding
//! client and the outcomes it got back), `load` (a run of
//! `switchboard-load pairs` and its checks, named `support::load::X`).
//! This file re-exports the others (tests name them `support::X`) and
//! owns the shared waiting helpers and time bounds; it must not start
//! anything itself.
#![allow(dead_code)]

mod client;
mod cluster;
pub mod load;
mod pki;
mod process;
mod redis;
mod redis_ha;
mod tools;
mod traffic;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// Each test binary uses a subset: unused re-exports are expected, as
// unused items are (`dead_code` above).
#[allow(unused_imports)]
pub use self::client::{Client, ClientRx, ClientTx};
#[allow(unused_imports)]
pub use self::cluster::{
    AttachedServer, ClientPort, Cluster, ClusterOpts, EXPIRY_SWEEP, FORWARD_TIMEOUT,
    HEALTH_FAILURES, HEALTH_INTERVAL, Mode, RELAY_STARTED, Relay, SERVER_STARTED, Server,
    ServerOpts, patient_relay, port_open, purge_bound, wait_routable,
};
#[allow(unused_imports)]
pub use self::pki::Pki;
#[allow(unused_imports)]
pub use self::process::Proc;
#[allow(unused_imports)]
pub use self::redis::{
    REDIS_READY, Redis, RedisUrl, SERVERS_KEY, kick_channel, redis_args, server_key, user_key,
};
#[allow(unused_imports)]
pub use self::redis_ha::{DOWN_AFTER, MASTER_NAME, Node, RedisCluster, RedisSentinel};
#[allow(unused_imports)]
pub use self::tools::{LinkCall, grpcurl, load_binary, rss_kib, sample, scrape, try_rss_kib};
#[allow(unused_imports)]
pub use self::traffic::{Outcomes, flood};

pub const STEP: Duration = Duration::from_secs(5);

/// Added to every time bound a test derives from a configured interval:
/// room for a loaded 2-core machine, where a process can lose the CPU
/// for a while, without making the bound meaningless.
pub const SLACK: Duration = Duration::from_secs(2);

/// A loopback port nobody listens on, for a child process to bind.
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux): a
/// port found free inside that range can be handed to any outgoing
/// connection (these tests open thousands) before the child binds it,
/// and the child then fails with "Address already in use". Below it only
/// listeners compete, and the bind check sees them. `p + 10000` stays
/// below the range too (a Redis Cluster node's bus port). One test
/// process never hands out a port twice; processes running at once start
/// at different places (their pid).
pub fn free_port() -> u16 {
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_768 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (std::process::id().wrapping_mul(7_919)) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(why) = poll_until(limit, cond, || None).await {
        panic!("{why} waiting for {what}");
    }
}

/// Polls `cond` every 20 ms until it holds. Err(why) once `limit` passed,
/// or at once when `give_up` returns a reason (checked between polls).
async fn poll_until<F, Fut>(
    limit: Duration,
    mut cond: F,
    mut give_up: impl FnMut() -> Option<String>,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if let Some(why) = give_up() {
            return Err(why);
        }
        if start.elapsed() >= limit {
            return Err(format!("timed out after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Asserts that `cond` keeps holding, checked every 50 ms, for `window`:
/// an observation window for things that must NOT happen.
pub async fn holds_for<F, Fut>(window: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < window {
        assert!(
            cond().await,
            "{what} stopped holding after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
