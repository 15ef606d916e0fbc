//! Chats forwarded to other servers: the live links they leave by (to the
//! relays, or in mesh mode to the peer servers), and the ones still
//! awaiting their outcome.
//!
//! Exactly one outcome per chat: whoever removes the entry first (the
//! relay's answer, the timeout sweep, or the last link going down) answers
//! the sender; later answers for the same id find nothing and are ignored.
//!
//! A chat leaves by one relay, picked by hashing its recipient, so chats
//! from one connection to one recipient keep their order while the set of
//! relays is stable. A relay that is draining gets no new chats (unless
//! it is the only one). When a link goes down, its chats still awaiting
//! an outcome are sent once more through another live relay (marked
//! `resent`: the destination drops a copy it already has and answers the
//! first one's outcome); only when no relay is live do they get
//! `unavailable`. For that, each entry keeps a copy of its message, within
//! a byte budget (beyond it, a chat whose relay dies gets `unavailable`).
//!
//! In mesh mode a chat leaves by the link to its recipient's server (the
//! caller names it), and there is no other way there: when that link goes
//! down, its chats get `unavailable`. An outcome counts only when it comes
//! back by the link its chat left by, so a link cannot answer for chats it
//! never carried.

use foldhash::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::control::{Control, ControlTx};
use super::mailbox::Mailbox;
use super::outbox::outcome_line;
use crate::link::LinkSender;
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

/// One life of one link, as `Forwards` knows it.
pub type LinkKey = u64;

struct Entry {
    waiter: Waiter,
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
    sent: IntCounter,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Entry>,
    /// Sorted by far end, so every server hashes to the same relay.
    links: Vec<Live>,
    next_key: LinkKey,
    /// Bytes of the copies kept for re-sending.
    copies: usize,
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
    /// The link for a chat to `to`: in mesh mode the link to `dest`;
    /// else a live link that is not draining, picked by hashing `to`; a
    /// draining one only if there is no other.
    fn pick(&self, to: &str, dest: Option<&str>, except: Option<LinkKey>) -> Option<usize> {
        if let Some(dest) = dest {
            return (0..self.links.len())
                .find(|&i| self.links[i].far_end == dest && Some(self.links[i].key) != except);
        }
        let usable = |l: &&Live| Some(l.key) != except;
        let ready: Vec<usize> = (0..self.links.len())
            .filter(|&i| usable(&&self.links[i]) && !self.links[i].draining)
            .collect();
        let candidates = if ready.is_empty() {
            (0..self.links.len())
                .filter(|&i| usable(&&self.links[i]))
                .collect()
        } else {
            ready
        };
        if candidates.is_empty() {
            return None;
        }
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(to);
        Some(candidates[hash as usize % candidates.len()])
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
    ) -> Result<(), pb::Forward> {
        let live = &self.links[i];
        live.sender.try_forward(forward, slot).map_err(|(_, f)| f)?;
        live.sent.inc();
        Ok(())
    }

