use super::*;

use serde_json::{json, Value};
use time::macros::date;

/// The billers the tests' configuration knows.
fn known(biller: &str) -> bool {
    biller == "acme"
}

/// The documented example invoice (docs/asyncapi.yaml, examples/invoice.json), verbatim.
fn contract_example() -> Value {
    json!({
        "kind": "payment_request",
        "invoice_id": "INV-2026-000123",
        "biller_id": "acme",
        "revision": 1,
        "source": "erp",
        "amount": "1234.50",
        "currency": "MXN",
        "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {
            "id": "C-9981",
            "name": "María López",
            "email": "maria@example.com",
            "phone": "+5215512345678",
            "whatsapp": "+5215512345678",
            "messenger_psid": "6543210987654321",
            "locale": "es-MX",
            "timezone": "America/Mexico_City",
            "preferred_channels": ["whatsapp", "email"],
            "opted_out": ["sms"]
        },
        "channels": null,
        "metadata": {"erp_doc": "4711"}
    })
}

/// Sets `path` (dot-separated, e.g. `customer.email`) to `value` in `msg`;
/// `None` removes the key.
fn set(mut msg: Value, path: &str, value: Option<Value>) -> Value {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("a non-empty path");
    let mut node = &mut msg;
    for p in parts {
        node = node.get_mut(p).unwrap_or_else(|| panic!("no {p} in the message"));
    }
    let object = node.as_object_mut().expect("an object");
    match value {
        Some(v) => {
            object.insert(last.to_owned(), v);
        }
        None => {
            object.remove(last);
        }
    }
    msg
}

