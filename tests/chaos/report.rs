//! What a chaos run did, counted: outcomes, receipts within and across
//! servers, kicks, how connections ended, each process's memory growth
//! against its budgets. The counts go into the summary line and into the
//! checks that the run exercised what it claims (a run that met no budget
//! or no kick proves nothing). Reads logs; decides no promise.

use std::collections::BTreeMap;

use crate::ledger::{ConnLog, End, Outcome};
use crate::world::{MEMORY_SLACK_KIB, Memory};

#[derive(Default)]
pub struct Tally {
    pub outcomes: BTreeMap<String, usize>,
    pub received: usize,
    pub kicks: usize,
    pub local_deliveries: usize,
    pub remote_deliveries: usize,
    /// How connections ended, by kind.
    pub ends: BTreeMap<String, usize>,
}

impl Tally {
    pub fn of(logs: &[&ConnLog]) -> Tally {
        let server_of: BTreeMap<usize, &str> =
            logs.iter().map(|c| (c.conn, c.server.as_str())).collect();
        let mut t = Tally::default();
        for c in logs {
            for got in &c.outcomes {
                let key = match got.first() {
                    Some((Outcome::Delivered(_), _)) => "delivered",
                    Some((Outcome::Failed(code), _)) => code.as_str(),
                    None => "none",
                };
                *t.outcomes.entry(key.to_owned()).or_default() += 1;
            }
            t.received += c.receipts.len();
            let end = c.end.as_ref().map(|(e, _)| e);
            t.kicks += usize::from(matches!(end, Some(End::Kicked(_))));
            *t.ends.entry(format!("{:?} {end:?}", c.kind)).or_default() += 1;
            for r in &c.receipts {
                let sender = r.content.split('/').next().and_then(|s| s.parse().ok());
                match sender.and_then(|s| server_of.get(&s)) {
                    Some(s) if *s == c.server => t.local_deliveries += 1,
                    _ => t.remote_deliveries += 1,
                }
            }
        }
        t
    }

    pub fn count(&self, outcome: &str) -> usize {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// Each process's growth (peak over start), and the processes that grew
/// beyond their budgets plus `MEMORY_SLACK_KIB`.
pub fn memory(processes: &[Memory]) -> (Vec<String>, Vec<String>) {
    let mut growths = Vec::new();
    let mut over = Vec::new();
    for m in processes {
        let growth = m.peak_kib.saturating_sub(m.start_kib);
        growths.push(format!("{} +{growth} at {:.1?}", m.what, m.peak_at));
        if growth > m.budget_kib + MEMORY_SLACK_KIB {
            over.push(format!(
                "{} grew by {growth} KiB (budgets {} KiB + slack {MEMORY_SLACK_KIB} KiB): {m:?}",
                m.what, m.budget_kib
            ));
        }
    }
    (growths, over)
}
