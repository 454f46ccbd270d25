//! How payrelay tries again: one [`RetryPolicy`] value holds every pause
//! and limit of the dispatcher's retries, the consumer's store-outage
//! retries, the event publisher's pauses and the broker's reconnects, so they are tuned in one place and
//! tests can shrink them all without sleeping for seconds.

use std::time::Duration;

use rand::Rng;

use crate::channels::SendError;

/// Pauses that double from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The pause that follows `pause`.
    pub fn after(&self, pause: Duration) -> Duration {
        (pause * 2).min(self.max)
    }

    /// The pauses in order, from `first`.
    pub fn pauses(self) -> Pauses {
        Pauses {
            backoff: self,
            next: self.first,
        }
    }
}

/// A [`Backoff`] being walked: each call to [`Pauses::next_pause`] gives the
/// next pause.
#[derive(Debug, Clone)]
pub struct Pauses {
    backoff: Backoff,
    next: Duration,
}

impl Pauses {
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.backoff.after(pause);
        pause
    }

    /// Starts again from the first pause.
    pub fn reset(&mut self) {
        self.next = self.backoff.first;
    }
}

/// Every retry limit and pause, in one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries of a transient failure on one channel before it gives up.
    pub tries_per_channel: u32,
    /// Pauses between those tries.
    pub send_backoff: Backoff,
    /// The smallest share of a send pause kept after jitter (0.5: between
    /// half and all), so retries of many invoices spread out.
    pub jitter_floor: f64,
    /// Longest `Retry-After` honoured while holding a delivery.
    pub max_retry_after: Duration,
    /// Longest a send waits for a paused channel.
    pub max_pause_wait: Duration,
    /// How many pauses of one channel a send waits out.
    pub pauses_waited: u32,
    /// Pauses between tries to record a send the provider accepted while the
    /// store is failing.
    pub record_backoff: Backoff,
    /// How long such a send keeps trying to be recorded before its delivery
    /// takes the consumer's store-failure path (which keeps it as long again).
    pub record_for: Duration,
    /// Pauses between tries of a delivery kept (unacked) through a store
    /// outage: requeueing would spend the quorum queue's delivery limit on
    /// an outage and dead-letter good invoices.
    pub store_outage_backoff: Backoff,
    /// How long one delivery is kept through a store outage before it is
    /// handed back (well under the broker's 30-minute consumer timeout).
    pub store_outage_for: Duration,
    /// Pause before handing back a message that could not be dead-lettered.
    pub requeue_pause: Duration,
    /// Pause before the event publisher asks a failing store again, or
    /// publishes events the broker refused again.
    pub outbox_pause: Duration,
    /// Pauses between broker reconnection attempts.
    pub reconnect_backoff: Backoff,
    /// A connection ready this long was a working one: after it fails,
    /// reconnecting starts again from the first pause.
    pub reconnect_reset_after: Duration,
}

impl RetryPolicy {
    /// What payrelay runs with.
    pub const STANDARD: RetryPolicy = RetryPolicy {
        tries_per_channel: 3,
        // With three tries the cap is never reached: 500 ms, then 1 s.
        send_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        jitter_floor: 0.5,
        max_retry_after: Duration::from_secs(30),
        max_pause_wait: Duration::from_secs(60),
        pauses_waited: 3,
        record_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        record_for: Duration::from_secs(10 * 60),
        store_outage_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        store_outage_for: Duration::from_secs(10 * 60),
        requeue_pause: Duration::from_secs(1),
        outbox_pause: Duration::from_secs(1),
        reconnect_backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
        reconnect_reset_after: Duration::from_secs(10),
    };

    /// The pause before trying `err` again after a send pause of `backoff`:
    /// the provider's `Retry-After` (capped), else the backoff with jitter.
    pub fn send_wait(&self, err: &SendError, backoff: Duration) -> Duration {
        match err {
            SendError::Transient {
                retry_after: Some(after),
                ..
            } => (*after).min(self.max_retry_after),
            _ => self.jitter(backoff),
        }
    }

    /// Whether a send should wait out a channel pause of `remaining`, having
    /// waited `waited` pauses already.
    pub fn waits_for_pause(&self, remaining: Duration, waited: u32) -> bool {
        remaining <= self.max_pause_wait && waited < self.pauses_waited
    }

    /// Between `jitter_floor` and all of `d`.
    fn jitter(&self, d: Duration) -> Duration {
        if self.jitter_floor >= 1.0 {
            return d;
        }
        let factor = rand::rng().random_range(self.jitter_floor..=1.0);
        d.mul_f64(factor)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::STANDARD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pauses_double_up_to_the_cap_and_start_again_on_reset() {
        let mut pauses = Backoff::new(ms(100), ms(500)).pauses();
        let seen: Vec<Duration> = (0..5).map(|_| pauses.next_pause()).collect();
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        pauses.reset();
        assert_eq!(pauses.next_pause(), ms(100));
    }

    #[test]
    fn a_retry_after_is_honoured_up_to_its_cap() {
        let policy = RetryPolicy::STANDARD;
        let asked = |after| SendError::Transient {
            code: None,
            reason: "429".into(),
            retry_after: Some(after),
        };
        assert_eq!(policy.send_wait(&asked(ms(1200)), ms(500)), ms(1200));
        assert_eq!(
            policy.send_wait(&asked(Duration::from_secs(90)), ms(500)),
            policy.max_retry_after
        );
    }

    #[test]
    fn a_backoff_pause_is_cut_by_jitter_to_no_less_than_its_floor() {
        let policy = RetryPolicy::STANDARD;
        let plain = SendError::Transient {
            code: None,
            reason: "503".into(),
            retry_after: None,
        };
        for _ in 0..100 {
            let wait = policy.send_wait(&plain, ms(1000));
            assert!((ms(500)..=ms(1000)).contains(&wait), "{wait:?}");
        }
    }

    #[test]
    fn a_channel_pause_is_waited_out_only_when_short_and_not_too_often() {
        let policy = RetryPolicy::STANDARD;
        assert!(policy.waits_for_pause(Duration::from_secs(60), 2));
        assert!(!policy.waits_for_pause(Duration::from_secs(61), 0));
        assert!(!policy.waits_for_pause(ms(10), 3));
    }
}
