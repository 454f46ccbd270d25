//! Email through lettre: pooled SMTP, or `.eml` files for running without an
//! account. A payment request is `multipart/alternative` with a plain-text
//! and an HTML part, rendered from `email/subject`, `email/body.txt` and
//! `email/body.html`.

mod config;
mod qp;

pub use config::{EmailConfig, Transport};

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::outbox::FileOutbox;
use super::{BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

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

    fn build(&self, message: &Prepared) -> Result<Message, SendError> {
        let permanent = |reason: String| SendError::Permanent { code: None, reason };
        // The invoice's address was checked as a lettre `Address` when it
        // was parsed; it carries no display name.
        let to: lettre::Address = message
            .to
            .parse()
            .map_err(|_| permanent("recipient is not a valid email address".into()))?;
        let part = |name: &str| message.part(name).unwrap_or_default();
        let message_id = format!("<{}@payrelay>", crate::paylink::random_id());
        // A biller's own From, checked when the config was loaded.
        let from: Mailbox = match message.part("from") {
            Some(f) => f
                .parse()
                .map_err(|_| permanent("the biller's email_from is not a mailbox".into()))?,
            None => self.from.clone(),
        };
        // Given, so lettre does not parse it back out of the headers.
        let envelope = Envelope::new(Some(from.email.clone()), vec![to.clone()])
            .map_err(|e| permanent(format!("cannot build the envelope: {e}")))?;
        Message::builder()
            .envelope(envelope)
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(part("subject"))
            .message_id(Some(message_id))
            .header(header::MIME_VERSION_1_0)
            .multipart(MultiPart::alternative_plain_html(
                qp::body(part("text")),
                qp::body(part("html")),
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
        let view = request.view;
        let [subject, text, html] =
            templates.render_each(["email/subject", "email/body.txt", "email/body.html"], view)?;
        let mut parts = vec![("subject", subject.trim().to_owned()), ("text", text), ("html", html)];
        if let Some(from) = &request.biller.email_from {
            parts.insert(0, ("from", from.to_string()));
        }
        Ok(Prepared {
            channel: ChannelName::Email,
            to: request.to.to_owned(),
            parts,
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let email = self.build(message)?;
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
