//! Provider callbacks: the one small trait each adapter whose provider calls
//! back implements, and the request it reads.
//!
//! The server answers `/webhooks/<path>` for every path an adapter declares
//! (404 for any other) and hands each request to the adapter that claims
//! it: the only one on its path (Twilio), or the one the request names
//! (Meta posts both WhatsApp and Messenger to one path; its `object` says
//! which). The adapter checks the
//! signature, failing closed, before anything reads the content, then turns
//! the body into [`StatusReport`]s, and a customer's STOP or START reply
//! into an [`InboundReply`] (docs/debtors.md). Other incoming customer
//! messages and notifications are acknowledged and left alone.

use std::cell::OnceCell;
use std::collections::HashMap;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::StatusReport;
use crate::domain::debtor::Reply;
use crate::domain::ChannelName;

/// A customer's reply that stops or restarts messages to their address.
/// `Debug` hides the address: it is personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundReply {
    /// The customer's address as the provider gave it (E.164, with or
    /// without its `+`): hashed before it is kept.
    pub from: String,
    pub reply: Reply,
    /// How it came, in words, for the events (no address in it).
    pub how: &'static str,
}

impl std::fmt::Debug for InboundReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundReply")
            .field("reply", &self.reply)
            .field("how", &self.how)
            .finish_non_exhaustive()
    }
}

/// One provider request, as it arrived.
pub struct WebhookRequest<'a> {
    /// The query string, as signed (Twilio signs the full URL).
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The exact bytes the provider signed.
    pub body: &'a [u8],
    form: OnceCell<Vec<(String, String)>>,
}

impl<'a> WebhookRequest<'a> {
    pub fn new(query: Option<&'a str>, headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            query,
            headers,
            body,
            form: OnceCell::new(),
        }
    }

    /// A header's value, or `""` when it is missing or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The body's form fields, decoded once for both the check and the parse.
    pub fn form(&self) -> &[(String, String)] {
        self.form
            .get_or_init(|| url::form_urlencoded::parse(self.body).into_owned().collect())
    }
}

/// Why a request was refused (401): nothing in it is acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The channel has no secret to check the signature with; names the
    /// key that sets it.
    NoSecret(&'static str),
    /// The signature is missing, malformed or wrong.
    BadSignature,
}

/// What a subscription handshake (`GET`) comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The provider makes none on this path.
    NotOffered,
    /// Not a subscription with this channel's verify token.
    Refused,
    /// Echo this challenge back.
    Accepted(String),
}

/// A provider's status callbacks for one channel.
pub trait Webhook: Send + Sync {
    fn channel(&self) -> ChannelName;

    /// The provider's name, for log lines.
    fn provider(&self) -> &'static str;

    /// The path under `/webhooks/` the provider calls. Channels of one
    /// provider may share it; [`Webhook::claims`] then tells them apart.
    fn path(&self) -> &'static str;

    /// Whether the request is this channel's, from what the request says of
    /// itself: read before the signature is checked, only to pick the key.
    fn claims(&self, _request: &WebhookRequest<'_>) -> bool {
        true
    }

    /// Checks the signature over exactly what the provider signed, in
    /// constant time. Fails closed: no secret configured is a refusal.
    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Refused>;

    /// The delivery reports in a verified request; anything else in it is
    /// skipped. An error when the body is not the provider's shape at all.
    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<StatusReport>, String>;

    /// The STOP and START replies in a verified request (none by default).
    fn replies(&self, _request: &WebhookRequest<'_>) -> Vec<InboundReply> {
        Vec::new()
    }

    /// What a handled request is answered with.
    fn answer(&self) -> StatusCode {
        StatusCode::OK
    }

    /// Answers a subscription handshake (`GET` with the query's fields).
    fn handshake(&self, _query: &HashMap<String, String>) -> Handshake {
        Handshake::NotOffered
    }
}

/// Compares a secret with what a request offers, in constant time.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
