//! Channel adapters: one folder per channel, all behind the [`Channel`] trait.
//!
//! Each folder has the same roles: `config.rs` (its `[channels.<name>]` keys,
//! checked completely) and `mod.rs` (rendering the request into the
//! channel's own typed message and sending it, with provider errors
//! classified as transient or permanent), and an [`Adapter`] that says how
//! the channel is built and where its provider's status callbacks go
//! ([`webhook`]). The [`Registry`] owns the configured channels and puts
//! each behind its own governor rate limiter, so a caller cannot send around
//! the limit. With `[rate_limit]` configured, each channel also waits for
//! its share of the budget all instances share in Redis ([`ratelimit`]).
//!
//! Shared pieces: [`http`] (one reqwest client setup and the HTTP error
//! classes every provider shares), [`outbox`] (the `file` provider) and
//! [`meta`] (the Graph API shape WhatsApp and Messenger share).
//!
//! # Messages
//! `prepare` renders a message (the view's template: the first request or
//! a journey's reminder) into the channel's own message type
//! (an email's subject, text and HTML; an SMS body with its segment count;
//! a WhatsApp template with its parameters; a Messenger button template),
//! private to its folder. [`Prepared`] carries it to `send` without knowing
//! its type, as a [`ChannelMessage`]: the channel reads it back with
//! [`Prepared::message`], the one place it is downcast, so no channel looks
//! anything up by name and nothing goes through JSON on the way. Everyone
//! else sees the message only as named text parts
//! ([`ChannelMessage::parts`]): what `payrelay preview` prints and the
//! `file` provider writes.
//!
//! # Adding a channel
//! 1. A folder `channels/<name>/` with its `config.rs`, its message type, a
//!    [`Channel`] and an `ADAPTER` (how it is built, with its configured
//!    provider or a `file` one; its [`webhook::Webhook`] if its provider
//!    calls back).
//! 2. One line in [`ADAPTERS`]: the registry, `payrelay preview` and the
//!    server's `/webhooks/...` routes all read that list.
//!
//! Outside the folder, what other layers must know of a channel: its
//! [`ChannelName`] variant in the domain layer (with the contact it reads
//! in [`crate::invoice::Contacts::address`], and a new contact field on the
//! invoice if no existing one is its address), and its field in
//! [`ChannelsConfig`] with the line in `config/raw.rs` that checks it.

pub mod email;
pub mod http;
pub mod messenger;
pub mod meta;
pub mod outbox;
pub mod ratelimit;
pub mod sms;
pub mod webhook;
pub mod whatsapp;

use email::EmailConfig;
use messenger::MessengerConfig;
use sms::SmsConfig;
use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use whatsapp::WhatsappConfig;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::domain::ChannelName;
use crate::metrics::Metrics;
use crate::render::{RenderError, Templates, View};
use crate::settings::BillerConfig;
pub use crate::settings::Limits;
use ratelimit::{ChannelBudget, SharedLimiter};
use webhook::Webhook;

/// Every channel payrelay can send on, one line each (see the module doc).
pub const ADAPTERS: &[Adapter] = &[email::ADAPTER, sms::ADAPTER, whatsapp::ADAPTER, messenger::ADAPTER];

/// What a channel folder registers in [`ADAPTERS`].
pub struct Adapter {
    pub name: ChannelName,
    /// The channel and its quota, from its `[channels.<name>]` section;
    /// `None` when the section is absent.
    pub build: BuildFn,
    /// Its provider's status callbacks, for a provider that sends them.
    /// Built whether the channel is configured or not: an unconfigured one
    /// has no secret, so it refuses every request (401) rather than being
    /// an unknown path.
    pub webhook: Option<WebhookFn>,
}

