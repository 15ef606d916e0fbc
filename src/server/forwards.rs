//! Chats forwarded to other servers: the live links they leave by (to the
//! relays, or in mesh mode to the peer servers), and the ones still
//! awaiting their outcome.
//!
//! Exactly one outcome per chat: whoever removes the entry first (the
//! relay's answer, the timeout sweep, or the last link going down) answers
//! the sender; later answers for the same id find nothing and are ignored.
//!
//! Order per pair (sender, recipient), also across changes of the relay
//! set (`order`): a chat leaves by the link its pair's chats in flight
//! left by, even a draining one; only a pair with nothing in flight takes
//! the relay picked by hashing its recipient over the live links that are
//! warm (up long enough for every server to have linked to its relay:
//! before, it would send chats back for want of a link, and a later chat
//! of the pair could overtake them) and not draining, falling back to the
//! cold ones, then the draining ones, if there is no other. When a link
//! goes down, its chats still awaiting an outcome are sent once more,
//! oldest first, through another live relay (marked `resent`: the
//! destination drops a copy it already has and answers the first one's
//! outcome), and their pairs' later chats follow them there; only when no
//! relay is live do they get `unavailable`. For that, each entry keeps a
//! copy of its message, within a byte budget (beyond it, a chat whose
//! relay dies gets `unavailable`). A link that refuses a chat because it
//! is closing is failed over first, so the chat goes behind the ones
//! stranded on it; a chat refused by a full queue goes by another link
//! only if its pair has nothing in flight (else it gets `unavailable`: it
//! would overtake them).
//!
//! In mesh mode a chat leaves by the link to its recipient's server (the
//! caller names it), and there is no other way there: when that link goes
//! down, its chats get `unavailable`; when a newer link to that server
//! replaces it, they go out once more on the new one before anything
//! else. An outcome counts only when it comes back by the link its chat
//! left by, so a link cannot answer for chats it never carried.

use foldhash::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::control::{Control, ControlTx};
use super::mailbox::Mailbox;
use super::order::{self, Order, Pair};
use super::outbox::outcome_line;
use crate::link::{LinkSender, Refused};
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::presence::LinkInfo;
use crate::protocol::reply::Ref;
use crate::shutdown::CancellationToken;
use crate::sync::Mutex;

const EXPIRY_SWEEP: Duration = Duration::from_millis(250);

/// Who awaits a forwarded message's outcome.
pub enum Waiter {
    /// A client's chat: the outcome becomes its `ack` or `error` line.
    Client {
        control: ControlTx,
        reference: Ref,
        /// The sender's in-flight slot, freed with the entry and once the
        /// envelope has left the link's queue.
        slot: Arc<OwnedSemaphorePermit>,
    },
    /// An operator's message (Admin API).
    Operator(oneshot::Sender<Status>),
}

impl Waiter {
    fn slot(&self) -> Option<Arc<OwnedSemaphorePermit>> {
        match self {
            Waiter::Client { slot, .. } => Some(slot.clone()),
            Waiter::Operator(_) => None,
        }
    }
}

pub use super::order::LinkKey;

struct Entry {
    waiter: Waiter,
    /// Its place among the chats sent: those stranded on a dead link go
    /// out again in this order.
    seq: u64,
    /// Its (sender, recipient) pair, whose order it keeps.
    pair: Pair,
    started: Instant,
    deadline: Instant,
    /// The link it left by.
    via: LinkKey,
    /// Kept to send it again if that link dies (once, within the budget).
    copy: Option<pb::ChatMessage>,
    /// Sent back once already by a relay without a link to its recipient.
    redirected: bool,
    /// Mesh mode: the server it was sent to.
    dest: Option<String>,
    /// Mesh mode: answered NOT_HERE once already and sent again; a second
    /// NOT_HERE ends it as `offline` instead of looping.
    rerouted: bool,
}

struct Live {
    key: LinkKey,
    /// The relay's id, or (mesh mode) the peer server's.
    far_end: String,
    sender: LinkSender,
    draining: bool,
    since_ms: i64,
    /// When it came up: it takes new pairs once it is warm.
    up: Instant,
    sent: IntCounter,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Entry>,
    /// Sorted by far end, so every server hashes to the same relay.
    links: Vec<Live>,
    next_key: LinkKey,
    next_seq: u64,
    /// Bytes of the copies kept for re-sending.
    copies: usize,
    /// Per pair with chats pending: the link they follow.
    order: Order,
    /// How long a new link is up before it takes new pairs
    /// (`Forwards::new`).
    warmup: Duration,
}

