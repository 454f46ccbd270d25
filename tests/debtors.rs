//! Debtors end to end on the real RabbitMQ, with Twilio and Meta stand-ins
//! (wiremock) and the SMTP listener: a customer's STOP by SMS (signed, and a
//! forged one that changes nothing), Twilio's 21610, a WhatsApp STOP, the
//! email one-click unsubscribe, START lifting a stop, an invoice whose every
//! channel is stopped, and the pay page's channel choice routing the
//! customer's next invoice.

mod common;

use std::time::Duration;

use common::pg::PgSchema;
use common::{invoice, messages_in_queue, parts, pay_link, test_secrets, Options, TestEnv, WAIT};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PHONE: &str = "+5215512345678";

fn channels(meta: &MockServer, twilio: &MockServer) -> String {
    format!(
        r#"
[channels.whatsapp]
provider = "meta"
base_url = "{meta}/v21.0"
phone_number_id = "1098765"
access_token = "env:WHATSAPP_TOKEN"
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

const TWILIO_MESSAGES: &str = "/2010-04-01/Accounts/ACtest/Messages.json";

async fn mocks() -> (MockServer, MockServer) {
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
    (meta, twilio)
}

async fn twilio_accepts(twilio: &MockServer) {
    Mock::given(method("POST"))
        .and(path(TWILIO_MESSAGES))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "SMtest1", "status": "queued", "num_segments": "1", "error_code": null
        })))
        .mount(twilio)
        .await;
}

async fn start(meta: &MockServer, twilio: &MockServer, routing: &str) -> TestEnv {
    start_on(meta, twilio, routing, None).await
}

/// [`start`] on the store at `store_url` (SQLite in the test's folder when None).
async fn start_on(meta: &MockServer, twilio: &MockServer, routing: &str, store_url: Option<String>) -> TestEnv {
    TestEnv::start_with(Options {
        channels: channels(meta, twilio),
        routing: routing.into(),
        store_url,
        ..Options::default()
    })
    .await
}

/// Twilio's signature, written out independently of the service.
fn twilio_signature(url: &str, fields: &[(&str, &str)]) -> String {
    use base64::Engine;
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = test_secrets("TWILIO_AUTH_TOKEN").unwrap();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// An inbound SMS as Twilio posts it, signed (or with `signature`).
async fn inbound_sms(env: &TestEnv, body: &str, extra: &[(&str, &str)], signature: Option<&str>) -> u16 {
    let mut fields = vec![
        ("MessageSid", "SMin0001"),
        ("SmsSid", "SMin0001"),
        ("AccountSid", "ACtest"),
        ("From", PHONE),
        ("To", "+15005550006"),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("FromCountry", "MX"),
        ("SmsStatus", "received"),
    ];
    fields.extend_from_slice(extra);
    let url = format!("{}/webhooks/twilio", env.base_url);
    let signature = signature.map_or_else(|| twilio_signature(&url, &fields), str::to_owned);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    env.http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A WhatsApp Cloud API inbound message `message` from the customer, signed.
async fn inbound_whatsapp(env: &TestEnv, message: Value) -> u16 {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "1098765"},
            "contacts": [{"profile": {"name": "María"}, "wa_id": "5215512345678"}],
            "messages": [message]
        }
    }]}]});
    let bytes = serde_json::to_vec(&body).unwrap();
    let key = test_secrets("META_APP_SECRET").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&bytes);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
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

/// An invoice for the usual customer that names its own `channels`.
fn on(id: &str, channels: &[&str]) -> Value {
    let mut invoice = invoice(id, "maria@example.com");
    invoice["customer"]["whatsapp"] = json!(PHONE);
    invoice["channels"] = json!(channels);
    invoice
}

/// Publishes `invoice` and waits until it is finished (sent, exhausted or
/// rejected); returns its events.
async fn handled(env: &TestEnv, invoice: Value) -> Vec<Value> {
    let id = invoice["invoice_id"].as_str().unwrap().to_owned();
    env.publish(&[invoice]).await;
    let done = ["invoice.sent", "invoice.exhausted", "invoice.rejected"];
    let finished = |events: &[Value]| {
        events
            .iter()
            .any(|e| e["invoice_id"] == id.as_str() && done.contains(&e["event"].as_str().unwrap_or_default()))
    };
    env.wait_events(&format!("{id} finished"), finished).await;
    // `all` may still be sending on its other channels: let them finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.events()
        .into_iter()
        .filter(|e| e["invoice_id"] == id.as_str())
        .collect()
}

