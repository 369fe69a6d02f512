//! Time, as the core sees it.

use std::cell::Cell;
use std::rc::Rc;

/// A source of milliseconds. Every timeout, backoff, breaker and schedule in the core reads time
/// only through this trait, so tests can drive time by hand.
pub trait Clock {
    /// Milliseconds since an arbitrary but fixed epoch (the web clock uses the Unix epoch so that
    /// timestamps survive a worker restart).
    fn now_ms(&self) -> u64;
}

/// A clock shared by the components of one worker. The worker is single-threaded, hence `Rc`.
pub type SharedClock = Rc<dyn Clock>;

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Rc<Cell<u64>>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: Rc::new(Cell::new(start_ms)),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get().saturating_add(ms));
    }

    /// Sets the clock to `ms`, which may be in the past (to test clocks that jump back).
    pub fn set(&self, ms: u64) {
        self.now.set(ms);
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Rc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_time() {
        let clock = ManualClock::new(10);
        let shared = clock.shared();
        clock.advance(5);
        assert_eq!(shared.now_ms(), 15);
        clock.set(3);
        assert_eq!(shared.now_ms(), 3);
    }
}