/// The chats in flight on a link that went down: how many went out
/// again, and those to answer `unavailable`.
#[derive(Default)]
struct Stranded {
    resent: usize,
    failed: Vec<(String, Entry)>,
}

/// What a link going down did to the chats in flight on it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    pub resent: usize,
    pub unavailable: usize,
}

pub struct Forwards {
    /// This server's id: the origin of its forwards.
    origin: String,
    timeout: Duration,
    /// Bytes of message copies kept for re-sending.
    copy_budget: usize,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// The offline mailbox: a chat whose outcome says offline is stored.
    mailbox: Option<Arc<Mailbox>>,
}

fn copy_size(m: &pb::ChatMessage) -> usize {
    m.id.len() + m.from.len() + m.to.len() + m.content.len()
}

impl State {
    /// The link for a chat of `pair` to `to`: in mesh mode the link to
    /// `dest`; else the one the pair's chats in flight left by, if it is
    /// up (draining or not); else one picked by hashing `to` over the
    /// live links that are warm and not draining, or if there is none
    /// over those not draining, or else over all.
    fn pick(
        &self,
        to: &str,
        pair: Pair,
        dest: Option<&str>,
        except: Option<LinkKey>,
    ) -> Option<usize> {
        if let Some(dest) = dest {
            return (0..self.links.len())
                .find(|&i| self.links[i].far_end == dest && Some(self.links[i].key) != except);
        }
        let followed = self.order.via(pair).filter(|&k| Some(k) != except);
        if let Some(i) = followed.and_then(|k| self.links.iter().position(|l| l.key == k)) {
            return Some(i);
        }
        let warm = |l: &Live| l.up.elapsed() >= self.warmup;
        let tiers: [&dyn Fn(&Live) -> bool; 3] =
            [&|l| !l.draining && warm(l), &|l| !l.draining, &|_| true];
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(to);
        tiers.into_iter().find_map(|tier| {
            let candidates = || {
                (0..self.links.len())
                    .filter(|&i| Some(self.links[i].key) != except && tier(&self.links[i]))
            };
            let n = candidates().count();
            (n > 0).then(|| candidates().nth(hash as usize % n))?
        })
    }

    /// Sends on link `i`; a refusal (closing, or its queue full) hands
    /// the forward back.
    #[allow(
        clippy::result_large_err,
        reason = "handing it back saves a copy per message"
    )]
    fn send(
        &self,
        i: usize,
        forward: pb::Forward,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Result<(), (Refused, pb::Forward)> {
        let live = &self.links[i];
        live.sender.try_forward(forward, slot)?;
        live.sent.inc();
        Ok(())
    }

    /// Records `entry` as pending (it left by `entry.via`).
    fn admit(&mut self, id: String, mut entry: Entry) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if let Some(copy) = &entry.copy {
            self.copies += copy_size(copy);
        }
        self.order.sent(entry.pair, entry.via);
        if let Some(old) = self.pending.insert(id, entry) {
            // Ids are unique: cannot happen, but never leak budget.
            self.uncount(&old);
            self.order.settled(old.pair);
        }
    }

    /// Takes answered chat `id` out of the pending ones.
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.detach(id)?;
        self.order.settled(entry.pair);
        Some(entry)
    }

    /// Takes chat `id`, timed out, out of the pending ones; it may still
    /// arrive, and its pair's next chat must not overtake it.
    fn remove_timed_out(&mut self, id: &str) -> Option<Entry> {
        let entry = self.detach(id)?;
        self.order.timed_out(entry.pair);
        Some(entry)
    }

    /// Takes `id` out of the pending chats; its copy stays with it, off
    /// the budget (the mailbox may still store it).
    fn detach(&mut self, id: &str) -> Option<Entry> {
        let entry = self.pending.remove(id)?;
        self.uncount(&entry);
        Some(entry)
    }

    /// Pending chat `id` left again, by `via`: its pair's later chats
    /// follow it.
    fn moved(&mut self, id: &str, via: LinkKey) {
        if let Some(e) = self.pending.get_mut(id) {
            e.via = via;
            let pair = e.pair;
            self.order.moved(pair, via);
        }
    }

    /// Takes the entry's copy off the budget, leaving it in the entry
    /// (the mailbox may still store it).
    fn uncount(&mut self, entry: &Entry) {
        if let Some(copy) = &entry.copy {
            self.copies -= copy_size(copy);
        }
    }
}

