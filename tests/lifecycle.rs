//! The invoice's whole life on the real broker and store: payment
//! confirmations, the admin timeline and journey steps, quiet-hour holds
//! that survive a restart, and a paid invoice that stops every pending send.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{invoice, test_secrets, Options, TestEnv, WAIT};
use hmac::{Hmac, Mac};
use payrelay::domain::clock::ManualClock;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `X-Payrelay-Signature` for `body` as a biller signs it at `t` (unix seconds).
fn sign_with_t(body: &[u8], t: u64) -> String {
    let key = test_secrets("ACME_WEBHOOK_SECRET").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Signed `age_secs` ago by the real clock.
fn sign_at(body: &[u8], age_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sign_with_t(body, now - age_secs)
}

fn sign(body: &[u8]) -> String {
    sign_at(body, 0)
}

async fn pay(env: &TestEnv, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut request = env
        .http
        .post(format!("{}/v1/payments", env.base_url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-payrelay-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn admin(env: &TestEnv, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = env.http.get(format!("{}{path}", env.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    if status == 200 {
        common::schemas::check_invoice_status(&body);
    }
    (status, body)
}

/// Publishes an email-only invoice and waits until it is sent: everything
/// published before it has been handled by then.
async fn settle(env: &TestEnv, id: &str) {
    let mut marker = invoice(id, "marker@example.com");
    marker["channels"] = json!(["email"]);
    env.publish(&[marker]).await;
    env.wait_events(id, |events| {
        events
            .iter()
            .any(|e| e["invoice_id"] == id && e["event"] == "invoice.sent")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_payment_closes_the_invoice_once_and_names_the_channel_that_earned_it() {
    let env = TestEnv::start().await;
    env.publish(&[invoice("INV-PAY", "payer@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    assert_eq!(env.get(&link).await.status(), 200, "the customer opens the link");

    let body = br#"{"biller_id": "acme", "invoice_id": "INV-PAY", "psp_reference": "psp-1"}"#;
    let good = sign(body);
    let tampered = br#"{"biller_id": "acme", "invoice_id": "INV-OTHER", "psp_reference": "psp-1"}"#;
    assert_eq!(pay(&env, tampered, Some(&good)).await.0, 401, "tampered body");
    assert_eq!(pay(&env, body, None).await.0, 401, "no signature");
    assert_eq!(pay(&env, body, Some("t=1,v1=00")).await.0, 401, "wrong signature");
    let unknown = br#"{"biller_id": "nobody", "invoice_id": "INV-PAY"}"#;
    assert_eq!(pay(&env, unknown, Some(&sign(unknown))).await.0, 401, "unknown biller");
    assert_eq!(pay(&env, b"not json", Some(&sign(b"not json"))).await.0, 400);
    assert!(
        env.events_named("invoice.paid").is_empty(),
        "refused calls change nothing"
    );

    let (status, answer) = pay(&env, body, Some(&good)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["already_closed"], false);
    let (status, again) = pay(&env, body, Some(&good)).await;
    assert_eq!((status, &again["already_closed"]), (200, &json!(true)));

    let paid = env.wait_for("invoice.paid", 1).await;
    assert_eq!(paid[0]["invoice_id"], "INV-PAY");
    assert_eq!(paid[0]["revision"], 1);
    assert_eq!(
        paid[0]["channel"], "email",
        "attributed to the message whose link was opened"
    );
    let page = env.get(&link).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("pagada"),
        "the es-MX already-paid page"
    );
    settle(&env, "INV-SETTLE").await;
    assert_eq!(env.events_named("invoice.paid").len(), 1, "published once");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_confirmation_cannot_be_replayed_once_its_time_has_passed() {
    let env = TestEnv::start().await;
    let body = br#"{"biller_id": "acme", "invoice_id": "INV-REPLAY"}"#;
    let (status, answer) = pay(&env, body, Some(&sign_at(body, 301))).await;
    assert_eq!(status, 401, "signed 301 s ago: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("300 seconds"), "{answer}");
    let (status, answer) = pay(&env, body, Some(&sign_at(body, 240))).await;
    assert_eq!(status, 200, "signed 4 minutes ago, within the window: {answer}");
    settle(&env, "INV-SETTLE").await;
    assert_eq!(
        env.events_named("invoice.paid").len(),
        1,
        "only the fresh one closed it"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_before_its_request_is_recorded_visibly_and_the_request_is_not_sent() {
    let env = TestEnv::start().await;
    let body = br#"{"biller_id": "acme", "invoice_id": "INV-EARLY"}"#;
    let (status, answer) = pay(&env, body, Some(&sign(body))).await;
    assert_eq!((status, &answer["already_closed"]), (200, &json!(false)), "{answer}");
    let paid = env.wait_for("invoice.paid", 1).await;
    assert_eq!(paid[0]["invoice_id"], "INV-EARLY");
    assert_eq!(paid[0]["revision"], Value::Null, "no revision was received");
    assert!(
        paid[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("before its payment request"),
        "the event says so: {}",
        paid[0]
    );

    let token = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let (status, view) = admin(&env, "/v1/invoices/acme/INV-EARLY", Some(&token)).await;
    assert_eq!(status, 200, "the status API knows the invoice: {view}");
    assert_eq!(view["status"], "paid");
    assert_eq!(view["revision"], Value::Null);
    assert_eq!(view["timeline"].as_array().unwrap().len(), 1, "{view:#}");
    assert_eq!(view["timeline"][0]["event"], "paid");

    env.publish(&[invoice("INV-EARLY", "early@example.com")]).await;
    let rejected = env
        .wait_events("the late request refused", |events| {
            events
                .iter()
                .any(|e| e["invoice_id"] == "INV-EARLY" && e["event"] == "invoice.rejected")
        })
        .await;
    let refusal = rejected
        .iter()
        .find(|e| e["invoice_id"] == "INV-EARLY" && e["event"] == "invoice.rejected")
        .unwrap();
    assert!(
        refusal["detail"].as_str().unwrap().contains("already paid"),
        "{refusal}"
    );
    settle(&env, "INV-SETTLE").await;
    assert!(
        env.smtp
            .received()
            .iter()
            .all(|m| m.recipients.iter().all(|r| !r.contains("early@example.com"))),
        "nothing was sent for the paid invoice"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_biller_with_an_amqp_user_takes_only_messages_published_as_that_user() {
    let env = TestEnv::start_with(Options {
        billers: r#"
[billers.globex]
checkout_url = "https://pay.example/g?inv={invoice_id}"
amqp_user = "guest"

[billers.initech]
checkout_url = "https://pay.example/i?inv={invoice_id}"
amqp_user = "billing-initech"
"#
        .into(),
        ..Options::default()
    })
    .await;
    let for_biller = |biller: &str, id: &str| {
        let mut message = invoice(id, &format!("{}@example.com", id.to_lowercase()));
        message["biller_id"] = json!(biller);
        message
    };
    env.publish_as(&for_biller("globex", "INV-G1"), Some("guest")).await;
    env.publish_as(&for_biller("globex", "INV-G2"), None).await;
    env.publish_as(&for_biller("initech", "INV-I1"), Some("guest")).await;
    let close = json!({"kind": "invoice_paid", "biller_id": "globex", "invoice_id": "INV-G1"});
    env.publish_as(&close, None).await;
    env.publish_as(&for_biller("acme", "INV-A1"), None).await;

    let mut refused = env.dead_letters(3).await;
    refused.sort_by_key(|(_, body)| String::from_utf8_lossy(body).into_owned());
    let reasons: Vec<(String, &str)> = refused
        .iter()
        .map(|(reason, body)| {
            let body: Value = serde_json::from_slice(body).unwrap();
            (body["invoice_id"].as_str().unwrap().to_owned(), reason.as_str())
        })
        .collect();
    let reason_of = |id: &str| {
        reasons
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, r)| *r)
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reason_of("INV-G2")[0].contains("has no user_id"), "{reasons:?}");
    assert!(
        reason_of("INV-G2")[0].contains("[billers.globex] amqp_user"),
        "{reasons:?}"
    );
    assert!(
        reason_of("INV-I1")[0].contains("published as another user"),
        "{reasons:?}"
    );
    assert_eq!(reason_of("INV-G1").len(), 1, "the unproven close: {reasons:?}");

    let sent = env.wait_for("invoice.sent", 2).await;
    let mut sent: Vec<&str> = sent.iter().map(|e| e["invoice_id"].as_str().unwrap()).collect();
    sent.sort();
    assert_eq!(
        sent,
        ["INV-A1", "INV-G1"],
        "the right user, and a biller without amqp_user"
    );
    let rejected = env.wait_for("invoice.rejected", 3).await;
    assert!(rejected.iter().all(|e| e["biller_id"] != "acme"), "{rejected:#?}");
    settle(&env, "INV-SETTLE").await;
    assert!(
        env.events_named("invoice.paid").is_empty(),
        "the close without the user changed nothing"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_status_and_timeline_only_to_the_admin_token() {
    let env = TestEnv::start().await;
    env.publish(&[invoice("INV-TL", "timeline@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    env.wait_for("invoice.sent", 1).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    env.get(&link).await;
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-TL"})])
        .await;
    env.wait_for("invoice.paid", 1).await;

    let path = "/v1/invoices/acme/INV-TL";
    assert_eq!(admin(&env, path, None).await.0, 401);
    assert_eq!(admin(&env, path, Some("guess")).await.0, 401);
    let token = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    assert_eq!(admin(&env, "/v1/invoices/acme/NOPE", Some(&token)).await.0, 404);
    let (status, view) = admin(&env, path, Some(&token)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "paid");
    let steps: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["received", "send_started", "sent", "clicked", "paid"],
        "{view:#}"
    );
    let text = view.to_string();
    assert!(
        !text.contains("timeline@example.com"),
        "no personal data in the timeline"
    );
    env.finish().await;
}

/// 2026-11-20 09:00 in Mexico City (15:00 UTC); the test invoice is due on
/// 2026-12-01.
const INTAKE_MS: i64 = 1_795_186_800_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_shows_the_journey_planned_then_cancelled_by_the_payment() {
    let clock = Arc::new(ManualClock::at_ms(INTAKE_MS));
    let env = TestEnv::start_with(Options {
        routing: r#"default = ["email"]
journey = "ladder"

[journeys.ladder]
send_at = "10:00"
steps = [
  { name = "early", due = "-15d" },
  { name = "upcoming", due = "-3d" },
  { name = "due", due = "0d" },
  { name = "final", due = "+10d", template = "final_notice" },
]
"#
        .into(),
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-JOURNEY", "journey@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    let token = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let path = "/v1/invoices/acme/INV-JOURNEY";

    let (status, view) = admin(&env, path, Some(&token)).await;
    assert_eq!(status, 200, "{view}");
    let steps = |view: &Value| -> Vec<(String, String, String, Value)> {
        view["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!((&s["revision"], &s["journey"]), (&json!(1), &json!("ladder")), "{s}");
                let text = |k: &str| s[k].as_str().unwrap().to_owned();
                (text("name"), text("at"), text("status"), s["detail"].clone())
            })
            .collect()
    };
    let intake = "2026-11-20T15:00:00Z";
    let past = json!(payrelay::journey::PAST_AT_INTAKE);
    // 10:00 in Mexico City (UTC-6) on each step's day.
    let planned = [
        ("early", "2026-11-16T16:00:00Z", "skipped", past.clone()),
        ("upcoming", "2026-11-28T16:00:00Z", "planned", Value::Null),
        ("due", "2026-12-01T16:00:00Z", "planned", Value::Null),
        ("final", "2026-12-11T16:00:00Z", "planned", Value::Null),
    ]
    .map(|(n, at, st, d)| (n.to_owned(), at.to_owned(), st.to_owned(), d));
    assert_eq!(steps(&view), planned, "{view:#}");
    assert_eq!(view["steps"][0]["done_at"], intake, "skipped when it arrived");
    assert!(view["steps"][1]["done_at"].is_null(), "{view:#}");
    let skipped: Vec<&Value> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"].as_str().unwrap().starts_with("step_"))
        .collect();
    assert_eq!(skipped.len(), 1, "only the skip has happened: {view:#}");
    assert_eq!(skipped[0]["event"], "step_skipped");
    assert_eq!(skipped[0]["at"], intake);
    assert_eq!(
        skipped[0]["detail"],
        format!("step early (journey ladder): {}", payrelay::journey::PAST_AT_INTAKE)
    );

    clock.set_ms(INTAKE_MS + 60 * 60 * 1000);
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-JOURNEY"})])
        .await;
    env.wait_for("invoice.paid", 1).await;
    let (_, view) = admin(&env, path, Some(&token)).await;
    assert_eq!(view["status"], "paid");
    let mut after = planned.clone();
    for step in &mut after[1..] {
        step.2 = "cancelled".to_owned();
        step.3 = json!("paid");
    }
    assert_eq!(steps(&view), after, "the times stay, the steps stop: {view:#}");
    assert_eq!(view["steps"][1]["done_at"], "2026-11-20T16:00:00Z", "{view:#}");
    let events: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let paid_at = events.iter().position(|e| *e == "paid").unwrap();
    assert_eq!(
        events[paid_at + 1..],
        ["step_cancelled"; 3],
        "each stopped step follows the payment: {view:#}"
    );
    assert_eq!(
        view["timeline"][paid_at + 1]["detail"],
        "step upcoming (journey ladder): paid"
    );
    assert!(!view.to_string().contains("journey@example.com"));
    env.finish().await;
}

/// 2026-11-20 22:30 in Mexico City (04:30 UTC the next day).
const NIGHT_MS: i64 = 1_795_235_400_000;
/// 2026-11-21 08:01 in Mexico City.
const MORNING_MS: i64 = NIGHT_MS + (9 * 60 + 31) * 60 * 1000;

fn quiet_env(clock: &Arc<ManualClock>) -> Options {
    Options {
        channels: "[channels.sms]\nprovider = \"file\"\nrate_per_second = 50\n".into(),
        routing: "default = [\"sms\", \"email\"]\nquiet_hours = \"21:00-08:00\"".into(),
        clock: Some(clock.clone()),
        ..Options::default()
    }
}

fn sms_outbox(env: &TestEnv) -> usize {
    std::fs::read_dir(env.dir.path().join("var/outbox/sms"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_hours_hold_is_sent_when_the_window_opens_even_after_a_restart() {
    let clock = Arc::new(ManualClock::at_ms(NIGHT_MS));
    let mut env = TestEnv::start_with(quiet_env(&clock)).await;
    env.publish(&[invoice("INV-NIGHT", "night@example.com")]).await;
    env.wait_for("invoice.accepted", 1).await;
    settle(&env, "INV-SETTLE-1").await;
    assert_eq!(sms_outbox(&env), 0, "no SMS at night");
    assert!(env
        .events()
        .iter()
        .all(|e| e["invoice_id"] != "INV-NIGHT" || e["event"] != "invoice.sent"));
    assert_eq!(
        env.smtp.received().len(),
        1,
        "and no email instead: only the marker went"
    );

    let token = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let (_, view) = admin(&env, "/v1/invoices/acme/INV-NIGHT", Some(&token)).await;
    assert_eq!(view["status"], "accepted");
    assert_eq!(
        view["held_until"], "2026-11-21T14:00:00Z",
        "08:00 in Mexico City: {view:#}"
    );

    // The hold is in the store: a restart keeps it, and the morning sends it.
    env.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sms_outbox(&env), 0, "still night after the restart");
    clock.set_ms(MORNING_MS);
    let sent = env
        .wait_events("the held SMS", |events| {
            events
                .iter()
                .any(|e| e["invoice_id"] == "INV-NIGHT" && e["event"] == "invoice.sent")
        })
        .await;
    let sent: Vec<&Value> = sent.iter().filter(|e| e["invoice_id"] == "INV-NIGHT").collect();
    assert_eq!(sent.iter().filter(|e| e["event"] == "invoice.sent").count(), 1);
    assert_eq!(sms_outbox(&env), 1);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_paid_while_held_is_never_sent() {
    let clock = Arc::new(ManualClock::at_ms(NIGHT_MS));
    let env = TestEnv::start_with(quiet_env(&clock)).await;
    env.publish(&[invoice("INV-HELD-PAID", "held@example.com")]).await;
    env.wait_for("invoice.accepted", 1).await;
    settle(&env, "INV-SETTLE-1").await;
    let body = br#"{"biller_id": "acme", "invoice_id": "INV-HELD-PAID"}"#;
    let signed = sign_with_t(body, NIGHT_MS as u64 / 1000);
    assert_eq!(pay(&env, body, Some(&signed)).await.0, 200);
    env.wait_for("invoice.paid", 1).await;

    clock.set_ms(MORNING_MS);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settle(&env, "INV-SETTLE-2").await;
    assert_eq!(sms_outbox(&env), 0, "nothing was sent for the paid invoice");
    assert!(env
        .events()
        .iter()
        .all(|e| e["invoice_id"] != "INV-HELD-PAID" || e["event"] != "invoice.sent"));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_paid_before_a_later_delivery_failure_gets_no_fallback() {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SMpaid", "status": "queued"})))
        .mount(&twilio)
        .await;
    let env = TestEnv::start_with(Options {
        channels: format!(
            "[channels.sms]\nprovider = \"twilio\"\nbase_url = \"{}\"\naccount_sid = \"ACtest\"\n\
             auth_token = \"env:TWILIO_AUTH_TOKEN\"\nfrom = \"+15005550006\"\nrate_per_second = 50\n",
            twilio.uri()
        ),
        routing: "default = [\"sms\", \"email\"]".into(),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-PAID-FIRST", "paid@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-PAID-FIRST"})])
        .await;
    env.wait_for("invoice.paid", 1).await;

    // Twilio reports the SMS undelivered after the payment: no email follows.
    let fields = [
        ("MessageSid", "SMpaid"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let url = format!("{}/webhooks/twilio", env.base_url);
    let mut data = url.clone();
    let mut sorted = fields.to_vec();
    sorted.sort();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(test_secrets("TWILIO_AUTH_TOKEN").unwrap().as_bytes()).unwrap();
    mac.update(data.as_bytes());
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let status = env
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    env.wait_for("invoice.channel_failed", 1).await;
    settle(&env, "INV-SETTLE").await;
    assert_eq!(
        env.smtp.received().len(),
        1,
        "only the marker email: no fallback for a paid invoice"
    );
    env.finish().await;
}

/// A pay link lasts its TTL on the service's clock, from the moment its
/// message was made: the wall clock (weeks past this clock's morning) does
/// not end it, and the service's clock does, to the millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_link_expires_when_the_service_clock_passes_its_ttl() {
    let clock = Arc::new(ManualClock::at_ms(MORNING_MS));
    let env = TestEnv::start_with(Options {
        paylink_ttl: "1h",
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-EXPIRES", "soon@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    // Recorded as sent before the clock moves: an invoice still being sent
    // an hour later by this clock would be idle, and taken over.
    env.wait_for("invoice.sent", 1).await;
    assert_eq!(env.get(&link).await.status(), 200);
    clock.set_ms(MORNING_MS + 3_600_000 - 1);
    assert_eq!(env.get(&link).await.status(), 200, "a millisecond before its hour ends");
    clock.set_ms(MORNING_MS + 3_600_000);
    assert_eq!(env.get(&link).await.status(), 410);
    assert_eq!(env.get(&format!("{link}/pay")).await.status(), 410);
    env.finish().await;
}

/// Paying an invoice closes it; it does not bring its expired links back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_an_invoice_does_not_revive_its_expired_link() {
    let clock = Arc::new(ManualClock::at_ms(MORNING_MS));
    let env = TestEnv::start_with(Options {
        paylink_ttl: "1h",
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-EXPIRED-PAID", "late@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    env.wait_for("invoice.sent", 1).await;
    clock.set_ms(MORNING_MS + 3_600_000);
    assert_eq!(env.get(&link).await.status(), 410);
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-EXPIRED-PAID"})])
        .await;
    env.wait_for("invoice.paid", 1).await;
    assert_eq!(env.get(&link).await.status(), 410, "the paid invoice's expired link");
    assert_eq!(env.get(&format!("{link}/pay")).await.status(), 410);
    env.finish().await;
}
