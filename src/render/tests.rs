use super::*;
use crate::invoice::Amount;

fn amount(text: &str, currency: &str) -> Amount {
    Amount::parse(text, currency).unwrap()
}

fn day(iso: &str) -> time::Date {
    time::Date::parse(iso, time::macros::format_description!("[year]-[month]-[day]")).unwrap()
}

/// The view of a sample invoice for a customer with `locale` and a biller
/// whose default is `default`.
fn view_for(locale: Option<&str>, default: Option<&str>, name: &str) -> serde_json::Value {
    let mut invoice = json!({"invoice_id": "INV-7", "biller_id": "acme", "amount": "1234.50", "currency": "EUR",
        "due_date": "2026-12-01", "customer": {"name": name, "email": "c@example.com"}});
    if let Some(l) = locale {
        invoice["customer"]["locale"] = json!(l);
    }
    let Ok(crate::invoice::Message::PaymentRequest(invoice)) =
        crate::invoice::parse(invoice.to_string().as_bytes(), |_| true)
    else {
        panic!("the test invoice parses");
    };
    let biller = BillerConfig {
        name: "ACME".into(),
        default_locale: default.map(str::to_owned),
        ..BillerConfig::default()
    };
    let mut view = view(&invoice, "acme", &biller, "https://pay.example/p/T");
    view["status"] = json!("open");
    view["checkout_path"] = json!("/p/T/pay");
    view
}

#[test]
fn money_is_formatted_for_the_locale_with_the_currency_symbol() {
    let cases = [
        ("de-DE", "1234.50", "EUR", "1.234,50 €"),
        ("en-US", "1234.50", "USD", "$1,234.50"),
        ("es-MX", "1234.50", "MXN", "$1,234.50"),
        ("pt-BR", "1234.50", "BRL", "R$ 1.234,50"),
        // CLDR: Spanish groups only from five integer digits on.
        ("es-ES", "1234.50", "EUR", "1234,50 €"),
        ("es-ES", "12345.50", "EUR", "12.345,50 €"),
        ("en", "1234.50", "MXN", "MX$1,234.50"),
        ("en-US", "1234.50", "MXN", "MX$1,234.50"),
        ("es-MX", "1234.50", "USD", "US$1,234.50"),
        ("de-DE", "1234.50", "USD", "1.234,50 $"),
        ("pt-BR", "1234.50", "USD", "US$ 1.234,50"),
        ("en", "999", "EUR", "€999.00"),
        ("en", "1234567.89", "EUR", "€1,234,567.89"),
    ];
    for (locale, text, currency, expected) in cases {
        assert_eq!(
            money(&amount(text, currency), locale),
            expected,
            "{text} {currency} in {locale}"
        );
    }
}

#[test]
fn money_keeps_exactly_the_currency_decimals() {
    assert_eq!(money(&amount("1235", "JPY"), "en"), "¥1,235");
    assert_eq!(money(&amount("1235", "JPY"), "ja"), "￥1,235");
    assert_eq!(money(&amount("1234.567", "KWD"), "en"), "KWD 1,234.567");
    assert_eq!(money(&amount("7", "KWD"), "de-DE"), "7,000 KWD");
    // CLDR shows these without decimals and ICU4X would round; the invoice
    // said otherwise, so the exact amount is shown.
    assert_eq!(money(&amount("1234.56", "IDR"), "en"), "IDR 1,234.56");
    assert_eq!(money(&amount("123.457", "IQD"), "en"), "IQD 123.457");
    assert_eq!(money(&amount("1234.56", "HUF"), "de-DE"), "1.234,56 HUF");
    assert_eq!(money_minor(-123456, "IDR", 2, "en"), "-IDR 1,234.56");
}

#[test]
fn money_in_an_unusable_locale_falls_back_to_english() {
    assert_eq!(money(&amount("1234.50", "EUR"), "not a locale"), "€1,234.50");
    assert_eq!(money_minor(123450, "EUR", 2, ""), "€1,234.50");
}

#[test]
fn dates_are_written_out_for_the_locale() {
    let cases = [
        ("en", "December 1, 2026"),
        ("en-US", "December 1, 2026"),
        ("es-MX", "1 de diciembre de 2026"),
        ("es-ES", "1 de diciembre de 2026"),
        ("pt-BR", "1 de dezembro de 2026"),
        ("de-DE", "1. Dezember 2026"),
        ("de", "1. Dezember 2026"),
        ("not a locale", "December 1, 2026"),
    ];
    for (locale, expected) in cases {
        assert_eq!(date(day("2026-12-01"), locale), expected, "{locale}");
    }
    assert_eq!(date(day("2027-03-05"), "pt-BR"), "5 de março de 2027");
}

