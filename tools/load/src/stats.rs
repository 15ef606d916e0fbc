//! The numbers of a summary: latency percentiles by sorting (nearest
//! rank, no histogram library), rates and rounding. Samples are
//! nanoseconds; summaries are reported in milliseconds. Pure functions:
//! no I/O, no clock.

use std::time::Duration;

use serde::Serialize;

/// Messages per second (or any rate), 0 when no time passed.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        (count as f64 / s).round()
    } else {
        0.0
    }
}

/// Rounded to three decimals, as the JSON summaries report seconds.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of an ascending slice; `p` in 0..=100.
/// Returns 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    // Smallest value such that at least p% of the samples are <= it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The summary of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(ns: u64) -> f64 {
    // Three decimals (microsecond resolution) keep the JSON short.
    (ns as f64 / 1_000.0).round() / 1_000.0
}

impl Summary {
    /// Sorts `samples` (nanoseconds) in place and summarizes them.
    pub fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Self {
            count: samples.len(),
            p50_ms: ms(percentile(samples, 50.0)),
            p90_ms: ms(percentile(samples, 90.0)),
            p99_ms: ms(percentile(samples, 99.0)),
            max_ms: ms(*samples.last().unwrap_or(&0)),
            mean_ms: ms((sum / samples.len() as u128) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
        // 10 samples: p99 is the maximum, p50 the 5th.
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 99.0), 10);
        assert_eq!(percentile(&v, 50.0), 5);
        assert_eq!(percentile(&v, 51.0), 6);
    }

    #[test]
    fn summary_sorts_and_converts_to_ms() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1_000_000).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p90_ms, 900.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(s.mean_ms, 500.5);
        assert_eq!(Summary::of(&mut []), Summary::default());
        let s = Summary::of(&mut [1_234_567]);
        assert_eq!(s.p50_ms, 1.235);
    }
}
