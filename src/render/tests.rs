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
    let everything: Vec<String> = NAMES
        .iter()
        .chain(PAGES.iter())
        .map(|n| (*n).to_owned())
        .chain(
            ["reminder", "overdue", "final_notice", "combined"]
                .iter()
                .flat_map(|m| MESSAGE_PARTS.map(|p| format!("{m}/{p}"))),
        )
        .collect();
    assert_eq!(everything.len(), 30);
    assert_eq!(t.missing_for_locale("fr-FR"), everything);
    assert_eq!(t.missing_for_locale("not a locale"), everything);

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
    write(
        dir.path(),
        "fr/reminder/sms/body.hbs",
        "{{biller.name}} : rappel {{pay_url}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let missing = t.missing_for_locale("fr-CA");
    assert_eq!(
        missing[..5],
        [
            "email/body.txt",
            "email/body.html",
            "paypage.html",
            "messenger/text",
            "unsubscribe.html"
        ]
    );
    assert_eq!(missing.len(), 5 + 3 + 19, "{missing:?}");
    assert!(!missing.contains(&"reminder/sms/body".to_owned()), "{missing:?}");
    assert!(missing.contains(&"final_notice/sms/body".to_owned()), "{missing:?}");
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

/// The parsed sample invoice of [`view_for`], for views of other messages.
fn invoice_for(locale: &str, metadata: Option<serde_json::Value>) -> Invoice {
    let mut body = json!({"invoice_id": "INV-7", "biller_id": "acme", "amount": "1234.50", "currency": "EUR",
        "due_date": "2026-12-01", "customer": {"name": "C", "email": "c@example.com", "locale": locale}});
    if let Some(m) = metadata {
        body["metadata"] = m;
    }
    match crate::invoice::parse(body.to_string().as_bytes(), |_| true) {
        Ok(crate::invoice::Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("the test invoice parses: {other:?}"),
    }
}

fn acme() -> BillerConfig {
    BillerConfig {
        name: "ACME".into(),
        ..BillerConfig::default()
    }
}

#[test]
fn the_view_says_which_message_which_step_and_how_many_days() {
    let invoice = invoice_for("en", Some(json!({"contract": "K-9"})));
    let biller = acme();
    let step = Message::step("upcoming", "reminder");
    let v = View::new(
        &invoice,
        "acme",
        &biller,
        "https://pay.example/p/T",
        &step,
        day("2026-11-28"),
    );
    assert_eq!(
        (v.template, v.step, v.days_to_due, v.days_overdue),
        ("reminder", Some("upcoming"), 3, 0)
    );
    assert_eq!(v.data["template"], "reminder");
    assert_eq!(v.data["step"], "upcoming");
    assert_eq!(v.data["days_to_due"], 3);
    assert_eq!(v.data["days_overdue"], 0);
    assert_eq!(v.data["metadata"], json!({"contract": "K-9"}));

    let step = Message::step("late", "overdue");
    let v = View::new(
        &invoice,
        "acme",
        &biller,
        "https://pay.example/p/T",
        &step,
        day("2026-12-06"),
    );
    assert_eq!((v.days_to_due, v.days_overdue), (-5, 5));
    assert_eq!(
        (v.data["days_to_due"].clone(), v.data["days_overdue"].clone()),
        (json!(-5), json!(5))
    );

    let first = Message::first_request();
    let no_metadata = invoice_for("en", None);
    let v = View::new(
        &no_metadata,
        "acme",
        &biller,
        "https://pay.example/p/T",
        &first,
        day("2026-12-01"),
    );
    assert_eq!(
        (v.template, v.step, v.days_to_due, v.days_overdue),
        ("payment_request", None, 0, 0)
    );
    assert_eq!(v.data["step"], serde_json::Value::Null);
    assert_eq!(v.data["metadata"], serde_json::Value::Null);
    assert_eq!(v.data["template"], "payment_request");
}

#[test]
fn the_first_requests_template_is_the_journeys_first() {
    assert_eq!(FIRST_TEMPLATE, crate::config::journey::FIRST_TEMPLATE);
    assert_eq!(BUILT_IN_MESSAGES[0], FIRST_TEMPLATE);
}

#[test]
fn message_names_are_lowercase_words_and_never_a_channel_folder() {
    for ok in ["reminder", "final_notice", "second_reminder2", "x"] {
        assert!(check_message_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Reminder",
        "2nd",
        "_x",
        "final-notice",
        "a/b",
        "email",
        "sms",
        "messenger",
        "whatsapp",
    ] {
        assert!(check_message_name(bad).is_err(), "{bad}");
    }
    assert!(check_message_name(&"a".repeat(65)).is_err());
    assert_eq!(part_name("payment_request", "sms/body"), "sms/body");
    assert_eq!(part_name("reminder", "sms/body"), "reminder/sms/body");
}

/// Renders `parts` of message `template` for a customer in `locale`,
/// `days_to_due` days before the due date.
fn render_message<const N: usize>(
    t: &Templates,
    template: &str,
    locale: &str,
    days_to_due: i64,
    parts: [&str; N],
) -> Result<[String; N], RenderError> {
    let invoice = invoice_for(locale, None);
    let biller = acme();
    let message = Message::step("step", template);
    let today = invoice.due_date - time::Duration::days(days_to_due);
    let v = View::new(&invoice, "acme", &biller, "https://pay.example/p/T", &message, today);
    t.render_message(&v, parts)
}

#[test]
fn every_built_in_message_is_complete_in_every_built_in_language() {
    let t = Templates::load(None).unwrap();
    assert_eq!(
        t.messages(),
        ["combined", "final_notice", "overdue", "payment_request", "reminder"]
    );
    for message in BUILT_IN_MESSAGES {
        for locale in ["en", "es-MX", "pt-BR", "de-AT"] {
            assert!(t.missing_message(message, locale).is_empty(), "{message} {locale}");
            for channel in ChannelName::ALL {
                assert!(t.missing_message_on(message, locale, channel).is_empty());
            }
        }
        assert_eq!(t.missing_message(message, "fr").len(), MESSAGE_PARTS.len(), "{message}");
    }
    assert_eq!(
        t.missing_message("reminder", "fr"),
        MESSAGE_PARTS.map(|p| format!("reminder/{p}"))
    );
    assert_eq!(t.missing_message("payment_request", "fr"), MESSAGE_PARTS);
    assert_eq!(
        t.missing_message_on("reminder", "fr", ChannelName::Sms),
        ["reminder/sms/body"]
    );
    assert_eq!(t.missing_message_on("reminder", "fr", ChannelName::Email).len(), 3);
    assert!(t.missing_message_on("reminder", "fr", ChannelName::Whatsapp).is_empty());
    assert_eq!(t.missing_message("no_such", "en").len(), MESSAGE_PARTS.len());
}

#[test]
fn a_reminder_says_when_it_is_due_in_each_language() {
    let t = Templates::load(None).unwrap();
    let subject = |locale: &str, days: i64| {
        let [s] = render_message(&t, "reminder", locale, days, ["email/subject"]).unwrap();
        s.trim().to_owned()
    };
    let cases = [
        (
            "en",
            [
                "ACME: friendly reminder, invoice INV-7 for €1,234.50 is due in 3 days",
                "ACME: friendly reminder, invoice INV-7 for €1,234.50 is due tomorrow",
                "ACME: friendly reminder, invoice INV-7 for €1,234.50 is due today",
                "ACME: friendly reminder, invoice INV-7 for €1,234.50 was due on December 1, 2026",
            ],
        ),
        (
            "es-ES",
            [
                "ACME: recordatorio, la factura INV-7 por 1234,50 € vence en 3 días",
                "ACME: recordatorio, la factura INV-7 por 1234,50 € vence mañana",
                "ACME: recordatorio, la factura INV-7 por 1234,50 € vence hoy",
                "ACME: recordatorio, la factura INV-7 por 1234,50 € venció el 1 de diciembre de 2026",
            ],
        ),
        (
            "pt-BR",
            [
                "ACME: lembrete, a fatura INV-7 de € 1.234,50 vence em 3 dias",
                "ACME: lembrete, a fatura INV-7 de € 1.234,50 vence amanhã",
                "ACME: lembrete, a fatura INV-7 de € 1.234,50 vence hoje",
                "ACME: lembrete, a fatura INV-7 de € 1.234,50 venceu em 1 de dezembro de 2026",
            ],
        ),
        (
            "de-DE",
            [
                "ACME: Erinnerung an Rechnung INV-7 über 1.234,50 €, fällig in 3 Tagen",
                "ACME: Erinnerung an Rechnung INV-7 über 1.234,50 €, fällig morgen",
                "ACME: Erinnerung an Rechnung INV-7 über 1.234,50 €, fällig heute",
                "ACME: Erinnerung an Rechnung INV-7 über 1.234,50 €, fällig seit dem 1. Dezember 2026",
            ],
        ),
    ];
    for (locale, expected) in cases {
        for (days, want) in [3, 1, 0, -2].into_iter().zip(expected) {
            assert_eq!(subject(locale, days), want, "{locale} {days}");
        }
    }
}

#[test]
fn overdue_and_final_notices_count_the_days_since_the_due_date() {
    let t = Templates::load(None).unwrap();
    let text = |template: &str, locale: &str, days: i64| {
        let [text] = render_message(&t, template, locale, days, ["email/body.txt"]).unwrap();
        text
    };
    let cases = [
        ("en", "was due on December 1, 2026 (5 days ago)", "(yesterday)"),
        ("es-MX", "venció el 1 de diciembre de 2026 (hace 5 días)", "(ayer)"),
        ("pt-BR", "vencida em 1 de dezembro de 2026 (há 5 dias)", "(ontem)"),
        ("de-DE", "war am 1. Dezember 2026 fällig (vor 5 Tagen)", "(gestern)"),
    ];
    for (locale, five_days, one_day) in cases {
        for template in ["overdue", "final_notice"] {
            assert!(text(template, locale, -5).contains(five_days), "{template} {locale}");
            assert!(text(template, locale, -1).contains(one_day), "{template} {locale}");
        }
    }
    // Sent on the due date by a journey that asks for it: no "0 days ago".
    let today = text("overdue", "en", 0);
    assert!(today.contains("It is due today.") && !today.contains("ago"), "{today}");
}

#[test]
fn a_reminder_override_in_the_templates_dir_wins_in_its_language_only() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "es/reminder/sms/body.hbs",
        "{{biller.name}}: recuerde {{amount.display}} ({{step}}, {{days_to_due}}): {{pay_url}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let [sms] = render_message(&t, "reminder", "es-MX", 3, ["sms/body"]).unwrap();
    assert_eq!(sms, "ACME: recuerde €1,234.50 (step, 3): https://pay.example/p/T");
    let [sms] = render_message(&t, "reminder", "en", 3, ["sms/body"]).unwrap();
    assert!(sms.starts_with("ACME reminder: invoice INV-7"), "{sms}");
    let [subject] = render_message(&t, "reminder", "es-MX", 3, ["email/subject"]).unwrap();
    assert!(subject.contains("recordatorio"), "{subject}");
    // payment_request's own sms/body is untouched.
    let [first] = t
        .render_each(["sms/body"], &view_for(Some("es-MX"), None, "C"))
        .unwrap();
    assert!(first.starts_with("ACME: la factura INV-7"), "{first}");
}

#[test]
fn a_message_the_templates_dir_adds_renders_and_falls_back_by_language() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "en/second_reminder/sms/body.hbs",
        "{{biller.name}} ({{template}}): {{amount.display}} {{pay_url}}",
    );
    write(
        dir.path(),
        "en/second_reminder/email/subject.hbs",
        "Still open: {{invoice.id}}",
    );
    write(
        dir.path(),
        "de/second_reminder/email/subject.hbs",
        "Noch offen: {{invoice.id}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    assert!(t.messages().contains(&"second_reminder".to_owned()));
    let [sms] = render_message(&t, "second_reminder", "es-MX", 2, ["sms/body"]).unwrap();
    assert_eq!(sms, "ACME (second_reminder): €1,234.50 https://pay.example/p/T");
    let [subject] = render_message(&t, "second_reminder", "de-DE", 2, ["email/subject"]).unwrap();
    assert_eq!(subject, "Noch offen: INV-7");
    assert_eq!(
        t.missing_message_on("second_reminder", "en", ChannelName::Email),
        ["second_reminder/email/body.txt", "second_reminder/email/body.html"]
    );
    assert!(t
        .missing_message_on("second_reminder", "en", ChannelName::Sms)
        .is_empty());
    assert_eq!(
        t.missing_message_on("second_reminder", "de", ChannelName::Sms),
        ["second_reminder/sms/body"]
    );
    // A part the message lacks everywhere is an error, never another message's.
    let missing = render_message(&t, "second_reminder", "en", 2, ["messenger/text"]).unwrap_err();
    assert!(
        matches!(&missing, RenderError::Missing { name } if name == "second_reminder/messenger/text"),
        "{missing}"
    );
    assert!(render_message(&t, "no_such", "en", 2, ["sms/body"]).is_err());
    assert!(t.check_with_sample().is_empty(), "{:?}", t.check_with_sample());
}

#[test]
fn misplaced_message_folders_are_reported_not_ignored() {
    for (file, says) in [
        ("reminder/sms/body.hbs", "inside a language folder"),
        ("en/Second-Reminder/sms/body.hbs", "not a message template name"),
        ("en/payment_request/sms/body.hbs", "directly in the language folder"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), file, "{{pay_url}}");
        let problems = Templates::load(Some(dir.path())).unwrap_err();
        assert_eq!(problems.len(), 1, "{file}: {problems:?}");
        assert!(problems[0].reason.contains(says), "{file}: {problems:?}");
    }
    // Other folders without message parts (notes, drafts) are left alone.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "en/Drafts/notes.txt", "x");
    write(dir.path(), "README/notes.txt", "x");
    assert!(Templates::load(Some(dir.path())).is_ok());
}