/// Edits to the contract example: a dotted path and a new value, or None to remove it.
type Edits = Vec<(&'static str, Option<Value>)>;

fn edited(edits: Edits) -> Value {
    edits
        .into_iter()
        .fold(contract_example(), |msg, (field, value)| set(msg, field, value))
}

fn parse_value(msg: &Value) -> Result<Message, Rejected> {
    parse(msg.to_string().as_bytes(), known)
}

fn parse_invoice(msg: &Value) -> Invoice {
    match parse_value(msg) {
        Ok(Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("expected a payment request, got {other:?}"),
    }
}

fn rejection(msg: &Value) -> Rejected {
    match parse_value(msg) {
        Err(r) => r,
        Ok(m) => panic!("expected a rejection, got {m:?}"),
    }
}

#[test]
fn the_contract_example_parses_into_typed_values() {
    let invoice = parse_invoice(&contract_example());

    assert_eq!(
        invoice.key,
        InvoiceKey {
            biller_id: "acme".into(),
            invoice_id: "INV-2026-000123".into(),
            revision: 1,
        }
    );
    assert_eq!(invoice.source.as_deref(), Some("erp"));
    assert_eq!(invoice.amount.minor, 123_450);
    assert_eq!(invoice.amount.currency, "MXN");
    assert_eq!(
        invoice.amount.text, "1234.50",
        "the biller's own decimal string is kept"
    );
    assert_eq!(invoice.due_date, date!(2026 - 12 - 01));
    assert_eq!(invoice.description.as_deref(), Some("Electricity, November 2026"));
    assert_eq!(invoice.channels, None, "channels: null lets routing decide");
    assert_eq!(invoice.metadata, Some(json!({"erp_doc": "4711"})));

    let c = &invoice.customer;
    assert_eq!(c.id.as_deref(), Some("C-9981"));
    assert_eq!(c.name, "María López");
    assert_eq!(c.contacts.email.as_ref().map(Email::as_str), Some("maria@example.com"));
    assert_eq!(c.contacts.phone.as_ref().map(Phone::as_str), Some("+5215512345678"));
    assert_eq!(c.contacts.whatsapp.as_ref().map(Phone::as_str), Some("+5215512345678"));
    assert_eq!(
        c.contacts.phone.as_ref().and_then(Phone::country),
        Some("MX"),
        "the country comes from the number"
    );
    assert_eq!(
        c.contacts.messenger_psid.as_ref().map(Psid::as_str),
        Some("6543210987654321")
    );
    assert_eq!(c.locale.as_deref(), Some("es-MX"));
    assert_eq!(c.timezone.as_deref(), Some("America/Mexico_City"));
    assert_eq!(c.preferred_channels, [ChannelName::Whatsapp, ChannelName::Email]);
    assert_eq!(c.opted_out, [ChannelName::Sms]);
}

#[test]
fn optional_fields_have_their_defaults_when_left_out() {
    let msg = json!({
        "invoice_id": "INV-1",
        "biller_id": "acme",
        "amount": "10",
        "currency": "EUR",
        "due_date": "2026-12-01",
        "customer": {"name": "Ana", "email": "ana@example.com"}
    });
    let invoice = parse_invoice(&msg);
    assert_eq!(invoice.key.revision, 1, "revision defaults to 1");
    assert_eq!(invoice.amount.minor, 1000);
    assert_eq!(invoice.source, None);
    assert_eq!(invoice.channels, None);
    assert_eq!(invoice.metadata, None);
    assert!(invoice.customer.preferred_channels.is_empty());
    assert!(invoice.customer.opted_out.is_empty());
    assert!(invoice.customer.contacts.phone.is_none());
}

#[test]
fn valid_variations_are_accepted() {
    let cases: &[(&str, &str, Value)] = &[
        ("amount as a JSON number", "amount", json!(1234.5)),
        ("amount without decimals", "amount", json!("1234")),
        ("a higher revision", "revision", json!(7)),
        ("an explicit channel order", "channels", json!(["sms", "email"])),
        (
            "only an email",
            "customer",
            json!({"name": "Ana", "email": "ana@example.com"}),
        ),
        (
            "only a phone",
            "customer",
            json!({"name": "Ana", "phone": "+5215512345678"}),
        ),
        (
            "only a whatsapp number",
            "customer",
            json!({"name": "Ana", "whatsapp": "+34612345678"}),
        ),
        (
            "only a PSID",
            "customer",
            json!({"name": "Ana", "messenger_psid": "12345"}),
        ),
        ("a language-only locale", "customer.locale", json!("es")),
    ];
    for (what, field, value) in cases {
        let msg = set(contract_example(), field, Some(value.clone()));
        assert!(
            matches!(parse_value(&msg), Ok(Message::PaymentRequest(_))),
            "{what}: {:?}",
            parse_value(&msg)
        );
    }
}

#[test]
fn explicit_channels_are_kept_in_the_billers_order() {
    let msg = set(
        contract_example(),
        "channels",
        Some(json!(["sms", "whatsapp", "email"])),
    );
    assert_eq!(
        parse_invoice(&msg).channels,
        Some(vec![ChannelName::Sms, ChannelName::Whatsapp, ChannelName::Email])
    );
}

#[test]
fn amounts_are_exact_in_the_currency_minor_unit() {
    let cases = [
        ("1234.50", "MXN", 123_450),
        ("0.01", "EUR", 1),
        ("1500", "JPY", 1500),
        ("1.234", "KWD", 1234),
    ];
    for (amount, currency, minor) in cases {
        let msg = set(contract_example(), "amount", Some(json!(amount)));
        let msg = set(msg, "currency", Some(json!(currency)));
        let invoice = parse_invoice(&msg);
        assert_eq!(invoice.amount.minor, minor, "{amount} {currency}");
        assert_eq!(invoice.amount.currency, currency);
    }
}

#[test]
fn paid_and_cancelled_kinds_close_the_invoice() {
    let cases = [
        (
            "invoice_paid",
            Message::Paid {
                biller_id: "acme".into(),
                invoice_id: "INV-7".into(),
            },
        ),
        (
            "invoice_cancelled",
            Message::Cancelled {
                biller_id: "acme".into(),
                invoice_id: "INV-7".into(),
            },
        ),
    ];
    for (kind, expected) in cases {
        let msg = json!({"kind": kind, "biller_id": "acme", "invoice_id": "INV-7"});
        let got = parse_value(&msg).unwrap_or_else(|r| panic!("{kind} rejected: {r}"));
        assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{kind}");
    }
}

#[test]
fn paid_and_cancelled_kinds_still_need_a_known_biller_and_an_invoice_id() {
    for kind in ["invoice_paid", "invoice_cancelled"] {
        let r = rejection(&json!({"kind": kind, "biller_id": "acme"}));
        assert!(r.problems.iter().any(|p| p.contains("invoice_id")), "{kind}: {r}");

        let r = rejection(&json!({"kind": kind, "biller_id": "globex", "invoice_id": "INV-7"}));
        assert!(r.problems.iter().any(|p| p.contains("globex")), "{kind}: {r}");
    }
}

/// Each rejection class: what, the edits to the contract example (a value, or
/// None to remove the key), and words the one reason must contain.
#[test]
fn each_broken_rule_is_rejected_with_a_reason_naming_the_field() {
    let long_id = json!("X".repeat(129));
    let cases: Vec<(&str, Edits, &[&str])> = vec![
        (
            "missing invoice_id",
            vec![("invoice_id", None)],
            &["invoice_id", "missing"],
        ),
        (
            "blank invoice_id",
            vec![("invoice_id", Some(json!("  ")))],
            &["invoice_id", "empty"],
        ),
        (
            "invoice_id of 129 chars",
            vec![("invoice_id", Some(long_id))],
            &["invoice_id", "128"],
        ),
        (
            "missing biller_id",
            vec![("biller_id", None)],
            &["biller_id", "missing"],
        ),
        (
            "unknown biller",
            vec![("biller_id", Some(json!("globex")))],
            &["biller_id", "globex"],
        ),
        ("missing amount", vec![("amount", None)], &["amount", "missing"]),
        (
            "1.5 JPY",
            vec![("amount", Some(json!("1.5"))), ("currency", Some(json!("JPY")))],
            &["amount", "JPY allows 0"],
        ),
        (
            "1.234 EUR",
            vec![("amount", Some(json!("1.234"))), ("currency", Some(json!("EUR")))],
            &["amount", "3 decimals"],
        ),
        (
            "negative amount",
            vec![("amount", Some(json!("-5.00")))],
            &["amount", "-5.00"],
        ),
        (
            "zero amount",
            vec![("amount", Some(json!("0.00")))],
            &["amount", "zero"],
        ),
        (
            "amount with a comma",
            vec![("amount", Some(json!("1234,50")))],
            &["amount", "1234,50"],
        ),
        ("missing currency", vec![("currency", None)], &["currency", "missing"]),
        (
            "bad currency code",
            vec![("currency", Some(json!("PESO")))],
            &["currency", "ISO 4217"],
        ),
        (
            "unassigned currency code",
            vec![("currency", Some(json!("XYZ")))],
            &["currency", "ISO 4217"],
        ),
        ("missing due_date", vec![("due_date", None)], &["due_date", "missing"]),
        (
            "day-first date",
            vec![("due_date", Some(json!("01/12/2026")))],
            &["due_date", "YYYY-MM-DD"],
        ),
        (
            "impossible date",
            vec![("due_date", Some(json!("2026-02-30")))],
            &["due_date", "2026-02-30"],
        ),
        (
            "date with a time",
            vec![("due_date", Some(json!("2026-12-01T00:00:00Z")))],
            &["due_date"],
        ),
        ("missing customer", vec![("customer", None)], &["customer", "missing"]),
        (
            "customer not an object",
            vec![("customer", Some(json!("Ana")))],
            &["customer", "object"],
        ),
        (
            "missing customer.name",
            vec![("customer.name", None)],
            &["customer.name", "missing"],
        ),
        (
            "bad email",
            vec![("customer.email", Some(json!("maria-at-example")))],
            &["customer.email", "email"],
        ),
        (
            "phone without +",
            vec![("customer.phone", Some(json!("5215512345678")))],
            &["customer.phone", "+"],
        ),
        (
            "phone with letters",
            vec![("customer.phone", Some(json!("+52155CALLME")))],
            &["customer.phone", "E.164"],
        ),
        (
            "phone too short",
            vec![("customer.phone", Some(json!("+5215")))],
            &["customer.phone", "E.164"],
        ),
        (
            "phone too long",
            vec![("customer.phone", Some(json!("+5215512345678901")))],
            &["customer.phone", "E.164"],
        ),
        (
            "whatsapp without +",
            vec![("customer.whatsapp", Some(json!("5215512345678")))],
            &["customer.whatsapp", "+"],
        ),
        (
            "PSID with letters",
            vec![("customer.messenger_psid", Some(json!("abc123456")))],
            &["customer.messenger_psid"],
        ),
        (
            "PSID too short",
            vec![("customer.messenger_psid", Some(json!("1234")))],
            &["customer.messenger_psid"],
        ),
        (
            "bad locale",
            vec![("customer.locale", Some(json!("Spanish please")))],
            &["customer.locale"],
        ),
        (
            "unknown channel",
            vec![("channels", Some(json!(["email", "fax"])))],
            &["channels", "fax"],
        ),
        (
            "empty channels",
            vec![("channels", Some(json!([])))],
            &["channels", "empty"],
        ),
        (
            "channels not a list",
            vec![("channels", Some(json!("email")))],
            &["channels", "list"],
        ),
        (
            "unknown preferred channel",
            vec![("customer.preferred_channels", Some(json!(["pigeon"])))],
            &["customer.preferred_channels", "pigeon"],
        ),
        (
            "unknown opted_out channel",
            vec![("customer.opted_out", Some(json!(["telex"])))],
            &["customer.opted_out", "telex"],
        ),
        ("negative revision", vec![("revision", Some(json!(-1)))], &["revision"]),
        (
            "fractional revision",
            vec![("revision", Some(json!(1.5)))],
            &["revision"],
        ),
        (
            "unknown kind",
            vec![("kind", Some(json!("payment_reminder")))],
            &["kind", "payment_reminder"],
        ),
    ];
    for (what, edits, words) in cases {
        let r = rejection(&edited(edits));
        assert_eq!(
            r.problems.len(),
            1,
            "{what}: expected exactly one problem, got {:?}",
            r.problems
        );
        for word in words {
            assert!(
                r.problems[0].contains(word),
                "{what}: {:?} does not mention {word:?}",
                r.problems
            );
        }
    }
}

/// Regression (this was a bug): `Problems::req_str` pushes "must be a string" (from `opt_str`) and then
/// also "is missing" for a value that is present but of the wrong type.
#[test]

fn a_required_field_of_the_wrong_type_is_not_also_called_missing() {
    let cases = [
        ("invoice_id", json!(123)),
        ("biller_id", json!(["acme"])),
        ("currency", json!(484)),
        ("due_date", json!(20261201)),
        ("customer.name", json!({"first": "María"})),
    ];
    for (field, value) in cases {
        let r = rejection(&set(contract_example(), field, Some(value)));
        assert!(
            r.problems.contains(&format!("{field} must be a string")),
            "{field}: {:?}",
            r.problems
        );
        assert!(
            !r.problems.contains(&format!("{field} is missing")),
            "{field} is there, only of the wrong type: {:?}",
            r.problems
        );
    }
}

#[test]
fn a_customer_without_any_contact_is_rejected() {
    let msg = set(
        contract_example(),
        "customer",
        Some(json!({"name": "María López", "locale": "es-MX"})),
    );
    let r = rejection(&msg);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    let p = &r.problems[0];
    for word in ["contact", "email", "phone", "whatsapp", "messenger_psid"] {
        assert!(p.contains(word), "{p:?} does not mention {word}");
    }
}

#[test]
fn an_invalid_contact_is_reported_as_itself_not_as_no_contact() {
    let msg = set(
        contract_example(),
        "customer",
        Some(json!({"name": "María López", "email": "not-an-email"})),
    );
    let r = rejection(&msg);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].starts_with("customer.email"), "{:?}", r.problems);
}

