//! What every mode needs to start a run: the process-local clock, a run
//! id for unique user names, and address resolution. Holds no state but
//! the clock's epoch; mode logic does not belong here.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;

/// Nanoseconds since a process-local epoch (set on first use).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A short random id that makes this run's user names unique.
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Resolves `HOST:PORT` to its first address.
pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}