#[test]
fn the_sample_check_tries_each_branch_on_the_days() {
    let dir = tempfile::tempdir().unwrap();
    // The typo sits in the branch taken only after the due date.
    write(
        dir.path(),
        "en/overdue/sms/body.hbs",
        "{{#if (gt days_overdue 0)}}{{invoice.nmae}}{{else}}{{invoice.id}}{{/if}} {{pay_url}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let problems = t.check_with_sample();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("en/overdue/sms/body"), "{problems:?}");
}

#[test]
fn the_sample_check_wants_metadata_guarded_since_invoices_may_have_none() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "en/reminder/sms/body.hbs",
        "{{metadata.contract}} {{pay_url}}",
    );
    write(
        dir.path(),
        "en/overdue/sms/body.hbs",
        "{{#if metadata.contract}}({{metadata.contract}}) {{/if}}{{pay_url}}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let problems = t.check_with_sample();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].reason.contains("en/reminder/sms/body"), "{problems:?}");
}

/// A combined message lists every invoice with its amount and the total,
/// in the customer's language and money format, on every channel.
#[test]
fn the_combined_message_lists_each_invoice_and_the_total_in_each_language() {
    let t = Templates::load(None).unwrap();
    let biller = acme();
    let cases = [
        ("en", "3 invoices"),
        ("es-MX", "3 facturas"),
        ("pt-BR", "3 faturas"),
        ("de-DE", "3 Rechnungen"),
    ];
    for (locale, count) in cases {
        let one = &money(&Amount::parse("1234.50", "EUR").unwrap(), locale);
        let total = &money(&Amount::parse("3703.50", "EUR").unwrap(), locale);
        if locale == "en" {
            assert_eq!((one.as_str(), total.as_str()), ("€1,234.50", "€3,703.50"));
        }
        let mut invoices = Vec::new();
        for (id, amount) in [("INV-1", "1234.50"), ("INV-2", "1234.50"), ("INV-3", "1234.50")] {
            let mut invoice = invoice_for(locale, None);
            invoice.key.invoice_id = id.into();
            invoice.amount = Amount::parse(amount, "EUR").unwrap();
            invoices.push(invoice);
        }
        let refs: Vec<&Invoice> = invoices.iter().collect();
        let message = Message {
            template: COMBINED_TEMPLATE.into(),
            step: None,
        };
        let today = refs[0].due_date;
        let mut view = View::new(refs[0], "acme", &biller, "https://pay.example/p/T", &message, today);
        let locale_of_view = view.locale;
        add_combined(&mut view.data, &refs, locale_of_view).unwrap();
        let parts = t.render_message(&view, MESSAGE_PARTS).unwrap();
        for (part, text) in MESSAGE_PARTS.iter().zip(&parts) {
            assert!(text.contains(total.as_str()), "{locale} {part}: {text}");
            if *part != "email/subject" {
                for id in ["INV-1", "INV-2", "INV-3"] {
                    assert!(text.contains(id), "{locale} {part} lists {id}: {text}");
                }
                assert!(text.contains(one.as_str()), "{locale} {part}: {text}");
            } else {
                assert!(text.contains(count), "{locale} {part}: {text}");
            }
        }
    }
}

