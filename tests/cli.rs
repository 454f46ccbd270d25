//! The command line as an operator uses it: the real binary, real files.

use std::path::Path;
use std::process::Command;

fn payrelay(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payrelay"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PAYRELAY_CONFIG")
        .output()
        .expect("the binary runs");
    output(out)
}

/// Runs the binary in `dir` with no --config.
fn payrelay_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payrelay"))
        .current_dir(dir)
        .args(args)
        .env_remove("PAYRELAY_CONFIG")
        .output()
        .expect("the binary runs");
    output(out)
}

fn output(out: std::process::Output) -> (i32, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const INVOICE: &str = r#"{"invoice_id": "INV-1", "biller_id": "acme", "amount": "1234.50", "currency": "MXN",
  "due_date": "2026-12-01", "customer": {"name": "María <b>López</b>", "email": "maria@example.com",
  "phone": "+5215512345678", "whatsapp": "+5215512345678", "opted_out": ["sms"]}}"#;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_repository_config() {
    let (code, out) = payrelay(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml").as_path(),
        &["check"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn check_lists_every_problem_with_its_key_and_serve_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        r#"
[broker]
prefecth = 10
[http]
admin_token = "env:PAYRELAY_TEST_UNSET_TOKEN"
[billers.acme]
checkout_url = "https://pay.example/{nope}"
[channels.email]
transport = "carrier-pigeon"
[channels.whatsapp]
provider = "file"
parameters = ["{{customer.nmae}}"]
[routing]
default = ["email", "fax"]
"#,
    );
    let (code, out) = payrelay(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "broker.prefecth: unknown key",
        "http.admin_token: environment variable PAYRELAY_TEST_UNSET_TOKEN is not set",
        "billers.acme.checkout_url: unknown placeholder {nope}",
        "channels.email.transport",
        "routing.default: \"fax\" is not a channel",
        // Template problems come in the same pass as the config's own.
        "channels.whatsapp.parameters[0]",
    ] {
        assert!(out.contains(expected), "missing '{expected}' in:\n{out}");
    }
    let (code, out) = payrelay(&config, &["serve"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not starting"), "{out}");
}

#[test]
fn check_renders_whatsapp_parameter_snippets_with_a_sample_invoice() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "wa.toml",
        r#"
[billers.acme]
checkout_url = "https://pay.example/{token}"
whatsapp_parameters = ["{{customer.name}}", "{{amount.dispaly}}"]
[channels.email]
transport = "file"
[channels.whatsapp]
provider = "file"
parameters = ["{{customer.nmae}}"]
"#,
    );
    let (code, out) = payrelay(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("channels.whatsapp.parameters[0]"), "{out}");
    assert!(out.contains("billers.acme.whatsapp_parameters[1]"), "{out}");
    assert!(
        !out.contains("whatsapp_parameters[0]"),
        "a good snippet is not reported: {out}"
    );
}

#[test]
fn route_explains_the_decision_and_preview_prints_each_message_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        r#"
[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
[channels.whatsapp]
provider = "file"
[routing]
default = ["sms", "whatsapp", "email"]
respect_preferences = false
[[routing.rules]]
name = "big amounts by email"
min_amount = 10000
channels = ["email"]
"#,
    );
    let invoice = write(dir.path(), "invoice.json", INVOICE);
    let (code, out) = payrelay(&config, &["route", invoice.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule \"big amounts by email\": no match (amount 1234.50 is below min_amount 10000)"),
        "{out}"
    );
    assert!(out.contains("decided by: default"), "{out}");
    assert!(out.contains("1. whatsapp") && out.contains("2. email"), "{out}");
    assert!(out.contains("skipped sms: the customer opted out"), "{out}");

    let (code, out) = payrelay(&config, &["preview", invoice.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("== whatsapp") && out.contains("== email"), "{out}");
    assert!(out.contains("-- subject") && out.contains("-- html"), "{out}");
    assert!(
        out.contains("&lt;b&gt;López&lt;/b&gt;"),
        "markup is escaped in HTML: {out}"
    );

    let (code, out) = payrelay(&config, &["preview", invoice.to_str().unwrap(), "--channel", "sms"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("-- segments"),
        "the SMS preview says how many segments: {out}"
    );
    // Preview never sends: the configured outboxes stay empty.
    assert!(!dir.path().join("var").exists(), "no outbox was even created");
}

/// Without --today the journey is planned from now: a step of an invoice
/// due long ago is past, one of an invoice due far ahead is not.
#[test]
fn route_plans_the_journey_from_now_without_today() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        r#"
[billers.acme]
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[journeys.standard]
steps = [{ name = "due", due = "0d" }]
[routing]
journey = "standard"
"#,
    );
    let invoice = |due: &str| {
        let text = format!(
            r#"{{"invoice_id": "INV-1", "biller_id": "acme", "amount": "10.00", "currency": "EUR",
              "due_date": "{due}", "customer": {{"name": "Ana", "email": "ana@example.com"}}}}"#
        );
        write(dir.path(), &format!("{due}.json"), &text)
    };
    let now = time::OffsetDateTime::now_utc();
    let (code, out) = payrelay(&config, &["route", invoice("2020-01-15").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("journey \"standard\" (named by [routing] journey)\n  local times in UTC (neither the customer nor the biller sets a time zone), as of {}", now.date())),
        "{out}"
    );
    assert!(
        out.contains("step 1 \"due\": 2020-01-15 10:00 UTC, on the due date\n  skipped: its time had passed"),
        "{out}"
    );
    let (code, out) = payrelay(&config, &["route", invoice("2099-01-15").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("step 1 \"due\": 2099-01-15 10:00 UTC, on the due date\n  strategy: fallback, template: reminder\n  1. email\n"),
        "{out}"
    );
}

