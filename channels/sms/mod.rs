//! SMS: a short plain-text payment request with the pay link, sent through
//! Twilio's Messages API, or written as JSON files for running without an
//! account.
//!
//! Files: `config.rs` (`[channels.sms]`), `segments.rs` (what a body costs),
//! one file per provider behind the private `SmsProvider` seam (`twilio.rs`,
//! `file.rs`; Vonage or MessageBird would be one more), and here the
//! [`Channel`] that renders the view's message template's `sms/body` into
//! an `SmsMessage` (the body and its segment count, counted once) and
//! refuses bodies over `max_segments` before any provider is asked. `twilio.rs` also holds Twilio's status
//! callback ([`Webhook`](crate::channels::webhook::Webhook)) and its
//! signature helpers, re-exported below.

mod config;
mod file;
mod segments;
mod twilio;

pub use config::{Provider, SmsConfig, TwilioConfig, TwilioSender};
pub use segments::{Encoding, Segments};
pub use twilio::{parse_status, signature, status_callback_url, verify_signature};

use std::borrow::Cow;

use async_trait::async_trait;

use super::{
    trimmed, Adapter, BuildContext, BuildError, Built, Channel, ChannelMessage, Prepared, Providers, Receipt, Request,
    SendError,
};
use crate::channels::ChannelsConfig;
use crate::domain::ChannelName;
use crate::render::{self, RenderError, Templates};

pub(super) const ADAPTER: Adapter = Adapter {
    name: ChannelName::Sms,
    build,
    webhook: Some(twilio::webhook),
};

fn build(
    config: &ChannelsConfig,
    context: &BuildContext,
    providers: Providers<'_>,
) -> Option<Result<Built, BuildError>> {
    let sms = config.sms.as_ref()?;
    let channel = match providers.files_for(ChannelName::Sms) {
        None => SmsChannel::new(sms, context),
        Some(dir) => SmsChannel::new(
            &SmsConfig {
                provider: Provider::File { dir },
                ..sms.clone()
            },
            context,
        ),
    };
    Some(channel.map(|c| Built::new(c, &sms.limits)))
}

/// One SMS body and what it costs.
#[derive(Debug, Clone)]
struct SmsMessage {
    text: String,
    segments: Segments,
    /// The template file it was rendered from, for the operator to fix.
    source: String,
}

impl ChannelMessage for SmsMessage {
    /// `segments` (e.g. `1 (GSM-7)`) is for `payrelay preview` and the
    /// outbox file; it is not sent.
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        vec![
            ("text", Cow::Borrowed(self.text.as_str())),
            ("segments", Cow::Owned(self.segments.to_string())),
        ]
    }
}

/// One SMS API. Implementations classify every failure as transient or
/// permanent, and never put the number or a credential in a reason.
#[async_trait]
trait SmsProvider: Send + Sync {
    /// Hands one message to the provider; `to` is E.164.
    async fn send(&self, to: &str, message: &SmsMessage) -> Result<Receipt, SendError>;
}

pub struct SmsChannel {
    provider: Box<dyn SmsProvider>,
    max_segments: u32,
}

impl SmsChannel {
    pub fn new(config: &SmsConfig, context: &BuildContext) -> Result<SmsChannel, BuildError> {
        let provider: Box<dyn SmsProvider> = match &config.provider {
            Provider::Twilio(twilio) => Box::new(twilio::Twilio::new(twilio, context)?),
            Provider::File { dir } => Box::new(file::File::new(dir)?),
        };
        Ok(SmsChannel {
            provider,
            max_segments: config.max_segments,
        })
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Sms
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let [text] = templates.render_message(request.view, render::SMS_PARTS)?;
        let text = trimmed(text);
        let segments = Segments::of(&text);
        let source = format!(
            "templates/<locale>/{}.hbs",
            render::part_name(request.view.template, "sms/body")
        );
        Ok(Prepared::new(
            ChannelName::Sms,
            request.to,
            SmsMessage { text, segments, source },
        ))
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let sms = message.message::<SmsMessage>()?;
        if sms.text.trim().is_empty() {
            return Err(SendError::Permanent {
                code: None,
                reason: format!("the SMS body is empty (check {})", sms.source),
            });
        }
        if sms.segments.count > self.max_segments as usize {
            return Err(SendError::Permanent {
                code: None,
                reason: format!(
                    "the SMS needs {} segments ({}, {} characters), more than max_segments = {}; \
                     shorten {}",
                    sms.segments.count,
                    sms.segments.encoding,
                    sms.text.chars().count(),
                    self.max_segments,
                    sms.source
                ),
            });
        }
        self.provider.send(&message.to, sms).await
    }
}
