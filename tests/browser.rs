//! The pages customers land on, in a real browser at a phone's width: the
//! real `payrelay` binary on the real broker sends invoices by email (the
//! `file` transport), and headless Chromium, 360 px wide and asking for
//! Spanish, opens the links the emails carry: the pay page of an overdue
//! invoice, an already-paid invoice's page, a cancelled invoice's 410, a
//! link nobody sent (404) and the unsubscribe page. Each is in Spanish
//! (`<html lang="es">`), names the biller, fits the width without
//! sideways scrolling, and is saved as `target/screenshots/<name>.png` to
//! be looked at (see tests/common/browser.rs). The console, at a desktop's
//! width: the funnel read off the page against what the test did, a
//! biller kept to its own invoices, and a dead letter sent back.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::browser::Browser;
use common::process::{free_port, Broker, Service};
use common::AMQP_URL;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

const WEBHOOK_SECRET: &str = "browser-test-webhook-secret";
const BILLER: &str = "Compañía de Luz del Valle";
const SUPPORT: &str = "+52 55 1234 5678 · ayuda@luzdelvalle.example";
const CHECKOUT_HOST: &str = "pagos.luzdelvalle.example";
/// A phone's width and height, in CSS pixels.
const PHONE: (u32, u32) = (360, 800);

/// The biller's logo: a small SVG, as `[billers.<id>] logo` takes.
const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="96" height="32" viewBox="0 0 96 32"><rect width="32" height="32" rx="6" fill="#0f766e"/><path d="M16 6l-6 12h5l-2 8 9-13h-5l3-7z" fill="#fde68a"/><text x="40" y="22" font-family="Arial" font-size="14" font-weight="bold" fill="#0f766e">LdV</text></svg>"##;

fn write_config(dir: &Path, broker: &Broker, port: u16) -> PathBuf {
    write_config_with(dir, broker, port, "")
}

/// [`write_config`] with more TOML (tokens, another biller) at the end.
fn write_config_with(dir: &Path, broker: &Broker, port: u16, more: &str) -> PathBuf {
    std::fs::write(dir.join("logo.svg"), LOGO).expect("the logo file");
    let path = dir.join("payrelay.toml");
    let (queue, exchange) = (&broker.queue, &broker.exchange);
    std::fs::write(
        &path,
        format!(
            r##"
[broker]
url = "{AMQP_URL}"
queue = "{queue}"
events_exchange = "{exchange}"
[store]
url = "sqlite://var/payrelay.db"
[http]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"
[billers.acme]
name = "{BILLER}"
checkout_url = "https://{CHECKOUT_HOST}/checkout?factura={{invoice_id}}&t={{token}}"
default_locale = "es-MX"
webhook_secret = "{WEBHOOK_SECRET}"
support = "{SUPPORT}"
brand_color = "#0f766e"
logo = "logo.svg"
[channels.email]
transport = "file"
outbox_dir = "outbox"
from = "Luz del Valle <facturas@luzdelvalle.example>"
[routing]
default = ["email"]
{more}
"##
        ),
    )
    .expect("write the test config");
    path
}

/// An email-only invoice for a Spanish-speaking customer.
fn invoice(id: &str, email: &str, locale: &str, due: &str, description: &str) -> Value {
    json!({
        "kind": "payment_request", "invoice_id": id, "biller_id": "acme", "revision": 1,
        "amount": "18450.75", "currency": "MXN", "due_date": due,
        "description": description,
        "customer": {"id": format!("C-{id}"), "name": "María Fernanda López Hernández", "email": email, "locale": locale},
        "channels": ["email"]
    })
}

/// Receives events until one is `name` for revision `revision` of `invoice_id`.
async fn wait_for(
    events: &mut UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    name: &str,
    (invoice_id, revision): (&str, i64),
) {
    let found = |seen: &[Value]| {
        seen.iter()
            .any(|e| e["event"] == name && e["invoice_id"] == invoice_id && e["revision"] == revision)
    };
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !found(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => panic!("timed out waiting for {name} of {invoice_id} revision {revision}; events: {seen:#?}"),
        }
    }
}

