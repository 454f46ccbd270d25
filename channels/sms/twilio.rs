//! Twilio Programmable Messaging: sending, error classes, and the status
//! callback (`POST /webhooks/twilio`: `X-Twilio-Signature`, then
//! `MessageStatus`).
//!
//! Wire types stay here. Error classes follow Twilio's error codes (the
//! table in [`classify`]); codes it does not name fall back to the shared
//! HTTP status classes. Reasons are
//! written by us, never Twilio's text verbatim: its messages quote the
//! recipient's number, and reasons reach events and logs.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::config::{TwilioConfig, TwilioSender};
use super::{SmsMessage, SmsProvider};
use crate::channels::webhook::{InboundReply, Refused, Webhook, WebhookRequest};
use crate::channels::ChannelsConfig;
use crate::channels::{http, BuildContext, BuildError, DeliveryStatus, Receipt, SendError, StatusReport};
use crate::domain::debtor::{reply_word, Reply};
use crate::domain::ChannelName;
use crate::settings::Secret;

/// Where Twilio posts status callbacks, under `/webhooks/`.
const WEBHOOK_PATH: &str = "twilio";

/// Longest piece of provider text quoted in a reason.
const QUOTE_LIMIT: usize = 200;

/// The Messages API for one account.
pub(super) struct Twilio {
    client: reqwest::Client,
    /// `{base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, parsed
    /// once: parsing it for every message was a tenth of a send's work.
    endpoint: reqwest::Url,
    account_sid: String,
    auth_token: Secret,
    /// `("From", number)` or `("MessagingServiceSid", "MG…")`.
    sender: (&'static str, String),
    /// Where Twilio reports delivery; the server verifies over this URL.
    status_callback: String,
}

impl Twilio {
    pub(super) fn new(config: &TwilioConfig, context: &BuildContext) -> Result<Twilio, BuildError> {
        let endpoint = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.base_url.as_str().trim_end_matches('/'),
            config.account_sid
        );
        let endpoint = reqwest::Url::parse(&endpoint).map_err(|e| BuildError {
            channel: ChannelName::Sms,
            reason: format!(
                "the Twilio Messages URL {endpoint} is not a valid URL ({e}); check base_url and account_sid"
            ),
        })?;
        let sender = match &config.sender {
            TwilioSender::From(from) => ("From", from.clone()),
            TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.clone()),
        };
        Ok(Twilio {
            client: http::client(ChannelName::Sms, config.timeout)?,
            endpoint,
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            sender,
            status_callback: status_callback_url(&context.public_base_url),
        })
    }
}

/// Twilio's answer to a created message; only the id matters here.
#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
#[derive(Deserialize)]
struct ApiError {
    code: Option<serde_json::Value>,
    message: Option<String>,
}

#[async_trait]
impl SmsProvider for Twilio {
    async fn send(&self, to: &str, message: &SmsMessage) -> Result<Receipt, SendError> {
        let form = [
            ("To", to),
            (self.sender.0, self.sender.1.as_str()),
            ("Body", message.text.as_str()),
            ("StatusCallback", self.status_callback.as_str()),
        ];
        let response = self
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| http::transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await;
        if status.is_success() {
            // Accepted is accepted: a missing id must not cause a resend.
            let sid = text
                .ok()
                .and_then(|t| serde_json::from_str::<Created>(&t).ok())
                .and_then(|c| c.sid)
                .filter(|s| !s.is_empty());
            match &sid {
                Some(sid) => tracing::debug!(sid = %sid, "Twilio accepted the message"),
                None => tracing::warn!(%status, "Twilio accepted the message but its answer had no sid"),
            }
            return Ok(Receipt {
                provider_message_id: sid,
            });
        }
        let error = classify(status, &headers, &text.unwrap_or_default(), to);
        tracing::debug!(%status, code = error.code().unwrap_or("-"), "Twilio refused the message");
        Err(error)
    }
}

