//! The rate limit that several instances share, kept in Redis.
//!
//! Each instance's governor limiter caps what that one process sends; this
//! budget caps what all of them send together, so N instances behind one
//! queue do not send N times a provider's rate. The algorithm is GCRA, the
//! one governor uses, with the channel's own quota (`rate_per_second`,
//! `burst`). It runs as one Lua script, so reading and advancing the state
//! is atomic across instances, and it reads Redis's clock (`TIME`), so the
//! instances' clocks need not agree. One key per channel,
//! `<key_prefix>:ratelimit:<channel>`, holds the theoretical arrival time in
//! microseconds and expires when it passes: an idle channel leaves nothing
//! behind, and a missing key means the same as one in the past.
//!
//! Redis helps; it is not needed to send. A call that fails or takes longer
//! than `[rate_limit] timeout` lets the send go ahead on the instance's own
//! limit, counted in `payrelay_rate_limit_fallback_total{channel}` and
//! warned about once per outage; Redis is asked again at most once per
//! [`PROBE_EVERY`] until it answers, so an outage costs no timeout per send.

use crate::settings::Secret;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::Quota;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tracing::{debug, info, warn};

use crate::domain::ChannelName;
use crate::metrics::Metrics;

/// `[rate_limit]`: where instances keep the budget they share.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// May hold a password, hence a secret; never logged or quoted.
    pub redis_url: Secret,
    /// Keys are `<key_prefix>:ratelimit:<channel>`, so several deployments
    /// (or test runs) can share one Redis without sharing budgets.
    pub key_prefix: String,
    /// Bound on each Redis call: past it, the send goes ahead on the
    /// instance's own limit rather than wait for Redis.
    pub timeout: Duration,
}

/// How often Redis is asked again while it does not answer.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA in one step. KEYS[1]: the channel's key. ARGV[1]: the emission
/// interval (µs between cells); ARGV[2]: the burst. Answers `{1, 0}` when a
/// cell was taken, `{0, µs}` when the caller must wait that long first.
/// Times are integer microseconds (below 2^53, exact in Lua's doubles) and
/// written with `%.0f`, since Lua's default number format keeps 14 digits.
const GCRA: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
"#;

/// Why the shared limit could not answer; each one means "send on the
/// local limit alone this time".
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// Refused by the client at start although `payrelay check` passed it;
    /// the URL itself is never quoted (it may hold a password).
    #[error("the Redis URL cannot be used: {0}")]
    Url(#[source] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// The key holds something else (another program's key under our prefix).
    #[error("the rate-limit script answered [{0}, {1}] instead of [1, 0] or [0, wait]")]
    Unexpected(i64, i64),
}

/// Whether `text` is a Redis URL the client accepts, for `payrelay check`.
/// The reason never quotes the URL.
pub fn check_redis_url(text: &str) -> Result<(), String> {
    const FORM: &str = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS, or unix:///PATH";
    let url = url::Url::parse(text).map_err(|_| format!("is not a URL; use {FORM}"))?;
    if !matches!(
        url.scheme(),
        "redis" | "rediss" | "unix" | "redis+unix" | "valkey" | "valkeys" | "valkey+unix"
    ) {
        return Err(format!("is a {}: URL; use {FORM}", url.scheme()));
    }
    Client::open(text)
        .map(drop)
        .map_err(|e| format!("is not a Redis URL payrelay can use ({e}); use {FORM}"))
}

/// The one Redis connection an instance's channels share, with the outage
/// state (Redis is one server: when it is down, it is down for all channels).
pub struct SharedLimiter {
    redis: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    outage: Mutex<Option<Outage>>,
    metrics: Arc<Metrics>,
}

/// Since when Redis has not answered, and when to ask it again.
struct Outage {
    since: Instant,
    next_probe: Instant,
}

/// What the script said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allowed,
    Wait(Duration),
}