impl Forwards {
    /// `warmup`: how long a new relay link is up before it takes pairs
    /// with nothing in flight (while another link is warm). The other
    /// servers link to a relay that has just started within about that
    /// long; before, it would send their chats back (`redirect`), and a
    /// later chat of the same pair could overtake the one sent back.
    pub fn new(
        origin: String,
        timeout: Duration,
        copy_budget: usize,
        warmup: Duration,
        metrics: Arc<Metrics>,
        mailbox: Option<Arc<Mailbox>>,
    ) -> Self {
        let state = State {
            warmup,
            ..State::default()
        };
        Self {
            origin,
            timeout,
            copy_budget,
            state: Mutex::new(state),
            metrics,
            mailbox,
        }
    }

    /// Hands a message to a relay, or in mesh mode to the link to `dest`,
    /// its recipient's server; `waiter` receives its outcome (or
    /// `unavailable` at once if no such link is up, or its queue is full).
    pub fn forward(&self, message: pb::ChatMessage, waiter: Waiter, dest: Option<&str>) {
        let id = message.id.clone();
        let slot = waiter.slot();
        let pair = order::pair(&message.from, &message.to);
        let mut state = self.state.lock();
        let copy =
            (state.copies + copy_size(&message) <= self.copy_budget).then(|| message.clone());
        let mut entry = new_entry(waiter, pair, copy, self.timeout);
        entry.dest = dest.map(str::to_owned);
        let forward = pb::Forward {
            message: Some(message),
            origin_server: self.origin.clone(),
            rerouted: false,
            resent: false,
        };
        // Sent under the lock (it never blocks): a link going down cannot
        // slip between choosing it and recording the chat as in flight on
        // it, nor a chat of the same pair between the two.
        let mut failed = Vec::new();
        let sent = self.send_new(&mut state, forward, pair, dest, slot, &mut failed);
        match sent {
            Some(via) => {
                entry.via = via;
                state.admit(id, entry);
                drop(state);
            }
            None => {
                drop(state);
                self.answer(&id, entry, Status::Unavailable);
            }
        }
        self.answer_all(failed, Status::Unavailable);
    }

    /// Sends a new chat of `pair` behind the pair's chats in flight: the
    /// key of the link it left by, or None. A link that refuses it gets
    /// one alternative: if it is closing, after its stranded chats were
    /// failed over (the chats that failover could not send are added to
    /// `failed`); if its queue is full, only when the pair has nothing in
    /// flight (there, or anywhere).
    fn send_new(
        &self,
        state: &mut State,
        forward: pb::Forward,
        pair: Pair,
        dest: Option<&str>,
        slot: Option<Arc<OwnedSemaphorePermit>>,
        failed: &mut Vec<(String, Entry)>,
    ) -> Option<LinkKey> {
        let i = state.pick(forward_to(&forward), pair, dest, None)?;
        let key = state.links[i].key;
        let (back, except) = match state.send(i, forward, slot.clone()) {
            Ok(()) => return Some(key),
            Err((Refused::Full, _)) if state.order.via(pair).is_some() => return None,
            Err((Refused::Full, back)) => (back, Some(key)),
            Err((Refused::Closed, back)) => {
                failed.append(&mut self.fail_over(state, key).failed);
                (back, None)
            }
        };
        let j = state.pick(forward_to(&back), pair, dest, except)?;
        state.send(j, back, slot).ok()?;
        Some(state.links[j].key)
    }

    /// Answers the sender of `id`, if it still waits.
    pub fn resolve(&self, id: &str, status: Status) {
        if let Some(entry) = self.take_if(id, |_| true) {
            self.answer(id, entry, status);
        }
    }

    /// The outcome of `id` came back by link `from`: answers its sender if
    /// it still waits and left by that link (else the outcome is stray or
    /// forged, and ignored).
    pub fn resolve_from(&self, id: &str, status: Status, from: LinkKey) {
        if let Some(entry) = self.take_if(id, |e| e.via == from) {
            self.answer(id, entry, status);
        }
    }

    /// Removes the entry of `id` if `test` holds for it.
    fn take_if(&self, id: &str, test: impl FnOnce(&Entry) -> bool) -> Option<Entry> {
        let mut state = self.state.lock();
        if !state.pending.get(id).is_some_and(test) {
            return None;
        }
        // Its copy stays with it: the mailbox may store it (`answer`).
        state.remove(id)
    }

