//! One connection's reader in a `pairs` run: outcomes of the user's own
//! chats (each frees window credit for its writer) and messages from its
//! partner (verified on arrival), as the transport's `Inbox` hands them
//! out. Once both roles are complete it reads on for --linger-ms, so that
//! a duplicate arriving after the last expected one is counted rather
//! than missed; it ends then, at EOF or on cancel.
//! Owns its `ReaderResult`; of the shared state it writes only its
//! directions' outcome slots and lost/done flags. Must not send chats.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::plan::Dir;
use super::ready::Ready;
use super::transport::{Event, Inbox};
use crate::common::now_ns;
use crate::progress::Progress;
use crate::verify::{Receiver, Verdict, outcome};

#[derive(Default)]
pub(super) struct ReaderResult {
    pub(super) receiver: Option<(usize, Receiver)>,
    pub(super) e2e: Vec<u64>,
    pub(super) ack: Vec<u64>,
    pub(super) odd: OddReplies,
    pub(super) disconnected: bool,
    pub(super) last_receive_ns: u64,
    /// When the reader had everything it expected (or gave up), before
    /// lingering (ns).
    pub(super) done_ns: u64,
}

/// Replies that were neither a first outcome nor a message for us.
#[derive(Default, Clone, Copy)]
pub(super) struct OddReplies {
    pub(super) duplicate_outcomes: u64,
    pub(super) unexpected_replies: u64,
    pub(super) unparseable: u64,
    pub(super) kicked: u64,
    /// `kicked` with reason `server_shutdown` in a run expecting failures.
    pub(super) kicked_shutdown: u64,
}

impl OddReplies {
    pub(super) fn add(&mut self, other: &OddReplies) {
        self.duplicate_outcomes += other.duplicate_outcomes;
        self.unexpected_replies += other.unexpected_replies;
        self.unparseable += other.unparseable;
        self.kicked += other.kicked;
        self.kicked_shutdown += other.kicked_shutdown;
    }
}

/// What every reader of a run shares.
pub(super) struct ReaderCtx {
    pub(super) size: usize,
    pub(super) expect_failures: bool,
    pub(super) progress: Arc<Progress>,
    pub(super) ready: Arc<Ready>,
    pub(super) cancel: CancellationToken,
    /// How long to read on once both roles are complete.
    pub(super) linger: Duration,
}

/// Reads one connection: outcomes of its own chats, messages from its
/// partner. Ends --linger-ms after both roles are complete, or at EOF or
/// on cancel.
pub(super) async fn read_loop<I: Inbox>(
    mut inbox: I,
    sends: Option<Arc<Dir>>,
    receives: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    ctx: ReaderCtx,
) -> ReaderResult {
    let mut reader = Reader::new(sends, receives, window, ctx);
    loop {
        reader.read_buffered(&mut inbox);
        // Both are evaluated: each updates the reader's state.
        let sender_done = reader.sender_done();
        let receiver_done = reader.receiver_done();
        if sender_done && receiver_done {
            reader.res.done_ns = now_ns();
            reader.linger(&mut inbox).await;
            break;
        }
        if !reader.wait(&mut inbox).await {
            reader.res.done_ns = now_ns();
            break;
        }
    }
    reader.finish()
}

/// What one read brought: new outcomes and new messages.
#[derive(Default)]
struct Batch {
    outcomes: u64,
    messages: u64,
}

/// The state of one reader between reads.
struct Reader {
    sends: Option<Arc<Dir>>,
    receives: Option<Arc<Dir>>,
    window: Option<Arc<Semaphore>>,
    ctx: ReaderCtx,
    res: ReaderResult,
    rx: Option<Receiver>,
    outcomes_got: u64,
    /// Delivered chats of the partner not yet arrived; known once the
    /// partner has every outcome.
    missing_delivered: Option<u64>,
}

impl Reader {
    fn new(
        sends: Option<Arc<Dir>>,
        receives: Option<Arc<Dir>>,
        window: Option<Arc<Semaphore>>,
        ctx: ReaderCtx,
    ) -> Self {
        let mut res = ReaderResult::default();
        let rx = receives
            .as_ref()
            .map(|d| Receiver::new(d.pair, d.from.clone(), d.messages, ctx.size));
        if let Some(d) = &receives {
            res.e2e.reserve(d.messages as usize);
        }
        if let Some(d) = &sends {
            res.ack.reserve(d.messages as usize);
        }
        Reader {
            sends,
            receives,
            window,
            ctx,
            res,
            rx,
            outcomes_got: 0,
            missing_delivered: None,
        }
    }

    /// Handles every event already read.
    fn read_buffered(&mut self, inbox: &mut impl Inbox) {
        let now = now_ns();
        let mut batch = Batch::default();
        while let Some(event) = inbox.next_event() {
            self.on_event(event, now, &mut batch);
        }
        self.account(&batch, now);
    }

    fn on_event(&mut self, event: Event<'_>, now: u64, batch: &mut Batch) {
        match event {
            Event::Outcome { reference, code } => {
                batch.outcomes += u64::from(self.on_outcome(reference, code, now));
            }
            Event::Message { from, content } => {
                batch.messages += u64::from(self.on_message(from, content, now))
            }
            Event::Kicked { reason }
                if self.ctx.expect_failures && reason == Some("server_shutdown") =>
            {
                self.res.odd.kicked_shutdown += 1
            }
            Event::Kicked { .. } => self.res.odd.kicked += 1,
            Event::Unexpected => self.res.odd.unexpected_replies += 1,
            Event::Unparseable => self.res.odd.unparseable += 1,
        }
    }