/// Regression (this was a bug): `parse_customer` adds "customer has no contact" only when no other
/// `customer.*` problem was reported (meant for an invalid contact), so any
/// customer problem, such as a missing name, hides the missing contact.
#[test]

fn a_customer_without_name_and_without_contact_gets_both_reasons() {
    let msg = set(contract_example(), "customer", Some(json!({"locale": "es-MX"})));
    let r = rejection(&msg);
    assert!(
        r.problems.iter().any(|p| p.contains("customer.name")),
        "{:?}",
        r.problems
    );
    assert!(r.problems.iter().any(|p| p.contains("no contact")), "{:?}", r.problems);
}

#[test]
fn bodies_that_are_not_a_json_object_are_rejected() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("truncated JSON", br#"{"invoice_id": "INV-1""#, "not valid JSON"),
        ("not JSON at all", b"invoice INV-1, 1234.50 MXN", "not valid JSON"),
        ("empty body", b"", "not valid JSON"),
        ("invalid UTF-8", b"{\"invoice_id\": \"\xff\"}", "not valid JSON"),
        ("a JSON array", br#"[{"invoice_id": "INV-1"}]"#, "JSON object"),
        ("a JSON string", br#""INV-1""#, "JSON object"),
        ("JSON null", b"null", "JSON object"),
    ];
    for (what, body, words) in cases {
        let r = parse(body, known).expect_err(what);
        assert_eq!(r.problems.len(), 1, "{what}: {:?}", r.problems);
        assert!(r.problems[0].contains(words), "{what}: {:?}", r.problems);
        assert_eq!((r.biller_id, r.invoice_id), (None, None), "{what}");
    }
}

/// The contract example padded (in its description) to exactly `len` bytes of JSON.
fn example_body_of(len: usize) -> Vec<u8> {
    let msg = contract_example();
    let unpadded = msg.to_string().len() - msg["description"].as_str().unwrap().len();
    let msg = set(msg, "description", Some(json!("x".repeat(len - unpadded))));
    let body = msg.to_string().into_bytes();
    assert_eq!(body.len(), len);
    body
}

#[test]
fn bodies_over_64_kib_are_rejected_before_parsing() {
    // Valid JSON, just too big: the size is what is wrong.
    for len in [MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES] {
        let r = parse(&example_body_of(len), known).unwrap_err();
        assert_eq!(r.problems.len(), 1, "{len}: {:?}", r.problems);
        assert!(r.problems[0].contains("body"), "{:?}", r.problems);
        assert!(r.problems[0].contains(&len.to_string()), "{:?}", r.problems);
        assert!(r.problems[0].contains(&MAX_BODY_BYTES.to_string()), "{:?}", r.problems);
    }
}

#[test]
fn a_body_of_exactly_64_kib_is_accepted() {
    assert_eq!(MAX_BODY_BYTES, 65_536);
    assert!(parse(&example_body_of(MAX_BODY_BYTES), known).is_ok());
}

#[test]
fn every_problem_in_one_message_is_reported() {
    let msg = json!({
        "invoice_id": "INV-2026-000123",
        "biller_id": "acme",
        "revision": 3,
        "amount": "12.345",
        "currency": "MXN",
        "due_date": "tomorrow",
        "customer": {
            "name": "María López",
            "email": "maria",
            "phone": "5512345678",
            "messenger_psid": "psid"
        },
        "channels": ["email", "carrier-pigeon"]
    });
    let r = rejection(&msg);
    let expected = [
        "amount",
        "due_date",
        "customer.email",
        "customer.phone",
        "customer.messenger_psid",
        "channels",
    ];
    for field in expected {
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with(field) || p.contains(&format!("{field} "))),
            "{field} not reported in {:?}",
            r.problems
        );
    }
    assert_eq!(r.problems.len(), expected.len(), "{:?}", r.problems);
    assert_eq!(r.biller_id.as_deref(), Some("acme"));
    assert_eq!(r.invoice_id.as_deref(), Some("INV-2026-000123"));
    assert_eq!(r.revision, Some(3));
    assert_eq!(r.to_string(), r.problems.join("; "), "Display joins every problem");
}