    /// Mesh mode: the server at the end of link `from` answered NOT_HERE
    /// for `id`. Returns the server that said so if the chat should be
    /// routed once more (the caller looks its recipient up again and
    /// calls `reroute`); None if it was answered here (`offline` after a
    /// second NOT_HERE) or is not in flight on that link.
    pub fn not_here(&self, id: &str, from: LinkKey) -> Option<String> {
        let mut state = self.state.lock();
        let entry = state.pending.get_mut(id).filter(|e| e.via == from)?;
        if std::mem::replace(&mut entry.rerouted, true) {
            drop(state);
            self.resolve(id, Status::Offline);
            return None;
        }
        Some(entry.dest.clone().unwrap_or_default())
    }

    /// Mesh mode: sends `forward` (answered NOT_HERE once) to `dest`, its
    /// recipient's server now; `unavailable` if there is no link to it.
    pub fn reroute(&self, id: &str, mut forward: pb::Forward, dest: &str) {
        forward.rerouted = true;
        let mut state = self.state.lock();
        let Some(entry) = state.pending.get(id) else {
            return; // answered meanwhile (timeout)
        };
        let (slot, pair) = (entry.waiter.slot(), entry.pair);
        let to = forward_to(&forward).to_owned();
        let sent = state
            .pick(&to, pair, Some(dest), None)
            .filter(|&i| state.send(i, forward, slot).is_ok())
            .map(|i| state.links[i].key);
        let Some(via) = sent else {
            drop(state);
            return self.resolve(id, Status::Unavailable);
        };
        state.moved(id, via);
        if let Some(e) = state.pending.get_mut(id) {
            e.dest = Some(dest.to_owned());
        }
    }

    /// Takes `id` out of the chats awaiting their outcome, for the caller
    /// to settle (mesh mode: its recipient moved to this very server).
    pub fn take(&self, id: &str) -> Option<Waiter> {
        self.take_if(id, |_| true).map(|e| e.waiter)
    }

    /// The relay of link `from` had no link to the recipient's server and
    /// sent `forward` back: it goes out through another live link, or
    /// gets `unavailable`.
    pub fn redirect(&self, id: &str, forward: pb::Forward, from: LinkKey) {
        let mut state = self.state.lock();
        let Some(entry) = state.pending.get_mut(id) else {
            return; // answered meanwhile (timeout)
        };
        if std::mem::replace(&mut entry.redirected, true) {
            // No relay tried twice has a link: give up rather than loop.
            drop(state);
            return self.resolve(id, Status::Unavailable);
        }
        let (slot, pair) = (entry.waiter.slot(), entry.pair);
        let to = forward_to(&forward).to_owned();
        let sent = state
            .pick(&to, pair, None, Some(from))
            .filter(|&i| state.send(i, forward, slot).is_ok())
            .map(|i| state.links[i].key);
        match sent {
            Some(via) => {
                state.moved(id, via);
                self.metrics.forwards_resent.inc();
            }
            None => {
                drop(state);
                self.resolve(id, Status::Unavailable);
            }
        }
    }

    /// A link to `far_end` (a relay, or a peer server) is up; returns its
    /// key, or None if that far end is linked already (the same relay
    /// reached by two addresses).
    pub fn link_up(&self, far_end: &str, sender: LinkSender) -> Option<LinkKey> {
        let mut state = self.state.lock();
        if state.links.iter().any(|l| l.far_end == far_end) {
            return None;
        }
        Some(self.add_link(&mut state, far_end, sender))
    }

    /// Mesh mode: a link to `far_end` is up, replacing an older one to the
    /// same far end, if any: the new key, and what became of the old
    /// one's chats in flight. They go out once more on the new link at
    /// once, before any new chat can take it.
    pub fn link_replacing(&self, far_end: &str, sender: LinkSender) -> (LinkKey, Option<Failover>) {
        let mut state = self.state.lock();
        let old = state
            .links
            .iter()
            .find(|l| l.far_end == far_end)
            .map(|l| l.key);
        let key = self.add_link(&mut state, far_end, sender);
        let Some(old) = old else {
            return (key, None);
        };
        let stranded = self.fail_over(&mut state, old);
        drop(state);
        (key, Some(self.answer_stranded(stranded)))
    }

    fn add_link(&self, state: &mut State, far_end: &str, sender: LinkSender) -> LinkKey {
        state.next_key += 1;
        let key = state.next_key;
        let live = Live {
            key,
            far_end: far_end.to_owned(),
            sender,
            draining: false,
            since_ms: crate::clock::now_ms(),
            up: Instant::now(),
            sent: self.metrics.link_forwards.with_label_values(&[far_end]),
        };
        let at = state.links.partition_point(|l| l.far_end < live.far_end);
        state.links.insert(at, live);
        self.metrics.relay_links.set(state.links.len() as i64);
        key
    }