/// One place for Twilio's error classes: its code decides
/// when it is one we know, the HTTP status otherwise.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, to: &str) -> SendError {
    let error = serde_json::from_str::<ApiError>(body).ok();
    let code = error.as_ref().and_then(|e| e.code.as_ref()).and_then(|c| match c {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let code_text = code.map(|c| c.to_string());
    let permanent = |reason: &str| SendError::Permanent {
        code: code_text.clone(),
        reason: reason.to_owned(),
    };
    let transient = |reason: &str| SendError::Transient {
        code: code_text.clone(),
        reason: reason.to_owned(),
        retry_after: http::retry_after(headers),
    };
    match code {
        Some(21211) => permanent("Twilio says the To number is not a valid phone number"),
        Some(21610) => permanent("the recipient replied STOP and is unsubscribed; do not send to this number again"),
        Some(21614) => permanent("the To number is not a mobile number and cannot receive SMS"),
        Some(21635) => permanent("the To number is a landline and cannot receive SMS"),
        Some(21608) => {
            permanent("the Twilio account is a trial account and the To number is not verified on it (configuration)")
        }
        Some(21611) | Some(30001) => transient("the sender's queue at Twilio is full; slow down"),
        Some(20429) => transient("Twilio is throttling: too many concurrent requests"),
        _ => {
            let said = error
                .as_ref()
                .and_then(|e| e.message.as_deref())
                .map(|m| format!(": {}", quote(m, to)))
                .unwrap_or_default();
            let reason = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                format!("Twilio refused the credentials (HTTP {status}): check account_sid and auth_token")
            } else {
                format!("Twilio answered HTTP {status}{said}")
            };
            http::by_status(status, headers, code_text, reason)
        }
    }
}

/// Provider text made safe to log: the recipient's number removed, other
/// addresses and numbers masked, and the length bounded.
fn quote(text: &str, to: &str) -> String {
    let mut text = text.to_owned();
    for needle in [to, to.trim_start_matches('+')] {
        if needle.len() >= 4 {
            text = text.replace(needle, "[recipient]");
        }
    }
    let text = crate::redact::text(&text);
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The `StatusCallback` payrelay gives Twilio, and the URL the server must
/// verify signatures over: `<public_base_url without trailing slash>/webhooks/twilio`.
pub fn status_callback_url(public_base_url: &url::Url) -> String {
    format!(
        "{}/webhooks/{WEBHOOK_PATH}",
        public_base_url.as_str().trim_end_matches('/')
    )
}

/// The SMS channel's entry for [`crate::channels::Adapter::webhook`].
pub(super) fn webhook(config: &ChannelsConfig, context: &BuildContext) -> Box<dyn Webhook> {
    Box::new(StatusCallback {
        auth_token: config.sms.as_ref().and_then(|sms| sms.webhook_secret.clone()),
        url: status_callback_url(&context.public_base_url),
    })
}

/// Twilio's status callbacks: form fields signed with the auth token over
/// our public URL and all of them.
struct StatusCallback {
    /// Set only with the Twilio provider.
    auth_token: Option<Secret>,
    /// Exactly the URL given to Twilio as `StatusCallback`.
    url: String,
}

impl Webhook for StatusCallback {
    fn channel(&self) -> ChannelName {
        ChannelName::Sms
    }

    fn provider(&self) -> &'static str {
        "Twilio"
    }

    fn path(&self) -> &'static str {
        WEBHOOK_PATH
    }

    fn verify(&self, request: &WebhookRequest<'_>) -> Result<(), Refused> {
        let Some(token) = &self.auth_token else {
            return Err(Refused::NoSecret("SMS auth_token"));
        };
        let url = match request.query {
            Some(query) => format!("{}?{query}", self.url),
            None => self.url.clone(),
        };
        if verify_signature(
            token.expose(),
            &url,
            request.form(),
            request.header("x-twilio-signature"),
        ) {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }

    /// At most one report: statuses that change nothing are none.
    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<StatusReport>, String> {
        Ok(parse_status(request.form()).into_iter().collect())
    }

    /// An inbound message (it has a `Body` or an `OptOutType` and no
    /// `MessageStatus`) that is a stop or start word.
    fn replies(&self, request: &WebhookRequest<'_>) -> Vec<InboundReply> {
        parse_reply(request.form()).into_iter().collect()
    }

    /// No TwiML to give back.
    fn answer(&self) -> StatusCode {
        StatusCode::NO_CONTENT
    }
}

