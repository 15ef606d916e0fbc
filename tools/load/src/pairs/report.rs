//! The output of a finished `pairs` run: the human lines on stderr and
//! exactly one JSON summary line on stdout, which scripts/bench.sh,
//! scripts/bench_report.py, tests/support/load.rs and tools/load/tests
//! parse: keys and their meaning must not change without them. Computes
//! only rates, latency percentiles and rounding; must not measure or
//! judge anything itself.

use std::time::Duration;

use serde_json::{Value, json};

use super::PairsArgs;
use super::audit::{Readers, Tally};
use super::traffic::Ended;
use crate::stats::{Summary, rate, round3};
use crate::verify::{Timeline, outcome};

/// Everything a finished run reports.
pub(super) struct Finished<'a> {
    pub(super) args: &'a PairsArgs,
    /// `Transport::NAME` of the system measured.
    pub(super) transport: &'static str,
    pub(super) run: &'a str,
    pub(super) login_secs: f64,
    pub(super) ended: Ended,
    pub(super) readers: Readers,
    pub(super) tally: Tally,
}

/// Durations, rates and latencies of a finished run.
struct Measures {
    /// From the start to the last arrival.
    elapsed: Duration,
    /// From the start until the last reader had everything it expected
    /// (lingering for late duplicates is not counted).
    total: Duration,
    msgs_per_sec: f64,
    e2e: Summary,
    ack: Summary,
}

