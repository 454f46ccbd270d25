//! The WhatsApp and Messenger adapters against a local mock of the Graph API:
//! the exact request each one sends, and the class of every documented
//! error answer (transient or permanent, with the provider's code).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use payrelay::channels::{BuildContext, Prepared, Receipt, Registry, Request, SendError};
use payrelay::config::Config;
use payrelay::domain::ChannelName;
use payrelay::invoice::Message;
use payrelay::render::Templates;

const WHATSAPP_TOKEN: &str = "EAAwhatsappTOKEN123";
const MESSENGER_TOKEN: &str = "EAApageTOKEN456";
const PHONE_NUMBER_ID: &str = "106540352242922";
const PUBLIC_BASE_URL: &str = "https://pay.example";
const WHATSAPP_PATH: &str = "/v21.0/106540352242922/messages";
const MESSENGER_PATH: &str = "/v21.0/me/messages";
const NUMBER: &str = "+5215512345678";
const PSID: &str = "6543210987654321";

/// A config with both channels on the Meta provider at `graph_url`.
fn meta_config(graph_url: &str, dir: &Path) -> Config {
    let toml = format!(
        r#"
[http]
public_base_url = "{PUBLIC_BASE_URL}"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}"
default_locale = "es-MX"

[billers.globex]
name = "Globex"
checkout_url = "https://globex.example/pay?inv={{invoice_id}}"
whatsapp_template = "globex_bill"
whatsapp_parameters = ["{{{{invoice.id}}}}", "{{{{amount.value}}}} {{{{amount.currency}}}}"]

[channels.email]
transport = "file"

[channels.whatsapp]
provider = "meta"
base_url = "{graph_url}/v21.0"
phone_number_id = "{PHONE_NUMBER_ID}"
access_token = "env:WHATSAPP_TOKEN"
timeout = "500ms"
templates = {{ reminder = "payment_reminder", final_notice = "payment_final" }}

[channels.messenger]
provider = "meta"
base_url = "{graph_url}/v21.0/"
page_access_token = "env:MESSENGER_TOKEN"
timeout = "500ms"
"#
    );
    load(&toml, dir)
}

/// A config with both channels on the `file` provider.
fn file_config(dir: &Path) -> Config {
    let toml = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"

[channels.email]
transport = "file"

[channels.whatsapp]
provider = "file"
outbox_dir = "outbox/wa"

[channels.messenger]
outbox_dir = "outbox/fb"
"#;
    load(toml, dir)
}

fn load(toml: &str, dir: &Path) -> Config {
    let env = |name: &str| match name {
        "WHATSAPP_TOKEN" => Some(WHATSAPP_TOKEN.to_owned()),
        "MESSENGER_TOKEN" => Some(MESSENGER_TOKEN.to_owned()),
        _ => None,
    };
    Config::from_toml(toml, dir, &env).unwrap_or_else(|p| panic!("config refused: {p:#?}"))
}

fn invoice_json(biller: &str) -> Value {
    json!({
        "invoice_id": "INV-2026-000123",
        "biller_id": biller,
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "customer": {
            "name": "María López",
            "whatsapp": NUMBER,
            "messenger_psid": PSID,
            "locale": "es-MX"
        }
    })
}

/// One channel's message for `biller`'s invoice, prepared exactly as the
/// dispatcher would, with a fresh pay token.
struct Sent {
    prepared: Prepared,
    token: String,
    pay_url: String,
}

fn prepare(config: &Config, registry: &Registry, channel: ChannelName, biller_id: &str) -> Sent {
    let first = payrelay::render::Message::first_request();
    prepare_message(config, registry, channel, biller_id, &first).expect("prepared")
}

