//! The offline mailbox as a message server uses it (`--mailbox`): storing
//! a message whose recipient is offline, and a login's drain.
//!
//! Who stores, so that each message is stored once: the server that
//! holds the message when its recipient turns out to be offline.
//! - The **origin** server, when its chat's outcome says offline (the
//!   relay's lookup found nobody, or re-routing found nobody): it still
//!   has a copy of the message (`forwards`). The relay stays
//!   mailbox-agnostic: it only passes `STORED` / `MAILBOX_FULL` back.
//! - The **destination** server, for messages still queued (or not
//!   entirely written) when the recipient's session ends: their senders
//!   get `stored` instead of `offline`.
//!
//! A login's drain (`Drain`, run by the connection task) takes the
//! mailbox in pages, writes each page before any live message, removes
//! it once written, and fetches the next, at most one page per
//! `PAGE_INTERVAL`: a user with a full mailbox costs a bounded rate of
//! Redis calls and writes. A message stored for a user who turns out to
//! be online (a login racing the store) is announced to the user's
//! server, whose session then drains again. This file never touches a
//! socket.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::outbox::Receipt;
use crate::mailbox::{MailboxStore, Message, Page, Result};
use crate::metrics::Metrics;
use crate::pb::{ChatMessage, Status};
use crate::presence::PresenceStore;

/// Messages per page of a drain.
pub const PAGE: usize = 100;
/// At most one page per this interval per login (≤ 10,000 messages/s).
pub const PAGE_INTERVAL: Duration = Duration::from_millis(10);
/// How long removing the last written page may take when a session ends.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Store workers: appends for one recipient go through one of them, in
/// order (outcomes come back in the order sent; concurrent appends could
/// overtake each other), while different recipients are stored in
/// parallel.
const SHARDS: usize = 16;
/// Bytes of messages waiting for their store at most (a slow or
/// unreachable Redis must not pile them up); beyond, `offline` at once.
const BACKLOG_BYTES: usize = 32 << 20;

/// An append and who waits for its outcome.
struct Job {
    mail: Message,
    done: Box<dyn FnOnce(Status) + Send>,
}

/// The mailbox of this server, and what it counts.
pub struct Mailbox {
    store: Arc<dyn MailboxStore>,
    metrics: Arc<Metrics>,
    shards: Vec<mpsc::UnboundedSender<Job>>,
    /// Bytes of the messages waiting in `shards`.
    backlog: Arc<AtomicUsize>,
}

/// What a store worker needs.
struct Appender {
    store: Arc<dyn MailboxStore>,
    presence: Arc<dyn PresenceStore>,
    metrics: Arc<Metrics>,
    backlog: Arc<AtomicUsize>,
}

fn mail_of(m: &ChatMessage) -> Message {
    Message {
        id: m.id.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        content: m.content.clone(),
        ts_ms: m.ts_ms,
    }
}

/// A `message` line as this server wrote it, read back to store it.
#[derive(Deserialize)]
struct MessageLine {
    id: String,
    from: String,
    to: String,
    content: String,
    ts: i64,
}

fn mail_of_line(line: &[u8]) -> Option<Message> {
    let m: MessageLine = serde_json::from_slice(line).ok()?;
    Some(Message {
        id: m.id,
        from: m.from,
        to: m.to,
        content: m.content,
        ts_ms: m.ts,
    })
}

const STORED: usize = 0;
const DRAINED: usize = 1;
const EXPIRED: usize = 2;
const REFUSED: usize = 3;

fn count(metrics: &Metrics, event: usize, n: u64) {
    metrics.mailbox[event].inc_by(n);
}

