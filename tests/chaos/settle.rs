//! After the last fault: the bounds within which the cluster must have
//! settled, derived from the configured intervals, and the checks that it
//! has (every chat answered; one session per name, the newest login's;
//! presence and registry exactly the live sessions and servers). Polls;
//! never sleeps for a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::clients::Ctx;
use crate::ledger::{self, Facts};
use crate::support::{
    EXPIRY_SWEEP, FORWARD_TIMEOUT, HEALTH_FAILURES, HEALTH_INTERVAL, SLACK, purge_bound,
};
use crate::world::WRITE_TIMEOUT;

/// The servers' heartbeat (their default), and every how many heartbeats
/// a server reconciles its sessions with presence (docs/architecture.md).
const HEARTBEAT: Duration = Duration::from_secs(1);
const RECONCILE_EVERY: u32 = 5;

/// By when every chat on a connection that is still up has its outcome:
/// a forward's timeout and the sweep that answers it, or the write
/// timeout of a staller its chats were queued for; and slack.
pub fn outcome_bound() -> Duration {
    (FORWARD_TIMEOUT + EXPIRY_SWEEP).max(WRITE_TIMEOUT) + SLACK
}

/// By when presence equals the live sessions after the last fault: a
/// killed server purged by the relay (`purge_bound`), then a full round
/// of periodic reconciles (each server every `RECONCILE_EVERY` heartbeats;
/// it also reconciles at once after Redis is back or a store error).
pub fn settle_bound() -> Duration {
    purge_bound(HEALTH_INTERVAL, HEALTH_FAILURES) + HEARTBEAT * RECONCILE_EVERY
}

/// Polls `probe` every 20 ms until it says Ok or `limit` passes: Err with
/// its last answer then.
pub async fn within<F, Fut>(limit: Duration, mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let why = match probe().await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(format!("still after {limit:?}: {why}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every chat on a connection that is still up has an outcome.
pub fn all_answered(ctx: &Ctx) -> Result<(), String> {
    let waiting: Vec<String> = ctx.with_logs(|logs| {
        logs.iter()
            .filter(|c| c.end.is_none() && c.outstanding() > 0)
            .map(|c| format!("{} ({} chats)", c.name, c.outstanding()))
            .collect()
    });
    match waiting.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "chats without outcome on live connections: {waiting:?}"
        )),
    }
}

/// No name has two live sessions, the newest login of each shared name
/// survived (or has an excuse), and Redis has exactly the live sessions,
/// each at its server's registered incarnation, and exactly the running
/// servers.
pub async fn settled(ctx: &Ctx, facts: &Facts<'_>) -> Result<(), String> {
    let (wrong, live) = ctx.with_logs(|logs| {
        let mut wrong = ledger::doubled(logs);
        wrong.extend(ledger::newest_wins(logs, &ctx.shared_names, facts));
        let live: BTreeMap<String, String> = ledger::live_sessions(logs)
            .into_iter()
            .map(|(name, cs)| (name, cs[0].server.clone()))
            .collect();
        (wrong, live)
    });
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }
    let (users, registry) = ctx.world.presence().await;
    let running = ctx.world.running_ids();
    if registry.keys().cloned().collect::<BTreeSet<_>>() != running {
        return Err(format!("registry {registry:?}, running {running:?}"));
    }
    let mut wrong = Vec::new();
    for (name, (server, inc)) in &users {
        match live.get(name) {
            None => wrong.push(format!("ghost {name} on {server}")),
            Some(s) if s != server => wrong.push(format!("{name} on {server}, live on {s}")),
            Some(_) if registry.get(server) != Some(inc) => {
                wrong.push(format!("{name} on a dead incarnation {inc} of {server}"))
            }
            Some(_) => {}
        }
    }
    for (name, server) in &live {
        if !users.contains_key(name) {
            wrong.push(format!("{name} (live on {server}) missing"));
        }
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "presence differs from the live sessions: {wrong:?}"
        )),
    }
}
