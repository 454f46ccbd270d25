//! Channel adapters: one folder per channel, all behind the [`Channel`] trait.
//!
//! Each folder has the same roles: `config.rs` (its `[channels.<name>]` keys,
//! checked completely) and `mod.rs` (rendering the message from templates and
//! sending it, with provider errors classified as transient or permanent).
//! The [`Registry`] owns the configured channels and puts each behind its own
//! governor rate limiter, so a caller cannot send around the limit. With
//! `[rate_limit]` configured, each channel also waits for its share of the
//! budget all instances share in Redis ([`ratelimit`]).
//!
//! Shared pieces: [`http`] (one reqwest client setup and the HTTP error
//! classes every provider shares), [`outbox`] (the `file` provider) and
//! [`meta`] (the Graph API shape WhatsApp and Messenger share).
//!
//! Adding a channel: add its folder, a [`ChannelName`] variant, its
//! `ChannelsConfig` field and a line in [`Registry::from_config`].

pub mod email;
pub mod http;
pub mod messenger;
pub mod meta;
pub mod outbox;
pub mod ratelimit;
pub mod sms;
pub mod whatsapp;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::config::{BillerConfig, ChannelsConfig};
use crate::invoice::Contacts;
use crate::render::{RenderError, Templates};
use ratelimit::{ChannelBudget, SharedLimiter};

/// The channels payrelay knows. Billers and operators use these names in
/// invoices, rules and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(description = "A channel payrelay sends on.")]
pub enum ChannelName {
    Email,
    Sms,
    Whatsapp,
    Messenger,
}

impl ChannelName {
    pub const ALL: [ChannelName; 4] = [
        ChannelName::Email,
        ChannelName::Sms,
        ChannelName::Whatsapp,
        ChannelName::Messenger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelName::Email => "email",
            ChannelName::Sms => "sms",
            ChannelName::Whatsapp => "whatsapp",
            ChannelName::Messenger => "messenger",
        }
    }

    /// The customer's address on this channel, if the invoice gave one.
    pub fn address(self, contacts: &Contacts) -> Option<&str> {
        match self {
            ChannelName::Email => contacts.email.as_ref().map(|e| e.as_str()),
            ChannelName::Sms => contacts.phone.as_ref().map(|p| p.as_str()),
            ChannelName::Whatsapp => contacts.whatsapp.as_ref().map(|p| p.as_str()),
            ChannelName::Messenger => contacts.messenger_psid.as_ref().map(|p| p.as_str()),
        }
    }

    /// Name of the contact field this channel needs, for skip reasons.
    pub fn contact_field(self) -> &'static str {
        match self {
            ChannelName::Email => "customer.email",
            ChannelName::Sms => "customer.phone",
            ChannelName::Whatsapp => "customer.whatsapp",
            ChannelName::Messenger => "customer.messenger_psid",
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChannelName::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("\"{s}\" is not a channel (email, sms, whatsapp, messenger)"))
    }
}

/// A message rendered exactly as it will be sent.
///
/// Parts are named by the channel (`subject`, `text`, `html` for email), so
/// `payrelay preview` can print what goes out without knowing the channel.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub channel: ChannelName,
    /// The recipient's address on the channel (personal data: never logged).
    pub to: String,
    pub parts: Vec<(&'static str, String)>,
}

impl Prepared {
    pub fn part(&self, name: &str) -> Option<&str> {
        self.parts.iter().find(|(n, _)| *n == name).map(|(_, c)| c.as_str())
    }
}

/// What a provider said when it accepted a message.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub provider_message_id: Option<String>,
}

/// A provider's later word on a message it accepted, from a status webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    Delivered,
    Read,
    /// The provider gave up after accepting (SMS `undelivered`, WhatsApp `failed`).
    Failed {
        code: Option<String>,
        reason: String,
    },
}

/// One status report from a provider webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The id the provider gave when it accepted the message.
    pub provider_message_id: String,
    pub status: DeliveryStatus,
}