    fn release(&mut self, entry: &mut Entry) {
        self.uncount(entry);
        entry.copy = None;
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
    pub fn new(
        origin: String,
        timeout: Duration,
        copy_budget: usize,
        metrics: Arc<Metrics>,
        mailbox: Option<Arc<Mailbox>>,
    ) -> Self {
        Self {
            origin,
            timeout,
            copy_budget,
            state: Mutex::default(),
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
        let dest = dest.map(str::to_owned);
        let mut state = self.state.lock();
        let Some(i) = state.pick(&message.to, dest.as_deref(), None) else {
            drop(state);
            return self.answer(
                &id,
                new_entry(waiter, 0, None, self.timeout),
                Status::Unavailable,
            );
        };
        let size = copy_size(&message);
        let copy = (state.copies + size <= self.copy_budget).then(|| message.clone());
        let forward = pb::Forward {
            message: Some(message),
            origin_server: self.origin.clone(),
            rerouted: false,
            resent: false,
        };
        // Sent under the lock (it never blocks): a link going down cannot
        // slip between choosing it and recording the chat as in flight on
        // it. A link that refuses (closing, or its queue full) gets one
        // alternative.
        let mut via = state.links[i].key;
        let sent = match state.send(i, forward, slot.clone()) {
            Ok(()) => true,
            Err(back) => match state.pick(&forward_to(&back), dest.as_deref(), Some(via)) {
                Some(j) => {
                    via = state.links[j].key;
                    state.send(j, back, slot).is_ok()
                }
                None => false,
            },
        };
        let mut entry = new_entry(waiter, via, copy, self.timeout);
        entry.dest = dest;
        if !sent {
            drop(state);
            return self.answer(&id, entry, Status::Unavailable);
        }
        if entry.copy.is_some() {
            state.copies += size;
        }
        if let Some(mut old) = state.pending.insert(id, entry) {
            // Ids are unique: cannot happen, but never leak budget.
            state.release(&mut old);
        }
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
        let entry = state.pending.remove(id)?;
        state.uncount(&entry);
        Some(entry)
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
        let slot = entry.waiter.slot();
        let to = forward_to(&forward);
        let sent = state
            .pick(&to, Some(dest), None)
            .filter(|&i| state.send(i, forward, slot).is_ok())
            .map(|i| state.links[i].key);
        let Some(via) = sent else {
            drop(state);
            return self.resolve(id, Status::Unavailable);
        };
        if let Some(e) = state.pending.get_mut(id) {
            e.via = via;
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
        let slot = entry.waiter.slot();
        let to = forward_to(&forward);
        let sent = state
            .pick(&to, None, Some(from))
            .filter(|&i| state.send(i, forward, slot).is_ok())
            .map(|i| state.links[i].key);
        match sent {
            Some(via) => {
                if let Some(e) = state.pending.get_mut(id) {
                    e.via = via;
                }
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
    /// same far end, if any: the new key, and the old one, whose chats in
    /// flight the caller hands over with `link_down` (they go out once
    /// more on the new link).
    pub fn link_replacing(&self, far_end: &str, sender: LinkSender) -> (LinkKey, Option<LinkKey>) {
        let mut state = self.state.lock();
        let old = state
            .links
            .iter()
            .position(|l| l.far_end == far_end)
            .map(|i| state.links.remove(i).key);
        (self.add_link(&mut state, far_end, sender), old)
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
        let mut failed = Vec::new();
        let mut result = Failover::default();
        {
            let mut state = self.state.lock();
            state.links.retain(|l| l.key != key);
            self.metrics.relay_links.set(state.links.len() as i64);
            // Oldest first: chats to one recipient keep their order.
            let mut stranded: Vec<(Instant, String)> = state
                .pending
                .iter()
                .filter(|(_, e)| e.via == key)
                .map(|(id, e)| (e.started, id.clone()))
                .collect();
            stranded.sort_unstable();
            let stranded = stranded.into_iter().map(|(_, id)| id);
            for id in stranded {
                if let Some(via) = self.resend(&mut state, &id) {
                    if let Some(e) = state.pending.get_mut(&id) {
                        e.via = via;
                    }
                    result.resent += 1;
                } else if let Some(mut entry) = state.pending.remove(&id) {
                    state.release(&mut entry);
                    failed.push((id, entry));
                }
            }
        }
        self.metrics.forwards_resent.inc_by(result.resent as u64);
        result.unavailable = self.answer_all(failed, Status::Unavailable);
        result
    }

    /// Sends the kept copy of `id` through another live link; the new
    /// link's key, or None if there is no copy or no link.
    fn resend(&self, state: &mut State, id: &str) -> Option<LinkKey> {
        let entry = state.pending.get_mut(id)?;
        let copy = entry.copy.take()?;
        state.copies -= copy_size(&copy);
        let entry = state.pending.get(id)?;
        let slot = entry.waiter.slot();
        let i = state.pick(&copy.to, entry.dest.as_deref(), Some(entry.via))?;
        let forward = pb::Forward {
            message: Some(copy),
            origin_server: self.origin.clone(),
            rerouted: false,
            resent: true,
        };
        state
            .send(i, forward, slot)
            .ok()
            .map(|()| state.links[i].key)
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
                if let Some(mut entry) = state.pending.remove(&id) {
                    state.release(&mut entry);
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

fn forward_to(forward: &pb::Forward) -> String {
    forward
        .message
        .as_ref()
        .map(|m| m.to.clone())
        .unwrap_or_default()
}

fn new_entry(
    waiter: Waiter,
    via: LinkKey,
    copy: Option<pb::ChatMessage>,
    timeout: Duration,
) -> Entry {
    let now = Instant::now();
    Entry {
        waiter,
        started: now,
        deadline: now + timeout,
        via,
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
    use super::*;

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
        Forwards::new(
            "a".into(),
            Duration::from_secs(5),
            1 << 20,
            Metrics::new(),
            None,
        )
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
        let (new, _rx_new) = crate::link::queue(1 << 20);
        let (new_key, replaced) = f.link_replacing("b", new);
        assert_eq!(replaced, Some(old_key));
        let failover = f.link_down(old_key);
        assert_eq!((failover.resent, failover.unavailable), (1, 0));
        f.resolve_from("a.i.3", Status::Delivered, new_key);
        assert_eq!(rx.try_recv(), Ok(Status::Delivered));
    }
}
