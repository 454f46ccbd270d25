//! Every consumer reads the payment request in their own language, with
//! money and dates in their own format: the built-in templates, the locale
//! fallback chain, overrides per language, and data that stays text.

use std::path::Path;

use payrelay::config::BillerConfig;
use payrelay::invoice::{self, Message};
use payrelay::render::{self, Templates};
use serde_json::{json, Value};

const PAY_URL: &str = "https://relay.example/p/TOKEN";

/// The contract's example invoice (1234.50 MXN, due 2026-12-01) for a
/// customer named `name` with `locale`, billed by ACME Energy whose default
/// locale is `default`.
fn view(locale: Option<&str>, default: Option<&str>, name: &str, amount: (&str, &str)) -> Value {
    let mut body = json!({
        "invoice_id": "INV-2026-000123",
        "biller_id": "acme",
        "amount": amount.0,
        "currency": amount.1,
        "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {"name": name, "email": "maria@example.com"}
    });
    if let Some(l) = locale {
        body["customer"]["locale"] = json!(l);
    }
    let Ok(Message::PaymentRequest(invoice)) = invoice::parse(body.to_string().as_bytes(), |b| b == "acme") else {
        panic!("the example invoice parses");
    };
    let biller = BillerConfig {
        name: "ACME Energy".into(),
        default_locale: default.map(str::to_owned),
        ..BillerConfig::default()
    };
    let mut view = render::view(&invoice, "acme", &biller, PAY_URL);
    view["status"] = json!("open");
    view["checkout_path"] = json!("/p/TOKEN/pay");
    view
}

fn pesos(locale: &str) -> Value {
    view(Some(locale), None, "María López", ("1234.50", "MXN"))
}

