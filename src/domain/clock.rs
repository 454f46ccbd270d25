//! Time as the service sees it, passed in rather than read from a global,
//! so quiet hours, holds, idleness and expiry can be tested by moving a
//! clock. The store stamps its rows with the [`Clock`] it was opened with.
//!
//! [`now_ms`] is the wall clock itself: what [`SystemClock`] reads, and what
//! ids that sort by time are made from (they decide nothing).

use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, on the wall clock.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;

    /// Today's date in UTC, for routing by days to due.
    fn today(&self) -> time::Date {
        time::OffsetDateTime::from_unix_timestamp_nanos(self.now_ms() as i128 * 1_000_000)
            .map(|t| t.date())
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc().date())
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at_ms(ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(ms))
    }

    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