/// [`prepare`] of `message`, five days after the due date.
fn prepare_message(
    config: &Config,
    registry: &Registry,
    channel: ChannelName,
    biller_id: &str,
    message: &payrelay::render::Message,
) -> Result<Sent, payrelay::render::RenderError> {
    let body = invoice_json(biller_id).to_string();
    let Ok(Message::PaymentRequest(invoice)) =
        payrelay::invoice::parse(body.as_bytes(), |b| config.billers.contains_key(b))
    else {
        panic!("the test invoice does not parse");
    };
    let biller = &config.billers[biller_id];
    let token = payrelay::paylink::new_token();
    let pay_url = format!("{PUBLIC_BASE_URL}/p/{token}");
    let today = time::Date::from_calendar_date(2026, time::Month::December, 6).expect("a date");
    let view = payrelay::render::View::new(&invoice, biller_id, biller, &pay_url, message, today);
    let templates = Templates::load(None).expect("built-in templates");
    let to = invoice.customer.contacts.address(channel).expect("a contact");
    let request = Request {
        to,
        token: &token,
        view: &view,
        biller,
    };
    let adapter = registry.get(channel).expect("channel configured");
    let prepared = adapter.prepare(&request, &templates)?;
    Ok(Sent {
        prepared,
        token,
        pay_url,
    })
}

fn registry(config: &Config) -> Registry {
    let context = BuildContext {
        public_base_url: PUBLIC_BASE_URL.parse().expect("url"),
    };
    Registry::from_config(&config.channels, &context).expect("channels build")
}

fn expected_path(channel: ChannelName) -> &'static str {
    match channel {
        ChannelName::Whatsapp => WHATSAPP_PATH,
        _ => MESSENGER_PATH,
    }
}

fn bearer(channel: ChannelName) -> String {
    match channel {
        ChannelName::Whatsapp => format!("Bearer {WHATSAPP_TOKEN}"),
        _ => format!("Bearer {MESSENGER_TOKEN}"),
    }
}

/// A mock Graph API answering the channel's one endpoint with `answer`
/// (only for a POST with the right path and bearer token), and a send
/// through the registry. Returns the outcome, what was sent and the one
/// request the mock received.
async fn exchange(
    channel: ChannelName,
    biller_id: &str,
    answer: ResponseTemplate,
) -> (Result<Receipt, SendError>, Sent, wiremock::Request) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(expected_path(channel)))
        .and(header("authorization", bearer(channel).as_str()))
        .and(header("content-type", "application/json"))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = meta_config(&server.uri(), dir.path());
    let registry = registry(&config);
    let sent = prepare(&config, &registry, channel, biller_id);
    let outcome = registry.send(&sent.prepared).await;
    let requests = server.received_requests().await.expect("recording on");
    assert_eq!(requests.len(), 1, "exactly one request, no retry inside the adapter");
    let request = requests.into_iter().next().expect("one request");
    server.verify().await;
    (outcome, sent, request)
}

fn graph_error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> ResponseTemplate {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code,
                           "error_data": {"details": message}, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"});
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

fn whatsapp_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": "5215512345678", "wa_id": "5215512345678"}],
        "messages": [{"id": "wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEjQ5"}]
    }))
}

fn messenger_ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"recipient_id": PSID, "message_id": "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM"}))
}

/// Provider reasons reach logs and events: never the token or the number.
fn assert_clean(error: &SendError) {
    let text = format!("{error} {error:?}");
    for secret in [WHATSAPP_TOKEN, MESSENGER_TOKEN, "5215512345678", PSID] {
        assert!(!text.contains(secret), "{secret} leaked into: {text}");
    }
}

#[tokio::test]
async fn whatsapp_sends_the_template_with_parameters_and_the_token_as_button_suffix() {
    let (outcome, sent, request) = exchange(ChannelName::Whatsapp, "acme", whatsapp_ok()).await;
    let receipt = outcome.expect("accepted");
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("wamid.HBgNNTIxNTUxMjM0NTY3OBUCABEYEjQ5")
    );
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), WHATSAPP_PATH);
    assert_eq!(request.url.query(), None, "the token is not in the URL");
    assert_eq!(
        request.headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {WHATSAPP_TOKEN}").as_str())
    );
    let body: Value = request.body_json().expect("JSON body");
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "to": "5215512345678",
            "type": "template",
            "template": {
                "name": "payment_request",
                "language": {"code": "es_MX"},
                "components": [
                    {"type": "body", "parameters": [
                        {"type": "text", "text": "María López"},
                        {"type": "text", "text": "$1,234.50"},
                        {"type": "text", "text": "1 de diciembre de 2026"}
                    ]},
                    {"type": "button", "sub_type": "url", "index": "0",
                     "parameters": [{"type": "text", "text": sent.token}]}
                ]
            }
        })
    );
    // What preview shows is what went out.
    assert_eq!(sent.prepared.part("template").as_deref(), Some("payment_request"));
    assert_eq!(sent.prepared.part("button").as_deref(), Some(sent.token.as_str()));
}

