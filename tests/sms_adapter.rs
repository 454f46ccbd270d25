//! The SMS channel against a local Twilio stand-in (wiremock): the exact
//! request Twilio would receive, every error class Twilio's codes map to, the
//! segment limit, and the `file` provider. No network, no sleeps: the one
//! timeout case waits for a 300 ms client timeout.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use payrelay::channels::sms::SmsChannel;
use payrelay::channels::{BuildContext, Channel, Prepared, Registry, Request, SendError};
use payrelay::config::Config;
use payrelay::domain::ChannelName;
use payrelay::invoice::{self, Message};
use payrelay::render::{self, Templates};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-5f3a9c";
const FROM: &str = "+15005550006";
const TO: &str = "+5215512345678";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";
/// With a trailing slash and a path on purpose: the callback must still
/// come out as `<base>/webhooks/twilio`.
const PUBLIC_BASE_URL: &str = "https://relay.example/payrelay/";
const STATUS_CALLBACK: &str = "https://relay.example/payrelay/webhooks/twilio";

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{SID}/Messages.json")
}

/// A config with `[channels.sms]` = `sms`; `TWILIO_AUTH_TOKEN` is the only
/// environment variable.
fn config(dir: &Path, sms: &str) -> Config {
    let text = format!(
        r#"
[http]
public_base_url = "{PUBLIC_BASE_URL}"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}&t={{token}}"

[channels.email]
transport = "file"
outbox_dir = "outbox/email"

[channels.sms]
{sms}
"#
    );
    let env = |name: &str| (name == "TWILIO_AUTH_TOKEN").then(|| TOKEN.to_owned());
    Config::from_toml(&text, dir, &env).unwrap_or_else(|problems| panic!("test config refused: {problems:#?}"))
}

/// `[channels.sms]` for Twilio at `base_url`, plus `extra` lines.
fn twilio(base_url: &str, extra: &str) -> String {
    format!(
        "provider = \"twilio\"\nbase_url = \"{base_url}\"\naccount_sid = \"{SID}\"\n\
         auth_token = \"env:TWILIO_AUTH_TOKEN\"\nfrom = \"{FROM}\"\n{extra}"
    )
}

fn context(config: &Config) -> BuildContext {
    BuildContext {
        public_base_url: config.http.public_base_url.clone(),
    }
}

fn channel(config: &Config) -> SmsChannel {
    let sms = config
        .channels
        .sms
        .as_ref()
        .expect("the test config has [channels.sms]");
    SmsChannel::new(sms, &context(config)).expect("the SMS channel builds from a checked config")
}

/// Renders the built-in `sms/body` for a sample invoice; returns the
/// message and its pay link.
fn prepare(channel: &dyn Channel, config: &Config, description: &str) -> (Prepared, String) {
    let templates = Templates::load(None).expect("the built-in templates load");
    prepare_with(channel, config, description, &templates)
}

/// [`prepare`] with `templates`.
fn prepare_with(
    channel: &dyn Channel,
    config: &Config,
    description: &str,
    templates: &Templates,
) -> (Prepared, String) {
    let first = render::Message::first_request();
    prepare_message(channel, config, description, templates, &first, day(2026, 11, 28))
}

fn day(year: i32, month: u8, day: u8) -> time::Date {
    let month = time::Month::try_from(month).expect("a month");
    time::Date::from_calendar_date(year, month, day).expect("a date")
}

/// [`prepare_with`] for `message` as of `today` (the invoice is due on
/// 2026-12-01).
fn prepare_message(
    channel: &dyn Channel,
    config: &Config,
    description: &str,
    templates: &Templates,
    message: &render::Message,
    today: time::Date,
) -> (Prepared, String) {
    let body = json!({
        "invoice_id": "INV-2026-000123",
        "biller_id": "acme",
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "description": description,
        "customer": {"name": "María López", "phone": TO},
    });
    let parsed = invoice::parse(body.to_string().as_bytes(), |b| b == "acme").expect("the sample invoice parses");
    let Message::PaymentRequest(invoice) = parsed else {
        panic!("the sample is a payment request");
    };
    let biller = &config.billers["acme"];
    let token = payrelay::paylink::new_token();
    let pay_url = format!("https://relay.example/payrelay/p/{token}");
    let view = render::View::new(&invoice, "acme", biller, &pay_url, message, today);
    let request = Request {
        to: TO,
        token: &token,
        view: &view,
        biller,
    };
    let message = channel.prepare(&request, templates).expect("sms/body renders");
    (message, pay_url)
}