/// The body is 175 characters with a real pay link, 2 segments; with the
/// 13-character placeholder preview once used, it was 149 and showed 1.
#[test]
fn preview_counts_sms_segments_with_a_pay_link_of_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        r#"
[http]
public_base_url = "https://pay.acme-energy.example"
[billers.acme]
name = "ACME Energy and Water Services"
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
"#,
    );
    let invoice = write(
        dir.path(),
        "invoice.json",
        r#"{"invoice_id": "INV-2026-000123", "biller_id": "acme", "amount": "1234.50", "currency": "MXN",
  "due_date": "2026-12-01", "customer": {"name": "María López", "phone": "+5215512345678"}}"#,
    );
    let (code, out) = payrelay(&config, &["preview", invoice.to_str().unwrap(), "--channel", "sms"]);
    assert_eq!(code, 0, "{out}");
    let text = out
        .split("-- text\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no text part in: {out}"));
    assert!(out.contains("-- segments\n2 (GSM-7)"), "{out}");
    assert_eq!(text.chars().count(), 175, "{text}");
    let token = text
        .rsplit_once("https://pay.acme-energy.example/p/")
        .map(|(_, token)| token)
        .unwrap_or_else(|| panic!("no pay link in: {text}"));
    assert_eq!(token.len(), 39, "a token of the real shape: {token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    assert!(!dir.path().join("var").exists(), "preview sends nothing");
}