type HmacSha1 = Hmac<Sha1>;

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Option<Vec<u8>> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name, then by value, so a repeated field signs the same either way.
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    Some(mac.finalize().into_bytes().to_vec())
}

/// `X-Twilio-Signature` for a request: HMAC-SHA1 keyed with the auth token
/// over the full URL followed by each POST field sorted by name, as
/// `name` + `value` with no separators; base64.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    mac(auth_token, url, params)
        .map(|m| STANDARD.encode(m))
        .unwrap_or_default()
}

/// Whether `header` is Twilio's signature for this request. Fails closed
/// (no token, undecodable header) and compares in constant time.
pub fn verify_signature(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    if auth_token.is_empty() {
        return false;
    }
    let Ok(given) = STANDARD.decode(header.trim()) else {
        return false;
    };
    match mac(auth_token, url, params) {
        Some(expected) => expected.ct_eq(&given).into(),
        None => false,
    }
}

/// A delivery report from Twilio's status callback fields, or `None` for
/// statuses that change nothing (`queued`, `sent`, …) and for fields that
/// name no message. Unknown fields are ignored: Twilio adds them freely.
pub fn parse_status(params: &[(String, String)]) -> Option<StatusReport> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let sid = field("MessageSid").or_else(|| field("SmsSid"))?;
    let status = field("MessageStatus")
        .or_else(|| field("SmsStatus"))?
        .to_ascii_lowercase();
    let status = match status.as_str() {
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "undelivered" | "failed" => {
            let code = field("ErrorCode").filter(|c| *c != "0").map(str::to_owned);
            let reason = match code.as_deref().and_then(delivery_error) {
                Some(meaning) => format!("Twilio reports the message {status}: {meaning}"),
                None => format!("Twilio reports the message {status}"),
            };
            DeliveryStatus::Failed { code, reason }
        }
        _ => return None,
    };
    Some(StatusReport {
        provider_message_id: sid.to_owned(),
        status,
    })
}

/// A STOP or START from Twilio's inbound-message fields: `OptOutType`
/// (Advanced Opt-Out, more reliable) else the stop and start words of
/// [`reply_word`] alone in `Body`. `None` for a status callback, another
/// text, or HELP.
pub fn parse_reply(params: &[(String, String)]) -> Option<InboundReply> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    if field("MessageStatus").is_some() {
        return None;
    }
    let from = field("From")?;
    let (reply, how) = match field("OptOutType").map(str::to_ascii_uppercase).as_deref() {
        Some("STOP") => (Reply::Stop, "the customer replied STOP by SMS"),
        Some("START") => (Reply::Start, "the customer replied START by SMS"),
        Some(_) => return None,
        None => match reply_word(field("Body")?)? {
            Reply::Stop => (Reply::Stop, "the customer replied a stop word by SMS"),
            Reply::Start => (Reply::Start, "the customer replied a start word by SMS"),
        },
    };
    Some(InboundReply {
        from: from.to_owned(),
        reply,
        how,
    })
}

