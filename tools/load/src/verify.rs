//! Per-direction verification: what a recipient checks on each message
//! (intact, from the right sender, exactly once, in order) and the final
//! audit that joins the sender's outcomes with what arrived (lost =
//! `delivered` but never received; missing = no outcome at all).
//!
//! In runs that break servers or the relay on purpose (`--expect-failures`)
//! the audit also takes each direction's [`Fate`]: a chat left without an
//! outcome by a sender whose own connection died is `abandoned`, not
//! missing, and a `delivered` chat that never arrived is not lost if the
//! recipient's connection died (it was queued on a connection that went
//! away). Everything else stays a violation: a missing or duplicate outcome
//! on a connection that stayed up, a delivered chat that never reached a
//! recipient that stayed connected, a duplicate, reordered or corrupted
//! arrival.
//!
//! Pure bookkeeping: no I/O, no clock, no connections (the `pairs` mode
//! feeds it what arrived and what the senders were told).

use crate::content::{self, Stamp};

/// Outcome of one chat, as stored per sequence number.
pub mod outcome {
    pub const NONE: u8 = 0;
    pub const DELIVERED: u8 = 1;
    pub const OFFLINE: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;
    pub const RECIPIENT_BUSY: u8 = 4;
    pub const OTHER: u8 = 5;
    pub const COUNT: usize = 6;

    /// The stored code of an `ack` (status) or `error` (code) line.
    pub fn from_reply(event: &str, code: Option<&str>) -> u8 {
        match (event, code) {
            ("ack", _) => DELIVERED,
            (_, Some("offline")) => OFFLINE,
            (_, Some("unavailable")) => UNAVAILABLE,
            (_, Some("recipient_busy")) => RECIPIENT_BUSY,
            _ => OTHER,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First arrival of `seq`; `in_order` is false if a later seq came first.
    New {
        stamp: Stamp,
        in_order: bool,
    },
    Duplicate(u64),
    Corrupted,
    WrongSender,
}

/// What one recipient has seen of one sender.
#[derive(Debug)]
pub struct Receiver {
    pub pair: u32,
    pub from: String,
    pub messages: u64,
    pub size: usize,
    pub seen: Vec<bool>,
    highest: Option<u64>,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub corrupted: u64,
    pub wrong_sender: u64,
}

impl Receiver {
    pub fn new(pair: u32, from: String, messages: u64, size: usize) -> Self {
        Self {
            pair,
            from,
            messages,
            size,
            seen: vec![false; messages as usize],
            highest: None,
            unique: 0,
            duplicated: 0,
            out_of_order: 0,
            corrupted: 0,
            wrong_sender: 0,
        }
    }

    pub fn on_message(&mut self, from: &str, content: &[u8]) -> Verdict {
        if from != self.from {
            self.wrong_sender += 1;
            return Verdict::WrongSender;
        }
        let stamp = match content::verify(content, self.size) {
            Ok(s) if s.pair == self.pair && s.seq < self.messages => s,
            _ => {
                self.corrupted += 1;
                return Verdict::Corrupted;
            }
        };
        let seen = &mut self.seen[stamp.seq as usize];
        if *seen {
            self.duplicated += 1;
            return Verdict::Duplicate(stamp.seq);
        }
        *seen = true;
        self.unique += 1;
        let in_order = self.highest.is_none_or(|h| stamp.seq > h);
        if in_order {
            self.highest = Some(stamp.seq);
        } else {
            self.out_of_order += 1;
        }
        Verdict::New { stamp, in_order }
    }

    pub fn complete(&self) -> bool {
        self.unique == self.messages
    }
}

/// What happened to the two connections of one direction. Only runs that
/// expect failures pass anything but the default (both stayed up).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// The sender's connection died: it stopped sending, and its chats
    /// still without an outcome are abandoned, not missing.
    pub sender_lost: bool,
    /// The recipient's connection died: a `delivered` chat that never
    /// arrived was queued on a dead connection, not lost.
    pub recipient_lost: bool,
}

/// The join of one direction's outcomes and arrivals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// By outcome code (index = `outcome::*`; `NONE` = missing outcome).
    pub outcomes: [u64; outcome::COUNT],
    /// `delivered` but never arrived.
    pub lost: u64,
    /// Arrived although the outcome was not `delivered` (or missing).
    pub arrived_without_delivered: u64,
    /// Sent by a sender whose connection died, no outcome received.
    pub abandoned: u64,
    /// Never sent: the sender's connection died first.
    pub unsent: u64,
    /// `delivered` but never arrived, and the recipient's connection died.
    pub lost_with_recipient: u64,
}

