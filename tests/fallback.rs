//! Fallback across real channel adapters, end to end on the real RabbitMQ:
//! WhatsApp refuses for good, SMS fails once and then accepts, email is
//! never needed.

mod common;

use common::{invoice, messages_in_queue, Options, TestEnv};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `[channels.whatsapp]` and `[channels.sms]` pointing at local mocks.
pub fn provider_channels(meta: &MockServer, twilio: &MockServer) -> String {
    format!(
        r#"
[channels.whatsapp]
provider = "meta"
base_url = "{meta}/v21.0"
phone_number_id = "1098765"
access_token = "env:WHATSAPP_TOKEN"
template = "payment_request"
app_secret = "env:META_APP_SECRET"
verify_token = "env:META_VERIFY_TOKEN"
rate_per_second = 50

[channels.sms]
provider = "twilio"
base_url = "{twilio}"
account_sid = "ACtest"
auth_token = "env:TWILIO_AUTH_TOKEN"
from = "+15005550006"
rate_per_second = 50
"#,
        meta = meta.uri(),
        twilio = twilio.uri(),
    )
}

fn for_every_channel(id: &str) -> Value {
    let mut invoice = invoice(id, "maria@example.com");
    invoice["customer"]["whatsapp"] = json!("+5215512345678");
    invoice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_refuses_sms_fails_once_then_sends_and_email_is_not_needed() {
    let (meta, twilio) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/v21.0/1098765/messages"))
        .and(header("authorization", "Bearer test-secret-whatsapp_token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "Message undeliverable", "type": "OAuthException", "code": 131026, "fbtrace_id": "Ab1"
        }})))
        .expect(1)
        .mount(&meta)
        .await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "SM0123456789abcdef", "status": "queued", "num_segments": "1", "error_code": null
        })))
        .expect(1)
        .mount(&twilio)
        .await;

    let env = TestEnv::start_with(Options {
        channels: provider_channels(&meta, &twilio),
        routing:
            "default = [\"whatsapp\", \"sms\", \"email\"]\ndefault_strategy = \"fallback\"\nrespect_preferences = false"
                .into(),
        ..Options::default()
    })
    .await;
    env.publish(&[for_every_channel("INV-FALLBACK")]).await;

    env.wait_for("invoice.sent", 1).await;
    let names: Vec<Value> = env.events().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(
        names,
        ["invoice.accepted", "invoice.channel_failed", "invoice.sent"],
        "events in order: {:#?}",
        env.events()
    );
    let failed = &env.events_named("invoice.channel_failed")[0];
    assert_eq!(failed["channel"], "whatsapp");
    assert!(failed["detail"].as_str().unwrap().contains("131026"), "{failed}");
    let sent = &env.events_named("invoice.sent")[0];
    assert_eq!(sent["channel"], "sms");
    assert_eq!(sent["attempt"], 2, "the 500 was retried once");
    assert_eq!(sent["provider_message_id"], "SM0123456789abcdef");

    // The one SMS carries the pay link; no email was needed.
    let requests = twilio.received_requests().await.unwrap();
    let body = String::from_utf8_lossy(&requests[1].body).into_owned();
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let text = &fields.iter().find(|(k, _)| k == "Body").expect("Body").1;
    assert!(text.contains(&format!("{}/p/", env.base_url)), "{text}");
    assert!(env.smtp.received().is_empty());

    // Acked once: nothing left in the queue, nothing handled twice.
    let mut marker = invoice("INV-MARKER", "marker@example.com");
    marker["channels"] = json!(["email"]);
    env.publish(&[marker]).await;
    env.wait_events("the marker invoice", |events| {
        events
            .iter()
            .any(|e| e["invoice_id"] == "INV-MARKER" && e["event"] == "invoice.sent")
    })
    .await;
    assert_eq!(messages_in_queue(&env.config.broker.queue).await, 0);
    assert!(env.events_named("invoice.duplicate").is_empty());
    assert_eq!(
        env.events()
            .iter()
            .filter(|e| e["invoice_id"] == "INV-FALLBACK" && e["event"] == "invoice.accepted")
            .count(),
        1
    );
    env.finish().await;
    // wiremock verifies each `expect` on drop.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_then_the_sms_goes() {
    let (meta, twilio) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_json(json!({"code": 20429, "message": "Too Many Requests", "status": 429})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SMretry", "status": "queued"})))
        .expect(1)
        .mount(&twilio)
        .await;
    let env = TestEnv::start_with(Options {
        channels: provider_channels(&meta, &twilio),
        routing: "default = [\"sms\", \"email\"]".into(),
        ..Options::default()
    })
    .await;
    let published = std::time::Instant::now();
    env.publish(&[invoice("INV-429", "maria@example.com")]).await;
    let sent = env.wait_for("invoice.sent", 1).await;
    assert!(
        published.elapsed() >= std::time::Duration::from_secs(2),
        "the retry waited for Retry-After"
    );
    assert_eq!(sent[0]["channel"], "sms");
    assert_eq!(sent[0]["attempt"], 2);
    assert!(env.events_named("invoice.channel_failed").is_empty());
    assert!(
        env.smtp.received().is_empty(),
        "a throttled provider is not a failed channel"
    );
    env.finish().await;
}
