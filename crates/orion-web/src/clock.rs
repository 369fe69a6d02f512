//! The browser's clock.

use std::rc::Rc;

use orion_core::{Clock, SharedClock};

/// Wall-clock milliseconds since the Unix epoch (`Date.now()`), so that persisted timestamps
/// (breaker opening times, backup dates) stay meaningful across worker restarts.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebClock;

impl WebClock {
    /// The web clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Rc::new(WebClock)
    }
}

impl Clock for WebClock {
    fn now_ms(&self) -> u64 {
        // Date.now() is a non-negative integer below 2^53 for any real date.
        js_sys::Date::now().max(0.0) as u64
    }
}