/// A failed send, classified once here so retries, fallback and events agree.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: timeouts, connection trouble, throttling, 4xx SMTP.
    #[error("temporary failure{}: {reason}", code_suffix(.code))]
    Transient {
        code: Option<String>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: bad recipient, rejected content, bad credentials.
    #[error("permanent failure{}: {reason}", code_suffix(.code))]
    Permanent { code: Option<String>, reason: String },
    /// The channel cannot send anything until an operator fixes it (rejected
    /// credentials, an expired token): permanent, and it pauses the channel.
    #[error("the channel is misconfigured{}: {reason}", code_suffix(.code))]
    Misconfigured { code: Option<String>, reason: String },
    /// Not tried: the channel is paused after repeated provider failures.
    #[error("the channel is paused after repeated provider failures (for another {}s)", .remaining.as_secs().max(1))]
    Paused { remaining: Duration },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default()
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient { .. })
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            SendError::Transient { code, .. }
            | SendError::Permanent { code, .. }
            | SendError::Misconfigured { code, .. } => code.as_deref(),
            SendError::Paused { .. } => None,
        }
    }
}

/// Everything a channel needs to render one payment request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The customer's address on this channel (personal data: never logged).
    pub to: &'a str,
    /// This message's pay-link token (WhatsApp's URL button takes it as suffix).
    pub token: &'a str,
    /// The template data built by [`crate::render::view`]; `pay_url` included.
    pub view: &'a serde_json::Value,
    pub biller: &'a BillerConfig,
}

/// What channels need to know about the service when they are built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Where provider status callbacks reach payrelay.
    pub public_base_url: url::Url,
}

/// One way of reaching a customer.
#[async_trait]
pub trait Channel: Send + Sync {
    fn name(&self) -> ChannelName;

    /// Renders the payment request from the channel's templates, exactly as
    /// it will be sent.
    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError>;

    /// Hands the message to the provider. Must not retry by itself: the caller
    /// decides from the [`SendError`] class.
    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError>;
}

/// Problems found while building channels from a config that passed `check`.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel}: {reason}")]
pub struct BuildError {
    pub channel: ChannelName,
    pub reason: String,
}

/// A configured channel with its rate limiters and circuit breaker.
struct Entry {
    channel: Box<dyn Channel>,
    /// This instance's own pace: at most the channel's full rate.
    limiter: DefaultDirectRateLimiter,
    /// Kept to give the shared limiter the same quota.
    quota: Quota,
    /// The channel's share of the budget all instances share, if configured.
    shared: Option<ChannelBudget>,
    breaker: Breaker,
}

/// When a provider keeps failing, stop sending to it for a while.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Transient failures in a row that pause the channel.
    pub failures: u32,
    /// How long the pause lasts; then one send is let through to probe.
    pub pause: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            pause: Duration::from_secs(30),
        }
    }
}

/// A circuit breaker: counts transient failures in a row (permanent ones
/// are about a recipient, not the provider) and opens after `failures`; a
/// misconfigured channel opens it at once.
/// After the pause it half-opens: the next failure opens it again at once,
/// a success closes it.
struct Breaker {
    policy: BreakerPolicy,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn paused_for(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let remaining = state.open_until?.checked_duration_since(Instant::now())?;
        (!remaining.is_zero()).then_some(remaining)
    }

    fn record(&self, result: &Result<Receipt, SendError>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => *state = BreakerState::default(),
            Err(SendError::Misconfigured { .. }) => {
                state.failures_in_a_row = self.policy.failures;
                state.open_until = Some(Instant::now() + self.policy.pause);
            }
            Err(e) if e.is_transient() => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                if state.failures_in_a_row >= self.policy.failures {
                    state.open_until = Some(Instant::now() + self.policy.pause);
                }
            }
            Err(_) => {}
        }
    }
}

/// The configured channels, each behind its own rate limit and breaker.
pub struct Registry {
    entries: BTreeMap<ChannelName, Entry>,
    breaker: BreakerPolicy,
    shared: Option<Arc<SharedLimiter>>,
}

impl Registry {
    pub fn from_config(config: &ChannelsConfig, context: &BuildContext) -> Result<Registry, BuildError> {
        let mut registry = Registry::empty(BreakerPolicy::default());
        if let Some(email) = &config.email {
            registry.insert(Box::new(email::EmailChannel::new(email)?), email.limits.quota());
        }
        if let Some(sms) = &config.sms {
            registry.insert(Box::new(sms::SmsChannel::new(sms, context)?), sms.limits.quota());
        }
        if let Some(whatsapp) = &config.whatsapp {
            registry.insert(
                Box::new(whatsapp::WhatsappChannel::new(whatsapp, context)?),
                whatsapp.limits.quota(),
            );
        }
        if let Some(messenger) = &config.messenger {
            registry.insert(
                Box::new(messenger::MessengerChannel::new(messenger, context)?),
                messenger.limits.quota(),
            );
        }
        Ok(registry)
    }