impl Audit {
    /// A direction whose connections both stayed up.
    #[cfg(test)]
    pub fn of(outcomes: &[u8], seen: &[bool]) -> Self {
        Self::of_dir(outcomes, seen, outcomes.len() as u64, Fate::default())
    }

    /// A direction with `sent` chats written (seq `0..sent`) and the given
    /// fate of its connections.
    pub fn of_dir(outcomes: &[u8], seen: &[bool], sent: u64, fate: Fate) -> Self {
        let mut a = Audit::default();
        for (i, &o) in outcomes.iter().enumerate() {
            let arrived = seen.get(i).copied().unwrap_or(false);
            if o == outcome::NONE && fate.sender_lost {
                if (i as u64) < sent {
                    a.abandoned += 1;
                } else {
                    a.unsent += 1;
                }
            } else {
                a.outcomes[(o as usize).min(outcome::COUNT - 1)] += 1;
            }
            if o == outcome::DELIVERED && !arrived {
                if fate.recipient_lost {
                    a.lost_with_recipient += 1;
                } else {
                    a.lost += 1;
                }
            }
            if o != outcome::DELIVERED && arrived {
                a.arrived_without_delivered += 1;
            }
        }
        a
    }

    pub fn add(&mut self, other: &Audit) {
        for (a, b) in self.outcomes.iter_mut().zip(other.outcomes) {
            *a += b;
        }
        self.lost += other.lost;
        self.arrived_without_delivered += other.arrived_without_delivered;
        self.abandoned += other.abandoned;
        self.unsent += other.unsent;
        self.lost_with_recipient += other.lost_with_recipient;
    }

    pub fn missing_outcomes(&self) -> u64 {
        self.outcomes[outcome::NONE as usize]
    }
}

/// When outcomes other than `delivered` (failures) came back, and how
/// much was delivered before the first and after the last one: shows that
/// a failure happened mid-run and that traffic resumed after it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Receive time (ns) of the first and last failure outcome.
    pub first_failure_ns: Option<u64>,
    pub last_failure_ns: Option<u64>,
    /// `delivered` outcomes received before the first failure.
    pub delivered_before_first_failure: u64,
    /// `delivered` outcomes received after the last failure (all of them
    /// when there was no failure).
    pub delivered_after_last_failure: u64,
}