async fn twilio_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

fn twilio_error(code: u32, status: u16) -> Value {
    json!({
        "code": code,
        "message": format!("The 'To' number {TO} cannot be used (test message for {code})."),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

/// Sends one prepared message to a Twilio mock answering `response`.
async fn send_against(response: ResponseTemplate) -> Result<payrelay::channels::Receipt, SendError> {
    let server = twilio_answering(response).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&server.uri(), ""));
    let channel = channel(&config);
    let (message, _) = prepare(&channel, &config, "Electricity");
    let result = channel.send(&message).await;
    if let Err(e) = &result {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(TOKEN), "the auth token leaked into the error: {text}");
        assert!(
            !text.contains(&TO[1..]),
            "the phone number leaked into the error: {text}"
        );
    }
    result
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn a_payment_request_becomes_the_exact_twilio_request_and_the_sid_is_the_receipt() {
    let server = twilio_answering(ResponseTemplate::new(201).set_body_json(json!({
        "sid": MESSAGE_SID, "status": "queued", "num_segments": "1", "error_code": null,
        "to": TO, "from": FROM, "body": "..."
    })))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&format!("{}/", server.uri()), ""));
    let channel = channel(&config);
    let (message, pay_url) = prepare(&channel, &config, "Electricity, November 2026");

    let text = message.part("text").expect("a text part").into_owned();
    assert!(text.contains(&pay_url), "the body carries the pay link: {text}");
    assert!(text.contains("ACME Energy") && text.contains("MX$1,234.50"), "{text}");
    assert_eq!(message.part("segments").as_deref(), Some("1 (GSM-7)"), "{text}");

    let receipt = channel.send(&message).await.expect("Twilio accepted the message");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(MESSAGE_SID));

    let requests = server.received_requests().await.expect("request recording is on");
    assert_eq!(requests.len(), 1, "exactly one call to Twilio");
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(
        request.url.path(),
        messages_path(),
        "one slash after base_url, the SID in the path"
    );
    assert_eq!(request.url.query(), None);
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let basic = format!("Basic {}", STANDARD.encode(format!("{SID}:{TOKEN}")));
    assert_eq!(header("authorization"), basic);
    assert_eq!(header("content-type"), "application/x-www-form-urlencoded");
    let expected: Vec<(String, String)> = [
        ("Body", text.as_str()),
        ("From", FROM),
        ("StatusCallback", STATUS_CALLBACK),
        ("To", TO),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(form(&request.body), expected, "exactly these form fields");
}

#[tokio::test]
async fn a_messaging_service_replaces_from() {
    let server = twilio_answering(ResponseTemplate::new(201).set_body_json(json!({"sid": MESSAGE_SID}))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let service = "MG0123456789abcdef0123456789abcdef";
    let sms = format!(
        "provider = \"twilio\"\nbase_url = \"{}\"\naccount_sid = \"{SID}\"\nauth_token = \"env:TWILIO_AUTH_TOKEN\"\n\
         messaging_service_sid = \"{service}\"",
        server.uri()
    );
    let config = config(dir.path(), &sms);
    let channel = channel(&config);
    let (message, _) = prepare(&channel, &config, "Water");
    channel.send(&message).await.expect("Twilio accepted the message");

    let requests = server.received_requests().await.expect("request recording is on");
    let fields = form(&requests[0].body);
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Body", "MessagingServiceSid", "StatusCallback", "To"]);
    assert!(fields.contains(&("MessagingServiceSid".to_owned(), service.to_owned())));
}

#[tokio::test]
async fn the_registry_builds_the_twilio_channel_from_config_and_sends_through_its_limiter() {
    let server = twilio_answering(ResponseTemplate::new(201).set_body_json(json!({"sid": MESSAGE_SID}))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&server.uri(), "rate_per_second = 50"));
    let registry = Registry::from_config(&config.channels, &context(&config)).expect("channels build");
    assert!(registry.names().any(|n| n == ChannelName::Sms));
    let sms = registry.get(ChannelName::Sms).expect("sms is registered");
    let (message, _) = prepare(sms, &config, "Gas");
    let receipt = registry.send(&message).await.expect("sent through the registry");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(MESSAGE_SID));
}