#[test]
fn missing_required_fields_are_all_reported_together() {
    let r = rejection(&json!({"kind": "payment_request"}));
    for field in ["biller_id", "invoice_id", "currency", "amount", "due_date", "customer"] {
        assert!(
            r.problems.iter().any(|p| p == &format!("{field} is missing")),
            "{field} not reported in {:?}",
            r.problems
        );
    }
}

#[test]
fn a_rejection_carries_the_ids_that_could_be_read() {
    const ID: Option<&str> = Some("INV-2026-000123");
    type Ids = (Option<&'static str>, Option<&'static str>, Option<i64>);
    let cases: Vec<(&str, Edits, Ids)> = vec![
        (
            "bad amount",
            vec![("amount", Some(json!("abc")))],
            (Some("acme"), ID, Some(1)),
        ),
        (
            "unknown biller",
            vec![("biller_id", Some(json!("globex")))],
            (Some("globex"), ID, Some(1)),
        ),
        (
            "explicit revision",
            vec![("revision", Some(json!(4))), ("currency", Some(json!("ZZZ")))],
            (Some("acme"), ID, Some(4)),
        ),
        (
            "no invoice_id",
            vec![("invoice_id", None), ("revision", Some(json!(2)))],
            (Some("acme"), None, Some(2)),
        ),
        (
            "no biller_id",
            vec![("biller_id", None), ("due_date", Some(json!("soon")))],
            (None, ID, Some(1)),
        ),
        (
            "bad revision",
            vec![("revision", Some(json!("two")))],
            (Some("acme"), ID, None),
        ),
        (
            "unknown kind",
            vec![("kind", Some(json!("refund")))],
            (Some("acme"), ID, Some(1)),
        ),
    ];
    for (what, edits, (biller, invoice, revision)) in cases {
        let r = rejection(&edited(edits));
        assert_eq!(r.biller_id.as_deref(), biller, "{what}");
        assert_eq!(r.invoice_id.as_deref(), invoice, "{what}");
        assert_eq!(r.revision, revision, "{what}");
    }
}

