//! One connection's writer in a `pairs` run: sends the user's chats, as
//! many per write as the window (and --rate) allows, stamping each with
//! its send time. Owns the write half until the end of the run; must not
//! read the connection or judge outcomes (that is the reader's job).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::plan::Dir;
use crate::client::push_chat;
use crate::common::now_ns;
use crate::content::{self, Stamp};
use crate::progress::Progress;

/// Sends this user's chats, as many per write as the window allows.
/// Returns the write half (kept open until the end) and false on error.
pub(super) async fn write_loop(
    mut writer: OwnedWriteHalf,
    dir: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    size: usize,
    pace: Option<Duration>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> (OwnedWriteHalf, bool) {
    let (Some(dir), Some(window)) = (dir, window) else {
        return (writer, true);
    };
    let mut buf = Vec::with_capacity(64 * 1024);
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
        buf.clear();
        dir.sent.store(seq + n, Ordering::Relaxed);
        for s in seq..seq + n {
            dir.sent_at[s as usize].store(now, Ordering::Relaxed);
            let stamp = Stamp {
                pair: dir.pair,
                seq: s,
                sent_ns: now,
            };
            push_chat(&mut buf, &dir.to, |o| content::encode(o, stamp, size), s);
        }
        let written = tokio::select! {
            _ = cancel.cancelled() => break,
            r = writer.write_all(&buf) => r,
        };
        if written.is_err() {
            return (writer, false);
        }
        seq += n;
        progress.sent.fetch_add(n, Ordering::Relaxed);
    }
    (writer, true)
}
