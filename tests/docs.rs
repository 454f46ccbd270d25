//! `docs/` is the interface billers and operators build on, so it must not
//! drift from the code: the committed schemas are what the code generates,
//! every example in the docs validates (and, for invoices, is accepted by
//! payrelay's own parser), and every config example loads. Every invoice
//! and event the other tests produce is checked against the same schemas
//! by the harness (`tests/common/schemas.rs`).
//!
//! After changing a type billers see, regenerate the schemas with
//! `PAYRELAY_BLESS=1 cargo test --test docs` and commit them.

mod common;

use std::path::Path;

use serde_json::{json, Value};

use common::schemas::{committed, repo, schemas, violations};
use payrelay::config::Config;

fn is_biller(b: &str) -> bool {
    b == "acme"
}

fn accepted(value: &Value) -> bool {
    payrelay::invoice::parse(value.to_string().as_bytes(), is_biller).is_ok()
}

#[test]
fn the_committed_schemas_are_the_ones_the_code_generates() {
    let bless = std::env::var_os("PAYRELAY_BLESS").is_some();
    let dir = repo().join(payrelay::schema::DIR);
    let mut stale = Vec::new();
    for (file, generated) in payrelay::schema::all() {
        let path = dir.join(file);
        let current = std::fs::read_to_string(&path).ok();
        let wanted = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if current.as_deref() != Some(wanted.as_str()) {
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &wanted).unwrap();
            } else {
                stale.push(file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the code generates: run `PAYRELAY_BLESS=1 cargo test --test docs` and commit"
    );
}

#[test]
fn every_published_schema_is_valid_json_schema_2020_12() {
    for (file, _) in payrelay::schema::all() {
        let schema = committed(file);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{file} is not a valid schema: {e}");
        }
    }
}