/// [`Adapter::build`].
pub type BuildFn = fn(&ChannelsConfig, &BuildContext, Providers<'_>) -> Option<Result<Built, BuildError>>;

/// [`Adapter::webhook`].
pub type WebhookFn = fn(&ChannelsConfig, &BuildContext) -> Box<dyn Webhook>;

/// A channel built by its [`Adapter`], with the quota its config sets.
pub struct Built {
    pub channel: Box<dyn Channel>,
    pub quota: Quota,
}

impl Built {
    pub fn new(channel: impl Channel + 'static, limits: &Limits) -> Built {
        Built {
            channel: Box::new(channel),
            quota: limits.quota(),
        }
    }
}

/// Which providers channels are built with.
#[derive(Debug, Clone, Copy)]
pub enum Providers<'a> {
    /// The configured ones.
    Configured,
    /// Every channel on its `file` provider, under `<dir>/<channel>/`:
    /// `payrelay preview` prepares with the configured channels but must not
    /// touch their outboxes or open provider connections.
    Files(&'a Path),
}

impl Providers<'_> {
    /// The folder `channel`'s `file` provider writes to instead of its
    /// configured provider, if any.
    pub fn files_for(self, channel: ChannelName) -> Option<PathBuf> {
        match self {
            Providers::Configured => None,
            Providers::Files(dir) => Some(dir.join(channel.as_str())),
        }
    }
}

/// The status callbacks of every channel whose provider sends them.
pub fn webhooks(config: &ChannelsConfig, context: &BuildContext) -> Vec<Box<dyn Webhook>> {
    ADAPTERS
        .iter()
        .filter_map(|adapter| adapter.webhook)
        .map(|webhook| webhook(config, context))
        .collect()
}

/// A message rendered exactly as it will be sent: the channel's own typed
/// message, which only that channel reads back (see the module doc).
///
/// Cloning is cheap: the message is shared, not copied.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub channel: ChannelName,
    /// The recipient's address on the channel (personal data: never logged).
    pub to: String,
    message: Arc<dyn ChannelMessage>,
}

/// A channel's own message type, carried by [`Prepared`].
pub trait ChannelMessage: Any + Send + Sync + fmt::Debug {
    /// The message as named text parts, in a fixed order: what `payrelay
    /// preview` prints and the `file` provider writes. Facts that are not
    /// sent (an SMS's segment count) may be parts too.
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)>;
}

impl Prepared {
    pub fn new(channel: ChannelName, to: impl Into<String>, message: impl ChannelMessage) -> Prepared {
        Prepared {
            channel,
            to: to.into(),
            message: Arc::new(message),
        }
    }

    /// The channel's own message, if it is of type `M`: a channel asks for
    /// its own type, so anything else is a message prepared elsewhere.
    pub fn message<M: ChannelMessage>(&self) -> Result<&M, SendError> {
        let message: &dyn Any = &*self.message;
        message.downcast_ref::<M>().ok_or_else(|| SendError::Permanent {
            code: None,
            reason: format!(
                "the {} message was not prepared by this channel (it is no {})",
                self.channel,
                std::any::type_name::<M>()
            ),
        })
    }

    /// See [`ChannelMessage::parts`].
    pub fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        self.message.parts()
    }

    /// One of [`Prepared::parts`], for tools and tests; channels read their
    /// own typed message instead.
    pub fn part(&self, name: &str) -> Option<Cow<'_, str>> {
        self.parts().into_iter().find(|(n, _)| *n == name).map(|(_, text)| text)
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

/// Everything a channel needs to render one message.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The customer's address on this channel (personal data: never logged).
    pub to: &'a str,
    /// This message's pay-link token (WhatsApp's URL button takes it as suffix).
    pub token: &'a str,
    /// The template data, `pay_url` included, and which message it is
    /// ([`View::template`]).
    pub view: &'a View<'a>,
    pub biller: &'a BillerConfig,
}

/// What channels need to know about the service when they are built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Where provider status callbacks reach payrelay.
    pub public_base_url: url::Url,
}

/// Every channel's `[channels.<name>]` section, checked; `None` where absent.
#[derive(Debug, Clone, Default)]
pub struct ChannelsConfig {
    pub email: Option<EmailConfig>,
    pub sms: Option<SmsConfig>,
    pub whatsapp: Option<WhatsappConfig>,
    pub messenger: Option<MessengerConfig>,
}

