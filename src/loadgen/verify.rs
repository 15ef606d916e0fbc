//! Per-direction verification: what a recipient checks on each message
//! (intact, from the right sender, exactly once, in order) and the final
//! audit that joins the sender's outcomes with what arrived (lost =
//! `delivered` but never received; missing = no outcome at all).

use super::content::{self, Stamp};

/// Outcome of one chat, as stored per sequence number.
pub mod outcome {
    pub const NONE: u8 = 0;
    pub const DELIVERED: u8 = 1;
    pub const OFFLINE: u8 = 2;
    pub const UNAVAILABLE: u8 = 3;
    pub const RECIPIENT_BUSY: u8 = 4;
    pub const OTHER: u8 = 5;
    pub const COUNT: usize = 6;
    pub const NAMES: [&str; COUNT] = [
        "none",
        "delivered",
        "offline",
        "unavailable",
        "recipient_busy",
        "other",
    ];

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

/// The join of one direction's outcomes and arrivals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// By outcome code (index = `outcome::*`; `NONE` = missing outcome).
    pub outcomes: [u64; outcome::COUNT],
    /// `delivered` but never arrived.
    pub lost: u64,
    /// Arrived although the outcome was not `delivered` (or missing).
    pub arrived_without_delivered: u64,
}

impl Audit {
    pub fn of(outcomes: &[u8], seen: &[bool]) -> Self {
        let mut a = Audit::default();
        for (i, &o) in outcomes.iter().enumerate() {
            a.outcomes[(o as usize).min(outcome::COUNT - 1)] += 1;
            let arrived = seen.get(i).copied().unwrap_or(false);
            if o == outcome::DELIVERED && !arrived {
                a.lost += 1;
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
    }

    pub fn missing_outcomes(&self) -> u64 {
        self.outcomes[outcome::NONE as usize]
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
}
