//! The published JSON Schemas (`docs/schemas/`), compiled once per test
//! process, so that every invoice and event a test produces is checked
//! against what billers are told.

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed schema file, parsed.
pub fn committed(file: &str) -> Value {
    let path = repo().join(payrelay::schema::DIR).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Schemas {
    pub invoice: Validator,
    pub event: Validator,
    pub payment_confirmation: Validator,
    pub invoice_status: Validator,
}

pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let compile = |file: &str| {
            jsonschema::draft202012::new(&committed(file)).unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
        };
        Schemas {
            invoice: compile("invoice.schema.json"),
            event: compile("event.schema.json"),
            payment_confirmation: compile("payment-confirmation.schema.json"),
            invoice_status: compile("invoice-status.schema.json"),
        }
    })
}

/// Every way `value` breaks `validator`, as one line each; empty if none.
pub fn violations(validator: &Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Checks an invoice the tests publish: when payrelay's parser accepts it
/// (for a configured biller), the published schema must accept it too.
pub fn check_published_invoice(body: &[u8], is_biller: impl Fn(&str) -> bool) {
    if payrelay::invoice::parse(body, is_biller).is_err() {
        return;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let broken = violations(&schemas().invoice, &value);
    assert!(
        broken.is_empty(),
        "payrelay accepts this invoice but docs/schemas/invoice.schema.json refuses it: {broken:?}\n{value}"
    );
}

/// Checks an answer of the status API (`GET /v1/invoices/...`) against
/// the schema operators are given.
pub fn check_invoice_status(view: &Value) {
    let broken = violations(&schemas().invoice_status, view);
    assert!(
        broken.is_empty(),
        "the status API answered what docs/schemas/invoice-status.schema.json refuses: {broken:?}\n{view:#}"
    );
}

/// Events that broke the event schema, from any harness in this process;
/// [`assert_no_violations`] fails the test that sees them.
static VIOLATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Checks an event as a biller receives it (before the harness adds its
/// own `_` fields); a violation is recorded, not panicked on, since events
/// arrive on a background task.
pub fn check_event(event: &Value) {
    let broken = violations(&schemas().event, event);
    if !broken.is_empty() {
        let line = format!("event breaks docs/schemas/event.schema.json: {broken:?}\n{event}");
        eprintln!("{line}");
        VIOLATIONS.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

pub fn assert_no_violations() {
    let seen = VIOLATIONS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(seen.is_empty(), "{}", seen.join("\n"));
}
