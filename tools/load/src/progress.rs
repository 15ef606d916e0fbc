//! Progress of a run: the shared counters the modes' tasks bump, the
//! once-per-second line on stderr, and the stall detector that gives up
//! on a run when no counter moves. Must never write to stdout (that
//! carries only the JSON summary).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counters shown once per second on stderr.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub outcomes: AtomicU64,
    pub done: AtomicU64,
    /// When the last message arrived (ns of the run's clock), and the
    /// longest wait between two arrivals so far: how long deliveries
    /// paused, e.g. while a failure was being handled.
    pub last_arrival_ns: AtomicU64,
    pub max_arrival_gap_ns: AtomicU64,
}

impl Progress {
    /// Messages arrived at `now`.
    pub fn arrived(&self, now: u64) {
        let before = self.last_arrival_ns.swap(now, Ordering::Relaxed);
        if before > 0 {
            self.max_arrival_gap_ns
                .fetch_max(now.saturating_sub(before), Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> [u64; 4] {
        [
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.outcomes.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        ]
    }
}

/// The progress reporter of a run, running until `stop`.
pub struct Reporter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Prints `progress` each second (if `print`); cancels `stall` when no
    /// counter moved for `stall_after` (the run is stuck: give up).
    pub fn start(
        mode: &'static str,
        progress: Arc<Progress>,
        print: bool,
        stall_after: Duration,
        stall: CancellationToken,
    ) -> Reporter {
        let stop = CancellationToken::new();
        let task = tokio::spawn(report_progress(
            mode,
            progress,
            print,
            stall_after,
            stall,
            stop.clone(),
        ));
        Reporter { stop, task }
    }

    /// Stops the reporter and waits for its last line.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Prints progress each second until `stop`; cancels `stall` when no
/// counter moved for `stall_after`.
async fn report_progress(
    mode: &'static str,
    progress: Arc<Progress>,
    print: bool,
    stall_after: Duration,
    stall: CancellationToken,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut last = progress.snapshot();
    let mut last_change = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = progress.snapshot();
        if print {
            let [sent, received, outcomes, done] = now;
            let line = match mode {
                "pairs" => format!(
                    "sent {sent} received {received} outcomes {outcomes} in-flight {}",
                    sent.saturating_sub(outcomes)
                ),
                _ => format!("done {done} in-flight {}", sent.saturating_sub(done)),
            };
            eprintln!("[{mode} {:>4.0}s] {line}", start.elapsed().as_secs_f64());
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= stall_after {
            eprintln!(
                "[{mode}] no progress for {} s: giving up",
                stall_after.as_secs()
            );
            stall.cancel();
            return;
        }
    }
}