/// Plain words for the delivery error codes Twilio reports most often.
fn delivery_error(code: &str) -> Option<&'static str> {
    Some(match code {
        "30001" => "queue overflow",
        "30002" => "the account is suspended",
        "30003" => "the handset is unreachable",
        "30004" => "the message was blocked",
        "30005" => "unknown or inactive number",
        "30006" => "landline or unreachable carrier",
        "30007" => "filtered by the carrier",
        "30008" => "unknown error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn documented() -> Vec<(String, String)> {
        // Deliberately not in name order: the signature sorts them.
        fields(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("Caller", "+12349013030"),
            ("From", "+12349013030"),
        ])
    }

    #[test]
    fn the_documented_signature_vector() {
        assert_eq!(signature("12345", URL, &documented()), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify_signature(
            "12345",
            URL,
            &documented(),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn a_tampered_field_url_token_or_header_fails() {
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut tampered = documented();
        tampered[2].1 = "9999".into();
        assert!(!verify_signature("12345", URL, &tampered, good), "tampered field");
        let mut extra = documented();
        extra.push(("MessageStatus".into(), "delivered".into()));
        assert!(!verify_signature("12345", URL, &extra, good), "added field");
        assert!(
            !verify_signature("12345", &URL.replace("foo=1", "foo=2"), &documented(), good),
            "tampered URL"
        );
        assert!(!verify_signature(
            "12345",
            "https://evil.example/myapp.php?foo=1&bar=2",
            &documented(),
            good
        ));
        assert!(!verify_signature("54321", URL, &documented(), good), "other token");
        assert!(!verify_signature("", URL, &documented(), good), "no token fails closed");
        assert!(!verify_signature("12345", URL, &documented(), ""), "no header");
        assert!(
            !verify_signature("12345", URL, &documented(), "not base64!"),
            "junk header"
        );
        assert!(
            !verify_signature("12345", URL, &documented(), "0/KCTR6DLpKmkAf8muzZqo1nDgQ"),
            "truncated"
        );
    }

    fn callback(auth_token: Option<&str>) -> StatusCallback {
        StatusCallback {
            auth_token: auth_token.map(Secret::new),
            url: "https://pay.example/webhooks/twilio".into(),
        }
    }

    fn form_body(pairs: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    #[test]
    fn the_status_callback_checks_the_url_with_its_query_and_every_field() {
        let pairs = [("MessageSid", "SM1"), ("MessageStatus", "delivered")];
        let body = form_body(&pairs);
        let signed = |url: &str| {
            let mut headers = HeaderMap::new();
            let value = signature("12345", url, &fields(&pairs));
            headers.insert("x-twilio-signature", value.parse().unwrap());
            headers
        };
        let webhook = callback(Some("12345"));
        assert_eq!(webhook.path(), "twilio");
        assert_eq!(webhook.answer(), StatusCode::NO_CONTENT);

        let headers = signed("https://pay.example/webhooks/twilio");
        let request = WebhookRequest::new(None, &headers, body.as_bytes());
        assert!(webhook.claims(&request), "Twilio's path is the SMS channel's alone");
        assert_eq!(webhook.verify(&request), Ok(()));
        let reports = webhook.parse(&request).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].status, DeliveryStatus::Delivered);

        let headers = signed("https://pay.example/webhooks/twilio?attempt=2");
        let with_query = WebhookRequest::new(Some("attempt=2"), &headers, body.as_bytes());
        assert_eq!(
            webhook.verify(&with_query),
            Ok(()),
            "the query is part of what is signed"
        );
        let without_query = WebhookRequest::new(None, &headers, body.as_bytes());
        assert_eq!(webhook.verify(&without_query), Err(Refused::BadSignature));

        let headers = signed("https://pay.example/webhooks/twilio");
        let tampered = form_body(&[("MessageSid", "SM1"), ("MessageStatus", "undelivered")]);
        let request = WebhookRequest::new(None, &headers, tampered.as_bytes());
        assert_eq!(webhook.verify(&request), Err(Refused::BadSignature));
        let request = WebhookRequest::new(None, &headers, body.as_bytes());
        assert_eq!(
            callback(None).verify(&request),
            Err(Refused::NoSecret("SMS auth_token")),
            "no auth token configured fails closed"
        );
    }

    #[test]
    fn statuses_that_change_nothing_are_no_reports() {
        let body = form_body(&[("MessageSid", "SM1"), ("MessageStatus", "sent")]);
        let headers = HeaderMap::new();
        let request = WebhookRequest::new(None, &headers, body.as_bytes());
        assert_eq!(callback(Some("12345")).parse(&request), Ok(vec![]));
    }

    #[test]
    fn the_status_callback_url_has_exactly_one_slash() {
        for (base, expected) in [
            ("https://pay.example", "https://pay.example/webhooks/twilio"),
            ("https://pay.example/", "https://pay.example/webhooks/twilio"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/webhooks/twilio"),
            (
                "https://pay.example/relay/",
                "https://pay.example/relay/webhooks/twilio",
            ),
            ("https://pay.example/relay", "https://pay.example/relay/webhooks/twilio"),
        ] {
            let url = url::Url::parse(base).unwrap();
            assert_eq!(status_callback_url(&url), expected, "{base}");
        }
    }

    #[test]
    fn statuses_map_to_reports() {
        let report = |pairs: &[(&str, &str)]| parse_status(&fields(pairs));
        let sid = "SM0123456789abcdef0123456789abcdef";
        let delivered = report(&[("MessageSid", sid), ("MessageStatus", "delivered"), ("SmsSid", sid)]);
        assert_eq!(
            delivered,
            Some(StatusReport {
                provider_message_id: sid.into(),
                status: DeliveryStatus::Delivered
            })
        );
        assert_eq!(
            report(&[("MessageStatus", "read"), ("MessageSid", sid)]).map(|r| r.status),
            Some(DeliveryStatus::Read)
        );
        let failed = report(&[
            ("MessageSid", sid),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("To", "+5215512345678"),
            ("SomethingNew", "x"),
        ]);
        assert_eq!(
            failed.map(|r| r.status),
            Some(DeliveryStatus::Failed {
                code: Some("30003".into()),
                reason: "Twilio reports the message undelivered: the handset is unreachable".into()
            })
        );
        let failed = report(&[("MessageSid", sid), ("MessageStatus", "failed"), ("ErrorCode", "")]);
        assert_eq!(
            failed.map(|r| r.status),
            Some(DeliveryStatus::Failed {
                code: None,
                reason: "Twilio reports the message failed".into()
            })
        );
    }

    #[test]
    fn statuses_that_change_nothing_and_junk_are_none() {
        for status in [
            "queued",
            "accepted",
            "sending",
            "sent",
            "scheduled",
            "canceled",
            "receiving",
            "??",
        ] {
            assert_eq!(
                parse_status(&fields(&[("MessageSid", "SM1"), ("MessageStatus", status)])),
                None,
                "{status}"
            );
        }
        assert_eq!(parse_status(&fields(&[("MessageStatus", "delivered")])), None, "no sid");
        assert_eq!(parse_status(&fields(&[("MessageSid", "SM1")])), None, "no status");
        assert_eq!(parse_status(&[]), None);
        // The older field names still work.
        assert!(parse_status(&fields(&[("SmsSid", "SM1"), ("SmsStatus", "delivered")])).is_some());
    }

    fn class(status: u16, body: &str, retry_after: Option<&str>) -> SendError {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(r).unwrap());
        }
        let error = classify(StatusCode::from_u16(status).unwrap(), &headers, body, "+5215512345678");
        let text = error.to_string();
        assert!(!text.contains("5215512345678"), "the number leaked: {text}");
        error
    }

    fn twilio_error(code: u32, status: u16) -> String {
        format!(
            r#"{{"code": {code}, "message": "The 'To' number +5215512345678 is not valid.", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        )
    }

    #[test]
    fn the_documented_codes_decide_the_class() {
        for code in [21211, 21610, 21614, 21635, 21608] {
            let e = class(400, &twilio_error(code, 400), None);
            assert!(
                matches!(&e, SendError::Permanent { code: Some(c), .. } if *c == code.to_string()),
                "{code}: {e:?}"
            );
        }
        for code in [21611, 30001] {
            let e = class(400, &twilio_error(code, 400), None);
            assert!(
                matches!(&e, SendError::Transient { code: Some(c), .. } if *c == code.to_string()),
                "{code}: {e:?}"
            );
        }
        let e = class(429, &twilio_error(20429, 429), Some("3"));
        assert!(
            matches!(&e, SendError::Transient { code: Some(c), retry_after: Some(d), .. }
                if c == "20429" && *d == Duration::from_secs(3)),
            "{e:?}"
        );
    }

    #[test]
    fn other_answers_fall_back_to_the_http_status() {
        assert!(class(500, "<html>oops</html>", None).is_transient());
        assert!(class(503, "", None).is_transient());
        assert!(class(502, &twilio_error(20500, 502), None).is_transient());
        let e = class(429, "", Some("3"));
        assert!(
            matches!(e, SendError::Transient { code: None, retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        let e = class(
            401,
            r#"{"code": 20003, "message": "Authenticate", "status": 401}"#,
            None,
        );
        assert!(
            matches!(&e, SendError::Misconfigured { code: Some(c), reason } if c == "20003" && reason.contains("credentials"))
        );
        let e = class(400, &twilio_error(21602, 400), None);
        assert!(
            matches!(&e, SendError::Permanent { code: Some(c), .. } if c == "21602"),
            "{e:?}"
        );
        let e = class(400, r#"{"code": "21617", "message": "too long"}"#, None);
        assert_eq!(e.code(), Some("21617"), "a code sent as a string still counts");
    }

    #[test]
    fn quoted_provider_text_loses_the_recipient_and_is_bounded() {
        let q = quote(
            "The 'To' number +5215512345678 (5215512345678) is not valid",
            "+5215512345678",
        );
        assert_eq!(q, "The 'To' number [recipient] ([recipient]) is not valid");
        let q = quote(
            "call +44 7700 900123 or 447700900123 or mail a@b.example",
            "+5215512345678",
        );
        assert!(!q.contains("447700900123") && !q.contains("a@b.example"), "{q}");
        assert!(quote(&"x".repeat(1000), "").chars().count() <= QUOTE_LIMIT + 1);
        assert_eq!(quote("fine", ""), "fine", "an empty recipient replaces nothing");
    }

    #[test]
    fn inbound_stop_and_start_words_and_opt_out_types_are_replies() {
        let from = ("From", "+5215512345678");
        let stop = parse_reply(&fields(&[from, ("Body", " stop "), ("SmsStatus", "received")])).unwrap();
        assert_eq!((stop.from.as_str(), stop.reply), ("+5215512345678", Reply::Stop));
        assert_eq!(
            parse_reply(&fields(&[from, ("Body", "PARAR")])).unwrap().reply,
            Reply::Stop
        );
        assert_eq!(
            parse_reply(&fields(&[from, ("Body", "unstop")])).unwrap().reply,
            Reply::Start
        );
        // Advanced Opt-Out says it outright, whatever the words.
        let typed = parse_reply(&fields(&[from, ("Body", "no more please"), ("OptOutType", "STOP")])).unwrap();
        assert_eq!(typed.reply, Reply::Stop);
        assert_eq!(
            parse_reply(&fields(&[from, ("Body", "x"), ("OptOutType", "START")]))
                .unwrap()
                .reply,
            Reply::Start
        );
        // HELP, other texts, and status callbacks are no replies.
        assert!(parse_reply(&fields(&[from, ("Body", "HELP"), ("OptOutType", "HELP")])).is_none());
        assert!(parse_reply(&fields(&[from, ("Body", "when is it due?")])).is_none());
        assert!(parse_reply(&fields(&[from, ("Body", "STOP"), ("MessageStatus", "delivered")])).is_none());
        assert!(
            parse_reply(&fields(&[("Body", "STOP")])).is_none(),
            "no From, nobody to stop"
        );
        // Debug never shows the number.
        assert!(!format!("{stop:?}").contains("5512345678"));
    }
}