fn full_invoice() -> Value {
    let text = std::fs::read_to_string(repo().join("examples/invoice.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Sets a dotted path (`customer.email`) in a copy of `base`; `None` removes it.
fn with(base: &Value, path: &str, value: Option<Value>) -> Value {
    let mut copy = base.clone();
    let (parents, last) = match path.rsplit_once('.') {
        Some((p, l)) => (p.split('.').collect::<Vec<_>>(), l),
        None => (vec![], path),
    };
    let mut node = &mut copy;
    for p in parents {
        node = &mut node[p];
    }
    match value {
        Some(v) => node[last] = v,
        None => {
            node.as_object_mut().unwrap().remove(last);
        }
    }
    copy
}

#[test]
fn the_invoice_schema_accepts_what_payrelay_accepts() {
    let full = full_invoice();
    let minimal = json!({
        "invoice_id": "INV-1", "biller_id": "acme", "amount": "10", "currency": "EUR",
        "due_date": "2026-12-01", "customer": {"name": "A", "phone": "+4915112345678"}
    });
    let cases = [
        full.clone(),
        minimal.clone(),
        with(&minimal, "amount", Some(json!(10.5))),
        with(&minimal, "revision", Some(json!(0))),
        with(&minimal, "kind", Some(Value::Null)),
        with(&minimal, "channels", Some(json!(["sms", "email"]))),
        with(&minimal, "metadata", Some(json!([1, "x"]))),
        with(&minimal, "unknown_key", Some(json!("ignored"))),
        with(&full, "customer.messenger_psid", Some(json!("6543210987654321"))),
        with(&full, "customer.email", None),
        with(&full, "customer.locale", Some(json!("pt_BR"))),
        json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-1"}),
        json!({"kind": "invoice_cancelled", "biller_id": "acme", "invoice_id": "INV-1", "revision": 3}),
        json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-1", "amount": "not checked"}),
    ];
    for case in &cases {
        assert!(accepted(case), "payrelay refuses a case meant to be valid: {case}");
        let broken = violations(&schemas().invoice, case);
        assert!(broken.is_empty(), "{broken:?}\n{case}");
    }
}

#[test]
fn the_invoice_schema_refuses_what_payrelay_refuses_for_a_reason_it_can_express() {
    let full = full_invoice();
    let cases = [
        with(&full, "invoice_id", None),
        with(&full, "invoice_id", Some(json!(""))),
        with(&full, "invoice_id", Some(json!("  "))),
        with(&full, "invoice_id", Some(json!("x".repeat(129)))),
        with(&full, "invoice_id", Some(json!(42))),
        with(&full, "biller_id", None),
        with(&full, "biller_id", Some(json!("ACME"))),
        with(&full, "revision", Some(json!(-1))),
        with(&full, "revision", Some(json!("1"))),
        with(&full, "kind", Some(json!("refund"))),
        with(&full, "amount", None),
        with(&full, "amount", Some(json!("12,50"))),
        with(&full, "amount", Some(json!("-5"))),
        with(&full, "amount", Some(json!(-5))),
        with(&full, "amount", Some(json!(0))),
        with(&full, "currency", None),
        with(&full, "currency", Some(json!("mxn"))),
        with(&full, "due_date", None),
        with(&full, "due_date", Some(json!("01/12/2026"))),
        with(&full, "description", Some(json!(7))),
        with(&full, "channels", Some(json!([]))),
        with(&full, "channels", Some(json!(["fax"]))),
        with(&full, "customer", None),
        with(&full, "customer", Some(json!("María"))),
        with(&full, "customer.name", None),
        with(&full, "customer.name", Some(json!(" "))),
        with(&with(&full, "customer.email", None), "customer.phone", None),
        with(&full, "customer.phone", Some(json!("5512345678"))),
        with(&full, "customer.whatsapp", Some(json!("+52 55 1234"))),
        with(&full, "customer.messenger_psid", Some(json!("abc"))),
        with(&full, "customer.locale", Some(json!("spanish!"))),
        with(&full, "customer.opted_out", Some(json!(["pigeon"]))),
        json!({"kind": "invoice_paid", "biller_id": "acme"}),
        json!([full.clone()]),
        json!("INV-1"),
    ];
    for case in &cases {
        assert!(!accepted(case), "payrelay accepts a case meant to be invalid: {case}");
        assert!(
            !violations(&schemas().invoice, case).is_empty(),
            "the schema accepts what payrelay refuses: {case}"
        );
    }
}

#[test]
fn events_validate_and_the_schema_holds_every_key_as_published() {
    let key = payrelay::domain::InvoiceKey {
        biller_id: "acme".into(),
        invoice_id: "INV-1".into(),
        revision: 2,
    };
    let correlation = payrelay::events::Correlation::default();
    let event = payrelay::events::Event::sent(
        &key,
        &correlation,
        payrelay::domain::ChannelName::Sms,
        1,
        Some("SM123".into()),
    );
    let value = serde_json::to_value(&event).unwrap();
    assert!(violations(&schemas().event, &value).is_empty());
    let schema = committed("event.schema.json");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let published: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        required.iter().collect::<std::collections::BTreeSet<_>>(),
        published.iter().collect()
    );
    for broken in [
        with(&value, "event", Some(json!("invoice.teleported"))),
        with(&value, "event_id", Some(json!("not-an-id"))),
        with(&value, "channel", Some(json!("fax"))),
        with(&value, "detail", None),
        with(&value, "extra", Some(json!(1))),
    ] {
        assert!(!violations(&schemas().event, &broken).is_empty(), "{broken}");
    }
}

// --- the documents ---------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A validator for an OpenAPI or AsyncAPI schema object: a `$ref` to one of
/// the published files, or an inline schema (whose `$ref`s to the
/// published files are replaced by their content).
fn validator_for(schema: &Value, doc: &Value, at: &str) -> jsonschema::Validator {
    let mut schema = schema.clone();
    inline_refs(&mut schema, doc, 0);
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{at}: the schema does not compile: {e}"))
}

/// Replaces `$ref`s to the published files and to the document's own
/// components (`#/components/...`) by what they point at.
fn inline_refs(node: &mut Value, doc: &Value, depth: usize) {
    assert!(depth < 32, "$refs nest too deep (a cycle?)");
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                if let Some(file) = target.strip_prefix("schemas/").or(target.strip_prefix("./schemas/")) {
                    *node = committed(file);
                    return;
                }
                if let Some(pointer) = target.strip_prefix('#') {
                    let mut found = doc
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("{target} does not exist in the document"))
                        .clone();
                    inline_refs(&mut found, doc, depth + 1);
                    *node = found;
                    return;
                }
            }
            map.values_mut().for_each(|v| inline_refs(v, doc, depth));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_refs(v, doc, depth)),
        _ => {}
    }
}

