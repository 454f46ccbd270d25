//! Erasure end to end: the real `payrelay` binary on the real broker, on
//! SQLite and on PostgreSQL, with the `file` email transport and a Twilio
//! stand-in (wiremock) whose error quotes the customer's number. After
//! `DELETE /v1/customers/{biller_id}/{customer_id}` no row of any table, no
//! outbox file, no event and no log line written afterwards holds the
//! customer's name, email or phone; the status API still shows what
//! happened; the links answer 410; `customer.erased` is published. Tokens:
//! the admin token and the biller's own `api_token` may erase, another
//! biller's token gets 404.
//!
//! Retention (`[store] personal_data_ttl`) runs in-process on a manual
//! clock moved past the TTL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::pg::PgSchema;
use common::process::{free_port, observe_events};
use common::{Options, TestEnv, AMQP_URL, WAIT};

const NAME: &str = "María López";
const EMAIL: &str = "maria.lopez@example.com";
const PHONE: &str = "+5215512345678";
const ADMIN: &str = "admin-token-for-erasure-tests";
const ACME_TOKEN: &str = "acme-api-token-7f3a";
const BETA_TOKEN: &str = "beta-api-token-91c2";

/// What the customer's personal data looks like wherever it could be left.
fn personal() -> Vec<String> {
    vec![
        NAME.to_owned(),
        "L=C3=B3pez".to_owned(),
        EMAIL.to_owned(),
        PHONE.to_owned(),
        PHONE[1..].to_owned(),
    ]
}

fn assert_nothing_personal(what: &str, text: &str) {
    for value in personal() {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&value)).collect();
        assert!(lines.is_empty(), "{what} still holds {value}: {lines:#?}");
    }
}

/// The payrelay binary, killed when the test ends.
struct Service(Child);

impl Service {
    fn spawn(config: &Path, log: &Path) -> Service {
        let log = std::fs::File::create(log).expect("log file");
        Service(
            Command::new(env!("CARGO_BIN_EXE_payrelay"))
                .arg("--config")
                .arg(config)
                .arg("serve")
                .env("PAYRELAY_LOG", "info")
                .stdout(Stdio::from(log))
                .stderr(Stdio::null())
                .spawn()
                .expect("start payrelay"),
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn invoice(invoice_id: &str, customer_id: &str, name: &str, email: &str, phone: &str) -> Value {
    json!({
        "kind": "payment_request", "invoice_id": invoice_id, "biller_id": "acme", "revision": 1,
        "amount": "1234.50", "currency": "MXN", "due_date": "2026-12-01",
        "description": "Electricity, November 2026",
        "customer": {"id": customer_id, "name": name, "email": email, "phone": phone, "locale": "es-MX"},
        "metadata": {"erp_doc": format!("doc-{invoice_id}")}
    })
}

async fn wait_for(
    events: &mut UnboundedReceiver<Value>,
    seen: &mut Vec<Value>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => panic!("timed out waiting for {what}; events: {seen:#?}"),
        }
    }
}

fn count(seen: &[Value], event: &str, invoice_id: &str) -> usize {
    seen.iter()
        .filter(|e| e["event"] == event && e["invoice_id"] == invoice_id)
        .count()
}

/// Every file under `dir`, with its contents.
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            found.push((path, text));
        }
    }
    found
}