fn sent_on(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "invoice.sent")
        .map(|e| e["channel"].as_str().unwrap().to_owned())
        .collect()
}

async fn twilio_requests(twilio: &MockServer) -> usize {
    twilio.received_requests().await.unwrap().len()
}

/// No event may carry the customer's number, email or name.
fn assert_no_personal_data(events: &[Value]) {
    for event in events {
        let text = event.to_string();
        for personal in ["5512345678", "maria@example.com", "María"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_stop_skips_the_number_until_start_and_a_forged_one_changes_nothing() {
    sms_stop_and_start(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_stop_skips_the_number_until_start_on_postgres() {
    let schema = PgSchema::create("payrelay_debtors").await;
    sms_stop_and_start(Some(schema.store_url().to_string())).await;
}

async fn sms_stop_and_start(store_url: Option<String>) {
    let (meta, twilio) = mocks().await;
    twilio_accepts(&twilio).await;
    let env = start_on(
        &meta,
        &twilio,
        "default = [\"email\"]\ndefault_strategy = \"all\"\nrespect_preferences = false",
        store_url,
    )
    .await;
    let first = handled(&env, on("INV-1", &["sms", "email"])).await;
    assert_eq!(sent_on(&first).len(), 2, "{first:#?}");
    assert_eq!(twilio_requests(&twilio).await, 1);

    // A STOP whose signature is not Twilio's is refused and changes nothing.
    assert_eq!(inbound_sms(&env, "STOP", &[], Some("Zm9yZ2Vk")).await, 401);
    let second = handled(&env, on("INV-2", &["sms", "email"])).await;
    assert_eq!(sent_on(&second).len(), 2, "{second:#?}");
    assert_eq!(twilio_requests(&twilio).await, 2);

    // The real one: the number is suppressed and the biller told, once.
    assert_eq!(inbound_sms(&env, " Stop ", &[], None).await, 204);
    let told = env.wait_for("customer.suppressed", 1).await;
    assert_eq!(told[0]["customer_id"], "C-9981");
    assert_eq!(told[0]["invoice_id"], "INV-2");
    assert_eq!(told[0]["channel"], "sms");
    assert_eq!(told[0]["_routing_key"], "acme.customer.suppressed");
    assert_eq!(inbound_sms(&env, "STOP", &[("OptOutType", "STOP")], None).await, 204);

    // The next invoice naming SMS skips it; email still goes.
    let third = handled(&env, on("INV-3", &["sms", "email"])).await;
    assert_eq!(sent_on(&third), ["email"], "{third:#?}");
    assert_eq!(twilio_requests(&twilio).await, 2, "nothing sent to a stopped number");
    let status: Value = env
        .http
        .get(format!("{}/v1/invoices/acme/INV-3", env.base_url))
        .bearer_auth(test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.to_string().contains("suppressed"), "{status:#}");
    assert_eq!(
        env.events_named("customer.suppressed").len(),
        1,
        "a second STOP tells nobody again"
    );

    // START lifts it.
    assert_eq!(inbound_sms(&env, "START", &[("OptOutType", "START")], None).await, 204);
    env.wait_for("customer.unsuppressed", 1).await;
    let fourth = handled(&env, on("INV-4", &["sms", "email"])).await;
    assert_eq!(sent_on(&fourth).len(), 2, "{fourth:#?}");
    assert_eq!(twilio_requests(&twilio).await, 3);
    assert_no_personal_data(&env.events());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_error_21610_suppresses_the_number_and_the_next_channel_takes_over() {
    let (meta, twilio) = mocks().await;
    Mock::given(method("POST"))
        .and(path(TWILIO_MESSAGES))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient",
            "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400
        })))
        .mount(&twilio)
        .await;
    let env = start(
        &meta,
        &twilio,
        "default = [\"email\"]\ndefault_strategy = \"fallback\"\nrespect_preferences = false",
    )
    .await;
    let first = handled(&env, on("INV-1", &["sms", "email"])).await;
    assert_eq!(sent_on(&first), ["email"], "{first:#?}");
    assert_eq!(twilio_requests(&twilio).await, 1);
    let told = env.wait_for("customer.suppressed", 1).await;
    assert_eq!(
        (told[0]["channel"].as_str(), told[0]["invoice_id"].as_str()),
        (Some("sms"), Some("INV-1"))
    );
    assert!(told[0]["detail"].as_str().unwrap().contains("21610"), "{}", told[0]);

    let second = handled(&env, on("INV-2", &["sms", "email"])).await;
    assert_eq!(sent_on(&second), ["email"], "{second:#?}");
    assert_eq!(twilio_requests(&twilio).await, 1, "Twilio is not asked again");
    assert!(
        !second
            .iter()
            .any(|e| e["event"] == "invoice.channel_failed" && e["channel"] == "sms"),
        "a suppressed channel is skipped, not failed: {second:#?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_stop_skips_whatsapp_and_a_start_button_lifts_it() {
    let (meta, twilio) = mocks().await;
    twilio_accepts(&twilio).await;
    let env = start(
        &meta,
        &twilio,
        "default = [\"email\"]\ndefault_strategy = \"fallback\"\nrespect_preferences = false",
    )
    .await;
    let first = handled(&env, on("INV-1", &["whatsapp", "email"])).await;
    assert_eq!(sent_on(&first), ["whatsapp"]);

    let stop = json!({"from": "5215512345678", "id": "wamid.IN1", "timestamp": "1764700000",
        "type": "text", "text": {"body": "BAJA"}});
    assert_eq!(inbound_whatsapp(&env, stop).await, 200);
    let told = env.wait_for("customer.suppressed", 1).await;
    assert_eq!(told[0]["channel"], "whatsapp");
    let second = handled(&env, on("INV-2", &["whatsapp", "email"])).await;
    assert_eq!(sent_on(&second), ["email"], "{second:#?}");

    // A message that is no stop word changes nothing; a START button lifts it.
    let chat = json!({"from": "5215512345678", "id": "wamid.IN2", "timestamp": "1764700001",
        "type": "text", "text": {"body": "please stop sending me the old invoice"}});
    assert_eq!(inbound_whatsapp(&env, chat).await, 200);
    let start = json!({"from": "5215512345678", "id": "wamid.IN3", "timestamp": "1764700002",
        "type": "button", "button": {"payload": "START", "text": "Start"}});
    assert_eq!(inbound_whatsapp(&env, start).await, 200);
    env.wait_for("customer.unsuppressed", 1).await;
    let third = handled(&env, on("INV-3", &["whatsapp", "email"])).await;
    assert_eq!(sent_on(&third), ["whatsapp"], "{third:#?}");
    assert_eq!(env.events_named("customer.suppressed").len(), 1);
    env.finish().await;
}

/// The raw email with its folded header lines joined.
fn unfolded(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_stops_email_and_a_get_changes_nothing() {
    let env = TestEnv::start().await;
    let first = handled(&env, invoice("INV-1", "maria@example.com")).await;
    assert_eq!(sent_on(&first), ["email"]);
    let raw = env.smtp.wait_for(1, WAIT).await[0].data.clone();
    let headers = unfolded(&raw);
    let (_, text, _) = parts(&raw);
    let link = pay_link(&text, &env.base_url);
    let token = link.rsplit('/').next().unwrap().to_owned();
    let unsubscribe = format!("{}/u/{token}", env.base_url);
    assert!(
        headers.contains(&format!("List-Unsubscribe: <{unsubscribe}>")),
        "{headers}"
    );
    assert!(
        headers.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{headers}"
    );

    // A scanner's GET shows the page and changes nothing.
    let page = env.get(&unsubscribe).await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"es\"") && html.contains("ACME Energy") && html.contains("Darme de baja"),
        "{html}"
    );
    let second = handled(&env, invoice("INV-2", "maria@example.com")).await;
    assert_eq!(sent_on(&second), ["email"]);
    assert!(env.events_named("customer.suppressed").is_empty());

    // INV-1 is paid meanwhile: its link still unsubscribes.
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-1"})])
        .await;
    env.wait_for("invoice.paid", 1).await;

    // The mailbox provider's one-click POST: no cookies, no Origin check.
    let done = env
        .http
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://mail.example")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Se dio de baja"));
    let told = env.wait_for("customer.suppressed", 1).await;
    assert_eq!(
        (told[0]["channel"].as_str(), told[0]["customer_id"].as_str()),
        (Some("email"), Some("C-9981"))
    );

    // Email was its only channel: acked, rejected, not dead-lettered.
    let third = handled(&env, invoice("INV-3", "Maria@Example.com")).await;
    let rejected: Vec<&Value> = third.iter().filter(|e| e["event"] == "invoice.rejected").collect();
    assert_eq!(rejected.len(), 1, "{third:#?}");
    assert_eq!(rejected[0]["detail"], "every channel suppressed");
    assert!(sent_on(&third).is_empty());
    assert_eq!(env.smtp.received().len(), 2, "no third email");
    assert_eq!(messages_in_queue(&env.config.broker.dead_letter_queue()).await, 0);
    assert_eq!(messages_in_queue(&env.config.broker.queue).await, 0);

    // An unknown token is a 404; a well-formed one from the past still works.
    assert_eq!(env.get(&format!("{}/u/nope", env.base_url)).await.status(), 404);
    assert_no_personal_data(&env.events());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_choice_on_the_pay_page_routes_the_next_invoice_and_a_stop_is_honoured() {
    channel_choice(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_choice_on_the_pay_page_routes_the_next_invoice_on_postgres() {
    let schema = PgSchema::create("payrelay_debtors").await;
    channel_choice(Some(schema.store_url().to_string())).await;
}

async fn channel_choice(store_url: Option<String>) {
    let (meta, twilio) = mocks().await;
    twilio_accepts(&twilio).await;
    let env = start_on(
        &meta,
        &twilio,
        "default = [\"email\", \"sms\"]\ndefault_strategy = \"fallback\"\nrespect_preferences = true",
        store_url,
    )
    .await;
    let first = handled(&env, invoice("INV-1", "maria@example.com")).await;
    assert_eq!(sent_on(&first), ["email"]);
    let raw = env.smtp.wait_for(1, WAIT).await[0].data.clone();
    let (_, text, _) = parts(&raw);
    let link = pay_link(&text, &env.base_url);

    // The page offers the channels it has a contact for, in today's order.
    let page = env.get(&link).await.text().await.unwrap();
    assert!(page.contains("Recordarme por"), "{page}");
    assert!(
        page.contains("name=\"channels\"") && page.contains("name=\"stop\""),
        "{page}"
    );
    let action = format!("{link}/preferences");

    // Another site's form is refused and stores nothing.
    let forged = env
        .http
        .post(&action)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body("channels=sms&channels=email")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let cross = env
        .http
        .post(&action)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body("channels=sms&channels=email")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let unknown = env
        .http
        .post(&action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("channels=pigeon")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let second = handled(&env, invoice("INV-2", "maria@example.com")).await;
    assert_eq!(sent_on(&second), ["email"], "nothing was stored: {second:#?}");
    assert!(env.events_named("customer.preferences_changed").is_empty());

    // The customer's own choice: SMS first.
    let saved = env
        .http
        .post(&action)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", env.base_url.as_str())
        .body("channels=sms&channels=email")
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    let back = saved.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.ends_with("?saved=1"), "{back}");
    let page = env.get(&back).await.text().await.unwrap();
    assert!(page.contains("Guardamos su elección"), "{page}");
    let changed = env.wait_for("customer.preferences_changed", 1).await;
    assert_eq!(changed[0]["customer_id"], "C-9981");
    assert!(
        changed[0]["detail"].as_str().unwrap().contains("sms, email"),
        "{}",
        changed[0]
    );
    let third = handled(&env, invoice("INV-3", "maria@example.com")).await;
    assert_eq!(sent_on(&third), ["sms"], "{third:#?}");

    // Stopping SMS: the next one goes by email, even though it names SMS first.
    let stopped = env
        .http
        .post(&action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("channels=sms&channels=email&stop=sms")
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 303);
    let mut named = invoice("INV-4", "maria@example.com");
    named["channels"] = json!(["sms", "email"]);
    let fourth = handled(&env, named).await;
    assert_eq!(sent_on(&fourth), ["email"], "{fourth:#?}");
    assert_eq!(twilio_requests(&twilio).await, 1);
    assert_no_personal_data(&env.events());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_choice_reorders_the_customer_s_next_journey_step() {
    let (meta, twilio) = mocks().await;
    twilio_accepts(&twilio).await;
    let env = start(
        &meta,
        &twilio,
        "default = [\"email\", \"sms\"]\ndefault_strategy = \"fallback\"\nrespect_preferences = true\n\
         journey = \"quick\"\n[journeys.quick]\nsteps = [{ name = \"nudge\", after = \"3s\" }]",
    )
    .await;
    let first = handled(&env, invoice("INV-1", "maria@example.com")).await;
    assert_eq!(sent_on(&first), ["email"]);
    let raw = env.smtp.wait_for(1, WAIT).await[0].data.clone();
    let (_, text, _) = parts(&raw);
    let link = pay_link(&text, &env.base_url);
    let saved = env
        .http
        .post(format!("{link}/preferences"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("channels=sms&channels=email")
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303);
    // The reminder planned before the choice goes by the customer's choice.
    let nudged = env
        .wait_events("the nudge", |events| {
            events
                .iter()
                .any(|e| e["event"] == "invoice.sent" && e["step"] == "nudge")
        })
        .await;
    let nudge: Vec<&Value> = nudged
        .iter()
        .filter(|e| e["event"] == "invoice.sent" && e["step"] == "nudge")
        .collect();
    assert_eq!(nudge.len(), 1);
    assert_eq!(nudge[0]["channel"], "sms", "{nudged:#?}");
    assert_eq!(twilio_requests(&twilio).await, 1);
    assert_eq!(env.smtp.received().len(), 1, "no second email");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_a_customer_lands_on_name_the_biller_s_support() {
    let env = TestEnv::start_with(Options {
        billers: "[billers.globex]\nname = \"Globex\"\ncheckout_url = \"https://pay.globex.example/{token}\"\n\
                  support = \"+52 55 1234 5678 or ayuda@globex.example\"\ndefault_locale = \"de\""
            .into(),
        ..Options::default()
    })
    .await;
    let mut globex = invoice("G-1", "maria@example.com");
    globex["biller_id"] = json!("globex");
    globex["customer"]["locale"] = json!("de-DE");
    handled(&env, globex).await;
    let raw = env.smtp.wait_for(1, WAIT).await[0].data.clone();
    let (_, text, _) = parts(&raw);
    let link = pay_link(&text, &env.base_url);
    let page = env.get(&link).await.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"de\"")
            && page.contains("Fragen? Wenden Sie sich an Globex: +52 55 1234 5678 or ayuda@globex.example"),
        "{page}"
    );
    assert!(page.contains("Erinnern Sie mich per"), "{page}");
    let token = link.rsplit('/').next().unwrap();
    let unsubscribe = env.get(&format!("/u/{token}")).await.text().await.unwrap();
    assert!(
        unsubscribe.contains("Fragen? Wenden Sie sich an Globex: +52 55 1234 5678"),
        "{unsubscribe}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_step_whose_every_channel_is_suppressed_is_skipped_and_sends_nothing() {
    let env = TestEnv::start_with(Options {
        routing: "default = [\"email\"]\njourney = \"quick\"\n[journeys.quick]\nsteps = [{ name = \"nudge\", after = \"2s\" }]"
            .into(),
        ..Options::default()
    })
    .await;
    let first = handled(&env, invoice("INV-1", "maria@example.com")).await;
    assert_eq!(sent_on(&first), ["email"]);
    let raw = env.smtp.wait_for(1, WAIT).await[0].data.clone();
    let (_, text, _) = parts(&raw);
    let token = pay_link(&text, &env.base_url).rsplit('/').next().unwrap().to_owned();
    let done = env
        .http
        .post(format!("{}/u/{token}", env.base_url))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    env.wait_for("customer.suppressed", 1).await;
    // The step comes due two seconds after the first message and is skipped.
    let deadline = tokio::time::Instant::now() + WAIT;
    let step = loop {
        let status: Value = env
            .http
            .get(format!("{}/v1/invoices/acme/INV-1", env.base_url))
            .bearer_auth(test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let nudge = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "nudge")
            .cloned()
            .expect("the nudge is planned");
        if nudge["status"] != "planned" {
            break nudge;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nudge never came due: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(step["status"], "skipped", "{step}");
    assert_eq!(step["detail"], "every channel suppressed", "{step}");
    assert_eq!(env.smtp.received().len(), 1, "no reminder email");
    env.finish().await;
}
