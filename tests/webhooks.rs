//! Provider status webhooks on a running service: signatures checked with
//! known-good values computed from the documented algorithms, tampered
//! requests refused, statuses turned into events, and a later delivery
//! failure moving the invoice to its next channel exactly once.

mod common;

use common::{invoice, test_secrets, Options, TestEnv};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TWILIO_TOKEN_ENV: &str = "TWILIO_AUTH_TOKEN";
const META_SECRET_ENV: &str = "META_APP_SECRET";

fn channels(meta: &MockServer, twilio: &MockServer) -> String {
    format!(
        r#"
[channels.whatsapp]
provider = "meta"
base_url = "{meta}/v21.0"
phone_number_id = "1098765"
access_token = "env:WHATSAPP_TOKEN"
app_secret = "env:{META_SECRET_ENV}"
verify_token = "env:META_VERIFY_TOKEN"
rate_per_second = 50

[channels.sms]
provider = "twilio"
base_url = "{twilio}"
account_sid = "ACtest"
auth_token = "env:{TWILIO_TOKEN_ENV}"
from = "+15005550006"
rate_per_second = 50
"#,
        meta = meta.uri(),
        twilio = twilio.uri(),
    )
}

async fn start(routing: &str) -> (TestEnv, MockServer, MockServer) {
    let (meta, twilio) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v21.0/1098765/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": "5215512345678", "wa_id": "5215512345678"}],
            "messages": [{"id": "wamid.TEST1"}]
        })))
        .mount(&meta)
        .await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "SMtest1", "status": "queued", "num_segments": "1", "error_code": null
        })))
        .mount(&twilio)
        .await;
    let env = TestEnv::start_with(Options {
        channels: channels(&meta, &twilio),
        routing: format!("default = {routing}\nrespect_preferences = false"),
        ..Options::default()
    })
    .await;
    (env, meta, twilio)
}

