//! After a `pairs` run: sums what the readers saw, and joins each
//! direction's outcomes with its arrivals (`verify::Audit`), weighing the
//! fate of its connections when the run expects failures. Bookkeeping
//! over finished tasks only: must not touch a connection or print.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::plan::Dir;
use super::reader::{OddReplies, ReaderResult};
use crate::verify::{Audit, Fate, Receiver, outcome};

/// The readers' results, summed.
#[derive(Default)]
pub(super) struct Readers {
    pub(super) e2e: Vec<u64>,
    pub(super) ack: Vec<u64>,
    pub(super) odd: OddReplies,
    pub(super) disconnects: u64,
    /// When the last message arrived (ns), at least the run's start.
    pub(super) last_receive_ns: u64,
}

impl Readers {
    /// Sums `results`; hands back each direction's receiver, indexed by
    /// direction id (`dirs` of them). `start`: the run's start (ns).
    pub(super) fn sum(
        results: Vec<ReaderResult>,
        dirs: usize,
        start: u64,
    ) -> (Readers, Vec<Option<Receiver>>) {
        let mut receivers: Vec<Option<Receiver>> = (0..dirs).map(|_| None).collect();
        let mut sum = Readers {
            last_receive_ns: start,
            ..Readers::default()
        };
        for r in results {
            if let Some((id, rx)) = r.receiver {
                receivers[id] = Some(rx);
            }
            sum.e2e.extend(r.e2e);
            sum.ack.extend(r.ack);
            sum.odd.add(&r.odd);
            sum.disconnects += u64::from(r.disconnected);
            sum.last_receive_ns = sum.last_receive_ns.max(r.last_receive_ns);
        }
        (sum, receivers)
    }
}

/// Every direction's outcomes joined with its arrivals, summed.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) audit: Audit,
    pub(super) duplicated: u64,
    pub(super) out_of_order: u64,
    pub(super) corrupted: u64,
    pub(super) wrong_sender: u64,
    /// Unique arrivals.
    pub(super) received: u64,
    pub(super) senders_lost: u64,
    pub(super) recipients_lost: u64,
    /// Sent -> outcome (ns): the longest of all, of the `unavailable` ones.
    pub(super) outcome_max_ns: u64,
    pub(super) unavailable_max_ns: u64,
    /// (outcome code, receive time in ns) of every answered chat.
    pub(super) answered: Vec<(u8, u64)>,
}

impl Tally {
    /// `receivers` indexed by direction id, as `Readers::sum` returns them.
    pub(super) fn of(
        dirs: &[Arc<Dir>],
        mut receivers: Vec<Option<Receiver>>,
        expect_failures: bool,
    ) -> Tally {
        let mut tally = Tally::default();
        for dir in dirs {
            tally.add(dir, receivers[dir.id].take(), expect_failures);
        }
        tally
    }

    fn add(&mut self, dir: &Dir, rx: Option<Receiver>, expect_failures: bool) {
        let outcomes: Vec<u8> = dir
            .outcome
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        self.add_outcome_times(dir, &outcomes);
        let lost = Fate {
            sender_lost: dir.sender_lost.load(Ordering::Relaxed),
            recipient_lost: dir.recipient_lost.load(Ordering::Relaxed),
        };
        self.senders_lost += u64::from(lost.sender_lost);
        self.recipients_lost += u64::from(lost.recipient_lost);
        // Only a run that expects failures excuses anything by them.
        let fate = if expect_failures {
            lost
        } else {
            Fate::default()
        };
        let seen = rx.as_ref().map_or(&[][..], |r| &r.seen[..]);
        let dir_sent = dir.sent.load(Ordering::Relaxed);
        self.audit
            .add(&Audit::of_dir(&outcomes, seen, dir_sent, fate));
        if let Some(r) = rx {
            self.duplicated += r.duplicated;
            self.out_of_order += r.out_of_order;
            self.corrupted += r.corrupted;
            self.wrong_sender += r.wrong_sender;
            self.received += r.unique;
        }
    }

    fn add_outcome_times(&mut self, dir: &Dir, outcomes: &[u8]) {
        for (i, &o) in outcomes.iter().enumerate() {
            if o == outcome::NONE {
                continue;
            }
            let at = dir.outcome_at[i].load(Ordering::Relaxed);
            let latency = at.saturating_sub(dir.sent_at[i].load(Ordering::Relaxed));
            self.outcome_max_ns = self.outcome_max_ns.max(latency);
            if o == outcome::UNAVAILABLE {
                self.unavailable_max_ns = self.unavailable_max_ns.max(latency);
            }
            self.answered.push((o, at));
        }
    }
}
