//! What WhatsApp Cloud and Messenger share, both being Graph API products:
//!
//! - the `[channels.*]` keys for reaching the Graph API ([`GraphConfig`]),
//! - one client that posts JSON with the token in an `Authorization` header
//!   (never in the URL, where it could reach a log line),
//! - the Graph error shape and the one place that decides transient or
//!   permanent for both channels (by the Graph error `code`, not the HTTP
//!   status),
//! - their status callbacks on the one path Meta posts both to,
//!   `/webhooks/meta`: a `GraphWebhook` per channel, which claims the
//!   requests whose `object` is the one its channel declares, checks them
//!   with [`verify_signature`] and reads them with [`parse_webhook`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use url::Url;

use super::webhook::{constant_time_eq, Handshake, InboundReply, Refused, Webhook, WebhookRequest};
use super::{http, BuildError, DeliveryStatus, SendError, StatusReport};
use crate::domain::debtor::{reply_word, Reply};
use crate::domain::ChannelName;
use crate::settings::{duration, secret, EnvLookup};
use crate::settings::{Problems, Secret};

/// The Graph API version payrelay was written against; configurable.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v21.0";

/// The path under `/webhooks/` Meta posts every channel's callbacks to.
const WEBHOOK_PATH: &str = "meta";

/// WhatsApp's pair rate limit allows about one message per 6 s to the same
/// user; a 131056 without `Retry-After` waits at least this long.
const PAIR_RATE_WAIT: Duration = Duration::from_secs(6);

/// Provider text kept in a reason; Graph messages are short, proxies' HTML is not.
const MAX_PROVIDER_TEXT: usize = 300;

/// Where a Meta channel reaches the Graph API.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Includes the API version, e.g. `https://graph.facebook.com/v21.0`.
    pub base_url: Url,
    /// WhatsApp's system-user token or Messenger's page access token.
    pub access_token: Secret,
    /// Bounds each request: a hanging provider must not hold an invoice.
    pub timeout: Duration,
}

impl GraphConfig {
    /// Reads `base_url`, the token key and `timeout`, reporting each problem
    /// under its key. The token is required: the caller only asks for a
    /// Graph config when `provider = "meta"`.
    pub(crate) fn check(
        prefix: &str,
        base_url: Option<&str>,
        (token_key, token): (&str, Option<String>),
        timeout: Option<&str>,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<GraphConfig> {
        let key = |k: &str| format!("{prefix}.{k}");
        let base_text = base_url.unwrap_or(DEFAULT_BASE_URL);
        let base_url = match Url::parse(base_text) {
            // A query would be cut off by the paths appended to it, and a
            // token put there would reach logs: neither is allowed.
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                problems.push(
                    key("base_url"),
                    "must not have a query or fragment (the token goes in access_token keys)",
                );
                None
            }
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && !u.cannot_be_a_base() => Some(u),
            _ => {
                problems.push(
                    key("base_url"),
                    format!("\"{base_text}\" is not an http(s) URL like {DEFAULT_BASE_URL}"),
                );
                None
            }
        };
        let access_token = match token {
            Some(t) if t.trim().is_empty() => {
                problems.push(key(token_key), "must not be empty");
                None
            }
            Some(t) => secret(&key(token_key), Some(t), env, problems),
            None => {
                problems.push(
                    key(token_key),
                    "is required when provider = \"meta\" (use \"env:NAME\" to read it from the environment)",
                );
                None
            }
        };
        let timeout = duration(&key("timeout"), timeout.unwrap_or("10s"), problems);
        Some(GraphConfig {
            base_url: base_url?,
            access_token: access_token?,
            timeout: timeout?,
        })
    }
}

/// `provider`: `"meta"` or `"file"` (the default, so a fresh checkout runs
/// without accounts). `None` after reporting anything else.
pub(crate) fn provider_is_meta(prefix: &str, provider: Option<&str>, problems: &mut Problems) -> Option<bool> {
    match provider.unwrap_or("file") {
        "meta" => Some(true),
        "file" => Some(false),
        other => {
            problems.push(
                format!("{prefix}.provider"),
                format!("\"{other}\" is not a provider; use \"meta\" or \"file\""),
            );
            None
        }
    }
}