    /// A registry with no channels yet, for tests that bring their own.
    pub fn empty(breaker: BreakerPolicy) -> Registry {
        Registry {
            entries: BTreeMap::new(),
            breaker,
            shared: None,
        }
    }

    /// Puts every channel, present and inserted later, behind its share of
    /// the budget that instances share as well as its own limiter.
    pub fn with_shared_limiter(mut self, limiter: Arc<SharedLimiter>) -> Registry {
        for (name, entry) in &mut self.entries {
            entry.shared = Some(limiter.budget(*name, entry.quota));
        }
        self.shared = Some(limiter);
        self
    }

    /// Adds a channel; used by `from_config` and by tests that bring their own.
    pub fn insert(&mut self, channel: Box<dyn Channel>, quota: Quota) {
        let name = channel.name();
        self.entries.insert(
            name,
            Entry {
                channel,
                limiter: RateLimiter::direct(quota),
                quota,
                shared: self.shared.as_ref().map(|s| s.budget(name, quota)),
                breaker: Breaker::new(self.breaker),
            },
        );
    }

    pub fn get(&self, name: ChannelName) -> Option<&dyn Channel> {
        self.entries.get(&name).map(|e| e.channel.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = ChannelName> + '_ {
        self.entries.keys().copied()
    }

    /// Sends after waiting for the channel's rate limit: this instance's
    /// first, then the shared one.
    pub async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let slot = self.pace(message.channel).await?;
        self.send_in(slot, message).await
    }

    /// Waits until the channel's rate limits let one more message go and
    /// takes that place. Taken before a send is recorded as started, it
    /// keeps a send that waited for its turn when the process stopped from
    /// counting as one that may have gone out.
    pub async fn pace(&self, channel: ChannelName) -> Result<Slot, SendError> {
        let entry = self.entry(channel)?;
        if let Some(remaining) = entry.breaker.paused_for() {
            return Err(SendError::Paused { remaining });
        }
        entry.limiter.until_ready().await;
        if let Some(shared) = &entry.shared {
            shared.until_ready().await;
        }
        Ok(Slot { channel })
    }

    /// [`Registry::pace`] when a place is free right now; `None` otherwise
    /// (the channel is paused, or its limits are spent for the moment).
    pub async fn try_pace(&self, channel: ChannelName) -> Option<Slot> {
        let entry = self.entry(channel).ok()?;
        if entry.breaker.paused_for().is_some() || entry.limiter.check().is_err() {
            return None;
        }
        if let Some(shared) = &entry.shared {
            if !shared.try_take().await {
                return None;
            }
        }
        Some(Slot { channel })
    }

    /// Sends in a place [`Registry::pace`] took.
    pub async fn send_in(&self, slot: Slot, message: &Prepared) -> Result<Receipt, SendError> {
        let entry = self.entry(message.channel)?;
        debug_assert_eq!(slot.channel, message.channel, "a slot is spent on its own channel");
        if let Some(remaining) = entry.breaker.paused_for() {
            return Err(SendError::Paused { remaining });
        }
        let result = entry.channel.send(message).await;
        entry.breaker.record(&result);
        result
    }

    fn entry(&self, channel: ChannelName) -> Result<&Entry, SendError> {
        self.entries.get(&channel).ok_or_else(|| SendError::Permanent {
            code: None,
            reason: format!("channel {channel} is not configured"),
        })
    }
}

/// One message's place under a channel's rate limits, from
/// [`Registry::pace`]; spent by [`Registry::send_in`].
#[derive(Debug)]
pub struct Slot {
    channel: ChannelName,
}

/// `rate_per_second` and `burst`, shared by every channel's config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// May be fractional: 0.5 is one message every two seconds.
    pub rate_per_second: f64,
    pub burst: NonZeroU32,
}

impl Limits {
    /// The governor quota: one cell every `1 / rate` seconds, `burst` at once.
    pub fn quota(&self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.rate_per_second.max(1e-6));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Fails the first `fail_first` sends, then succeeds; counts the calls.
    struct Scripted {
        calls: Arc<AtomicU32>,
        fail_first: u32,
        failure: fn() -> SendError,
    }