#[test]
fn the_view_holds_the_localized_amount_date_and_locale_chain() {
    let v = view_for(Some("de-DE"), Some("es-MX"), "Kundin");
    assert_eq!(v["amount"]["display"], "1.234,50 €");
    assert_eq!(v["amount"]["value"], "1234.50");
    assert_eq!(v["invoice"]["due_date"], "2026-12-01");
    assert_eq!(v["invoice"]["due_date_display"], "1. Dezember 2026");
    assert_eq!(v["locale"], "de-DE");
    assert_eq!(v["locale_chain"], json!(["de-DE", "de", "es-MX", "es", "en"]));

    let v = view_for(None, Some("es-MX"), "Cliente");
    assert_eq!(v["amount"]["display"], "€1,234.50");
    assert_eq!(v["invoice"]["due_date_display"], "1 de diciembre de 2026");
}

#[test]
fn helpers_format_any_amount_and_date_in_templates_and_snippets() {
    let t = Templates::load(None).unwrap();
    let v = view_for(Some("pt-BR"), None, "Cliente");
    let render = |s: &str| t.render_inline(s, &v).unwrap();
    assert_eq!(render("{{money amount.minor amount.currency locale}}"), "€ 1.234,50");
    assert_eq!(render("{{money amount.minor amount.currency}}"), "€ 1.234,50");
    assert_eq!(render("{{money 123450 \"BRL\" \"pt-BR\"}}"), "R$ 1.234,50");
    assert_eq!(render("{{money 1235 \"JPY\" \"en\"}}"), "¥1,235");
    assert_eq!(render("{{date invoice.due_date locale}}"), "1 de dezembro de 2026");
    assert_eq!(render("{{date \"2026-12-01\" \"de-DE\"}}"), "1. Dezember 2026");
    assert_eq!(
        render("{{date invoice.due_date}}"),
        v["invoice"]["due_date_display"].as_str().unwrap()
    );
    for bad in [
        "{{money amount.currency amount.minor}}",
        "{{money 1 \"XYZ\"}}",
        "{{date \"1.12.2026\"}}",
    ] {
        assert!(t.render_inline(bad, &v).is_err(), "{bad}");
    }
}