/// Each email's recipient and raw text, from the `file` transport's outbox.
fn outbox(dir: &Path) -> BTreeMap<String, String> {
    let mut emails = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the outbox").flatten() {
        let raw = std::fs::read(entry.path()).expect("an email file");
        let message = mail_parser::MessageParser::default().parse(&raw).expect("an email");
        let to = message
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.address())
            .expect("a recipient")
            .to_owned();
        emails.insert(to, String::from_utf8_lossy(&raw).into_owned());
    }
    emails
}

/// The HTML part of the email to `to`.
fn email_html(emails: &BTreeMap<String, String>, to: &str) -> String {
    let raw = emails
        .get(to)
        .unwrap_or_else(|| panic!("an email to {to}: {emails:#?}"));
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("an email");
    message.body_html(0).expect("an HTML part").into_owned()
}

/// The pay link in the email to `to`, and its unsubscribe link.
fn links(emails: &BTreeMap<String, String>, to: &str, base_url: &str) -> (String, String) {
    let raw = emails
        .get(to)
        .unwrap_or_else(|| panic!("an email to {to}: {emails:#?}"));
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("an email");
    let text = message.body_text(0).expect("a text part");
    let pay = common::pay_link(&text, base_url);
    let unsubscribe = raw
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .and_then(|l| l.split('>').next())
        .expect("a List-Unsubscribe link")
        .to_owned();
    (pay, unsubscribe)
}