impl Appender {
    /// One append: the sender's outcome (`STORED`, `MAILBOX_FULL`, or
    /// `OFFLINE` if the store failed: the message is then kept nowhere,
    /// as without a mailbox).
    async fn append(&self, mail: &Message) -> Status {
        match self.store.append(mail).await {
            Ok(appended) => {
                count(&self.metrics, EXPIRED, appended.expired);
                if appended.stored {
                    count(&self.metrics, STORED, 1);
                    Status::Stored
                } else {
                    count(&self.metrics, REFUSED, 1);
                    Status::MailboxFull
                }
            }
            Err(e) => {
                tracing::warn!(user = %mail.to, id = %mail.id, error = %e, "mailbox store failed: the sender gets offline");
                Status::Offline
            }
        }
    }

    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let status = self.append(&job.mail).await;
            self.backlog
                .fetch_sub(job.mail.size() as usize, Ordering::Relaxed);
            (job.done)(status);
            if status == Status::Stored {
                tokio::spawn(announce(self.presence.clone(), job.mail.to));
            }
        }
    }
}

/// A message was stored for `name`: if `name` is online after all (its
/// login raced the store, or the store is of a session that a newer login
/// displaced), its session is told to drain its mailbox again. Without
/// this the message would wait for the next login. Best effort: a lookup
/// or notice that fails leaves it there.
async fn announce(presence: Arc<dyn PresenceStore>, name: String) {
    let notice = async {
        if let Some(entry) = presence.lookup(&name).await? {
            presence.mailbox_notice(&entry).await?;
        }
        Ok::<_, crate::presence::PresenceError>(())
    };
    if let Err(e) = notice.await {
        tracing::debug!(user = %name, error = %e, "new-mail notice not sent; the message waits for the next login");
    }
}

impl Mailbox {
    /// The mailbox on `store`, with its store workers (they end when the
    /// mailbox is dropped); `presence` finds recipients who are online
    /// after all.
    pub fn new(
        store: Arc<dyn MailboxStore>,
        presence: Arc<dyn PresenceStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let backlog = Arc::new(AtomicUsize::new(0));
        let shards = (0..SHARDS)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let appender = Appender {
                    store: store.clone(),
                    presence: presence.clone(),
                    metrics: metrics.clone(),
                    backlog: backlog.clone(),
                };
                tokio::spawn(appender.run(rx));
                tx
            })
            .collect();
        Self {
            store,
            metrics,
            shards,
            backlog,
        }
    }

    /// Stores `message` for its offline recipient, after the messages to
    /// the same recipient handed over before it; `done` gets the sender's
    /// outcome: `OFFLINE` at once if `BACKLOG_BYTES` of messages already
    /// wait for their store.
    pub fn store(&self, message: &ChatMessage, done: impl FnOnce(Status) + Send + 'static) {
        self.enqueue(mail_of(message), Box::new(done));
    }

    fn enqueue(&self, mail: Message, done: Box<dyn FnOnce(Status) + Send>) {
        let size = mail.size() as usize;
        if self.backlog.fetch_add(size, Ordering::Relaxed) + size > BACKLOG_BYTES {
            self.backlog.fetch_sub(size, Ordering::Relaxed);
            tracing::warn!(user = %mail.to, "mailbox store backlog full: the sender gets offline");
            return done(Status::Offline);
        }
        let shard = BuildHasherDefault::<DefaultHasher>::default().hash_one(&mail.to) as usize;
        let job = Job { mail, done };
        if let Err(mpsc::error::SendError(job)) = self.shards[shard % SHARDS].send(job) {
            self.backlog.fetch_sub(size, Ordering::Relaxed);
            (job.done)(Status::Offline);
        }
    }

    /// Messages of a session that ended before they were written, in the
    /// order they were queued: stored, and their senders told. Operator
    /// messages are not stored (their call is answered `offline`).
    pub fn store_unwritten(&self, unwritten: Vec<(Bytes, Receipt)>) {
        for (line, receipt) in unwritten {
            let mail = receipt.storable().then(|| mail_of_line(&line)).flatten();
            match mail {
                Some(mail) => {
                    let metrics = self.metrics.clone();
                    let done = move |status| receipt.settle(status, &metrics);
                    self.enqueue(mail, Box::new(done));
                }
                None => receipt.settle(Status::Offline, &self.metrics),
            }
        }
    }

    /// Counts a page a drain wrote.
    fn drained(&self, page: &Page) {
        count(&self.metrics, DRAINED, page.entries.len() as u64);
        count(&self.metrics, EXPIRED, page.expired);
    }
}