/// What a transient failure must look like: its class, code and wait.
fn assert_transient(what: &str, result: Result<payrelay::channels::Receipt, SendError>, code: Option<&str>) {
    match result {
        Err(SendError::Transient { code: got, .. }) => assert_eq!(got.as_deref(), code, "{what}"),
        other => panic!("{what}: expected a transient failure, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_and_throttling_are_transient() {
    let cases: Vec<(&str, ResponseTemplate, Option<&str>)> = vec![
        (
            "HTTP 500 without a Twilio body",
            ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>"),
            None,
        ),
        (
            "HTTP 503 with a Twilio body",
            ResponseTemplate::new(503).set_body_json(twilio_error(20503, 503)),
            Some("20503"),
        ),
        (
            "code 30001, queue overflow",
            ResponseTemplate::new(400).set_body_json(twilio_error(30001, 400)),
            Some("30001"),
        ),
        (
            "code 21611, sender queue full",
            ResponseTemplate::new(400).set_body_json(twilio_error(21611, 400)),
            Some("21611"),
        ),
        (
            "code 20429 without Retry-After",
            ResponseTemplate::new(429).set_body_json(twilio_error(20429, 429)),
            Some("20429"),
        ),
    ];
    for (what, response, code) in cases {
        assert_transient(what, send_against(response).await, code);
    }
}

#[tokio::test]
async fn http_429_honours_retry_after() {
    let plain = send_against(ResponseTemplate::new(429).insert_header("Retry-After", "3")).await;
    assert!(
        matches!(&plain, Err(SendError::Transient { code: None, retry_after: Some(d), .. }) if *d == Duration::from_secs(3)),
        "{plain:?}"
    );
    let coded = send_against(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "3")
            .set_body_json(twilio_error(20429, 429)),
    )
    .await;
    assert!(
        matches!(&coded, Err(SendError::Transient { code: Some(c), retry_after: Some(d), .. })
            if c == "20429" && *d == Duration::from_secs(3)),
        "{coded:?}"
    );
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_is_transient() {
    let server = twilio_answering(
        ResponseTemplate::new(201)
            .set_body_json(json!({"sid": MESSAGE_SID}))
            .set_delay(Duration::from_secs(10)),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&server.uri(), "timeout = \"300ms\""));
    let channel = channel(&config);
    let (message, _) = prepare(&channel, &config, "Electricity");
    let started = std::time::Instant::now();
    let result = channel.send(&message).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert!(
        matches!(&result, Err(SendError::Transient { reason, .. }) if reason.contains("time")),
        "{result:?}"
    );
    assert_transient("timeout", result, None);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&format!("http://127.0.0.1:{port}"), ""));
    let channel = channel(&config);
    let (message, _) = prepare(&channel, &config, "Electricity");
    let result = channel.send(&message).await;
    assert!(
        matches!(&result, Err(SendError::Transient { reason, .. }) if reason.contains("connect")),
        "{result:?}"
    );
    assert_transient("connection refused", result, None);
}