#[test]
fn debug_output_of_an_invoice_masks_contacts() {
    let invoice = parse_invoice(&contract_example());
    let debug = format!("{invoice:?}");
    let pretty = format!("{invoice:#?}");
    for clear in [
        "maria@example.com",
        "+5215512345678",
        "5215512345678",
        "6543210987654321",
        "María",
    ] {
        assert!(!debug.contains(clear), "{clear} in {debug}");
        assert!(!pretty.contains(clear), "{clear} in {pretty}");
    }
    // The rest is still there, so the output remains useful.
    assert!(debug.contains("INV-2026-000123"), "{debug}");
    // The masked form shows only the ends.
    assert!(debug.contains("\"m***m\""), "{debug}");
    assert!(debug.contains("\"+***8\""), "{debug}");
}

/// Regression (this was a bug): `RawMessage::kind` is `Option<String>`, so a non-string kind fails the
/// whole deserialization: the one reason ("body is not an invoice object:
/// invalid type: integer `5`, expected a string") does not name `kind`, and
/// the readable biller_id / invoice_id are not carried in `Rejected`.
#[test]

fn a_kind_of_the_wrong_type_is_named_and_the_ids_are_kept() {
    let r = rejection(&set(contract_example(), "kind", Some(json!(5))));
    assert!(r.problems.iter().any(|p| p.contains("kind")), "{:?}", r.problems);
    assert_eq!(r.biller_id.as_deref(), Some("acme"));
    assert_eq!(r.invoice_id.as_deref(), Some("INV-2026-000123"));
}

