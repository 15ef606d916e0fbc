//! When each connection is kicked once the drain starts: turns spread
//! evenly over most of the drain window, not one burst, so that the
//! kicked clients reconnect to the other servers gradually instead of all
//! at once (a reconnect storm meets `server_full` and refusals).
//!
//! It only schedules; the connection kicks itself at its turn (it owns
//! its socket), and the wiring (`mod.rs`) decides when the drain starts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::shutdown::CancellationToken;

/// The share of the drain window the turns are spread over: the rest is
/// left for the last kicked clients to read their lines before the
/// deadline.
const SPREAD: f64 = 0.9;
/// Turns are never further apart than this: a handful of connections is
/// no storm (10 reconnects a second), and need not keep a server waiting
/// for the whole window.
const MAX_GAP: Duration = Duration::from_millis(100);

/// The kick schedule of one server's drain.
pub struct Drain {
    window: Duration,
    started: CancellationToken,
    /// Set once, when the drain starts.
    schedule: OnceLock<Schedule>,
    /// Turns handed out so far.
    tickets: AtomicUsize,
}

#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    gap: Duration,
}

impl Drain {
    /// A drain whose kicks must be done within `window`
    /// (`--drain-timeout-ms`).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            started: CancellationToken::new(),
            schedule: OnceLock::new(),
            tickets: AtomicUsize::new(0),
        }
    }

    /// Starts the turns of `connections` connections, now.
    pub fn start(&self, connections: u64) {
        let _ = self.schedule.set(Schedule {
            start: Instant::now(),
            gap: gap(self.window, connections),
        });
        self.started.cancel();
    }

    /// Resolves at this connection's turn to be kicked: never before the
    /// drain starts, then one turn per caller, `gap` apart, in the order
    /// they ask after the start.
    pub async fn turn(&self) {
        self.started.cancelled().await;
        let Some(schedule) = self.schedule.get().copied() else {
            return;
        };
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let at = schedule.start + schedule.gap * ticket.min(u32::MAX as usize) as u32;
        tokio::time::sleep_until(at).await;
    }
}

/// How far apart the turns of `connections` are in a drain `window`.
fn gap(window: Duration, connections: u64) -> Duration {
    let spread = window.mul_f64(SPREAD);
    (spread / connections.clamp(1, u32::MAX.into()) as u32).min(MAX_GAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_spread_over_most_of_the_window() {
        // 400 connections in 4 s: 9 ms apart, the last at 3.591 s.
        assert_eq!(gap(Duration::from_secs(4), 400), Duration::from_millis(9));
    }

    #[test]
    fn a_few_connections_go_at_the_max_gap() {
        assert_eq!(gap(Duration::from_secs(60), 3), MAX_GAP);
        assert_eq!(gap(Duration::from_secs(60), 0), MAX_GAP);
    }

    #[tokio::test]
    async fn turns_come_in_order_after_the_start() {
        let drain = std::sync::Arc::new(Drain::new(Duration::from_millis(90)));
        let turn = tokio::time::timeout(Duration::from_millis(50), drain.turn());
        assert!(turn.await.is_err(), "a turn came without a drain");
        let start = Instant::now();
        drain.start(3);
        for i in 0..3u32 {
            drain.turn().await;
            assert!(start.elapsed() >= Duration::from_millis(27) * i, "turn {i}");
        }
    }
}