#[test]
fn invoices_of_two_currencies_have_no_total() {
    let a = invoice_for("en", None);
    let mut b = invoice_for("en", None);
    b.amount = Amount::parse("10", "USD").unwrap();
    assert!(total_of(&[&a, &b]).unwrap_err().contains("cannot be added up"));
    let total = total_of(&[&a, &a]).unwrap();
    assert_eq!((total.minor, total.text.as_str()), (2 * a.amount.minor, "2469.00"));
}

/// A page's data for an invoice due 2026-12-01 of a customer in `locale`,
/// as of `today`, from a biller with a support line, a brand colour and
/// a logo.
fn page_data(locale: &str, today: &str) -> serde_json::Value {
    let invoice = invoice_for(locale, None);
    let biller = BillerConfig {
        name: "ACME Energy".into(),
        checkout_url: "https://checkout.acme.example/c?t={token}".into(),
        support: Some("+52 55 1234 5678".into()),
        brand_color: Some("#ffd60a".into()),
        logo: Some(crate::settings::Logo {
            bytes: b"<svg/>".to_vec().into(),
            content_type: "image/svg+xml",
            version: "abc123".into(),
        }),
        ..BillerConfig::default()
    };
    let first = Message::first_request();
    let mut data = View::new(&invoice, "acme", &biller, "https://pay.example/p/T", &first, day(today)).data;
    data["status"] = json!("open");
    data["checkout_path"] = json!("/p/T/pay");
    data
}

