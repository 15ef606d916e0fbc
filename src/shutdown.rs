//! Shutdown signalling shared by every task of a process.
//!
//! One `CancellationToken` per process (or per in-process node of the
//! local cluster); SIGTERM and SIGINT cancel it. Tasks select on it and
//! run their own drain; nothing here knows what draining means.

pub use tokio_util::sync::CancellationToken;

/// A periodic task's clock: ticks every `period`, the first at once, a
/// late tick delayed rather than bunched, until the task is stopped.
pub struct Ticker(tokio::time::Interval);

impl Ticker {
    pub fn new(period: std::time::Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self(interval)
    }

    /// Waits for the next tick; false once `stop` is cancelled.
    pub async fn tick(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled by the first SIGTERM/SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}