/// The `file` provider's folder, resolved against the config's folder.
pub(crate) fn outbox_dir(base_dir: &Path, configured: Option<&str>, channel: ChannelName) -> PathBuf {
    let default = format!("var/outbox/{channel}");
    crate::settings::resolve(base_dir, Path::new(configured.unwrap_or(&default)))
}

/// Posts JSON to the Graph API for one channel.
pub(crate) struct GraphClient {
    http: reqwest::Client,
    /// Without a trailing slash, so paths join with one `/`.
    base_url: String,
    token: Secret,
}

impl GraphClient {
    pub(crate) fn new(channel: ChannelName, config: &GraphConfig) -> Result<GraphClient, BuildError> {
        Ok(GraphClient {
            http: http::client(channel, config.timeout)?,
            base_url: config.base_url.as_str().trim_end_matches('/').to_owned(),
            token: config.access_token.clone(),
        })
    }

    /// POSTs `body` to `{base_url}/{path}` and returns the body of a 2xx
    /// answer, or the classified error. `recipient` is scrubbed from any
    /// provider text that ends up in the error.
    pub(crate) async fn post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        recipient: &str,
    ) -> Result<Vec<u8>, SendError> {
        let url = format!("{}/{}", self.base_url, path);
        let response = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| http::transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| http::transport_error(&e))?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            let recipient_digits = recipient.trim_start_matches('+');
            Err(classify(
                status,
                &headers,
                &bytes,
                &[self.token.expose(), recipient, recipient_digits],
            ))
        }
    }
}

/// `{"error": {...}}`: every field optional, so an odd answer still classifies.
#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GraphError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<Value>,
    error_subcode: Option<Value>,
    error_data: Option<Value>,
    error_user_msg: Option<String>,
    is_transient: Option<bool>,
    fbtrace_id: Option<String>,
}

/// Graph sends codes as numbers; a string is accepted too.
fn number(v: &Option<Value>) -> Option<i64> {
    match v.as_ref()? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Class {
    Transient,
    Permanent,
    /// The token is refused: no message can go out until it is replaced.
    Misconfigured,
}

/// The class of a Graph error code Meta documents, with the words
/// operators see. `None`: a code not listed here; the HTTP status decides.
fn class_of(code: i64, subcode: Option<i64>) -> Option<(Class, &'static str)> {
    use Class::{Misconfigured, Permanent, Transient};
    Some(match (code, subcode) {
        (130429, _) => (Transient, "WhatsApp throughput limit reached"),
        (131056, _) => (Transient, "too many messages to this recipient in a short time"),
        // 4 app, 17 user, 32 page, 613 custom: Graph's documented call
        // limits; 80006 and 80007 are Messenger's and WhatsApp's.
        (4 | 17 | 32 | 613 | 80006 | 80007, _) => (Transient, "Graph API call limit reached"),
        (131000 | 1 | 2, _) => (Transient, "Meta service error"),
        (131047, _) => (Permanent, "more than 24 hours since the customer last wrote"),
        (131026, _) => (Permanent, "message undeliverable to this recipient"),
        (132000, _) => (
            Permanent,
            "the template's parameter count does not match the parameters sent",
        ),
        (132001, _) => (
            Permanent,
            "the template does not exist or is not approved in this language",
        ),
        (131048, _) => (Permanent, "spam rate limit hit"),
        (131049, _) => (Permanent, "per-user marketing limit reached"),
        (190, _) => (Misconfigured, "the access token is invalid or expired"),
        (10, Some(2018278)) => (Permanent, "outside the window in which this message is allowed"),
        (551, Some(1545041)) => (Permanent, "this person is not available"),
        _ => return None,
    })
}

/// The one decision, for both channels, of what a Graph error answer means.
///
/// Branches on the Graph `code` ([`class_of`]), not the HTTP status; unknown
/// codes and non-Graph answers fall back to [`http::by_status`]. Every
/// string in `scrub` (the token, the recipient) is cut from provider text,
/// which is then masked by [`crate::redact::text`].
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], scrub: &[&str]) -> SendError {
    let Ok(GraphErrorBody { error }) = serde_json::from_slice::<GraphErrorBody>(body) else {
        let text = clean(&String::from_utf8_lossy(body), scrub);
        let reason = if text.is_empty() {
            format!("Meta answered HTTP {}", status.as_u16())
        } else {
            format!("Meta answered HTTP {}: {text}", status.as_u16())
        };
        return http::by_status(status, headers, None, reason);
    };
    let code = number(&error.code);
    let subcode = number(&error.error_subcode);
    let provider_text = describe(&error, subcode, scrub);
    let code_text = code.map(|c| c.to_string());
    match code.and_then(|c| class_of(c, subcode)) {
        Some((class, label)) => {
            let reason = format!("{label}: {provider_text}");
            match class {
                Class::Transient => {
                    let mut retry_after = http::retry_after(headers);
                    if code == Some(131056) {
                        retry_after = retry_after.or(Some(PAIR_RATE_WAIT));
                    }
                    SendError::Transient {
                        code: code_text,
                        reason,
                        retry_after,
                    }
                }
                Class::Permanent => SendError::Permanent {
                    code: code_text,
                    reason,
                },
                Class::Misconfigured => SendError::Misconfigured {
                    code: code_text,
                    reason,
                },
            }
        }
        // Graph marks some errors as transient itself; believe it.
        None if error.is_transient == Some(true) => SendError::Transient {
            code: code_text,
            reason: provider_text,
            retry_after: http::retry_after(headers),
        },
        None => http::by_status(status, headers, code_text, provider_text),
    }
}