    /// The outcome `code` of this user's chat `r`; true if it is its first.
    fn on_outcome(&mut self, r: u64, code: u8, now: u64) -> bool {
        let Some(d) = self.sends.as_ref().filter(|d| r < d.messages) else {
            self.res.odd.unexpected_replies += 1;
            return false;
        };
        if d.outcome[r as usize].swap(code, Ordering::Relaxed) != outcome::NONE {
            self.res.odd.duplicate_outcomes += 1;
            return false;
        }
        d.outcome_at[r as usize].store(now, Ordering::Relaxed);
        self.outcomes_got += 1;
        if code == outcome::DELIVERED {
            let sent = d.sent_at[r as usize].load(Ordering::Relaxed);
            self.res.ack.push(now.saturating_sub(sent));
        }
        true
    }

    /// A message from the partner; true if it is the first arrival of
    /// its sequence number.
    fn on_message(&mut self, from: &str, content: &[u8], now: u64) -> bool {
        let (Some(r), Some(d)) = (self.rx.as_mut(), self.receives.as_ref()) else {
            self.res.odd.unexpected_replies += 1;
            return false;
        };
        let verdict = r.on_message(from, content);
        let Verdict::New { stamp, .. } = verdict else {
            return false;
        };
        self.res.e2e.push(now.saturating_sub(stamp.sent_ns));
        if let Some(m) = self.missing_delivered.as_mut()
            && d.outcome[stamp.seq as usize].load(Ordering::Relaxed) == outcome::DELIVERED
        {
            *m = m.saturating_sub(1);
        }
        true
    }

    /// Passes a batch on: window credit, progress, the ready file's count.
    fn account(&mut self, batch: &Batch, now: u64) {
        if batch.outcomes > 0 {
            if let Some(w) = &self.window {
                w.add_permits(batch.outcomes as usize);
            }
            let progress = &self.ctx.progress;
            let before = progress
                .outcomes
                .fetch_add(batch.outcomes, Ordering::Relaxed);
            self.ctx.ready.on_outcomes(before, batch.outcomes);
        }
        if batch.messages > 0 {
            self.res.last_receive_ns = now;
            let progress = &self.ctx.progress;
            progress.arrived(now);
            progress
                .received
                .fetch_add(batch.messages, Ordering::Relaxed);
        }
    }

    /// Every chat of this user has its outcome (tells the partner's
    /// reader the first time); true for a user that sends nothing.
    fn sender_done(&mut self) -> bool {
        match &self.sends {
            Some(d) if self.outcomes_got == d.messages => {
                if !d.outcomes_done.swap(true, Ordering::AcqRel) {
                    d.done_notify.notify_one();
                }
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Every message arrived, or every one the partner was told was
    /// delivered; true for a user that receives nothing.
    fn receiver_done(&mut self) -> bool {
        let (Some(r), Some(d)) = (&self.rx, &self.receives) else {
            return true;
        };
        if self.missing_delivered.is_none() && d.outcomes_done.load(Ordering::Acquire) {
            self.missing_delivered = Some(
                (0..d.messages as usize)
                    .filter(|&i| {
                        !r.seen[i] && d.outcome[i].load(Ordering::Relaxed) == outcome::DELIVERED
                    })
                    .count() as u64,
            );
        }
        r.complete() || self.missing_delivered == Some(0)
    }

    /// Waits for more to read, or for the partner's last outcome; false
    /// when the run was cancelled or the connection ended.
    async fn wait(&mut self, inbox: &mut impl Inbox) -> bool {
        let notified = async {
            match &self.receives {
                Some(d) if self.missing_delivered.is_none() => d.done_notify.notified().await,
                _ => std::future::pending().await,
            }
        };
        let filled = tokio::select! {
            _ = self.ctx.cancel.cancelled() => return false,
            _ = notified => return true,
            r = inbox.fill() => r,
        };
        if matches!(filled, Ok(true)) {
            return true;
        }
        self.res.disconnected = true;
        if let Some(d) = &self.sends {
            d.sender_lost.store(true, Ordering::Relaxed);
        }
        if let Some(d) = &self.receives {
            d.recipient_lost.store(true, Ordering::Relaxed);
        }
        false
    }

    /// Reads on for --linger-ms after everything expected arrived: a late
    /// duplicate outcome or message is then counted, not missed. The end
    /// of input just stops it (nothing more was expected).
    async fn linger(&mut self, inbox: &mut impl Inbox) {
        let until = tokio::time::Instant::now() + self.ctx.linger;
        loop {
            let filled = tokio::select! {
                _ = self.ctx.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(until) => return,
                r = inbox.fill() => r,
            };
            if !matches!(filled, Ok(true)) {
                return;
            }
            self.read_buffered(inbox);
        }
    }

    fn finish(self) -> ReaderResult {
        if let Some(d) = &self.sends {
            d.outcomes_done.store(true, Ordering::Release);
            d.done_notify.notify_one();
        }
        // No more credit will come: a writer still waiting for some stops.
        if let Some(w) = &self.window {
            w.close();
        }
        let mut res = self.res;
        res.receiver = self
            .rx
            .map(|r| (self.receives.as_ref().map_or(0, |d| d.id), r));
        res
    }
}