#[test]
fn the_pay_page_names_the_checkouts_host_and_marks_a_passed_due_date_overdue_in_each_language() {
    let t = Templates::load(None).unwrap();
    let cases = [
        (
            "en",
            "Overdue",
            "The button takes you to <strong>checkout.acme.example</strong>",
        ),
        (
            "es-ES",
            "Vencida",
            "El botón lo lleva a <strong>checkout.acme.example</strong>",
        ),
        (
            "pt-BR",
            "Vencida",
            "O botão leva você a <strong>checkout.acme.example</strong>",
        ),
        (
            "de-DE",
            "Überfällig",
            "Die Schaltfläche führt Sie zu <strong>checkout.acme.example</strong>",
        ),
    ];
    for (locale, overdue, leads) in cases {
        let late = t.render("paypage.html", &page_data(locale, "2026-12-02")).unwrap();
        assert!(
            late.contains(&format!("<span class=\"overdue\">{overdue}</span>")),
            "{locale}: {late}"
        );
        assert!(late.contains(leads), "{locale}: {late}");
        assert!(late.contains("+52 55 1234 5678"), "the support line: {late}");
        let on_time = t.render("paypage.html", &page_data(locale, "2026-12-01")).unwrap();
        assert!(
            !on_time.contains("class=\"overdue\""),
            "{locale} on its due date: {on_time}"
        );
        let mut paid = page_data(locale, "2026-12-09");
        paid["status"] = json!("paid");
        let paid = t.render("paypage.html", &paid).unwrap();
        assert!(
            !paid.contains("class=\"overdue\""),
            "{locale}: a paid invoice is not overdue: {paid}"
        );
    }
}

