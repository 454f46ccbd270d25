//! Every message a journey sends, through the dispatcher's own preparation
//! (`dispatch::prepare`, what `payrelay preview` shows and what goes out):
//! each built-in message in each built-in language on each channel that
//! renders templates, the step data templates see, and "today" as the
//! customer's date.

use std::path::Path;

use serde_json::{json, Value};

use payrelay::channels::{BuildContext, Providers, Registry};
use payrelay::config::Config;
use payrelay::domain::clock::ManualClock;
use payrelay::domain::ChannelName;
use payrelay::invoice::{self, Invoice, Message};
use payrelay::render::{self, Templates};

const PUBLIC_BASE_URL: &str = "https://pay.acme-energy.example";

/// Every channel that renders templates on its `file` provider, and the
/// templates dir `templates` when given.
fn config(dir: &Path, templates: Option<&Path>) -> Config {
    let templates = templates
        .map(|t| format!("[templates]\ndir = \"{}\"\n", t.display()))
        .unwrap_or_default();
    let toml = format!(
        r#"
[http]
public_base_url = "{PUBLIC_BASE_URL}"

[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}"

[billers.tokyo]
name = "Tokyo Gas"
checkout_url = "https://pay.example/c?inv={{invoice_id}}"
timezone = "Asia/Tokyo"

[channels.email]
transport = "file"

[channels.sms]
provider = "file"

[channels.messenger]
provider = "file"

{templates}"#
    );
    Config::from_toml(&toml, dir, &|_| None).unwrap_or_else(|p| panic!("config refused: {p:#?}"))
}

fn registry(config: &Config, dir: &Path) -> Registry {
    let context = BuildContext {
        public_base_url: PUBLIC_BASE_URL.parse().expect("url"),
    };
    Registry::with_providers(&config.channels, &context, Providers::Files(dir)).expect("channels build")
}

/// The example invoice (1234.50 MXN, due 2026-12-01) with `customer`
/// fields laid over the defaults.
fn invoice(biller: &str, customer: Value) -> Invoice {
    let mut body = json!({
        "invoice_id": "INV-2026-000123",
        "biller_id": biller,
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {
            "name": "María López",
            "email": "maria@example.com",
            "phone": "+5215512345678",
            "messenger_psid": "6543210987654321"
        },
        "metadata": {"contract": "K-77"}
    });
    if let (Some(fields), Some(extra)) = (body["customer"].as_object_mut(), customer.as_object()) {
        fields.extend(extra.clone());
    }
    match invoice::parse(body.to_string().as_bytes(), |b| b == "acme" || b == "tokyo") {
        Ok(Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("the example invoice parses: {other:?}"),
    }
}

/// A clock at `hour`:00 UTC, `days` days before the due date.
fn clock(days_to_due: i64, hour: i64) -> ManualClock {
    let due = time::macros::date!(2026 - 12 - 01)
        .midnight()
        .assume_utc()
        .unix_timestamp();
    ManualClock::at_ms((due - days_to_due * 86_400 + hour * 3_600) * 1000)
}

/// The message on `channel` as its parts, or why it could not be made.
fn prepare(
    config: &Config,
    registry: &Registry,
    templates: &Templates,
    clock: &ManualClock,
    invoice: &Invoice,
    channel: ChannelName,
    message: &render::Message,
) -> Result<Vec<(String, String)>, String> {
    let outgoing = payrelay::dispatch::prepare(config, registry, templates, clock, invoice, channel, message);
    let prepared = outgoing.message?;
    Ok(prepared
        .parts()
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text.into_owned()))
        .collect())
}

fn part<'a>(parts: &'a [(String, String)], name: &str) -> &'a str {
    parts
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no {name} part in {parts:?}"))
}