    /// The relay of link `key` is shutting down: no new chats go to it.
    pub fn link_draining(&self, key: LinkKey) {
        let mut state = self.state.lock();
        if let Some(live) = state.links.iter_mut().find(|l| l.key == key) {
            live.draining = true;
        }
    }

    /// Link `key` is down: its chats still awaiting an outcome go out once
    /// more through another live link, or get `unavailable`.
    pub fn link_down(&self, key: LinkKey) -> Failover {
        let stranded = self.fail_over(&mut self.state.lock(), key);
        self.answer_stranded(stranded)
    }

    /// Answers `unavailable` to the chats a failover could not send again.
    fn answer_stranded(&self, stranded: Stranded) -> Failover {
        Failover {
            resent: stranded.resent,
            unavailable: self.answer_all(stranded.failed, Status::Unavailable),
        }
    }

    /// Takes link `key` out of the live ones and sends its chats in flight
    /// once more, oldest first, so that each pair's stranded chats keep
    /// their order and its later chats follow them; the chats it could not
    /// send are left for the caller to answer once the lock is released.
    fn fail_over(&self, state: &mut State, key: LinkKey) -> Stranded {
        state.links.retain(|l| l.key != key);
        self.metrics.relay_links.set(state.links.len() as i64);
        state.order.link_down(key);
        let mut ids: Vec<(u64, String)> = state
            .pending
            .iter()
            .filter(|(_, e)| e.via == key)
            .map(|(id, e)| (e.seq, id.clone()))
            .collect();
        ids.sort_unstable();
        let mut stranded = Stranded::default();
        for (_, id) in ids {
            if let Some(via) = self.resend(state, &id) {
                state.moved(&id, via);
                stranded.resent += 1;
            } else if let Some(entry) = state.remove(&id) {
                stranded.failed.push((id, entry));
            }
        }
        self.metrics.forwards_resent.inc_by(stranded.resent as u64);
        stranded
    }

    /// Sends the kept copy of `id` through another live link; the new
    /// link's key, or None if there is no copy or no link.
    fn resend(&self, state: &mut State, id: &str) -> Option<LinkKey> {
        let entry = state.pending.get_mut(id)?;
        let copy = entry.copy.take()?;
        state.copies -= copy_size(&copy);
        let entry = state.pending.get(id)?;
        let slot = entry.waiter.slot();
        let i = state.pick(&copy.to, entry.pair, entry.dest.as_deref(), Some(entry.via))?;
        let forward = pb::Forward {
            message: Some(copy),
            origin_server: self.origin.clone(),
            rerouted: false,
            resent: true,
        };
        state.send(i, forward, slot).ok()?;
        Some(state.links[i].key)
    }

    /// The links as published with the heartbeat.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.state
            .lock()
            .links
            .iter()
            .map(|l| LinkInfo {
                relay: l.far_end.clone(),
                since_ms: l.since_ms,
                draining: l.draining,
            })
            .collect()
    }

    /// Since when the oldest live link is up, if any is.
    pub fn linked_since_ms(&self) -> Option<i64> {
        self.state.lock().links.iter().map(|l| l.since_ms).min()
    }

    /// Answers `unavailable` to chats past their deadline; returns how many.
    fn expire(&self, now: Instant) -> usize {
        let expired: Vec<(String, Entry)> = {
            let mut state = self.state.lock();
            let ids: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let mut expired = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(mut entry) = state.remove_timed_out(&id) {
                    entry.copy = None;
                    expired.push((id, entry));
                }
            }
            expired
        };
        self.answer_all(expired, Status::Unavailable)
    }

    fn answer_all(&self, entries: Vec<(String, Entry)>, status: Status) -> usize {
        let n = entries.len();
        for (id, entry) in entries {
            self.answer(&id, entry, status);
        }
        n
    }

    /// Answers the waiter; with a mailbox, a chat found offline is stored
    /// first (from the entry's copy; beyond the copy budget it has none,
    /// and is answered offline).
    fn answer(&self, id: &str, mut entry: Entry, status: Status) {
        let offline = matches!(status, Status::Offline | Status::NotHere);
        let copy = entry.copy.take().filter(|_| offline);
        match (&self.mailbox, copy) {
            (Some(mailbox), Some(message)) => {
                let (metrics, id) = (self.metrics.clone(), id.to_owned());
                mailbox.store(&message, move |status| tell(&metrics, &id, entry, status));
            }
            _ => tell(&self.metrics, id, entry, status),
        }
    }
}

