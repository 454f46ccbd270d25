//! Channel adapters: one folder per channel, all behind the [`Channel`] trait.
//!
//! Each folder has the same roles: `config.rs` (its `[channels.<name>]` keys,
//! checked completely) and `mod.rs` (rendering the message from templates and
//! sending it, with provider errors classified as transient or permanent).
//! The [`Registry`] owns the configured channels and puts each behind its own
//! governor rate limiter, so a caller cannot send around the limit.
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
pub mod sms;
pub mod whatsapp;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::config::{BillerConfig, ChannelsConfig};
use crate::invoice::Contacts;
use crate::render::{RenderError, Templates};

/// The channels payrelay knows. The contract fixes their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
            SendError::Transient { code, .. } | SendError::Permanent { code, .. } => code.as_deref(),
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

/// A configured channel with its rate limiter.
struct Entry {
    channel: Box<dyn Channel>,
    limiter: DefaultDirectRateLimiter,
}

/// The configured channels, each behind its own rate limit.
pub struct Registry {
    entries: BTreeMap<ChannelName, Entry>,
}

impl Registry {
    pub fn from_config(config: &ChannelsConfig, context: &BuildContext) -> Result<Registry, BuildError> {
        let mut registry = Registry {
            entries: BTreeMap::new(),
        };
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

    /// Adds a channel; used by `from_config` and by tests that bring their own.
    pub fn insert(&mut self, channel: Box<dyn Channel>, quota: Quota) {
        let name = channel.name();
        self.entries.insert(
            name,
            Entry {
                channel,
                limiter: RateLimiter::direct(quota),
            },
        );
    }

    pub fn get(&self, name: ChannelName) -> Option<&dyn Channel> {
        self.entries.get(&name).map(|e| e.channel.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = ChannelName> + '_ {
        self.entries.keys().copied()
    }

    /// Sends after waiting for the channel's rate limit.
    pub async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let entry = self.entries.get(&message.channel).ok_or_else(|| SendError::Permanent {
            code: None,
            reason: format!("channel {} is not configured", message.channel),
        })?;
        entry.limiter.until_ready().await;
        entry.channel.send(message).await
    }
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