fn render(templates: &Templates, name: &str, view: &Value) -> String {
    templates
        .render(name, view)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn each_built_in_language_has_its_subject_sms_and_messenger_text() {
    let t = Templates::load(None).expect("built-in templates");
    let cases = [
        (
            "en-US",
            "ACME Energy: payment request INV-2026-000123 for MX$1,234.50",
            "ACME Energy: invoice INV-2026-000123 for MX$1,234.50 is due December 1, 2026. Pay: https://relay.example/p/TOKEN",
            "ACME Energy: invoice INV-2026-000123 for MX$1,234.50 is due on December 1, 2026.",
        ),
        (
            "es-MX",
            "ACME Energy: solicitud de pago INV-2026-000123 por $1,234.50",
            "ACME Energy: la factura INV-2026-000123 por $1,234.50 vence el 1 de diciembre de 2026. Pague en: https://relay.example/p/TOKEN",
            "ACME Energy: la factura INV-2026-000123 por $1,234.50 vence el 1 de diciembre de 2026.",
        ),
        (
            "pt-BR",
            "ACME Energy: solicitação de pagamento INV-2026-000123 de MX$ 1.234,50",
            "ACME Energy: a fatura INV-2026-000123 de MX$ 1.234,50 vence em 1 de dezembro de 2026. Pague em: https://relay.example/p/TOKEN",
            "ACME Energy: a fatura INV-2026-000123 de MX$ 1.234,50 vence em 1 de dezembro de 2026.",
        ),
        (
            "de-DE",
            "ACME Energy: Zahlungsaufforderung INV-2026-000123 über 1.234,50 MX$",
            "ACME Energy: Rechnung INV-2026-000123 über 1.234,50 MX$ ist am 1. Dezember 2026 fällig. Bezahlen: https://relay.example/p/TOKEN",
            "ACME Energy: Die Rechnung INV-2026-000123 über 1.234,50 MX$ ist am 1. Dezember 2026 fällig.",
        ),
    ];
    for (locale, subject, sms, messenger) in cases {
        let v = pesos(locale);
        assert_eq!(render(&t, "email/subject", &v), subject);
        assert_eq!(render(&t, "sms/body", &v), sms);
        assert_eq!(render(&t, "messenger/text", &v), messenger);
    }
}

#[test]
fn each_built_in_language_has_its_email_bodies() {
    let t = Templates::load(None).expect("built-in templates");
    let cases = [
        (
            "en",
            "Hello María López,",
            "Amount:   MX$1,234.50",
            "Due date: December 1, 2026",
        ),
        (
            "es-MX",
            "Hola, María López:",
            "Importe:     $1,234.50",
            "Vencimiento: 1 de diciembre de 2026",
        ),
        (
            "pt-BR",
            "Olá, María López,",
            "Valor:       MX$ 1.234,50",
            "Vencimento:  1 de dezembro de 2026",
        ),
        (
            "de-DE",
            "Guten Tag María López,",
            "Betrag:     1.234,50 MX$",
            "Fällig am:  1. Dezember 2026",
        ),
    ];
    for (locale, greeting, amount, due) in cases {
        let v = pesos(locale);
        let text = render(&t, "email/body.txt", &v);
        assert!(text.starts_with(greeting), "{text}");
        assert!(
            text.contains(amount) && text.contains(due) && text.contains(PAY_URL),
            "{text}"
        );
        let html = render(&t, "email/body.html", &v);
        let lang = locale.split('-').next().unwrap_or_default();
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{html}");
        assert!(
            html.contains(greeting) && html.contains(&format!("href=\"{PAY_URL}\"")),
            "{html}"
        );
    }
}

#[test]
fn amounts_and_dates_follow_the_customers_locale() {
    let cases = [
        ("de-DE", ("1234.50", "EUR"), "1.234,50 €", "1. Dezember 2026"),
        ("en-US", ("1234.50", "USD"), "$1,234.50", "December 1, 2026"),
        ("es-MX", ("1234.50", "MXN"), "$1,234.50", "1 de diciembre de 2026"),
        ("pt-BR", ("1234.50", "BRL"), "R$ 1.234,50", "1 de dezembro de 2026"),
        ("es-ES", ("1234.50", "EUR"), "1234,50 €", "1 de diciembre de 2026"),
        ("es-ES", ("12345.50", "EUR"), "12.345,50 €", "1 de diciembre de 2026"),
        ("en", ("1234.50", "MXN"), "MX$1,234.50", "December 1, 2026"),
        ("en", ("1235", "JPY"), "¥1,235", "December 1, 2026"),
        ("ja-JP", ("1235", "JPY"), "￥1,235", "2026年12月1日"),
        ("en", ("1234.567", "KWD"), "KWD 1,234.567", "December 1, 2026"),
        ("de-DE", ("1234.567", "KWD"), "1.234,567 KWD", "1. Dezember 2026"),
    ];
    for (locale, amount, money, date) in cases {
        let v = view(Some(locale), None, "C", amount);
        assert_eq!(v["amount"]["display"], money, "{amount:?} in {locale}");
        assert_eq!(v["invoice"]["due_date_display"], date, "{locale}");
    }
}

#[test]
fn the_language_falls_back_from_region_to_language_to_the_billers_default_to_english() {
    let t = Templates::load(None).expect("built-in templates");
    let subject = |locale, default| render(&t, "email/subject", &view(locale, default, "C", ("1234.50", "EUR")));
    // es-MX has no templates of its own: Spanish.
    assert_eq!(
        subject(Some("es-MX"), None),
        "ACME Energy: solicitud de pago INV-2026-000123 por €1,234.50"
    );
    // No French: the biller's German, with the amount as a French reader writes it.
    assert_eq!(
        subject(Some("fr-FR"), Some("de")),
        "ACME Energy: Zahlungsaufforderung INV-2026-000123 über 1 234,50 €"
    );
    // Neither the customer's nor the biller's language: English.
    assert_eq!(
        subject(Some("fr-FR"), Some("it-IT")),
        "ACME Energy: payment request INV-2026-000123 for 1 234,50 €"
    );
    assert_eq!(
        subject(None, None),
        "ACME Energy: payment request INV-2026-000123 for €1,234.50"
    );
}

#[test]
fn the_pay_page_shows_the_amount_and_the_paid_notice_in_the_customers_language() {
    let t = Templates::load(None).expect("built-in templates");
    let mut v = view(Some("pt-BR"), None, "C", ("1234.50", "BRL"));
    let open = render(&t, "paypage.html", &v);
    assert!(open.contains("<div class=\"amount\">R$ 1.234,50</div>"), "{open}");
    assert!(open.contains("Vence em 1 de dezembro de 2026"), "{open}");
    assert!(
        open.contains("<a class=\"pay\" href=\"/p/TOKEN/pay\">Pagar R$ 1.234,50</a>"),
        "{open}"
    );
    v["status"] = json!("paid");
    let paid = render(&t, "paypage.html", &v);
    assert!(
        paid.contains("Esta fatura já está paga. Obrigado!") && !paid.contains("class=\"pay\""),
        "{paid}"
    );
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("a folder")).expect("create the folder");
    std::fs::write(path, text).expect("write the template");
}