#[tokio::test]
async fn recipient_and_account_problems_are_permanent_with_the_code() {
    let cases: Vec<(&str, ResponseTemplate, &str)> = vec![
        (
            "21211 invalid To",
            ResponseTemplate::new(400).set_body_json(twilio_error(21211, 400)),
            "21211",
        ),
        (
            "21610 unsubscribed",
            ResponseTemplate::new(400).set_body_json(twilio_error(21610, 400)),
            "21610",
        ),
        (
            "21614 not a mobile",
            ResponseTemplate::new(400).set_body_json(twilio_error(21614, 400)),
            "21614",
        ),
        (
            "21635 landline",
            ResponseTemplate::new(400).set_body_json(twilio_error(21635, 400)),
            "21635",
        ),
        (
            "21608 trial account",
            ResponseTemplate::new(400).set_body_json(twilio_error(21608, 400)),
            "21608",
        ),
        (
            "an unlisted 4xx code",
            ResponseTemplate::new(400).set_body_json(twilio_error(21602, 400)),
            "21602",
        ),
    ];
    for (what, response, code) in cases {
        match send_against(response).await {
            Err(SendError::Permanent { code: got, reason }) => {
                assert_eq!(got.as_deref(), Some(code), "{what}: {reason}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected a permanent failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn refused_credentials_mark_the_channel_misconfigured() {
    let response = ResponseTemplate::new(401).set_body_json(json!({
        "code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401
    }));
    match send_against(response).await {
        Err(SendError::Misconfigured { code, reason }) => {
            assert_eq!(code.as_deref(), Some("20003"));
            assert!(reason.contains("auth_token"), "{reason}");
        }
        other => panic!("expected a misconfigured channel, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_over_max_segments_is_refused_before_twilio_is_called() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": MESSAGE_SID})))
        .expect(0)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &twilio(&server.uri(), "max_segments = 1"));
    let channel = channel(&config);
    // The built-in body with 100 more characters, from an operator's template.
    let built_in = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/en/sms/body.hbs"))
        .expect("the built-in sms/body");
    let overrides = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(overrides.path().join("en/sms")).expect("template folder");
    std::fs::write(
        overrides.path().join("en/sms/body.hbs"),
        format!("{} {}", built_in.trim(), "x".repeat(100)),
    )
    .expect("template written");
    let templates = Templates::load(Some(overrides.path())).expect("the templates load");
    let (message, _) = prepare_with(&channel, &config, "Electricity", &templates);
    match channel.send(&message).await {
        Err(SendError::Permanent { code: None, reason }) => {
            assert!(
                reason.contains("needs 2 segments") && reason.contains("max_segments = 1"),
                "{reason}"
            );
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    // `expect(0)` is verified when the server drops.
}

#[tokio::test]
async fn the_file_provider_writes_the_message_as_json_under_the_outbox_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "provider = \"file\"\noutbox_dir = \"outbox/sms\"");
    let channel = channel(&config);
    let (message, pay_url) = prepare(&channel, &config, "Electricity");
    let receipt = channel.send(&message).await.expect("the file provider writes");
    let id = receipt.provider_message_id.expect("the file name is the id");

    let file = dir.path().join("outbox/sms").join(format!("{id}.json"));
    let written: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the outbox file exists")).expect("the file is JSON");
    assert_eq!(written["channel"], "sms");
    assert_eq!(written["to"], TO);
    assert_eq!(written["text"], message.part("text").expect("a text part").as_ref());
    assert!(written["text"].as_str().is_some_and(|t| t.contains(&pay_url)));
    assert_eq!(written["segments"], "1 (GSM-7)");
    let files = std::fs::read_dir(dir.path().join("outbox/sms"))
        .expect("the outbox folder")
        .count();
    assert_eq!(files, 1, "one file, no leftover partial file");
}

/// Every message a journey sends by SMS, in every built-in language and on
/// every side of the due date, with a real pay link (39-character token on
/// a 33-character base): GSM-7, so no accent doubles its cost, and at most
/// two segments.
#[test]
fn journey_messages_stay_within_two_gsm7_segments_with_a_real_link() {
    use payrelay::channels::sms::{Encoding, Segments};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "provider = \"file\"");
    let channel = channel(&config);
    let templates = Templates::load(None).expect("the built-in templates load");
    for locale in ["en", "es-MX", "es-ES", "pt-BR", "de-DE"] {
        let mut biller_config = config.clone();
        if let Some(acme) = biller_config.billers.get_mut("acme") {
            acme.default_locale = Some(locale.to_owned());
        }
        // The combined message lists several invoices, one line's worth
        // each, so it may take more segments (tests/message_templates.rs).
        for template in render::BUILT_IN_MESSAGES
            .into_iter()
            .filter(|t| *t != render::COMBINED_TEMPLATE)
        {
            let message = render::Message::step("a_step", template);
            for days in [12, 3, 1, 0, -1, -5, -30] {
                let today = day(2026, 12, 1) - time::Duration::days(days);
                let (sms, pay_url) =
                    prepare_message(&channel, &biller_config, "Electricity", &templates, &message, today);
                assert_eq!(pay_url.len(), 72, "a real-length link");
                let text = sms.part("text").expect("a text part").into_owned();
                assert!(text.contains(&pay_url), "{text}");
                let word = match locale {
                    "en" => "nvoice",
                    "de-DE" => "Rechnung",
                    "pt-BR" => "fatura",
                    _ => "factura",
                };
                assert!(text.contains(word), "in its language: {text}");
                let segments = Segments::of(&text);
                let at = format!("{template} in {locale}, {days} days to due: {text}");
                assert_eq!(segments.encoding, Encoding::Gsm7, "{at}");
                assert!(segments.count <= 2, "{} segments: {at}", segments.count);
            }
        }
    }
}
