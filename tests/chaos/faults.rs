//! The fault lanes of the chaos test: each injects one kind of fault at
//! seeded random times, with seeded random targets and durations, until
//! the chaos phase ends, and heals its fault before it returns, so that
//! the cluster is whole when the settle period starts. Lanes run side by
//! side, so faults of different kinds overlap. Returns how many faults
//! each injected (a run without faults proves nothing).
//!
//! Sleeping here paces the workload (when the next fault comes, how long
//! it lasts); nothing waits for a state by sleeping.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::world::{World, between};

/// The longest freeze of Redis: a login sent to it meanwhile may land up
/// to this long after it was sent (its server gave up after 2 s).
pub const REDIS_FREEZE_MAX: Duration = Duration::from_secs(4);

/// The end of the chaos phase, as lanes see it.
#[derive(Clone, Default)]
pub struct Stop(CancellationToken);

impl Stop {
    pub fn fire(&self) {
        self.0.cancel();
    }

    pub fn fired(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Returns once the phase has ended.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// Sleeps for `d`, less if the phase ends first; false if it ended.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.0.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// kill -9 of a random server; after a while it starts again, under the
/// same id (its successor retires what it left) or a new one (the relay
/// must declare the old one dead and purge it). One down at a time.
pub async fn kill_servers(world: Arc<World>, mut rng: StdRng, stop: Stop) -> usize {
    let mut kills = 0;
    let mut gap = between(&mut rng, 1.0, 3.0);
    while stop.pause(gap).await {
        let slot = rng.random_range(0..world.slot_count());
        let Some(id) = world.kill(slot).await else {
            continue;
        };
        kills += 1;
        stop.pause(between(&mut rng, 0.3, 3.0)).await;
        let id = if rng.random_bool(0.5) {
            id
        } else {
            format!("s{slot}-{kills}")
        };
        world.restart(slot, &id).await;
        gap = between(&mut rng, 1.5, 4.0);
    }
    kills
}

/// SIGSTOP of the relay for a few hundred ms to two seconds: links stall,
/// forwards wait or time out, health checks pause.
pub async fn freeze_relay(world: Arc<World>, mut rng: StdRng, stop: Stop) -> usize {
    let mut freezes = 0;
    let mut gap = between(&mut rng, 1.5, 5.0);
    while stop.pause(gap).await {
        world.signal_relay("STOP");
        freezes += 1;
        stop.pause(between(&mut rng, 0.3, 2.0)).await;
        world.signal_relay("CONT");
        gap = between(&mut rng, 2.0, 5.0);
    }
    freezes
}

/// Redis in trouble, the two kinds in turn (the first one chosen at
/// random), with a pause between them:
/// - killed, and an empty one started on its port after 0.2 to 1.5 s:
///   presence, registry and kick subscriptions are lost at once;
/// - frozen (SIGSTOP) for 2.5 to 4 s, longer than the servers' 2 s
///   response timeout: a login given up on (`unavailable`) may still land
///   when it thaws, and must not leave a ghost.
///
/// Returns how many of each: (restarts, freezes).
pub async fn disturb_redis(world: Arc<World>, mut rng: StdRng, stop: Stop) -> (usize, usize) {
    let (mut restarts, mut freezes) = (0, 0);
    let mut restart = rng.random_bool(0.5);
    let mut gap = between(&mut rng, 1.0, 5.0);
    while stop.pause(gap).await {
        if restart {
            world
                .restart_redis_empty(between(&mut rng, 0.2, 1.5), &stop)
                .await;
            restarts += 1;
        } else {
            let longest = REDIS_FREEZE_MAX.as_secs_f64();
            world
                .freeze_redis(between(&mut rng, 2.5, longest), &stop)
                .await;
            freezes += 1;
        }
        restart = !restart;
        gap = between(&mut rng, 3.0, 6.0);
    }
    (restarts, freezes)
}