#[test]
fn a_file_in_the_templates_dir_replaces_one_languages_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "de/sms/body.hbs",
        "{{biller.name}}: bitte {{money amount.minor amount.currency}} bis {{date invoice.due_date}} zahlen: {{pay_url}}",
    );
    let t = Templates::load(Some(dir.path())).expect("templates with the override");
    assert_eq!(
        render(&t, "sms/body", &pesos("de-DE")),
        "ACME Energy: bitte 1.234,50 MX$ bis 1. Dezember 2026 zahlen: https://relay.example/p/TOKEN"
    );
    assert!(render(&t, "sms/body", &pesos("es-MX")).starts_with("ACME Energy: la factura"));
    assert!(render(&t, "email/subject", &pesos("de-DE")).contains("Zahlungsaufforderung"));
    assert!(t.missing_for_locale("de-CH").is_empty());
    let missing = t.missing_for_locale("it");
    assert_eq!(missing[..7], render::NAMES);
    assert_eq!(missing[7..10], render::PAGES);
    assert_eq!(
        missing.len(),
        7 + render::PAGES.len() + 4 * render::MESSAGE_PARTS.len(),
        "{missing:?}"
    );
}

#[test]
fn markup_and_template_syntax_in_the_customer_name_render_as_text_everywhere() {
    let name = "<b>María</b> {{pay_url}}";
    let escaped = "&lt;b&gt;María&lt;/b&gt; {{pay_url}}";
    // The built-in SMS and pay page do not show the customer's name; these do.
    let dir = tempfile::tempdir().expect("temp dir");
    for lang in ["en", "es", "pt", "de"] {
        write(
            dir.path(),
            &format!("{lang}/sms/body.hbs"),
            "{{customer.name}}: {{amount.display}} {{pay_url}}",
        );
        write(
            dir.path(),
            &format!("{lang}/paypage.html.hbs"),
            "<h1>{{customer.name}}</h1><a href=\"{{checkout_path}}\">{{amount.display}}</a>",
        );
    }
    let built_in = Templates::load(None).expect("built-in templates");
    let with_name = Templates::load(Some(dir.path())).expect("templates with the overrides");
    for locale in ["en", "es-MX", "pt-BR", "de-DE"] {
        let v = view(Some(locale), None, name, ("1234.50", "MXN"));
        let html = render(&built_in, "email/body.html", &v);
        assert!(html.contains(escaped) && !html.contains("<b>"), "{html}");
        assert_eq!(
            html.matches(PAY_URL).count(),
            3,
            "only the button's link, the written-out link and its text: {html}"
        );
        let text = render(&built_in, "email/body.txt", &v);
        assert!(text.contains(name), "{text}");
        let sms = render(&with_name, "sms/body", &v);
        assert!(sms.starts_with(&format!("{name}: ")) && sms.ends_with(PAY_URL), "{sms}");
        let page = render(&with_name, "paypage.html", &v);
        assert!(page.starts_with(&format!("<h1>{escaped}</h1>")), "{page}");
    }
}