impl fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL: it may hold a password.
        f.debug_struct("SharedLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// Sets up the client without connecting: the service starts, and
    /// sends, whether or not Redis answers yet. Call inside the tokio
    /// runtime (the connection manager spawns its watcher there).
    pub fn new(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Result<SharedLimiter, LimiterError> {
        let client = Client::open(config.redis_url.expose()).map_err(LimiterError::Url)?;
        // No retries inside the manager: the probe every PROBE_EVERY is the
        // retry, and a send never waits on a reconnect loop.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(0);
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config).map_err(LimiterError::Url)?;
        Ok(SharedLimiter {
            redis,
            script: Script::new(GCRA),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            outage: Mutex::new(None),
            metrics,
        })
    }

    /// The Redis key that holds a channel's state.
    pub fn key(&self, channel: ChannelName) -> String {
        format!("{}:ratelimit:{channel}", self.prefix)
    }

    /// One channel's share of this limiter, with the channel's own quota.
    pub fn budget(self: &Arc<Self>, channel: ChannelName, quota: Quota) -> ChannelBudget {
        let interval = quota.replenish_interval().max(Duration::from_micros(1));
        ChannelBudget {
            limiter: self.clone(),
            channel,
            key: self.key(channel),
            interval,
            burst: quota.burst_size().get(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs the script once, bounded by the timeout.
    async fn take(&self, key: &str, interval: Duration, burst: u32) -> Result<Decision, LimiterError> {
        let mut redis = self.redis.clone();
        let mut invocation = self.script.key(key);
        invocation
            .arg(u64::try_from(interval.as_micros()).unwrap_or(u64::MAX))
            .arg(burst);
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async::<(i64, i64)>(&mut redis))
            .await
            .map_err(|_| LimiterError::Timeout(self.timeout))??;
        match answer {
            (1, _) => Ok(Decision::Allowed),
            (0, wait) if wait > 0 => Ok(Decision::Wait(Duration::from_micros(wait.unsigned_abs()))),
            (allowed, wait) => Err(LimiterError::Unexpected(allowed, wait)),
        }
    }

    /// False while Redis is down and the next probe is not due.
    fn worth_asking(&self) -> bool {
        let outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        outage.as_ref().is_none_or(|o| Instant::now() >= o.next_probe)
    }

    fn answered(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ended) = outage.take() {
            info!(
                after = ?ended.since.elapsed(),
                "the shared rate limit's Redis answers again; instances share their budgets again"
            );
        }
    }

    /// Notes a failed call: warns on the first of an outage only.
    fn failed(&self, channel: ChannelName, error: &LimiterError) {
        let now = Instant::now();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match outage.as_mut() {
            None => {
                warn!(
                    %channel,
                    %error,
                    "the shared rate limit is unavailable (Redis failed or did not answer); each instance paces its channels alone until Redis answers"
                );
                *outage = Some(Outage {
                    since: now,
                    next_probe: now + PROBE_EVERY,
                });
            }
            Some(o) => {
                debug!(%channel, %error, "the shared rate limit is still unavailable");
                o.next_probe = now + PROBE_EVERY;
            }
        }
    }
}

/// One channel's share of the [`SharedLimiter`]: its key and its quota.
pub struct ChannelBudget {
    limiter: Arc<SharedLimiter>,
    channel: ChannelName,
    key: String,
    /// Time between cells: `1 / rate_per_second`.
    interval: Duration,
    burst: u32,
    /// One waiter per channel and instance asks Redis at a time; the others
    /// queue here (fairly), instead of all polling Redis every interval.
    turn: tokio::sync::Mutex<()>,
}

impl fmt::Debug for ChannelBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBudget")
            .field("key", &self.key)
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl ChannelBudget {
    /// Waits until the shared budget has a cell for this channel, or until
    /// Redis fails to answer (then the local limit alone has paced the send).
    /// Takes a cell if one is free now, without waiting: false when the
    /// budget is spent or another send of this instance is already waiting
    /// for it. Redis trouble counts as free (the local limit alone paces).
    pub async fn try_take(&self) -> bool {
        let Ok(_turn) = self.turn.try_lock() else {
            return false;
        };
        if !self.limiter.worth_asking() {
            self.limiter.metrics.rate_limit_fallback(self.channel);
            return true;
        }
        match self.limiter.take(&self.key, self.interval, self.burst).await {
            Ok(Decision::Allowed) => {
                self.limiter.answered();
                true
            }
            Ok(Decision::Wait(_)) => {
                self.limiter.answered();
                false
            }
            Err(error) => {
                self.limiter.failed(self.channel, &error);
                self.limiter.metrics.rate_limit_fallback(self.channel);
                true
            }
        }
    }

    pub async fn until_ready(&self) {
        let _turn = self.turn.lock().await;
        loop {
            if !self.limiter.worth_asking() {
                self.limiter.metrics.rate_limit_fallback(self.channel);
                return;
            }
            match self.limiter.take(&self.key, self.interval, self.burst).await {
                Ok(Decision::Allowed) => {
                    self.limiter.answered();
                    return;
                }
                Ok(Decision::Wait(wait)) => {
                    self.limiter.answered();
                    // A wait is never longer than one interval unless an
                    // instance with a slower quota shares the key; then
                    // asking again sooner is merely one more call.
                    tokio::time::sleep(wait.min(self.interval)).await;
                }
                Err(error) => {
                    self.limiter.failed(self.channel, &error);
                    self.limiter.metrics.rate_limit_fallback(self.channel);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_checked_without_quoting_them() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("redis://:pw@127.0.0.1:6379/2").is_ok());
        assert!(check_redis_url("rediss://cache.example:6380").is_ok());
        assert!(check_redis_url("unix:///run/redis.sock").is_ok());
        for bad in [
            "127.0.0.1:6379",
            "http://:hunter2@127.0.0.1:6379",
            "redis://:hunter2@127.0.0.1:6379/notadb",
            "redis://:hunter2@0.0.0.0:6379",
        ] {
            let reason = check_redis_url(bad).expect_err(bad);
            assert!(!reason.contains("hunter2"), "{reason}");
            assert!(reason.contains("redis://"), "says what would do: {reason}");
        }
    }
}