impl ChannelsConfig {
    pub fn is_configured(&self, name: ChannelName) -> bool {
        match name {
            ChannelName::Email => self.email.is_some(),
            ChannelName::Sms => self.sms.is_some(),
            ChannelName::Whatsapp => self.whatsapp.is_some(),
            ChannelName::Messenger => self.messenger.is_some(),
        }
    }

    /// The folder of `channel`'s `file` provider, when it has one: where
    /// copies of the messages it "sent" are, which an erasure removes.
    pub fn file_outbox_dir(&self, name: ChannelName) -> Option<&Path> {
        match name {
            ChannelName::Email => match &self.email.as_ref()?.transport {
                email::Transport::File { dir } => Some(dir),
                email::Transport::Smtp { .. } => None,
            },
            ChannelName::Sms => match &self.sms.as_ref()?.provider {
                sms::Provider::File { dir } => Some(dir),
                sms::Provider::Twilio(_) => None,
            },
            ChannelName::Whatsapp => match &self.whatsapp.as_ref()?.provider {
                whatsapp::WhatsappProvider::File { dir } => Some(dir),
                whatsapp::WhatsappProvider::Meta { .. } => None,
            },
            ChannelName::Messenger => match &self.messenger.as_ref()?.provider {
                messenger::MessengerProvider::File { dir } => Some(dir),
                messenger::MessengerProvider::Meta(_) => None,
            },
        }
    }
}

/// One way of reaching a customer.
#[async_trait]
pub trait Channel: Send + Sync {
    fn name(&self) -> ChannelName;

    /// Renders the view's message from the channel's templates into its
    /// own message type, exactly as it will be sent.
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

    /// Counts a send's result; says when it paused the channel, or was the
    /// first success after a pause.
    fn record(&self, result: &Result<Receipt, SendError>) -> Option<BreakerChange> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                let was_paused = state.open_until.is_some();
                *state = BreakerState::default();
                was_paused.then_some(BreakerChange::Resumed)
            }
            Err(SendError::Misconfigured { .. }) => {
                state.failures_in_a_row = self.policy.failures;
                state.open_until = Some(Instant::now() + self.policy.pause);
                Some(BreakerChange::Paused("misconfigured"))
            }
            Err(e) if e.is_transient() => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                if state.failures_in_a_row >= self.policy.failures {
                    state.open_until = Some(Instant::now() + self.policy.pause);
                    return Some(BreakerChange::Paused("failures"));
                }
                None
            }
            Err(_) => None,
        }
    }
}

/// What a send's result did to its channel's breaker, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerChange {
    /// Opened, for this reason (`failures`, `misconfigured`).
    Paused(&'static str),
    /// Closed by a success after a pause.
    Resumed,
}

/// The configured channels, each behind its own rate limit and breaker.
pub struct Registry {
    entries: BTreeMap<ChannelName, Entry>,
    breaker: BreakerPolicy,
    shared: Option<Arc<SharedLimiter>>,
    /// Where pauses are reported (`payrelay_channel_paused`), when given.
    metrics: Option<Arc<Metrics>>,
}

impl Registry {
    /// Every configured channel on its configured provider.
    pub fn from_config(config: &ChannelsConfig, context: &BuildContext) -> Result<Registry, BuildError> {
        Registry::with_providers(config, context, Providers::Configured)
    }

    /// Every configured channel, each built by its [`Adapter`] with `providers`.
    pub fn with_providers(
        config: &ChannelsConfig,
        context: &BuildContext,
        providers: Providers<'_>,
    ) -> Result<Registry, BuildError> {
        let mut registry = Registry::empty(BreakerPolicy::default());
        for adapter in ADAPTERS {
            if let Some(built) = (adapter.build)(config, context, providers) {
                let built = built?;
                registry.insert(built.channel, built.quota);
            }
        }
        Ok(registry)
    }

    /// A registry with no channels yet, for tests that bring their own.
    pub fn empty(breaker: BreakerPolicy) -> Registry {
        Registry {
            entries: BTreeMap::new(),
            breaker,
            shared: None,
            metrics: None,
        }
    }