#[test]
fn every_built_in_message_renders_in_every_language_on_every_channel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let registry = registry(&config, dir.path());
    let templates = Templates::load(None).expect("built-in templates");
    let link = format!("{PUBLIC_BASE_URL}/p/");
    for locale in ["en", "es-MX", "pt-BR", "de-DE"] {
        let invoice = invoice("acme", json!({"locale": locale}));
        let amount = render::money(&invoice.amount, locale);
        let due = render::date(invoice.due_date, locale);
        let lang = locale.split('-').next().unwrap_or_default();
        // The combined message lists several invoices: see the test below.
        for template in render::BUILT_IN_MESSAGES
            .into_iter()
            .filter(|t| *t != render::COMBINED_TEMPLATE)
        {
            let message = render::Message::step("a_step", template);
            for days in [3, 1, 0, -1, -5] {
                let clock = clock(days, 12);
                let at = format!("{template} in {locale}, {days} days before the due date");
                // Today and tomorrow name the day instead of the date.
                let says_the_date = !matches!(days, 0 | 1);
                for channel in [ChannelName::Email, ChannelName::Sms, ChannelName::Messenger] {
                    let parts = prepare(&config, &registry, &templates, &clock, &invoice, channel, &message)
                        .unwrap_or_else(|e| panic!("{at} on {channel}: {e}"));
                    let texts: Vec<&str> = match channel {
                        ChannelName::Email => vec![part(&parts, "text"), part(&parts, "html")],
                        _ => vec![part(&parts, "text")],
                    };
                    for text in &texts {
                        assert!(
                            !text.contains("{{") && !text.trim().is_empty(),
                            "{at} on {channel}: {text}"
                        );
                        assert!(
                            text.contains("ACME Energy") && text.contains(&amount),
                            "{at} on {channel}: {text}"
                        );
                        if says_the_date || channel == ChannelName::Email {
                            assert!(text.contains(&due), "{at} on {channel}: no {due} in {text}");
                        }
                    }
                    match channel {
                        ChannelName::Email => {
                            let subject = part(&parts, "subject");
                            assert!(
                                subject.contains("INV-2026-000123") && !subject.contains('\n'),
                                "{subject}"
                            );
                            assert!(part(&parts, "text").contains(&link), "{at}");
                            let html = part(&parts, "html");
                            assert!(html.contains(&format!("<a href=\"{link}")), "{at}: {html}");
                            assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{at}: {html}");
                        }
                        ChannelName::Sms => assert!(part(&parts, "text").contains(&link), "{at}"),
                        _ => {
                            assert!(part(&parts, "url").starts_with(&link), "{at}");
                            assert!(part(&parts, "text").chars().count() <= 640, "{at}");
                        }
                    }
                }
            }
        }
    }
}

/// The combined message, through each channel's own preparation, lists
/// every invoice with its amount and the total in each built-in language,
/// with the pay link and `<html lang>`.
#[test]
fn the_combined_message_lists_every_invoice_and_the_total_on_every_channel_in_every_language() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let registry = registry(&config, dir.path());
    let templates = Templates::load(None).expect("built-in templates");
    let link = format!("{PUBLIC_BASE_URL}/p/TOKEN-");
    let clock = clock(3, 12);
    for locale in ["en", "es-MX", "pt-BR", "de-DE"] {
        let lang = locale.split('-').next().unwrap_or_default();
        let mut invoices = Vec::new();
        for (id, amount) in [("INV-A", "100.00"), ("INV-B", "250.25"), ("INV-C", "1000.00")] {
            let mut invoice = invoice("acme", json!({"locale": locale}));
            invoice.key.invoice_id = id.to_owned();
            invoice.amount = payrelay::domain::money::Amount::parse(amount, "MXN").expect("amount");
            invoices.push(invoice);
        }
        let listed: Vec<&Invoice> = invoices.iter().collect();
        let total = render::money(
            &payrelay::domain::money::Amount::parse("1350.25", "MXN").unwrap(),
            locale,
        );
        // A combined reminder (a journey step) says it reminds; a first
        // request does not.
        let reminds = match lang {
            "es" => "recordatorio",
            "pt" => "lembr",
            "de" => "erinner",
            _ => "remind",
        };
        for (channel, step) in [ChannelName::Email, ChannelName::Sms, ChannelName::Messenger]
            .into_iter()
            .flat_map(|c| [(c, None), (c, Some("upcoming"))])
        {
            let at = format!("combined in {locale} on {channel} (step {step:?})");
            let prepared = payrelay::dispatch::prepare_combined(
                &config, &registry, &templates, &clock, listed[0], &listed, channel, "TOKEN-1", step,
            )
            .unwrap_or_else(|e| panic!("{at}: {e}"));
            let parts: Vec<(String, String)> = prepared
                .parts()
                .into_iter()
                .map(|(name, text)| (name.to_owned(), text.into_owned()))
                .collect();
            let text = part(&parts, "text");
            for invoice in &invoices {
                assert!(text.contains(&invoice.key.invoice_id), "{at}: {text}");
                assert!(text.contains(&render::money(&invoice.amount, locale)), "{at}: {text}");
            }
            assert!(text.contains(&total), "{at}: no total {total} in {text}");
            assert_eq!(text.to_lowercase().contains(reminds), step.is_some(), "{at}: {text}");
            match channel {
                ChannelName::Email => {
                    assert!(part(&parts, "subject").contains(&total), "{at}");
                    let subject = part(&parts, "subject").to_lowercase();
                    assert_eq!(subject.contains(reminds), step.is_some(), "{at}: {subject}");
                    let html = part(&parts, "html").to_lowercase();
                    assert_eq!(html.contains(reminds), step.is_some(), "{at}");
                    assert!(text.contains(&link), "{at}");
                    let html = part(&parts, "html");
                    assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{at}: {html}");
                    assert!(html.contains("INV-C") && html.contains(&total), "{at}: {html}");
                }
                ChannelName::Sms => assert!(text.contains(&link), "{at}"),
                _ => assert!(part(&parts, "url").starts_with(&link), "{at}"),
            }
        }
    }
}