#[test]
fn every_asyncapi_message_example_validates_against_its_payload() {
    let doc = yaml("docs/asyncapi.yaml");
    assert_eq!(doc["asyncapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let messages = doc["components"]["messages"].as_object().expect("components.messages");
    let mut checked = 0;
    let mut events_seen = std::collections::BTreeSet::new();
    for (name, message) in messages {
        let dead_letter = message["headers"]["properties"].get("x-payrelay-reason").is_some();
        if dead_letter {
            // The examples are refused messages: payrelay must refuse each
            // with the reason the example's header gives.
            for example in message["examples"].as_array().into_iter().flatten() {
                let body = match &example["payload"] {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                let reason = example["headers"]["x-payrelay-reason"].as_str().expect("a reason");
                match payrelay::invoice::parse(body.as_bytes(), is_biller) {
                    Ok(_) => panic!("payrelay accepts dead letter {name}'s example {}", example["name"]),
                    Err(rejected) => assert_eq!(rejected.to_string(), reason, "example {}", example["name"]),
                }
                checked += 1;
            }
            continue;
        }
        let validator = validator_for(&message["payload"], &doc, name);
        for example in message["examples"].as_array().into_iter().flatten() {
            let payload = &example["payload"];
            let broken = violations(&validator, payload);
            assert!(
                broken.is_empty(),
                "message {name}, example {}: {broken:?}",
                example["name"]
            );
            if let Some(event) = payload["event"].as_str() {
                events_seen.insert(event.to_owned());
            }
            if payload.get("customer").is_some() || payload.get("kind").is_some() {
                assert!(
                    accepted(payload),
                    "payrelay refuses message {name}'s example {}",
                    example["name"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no example checked");
    let schema = committed("event.schema.json");
    let names = schema["$defs"]["EventName"]["enum"].as_array().expect("event names");
    for name in names {
        assert!(
            events_seen.contains(name.as_str().unwrap()),
            "docs/asyncapi.yaml has no example of {name}"
        );
    }
}

#[test]
fn every_openapi_example_validates_against_its_schema() {
    let doc = yaml("docs/openapi.yaml");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
    let mut checked = 0;
    let mut bodies = Vec::new();
    collect_bodies(&doc["paths"], "paths", &mut bodies);
    for (at, media) in bodies {
        let Some(schema) = media.get("schema") else { continue };
        let validator = validator_for(schema, &doc, &at);
        let mut examples: Vec<Value> = media.get("example").cloned().into_iter().collect();
        for example in media["examples"].as_object().into_iter().flat_map(|m| m.values()) {
            examples.push(example["value"].clone());
        }
        for example in examples {
            let broken = violations(&validator, &example);
            assert!(broken.is_empty(), "{at}: {broken:?}\n{example}");
            checked += 1;
        }
    }
    assert!(checked > 0, "no example checked");
}

/// Every `application/json` media object under `node`, with where it is.
fn collect_bodies(node: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                let here = format!("{at}/{key}");
                if key == "application/json" {
                    out.push((here, value.clone()));
                } else {
                    collect_bodies(value, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_bodies(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The fenced blocks of a markdown file with their info string.
fn fenced(text: &str) -> Vec<(String, String, usize)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((info.trim().to_owned(), String::new(), i + 1));
                }
            }
            Some((_, body, _)) => {
                if trimmed.starts_with("```") {
                    blocks.push(open.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

#[test]
fn every_example_in_the_markdown_docs_loads_or_validates() {
    let mut files = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(format!("docs/{}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    let mut configs = 0;
    for file in &files {
        for (info, body, line) in fenced(&read(file)) {
            let at = format!("{file}:{line}");
            match info.as_str() {
                "toml" => {
                    if let Err(problems) =
                        Config::from_toml(&body, Path::new("/srv/payrelay"), &|_| Some("secret".into()))
                    {
                        panic!("{at}: a ```toml block must be a whole config that loads (fence a fragment as ```toml fragment): {problems:#?}");
                    }
                    configs += 1;
                }
                "json" => {
                    let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
                    let broken = violations(&schemas().invoice, &value);
                    assert!(broken.is_empty(), "{at}: {broken:?}");
                    assert!(accepted(&value), "{at}: payrelay refuses this invoice");
                }
                _ => {}
            }
        }
    }
    assert!(configs > 0, "no config example found in {files:?}");
}

#[test]
fn the_repository_examples_are_valid_invoices() {
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert!(violations(&schemas().invoice, &value).is_empty(), "{}", path.display());
            assert!(accepted(&value), "{}", path.display());
        }
    }
}

/// What a file would name if it pointed at documents outside the
/// repository, each written in two halves so this file does not name them.
const OUTSIDE: [&str; 6] = [
    concat!("..", "/shared"),
    concat!("CONTRACT", ".md"),
    concat!("contract", " §"),
    concat!("PROVIDERS", ".md"),
    concat!("BROKER", ".md"),
    concat!("STYLE", ".md"),
];

#[test]
fn no_file_points_outside_the_repository() {
    let mut offenders = Vec::new();
    for dir in [
        "src",
        "channels",
        "docs",
        "tests",
        "bench",
        "templates",
        "scripts",
        ".ci",
    ] {
        walk(&repo().join(dir), &mut |path, text| {
            for needle in OUTSIDE {
                if text.contains(needle) {
                    offenders.push(format!("{} mentions {needle}", path.display()));
                }
            }
        });
    }
    for file in [
        "README.md",
        "Cargo.toml",
        "config.toml",
        "Dockerfile",
        "docker-compose.yml",
    ] {
        let text = read(file);
        for needle in OUTSIDE {
            if text.contains(needle) {
                offenders.push(format!("{file} mentions {needle}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &str)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, visit);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            visit(&path, &text);
        }
    }
}
