//! Wall-clock time and per-start identities, for every tier.
//!
//! Unix milliseconds are what crosses process boundaries (presence entries,
//! message timestamps, link ages); `Instant` stays inside a process. Owns
//! no state.

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random 12-hex-digit token naming one start of a process: it fences
/// what an earlier life of the same id left behind, and keeps message ids
/// unique across restarts.
pub fn new_incarnation() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn incarnations_are_twelve_hex_digits_and_differ() {
        let (a, b) = (super::new_incarnation(), super::new_incarnation());
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