#[test]
fn pages_show_the_billers_logo_and_colour_with_text_that_reads_on_it() {
    let t = Templates::load(None).unwrap();
    let page = t.render("paypage.html", &page_data("en", "2026-11-20")).unwrap();
    assert!(
        page.contains("<img src=\"/brand/acme/logo?v&#x3D;abc123\" alt=\"\">"),
        "{page}"
    );
    assert!(
        page.contains("background: #ffd60a; color: #1f2933;"),
        "a yellow button has dark text: {page}"
    );
    assert_eq!(text_color_on("#0b6bcb"), "#ffffff");
    assert_eq!(text_color_on("#ffd60a"), "#1f2933");
    assert_eq!(text_color_on("#000000"), "#ffffff");
    assert_eq!(text_color_on("#ffffff"), "#1f2933");
}

#[test]
fn the_gone_page_says_why_and_what_to_do_in_the_customers_language_naming_the_biller() {
    let t = Templates::load(None).unwrap();
    let cases = [
        (
            "es-MX",
            "expired",
            "Este enlace de pago venció.",
            "pida un enlace nuevo",
        ),
        (
            "es-MX",
            "cancelled",
            "ACME Energy canceló esta solicitud de pago.",
            "No hay nada que pagar",
        ),
        (
            "es-MX",
            "replaced",
            "fue reemplazada por una más reciente",
            "Use el mensaje más reciente",
        ),
        ("en", "expired", "This payment link has expired.", "ask for a new link"),
        (
            "pt-BR",
            "cancelled",
            "ACME Energy cancelou esta solicitação",
            "Não há nada a pagar",
        ),
        (
            "de-DE",
            "replaced",
            "durch eine neuere ersetzt",
            "Verwenden Sie die neueste Nachricht",
        ),
    ];
    for (locale, reason, why, next) in cases {
        let mut data = page_data(locale, "2026-11-20");
        data["reason"] = json!(reason);
        let page = t.render("gone.html", &data).unwrap();
        let lang = locale.split('-').next().unwrap();
        assert!(page.contains(&format!("<html lang=\"{lang}\">")), "{page}");
        assert!(page.contains(why) && page.contains(next), "{locale} {reason}: {page}");
        assert!(
            page.contains("<h1>ACME Energy</h1>") && page.contains("+52 55 1234 5678"),
            "{page}"
        );
    }
}