#[test]
fn each_template_is_taken_from_the_first_locale_in_the_chain_that_has_it() {
    let t = Templates::load(None).unwrap();
    let subject = |locale, default| {
        t.render("email/subject", &view_for(locale, default, "C"))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(
        subject(Some("es-MX"), None),
        "ACME: solicitud de pago INV-7 por €1,234.50"
    );
    assert_eq!(
        subject(Some("fr-FR"), Some("de")),
        "ACME: Zahlungsaufforderung INV-7 über 1 234,50 €"
    );
    assert_eq!(
        subject(Some("fr-FR"), Some("de-AT")),
        "ACME: Zahlungsaufforderung INV-7 über 1 234,50 €"
    );
    assert_eq!(
        subject(Some("pt-BR"), Some("de")),
        "ACME: solicitação de pagamento INV-7 de € 1.234,50"
    );
    assert_eq!(
        subject(Some("fr-FR"), None),
        "ACME: payment request INV-7 for 1 234,50 €"
    );
    assert_eq!(subject(None, None), "ACME: payment request INV-7 for €1,234.50");
    assert_eq!(
        subject(None, Some("de-DE")),
        "ACME: Zahlungsaufforderung INV-7 über 1.234,50 €"
    );
}

#[test]
fn a_view_without_a_chain_is_rendered_in_its_locale() {
    let t = Templates::load(None).unwrap();
    let mut v = view_for(Some("en"), None, "C");
    v.as_object_mut().unwrap().remove("locale_chain");
    v["locale"] = json!("de-CH");
    assert!(t
        .render("sms/body", &v)
        .unwrap()
        .contains("ist am December 1, 2026 fällig"));
    v.as_object_mut().unwrap().remove("locale");
    assert!(t.render("sms/body", &v).unwrap().starts_with("ACME: invoice INV-7"));
}

#[test]
fn the_pay_page_speaks_the_customers_language_open_and_paid() {
    let t = Templates::load(None).unwrap();
    let cases = [
        (
            "en",
            "Pay €1,234.50",
            "This invoice is already paid. Thank you!",
            "Due December 1, 2026",
        ),
        (
            "es-MX",
            "Pagar €1,234.50",
            "Esta factura ya está pagada. ¡Gracias!",
            "Vence el 1 de diciembre de 2026",
        ),
        (
            "pt-BR",
            "Pagar € 1.234,50",
            "Esta fatura já está paga. Obrigado!",
            "Vence em 1 de dezembro de 2026",
        ),
        (
            "de-DE",
            "1.234,50 € bezahlen",
            "Diese Rechnung ist bereits bezahlt. Vielen Dank!",
            "Fällig am 1. Dezember 2026",
        ),
    ];
    for (locale, button, paid, due) in cases {
        let mut v = view_for(Some(locale), None, "C");
        let open = t.render("paypage.html", &v).unwrap();
        let lang = locale.split('-').next().unwrap();
        assert!(open.contains(&format!("<html lang=\"{lang}\">")), "{open}");
        assert!(
            open.contains(button) && open.contains(due) && !open.contains(paid),
            "{open}"
        );
        v["status"] = json!("paid");
        let closed = t.render("paypage.html", &v).unwrap();
        assert!(closed.contains(paid) && !closed.contains(button), "{closed}");
    }
}

#[test]
fn built_in_sms_bodies_stay_in_the_gsm_alphabet() {
    use crate::channels::sms::{Encoding, Segments};
    let t = Templates::load(None).unwrap();
    for locale in ["en", "es-MX", "es-ES", "pt-BR", "de-DE"] {
        let body = t
            .render("sms/body", &view_for(Some(locale), None, "Maria Lopez"))
            .unwrap();
        let segments = Segments::of(body.trim());
        assert_eq!(segments.encoding, Encoding::Gsm7, "{locale}: {body}");
        assert_eq!(segments.count, 1, "{locale}: {body}");
    }
}

#[test]
fn built_in_templates_compile_and_render_the_sample_in_every_language() {
    let t = Templates::load(None).unwrap();
    assert_eq!(t.locales(), ["de", "en", "es", "pt"]);
    assert!(t.check_with_sample().is_empty(), "{:?}", t.check_with_sample());
}

#[test]
fn missing_for_locale_lists_what_would_fall_back_to_another_language() {
    let t = Templates::load(None).unwrap();
    for complete in ["en", "es-MX", "es", "pt-BR", "pt-PT", "de-AT", "DE_de"] {
        assert!(t.missing_for_locale(complete).is_empty(), "{complete}");
    }
    assert_eq!(t.missing_for_locale("fr-FR"), NAMES);
    assert_eq!(t.missing_for_locale("not a locale"), NAMES);

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fr/sms/body.hbs",
        "{{biller.name}} : facture {{invoice.id}}, {{amount.display}}",
    );
    write(
        dir.path(),
        "fr/email/subject.hbs",
        "{{biller.name}} : facture {{invoice.id}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    assert_eq!(
        t.missing_for_locale("fr-CA"),
        ["email/body.txt", "email/body.html", "paypage.html", "messenger/text"]
    );
    assert_eq!(t.locales(), ["de", "en", "es", "fr", "pt"]);
}

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn an_override_replaces_one_template_in_one_language() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "es/sms/body.hbs",
        "{{biller.name}} te cobra {{amount.display}}: {{pay_url}}",
    );
    write(
        dir.path(),
        "es-MX/email/subject.hbs",
        "Tu recibo de {{biller.name}} por {{amount.display}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let render = |name: &str, view: &serde_json::Value| t.render(name, view).unwrap().trim().to_owned();

    let mx = view_for(Some("es-MX"), None, "C");
    assert_eq!(
        render("sms/body", &mx),
        "ACME te cobra €1,234.50: https://pay.example/p/T"
    );
    assert_eq!(render("email/subject", &mx), "Tu recibo de ACME por €1,234.50");
    let es = view_for(Some("es-ES"), None, "C");
    assert_eq!(
        render("sms/body", &es),
        "ACME te cobra 1234,50 €: https://pay.example/p/T"
    );
    assert_eq!(
        render("email/subject", &es),
        "ACME: solicitud de pago INV-7 por 1234,50 €"
    );
    assert!(render("messenger/text", &es).starts_with("ACME: la factura INV-7"));
    let en = view_for(Some("en"), None, "C");
    assert!(render("sms/body", &en).starts_with("ACME: invoice INV-7 for €1,234.50"));
}

#[test]
fn a_file_outside_any_locale_folder_overrides_english_as_before() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sms/body.hbs", "Pay {{biller.name}}: {{pay_url}}");
    let t = Templates::load(Some(dir.path())).unwrap();
    assert_eq!(
        t.render("sms/body", &view_for(None, None, "C")).unwrap(),
        "Pay ACME: https://pay.example/p/T"
    );
    assert!(t
        .render("sms/body", &view_for(Some("de"), None, "C"))
        .unwrap()
        .contains("Rechnung"));

    write(dir.path(), "en/sms/body.hbs", "Pay: {{pay_url}}");
    let problems = Templates::load(Some(dir.path())).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("keep one of the two"), "{problems:?}");
}