/// One login's drain of its mailbox: pages written in order, each removed
/// once written. Keys of a page move from `in_output` (in the write
/// buffer) to `written` (the write went through) to the next fetch, which
/// removes them.
pub struct Drain {
    mailbox: Arc<Mailbox>,
    name: String,
    in_output: Vec<String>,
    written: Vec<String>,
    fetch: Option<BoxFuture<'static, Result<Page>>>,
    last_fetch: Instant,
    /// New mail was announced while this drain ran: if it ends before
    /// seeing it (its last fetch ran first), it starts over.
    again: bool,
}

impl Drain {
    pub fn start(mailbox: Arc<Mailbox>, name: String) -> Self {
        let mut drain = Self {
            mailbox,
            name,
            in_output: Vec::new(),
            written: Vec::new(),
            fetch: None,
            last_fetch: Instant::now(),
            again: false,
        };
        drain.fetch = Some(drain.take(Vec::new(), PAGE, None));
        drain
    }

    /// `take` of the mailbox as a future that owns what it needs, after
    /// `not_before` (the drain's pace).
    fn take(
        &self,
        written: Vec<String>,
        count: usize,
        not_before: Option<Instant>,
    ) -> BoxFuture<'static, Result<Page>> {
        let (store, name) = (self.mailbox.store.clone(), self.name.clone());
        Box::pin(async move {
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            store.take(&name, &written, count).await
        })
    }

    /// New mail was announced (`Control::Mailbox`) during this drain.
    pub fn again(&mut self) {
        self.again = true;
    }

    /// Whether new mail was announced during this drain.
    pub fn wanted_again(&self) -> bool {
        self.again
    }

    /// The next page, once fetched; pending while none is being fetched
    /// (the last page is still being written).
    pub async fn page(&mut self) -> Result<Page> {
        match self.fetch.as_mut() {
            Some(fetch) => {
                let page = fetch.await;
                self.fetch = None;
                if page.is_ok() {
                    // That fetch removed them.
                    self.written.clear();
                }
                page
            }
            None => std::future::pending().await,
        }
    }

    /// A fetched page: its `message` lines, to write before anything
    /// else. Empty when the mailbox is drained.
    pub fn lines(&mut self, page: Page) -> Vec<Bytes> {
        self.mailbox.drained(&page);
        page.entries
            .into_iter()
            .map(|e| {
                self.in_output.push(e.key);
                super::delivery::stored_line(&e.message)
            })
            .collect()
    }

    /// Everything buffered was written: the page's entries go with the
    /// next fetch, one page interval after the last.
    pub fn flushed(&mut self) {
        if self.in_output.is_empty() || self.fetch.is_some() {
            return;
        }
        self.written = std::mem::take(&mut self.in_output);
        self.last_fetch += PAGE_INTERVAL;
        let at = self.last_fetch.max(Instant::now());
        self.last_fetch = at;
        self.fetch = Some(self.take(self.written.clone(), PAGE, Some(at)));
    }

    /// The session ends: entries written are removed (if a fetch is under
    /// way, it removes them); those only buffered stay for the next login.
    pub async fn finish(mut self) {
        let done = match self.fetch.take() {
            Some(fetch) => fetch,
            None if !self.written.is_empty() => {
                let written = std::mem::take(&mut self.written);
                self.take(written, 0, None)
            }
            None => return,
        };
        match tokio::time::timeout(FINISH_TIMEOUT, done).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(user = %self.name, error = %e, "removing drained mailbox messages failed: they come again at the next login");
            }
            Err(_) => {
                tracing::warn!(user = %self.name, "removing drained mailbox messages timed out: they may come again at the next login");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_line_reads_back() {
        let m = ChatMessage {
            id: "s.1.1".into(),
            from: "alice".into(),
            to: "carol".into(),
            content: "q\"uo\\te ✓".into(),
            ts_ms: 7,
        };
        let line = super::super::delivery::message_line(&m);
        assert_eq!(mail_of_line(&line), Some(mail_of(&m)));
        assert_eq!(mail_of_line(b"{\"event\":\"pong\"}\n"), None);
    }
}
