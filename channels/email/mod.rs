//! Email through lettre: pooled SMTP, or `.eml` files for running without an
//! account. A message is `multipart/alternative` with a plain-text and an
//! HTML part, rendered from the view's message template's `email/subject`,
//! `email/body.txt` and `email/body.html` into an [`EmailMessage`], which
//! `send` encodes once (quoted-printable, in one pass) and hands to lettre
//! with its envelope.

mod config;
mod qp;

pub use config::{EmailConfig, Transport};

use std::borrow::Cow;

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::outbox::FileOutbox;
use super::{
    trimmed, Adapter, BuildContext, BuildError, Built, Channel, ChannelMessage, Prepared, Providers, Receipt, Request,
    SendError,
};
use crate::channels::ChannelsConfig;
use crate::domain::ChannelName;
use crate::render::{self, RenderError, Templates};

pub(super) const ADAPTER: Adapter = Adapter {
    name: ChannelName::Email,
    build,
    webhook: None,
};

fn build(config: &ChannelsConfig, _: &BuildContext, providers: Providers<'_>) -> Option<Result<Built, BuildError>> {
    let email = config.email.as_ref()?;
    let channel = match providers.files_for(ChannelName::Email) {
        None => EmailChannel::new(email),
        Some(dir) => EmailChannel::new(&EmailConfig {
            transport: Transport::File { dir },
            ..email.clone()
        }),
    };
    Some(channel.map(|c| Built::new(c, &email.limits)))
}

/// A message by email, rendered, before MIME encoding.
#[derive(Debug, Clone, Default)]
pub struct EmailMessage {
    /// The biller's own `From`; the channel's when `None`.
    pub from: Option<Mailbox>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The one-click unsubscribe URL (`List-Unsubscribe`, RFC 8058): the
    /// message's own pay-link token under `/u/`.
    pub unsubscribe: Option<String>,
}

impl ChannelMessage for EmailMessage {
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut parts = Vec::with_capacity(4);
        if let Some(from) = &self.from {
            parts.push(("from", Cow::Owned(from.to_string())));
        }
        parts.extend([
            ("subject", Cow::Borrowed(self.subject.as_str())),
            ("text", Cow::Borrowed(self.text.as_str())),
            ("html", Cow::Borrowed(self.html.as_str())),
        ]);
        parts
    }
}

enum Sender {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(FileOutbox),
}

pub struct EmailChannel {
    from: Mailbox,
    sender: Sender,
}

impl EmailChannel {
    pub fn new(config: &EmailConfig) -> Result<EmailChannel, BuildError> {
        let fail = |reason: String| BuildError {
            channel: ChannelName::Email,
            reason,
        };
        let sender = match &config.transport {
            Transport::Smtp {
                url,
                pool_size,
                timeout,
            } => {
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| fail(format!("smtp_url is not usable: {e}")))?;
                Sender::Smtp(
                    builder
                        .pool_config(PoolConfig::new().max_size(*pool_size))
                        .timeout(Some(*timeout))
                        .build(),
                )
            }
            Transport::File { dir } => Sender::File(FileOutbox::new(ChannelName::Email, dir)?),
        };
        Ok(EmailChannel {
            from: config.from.clone(),
            sender,
        })
    }

    fn build(&self, to: &str, message: &EmailMessage) -> Result<Message, SendError> {
        let permanent = |reason: String| SendError::Permanent { code: None, reason };
        // The invoice's address was checked as a lettre `Address` when it
        // was parsed; it carries no display name.
        let to: lettre::Address = to
            .parse()
            .map_err(|_| permanent("recipient is not a valid email address".into()))?;
        let message_id = format!("<{}@payrelay>", crate::domain::ids::random_id());
        let from = message.from.as_ref().unwrap_or(&self.from).clone();
        // Given, so lettre does not parse it back out of the headers.
        let envelope = Envelope::new(Some(from.email.clone()), vec![to.clone()])
            .map_err(|e| permanent(format!("cannot build the envelope: {e}")))?;
        let mut builder = Message::builder()
            .envelope(envelope)
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(message.subject.as_str())
            .message_id(Some(message_id))
            .header(header::MIME_VERSION_1_0);
        if let Some(url) = &message.unsubscribe {
            // RFC 8058: a mailbox provider POSTs `List-Unsubscribe=One-Click`
            // to the URL; the address stays out of it (the token names it).
            builder = builder
                .raw_header(header::HeaderValue::new(
                    header::HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(header::HeaderValue::new(
                    header::HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                qp::body(&message.text),
                qp::body(&message.html),
            ))
            .map_err(|e| permanent(format!("cannot build the email: {e}")))
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Email
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let [subject, text, html] = templates.render_message(request.view, render::EMAIL_PARTS)?;
        let message = EmailMessage {
            from: request.biller.email_from.clone(),
            subject: trimmed(subject),
            text,
            html,
            unsubscribe: unsubscribe_url(request.view.pay_url, request.token),
        };
        Ok(Prepared::new(ChannelName::Email, request.to, message))
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let email = self.build(&message.to, message.message::<EmailMessage>()?)?;
        let message_id = email
            .headers()
            .get_raw("Message-ID")
            .map(|id| id.trim_matches(['<', '>']).to_owned());
        match &self.sender {
            Sender::Smtp(smtp) => match smtp.send(email).await {
                Ok(_) => Ok(Receipt {
                    provider_message_id: message_id,
                }),
                Err(e) => Err(classify_smtp(&e)),
            },
            Sender::File(outbox) => outbox.write_file("eml", email.formatted()).await,
        }
    }
}

/// `{public_base_url}/u/{token}` from the message's pay link
/// `{public_base_url}/p/{token}`; `None` for a link of another shape (a
/// preview's).
fn unsubscribe_url(pay_url: &str, token: &str) -> Option<String> {
    let base = pay_url.strip_suffix(token)?.strip_suffix("/p/")?;
    (!token.is_empty()).then(|| format!("{base}/u/{token}"))
}

/// SMTP 5xx replies are permanent; 4xx replies, timeouts and connection
/// trouble are transient.
fn classify_smtp(e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(|c| c.to_string());
    let reason = e.to_string();
    if e.is_permanent() {
        SendError::Permanent { code, reason }
    } else {
        SendError::Transient {
            code,
            reason,
            retry_after: None,
        }
    }
}