/// Confirms a payment as the biller does: `POST /v1/payments`, signed.
async fn pay(base_url: &str, invoice_id: &str) {
    let body = json!({"biller_id": "acme", "invoice_id": invoice_id}).to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    let response = reqwest::Client::new()
        .post(format!("{base_url}/v1/payments"))
        .header("content-type", "application/json")
        .header("x-payrelay-signature", signature)
        .body(body)
        .send()
        .await
        .expect("POST /v1/payments");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Opens `url` and checks what every page shows: Spanish, the biller's
/// name, no sideways scrolling; saves the screenshot; returns the text.
async fn look_at(browser: &Browser, url: &str, name: &str) -> String {
    browser.open(url).await;
    assert_eq!(browser.lang().await, "es", "{name}: <html lang>");
    browser.assert_fits(name).await;
    let path = browser.screenshot(name).await;
    let text = browser.text().await;
    eprintln!("{name}: {}", path.display());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_pages_read_in_spanish_on_a_phone_and_name_the_biller() {
    let broker = Broker::new("browser").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &broker, port);
    let mut events = broker.observe(&config).await;
    let _service = Service::spawn(&config);
    let long =
        "Suministro de energía eléctrica, periodo bimestral noviembre–diciembre 2025, contrato 00012345678901234567";
    broker
        .publish(
            &config,
            &[
                invoice("FAC-2025-000981", "overdue@example.com", "es-ES", "2025-12-01", long),
                invoice(
                    "FAC-2026-001204",
                    "paid@example.com",
                    "es-MX",
                    "2027-01-15",
                    "Luz, enero 2027",
                ),
                invoice(
                    "FAC-2026-001377",
                    "cancelled@example.com",
                    "es-MX",
                    "2027-01-15",
                    "Luz, enero 2027",
                ),
                invoice(
                    "FAC-2026-001500",
                    "updated@example.com",
                    "es-MX",
                    "2027-01-15",
                    "Luz, enero 2027",
                ),
            ],
        )
        .await;
    let mut seen = Vec::new();
    for id in [
        "FAC-2025-000981",
        "FAC-2026-001204",
        "FAC-2026-001377",
        "FAC-2026-001500",
    ] {
        wait_for(&mut events, &mut seen, "invoice.sent", (id, 1)).await;
    }
    // A corrected revision, to another address: the first email's link now
    // shows it, with a notice.
    let mut corrected = invoice(
        "FAC-2026-001500",
        "updated-2@example.com",
        "es-MX",
        "2027-01-20",
        "Luz, enero 2027",
    );
    corrected["revision"] = json!(2);
    corrected["amount"] = json!("17990.00");
    broker.publish(&config, &[corrected]).await;
    wait_for(&mut events, &mut seen, "invoice.sent", ("FAC-2026-001500", 2)).await;
    let emails = outbox(&dir.path().join("outbox"));
    let (overdue, unsubscribe) = links(&emails, "overdue@example.com", &base_url);
    let (paid, _) = links(&emails, "paid@example.com", &base_url);
    let (cancelled, _) = links(&emails, "cancelled@example.com", &base_url);
    let (updated, _) = links(&emails, "updated@example.com", &base_url);

    pay(&base_url, "FAC-2026-001204").await;
    wait_for(&mut events, &mut seen, "invoice.paid", ("FAC-2026-001204", 1)).await;
    broker
        .publish(
            &config,
            &[json!({"kind": "invoice_cancelled", "biller_id": "acme", "invoice_id": "FAC-2026-001377"})],
        )
        .await;
    wait_for(&mut events, &mut seen, "invoice.cancelled", ("FAC-2026-001377", 1)).await;

    let browser = Browser::start(PHONE.0, PHONE.1, "es-ES,es").await;
    // The check can fail: a page wider than a phone, and one without a
    // viewport, do not fit.
    let viewport = "<meta name=viewport content='width=device-width'>";
    browser
        .open(&format!("data:text/html,{viewport}<p style='width:500px'>wide</p>"))
        .await;
    assert!(browser.misfit().await.is_some(), "500 px of text on a 360 px screen");
    browser.open("data:text/html,<p>no viewport</p>").await;
    assert!(browser.misfit().await.is_some(), "a page without a viewport");

    let page = look_at(&browser, &overdue, "pay-page-es").await;
    for expected in [
        BILLER,
        SUPPORT,
        CHECKOUT_HOST,
        "Vencida",
        "Factura FAC-2025-000981",
        "Pagar",
    ] {
        assert!(page.contains(expected), "the pay page shows {expected:?}: {page}");
    }
    let logo = browser
        .run("const img = document.querySelector('header img'); return img ? img.naturalWidth : 0;")
        .await;
    assert_eq!(
        logo,
        json!(96),
        "the logo loads from payrelay itself, under the page's CSP"
    );
    let button = browser
        .run("const a = document.querySelector('a.pay'); return [getComputedStyle(a).backgroundColor, a.getBoundingClientRect().height];")
        .await;
    assert_eq!(
        button[0],
        json!("rgb(15, 118, 110)"),
        "the Pay button has the brand colour"
    );
    assert!(
        button[1].as_f64().unwrap_or(0.0) >= 44.0,
        "a button a thumb can press: {button}"
    );

    // The "remind me by" form, sent as a person sends it: the browser posts
    // it from the page (with `Origin: null`, the page's referrer policy
    // being no-referrer) and lands back on the page with the choice saved.
    let saved = browser
        .click_and_wait_for("form.prefs button[type=submit]", "Guardamos su elección.")
        .await;
    assert!(saved.contains(BILLER), "{saved}");
    browser.screenshot("preferences-saved-es").await;

    let page = look_at(&browser, &updated, "updated-page-es").await;
    assert!(
        page.contains("Esta solicitud de pago se actualizó")
            && page.contains("$17,990.00")
            && page.contains("20 de enero de 2027"),
        "the older link shows the newest revision, with a notice: {page}"
    );

    let page = look_at(&browser, &paid, "paid-page-es").await;
    assert!(page.contains("Esta factura ya está pagada"), "{page}");
    assert!(page.contains(BILLER) && !page.contains("Vencida"), "{page}");

    let gone = reqwest::get(&cancelled).await.expect("the cancelled link");
    assert_eq!(gone.status(), 410);
    let page = look_at(&browser, &cancelled, "gone-page-es").await;
    for expected in [
        BILLER,
        SUPPORT,
        "Este enlace ya no es válido",
        "canceló esta solicitud de pago",
    ] {
        assert!(page.contains(expected), "the 410 page shows {expected:?}: {page}");
    }

    let unknown = format!("{base_url}/p/01a1f97c7288AAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let page = look_at(&browser, &unknown, "not-found-page-es").await;
    assert!(
        page.contains("Enlace no encontrado") && !page.contains(BILLER),
        "{page}"
    );

    let page = look_at(&browser, &unsubscribe, "unsubscribe-page-es").await;
    assert!(page.contains(BILLER) && page.contains("Darme de baja"), "{page}");
    let done = browser
        .click_and_wait_for("form button[type=submit]", "Se dio de baja")
        .await;
    assert!(done.contains(BILLER), "{done}");
    browser.screenshot("unsubscribed-es").await;

    // The email itself, as a phone's mail app shows it: the long link wraps
    // and the Pay button is a table cell of the brand colour.
    let html = email_html(&emails, "overdue@example.com");
    let data_url = format!(
        "data:text/html;charset=utf-8;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&html)
    );
    let text = look_at(&browser, &data_url, "email-es").await;
    assert!(text.contains(&overdue), "the written-out link: {text}");
    let cell = browser
        .run("const td = document.querySelector('table[role=presentation] td'); return [td.getAttribute('bgcolor'), td.innerText];")
        .await;
    assert_eq!(cell, json!(["#0f766e", "Pagar 18.450,75 MX$"]));

    browser.close().await;
}

const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";
const ACME_TOKEN: &str = "console-acme-token-0123456789abcdef";
/// A desktop browser's width and height, for the operators' console.
const DESKTOP: (u32, u32) = (1280, 900);

/// The funnel's figures as the console page shows them: (label, number).
async fn funnel_figures(browser: &Browser) -> Vec<(String, String)> {
    let figures = browser
        .run("return [...document.querySelectorAll('.figure')].map(f => [f.firstChild.textContent.trim(), f.querySelector('strong').textContent.trim()]);")
        .await;
    serde_json::from_value(figures).expect("label and number pairs")
}

/// Signs in to the console at `base_url` with `token`.
async fn sign_in(browser: &Browser, base_url: &str, token: &str) -> String {
    browser.open(&format!("{base_url}/console")).await;
    browser.fill("input[name=token]", token).await;
    browser.click_and_wait_for("button[type=submit]", "Sign out").await
}

/// An operator in a real browser: the console's funnel shows what the
/// test did (invoices sent, opened by a person and by a link previewer,
/// paid), a biller's sign-in does not see another biller's invoice, and
/// a dead letter (an invoice for a biller not yet configured) is sent
/// back from the console after the config is fixed, and then delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_the_funnel_and_sends_a_dead_letter_back_in_the_console() {
    let broker = Broker::new("console-browser").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &broker, port);
    // The tokens go into the sections `write_config` writes.
    let text = std::fs::read_to_string(&config).expect("the config");
    let text = text
        .replace(
            &format!("public_base_url = \"{base_url}\"\n"),
            &format!("public_base_url = \"{base_url}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
        )
        .replace(
            &format!("webhook_secret = \"{WEBHOOK_SECRET}\"\n"),
            &format!("webhook_secret = \"{WEBHOOK_SECRET}\"\napi_token = \"{ACME_TOKEN}\"\n"),
        );
    std::fs::write(&config, &text).expect("the config with tokens");
    let mut events = broker.observe(&config).await;
    let mut service = Service::spawn(&config);

    let ids = ["FAC-C-1", "FAC-C-2", "FAC-C-3", "FAC-C-4", "FAC-C-5"];
    let invoices: Vec<Value> = ids
        .iter()
        .map(|id| {
            invoice(
                id,
                &format!("{}@example.com", id.to_lowercase()),
                "es-MX",
                "2027-01-15",
                "Luz",
            )
        })
        .collect();
    broker.publish(&config, &invoices).await;
    // An invoice of a biller payrelay does not know yet: dead-lettered.
    let mut beta = invoice("FAC-B-1", "beta@example.com", "es-MX", "2027-01-15", "Agua");
    beta["biller_id"] = json!("beta");
    broker.publish(&config, &[beta]).await;
    let mut seen = Vec::new();
    for id in ids {
        wait_for(&mut events, &mut seen, "invoice.sent", (id, 1)).await;
    }
    wait_for(&mut events, &mut seen, "invoice.rejected", ("FAC-B-1", 1)).await;

    // Two links opened by a person (the browser), one fetched by a link
    // previewer (it must not count), one invoice paid.
    let emails = outbox(&dir.path().join("outbox"));
    let browser = Browser::start(DESKTOP.0, DESKTOP.1, "en").await;
    for id in ["FAC-C-1", "FAC-C-2"] {
        let (link, _) = links(&emails, &format!("{}@example.com", id.to_lowercase()), &base_url);
        browser.open(&link).await;
    }
    let (previewed, _) = links(&emails, "fac-c-3@example.com", &base_url);
    let preview = reqwest::Client::new()
        .get(&previewed)
        .header(
            "user-agent",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        )
        .send()
        .await
        .expect("the previewer's fetch");
    assert_eq!(preview.status(), 200);
    pay(&base_url, "FAC-C-1").await;
    wait_for(&mut events, &mut seen, "invoice.paid", ("FAC-C-1", 1)).await;

    // The operator signs in and reads the funnel of today off the page.
    sign_in(&browser, &base_url, ADMIN_TOKEN).await;
    browser
        .open(&format!("{base_url}/console/funnel?biller=acme&period=today"))
        .await;
    browser.screenshot("console-funnel").await;
    let figures = funnel_figures(&browser).await;
    let figure = |label: &str| {
        figures
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| panic!("no {label} on the funnel page: {figures:?}"))
    };
    assert_eq!(
        (figure("Received"), figure("Sent"), figure("Opened"), figure("Paid")),
        ("5".into(), "5".into(), "2".into(), "1".into()),
        "{figures:?}"
    );

    // The dead letter is listed with its reason.
    browser.open(&format!("{base_url}/console/dead-letters")).await;
    let page = browser.text().await;
    assert!(page.contains("FAC-B-1") && page.contains("beta"), "{page}");
    browser.screenshot("console-dead-letters").await;

    // The config is fixed (beta added) and the service restarted; the
    // session outlives the restart, and the letter goes back and is sent.
    service.terminate(std::time::Duration::from_secs(20));
    let fixed = std::fs::read_to_string(&config).expect("the config").replace(
        "[channels.email]",
        "[billers.beta]\nname = \"Agua del Valle\"\ncheckout_url = \"https://pagos.agua.example/{invoice_id}\"\n\n[channels.email]",
    );
    std::fs::write(&config, fixed).expect("the fixed config");
    let _service = Service::spawn(&config);
    let mut page = String::new();
    for _ in 0..100 {
        if reqwest::get(format!("{base_url}/healthz")).await.is_ok() {
            browser.open(&format!("{base_url}/console/dead-letters")).await;
            page = browser.text().await;
            if page.contains("FAC-B-1") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("FAC-B-1"),
        "the letter is listed after the restart: {page}"
    );
    browser
        .click_and_wait_for("form[action$='/send-back'] button", "No dead letters")
        .await;
    wait_for(&mut events, &mut seen, "invoice.sent", ("FAC-B-1", 1)).await;

    // A biller's sign-in sees its own invoices, and another biller's
    // invoice answers as if it did not exist.
    browser
        .click_and_wait_for("form[action='/console/sign-out'] button", "Token")
        .await;
    sign_in(&browser, &base_url, ACME_TOKEN).await;
    browser.open(&format!("{base_url}/console/invoices/acme/FAC-C-1")).await;
    let own = browser.text().await;
    assert!(own.contains("FAC-C-1") && own.contains("paid"), "{own}");
    browser.screenshot("console-invoice").await;
    browser.open(&format!("{base_url}/console/invoices/beta/FAC-B-1")).await;
    let other = browser.text().await;
    assert!(!other.contains("Agua") && !other.contains("beta@"), "{other}");
    assert!(
        other.to_lowercase().contains("not found") || other.contains("404"),
        "{other}"
    );

    browser.close().await;
}