#[test]
fn prepare_puts_the_message_its_step_the_days_and_the_metadata_into_the_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let overrides = tempfile::tempdir().expect("tempdir");
    let write = |file: &str, text: &str| {
        let path = overrides.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("folder");
        std::fs::write(path, text).expect("template written");
    };
    write(
        "en/reminder/sms/body.hbs",
        "{{template}}|{{step}}|{{days_to_due}}|{{days_overdue}}|{{metadata.contract}}",
    );
    write(
        "en/sms/body.hbs",
        "{{template}}|{{#if step}}{{step}}{{else}}first{{/if}}|{{days_to_due}}|{{days_overdue}}",
    );
    let config = config(dir.path(), Some(overrides.path()));
    let registry = registry(&config, dir.path());
    let templates = Templates::load(Some(overrides.path())).expect("templates with overrides");
    let invoice = invoice("acme", json!({}));
    let sms = |message: &render::Message, days: i64| {
        let parts = prepare(
            &config,
            &registry,
            &templates,
            &clock(days, 12),
            &invoice,
            ChannelName::Sms,
            message,
        )
        .expect("prepared");
        part(&parts, "text").to_owned()
    };
    assert_eq!(
        sms(&render::Message::step("upcoming", "reminder"), 3),
        "reminder|upcoming|3|0|K-77"
    );
    assert_eq!(
        sms(&render::Message::step("late", "reminder"), -4),
        "reminder|late|-4|4|K-77"
    );
    assert_eq!(sms(&render::Message::first_request(), 10), "payment_request|first|10|0");
}

#[test]
fn today_is_the_customers_date_else_the_billers_else_utc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let overrides = tempfile::tempdir().expect("tempdir");
    let file = overrides.path().join("en/overdue/sms/body.hbs");
    std::fs::create_dir_all(file.parent().expect("a folder")).expect("folder");
    std::fs::write(&file, "{{days_to_due}}").expect("template written");
    let config = config(dir.path(), Some(overrides.path()));
    let registry = registry(&config, dir.path());
    let templates = Templates::load(Some(overrides.path())).expect("templates with overrides");
    let message = render::Message::step("late", "overdue");
    let days = |biller: &str, customer: Value, clock: &ManualClock| {
        let invoice = invoice(biller, customer);
        let parts = prepare(
            &config,
            &registry,
            &templates,
            clock,
            &invoice,
            ChannelName::Sms,
            &message,
        )
        .expect("prepared");
        part(&parts, "text").parse::<i64>().expect("a number")
    };
    // 2026-11-28 03:00 UTC is still the 27th in Mexico City.
    let early = clock(3, 3);
    assert_eq!(days("acme", json!({}), &early), 3);
    assert_eq!(days("acme", json!({"timezone": "America/Mexico_City"}), &early), 4);
    // 2026-11-28 20:00 UTC is already the 29th in Tokyo.
    let late = clock(3, 20);
    assert_eq!(days("acme", json!({}), &late), 3);
    assert_eq!(days("acme", json!({"timezone": "Asia/Tokyo"}), &late), 2);
    assert_eq!(days("tokyo", json!({}), &late), 2, "the biller's time zone");
    assert_eq!(
        days("tokyo", json!({"timezone": "America/Mexico_City"}), &late),
        3,
        "the customer's time zone wins"
    );
}

#[test]
fn a_message_no_template_defines_fails_its_channel_with_a_clear_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), None);
    let registry = registry(&config, dir.path());
    let templates = Templates::load(None).expect("built-in templates");
    let invoice = invoice("acme", json!({}));
    let message = render::Message::step("extra", "second_reminder");
    let error = prepare(
        &config,
        &registry,
        &templates,
        &clock(0, 12),
        &invoice,
        ChannelName::Sms,
        &message,
    )
    .expect_err("no such template");
    assert!(error.contains("second_reminder/sms/body"), "{error}");
}