#[test]
fn a_notice_without_an_invoice_is_neutral_and_in_the_language_asked_for() {
    let t = Templates::load(None).unwrap();
    for (chain, lang, title) in [
        (json!(["de-DE", "de"]), "de", "Link nicht gefunden"),
        (json!(["fr", "es"]), "es", "Enlace no encontrado"),
        (json!(["fr"]), "en", "Link not found"),
    ] {
        let data = json!({"notice": "not_found", "biller": null, "locale": "en", "locale_chain": chain});
        let page = t.render("notice.html", &data).unwrap();
        assert!(page.contains(&format!("<html lang=\"{lang}\">")), "{page}");
        assert!(page.contains(&format!("<h2>{title}</h2>")), "{page}");
        assert!(
            !page.contains("class=\"brand\"") && !page.contains("class=\"support\""),
            "{page}"
        );
    }
    for notice in NOTICES {
        let data = json!({"notice": notice, "biller": null, "locale_chain": ["pt"]});
        let page = t.render("notice.html", &data).unwrap();
        assert_eq!(page.matches("<h2>").count(), 1, "{notice}: exactly one notice: {page}");
    }
}

#[test]
fn pages_are_overridden_file_by_file_in_the_templates_dir() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "es/gone.html.hbs",
        "<html lang=\"{{lang}}\">propio {{reason}}</html>",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut data = page_data("es-MX", "2026-11-20");
    data["reason"] = json!("expired");
    assert_eq!(
        t.render("gone.html", &data).unwrap(),
        "<html lang=\"es\">propio expired</html>"
    );
    let mut english = page_data("en", "2026-11-20");
    english["reason"] = json!("expired");
    assert!(t
        .render("gone.html", &english)
        .unwrap()
        .contains("This payment link has expired."));
    assert!(t.check_with_sample().is_empty(), "{:?}", t.check_with_sample());
}

#[test]
fn every_built_in_email_has_a_button_outlook_draws_and_a_link_that_wraps() {
    let t = Templates::load(None).unwrap();
    let mut data = page_data("en", "2026-11-20");
    let second = invoice_for("en", None);
    add_list(&mut data, &[&invoice_for("en", None), &second], "en").unwrap();
    for locale in BUILT_IN_LOCALES {
        data["locale_chain"] = json!([locale]);
        for message in BUILT_IN_MESSAGES {
            data["template"] = json!(message);
            data["days_to_due"] = json!(3);
            data["days_overdue"] = json!(0);
            let name = part_name(message, "email/body.html");
            let html = t.render(&name, &data).unwrap();
            assert!(
                html.contains("<table role=\"presentation\"")
                    && html.contains("<td bgcolor=\"#ffd60a\"")
                    && html.contains(
                        "><a href=\"https://pay.example/p/T\" style=\"display: inline-block; color: #1f2933;"
                    ),
                "{locale} {message}: the Pay button is a table cell of the brand colour: {html}"
            );
            assert!(
                html.contains("word-break: break-all; overflow-wrap: anywhere;\">https://pay.example/p/T</a>"),
                "{locale} {message}: the written-out link wraps: {html}"
            );
        }
    }
}
