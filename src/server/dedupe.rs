//! The destination's memory of forwarded messages it already had, so that
//! a message sent again through another relay (its first relay failed) is
//! delivered once: a copy of a message still queued waits for the first
//! one's outcome, a copy of one already settled gets that outcome at once.
//!
//! Bounded: two generations of (message-id hash -> what happened), the
//! older dropped once the newer is `span` old or holds `cap` messages. A
//! copy that arrives after its first one left the window is delivered
//! again; with the defaults (the forward timeout, 100,000 messages) that
//! takes a copy later than the origin's own timeout, or a destination
//! receiving more than 100,000 forwarded messages in between.

use foldhash::{HashMap, HashMapExt};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::link::LinkSender;
use crate::pb::Status;
use crate::sync::Mutex;

/// Messages per generation.
pub const DEDUPE_CAP: usize = 100_000;

enum Seen {
    /// Queued here: the links that should also learn its outcome (those
    /// its copies came by).
    Pending(Vec<LinkSender>),
    /// Written or dropped here, with this outcome.
    Settled(Status),
}

/// What to do with a forwarded message that arrived.
pub enum Arrival {
    /// New here: deliver it.
    Fresh,
    /// A copy of one still queued here: its outcome goes to this link too.
    Waiting,
    /// A copy of one settled here: answer this.
    Settled(Status),
}

struct Window {
    current: HashMap<u64, Seen>,
    previous: HashMap<u64, Seen>,
    since: Instant,
}

pub struct Dedupe {
    window: Mutex<Window>,
    span: Duration,
    cap: usize,
    /// Ids are kept as 64-bit hashes: two ids colliding would make one a
    /// "copy" of the other, so the seed is random per process.
    hasher: foldhash::fast::RandomState,
}

impl Window {
    /// Starts a new generation in the older one's memory: a busy server
    /// fills one every second or so, and growing a fresh map each time
    /// showed in the profile.
    fn rotate(&mut self) {
        let mut older = std::mem::take(&mut self.previous);
        older.clear();
        self.previous = std::mem::replace(&mut self.current, older);
        self.since = Instant::now();
    }

    fn find(&mut self, k: u64) -> Option<&mut Seen> {
        match self.current.get_mut(&k) {
            Some(seen) => Some(seen),
            None => self.previous.get_mut(&k),
        }
    }
}

impl Dedupe {
    pub fn new(span: Duration, cap: usize) -> Self {
        Self {
            window: Mutex::new(Window {
                current: HashMap::new(),
                previous: HashMap::new(),
                since: Instant::now(),
            }),
            span,
            cap,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// A forward of message `id` arrived on `link`.
    pub fn arrive(&self, id: &str, link: &LinkSender) -> Arrival {
        let k = self.key(id);
        let mut w = self.window.lock();
        if w.current.len() >= self.cap || w.since.elapsed() >= self.span {
            w.rotate();
        }
        match w.find(k) {
            Some(Seen::Settled(status)) => Arrival::Settled(*status),
            Some(Seen::Pending(also)) => {
                also.push(link.clone());
                Arrival::Waiting
            }
            None => {
                w.current.insert(k, Seen::Pending(Vec::new()));
                Arrival::Fresh
            }
        }
    }

    /// The delivery of `id` was refused at once: nothing of it stays here,
    /// so a copy may try again.
    pub fn refused(&self, id: &str) {
        let k = self.key(id);
        let mut w = self.window.lock();
        if w.current.remove(&k).is_none() {
            w.previous.remove(&k);
        }
    }

    /// Message `id` was written or dropped here; returns the other links
    /// its outcome must go to.
    pub fn settle(&self, id: &str, status: Status) -> Vec<LinkSender> {
        let mut w = self.window.lock();
        match w.find(self.key(id)) {
            Some(seen) => match std::mem::replace(seen, Seen::Settled(status)) {
                Seen::Pending(also) => also,
                Seen::Settled(_) => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> LinkSender {
        crate::link::queue(1 << 20).0
    }

    #[test]
    fn a_copy_waits_for_the_first_or_gets_its_outcome() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(matches!(d.arrive("s.i.1", &link()), Arrival::Fresh));
        assert!(matches!(d.arrive("s.i.1", &link()), Arrival::Waiting));
        assert_eq!(
            d.settle("s.i.1", Status::Delivered).len(),
            1,
            "the copy's link learns it"
        );
        assert!(matches!(
            d.arrive("s.i.1", &link()),
            Arrival::Settled(Status::Delivered)
        ));
    }

    #[test]
    fn a_refused_delivery_leaves_no_trace() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(matches!(d.arrive("s.i.2", &link()), Arrival::Fresh));
        d.refused("s.i.2");
        assert!(matches!(d.arrive("s.i.2", &link()), Arrival::Fresh));
    }

    #[test]
    fn the_window_keeps_two_generations() {
        let d = Dedupe::new(Duration::from_secs(60), 2);
        for i in 0..4 {
            d.arrive(&format!("s.i.{i}"), &link());
        }
        // 0 and 1 filled the first generation, 2 and 3 the second.
        assert!(matches!(d.arrive("s.i.2", &link()), Arrival::Waiting));
        d.arrive("s.i.4", &link());
        assert!(
            matches!(d.arrive("s.i.0", &link()), Arrival::Fresh),
            "beyond two generations a message is forgotten"
        );
    }
}