impl Finished<'_> {
    /// Prints the report; true when the run found no violation.
    pub(super) fn report(mut self) -> bool {
        let start = self.ended.start;
        let elapsed = Duration::from_nanos(self.readers.last_receive_ns.saturating_sub(start));
        let m = Measures {
            elapsed,
            total: Duration::from_nanos(self.ended.end - start),
            msgs_per_sec: rate(self.tally.received, elapsed),
            e2e: Summary::of(&mut self.readers.e2e),
            ack: Summary::of(&mut self.readers.ack),
        };
        let violations = self.violations();
        let ok = violations
            .as_object()
            .is_some_and(|v| v.values().all(|n| n.as_u64() == Some(0)));
        let mut summary = self.summary(&m, violations, ok);
        if let (Some(s), Value::Object(f)) = (summary.as_object_mut(), self.failures()) {
            s.extend(f);
        }
        self.print(&m, &summary, ok);
        println!("{summary}");
        ok
    }

    /// Counts that must all be 0 for the run to be `ok`.
    fn violations(&self) -> Value {
        let (r, t) = (&self.readers, &self.tally);
        let mut violations = json!({
            "lost": t.audit.lost,
            "duplicated": t.duplicated,
            "out_of_order": t.out_of_order,
            "corrupted": t.corrupted,
            "wrong_sender": t.wrong_sender,
            "missing_outcomes": t.audit.missing_outcomes(),
            "duplicate_outcomes": r.odd.duplicate_outcomes,
            "unexpected_replies": r.odd.unexpected_replies,
            "unparseable": r.odd.unparseable,
            "kicked": r.odd.kicked,
            "disconnects": r.disconnects,
            "write_errors": self.ended.write_errors,
        });
        if self.args.expect_failures {
            // Connections closed by the server are expected; what they cost is
            // reported by `failures` (senders_lost, abandoned, lost_with_recipient...).
            if let Some(v) = violations.as_object_mut() {
                v.remove("disconnects");
                v.remove("write_errors");
            }
        }
        violations
    }

    /// What failures (expected or not) cost, and when they happened.
    fn failures(&self) -> Value {
        let (r, t) = (&self.readers, &self.tally);
        let timeline = Timeline::of(t.answered.iter().copied());
        let start = self.ended.start;
        let since_start = |t: Option<u64>| t.map(|t| round3(t.saturating_sub(start) as f64 / 1e9));
        json!({
            "expect_failures": self.args.expect_failures,
            "rate": self.args.rate,
            "senders_lost": t.senders_lost,
            "recipients_lost": t.recipients_lost,
            "disconnects": r.disconnects,
            "kicked_shutdown": r.odd.kicked_shutdown,
            "write_errors": self.ended.write_errors,
            "abandoned": t.audit.abandoned,
            "unsent": t.audit.unsent,
            "lost_with_recipient": t.audit.lost_with_recipient,
            "outcome_max_ms": round3(t.outcome_max_ns as f64 / 1e6),
            "unavailable_max_ms": round3(t.unavailable_max_ns as f64 / 1e6),
            "first_failure_secs": since_start(timeline.first_failure_ns),
            "last_failure_secs": since_start(timeline.last_failure_ns),
            "delivered_before_first_failure": timeline.delivered_before_first_failure,
            "delivered_after_last_failure": timeline.delivered_after_last_failure,
        })
    }

    /// The summary without the failure keys.
    fn summary(&self, m: &Measures, violations: Value, ok: bool) -> Value {
        let (args, audit) = (self.args, &self.tally.audit);
        let o = |c: u8| audit.outcomes[c as usize];
        json!({
            "mode": "pairs",
            "transport": self.transport,
            "run": self.run,
            "a": args.a,
            "b": args.recipients_server(),
            "same_server": args.same_server,
            "both_ways": args.both_ways,
            "pairs": args.pairs,
            "messages": args.messages,
            "window": args.window,
            "size": args.size,
            "threads": tokio::runtime::Handle::current().metrics().num_workers(),
            "login_secs": round3(self.login_secs),
            "sent": self.ended.sent,
            "received": self.tally.received,
            "elapsed_secs": round3(m.elapsed.as_secs_f64()),
            "total_secs": round3(m.total.as_secs_f64()),
            "msgs_per_sec": m.msgs_per_sec,
            "e2e_p50_ms": m.e2e.p50_ms,
            "e2e_p90_ms": m.e2e.p90_ms,
            "e2e_p99_ms": m.e2e.p99_ms,
            "e2e_max_ms": m.e2e.max_ms,
            "ack_p50_ms": m.ack.p50_ms,
            "ack_p99_ms": m.ack.p99_ms,
            "ack_max_ms": m.ack.max_ms,
            "max_arrival_gap_ms": round3(self.ended.max_arrival_gap_ns as f64 / 1e6),
            "outcomes": {
                "delivered": o(outcome::DELIVERED),
                "offline": o(outcome::OFFLINE),
                "unavailable": o(outcome::UNAVAILABLE),
                "recipient_busy": o(outcome::RECIPIENT_BUSY),
                "other": o(outcome::OTHER),
            },
            "missing_outcomes": audit.missing_outcomes(),
            "arrived_without_delivered": audit.arrived_without_delivered,
            "timed_out": self.ended.timed_out,
            "violations": violations,
            "ok": ok,
        })
    }

    /// The human summary on stderr.
    fn print(&self, m: &Measures, summary: &Value, ok: bool) {
        let (args, audit) = (self.args, &self.tally.audit);
        let (e2e, ack) = (&m.e2e, &m.ack);
        eprintln!(
            "[pairs] {}: {} pairs x {} msgs, W={}, {} B, {}: {}/{} received in {:.3} s = {} msgs/s",
            self.transport,
            args.pairs,
            args.messages,
            args.window,
            args.size,
            if args.same_server {
                "same server"
            } else {
                "cross-server"
            },
            self.tally.received,
            self.ended.sent,
            m.elapsed.as_secs_f64(),
            m.msgs_per_sec
        );
        eprintln!(
            "[pairs] e2e ms p50 {} p90 {} p99 {} max {} | ack ms p50 {} p99 {} max {}",
            e2e.p50_ms, e2e.p90_ms, e2e.p99_ms, e2e.max_ms, ack.p50_ms, ack.p99_ms, ack.max_ms
        );
        if args.expect_failures {
            eprintln!(
                "[pairs] expected failures: senders lost {}, recipients lost {}, abandoned {}, unsent {}, delivered to a lost recipient {}, outcome max {} ms",
                self.tally.senders_lost,
                self.tally.recipients_lost,
                audit.abandoned,
                audit.unsent,
                audit.lost_with_recipient,
                summary["outcome_max_ms"]
            );
        }
        eprintln!(
            "[pairs] outcomes {} | arrived without delivered {} | violations {} => {}",
            summary["outcomes"],
            audit.arrived_without_delivered,
            summary["violations"],
            if ok { "OK" } else { "FAILED" }
        );
    }
}