/// Any message of a journey can be previewed; one WhatsApp has no
/// approved template for is refused with what to configure.
#[test]
fn preview_renders_the_message_template_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        r#"
[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
[channels.whatsapp]
provider = "file"
templates = { final_notice = "payment_final" }
"#,
    );
    let invoice = write(dir.path(), "invoice.json", INVOICE);
    let file = invoice.to_str().unwrap();
    let (code, out) = payrelay(
        &config,
        &[
            "preview",
            file,
            "--channel",
            "sms",
            "--template",
            "final_notice",
            "--step",
            "final",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ACME Energy: final reminder. Invoice INV-1"), "{out}");
    assert!(out.contains("-- segments\n2 (GSM-7)"), "{out}");

    let (code, out) = payrelay(
        &config,
        &["preview", file, "--channel", "whatsapp", "--template", "final_notice"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-- template\npayment_final"), "{out}");
    let (code, out) = payrelay(
        &config,
        &["preview", file, "--channel", "whatsapp", "--template", "overdue"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no approved WhatsApp template is mapped to the overdue message"),
        "{out}"
    );

    let (code, out) = payrelay(&config, &["preview", file, "--template", "Final-Notice"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not a message template name"), "{out}");
    assert!(!dir.path().join("var").exists(), "preview sends nothing");
}

#[test]
fn route_says_why_an_invoice_would_be_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        "[billers.acme]\ncheckout_url = \"https://pay.example/{token}\"\n[channels.email]\ntransport = \"file\"\n",
    );
    let invoice = write(
        dir.path(),
        "bad.json",
        r#"{"invoice_id": "X", "biller_id": "acme", "amount": "1.234", "currency": "EUR"}"#,
    );
    let (code, out) = payrelay(&config, &["route", invoice.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("would be rejected") && out.contains("3 decimals but EUR allows 2"),
        "{out}"
    );
}

#[test]
fn check_refuses_a_rule_that_can_never_decide() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "rules.toml",
        r#"
[billers.acme]
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[[routing.rules]]
name = "euros"
currency = ["EUR", "USD"]
channels = ["email"]
[[routing.rules]]
name = "big euro amounts"
currency = "EUR"
min_amount = 1000
channels = ["email"]
"#,
    );
    let (code, out) = payrelay(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routing.rules[1]") && out.contains("big euro amounts"),
        "{out}"
    );
}

#[test]
fn check_names_rate_limit_problems_by_key_and_never_prints_the_redis_url() {
    let dir = tempfile::tempdir().unwrap();
    let section = |body: &str| {
        format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
             [channels.email]\ntransport = \"file\"\n[rate_limit]\n{body}"
        )
    };
    let bad = write(
        dir.path(),
        "bad.toml",
        &section("redis_url = \"http://:hunter2@cache.internal:6379\"\nkey_prefx = \"payrelay\"\n"),
    );
    let (code, out) = payrelay(&bad, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rate_limit.redis_url: is a http: URL; use redis://"),
        "{out}"
    );
    assert!(out.contains("rate_limit.key_prefx: unknown key"), "{out}");
    assert!(!out.contains("hunter2") && !out.contains("cache.internal"), "{out}");

    let good = write(
        dir.path(),
        "good.toml",
        &section("redis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"payrelay-staging\"\n"),
    );
    let (code, out) = payrelay(&good, &["check"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn without_a_config_file_the_built_in_configuration_is_used_and_config_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = payrelay_in(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the built-in configuration: ok"), "{out}");

    let (code, printed) = payrelay_in(dir.path(), &["config"]);
    assert_eq!(code, 0, "{printed}");
    assert!(
        printed.contains("[broker]") && printed.contains("[channels.email]"),
        "{printed}"
    );
    // What it prints is a config that checks, to start one's own from.
    let saved = write(dir.path(), "mine.toml", &printed);
    let (code, out) = payrelay(&saved, &["check"]);
    assert_eq!(code, 0, "{out}");

    // A config.toml in the working folder is used without --config.
    write(dir.path(), "config.toml", "[broker]\nprefetch = 0\n");
    let (code, out) = payrelay_in(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("config.toml has") && out.contains("broker.prefetch"),
        "{out}"
    );

    // A file named with --config must exist.
    let (code, out) = payrelay(&dir.path().join("nope.toml"), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nope.toml") && out.contains("file not found"), "{out}");
}

#[test]
fn publish_checks_every_message_first_and_names_the_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    // The broker URL points nowhere: a refused file must fail before any
    // connection is tried.
    let config = write(
        dir.path(),
        "config.toml",
        "[broker]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n[billers.acme]\n\
         checkout_url = \"https://pay.example/{token}\"\n[channels.email]\ntransport = \"file\"\n",
    );
    let good = INVOICE.replace('\n', " ");
    let lines = format!(
        "{good}\n{{\"invoice_id\": \"X\"\n\n{}\n",
        good.replace("acme", "nobody")
    );
    let file = write(dir.path(), "invoices.jsonl", &lines);
    let (code, out) = payrelay(&config, &["publish", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("invoices.jsonl:2: ") && out.contains("JSON"), "{out}");
    assert!(out.contains("invoices.jsonl:4: ") && out.contains("nobody"), "{out}");
    assert!(
        out.contains("2 of 3 message(s) would be rejected; nothing was published"),
        "{out}"
    );

    // --raw skips the check: it gets as far as the (absent) broker.
    let (code, out) = payrelay(&config, &["publish", "--raw", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("would be rejected"), "{out}");
    assert!(
        out.contains("127.0.0.1:1") || out.to_lowercase().contains("connect"),
        "{out}"
    );
}

#[test]
fn every_argument_is_described_in_help() {
    for command in ["preview", "publish", "route"] {
        let (code, out) = payrelay_in(Path::new("."), &[command, "--help"]);
        assert_eq!(code, 0, "{out}");
        for line in out.lines().map(str::trim) {
            let bare = (line.starts_with('<') || line.starts_with("--")) && !line.contains("  ");
            assert!(!bare, "'{line}' has no description in `{command} --help`:\n{out}");
        }
    }
}

#[test]
fn an_error_prints_each_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
             [channels.email]\ntransport = \"file\"\n"
        ),
    );
    let (code, out) = payrelay(&config, &["serve"]);
    assert_eq!(code, 1, "{out}");
    let error = out
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(error.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{error}");
    // The OS's reason appears once, not again after the message quoting it.
    assert_eq!(error.matches("in use").count(), 1, "{error}");
    drop(taken);
}

/// Every message a journey step can send must exist on the channels it
/// can use, and be mapped to an approved template on WhatsApp.
#[test]
fn check_finds_journey_steps_whose_message_cannot_be_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "journeys.toml",
        r#"
[billers.acme]
checkout_url = "https://pay.example/{invoice_id}"
[channels.email]
transport = "file"
[channels.whatsapp]
provider = "file"
templates = { reminder = "payment_reminder" }
[routing]
journey = "chase"
[journeys.chase]
steps = [
  { name = "upcoming", due = "-3d", channels = ["whatsapp", "email"] },
  { name = "late", due = "+3d", channels = ["whatsapp"] },
  { name = "last", due = "+9d", channels = ["email"], template = "second_notice" },
]
"#,
    );
    let (code, out) = payrelay(&config, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("journeys.chase.steps[1]: no approved WhatsApp template is mapped to the overdue message"),
        "{out}"
    );
    assert!(
        out.contains("journeys.chase.steps[2]: the second_notice message has no template for email"),
        "{out}"
    );
    assert!(!out.contains("steps[0]"), "reminder is built in and mapped: {out}");
}

/// `payrelay route` reads the configured store: a number that replied STOP
/// shows as suppressed; without a store file it says so and still routes.
#[test]
fn route_shows_suppressed_channels_from_the_store_and_says_when_it_cannot_read_it() {
    use payrelay::domain::debtor::{address_hash, Reply};
    use payrelay::domain::ChannelName;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "config.toml",
        r#"
[store]
url = "sqlite://var/payrelay.db"
[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/{token}"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
[routing]
default = ["sms", "email"]
"#,
    );
    let invoice = write(
        dir.path(),
        "invoice.json",
        r#"{"invoice_id": "INV-1", "biller_id": "acme", "amount": "10.00", "currency": "MXN",
  "due_date": "2026-12-01", "customer": {"id": "C-1", "name": "M", "email": "m@example.com", "phone": "+5215512345678"}}"#,
    );
    let (code, out) = payrelay(&config, &["route", invoice.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the store could not be read (its SQLite file does not exist yet)"),
        "{out}"
    );
    assert!(out.contains("  1. sms\n  2. email"), "{out}");
    assert!(!dir.path().join("var/payrelay.db").exists(), "route creates no store");

    let url = format!("sqlite://{}", dir.path().join("var/payrelay.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let clock = std::sync::Arc::new(payrelay::domain::clock::SystemClock);
        let store = payrelay::store::open(&url, clock).await.unwrap();
        let stop = payrelay::store::SuppressionChange {
            channel: ChannelName::Sms,
            address_hash: address_hash(ChannelName::Sms, "+5215512345678"),
            biller_id: "acme".into(),
            reply: Reply::Stop,
            reason: "the customer replied STOP by SMS".into(),
            owner: None,
        };
        assert!(store.suppress(&stop).await.unwrap());
    });
    let (code, out) = payrelay(&config, &["route", invoice.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("could not be read"), "{out}");
    assert!(
        out.contains("  1. email\n  skipped sms: suppressed: this address asked to receive no more messages"),
        "{out}"
    );
}

/// `preview --template combined` shows the one message listing the
/// invoices of a JSON-lines file; `check` wants the combined message
/// mapped to an approved WhatsApp template when a combining biller can
/// reach WhatsApp.
#[test]
fn preview_shows_a_combined_message_and_check_wants_its_whatsapp_template() {
    let dir = tempfile::tempdir().unwrap();
    let config_text = r#"
[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/{token}"
combine = "10m"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
[channels.whatsapp]
provider = "file"
"#;
    let config = write(dir.path(), "config.toml", config_text);
    let (code, out) = payrelay(&config, &["check"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("billers.acme.combine") && out.contains("combined = \"<approved name>\""),
        "{out}"
    );
    let config = write(
        dir.path(),
        "config.toml",
        &format!("{config_text}templates = {{ combined = \"invoices_open\" }}\n"),
    );
    let (code, out) = payrelay(&config, &["check"]);
    assert_eq!(code, 0, "{out}");

    let line = |id: &str, amount: &str| {
        format!(
            r#"{{"invoice_id": "{id}", "biller_id": "acme", "amount": "{amount}", "currency": "MXN", "due_date": "2026-12-01", "customer": {{"id": "C-1", "name": "María", "email": "maria@example.com", "locale": "en"}}}}"#
        )
    };
    let invoices = write(
        dir.path(),
        "invoices.jsonl",
        &format!("{}\n{}\n", line("INV-1", "100.00"), line("INV-2", "250.50")),
    );
    let file = invoices.to_str().unwrap();
    let (code, out) = payrelay(
        &config,
        &["preview", file, "--template", "combined", "--channel", "email"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ACME Energy: 2 invoices for MX$350.50"), "{out}");
    for listed in ["INV-1", "INV-2", "MX$100.00", "MX$250.50"] {
        assert!(out.contains(listed), "{listed}: {out}");
    }
    let other = write(
        dir.path(),
        "two.jsonl",
        &format!("{}\n{}\n", line("INV-1", "1"), line("INV-2", "2").replace("C-1", "C-2")),
    );
    let (code, out) = payrelay(&config, &["preview", other.to_str().unwrap(), "--template", "combined"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("more than one"), "{out}");
}