/// Tells the waiter of `id` its outcome.
fn tell(metrics: &Metrics, id: &str, entry: Entry, status: Status) {
    metrics.outcome(status);
    metrics
        .forward_latency
        .observe(entry.started.elapsed().as_secs_f64());
    // The sender may have gone meanwhile: nobody left to tell.
    match entry.waiter {
        Waiter::Client {
            control, reference, ..
        } => {
            let _ = control.send(Control::Outcome(outcome_line(id, &reference, status)));
        }
        Waiter::Operator(tx) => {
            let _ = tx.send(status);
        }
    }
}

fn forward_to(forward: &pb::Forward) -> &str {
    forward.message.as_ref().map_or("", |m| m.to.as_str())
}

/// A chat's entry, not yet sent (`via` and `seq` are set as it is).
fn new_entry(
    waiter: Waiter,
    pair: Pair,
    copy: Option<pb::ChatMessage>,
    timeout: Duration,
) -> Entry {
    let now = Instant::now();
    Entry {
        waiter,
        seq: 0,
        pair,
        started: now,
        deadline: now + timeout,
        via: 0,
        copy,
        redirected: false,
        dest: None,
        rerouted: false,
    }
}

/// Answers `unavailable` to forwards past their timeout, until `shutdown`.
pub async fn expire_loop(forwards: Arc<Forwards>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = forwards.expire(Instant::now());
        if expired > 0 {
            tracing::warn!(server = %forwards.origin, expired, "forwards timed out: answered unavailable");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::{FutureExt, Stream, StreamExt};

    use super::*;
    use crate::pb::envelope;

    fn message(id: &str) -> pb::ChatMessage {
        pb::ChatMessage {
            id: id.into(),
            to: "bob".into(),
            ..Default::default()
        }
    }

    fn operator() -> (Waiter, oneshot::Receiver<Status>) {
        let (tx, rx) = oneshot::channel();
        (Waiter::Operator(tx), rx)
    }

    fn forwards() -> Forwards {
        forwards_warm_after(Duration::ZERO)
    }

    fn forwards_warm_after(warmup: Duration) -> Forwards {
        let timeout = Duration::from_secs(5);
        Forwards::new("a".into(), timeout, 1 << 20, warmup, Metrics::new(), None)
    }

    /// Server a's forwards with peer links to b and c (their queues kept
    /// open).
    fn linked_to_b_and_c() -> (Forwards, [LinkKey; 2], Vec<crate::link::LinkReceiver>) {
        let f = forwards();
        let mut queues = Vec::new();
        let mut keys = [0; 2];
        for (i, peer) in ["b", "c"].into_iter().enumerate() {
            let (tx, rx) = crate::link::queue(1 << 20);
            keys[i] = f.link_up(peer, tx).unwrap();
            queues.push(rx);
        }
        (f, keys, queues)
    }

    #[test]
    fn a_mesh_outcome_counts_only_on_the_link_its_chat_left_by() {
        let (f, [b, c], _queues) = linked_to_b_and_c();
        let (waiter, mut rx) = operator();
        f.forward(message("a.i.1"), waiter, Some("b"));
        f.resolve_from("a.i.1", Status::Delivered, c);
        assert!(rx.try_recv().is_err(), "c never carried it");
        f.resolve_from("a.i.1", Status::Delivered, b);
        assert_eq!(rx.try_recv(), Ok(Status::Delivered));
    }

    #[test]
    fn a_second_not_here_is_offline() {
        let (f, [b, c], _queues) = linked_to_b_and_c();
        let (waiter, mut rx) = operator();
        f.forward(message("a.i.2"), waiter, Some("b"));
        assert_eq!(f.not_here("a.i.2", b).as_deref(), Some("b"));
        let forward = pb::Forward {
            message: Some(message("a.i.2")),
            ..Default::default()
        };
        f.reroute("a.i.2", forward, "c");
        assert_eq!(f.not_here("a.i.2", c), None);
        assert_eq!(rx.try_recv(), Ok(Status::Offline));
    }

    #[test]
    fn a_replaced_peer_link_hands_its_chats_to_the_new_one() {
        let f = forwards();
        let (old, _rx_old) = crate::link::queue(1 << 20);
        let old_key = f.link_up("b", old).unwrap();
        let (waiter, mut rx) = operator();
        f.forward(message("a.i.3"), waiter, Some("b"));
        let (new, rx_new) = crate::link::queue(1 << 20);
        let (new_key, replaced) = f.link_replacing("b", new);
        assert_eq!(
            replaced,
            Some(Failover {
                resent: 1,
                unavailable: 0
            })
        );
        // Before anything else can take the new link.
        let mut new_link = Link::new(new_key, rx_new);
        f.forward(message("a.i.4"), operator().0, Some("b"));
        assert_eq!(new_link.queued(), ["a.i.3", "a.i.4"]);
        assert_eq!(f.link_down(old_key), Failover::default(), "handed over");
        f.resolve_from("a.i.3", Status::Delivered, new_key);
        assert_eq!(rx.try_recv(), Ok(Status::Delivered));
    }

    /// One relay link as the tests see it: its key, and what was queued
    /// on it.
    struct Link {
        key: LinkKey,
        queue: Pin<Box<dyn Stream<Item = pb::Batch> + Send>>,
    }

    impl Link {
        fn new(key: LinkKey, rx: crate::link::LinkReceiver) -> Self {
            let queue = Box::pin(crate::link::batches(rx));
            Self { key, queue }
        }

        /// The ids of the chats queued since the last look, in order.
        fn queued(&mut self) -> Vec<String> {
            let mut ids = Vec::new();
            while let Some(Some(batch)) = self.queue.next().now_or_never() {
                for envelope in batch.envelopes {
                    if let Some(envelope::Kind::Forward(f)) = envelope.kind {
                        ids.push(f.message.unwrap_or_default().id);
                    }
                }
            }
            ids
        }
    }

    /// Links up to the relays `names`, each queue holding `budget` bytes.
    fn link_relays(f: &Forwards, names: &[&str], budget: usize) -> Vec<Link> {
        let up = |name: &&str| {
            let (tx, rx) = crate::link::queue(budget);
            Link::new(f.link_up(name, tx).unwrap(), rx)
        };
        names.iter().map(up).collect()
    }

    type Answer = oneshot::Receiver<Status>;

    /// Recipients enough that some hash to each of two or three relays.
    const RECIPIENTS: [&str; 8] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"];

    fn chat(n: usize, to: &str) -> pb::ChatMessage {
        pb::ChatMessage {
            id: format!("a.{to}.{n}"),
            from: "alice".into(),
            to: to.into(),
            ..Default::default()
        }
    }

    /// Sends chat `n` from alice to each recipient (relay mode).
    fn send_to_all(f: &Forwards, n: usize) -> Vec<Answer> {
        let send = |to: &&str| {
            let (waiter, rx) = operator();
            f.forward(chat(n, to), waiter, None);
            rx
        };
        RECIPIENTS.iter().map(send).collect()
    }

    /// For each link, the recipients whose chat `n` it carries.
    fn carried(links: &mut [Link], n: usize) -> Vec<Vec<String>> {
        let recipient = |id: String| {
            let rest = id.strip_prefix("a.").unwrap().to_owned();
            rest.strip_suffix(&format!(".{n}")).map(str::to_owned)
        };
        let by_link = links.iter_mut().map(|l| l.queued());
        by_link
            .map(|ids| ids.into_iter().filter_map(recipient).collect())
            .collect()
    }

    /// Relays r1 and r2 with chat 1 to every recipient in flight: the
    /// recipients whose chat 1 took r1 (some hash there), and the waiters.
    fn chat_one_on_two_relays() -> (Forwards, Vec<Link>, Vec<String>, Vec<Answer>) {
        let f = forwards();
        let mut links = link_relays(&f, &["r1", "r2"], 1 << 20);
        let first = send_to_all(&f, 1);
        let on_r1 = carried(&mut links, 1).swap_remove(0);
        assert!(!on_r1.is_empty(), "some hash to r1");
        (f, links, on_r1, first)
    }

    #[test]
    fn a_relay_that_joins_gets_no_chats_of_pairs_in_flight() {
        let f = forwards();
        let mut links = link_relays(&f, &["r1"], 1 << 20);
        let _first = send_to_all(&f, 1);
        links.extend(link_relays(&f, &["r2"], 1 << 20));
        let _second = send_to_all(&f, 2);
        let second = carried(&mut links, 2);
        assert_eq!(second[0].len(), RECIPIENTS.len(), "{second:?}");
        // Once they are settled, the new relay gets its share.
        for to in RECIPIENTS {
            for n in [1, 2] {
                f.resolve(&format!("a.{to}.{n}"), Status::Delivered);
            }
        }
        let _third = send_to_all(&f, 3);
        assert!(!carried(&mut links, 3)[1].is_empty(), "r2 carries some");
        assert_eq!(f.state.lock().order.len(), RECIPIENTS.len());
    }

    #[test]
    fn a_relay_that_has_just_come_up_takes_new_pairs_once_it_is_warm() {
        let warmup = Duration::from_secs(10);
        let f = forwards_warm_after(warmup);
        let mut links = link_relays(&f, &["r1", "r2"], 1 << 20);
        let _cold = send_to_all(&f, 1);
        assert!(
            !carried(&mut links, 1)[1].is_empty(),
            "none warm: all count"
        );
        for to in RECIPIENTS {
            f.resolve(&format!("a.{to}.1"), Status::Delivered);
        }
        let long_ago = Instant::now().checked_sub(warmup).unwrap();
        f.state.lock().links[0].up = long_ago;
        let _first_warm = send_to_all(&f, 2);
        let second = carried(&mut links, 2);
        assert_eq!(second[0].len(), RECIPIENTS.len(), "only r1 is warm");
    }

    #[test]
    fn a_draining_relay_still_gets_the_chats_of_pairs_in_flight_on_it() {
        let (f, mut links, on_r1, _first) = chat_one_on_two_relays();
        f.link_draining(links[0].key);
        let _second = send_to_all(&f, 2);
        assert_eq!(carried(&mut links, 2)[0], on_r1);
        for to in &on_r1 {
            f.resolve(&format!("a.{to}.1"), Status::Delivered);
            f.resolve(&format!("a.{to}.2"), Status::Delivered);
        }
        let _third = send_to_all(&f, 3);
        assert!(carried(&mut links, 3)[0].is_empty(), "settled: r1 drains");
    }

    #[test]
    fn a_chat_that_timed_out_on_a_live_link_is_not_overtaken() {
        let f = forwards();
        let mut links = link_relays(&f, &["r1"], 1 << 20);
        let _first = send_to_all(&f, 1);
        let expired = f.expire(Instant::now() + Duration::from_secs(6));
        assert_eq!(expired, RECIPIENTS.len(), "answered unavailable");
        // Still queued on r1, so they may arrive: r2 joins, chat 2 waits
        // its turn behind them.
        links.extend(link_relays(&f, &["r2"], 1 << 20));
        let _second = send_to_all(&f, 2);
        assert_eq!(carried(&mut links, 2)[0].len(), RECIPIENTS.len());
    }

    #[test]
    fn chats_stranded_on_a_dead_link_go_out_again_before_later_ones() {
        let f = forwards();
        let mut links = link_relays(&f, &["r1", "r2", "r3"], 1 << 20);
        let _first = send_to_all(&f, 1);
        carried(&mut links, 1);
        let dead = links.remove(0);
        let failover = f.link_down(dead.key);
        let _second = send_to_all(&f, 2);
        assert_eq!(failover.unavailable, 0);
        let mut resent = 0;
        for link in &mut links {
            let queued = link.queued();
            resent += queued.iter().filter(|id| id.ends_with(".1")).count();
            for to in RECIPIENTS {
                let (one, two) = (format!("a.{to}.1"), format!("a.{to}.2"));
                let at = |id: &str| queued.iter().position(|q| q == id);
                if let Some(one) = at(&one) {
                    assert!(at(&two).is_some_and(|two| two > one), "{queued:?}");
                }
            }
        }
        assert_eq!(resent, failover.resent);
    }

    #[test]
    fn a_chat_refused_by_a_closing_link_goes_behind_the_chats_stranded_there() {
        let (f, mut links, on_r1, _first) = chat_one_on_two_relays();
        // r1's stream ended; its link task has not noticed yet.
        let closed = links.remove(0);
        drop(closed.queue);
        let _second = send_to_all(&f, 2);
        let queued = links[0].queued();
        for to in on_r1 {
            let at = |n| queued.iter().position(|q| *q == format!("a.{to}.{n}"));
            assert!(at(1) < at(2) && at(1).is_some(), "{queued:?}");
        }
        assert_eq!(f.link_down(closed.key), Failover::default(), "done");
    }

    #[test]
    fn a_full_link_gets_no_chat_past_the_chats_of_its_pair() {
        let f = forwards();
        // Room for one chat each.
        let mut links = link_relays(&f, &["r1", "r2"], 40);
        let (waiter, _first) = operator();
        f.forward(chat(1, "bob"), waiter, None);
        let (waiter, mut second) = operator();
        f.forward(chat(2, "bob"), waiter, None);
        assert_eq!(second.try_recv(), Ok(Status::Unavailable));
        let queued: Vec<_> = links.iter_mut().flat_map(|l| l.queued()).collect();
        assert_eq!(queued, ["a.bob.1"]);
    }
}