/// The provider's own words: message, details, subcode, trace id.
fn describe(error: &GraphError, subcode: Option<i64>, scrub: &[&str]) -> String {
    let mut text = error
        .message
        .as_deref()
        .or(error.error_user_msg.as_deref())
        .map(|m| clean(m, scrub))
        .unwrap_or_else(|| "no message".to_owned());
    let details = error
        .error_data
        .as_ref()
        .and_then(|d| d.get("details"))
        .and_then(Value::as_str)
        .map(|d| clean(d, scrub))
        .filter(|d| !d.is_empty() && !text.contains(d.as_str()));
    if let Some(details) = details {
        text.push_str(" (");
        text.push_str(&details);
        text.push(')');
    }
    if let Some(kind) = &error.kind {
        text.push_str(&format!(" [{}]", clean(kind, scrub)));
    }
    if let Some(subcode) = subcode {
        text.push_str(&format!(" subcode {subcode}"));
    }
    if let Some(trace) = &error.fbtrace_id {
        text.push_str(&format!(" fbtrace_id {}", clean(trace, scrub)));
    }
    text
}

/// Provider text made safe for a log line: secrets and recipients cut,
/// personal data masked, length bounded.
fn clean(text: &str, scrub: &[&str]) -> String {
    let mut text = text.trim().to_owned();
    for s in scrub.iter().filter(|s| s.len() >= 3) {
        text = text.replace(s, "[redacted]");
    }
    let mut text = crate::redact::text(&text);
    if text.chars().count() > MAX_PROVIDER_TEXT {
        text = text.chars().take(MAX_PROVIDER_TEXT).collect::<String>() + "…";
    }
    text
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>`
/// over the raw body, in constant time. Fails closed: an empty secret, a
/// missing prefix or bad hex is `false`.
pub fn verify_signature(app_secret: &str, body: &[u8], header: &str) -> bool {
    if app_secret.is_empty() {
        return false;
    }
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time (it uses `subtle`).
    mac.verify_slice(&expected).is_ok()
}

/// One Meta channel's status callbacks, told apart from the other's by the
/// `object` its channel declares.
pub(crate) struct GraphWebhook {
    pub(crate) channel: ChannelName,
    /// `object` of this channel's callbacks, e.g. `page`.
    pub(crate) object: &'static str,
    /// Signs every callback: `X-Hub-Signature-256`.
    pub(crate) app_secret: Option<Secret>,
    /// What Meta offers in the subscription handshake.
    pub(crate) verify_token: Option<Secret>,
}

impl Webhook for GraphWebhook {
    fn channel(&self) -> ChannelName {
        self.channel
    }

    fn provider(&self) -> &'static str {
        "Meta"
    }

    fn path(&self) -> &'static str {
        WEBHOOK_PATH
    }

    /// Only `object` is read, to pick the key that must have signed the body.
    fn claims(&self, request: &WebhookRequest<'_>) -> bool {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            object: Option<Cow<'a, str>>,
        }
        serde_json::from_slice::<Envelope<'_>>(request.body)
            .ok()
            .and_then(|e| e.object)
            .is_some_and(|object| object == self.object)
    }

    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Refused> {
        let Some(secret) = &self.app_secret else {
            return Err(Refused::NoSecret("app_secret"));
        };
        if verify_signature(secret.expose(), request.body, request.header("x-hub-signature-256")) {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<StatusReport>, String> {
        parse_webhook(request.body).map(|webhook| webhook.reports)
    }

    /// WhatsApp customers' stop and start words (text or quick-reply
    /// button); Messenger has none.
    fn replies(&self, request: &WebhookRequest<'_>) -> Vec<InboundReply> {
        match self.channel {
            ChannelName::Whatsapp => whatsapp_replies(request.body),
            _ => Vec::new(),
        }
    }

    /// Echoes the challenge of a subscription offering this channel's token.
    fn handshake(&self, query: &HashMap<String, String>) -> Handshake {
        let field = |name: &str| query.get(name).map(String::as_str);
        let offered = field("hub.verify_token").unwrap_or_default();
        let ours = self
            .verify_token
            .as_ref()
            .is_some_and(|token| constant_time_eq(token.expose(), offered));
        if field("hub.mode") == Some("subscribe") && ours {
            Handshake::Accepted(field("hub.challenge").unwrap_or_default().to_owned())
        } else {
            Handshake::Refused
        }
    }
}

/// A Meta webhook POST, reduced to what payrelay acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaWebhook {
    /// `whatsapp_business_account` or `page`: names the channel, and so the
    /// `app_secret` that must have signed the body.
    pub object: String,
    pub reports: Vec<StatusReport>,
}

/// The envelope; entries stay loose JSON so one odd entry cannot sink the rest.
#[derive(Deserialize)]
struct WebhookBody {
    object: String,
    #[serde(default)]
    entry: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WhatsappStatus {
    id: Option<String>,
    status: Option<String>,
    errors: Vec<WhatsappStatusError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WhatsappStatusError {
    code: Option<Value>,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessengerDelivery {
    mids: Vec<String>,
}

/// Parses a Meta webhook body into status reports.
///
/// Lenient: unknown fields, other change kinds (incoming messages, template
/// updates) and malformed single items are skipped, so one odd item does not
/// lose the others. An error only when the body is not JSON with an `object`.
///
/// - WhatsApp `entry[].changes[].value.statuses[]`: `delivered`, `read`,
///   `failed` (with `errors[0]`); `sent` is already known from the send.
/// - Messenger `entry[].messaging[].delivery.mids[]`: delivered. Messenger
///   `read` events carry only a `watermark` (everything sent before that
///   time was read), no message ids, so they cannot be matched to one
///   message without keeping send times per PSID: they are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<MetaWebhook, String> {
    let parsed: WebhookBody =
        serde_json::from_slice(body).map_err(|e| format!("not a Meta webhook body (JSON with an object): {e}"))?;
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut reports = Vec::new();
    for entry in &parsed.entry {
        // WhatsApp: entry[].changes[].value.statuses[]
        for change in list(entry, "changes") {
            let statuses = change.get("value").map(|v| list(v, "statuses")).unwrap_or_default();
            reports.extend(statuses.into_iter().filter_map(whatsapp_report));
        }
        // Messenger: entry[].messaging[].delivery.mids[]
        for event in list(entry, "messaging") {
            // An object, as Meta sends it: serde would also read a struct
            // from an array, by position.
            let Some(delivery) = event.get("delivery").filter(|d| d.is_object()).cloned() else {
                continue;
            };
            let Ok(delivery) = serde_json::from_value::<MessengerDelivery>(delivery) else {
                continue;
            };
            reports.extend(
                delivery
                    .mids
                    .into_iter()
                    .map(|mid| mid.trim().to_owned())
                    .filter(|mid| !mid.is_empty())
                    .map(|mid| StatusReport {
                        provider_message_id: mid,
                        status: DeliveryStatus::Delivered,
                    }),
            );
        }
    }
    Ok(MetaWebhook {
        object: parsed.object,
        reports,
    })
}

/// The stop and start words in a WhatsApp webhook's incoming messages
/// (`entry[].changes[].value.messages[]`): a `text` message's body or a
/// quick-reply `button`'s text (else its payload), the word alone. `from`
/// is the customer's number without its `+`.
pub fn whatsapp_replies(body: &[u8]) -> Vec<InboundReply> {
    let Ok(parsed) = serde_json::from_slice::<WebhookBody>(body) else {
        return Vec::new();
    };
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let text = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, key| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut replies = Vec::new();
    for entry in &parsed.entry {
        for change in list(entry, "changes") {
            let messages = change.get("value").map(|v| list(v, "messages")).unwrap_or_default();
            for message in messages {
                let Some(from) = text(&message, &["from"]).filter(|f| !f.trim().is_empty()) else {
                    continue;
                };
                let said = match text(&message, &["type"]).as_deref() {
                    Some("text") => text(&message, &["text", "body"]),
                    Some("button") => text(&message, &["button", "text"])
                        .filter(|t| reply_word(t).is_some())
                        .or_else(|| text(&message, &["button", "payload"])),
                    _ => None,
                };
                let Some(reply) = said.as_deref().and_then(reply_word) else {
                    continue;
                };
                let how = match reply {
                    Reply::Stop => "the customer replied a stop word on WhatsApp",
                    Reply::Start => "the customer replied a start word on WhatsApp",
                };
                replies.push(InboundReply { from, reply, how });
            }
        }
    }
    replies
}

fn whatsapp_report(value: Value) -> Option<StatusReport> {
    let status: WhatsappStatus = serde_json::from_value(value).ok()?;
    let id = status.id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty())?;
    let status = match status.status.as_deref()? {
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => {
            let first = status.errors.into_iter().next().unwrap_or_default();
            let details = first
                .error_data
                .as_ref()
                .and_then(|d| d.get("details"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let given = |text: Option<String>| text.filter(|t| !t.trim().is_empty());
            let words = given(first.title)
                .or(given(first.message))
                .unwrap_or_else(|| "WhatsApp could not deliver the message".to_owned());
            let reason = match details {
                Some(d) if !d.is_empty() && !words.contains(&d) => format!("{words} ({d})"),
                _ => words,
            };
            DeliveryStatus::Failed {
                code: number(&first.code).map(|c| c.to_string()),
                reason: clean(&reason, &[]),
            }
        }
        // `sent` is known from the send; `deleted`, `warning` and whatever
        // comes next say nothing about delivery.
        _ => return None,
    };
    Some(StatusReport {
        provider_message_id: id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use serde_json::json;

    const TOKEN: &str = "EAAGm0PX4ZCpsBAKZAsecret";

    /// The channel whose webhook claims `body` on Meta's path, picked the
    /// way the server picks it.
    fn channel_of(body: &[u8]) -> Option<ChannelName> {
        let context = crate::channels::BuildContext {
            public_base_url: "http://127.0.0.1:8080".parse().unwrap(),
        };
        let headers = HeaderMap::new();
        let request = WebhookRequest::new(None, &headers, body);
        crate::channels::webhooks(&crate::config::ChannelsConfig::default(), &context)
            .into_iter()
            .filter(|w| w.path() == WEBHOOK_PATH)
            .find(|w| w.claims(&request))
            .map(|w| w.channel())
    }

    fn graph(code: i64, subcode: Option<i64>, message: &str) -> Vec<u8> {
        let mut error = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC123"});
        if let Some(s) = subcode {
            error["error_subcode"] = json!(s);
        }
        json!({ "error": error }).to_string().into_bytes()
    }

    fn class(status: u16, body: &[u8]) -> SendError {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body,
            &[TOKEN, "+5215512345678", "5215512345678"],
        )
    }

    #[test]
    fn the_graph_code_decides_not_the_http_status() {
        for code in [130429, 131056, 4, 80007, 131000, 1, 2] {
            // Meta answers most of these with 400: the code still makes them transient.
            let e = class(400, &graph(code, None, "x"));
            assert!(e.is_transient(), "{code}: {e}");
            assert_eq!(e.code(), Some(code.to_string().as_str()));
        }
        for code in [131047, 131026, 132000, 132001, 131048, 131049, 190] {
            // Even a 500 with a permanent code is permanent.
            let e = class(500, &graph(code, None, "x"));
            assert!(!e.is_transient(), "{code}: {e}");
            assert_eq!(e.code(), Some(code.to_string().as_str()));
        }
        let window = class(400, &graph(10, Some(2018278), "outside of allowed window"));
        assert!(!window.is_transient());
        assert!(window.to_string().contains("subcode 2018278"), "{window}");
        let unavailable = class(
            400,
            &graph(551, Some(1545041), "This person isn't available right now."),
        );
        assert!(!unavailable.is_transient());
        assert_eq!(unavailable.code(), Some("551"));
    }

    #[test]
    fn unknown_codes_and_odd_bodies_fall_back_to_the_http_status() {
        assert!(class(503, &graph(99999, None, "x")).is_transient());
        assert!(!class(400, &graph(100, None, "Invalid parameter")).is_transient());
        assert!(class(502, b"<html>Bad Gateway</html>").is_transient());
        assert!(class(500, b"").is_transient());
        assert!(!class(404, b"not found").is_transient());
        // Graph's own transient flag on an unknown code is believed.
        let flagged = json!({"error": {"message": "try later", "code": 12345, "is_transient": true}});
        assert!(class(400, flagged.to_string().as_bytes()).is_transient());
        // A code given as a string still counts.
        let string_code = json!({"error": {"message": "x", "code": "131026"}});
        assert!(!class(500, string_code.to_string().as_bytes()).is_transient());
    }

    #[test]
    fn retry_after_is_honoured_and_the_pair_limit_waits_at_least_six_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let throttled = classify(StatusCode::TOO_MANY_REQUESTS, &headers, &graph(130429, None, "x"), &[]);
        assert!(matches!(throttled, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(2)));
        let pair = class(400, &graph(131056, None, "pair rate limit"));
        assert!(matches!(pair, SendError::Transient { retry_after: Some(d), .. } if d == PAIR_RATE_WAIT));
        let service = class(500, &graph(131000, None, "x"));
        assert!(matches!(service, SendError::Transient { retry_after: None, .. }));
    }

    #[test]
    fn reasons_never_hold_the_token_or_the_recipient() {
        let body = graph(
            190,
            Some(463),
            &format!("Error validating access token {TOKEN} for +5215512345678 and 5215512345678"),
        );
        let e = class(401, &body);
        let text = e.to_string();
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("5215512345678"), "{text}");
        assert!(text.contains("access token is invalid or expired"), "{text}");
        assert!(text.contains("fbtrace_id AbC123"), "{text}");
        // Even an unknown number in the text (not the recipient) is masked.
        let other = class(400, &graph(131026, None, "number 4915112345678 is not on WhatsApp"));
        assert!(!other.to_string().contains("4915112345678"), "{other}");
        // And a non-Graph body that echoes the token.
        let odd = class(502, format!("upstream said access_token={TOKEN}").as_bytes());
        assert!(!odd.to_string().contains(TOKEN), "{odd}");
    }

    fn graph_webhook(object: &'static str, app_secret: Option<&str>, verify_token: Option<&str>) -> GraphWebhook {
        GraphWebhook {
            channel: ChannelName::Whatsapp,
            object,
            app_secret: app_secret.map(Secret::new),
            verify_token: verify_token.map(Secret::new),
        }
    }

    #[test]
    fn a_graph_webhook_claims_its_object_and_checks_the_app_secret() {
        let webhook = graph_webhook("whatsapp_business_account", Some("secret"), None);
        let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": [
            {"id": "wamid.A", "status": "delivered"}
        ]}}]}]})
        .to_string();
        let mut headers = HeaderMap::new();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert("x-hub-signature-256", signature.parse().unwrap());
        let request = WebhookRequest::new(None, &headers, body.as_bytes());
        assert!(webhook.claims(&request));
        assert!(!graph_webhook("page", Some("secret"), None).claims(&request));
        assert_eq!(webhook.verify(&request), Ok(()));
        assert_eq!(webhook.parse(&request).unwrap().len(), 1);
        assert_eq!(webhook.answer(), StatusCode::OK);

        let other_key = graph_webhook("whatsapp_business_account", Some("other"), None);
        assert_eq!(other_key.verify(&request), Err(Refused::BadSignature));
        let no_key = graph_webhook("whatsapp_business_account", None, None);
        assert_eq!(no_key.verify(&request), Err(Refused::NoSecret("app_secret")));
        let unsigned_headers = HeaderMap::new();
        let unsigned = WebhookRequest::new(None, &unsigned_headers, body.as_bytes());
        assert_eq!(webhook.verify(&unsigned), Err(Refused::BadSignature));
        for odd in [&b"not json"[..], b"{\"object\": 5}", b"{\"entry\": []}"] {
            let request = WebhookRequest::new(None, &headers, odd);
            assert!(!webhook.claims(&request), "{}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_our_token() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let webhook = graph_webhook("page", None, Some("our-token"));
        let ok = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "our-token"),
            ("hub.challenge", "1158201444"),
        ]);
        assert_eq!(webhook.handshake(&ok), Handshake::Accepted("1158201444".into()));
        let wrong = query(&[("hub.mode", "subscribe"), ("hub.verify_token", "guess")]);
        assert_eq!(webhook.handshake(&wrong), Handshake::Refused);
        let not_subscribe = query(&[("hub.mode", "unsubscribe"), ("hub.verify_token", "our-token")]);
        assert_eq!(webhook.handshake(&not_subscribe), Handshake::Refused);
        assert_eq!(
            graph_webhook("page", None, None).handshake(&ok),
            Handshake::Refused,
            "no verify token configured accepts nothing"
        );
    }

    #[test]
    fn signature_matches_the_documented_vector() {
        let good = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914";
        assert!(verify_signature("secret", b"test", good));
        assert!(verify_signature(
            "secret",
            b"test",
            &good.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify_signature("secret", b"test!", good), "tampered body");
        assert!(!verify_signature("other", b"test", good), "wrong key");
        assert!(
            !verify_signature("secret", b"test", good.trim_start_matches("sha256=")),
            "missing prefix"
        );
        assert!(!verify_signature("secret", b"test", "sha1=0329a06b"), "other algorithm");
        assert!(!verify_signature("secret", b"test", "sha256=zz"), "not hex");
        assert!(!verify_signature("secret", b"test", "sha256=0329a06b"), "truncated");
        assert!(!verify_signature("secret", b"test", ""), "no header");
        assert!(!verify_signature("", b"test", good), "no secret configured");
    }

    #[test]
    fn whatsapp_statuses_become_reports_and_sent_is_ignored() {
        let body = json!({
          "object": "whatsapp_business_account",
          "entry": [{
            "id": "102290129340398",
            "changes": [{
              "field": "messages",
              "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "statuses": [
                  {"id": "wamid.SENT", "status": "sent", "timestamp": "1750263773", "recipient_id": "5215512345678",
                   "conversation": {"id": "c1", "origin": {"type": "utility"}},
                   "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}},
                  {"id": "wamid.DELIVERED", "status": "delivered", "timestamp": "1750263774",
                   "recipient_id": "5215512345678"},
                  {"id": "wamid.READ", "status": "read", "timestamp": "1750263775", "recipient_id": "5215512345678"},
                  {"id": "wamid.FAILED", "status": "failed", "timestamp": "1750263776", "recipient_id": "5215512345678",
                   "errors": [{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                               "error_data": {"details": "Message Undeliverable."}}]},
                  {"status": "delivered"},
                  {"id": "wamid.NEW", "status": "some_future_status"}
                ]
              }
            }, {
              "field": "messages",
              "value": {"messages": [{"from": "5215512345678", "id": "wamid.IN", "type": "text",
                                      "text": {"body": "hola"}}]}
            }]
          }]
        });
        let hook = parse_webhook(body.to_string().as_bytes()).unwrap();
        assert_eq!(hook.object, "whatsapp_business_account");
        assert_eq!(channel_of(body.to_string().as_bytes()), Some(ChannelName::Whatsapp));
        let summary: Vec<_> = hook
            .reports
            .iter()
            .map(|r| (r.provider_message_id.as_str(), &r.status))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("wamid.DELIVERED", &DeliveryStatus::Delivered),
                ("wamid.READ", &DeliveryStatus::Read),
                (
                    "wamid.FAILED",
                    &DeliveryStatus::Failed {
                        code: Some("131026".into()),
                        reason: "Message undeliverable (Message Undeliverable.)".into()
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_failed_status_without_errors_still_fails_and_numbers_in_titles_are_masked() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": [
            {"id": "wamid.A", "status": "failed"},
            {"id": "wamid.B", "status": "failed", "errors": [{"code": 131049, "title": "Not sent to 5215512345678"}]}
        ]}}]}]});
        let hook = parse_webhook(body.to_string().as_bytes()).unwrap();
        assert!(matches!(
            &hook.reports[0].status,
            DeliveryStatus::Failed { code: None, .. }
        ));
        match &hook.reports[1].status {
            DeliveryStatus::Failed { code, reason } => {
                assert_eq!(code.as_deref(), Some("131049"));
                assert!(!reason.contains("5215512345678"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messenger_deliveries_become_reports_and_reads_are_ignored() {
        let body = json!({
          "object": "page",
          "entry": [{
            "id": "101010101010101",
            "time": 1750263773000u64,
            "messaging": [
              {"sender": {"id": "6543210987654321"}, "recipient": {"id": "101010101010101"},
               "timestamp": 1750263773000u64,
               "delivery": {"mids": ["m_AAAA", "m_BBBB"], "watermark": 1750263772000u64}},
              {"sender": {"id": "6543210987654321"}, "recipient": {"id": "101010101010101"},
               "timestamp": 1750263774000u64, "read": {"watermark": 1750263773500u64}},
              {"sender": {"id": "6543210987654321"}, "recipient": {"id": "101010101010101"},
               "delivery": {"watermark": 1750263772000u64}},
              {"sender": {"id": "6543210987654321"}, "message": {"mid": "m_IN", "text": "ok"}}
            ]
          }]
        });
        let hook = parse_webhook(body.to_string().as_bytes()).unwrap();
        assert_eq!(channel_of(body.to_string().as_bytes()), Some(ChannelName::Messenger));
        assert_eq!(
            hook.reports,
            vec![
                StatusReport {
                    provider_message_id: "m_AAAA".into(),
                    status: DeliveryStatus::Delivered
                },
                StatusReport {
                    provider_message_id: "m_BBBB".into(),
                    status: DeliveryStatus::Delivered
                },
            ]
        );
    }

    #[test]
    fn bodies_without_an_object_are_refused_and_unknown_objects_have_no_channel() {
        assert!(parse_webhook(b"not json").is_err());
        assert!(parse_webhook(b"{\"entry\": []}").is_err());
        // A wrong type inside an entry is skipped, not an error.
        let hook = parse_webhook(b"{\"object\": \"page\", \"entry\": [{\"changes\": 5, \"messaging\": [1]}]}").unwrap();
        assert!(hook.reports.is_empty());
        // A delivery that is no object names no message, even one serde
        // would read by position (found by tests/fuzz_parsers.rs).
        let body = br#"{"object": "page", "entry": [{"messaging": [{"delivery": [["m_1"]]}]}]}"#;
        assert!(parse_webhook(body).unwrap().reports.is_empty());
        let hook = parse_webhook(b"{\"object\": \"instagram\"}").unwrap();
        assert_eq!(channel_of(b"{\"object\": \"instagram\"}"), None);
        assert_eq!(channel_of(b"not json"), None);
        assert!(hook.reports.is_empty());
    }

    #[test]
    fn whatsapp_stop_and_start_words_come_from_texts_and_buttons_beside_statuses() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
            {"field": "messages", "value": {"statuses": [{"id": "wamid.OUT", "status": "delivered"}]}},
            {"field": "messages", "value": {
                "contacts": [{"profile": {"name": "M"}, "wa_id": "5215512345678"}],
                "messages": [
                    {"from": "5215512345678", "id": "wamid.1", "type": "text", "text": {"body": "Baja"}},
                    {"from": "5215512345679", "id": "wamid.2", "type": "text", "text": {"body": "gracias"}},
                    {"from": "5215512345670", "id": "wamid.3", "type": "button",
                     "button": {"payload": "START", "text": "Volver a recibir"}},
                    {"from": "5215512345671", "id": "wamid.4", "type": "image", "image": {"id": "1"}}
                ]
            }}
        ]}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let replies = whatsapp_replies(&bytes);
        let got: Vec<(&str, Reply)> = replies.iter().map(|r| (r.from.as_str(), r.reply)).collect();
        assert_eq!(got, [("5215512345678", Reply::Stop), ("5215512345670", Reply::Start)]);
        // The statuses in the same POST are still read.
        assert_eq!(parse_webhook(&bytes).unwrap().reports.len(), 1);
        assert!(whatsapp_replies(b"not json").is_empty());
    }
}