/// Every row of every table of the store, as text.
async fn dump(store_url: &str, schema: Option<&PgSchema>) -> String {
    let mut out = String::new();
    match schema {
        None => {
            let path = store_url.strip_prefix("sqlite://").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for table in tables {
                let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
                let columns = stmt.column_count();
                let mut rows = stmt.query([]).unwrap();
                while let Some(row) = rows.next().unwrap() {
                    out.push_str(&table);
                    for i in 0..columns {
                        let value: rusqlite::types::Value = row.get(i).unwrap();
                        out.push_str(&format!(" | {value:?}"));
                    }
                    out.push('\n');
                }
            }
        }
        Some(schema) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(store_url).await.unwrap();
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1")
                    .bind(&schema.name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for table in tables {
                let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for row in rows {
                    out.push_str(&format!("{table} | {row}\n"));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_erased_customer_leaves_no_trace_but_the_books() {
    erased_customer_leaves_no_trace(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_erased_customer_leaves_no_trace_but_the_books() {
    erased_customer_leaves_no_trace(Some(PgSchema::create("payrelay_erasure").await)).await;
}

async fn erased_customer_leaves_no_trace(schema: Option<PgSchema>) {
    let twilio = MockServer::start().await;
    // Twilio refuses the number, quoting it, as its real errors do.
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/ACtest/Messages.json"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211,
            "message": format!("The 'To' number {PHONE} is not a valid phone number."),
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .mount(&twilio)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let id = payrelay::domain::ids::random_id()[..12].to_owned();
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let store_url = match &schema {
        Some(schema) => String::from(schema.store_url()),
        None => format!("sqlite://{}", dir.path().join("payrelay.db").display()),
    };
    let config_path = dir.path().join("payrelay.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[broker]
url = "{AMQP_URL}"
queue = "payrelay.test.{id}.invoices"
events_exchange = "payrelay.test.{id}.events"
[store]
url = "{store_url}"
[http]
listen = "127.0.0.1:{port}"
public_base_url = "{base_url}"
admin_token = "{ADMIN}"
[billers.acme]
name = "ACME Energy"
checkout_url = "https://pay.example/c?inv={{invoice_id}}&t={{token}}"
api_token = "{ACME_TOKEN}"
[billers.beta]
checkout_url = "https://beta.example/{{token}}"
api_token = "{BETA_TOKEN}"
[channels.email]
transport = "file"
outbox_dir = "outbox/email"
from = "ACME Billing <billing@acme.example>"
[channels.sms]
provider = "twilio"
base_url = "{twilio}"
account_sid = "ACtest"
auth_token = "twilio-token"
from = "+15005550006"
[routing]
default = ["sms", "email"]
"#,
            twilio = twilio.uri(),
        ),
    )
    .unwrap();
    let config = payrelay::config::Config::load(&config_path).unwrap();
    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let mut events = observe_events(&channel, &config.broker).await;
    let log = dir.path().join("payrelay.log");
    let _service = Service::spawn(&config_path, &log);

    let bodies = [
        invoice("INV-1", "C-9981", NAME, EMAIL, PHONE).to_string(),
        invoice("INV-2", "C-9981", NAME, EMAIL, PHONE).to_string(),
        invoice("INV-OTHER", "C-1", "Juan Pérez", "juan@example.com", "+5215587654321").to_string(),
    ];
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    payrelay::broker::publish::publish(&config.broker, &refs).await.unwrap();
    let mut seen = Vec::new();
    wait_for(
        &mut events,
        &mut seen,
        "every invoice sent by email after the SMS failed",
        |seen| {
            ["INV-1", "INV-2", "INV-OTHER"]
                .iter()
                .all(|id| count(seen, "invoice.sent", id) == 1 && count(seen, "invoice.channel_failed", id) == 1)
        },
    )
    .await;
    let outbox = dir.path().join("outbox");
    let emails = files(&outbox);
    assert_eq!(emails.len(), 3, "one email each");
    let links: Vec<String> = emails
        .iter()
        .filter(|(_, text)| text.contains("maria.lopez@"))
        .map(|(path, _)| {
            let (_, text, _) = common::parts(&std::fs::read(path).unwrap());
            common::pay_link(&text, &base_url)
        })
        .collect();
    assert_eq!(links.len(), 2);
    let http = reqwest::Client::new();
    for link in &links {
        assert_eq!(
            http.get(link).send().await.unwrap().status(),
            200,
            "{link} is open before"
        );
    }
    assert!(
        dump(&store_url, schema.as_ref()).await.contains(PHONE),
        "the number was stored"
    );

    // Who may erase: no token 401; another biller's 404, as if acme did not exist.
    let erase_url = format!("{base_url}/v1/customers/acme/C-9981");
    let delete = |token: Option<&str>| {
        let request = http.delete(&erase_url);
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    assert_eq!(delete(None).send().await.unwrap().status(), 401);
    assert_eq!(delete(Some("wrong")).send().await.unwrap().status(), 401);
    let other = delete(Some(BETA_TOKEN)).send().await.unwrap();
    assert_eq!(other.status(), 404);
    let unknown = http
        .delete(format!("{base_url}/v1/customers/nobody/C-9981"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(count(&seen, "customer.erased", ""), 0);

    let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let erased = delete(Some(ADMIN)).send().await.unwrap();
    assert_eq!(erased.status(), 200);
    let body: Value = erased.json().await.unwrap();
    assert_eq!(
        body,
        json!({"biller_id": "acme", "customer_id": "C-9981", "invoices_erased": 2})
    );
    // The biller's own token may erase too; nothing is left to erase.
    let again = delete(Some(ACME_TOKEN)).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["invoices_erased"], 0);

    wait_for(&mut events, &mut seen, "customer.erased, once per request", |seen| {
        seen.iter().filter(|e| e["event"] == "customer.erased").count() == 2
    })
    .await;
    let erased_event = seen.iter().find(|e| e["event"] == "customer.erased").unwrap();
    assert_eq!(erased_event["customer_id"], "C-9981");
    assert_eq!(erased_event["biller_id"], "acme");
    assert!(
        erased_event["detail"].as_str().unwrap().contains("2 invoice(s)"),
        "{erased_event}"
    );

    // Links answer 410, in the customer's language, naming the biller, with
    // the pay pages' security headers.
    for link in &links {
        let answer = http.get(link).send().await.unwrap();
        assert_eq!(answer.status(), 410, "{link}");
        assert!(answer.headers().contains_key("content-security-policy"));
        let page = answer.text().await.unwrap();
        assert!(
            page.contains("<html lang=\"es\"") && page.contains("ya no está disponible"),
            "{page}"
        );
        assert!(page.contains("ACME Energy"), "{page}");
        assert!(
            !page.contains("1,234.50") && !page.contains("1234.50"),
            "nothing of the invoice: {page}"
        );
        assert_nothing_personal("the 410 page", &page);
    }
    // The status API: the outcomes, without the person; another biller's token sees nothing.
    let status = http
        .get(format!("{base_url}/v1/invoices/acme/INV-1"))
        .bearer_auth(ACME_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let status = status.text().await.unwrap();
    assert_nothing_personal("the status API", &status);
    let timeline: Value = serde_json::from_str(&status).unwrap();
    let whats: Vec<&str> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(whats.contains(&"send_failed") && whats.contains(&"sent"), "{whats:?}");
    assert!(
        status.contains("21211"),
        "the provider's error stays, without the number: {status}"
    );
    let hidden = http
        .get(format!("{base_url}/v1/invoices/acme/INV-1"))
        .bearer_auth(BETA_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    // No stored row, no outbox file, no event.
    assert_nothing_personal("the store", &dump(&store_url, schema.as_ref()).await);
    let left = files(&outbox);
    assert_eq!(left.len(), 1, "only the other customer's email is left");
    for (path, text) in &left {
        assert_nothing_personal(&path.display().to_string(), text);
    }
    assert_nothing_personal("the events", &serde_json::to_string_pretty(&seen).unwrap());

    // No log line written afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_nothing_personal("the log since the erasure", &log_text[log_before.min(log_text.len())..]);
    assert!(log_text[log_before..].contains("erased"), "the erasure is logged");
    drop(channel);
    let _ = amqp.close(200, "done".into()).await;
}

/// `[store] personal_data_ttl`: once the service's clock passes a paid
/// invoice's closure by the TTL, its customer's data goes and
/// `customer.erased` says so; an open invoice keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_a_paid_invoices_customer_once_the_ttl_passed() {
    const START: i64 = 1_793_534_400_000; // 2026-11-01T12:00:00Z, outside quiet hours
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let clock = Arc::new(payrelay::domain::clock::ManualClock::at_ms(START));
    let env = TestEnv::start_with(Options {
        clock: Some(clock.clone()),
        // The harness writes `url = "<this>"` under [store]; the TTL follows it.
        store_url: Some("sqlite://var/payrelay.db\"\npersonal_data_ttl = \"180d".into()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        env.config.store.personal_data_ttl,
        Some(Duration::from_secs(180 * 24 * 3600))
    );
    let mut paid = common::invoice("INV-PAID", EMAIL);
    paid["customer"]["id"] = json!("C-PAID");
    let mut open = common::invoice("INV-OPEN", "open@example.com");
    open["customer"]["id"] = json!("C-OPEN");
    open["customer"]["name"] = json!("Juan Pérez");
    open["customer"]["phone"] = json!("+5215587654321");
    env.publish(&[paid, open]).await;
    env.wait_for("invoice.sent", 2).await;
    let email = env
        .smtp
        .received()
        .into_iter()
        .find(|r| r.recipients.iter().any(|to| to == EMAIL))
        .expect("the paid invoice's email");
    let (_, text, _) = common::parts(&email.data);
    let link = common::pay_link(&text, &env.base_url);
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-PAID"})])
        .await;
    env.wait_for("invoice.paid", 1).await;
    assert_eq!(env.get(&link).await.status(), 200, "the paid page, before the TTL");

    // 179 days later nothing is old enough; 181 days later the paid one is.
    clock.set_ms(START + 179 * DAY);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.events_named("customer.erased").is_empty());
    clock.set_ms(START + 181 * DAY);
    let erased = env.wait_for("customer.erased", 1).await;
    assert_eq!(erased[0]["customer_id"], "C-PAID");
    assert!(
        erased[0]["detail"].as_str().unwrap().contains("retention"),
        "{}",
        erased[0]
    );
    assert_eq!(env.get(&link).await.status(), 410);

    let db = env.dir.path().join("var/payrelay.db");
    let everything = dump(&format!("sqlite://{}", db.display()), None).await;
    assert!(!everything.contains(EMAIL), "the paid invoice's customer is erased");
    assert!(!everything.contains(PHONE), "and their number");
    assert!(
        everything.contains("open@example.com"),
        "the open invoice keeps its data"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.events_named("customer.erased").len(), 1, "once");
    env.finish().await;
}