impl Timeline {
    /// From (outcome code, receive time in ns) of every answered chat.
    pub fn of(outcomes: impl Iterator<Item = (u8, u64)> + Clone) -> Self {
        let failures = outcomes
            .clone()
            .filter(|&(o, _)| o != outcome::NONE && o != outcome::DELIVERED)
            .map(|(_, at)| at);
        let first = failures.clone().min();
        let last = failures.max();
        let delivered = outcomes.filter(|&(o, _)| o == outcome::DELIVERED);
        Timeline {
            first_failure_ns: first,
            last_failure_ns: last,
            delivered_before_first_failure: delivered
                .clone()
                .filter(|&(_, at)| first.is_none_or(|f| at < f))
                .count() as u64,
            delivered_after_last_failure: delivered
                .filter(|&(_, at)| last.is_none_or(|l| at > l))
                .count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::outcome::*;
    use super::*;

    fn msg(pair: u32, seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        content::encode(
            &mut v,
            Stamp {
                pair,
                seq,
                sent_ns: 5,
            },
            64,
        );
        v
    }

    #[test]
    fn in_order_exactly_once_passes() {
        let mut r = Receiver::new(3, "x".into(), 4, 64);
        for seq in 0..4 {
            assert!(matches!(
                r.on_message("x", &msg(3, seq)),
                Verdict::New { in_order: true, .. }
            ));
        }
        assert!(r.complete());
        assert_eq!((r.duplicated, r.out_of_order, r.corrupted), (0, 0, 0));
    }

    #[test]
    fn detects_duplicate_reorder_corruption_and_strangers() {
        let mut r = Receiver::new(3, "x".into(), 10, 64);
        r.on_message("x", &msg(3, 0));
        assert_eq!(r.on_message("x", &msg(3, 0)), Verdict::Duplicate(0));
        // A gap alone is not a violation (that chat may have failed)...
        assert!(matches!(
            r.on_message("x", &msg(3, 5)),
            Verdict::New { in_order: true, .. }
        ));
        // ...but an earlier one arriving after it is.
        assert!(matches!(
            r.on_message("x", &msg(3, 2)),
            Verdict::New {
                in_order: false,
                ..
            }
        ));
        let mut bad = msg(3, 6);
        bad[60] ^= 1;
        assert_eq!(r.on_message("x", &bad), Verdict::Corrupted);
        // Another pair's message, a seq beyond the run, a wrong sender.
        assert_eq!(r.on_message("x", &msg(4, 7)), Verdict::Corrupted);
        assert_eq!(r.on_message("x", &msg(3, 10)), Verdict::Corrupted);
        assert_eq!(r.on_message("y", &msg(3, 7)), Verdict::WrongSender);
        assert_eq!(r.on_message("x", &msg(3, 7)[..63]), Verdict::Corrupted);
        assert_eq!(
            (
                r.unique,
                r.duplicated,
                r.out_of_order,
                r.corrupted,
                r.wrong_sender
            ),
            (3, 1, 1, 4, 1)
        );
        assert!(!r.complete());
    }

    #[test]
    fn audit_finds_lost_and_missing() {
        let outcomes = [
            DELIVERED,
            DELIVERED,
            OFFLINE,
            NONE,
            RECIPIENT_BUSY,
            DELIVERED,
        ];
        let seen = [true, false, false, false, true, true];
        let a = Audit::of(&outcomes, &seen);
        assert_eq!(a.lost, 1, "seq 1 was acked delivered but never arrived");
        assert_eq!(a.arrived_without_delivered, 1, "seq 4");
        assert_eq!(a.missing_outcomes(), 1);
        assert_eq!(a.outcomes[DELIVERED as usize], 3);
        assert_eq!(a.outcomes[OFFLINE as usize], 1);
        let mut total = a;
        total.add(&a);
        assert_eq!((total.lost, total.missing_outcomes()), (2, 2));
        assert_eq!(from_reply("ack", None), DELIVERED);
        assert_eq!(from_reply("error", Some("recipient_busy")), RECIPIENT_BUSY);
        assert_eq!(from_reply("error", Some("bad_request")), OTHER);
    }

    #[test]
    fn a_lost_sender_abandons_its_unanswered_chats() {
        // Seq 0..4 sent, 2 and 3 without outcome when the connection died;
        // 4 and 5 never sent.
        let outcomes = [DELIVERED, UNAVAILABLE, NONE, NONE, NONE, NONE];
        let seen = [true, false, false, false, false, false];
        let lost_sender = Fate {
            sender_lost: true,
            recipient_lost: false,
        };
        let a = Audit::of_dir(&outcomes, &seen, 4, lost_sender);
        assert_eq!((a.missing_outcomes(), a.abandoned, a.unsent), (0, 2, 2));
        assert_eq!(a.lost, 0);
        // The same chats on a connection that stayed up: all missing.
        let a = Audit::of_dir(&outcomes, &seen, 4, Fate::default());
        assert_eq!((a.missing_outcomes(), a.abandoned, a.unsent), (4, 0, 0));
    }

    #[test]
    fn delivered_but_not_arrived_is_lost_unless_the_recipient_died() {
        let outcomes = [DELIVERED, DELIVERED, DELIVERED, OFFLINE, UNAVAILABLE];
        // Seq 1 and 2 were acked delivered but never arrived; seq 4 arrived
        // although its outcome (lost with the relay) was unavailable.
        let seen = [true, false, false, false, true];
        let gone = Fate {
            sender_lost: false,
            recipient_lost: true,
        };
        let a = Audit::of_dir(&outcomes, &seen, 5, gone);
        assert_eq!((a.lost, a.lost_with_recipient), (0, 2));
        assert_eq!(a.arrived_without_delivered, 1);
        assert_eq!(a.missing_outcomes(), 0);
        // The recipient stayed connected: the same gaps are real losses.
        let a = Audit::of_dir(&outcomes, &seen, 5, Fate::default());
        assert_eq!((a.lost, a.lost_with_recipient), (2, 0));
        // A missing outcome is missing whatever happened to the recipient.
        let a = Audit::of_dir(&[DELIVERED, NONE], &[true, false], 2, gone);
        assert_eq!(a.missing_outcomes(), 1);
        let mut total = Audit::of_dir(&outcomes, &seen, 5, gone);
        total.add(&Audit::of_dir(
            &[DELIVERED, NONE],
            &[true, false],
            1,
            Fate {
                sender_lost: true,
                recipient_lost: false,
            },
        ));
        assert_eq!(
            (total.lost_with_recipient, total.unsent, total.abandoned),
            (2, 1, 0)
        );
    }

    #[test]
    fn gaps_are_only_allowed_where_the_outcome_was_not_delivered() {
        // The recipient saw 0, 2, 4: in order, no duplicate, and the gaps
        // (1, 3) are chats that failed.
        let mut r = Receiver::new(1, "x".into(), 5, 64);
        for seq in [0, 2, 4] {
            assert!(matches!(
                r.on_message("x", &msg(1, seq)),
                Verdict::New { in_order: true, .. }
            ));
        }
        let a = Audit::of(
            &[DELIVERED, UNAVAILABLE, DELIVERED, OFFLINE, DELIVERED],
            &r.seen,
        );
        assert_eq!((a.lost, a.missing_outcomes()), (0, 0));
        // A gap where the sender was told delivered is a loss.
        let a = Audit::of(
            &[DELIVERED, DELIVERED, DELIVERED, OFFLINE, DELIVERED],
            &r.seen,
        );
        assert_eq!(a.lost, 1);
    }

    #[test]
    fn timeline_brackets_the_failures() {
        let events = [
            (DELIVERED, 10),
            (DELIVERED, 20),
            (UNAVAILABLE, 30),
            (DELIVERED, 35),
            (OFFLINE, 40),
            (NONE, 99),
            (DELIVERED, 50),
            (DELIVERED, 60),
        ];
        let t = Timeline::of(events.iter().copied());
        assert_eq!(
            (t.first_failure_ns, t.last_failure_ns),
            (Some(30), Some(40))
        );
        assert_eq!(t.delivered_before_first_failure, 2);
        assert_eq!(t.delivered_after_last_failure, 2);
        let t = Timeline::of([(DELIVERED, 1), (DELIVERED, 2)].into_iter());
        assert_eq!(t.first_failure_ns, None);
        assert_eq!(
            (
                t.delivered_before_first_failure,
                t.delivered_after_last_failure
            ),
            (2, 2)
        );
        let t = Timeline::of([(DELIVERED, 1), (OFFLINE, 2)].into_iter());
        assert_eq!(t.delivered_after_last_failure, 0);
    }
}