#[tokio::test]
async fn whatsapp_uses_the_billers_own_template_and_parameters() {
    let (outcome, sent, request) = exchange(ChannelName::Whatsapp, "globex", whatsapp_ok()).await;
    outcome.expect("accepted");
    let body: Value = request.body_json().expect("JSON body");
    assert_eq!(body["template"]["name"], "globex_bill");
    // Globex has no default locale; the customer's es-MX decides.
    assert_eq!(body["template"]["language"]["code"], "es_MX");
    assert_eq!(
        body["template"]["components"][0]["parameters"],
        json!([{"type": "text", "text": "INV-2026-000123"}, {"type": "text", "text": "1234.50 MXN"}])
    );
    assert_eq!(
        body["template"]["components"][1]["parameters"][0]["text"],
        sent.token.as_str()
    );
}

#[tokio::test]
async fn messenger_sends_a_tagged_button_template_to_the_psid_with_the_pay_link() {
    let (outcome, sent, request) = exchange(ChannelName::Messenger, "acme", messenger_ok()).await;
    let receipt = outcome.expect("accepted");
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some("m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM")
    );
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), MESSENGER_PATH);
    assert_eq!(request.url.query(), None, "the page token is not in the URL");
    assert_eq!(
        request.headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {MESSENGER_TOKEN}").as_str())
    );
    let body: Value = request.body_json().expect("JSON body");
    assert_eq!(
        body,
        json!({
            "recipient": {"id": PSID},
            "messaging_type": "MESSAGE_TAG",
            "tag": "POST_PURCHASE_UPDATE",
            "message": {"attachment": {"type": "template", "payload": {
                "template_type": "button",
                "text": "ACME Energy: la factura INV-2026-000123 por $1,234.50 vence el 1 de diciembre de 2026.",
                "buttons": [{"type": "web_url", "url": sent.pay_url, "title": "Pay now"}]
            }}}
        })
    );
    assert!(sent.pay_url.ends_with(&sent.token));
}

