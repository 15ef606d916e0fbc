//! The order of forwarded chats per pair (sender, recipient): which link
//! the pair's chats in flight left by, so that its next chat follows them
//! instead of the relay the recipient's hash points at now. Owns only this
//! bookkeeping; it picks no link and sends nothing (`forwards` does, under
//! its lock, which also guards this).
//!
//! Why it is enough: a link keeps order end to end (its queue, its stream,
//! the relay's per-recipient routing, the destination's delivery), so the
//! chats of a pair that all take one link arrive in the order sent. A
//! change of the relay set moves the recipient's hash; without a record a
//! new chat could take another relay and overtake the ones still in
//! flight.
//!
//! Invariants, kept by `Forwards`:
//! - a pair has a record while it has chats awaiting their outcome;
//!   `in_flight` counts them;
//! - `via` is the link the pair's newest chat (sent or sent again) left
//!   by; a new chat of the pair goes the same way while that link is up,
//!   even when its relay drains (a draining relay still forwards what it
//!   gets until it closes);
//! - when that link goes down, the pair's stranded chats are sent again
//!   oldest first through one other link and `via` moves there, so every
//!   later chat queues behind them;
//! - a chat that timed out may still be on its way: if it was the pair's
//!   last in flight, the record stays (idle) until the pair's next chat
//!   is answered or the link goes down, so that chat cannot overtake it.
//!   Idle records are at most `MAX_IDLE` (beyond, they are dropped): the
//!   records are bounded by the pending chats plus that.
//!
//! Pairs are keyed by a 64-bit hash of (sender, recipient): two pairs
//! that collide share a record, which only keeps them on one link
//! together (it never reorders), and costs no allocation per chat.

use std::hash::BuildHasher;

use foldhash::HashMap;

/// One life of one link, as `Forwards` knows it.
pub type LinkKey = u64;

/// A (sender, recipient) pair, hashed.
pub type Pair = u64;

/// Most pairs kept on a link for a chat that timed out there alone.
const MAX_IDLE: usize = 100_000;

/// The pair of a chat from `from` to `to`.
pub fn pair(from: &str, to: &str) -> Pair {
    // Fixed seed is enough: a collision is harmless (see above).
    foldhash::fast::FixedState::default().hash_one((from, to))
}

struct Record {
    via: LinkKey,
    in_flight: usize,
}

/// The pairs with chats in flight (or idle after a timeout).
#[derive(Default)]
pub struct Order {
    pairs: HashMap<Pair, Record>,
    /// Records with nothing in flight, kept for a chat that timed out.
    idle: usize,
}

impl Order {
    /// The link `pair`'s next chat must follow, if any.
    pub fn via(&self, pair: Pair) -> Option<LinkKey> {
        self.pairs.get(&pair).map(|r| r.via)
    }

    /// A new chat of `pair` left by `via`.
    pub fn sent(&mut self, pair: Pair, via: LinkKey) {
        match self.pairs.get_mut(&pair) {
            Some(record) => {
                if record.in_flight == 0 {
                    self.idle -= 1;
                }
                record.via = via;
                record.in_flight += 1;
            }
            None => {
                self.pairs.insert(pair, Record { via, in_flight: 1 });
            }
        }
    }

    /// A chat of `pair` in flight was sent again by `via`: the pair's
    /// later chats follow it there.
    pub fn moved(&mut self, pair: Pair, via: LinkKey) {
        if let Some(record) = self.pairs.get_mut(&pair) {
            record.via = via;
        }
    }

    /// A chat of `pair` was answered (or its link is gone): nothing of it
    /// can be ahead of a later chat any more.
    pub fn settled(&mut self, pair: Pair) {
        if self.leave(pair) == Some(0) {
            self.pairs.remove(&pair);
        }
    }

    /// A chat of `pair` timed out: it may still be on its way, so the pair
    /// stays on its link (idle, if it was the last), within `MAX_IDLE`.
    pub fn timed_out(&mut self, pair: Pair) {
        if self.leave(pair) != Some(0) {
            return;
        }
        if self.idle < MAX_IDLE {
            self.idle += 1;
        } else {
            self.pairs.remove(&pair);
        }
    }

    /// One chat of `pair` left the pending ones: how many are left.
    fn leave(&mut self, pair: Pair) -> Option<usize> {
        let record = self.pairs.get_mut(&pair)?;
        record.in_flight = record.in_flight.checked_sub(1)?;
        Some(record.in_flight)
    }

    /// Link `key` is down: nothing more can arrive by it, so the pairs
    /// kept idle on it go.
    pub fn link_down(&mut self, key: LinkKey) {
        let before = self.pairs.len();
        self.pairs.retain(|_, r| r.via != key || r.in_flight > 0);
        self.idle -= before - self.pairs.len();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_recorded_while_it_has_chats_in_flight() {
        let mut order = Order::default();
        let p = pair("alice", "bob");
        order.sent(p, 1);
        order.sent(p, 1);
        order.settled(p);
        assert_eq!(order.via(p), Some(1), "one still in flight");
        order.settled(p);
        assert_eq!((order.via(p), order.len()), (None, 0));
    }

    #[test]
    fn a_pair_follows_its_newest_chat() {
        let mut order = Order::default();
        let p = pair("alice", "bob");
        order.sent(p, 1);
        order.moved(p, 2);
        assert_eq!(order.via(p), Some(2));
        order.sent(p, 2);
        order.settled(p);
        order.settled(p);
        assert_eq!(order.len(), 0);
        order.moved(p, 3);
        assert_eq!(order.len(), 0, "moving a pair with nothing in flight");
    }

    #[test]
    fn a_chat_that_timed_out_keeps_its_pair_on_its_link_until_it_is_passed() {
        let mut order = Order::default();
        let p = pair("alice", "bob");
        order.sent(p, 1);
        order.timed_out(p);
        assert_eq!(
            (order.via(p), order.idle),
            (Some(1), 1),
            "it may still arrive"
        );
        order.sent(p, 1);
        assert_eq!(order.idle, 0);
        order.settled(p);
        assert_eq!(order.len(), 0, "the next chat was answered behind it");
        order.sent(p, 1);
        order.timed_out(p);
        order.link_down(2);
        assert_eq!(order.via(p), Some(1), "another link");
        order.link_down(1);
        assert_eq!((order.len(), order.idle), (0, 0));
    }

    #[test]
    fn idle_pairs_are_bounded() {
        let mut order = Order::default();
        for i in 0..=MAX_IDLE {
            let p = i as Pair;
            order.sent(p, 1);
            order.timed_out(p);
        }
        assert_eq!((order.len(), order.idle), (MAX_IDLE, MAX_IDLE));
    }

    #[test]
    fn pairs_are_directed() {
        assert_ne!(pair("alice", "bob"), pair("bob", "alice"));
    }
}