#[test]
fn broken_overrides_are_reported_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "de/email/subject.hbs", "{{#if}}");
    let problems = Templates::load(Some(dir.path())).unwrap_err();
    assert!(problems[0].location.ends_with("de/email/subject.hbs"), "{problems:?}");

    write(dir.path(), "de/email/subject.hbs", "{{biller.nmae}}");
    let t = Templates::load(Some(dir.path())).unwrap();
    let problems = t.check_with_sample();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("de/email/subject"), "{problems:?}");
}

#[test]
fn markup_and_template_syntax_in_data_render_as_text_in_every_language() {
    let t = Templates::load(None).unwrap();
    // In the customer's name (which the emails show) and the biller's
    // (which every template shows).
    let name = "<b>x</b> {{pay_url}} <script>alert(1)</script>";
    for locale in ["en", "es-MX", "pt-BR", "de-DE"] {
        let mut v = view_for(Some(locale), None, name);
        v["biller"]["name"] = json!(name);
        for html_template in ["email/body.html", "paypage.html"] {
            let html = t.render(html_template, &v).unwrap();
            assert!(
                html.contains("&lt;b&gt;x&lt;/b&gt; {{pay_url}} &lt;script&gt;"),
                "{locale} {html}"
            );
            assert!(!html.contains("<b>") && !html.contains("<script>"), "{locale} {html}");
        }
        // The pay link appears only where the template puts it.
        for (text_template, links) in [
            ("email/body.txt", 1),
            ("email/subject", 0),
            ("sms/body", 1),
            ("messenger/text", 0),
        ] {
            let text = t.render(text_template, &v).unwrap();
            assert!(text.contains(name), "{locale} {text_template}: {text}");
            assert_eq!(
                text.matches("https://pay.example").count(),
                links,
                "{locale} {text_template}: {text}"
            );
        }
    }
}

#[test]
fn helper_output_is_escaped_in_html_and_not_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "en/paypage.html.hbs",
        "<p>{{money amount.minor amount.currency locale}} {{customer.name}}</p>",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let html = t
        .render("paypage.html", &view_for(None, None, "A & B {{locale}}"))
        .unwrap();
    assert_eq!(html, "<p>€1,234.50 A &amp; B {{locale}}</p>");
}

/// `render_each` picks the locale per template and gives each its own
/// `lang`, as one `render` call per template would.
#[test]
fn several_templates_rendered_together_each_get_their_own_locale_and_lang() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "es-MX/email/subject.hbs", "{{lang}}: {{biller.name}}");
    write(dir.path(), "fr/email/body.txt.hbs", "{{lang}} {{amount.display}}");
    let t = Templates::load(Some(dir.path())).unwrap();
    // Chain fr-FR, fr, es-MX, es, en: three templates, three languages.
    let view = view_for(Some("fr-FR"), Some("es-MX"), "C");
    let [subject, text, html] = t
        .render_each(["email/subject", "email/body.txt", "email/body.html"], &view)
        .unwrap();
    assert_eq!(subject, "es-MX: ACME");
    assert_eq!(text, "fr 1 234,50 €");
    assert!(html.contains("lang=\"es\""), "{html}");
    for (name, together) in [
        ("email/subject", &subject),
        ("email/body.txt", &text),
        ("email/body.html", &html),
    ] {
        assert_eq!(together, &t.render(name, &view).unwrap(), "{name}");
    }
}

proptest::proptest! {
    /// The fast HTML escape gives exactly what handlebars' own gives, for
    /// any text: the special characters, other ASCII and multi-byte UTF-8.
    #[test]
    fn html_escape_matches_handlebars(s in "[<>\"&'`=a-z é€😀\\n]{0,40}|\\PC{0,40}") {
        proptest::prop_assert_eq!(escape_html(&s), handlebars::html_escape(&s));
    }
}

#[test]
fn html_escape_turns_every_special_character_into_its_entity() {
    assert_eq!(
        escape_html("<a href=\"x\">Tom & Jerry's `€`</a>"),
        "&lt;a href&#x3D;&quot;x&quot;&gt;Tom &amp; Jerry&#x27;s &#x60;€&#x60;&lt;/a&gt;"
    );
    assert_eq!(escape_html("nothing to do é"), "nothing to do é");
    assert_eq!(escape_html(""), "");
}