/// Transient answers, the same classes for both channels (one classifier).
#[tokio::test]
async fn throttling_and_service_errors_are_transient_on_both_channels() {
    for channel in [ChannelName::Whatsapp, ChannelName::Messenger] {
        let cases: Vec<(&str, ResponseTemplate, Option<&str>)> = vec![
            ("HTTP 500 without a Graph body", ResponseTemplate::new(500), None),
            (
                "throughput limit",
                graph_error(429, 130429, None, "Rate limit hit").insert_header("Retry-After", "2"),
                Some("130429"),
            ),
            (
                "pair rate limit",
                graph_error(
                    400,
                    131056,
                    None,
                    "(Business Account, Consumer Account) pair rate limit hit",
                ),
                Some("131056"),
            ),
            (
                "application call limit",
                graph_error(400, 4, None, "Application request limit reached"),
                Some("4"),
            ),
            (
                "WhatsApp account call limit",
                graph_error(400, 80007, None, "Rate limit issues"),
                Some("80007"),
            ),
            (
                "unknown service error",
                graph_error(500, 131000, None, "Something went wrong"),
                Some("131000"),
            ),
            (
                "temporary API error",
                graph_error(400, 2, None, "Service temporarily unavailable"),
                Some("2"),
            ),
        ];
        for (what, answer, code) in cases {
            let (outcome, _, _) = exchange(channel, "acme", answer).await;
            let error = outcome.expect_err(what);
            assert!(error.is_transient(), "{channel} {what}: {error}");
            assert_eq!(error.code(), code, "{channel} {what}");
            assert_clean(&error);
            if code == Some("130429") {
                assert!(
                    matches!(error, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
                    "{channel}: Retry-After is honoured: {error:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_is_transient() {
    for channel in [ChannelName::Whatsapp, ChannelName::Messenger] {
        let slow = match channel {
            ChannelName::Whatsapp => whatsapp_ok(),
            _ => messenger_ok(),
        }
        .set_delay(Duration::from_secs(10));
        let started = std::time::Instant::now();
        let (outcome, _, _) = exchange(channel, "acme", slow).await;
        let error = outcome.expect_err("timed out");
        assert!(error.is_transient(), "{channel}: {error}");
        assert!(
            error.to_string().contains("did not answer in time"),
            "{channel}: {error}"
        );
        // Far below the provider's 10 s, with room for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(6), "the 500ms timeout applied");
    }
}

#[tokio::test]
async fn whatsapp_permanent_errors_carry_the_code_and_no_personal_data() {
    let cases = [
        (131026, "Message undeliverable to 5215512345678"),
        (132001, "Template name does not exist in the translation"),
        (
            132000,
            "Number of parameters does not match the expected number of params",
        ),
        (131047, "Re-engagement message"),
        (
            131049,
            "This message was not delivered to maintain healthy ecosystem engagement.",
        ),
    ];
    for (code, message) in cases {
        // Meta answers most of these with 400: the code decides.
        let status = 400;
        let (outcome, _, _) = exchange(ChannelName::Whatsapp, "acme", graph_error(status, code, None, message)).await;
        let error = outcome.expect_err("refused");
        assert!(
            matches!(&error, SendError::Permanent { code: Some(c), .. } if *c == code.to_string()),
            "{code}: {error:?}"
        );
        assert_clean(&error);
    }
}

#[tokio::test]
async fn messenger_permanent_errors_carry_the_code_and_no_personal_data() {
    let cases = [
        (551, Some(1545041), "This person isn't available right now."),
        (
            10,
            Some(2018278),
            "This message is sent outside of allowed window. Learn more about the new policy here",
        ),
    ];
    for (code, subcode, message) in cases {
        let (outcome, _, _) = exchange(ChannelName::Messenger, "acme", graph_error(400, code, subcode, message)).await;
        let error = outcome.expect_err("refused");
        assert!(
            matches!(&error, SendError::Permanent { code: Some(c), .. } if *c == code.to_string()),
            "{code}: {error:?}"
        );
        if let Some(subcode) = subcode {
            assert!(error.to_string().contains(&format!("subcode {subcode}")), "{error}");
        }
        assert_clean(&error);
    }
}

#[tokio::test]
async fn an_expired_token_marks_either_channel_misconfigured() {
    for channel in [ChannelName::Whatsapp, ChannelName::Messenger] {
        let answer = graph_error(401, 190, None, "Error validating access token: Session has expired");
        let (outcome, _, _) = exchange(channel, "acme", answer).await;
        let error = outcome.expect_err("refused");
        assert!(
            matches!(&error, SendError::Misconfigured { code: Some(c), .. } if c == "190"),
            "{channel}: {error:?}"
        );
        assert_clean(&error);
    }
}

#[tokio::test]
async fn a_token_echoed_by_the_provider_never_reaches_the_reason() {
    let echo = graph_error(
        400,
        190,
        None,
        &format!("Malformed access token {WHATSAPP_TOKEN} for +5215512345678"),
    );
    let (outcome, _, _) = exchange(ChannelName::Whatsapp, "acme", echo).await;
    assert_clean(&outcome.expect_err("refused"));
    let echo = ResponseTemplate::new(502).set_body_string(format!("upstream: access_token={MESSENGER_TOKEN}"));
    let (outcome, _, _) = exchange(ChannelName::Messenger, "acme", echo).await;
    let error = outcome.expect_err("bad gateway");
    assert!(error.is_transient());
    assert_clean(&error);
}

#[tokio::test]
async fn the_file_provider_writes_what_would_be_sent_under_its_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = file_config(dir.path());
    let registry = registry(&config);
    for (channel, folder) in [
        (ChannelName::Whatsapp, "outbox/wa"),
        (ChannelName::Messenger, "outbox/fb"),
    ] {
        let sent = prepare(&config, &registry, channel, "acme");
        let receipt = registry.send(&sent.prepared).await.expect("written");
        let id = receipt.provider_message_id.expect("an id");
        let file = dir.path().join(folder).join(format!("{id}.json"));
        let written: Value = serde_json::from_slice(&std::fs::read(&file).expect("outbox file")).expect("JSON");
        assert_eq!(written["channel"], channel.as_str());
        let payload: Value = serde_json::from_str(written["payload"].as_str().expect("payload")).expect("JSON");
        match channel {
            ChannelName::Whatsapp => {
                assert_eq!(written["to"], NUMBER);
                assert_eq!(written["template"], "payment_request");
                assert_eq!(written["button"], sent.token.as_str());
                assert_eq!(payload["to"], "5215512345678");
                assert_eq!(
                    payload["template"]["components"][1]["parameters"][0]["text"],
                    sent.token.as_str()
                );
            }
            _ => {
                assert_eq!(written["to"], PSID);
                assert_eq!(written["url"], sent.pay_url.as_str());
                assert_eq!(payload["recipient"]["id"], PSID);
                assert_eq!(payload["tag"], "POST_PURCHASE_UPDATE");
            }
        }
    }
}

/// Journey messages go out as the approved template mapped to each, with
/// the channel's parameters: a biller's own template and parameters are
/// its first request's only.
#[tokio::test]
async fn whatsapp_sends_the_approved_template_mapped_to_each_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(WHATSAPP_PATH))
        .respond_with(whatsapp_ok())
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = meta_config(&server.uri(), dir.path());
    let registry = registry(&config);
    let cases = [
        ("acme", "reminder", "payment_reminder"),
        ("globex", "final_notice", "payment_final"),
    ];
    let mut tokens = Vec::new();
    for (biller, template, approved) in cases {
        let message = payrelay::render::Message::step("a_step", template);
        let sent = prepare_message(&config, &registry, ChannelName::Whatsapp, biller, &message).expect("mapped");
        assert_eq!(sent.prepared.part("template").as_deref(), Some(approved));
        registry.send(&sent.prepared).await.expect("accepted");
        tokens.push(sent.token);
    }
    let requests = server.received_requests().await.expect("recording on");
    let bodies: Vec<Value> = requests.iter().map(|r| r.body_json().expect("JSON body")).collect();
    for ((body, (_, _, approved)), token) in bodies.iter().zip(cases).zip(&tokens) {
        assert_eq!(body["template"]["name"], approved);
        assert_eq!(body["template"]["language"]["code"], "es_MX");
        assert_eq!(
            body["template"]["components"][0]["parameters"],
            json!([
                {"type": "text", "text": "María López"},
                {"type": "text", "text": "$1,234.50"},
                {"type": "text", "text": "1 de diciembre de 2026"}
            ]),
            "the channel's parameters, for Globex too"
        );
        assert_eq!(
            body["template"]["components"][1]["parameters"][0]["text"],
            token.as_str()
        );
    }
    server.verify().await;
}

/// A message with no approved template mapped fails its channel with a
/// reason that says what to configure, and nothing reaches WhatsApp: it is
/// never sent as `payment_request` instead.
#[tokio::test]
async fn whatsapp_refuses_a_message_with_no_approved_template() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(whatsapp_ok())
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = meta_config(&server.uri(), dir.path());
    let registry = registry(&config);
    let overdue = payrelay::render::Message::step("late", "overdue");
    for biller in ["acme", "globex"] {
        let refused = prepare_message(&config, &registry, ChannelName::Whatsapp, biller, &overdue)
            .err()
            .expect("refused");
        let reason = refused.to_string();
        assert!(
            reason.contains("no approved WhatsApp template is mapped to the overdue message")
                && reason.contains("[channels.whatsapp] templates"),
            "{reason}"
        );
    }
    // The dispatcher's own preparation records the same reason as the
    // channel's failure.
    let body = invoice_json("acme").to_string();
    let Ok(Message::PaymentRequest(invoice)) = payrelay::invoice::parse(body.as_bytes(), |b| b == "acme") else {
        panic!("the test invoice does not parse");
    };
    let templates = Templates::load(None).expect("built-in templates");
    let clock = payrelay::domain::clock::SystemClock;
    let outgoing = payrelay::dispatch::prepare(
        &config,
        &registry,
        &templates,
        &clock,
        &invoice,
        ChannelName::Whatsapp,
        &overdue,
    );
    let reason = outgoing.message.expect_err("refused");
    assert!(reason.contains("overdue"), "{reason}");
    assert!(server.received_requests().await.expect("recording on").is_empty());
}
