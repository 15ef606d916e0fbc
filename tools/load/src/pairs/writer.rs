//! One connection's writer in a `pairs` run: sends the user's chats, as
//! many per batch as the window (and --rate) allows, stamping each with
//! its send time. Owns the connection's sending side (`Outbox`) until the
//! end of the run; must not read the connection or judge outcomes (that
//! is the reader's job).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::plan::Dir;
use super::transport::Outbox;
use crate::common::now_ns;
use crate::content::Stamp;
use crate::progress::Progress;

/// Sends this user's chats, as many per batch as the window allows.
/// Returns the sending side (kept open until the end) and false on error.
pub(super) async fn write_loop<O: Outbox>(
    mut outbox: O,
    dir: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    size: usize,
    pace: Option<Duration>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> (O, bool) {
    let (Some(dir), Some(window)) = (dir, window) else {
        return (outbox, true);
    };
    let mut seq = 0u64;
    let started = tokio::time::Instant::now();
    while seq < dir.messages {
        // The reader closes the window when the connection is gone.
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            p = window.acquire() => p,
        };
        let Ok(first) = first else { break };
        first.forget();
        // Paced: chat `seq` is due at start + seq * pace; send every chat
        // that is due (at least this one) in one write.
        let mut due = dir.messages;
        if let Some(pace) = pace {
            let at = started + pace.mul_f64(seq as f64);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(at) => {}
            }
            let elapsed = started.elapsed().as_secs_f64();
            due = (elapsed / pace.as_secs_f64()) as u64 + 1;
        }
        let mut n = 1u64;
        while seq + n < dir.messages.min(due.max(seq + 1))
            && let Ok(p) = window.try_acquire()
        {
            p.forget();
            n += 1;
        }
        let now = now_ns();
        dir.sent.store(seq + n, Ordering::Relaxed);
        for s in seq..seq + n {
            dir.sent_at[s as usize].store(now, Ordering::Relaxed);
            let stamp = Stamp {
                pair: dir.pair,
                seq: s,
                sent_ns: now,
            };
            outbox.push_chat(&dir.to, stamp, size);
        }
        let written = tokio::select! {
            _ = cancel.cancelled() => break,
            r = outbox.send() => r,
        };
        if written.is_err() {
            return (outbox, false);
        }
        seq += n;
        progress.sent.fetch_add(n, Ordering::Relaxed);
    }
    (outbox, true)
}
