//! SMS: a short plain-text payment request with the pay link, sent through
//! Twilio's Messages API, or written as JSON files for running without an
//! account.
//!
//! Files: `config.rs` (`[channels.sms]`), `segments.rs` (what a body costs),
//! one file per provider behind the private `SmsProvider` seam (`twilio.rs`,
//! `file.rs`; Vonage or MessageBird would be one more), and here the
//! [`Channel`] that renders `sms/body` and refuses bodies over
//! `max_segments` before any provider is asked. `twilio.rs` also holds the
//! status callback helpers the HTTP server uses, re-exported below.

mod config;
mod file;
mod segments;
mod twilio;

pub use config::{Provider, SmsConfig, TwilioConfig, TwilioSender};
pub use segments::{Encoding, Segments};
pub use twilio::{parse_status, signature, status_callback_url, verify_signature};

use async_trait::async_trait;

use super::{BuildContext, BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

/// One SMS API. Implementations classify every failure as transient or
/// permanent, and never put the number or a credential in a reason.
#[async_trait]
trait SmsProvider: Send + Sync {
    /// Hands one text to the provider; `to` is E.164.
    async fn send(&self, to: &str, body: &str) -> Result<Receipt, SendError>;
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

    /// `text` is what goes out; `segments` (e.g. `1 (GSM-7)`) is for
    /// `payrelay preview` and is not sent.
    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let text = templates.render("sms/body", request.view)?.trim().to_owned();
        let segments = Segments::of(&text);
        Ok(Prepared {
            channel: ChannelName::Sms,
            to: request.to.to_owned(),
            parts: vec![("text", text), ("segments", segments.to_string())],
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let text = message.part("text").unwrap_or_default();
        if text.trim().is_empty() {
            return Err(SendError::Permanent {
                code: None,
                reason: "the SMS body is empty (check templates/sms/body.hbs)".into(),
            });
        }
        let segments = Segments::of(text);
        if segments.count > self.max_segments as usize {
            return Err(SendError::Permanent {
                code: None,
                reason: format!(
                    "the SMS needs {} segments ({}, {} characters), more than max_segments = {}; \
                     shorten templates/sms/body.hbs",
                    segments.count,
                    segments.encoding,
                    text.chars().count(),
                    self.max_segments
                ),
            });
        }
        self.provider.send(&message.to, text).await
    }
}