/// A key given twice was once read as its last value; readers disagree on
/// which one counts, so now it is refused, naming the key.
#[test]
fn a_key_given_twice_is_refused_with_its_name() {
    let text = contract_example().to_string();
    let body = format!("{{\"invoice_id\": \"EARLIER\", {}", &text[1..]);
    let r = parse(body.as_bytes(), known).expect_err("a repeated invoice_id");
    assert!(
        r.problems[0].contains("\"invoice_id\" appears twice"),
        "{:?}",
        r.problems
    );
}

/// Found by the byte-damage fuzz test: invalid UTF-8 in the value of a key
/// payrelay ignores (here a misspelt `kind`) was skipped unread, and the
/// body accepted.
#[test]
fn a_body_that_is_not_utf8_anywhere_is_refused() {
    let text = contract_example().to_string();
    let mut body = format!("{{\"knd\": \"pay\u{1}\", {}", &text[1..]).into_bytes();
    let at = body.iter().position(|b| *b == 1).unwrap();
    body[at] = 0x80;
    match parse(&body, known) {
        Err(r) => assert!(r.problems[0].contains("not UTF-8"), "{:?}", r.problems),
        Ok(m) => panic!("expected a rejection, got {m:?}"),
    }
}

#[test]
fn a_key_given_twice_is_refused_at_any_depth() {
    let example = contract_example().to_string();
    let cases = [
        (
            "amount",
            example.replacen(r#""amount":"1234.50""#, r#""amount":"1.00","amount":"9999.00""#, 1),
        ),
        (
            "email",
            example.replacen(
                r#""email":"maria@example.com""#,
                r#""email":"maria@example.com","email":"eve@example.com""#,
                1,
            ),
        ),
        (
            "erp_doc",
            example.replacen(r#""erp_doc":"4711""#, r#""erp_doc":"4711","erp_doc":"4712""#, 1),
        ),
    ];
    for (key, body) in cases {
        assert_ne!(body, example, "the {key} case edits the example");
        let r = parse(body.as_bytes(), known).expect_err(key);
        assert_eq!(r.problems.len(), 1, "{key}: {:?}", r.problems);
        assert!(
            r.problems[0].contains(&format!("the key \"{key}\" appears twice")),
            "{key}: {:?}",
            r.problems
        );
    }
    // The same key in different objects is no repeat.
    let nested = set(contract_example(), "metadata", Some(json!({"name": {"name": 1}})));
    assert!(parse_value(&nested).is_ok());
}

#[test]
fn leading_zeros_in_the_amount_do_not_reach_the_invoice() {
    let invoice = parse_invoice(&set(contract_example(), "amount", Some(json!("0001234.50"))));
    assert_eq!(
        (invoice.amount.text.as_str(), invoice.amount.minor),
        ("1234.50", 123450)
    );
}

#[test]
fn a_currency_that_is_not_money_is_refused() {
    for code in ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR"] {
        let r = rejection(&set(contract_example(), "currency", Some(json!(code))));
        assert!(
            r.problems.iter().any(|p| p.contains("not money")),
            "{code}: {:?}",
            r.problems
        );
    }
}