    /// Reports every channel's pauses, present and inserted later, in
    /// `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Registry {
        for name in self.entries.keys() {
            metrics.channel_known(*name);
        }
        self.metrics = Some(metrics);
        self
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
        if let Some(metrics) = &self.metrics {
            metrics.channel_known(name);
        }
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
        let change = entry.breaker.record(&result);
        if let (Some(change), Some(metrics)) = (change, &self.metrics) {
            match change {
                BreakerChange::Paused(reason) => metrics.channel_paused(message.channel, reason),
                BreakerChange::Resumed => metrics.channel_resumed(message.channel),
            }
        }
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

/// `text` without leading and trailing whitespace, trimmed in place: a
/// rendered template is trimmed on every message, and most need no copy.
pub(crate) fn trimmed(mut text: String) -> String {
    text.truncate(text.trim_end().len());
    let leading = text.len() - text.trim_start().len();
    text.drain(..leading);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
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

    /// A message no real channel reads; these channels never look inside.
    #[derive(Debug)]
    struct Blank;

    impl ChannelMessage for Blank {
        fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
            Vec::new()
        }
    }

    fn message() -> Prepared {
        Prepared::new(ChannelName::Sms, "+15005550006", Blank)
    }

    #[test]
    fn every_channel_is_registered_once() {
        let mut registered: Vec<ChannelName> = ADAPTERS.iter().map(|a| a.name).collect();
        registered.sort();
        assert_eq!(registered, ChannelName::ALL.to_vec());
    }

    #[test]
    fn a_channel_reads_back_only_its_own_message_type() {
        #[derive(Debug)]
        struct Other;
        impl ChannelMessage for Other {
            fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
                vec![("text", "other".into())]
            }
        }
        let blank = message();
        assert!(blank.message::<Blank>().is_ok());
        let wrong = blank.message::<Other>().unwrap_err();
        assert!(!wrong.is_transient(), "{wrong}");
        let other = Prepared::new(ChannelName::Sms, "+15005550006", Other);
        assert_eq!(other.part("text").as_deref(), Some("other"));
        assert_eq!(other.clone().part("text").as_deref(), Some("other"));
        assert!(other.message::<Blank>().is_err());
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

    /// The sample of `name{labels}` in the exposition, if there is one.
    fn sample(metrics: &Metrics, series: &str) -> Option<String> {
        let text = metrics.render();
        let line = text.lines().find(|l| l.starts_with(&format!("{series} ")))?;
        line.rsplit(' ').next().map(str::to_owned)
    }

    #[tokio::test]
    async fn a_pause_shows_in_the_metrics_from_when_it_starts_until_a_send_succeeds() {
        let (registry, _) = registry(4, transient);
        let metrics = Arc::new(Metrics::new());
        let registry = registry.with_metrics(metrics.clone());
        let paused = r#"payrelay_channel_paused{channel="sms"}"#;
        let pauses = r#"payrelay_channel_pauses_total{channel="sms",reason="failures"}"#;
        assert_eq!(
            sample(&metrics, paused).as_deref(),
            Some("0"),
            "a configured channel shows, not paused"
        );
        for _ in 0..3 {
            assert!(registry.send(&message()).await.is_err());
        }
        assert_eq!(sample(&metrics, paused).as_deref(), Some("1"));
        assert_eq!(sample(&metrics, pauses).as_deref(), Some("1"));

        // A failing probe pauses it again; it stays paused in between.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(sample(&metrics, paused).as_deref(), Some("1"), "not known to work yet");
        assert!(registry.send(&message()).await.unwrap_err().is_transient());
        assert_eq!(sample(&metrics, pauses).as_deref(), Some("2"));

        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(registry.send(&message()).await.is_ok());
        assert_eq!(sample(&metrics, paused).as_deref(), Some("0"));
        assert_eq!(sample(&metrics, pauses).as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn a_misconfigured_channel_counts_its_pause_as_such() {
        let (registry, _) = registry(1, misconfigured);
        let metrics = Arc::new(Metrics::new());
        let registry = registry.with_metrics(metrics.clone());
        assert!(registry.send(&message()).await.is_err());
        let pauses = r#"payrelay_channel_pauses_total{channel="sms",reason="misconfigured"}"#;
        assert_eq!(sample(&metrics, pauses).as_deref(), Some("1"));
    }
}