    fn transient() -> SendError {
        SendError::Transient {
            code: None,
            reason: "503".into(),
            retry_after: None,
        }
    }

    fn permanent() -> SendError {
        SendError::Permanent {
            code: Some("21211".into()),
            reason: "invalid number".into(),
        }
    }

    fn misconfigured() -> SendError {
        SendError::Misconfigured {
            code: Some("190".into()),
            reason: "token expired".into(),
        }
    }

    #[async_trait]
    impl Channel for Scripted {
        fn name(&self) -> ChannelName {
            ChannelName::Sms
        }

        fn prepare(&self, _: &Request<'_>, _: &Templates) -> Result<Prepared, RenderError> {
            unreachable!("not rendered in these tests")
        }

        async fn send(&self, _: &Prepared) -> Result<Receipt, SendError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err((self.failure)());
            }
            Ok(Receipt::default())
        }
    }

    fn registry(fail_first: u32, failure: fn() -> SendError) -> (Registry, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let mut registry = Registry::empty(BreakerPolicy {
            failures: 3,
            pause: Duration::from_millis(300),
        });
        let channel = Scripted {
            calls: calls.clone(),
            fail_first,
            failure,
        };
        registry.insert(Box::new(channel), Quota::per_second(NonZeroU32::new(1000).unwrap()));
        (registry, calls)
    }

    fn message() -> Prepared {
        Prepared {
            channel: ChannelName::Sms,
            to: "+15005550006".into(),
            parts: vec![],
        }
    }

    #[tokio::test]
    async fn a_place_under_the_rate_limit_is_taken_before_the_send_and_spent_by_it() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut registry = Registry::empty(BreakerPolicy::default());
        let channel = Scripted {
            calls: calls.clone(),
            fail_first: 0,
            failure: transient,
        };
        // One message every 200 ms, one at once.
        let quota = Quota::with_period(Duration::from_millis(200)).unwrap();
        registry.insert(Box::new(channel), quota);

        let slot = registry
            .try_pace(ChannelName::Sms)
            .await
            .expect("a place is free at first");
        assert!(
            registry.try_pace(ChannelName::Sms).await.is_none(),
            "the only place is taken"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "taking a place sends nothing");
        assert!(registry.send_in(slot, &message()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let started = tokio::time::Instant::now();
        let slot = registry.pace(ChannelName::Sms).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "pace waits for the next place: {:?}",
            started.elapsed()
        );
        assert!(registry.send_in(slot, &message()).await.is_ok());
        assert!(registry.try_pace(ChannelName::Email).await.is_none(), "no such channel");
        assert!(matches!(
            registry.pace(ChannelName::Email).await,
            Err(SendError::Permanent { .. })
        ));
    }

    #[tokio::test]
    async fn a_provider_that_keeps_failing_is_paused_then_probed_then_resumed() {
        let (registry, calls) = registry(4, transient);
        for _ in 0..3 {
            assert!(registry.send(&message()).await.unwrap_err().is_transient());
        }
        // Open: nothing reaches the provider while paused.
        let paused = registry.send(&message()).await.unwrap_err();
        assert!(matches!(paused, SendError::Paused { remaining } if remaining <= Duration::from_millis(300)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Half-open after the pause: one failing probe opens it again at once.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(registry.send(&message()).await.unwrap_err().is_transient());
        assert!(matches!(registry.send(&message()).await, Err(SendError::Paused { .. })));

        // The next probe succeeds and closes it.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(registry.send(&message()).await.is_ok());
        assert!(registry.send(&message()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn permanent_failures_are_about_recipients_and_never_pause_the_channel() {
        let (registry, calls) = registry(10, permanent);
        for _ in 0..10 {
            assert!(matches!(
                registry.send(&message()).await,
                Err(SendError::Permanent { .. })
            ));
        }
        assert!(registry.send(&message()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn a_misconfigured_channel_is_paused_at_once() {
        let (registry, calls) = registry(1, misconfigured);
        assert!(matches!(
            registry.send(&message()).await,
            Err(SendError::Misconfigured { .. })
        ));
        assert!(matches!(registry.send(&message()).await, Err(SendError::Paused { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