/// Twilio's algorithm, written out here independently of the service:
/// URL, then each field name and value sorted by name, HMAC-SHA1, base64.
fn twilio_signature(url: &str, fields: &[(&str, &str)]) -> String {
    use base64::Engine;
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = test_secrets(TWILIO_TOKEN_ENV).unwrap();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn meta_signature(body: &[u8]) -> String {
    let key = test_secrets(META_SECRET_ENV).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_twilio(env: &TestEnv, fields: &[(&str, &str)], signature: &str) -> u16 {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    env.http
        .post(format!("{}/webhooks/twilio", env.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post_meta(env: &TestEnv, body: &Value, signature: Option<String>) -> u16 {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = signature.unwrap_or_else(|| meta_signature(&bytes));
    env.http
        .post(format!("{}/webhooks/meta", env.base_url))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn with_whatsapp(id: &str) -> Value {
    let mut invoice = invoice(id, "maria@example.com");
    invoice["customer"]["whatsapp"] = json!("+5215512345678");
    invoice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_statuses_become_events_and_bad_signatures_change_nothing() {
    let (env, _meta, _twilio) = start(r#"["sms", "email"]"#).await;
    env.publish(&[invoice("INV-SMS", "maria@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    let url = format!("{}/webhooks/twilio", env.base_url);

    let delivered = [
        ("MessageSid", "SMtest1"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "ACtest"),
        ("To", "+5215512345678"),
    ];
    // Tampered: signed over other values, over another URL, or not at all.
    let mut tampered = delivered;
    tampered[1] = ("MessageStatus", "undelivered");
    assert_eq!(
        post_twilio(&env, &tampered, &twilio_signature(&url, &delivered)).await,
        401
    );
    assert_eq!(
        post_twilio(
            &env,
            &delivered,
            &twilio_signature("https://elsewhere.example/webhooks/twilio", &delivered)
        )
        .await,
        401
    );
    assert_eq!(post_twilio(&env, &delivered, "").await, 401);

    assert_eq!(
        post_twilio(&env, &delivered, &twilio_signature(&url, &delivered)).await,
        204
    );
    let events = env.wait_for("invoice.delivered", 1).await;
    assert_eq!(events[0]["channel"], "sms");
    assert_eq!(events[0]["provider_message_id"], "SMtest1");
    assert_eq!(events[0]["invoice_id"], "INV-SMS");
    // The same report again is not a second event.
    assert_eq!(
        post_twilio(&env, &delivered, &twilio_signature(&url, &delivered)).await,
        204
    );
    assert!(
        env.events_named("invoice.channel_failed").is_empty(),
        "the tampered report changed nothing"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_reported_undelivered_falls_back_to_email_exactly_once() {
    let (env, _meta, _twilio) = start(r#"["sms", "email"]"#).await;
    env.publish(&[invoice("INV-UNDELIVERED", "maria@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    assert!(env.smtp.received().is_empty(), "SMS went first");

    let url = format!("{}/webhooks/twilio", env.base_url);
    let undelivered = [
        ("MessageSid", "SMtest1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    for _ in 0..3 {
        assert_eq!(
            post_twilio(&env, &undelivered, &twilio_signature(&url, &undelivered)).await,
            204
        );
    }
    env.smtp.wait_for(1, common::WAIT).await;
    let sent = env.wait_for("invoice.sent", 2).await;
    assert_eq!(sent[1]["channel"], "email");
    let failed = env.events_named("invoice.channel_failed");
    assert_eq!(failed.len(), 1, "one failure event for three reports: {failed:#?}");
    assert_eq!(failed[0]["channel"], "sms");
    assert!(failed[0]["detail"].as_str().unwrap().contains("30003"));

    // Give any second fallback a chance to show itself, then check there was none.
    env.publish(&[{
        let mut marker = invoice("INV-MARKER", "marker@example.com");
        marker["channels"] = json!(["email"]);
        marker
    }])
    .await;
    env.smtp.wait_for(2, common::WAIT).await;
    env.wait_events("the marker", |events| {
        events
            .iter()
            .any(|e| e["invoice_id"] == "INV-MARKER" && e["event"] == "invoice.sent")
    })
    .await;
    assert_eq!(env.smtp.received().len(), 2, "one fallback email, one marker email");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_handshake_accepts_only_our_verify_token() {
    let (env, _meta, _twilio) = start(r#"["email"]"#).await;
    let token = test_secrets("META_VERIFY_TOKEN").unwrap();
    let ok = env
        .get(&format!(
            "/webhooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = env
        .get("/webhooks/meta?hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1")
        .await;
    assert_eq!(wrong.status(), 403);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_statuses_become_events_and_a_failure_falls_back_once() {
    let (env, _meta, _twilio) = start(r#"["whatsapp", "email"]"#).await;
    env.publish(&[with_whatsapp("INV-WA")]).await;
    env.wait_for("invoice.sent", 1).await;

    let status = |status: &str, errors: Value| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1098765"},
                      "statuses": [{"id": "wamid.TEST1", "status": status, "timestamp": "1764000000",
                                    "recipient_id": "5215512345678", "errors": errors}]}}]}]})
    };
    // Tampered body under the original signature, and a wrong key.
    let good = status("read", json!([]));
    let signature = meta_signature(&serde_json::to_vec(&good).unwrap());
    assert_eq!(
        post_meta(&env, &status("failed", json!([])), Some(signature)).await,
        401
    );
    assert_eq!(post_meta(&env, &good, Some("sha256=00".into())).await, 401);
    assert!(env.events_named("invoice.channel_failed").is_empty());

    assert_eq!(post_meta(&env, &status("delivered", json!([])), None).await, 200);
    assert_eq!(post_meta(&env, &good, None).await, 200);
    env.wait_for("invoice.delivered", 1).await;
    let read = env.wait_for("invoice.read", 1).await;
    assert_eq!(read[0]["channel"], "whatsapp");

    let failed = status("failed", json!([{"code": 131026, "title": "Message undeliverable"}]));
    assert_eq!(post_meta(&env, &failed, None).await, 200);
    assert_eq!(post_meta(&env, &failed, None).await, 200);
    env.smtp.wait_for(1, common::WAIT).await;
    let sent = env.wait_for("invoice.sent", 2).await;
    assert_eq!(sent[1]["channel"], "email");
    assert_eq!(env.events_named("invoice.channel_failed").len(), 1);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_configured_channel_can_check_are_refused() {
    let (env, _meta, _twilio) = start(r#"["email"]"#).await;
    // An object no channel declares, and one whose channel (Messenger) has
    // no app_secret here: nothing can check them.
    for object in ["instagram", "page"] {
        let body = json!({"object": object, "entry": []});
        assert_eq!(post_meta(&env, &body, None).await, 401, "{object}");
    }
    let unknown = env
        .http
        .post(format!("{}/webhooks/vonage", env.base_url))
        .body("status=delivered")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "no channel's provider calls this path");
    let handshake = env.get("/webhooks/twilio?hub.mode=subscribe").await;
    assert_eq!(handshake.status(), 405, "Twilio makes no handshake");
    env.finish().await;
}
