//! The crate's one mutex: the standard library's, without poisoning.
//!
//! Every lock here guards a few map operations that check before they
//! mutate, so a panic in another holder leaves consistent data behind and
//! poisoning would only turn one failure into many. It wraps `std`'s mutex
//! rather than using `parking_lot`'s, which measured about 10% slower on
//! the same-server message path (the session table is locked once per
//! message; see docs/benchmarks.md).

use std::sync::PoisonError;

pub use std::sync::MutexGuard;

#[derive(Debug, Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Mutex;

    #[test]
    fn a_panic_while_locked_does_not_poison() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = m2.lock();
            panic!("holder panics");
        })
        .join();
        *m.lock() += 1;
        assert_eq!(*m.lock(), 2);
    }
}
