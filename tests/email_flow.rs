//! The first real path, end to end on the real RabbitMQ, a real SQLite file
//! and a real SMTP listener: invoices in, emails out, pay links that work,
//! events back to the biller.

mod common;

use std::collections::BTreeSet;

use common::{invoice, parts, pay_link, Options, TestEnv, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_invoices_become_n_emails_with_pay_links_that_work() {
    let env = TestEnv::start().await;
    let n = 8;
    let invoices: Vec<_> = (0..n)
        .map(|i| invoice(&format!("INV-{i}"), &format!("customer{i}@example.com")))
        .collect();
    env.publish(&invoices).await;

    let emails = env.smtp.wait_for(n, WAIT).await;
    assert_eq!(emails.len(), n, "exactly one email per invoice");
    let recipients: BTreeSet<_> = emails.iter().flat_map(|e| e.recipients.clone()).collect();
    let expected: BTreeSet<_> = (0..n).map(|i| format!("customer{i}@example.com")).collect();
    assert_eq!(recipients, expected);

    for email in &emails {
        let raw = String::from_utf8_lossy(&email.data);
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
        let (subject, text, html) = parts(&email.data);
        // es-MX: the customer's language, money and date format.
        assert!(subject.contains("$1,234.50"), "{subject}");
        assert!(
            text.contains("María López") && text.contains("1 de diciembre de 2026"),
            "{text}"
        );
        assert!(html.contains("María López") && html.contains("$1,234.50"), "{html}");

        let link = pay_link(&text, &env.base_url);
        assert!(html.contains(&link), "both parts carry the same link");
        let invoice_id = emails_invoice_id(&text);

        let page = env.get(&link).await;
        assert_eq!(page.status(), 200);
        let body = page.text().await.unwrap();
        assert!(body.contains("ACME Energy") && body.contains("$1,234.50") && body.contains("1 de diciembre de 2026"));
        assert!(body.contains("/pay"), "the page has a Pay button");

        let pay = env.get(&format!("{link}/pay")).await;
        assert_eq!(pay.status(), 303);
        let token = link.rsplit('/').next().unwrap();
        assert_eq!(
            pay.headers()["location"].to_str().unwrap(),
            format!("https://pay.example/c?inv={invoice_id}&amt=1234.50&cur=MXN&t={token}")
        );
    }

    env.wait_for("invoice.clicked", n).await;
    let accepted = env.wait_for("invoice.accepted", n).await;
    let sent = env.wait_for("invoice.sent", n).await;
    for event in accepted.iter().chain(&sent) {
        assert_eq!(event["biller_id"], "acme");
        assert_eq!(event["revision"], 1);
        assert_eq!(event["metadata"], json!({"erp_doc": "4711"}));
        let name = event["event"].as_str().unwrap();
        assert_eq!(event["_routing_key"], format!("acme.{name}"));
        assert_eq!(event["_amqp_type"], name);
        assert_eq!(event["_amqp_message_id"], event["event_id"]);
        assert!(event["_amqp_timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000));
        assert!(event["at"].as_str().is_some_and(|at| at.contains('T')));
    }
    for event in &sent {
        assert_eq!(event["channel"], "email");
        assert!(event["provider_message_id"].is_string());
    }
    let sent_ids: BTreeSet<_> = sent
        .iter()
        .map(|e| e["invoice_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent_ids.len(), n);
    env.finish().await;
}

fn emails_invoice_id(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Factura:"))
        .expect("invoice line")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_bad_input_is_dead_lettered_with_its_reason_and_the_next_invoice_still_goes_out() {
    let env = TestEnv::start().await;
    let mut too_many_decimals = invoice("BAD-DECIMALS", "a@example.com");
    too_many_decimals["amount"] = json!("10.123");
    let mut missing = invoice("BAD-MISSING", "a@example.com");
    missing.as_object_mut().unwrap().remove("due_date");
    let mut bad_email = invoice("BAD-EMAIL", "not-an-email");
    bad_email["customer"]["email"] = json!("not an email");
    let mut bad_phone = invoice("BAD-PHONE", "a@example.com");
    bad_phone["customer"]["phone"] = json!("5512345678");
    let mut unknown_biller = invoice("BAD-BILLER", "a@example.com");
    unknown_biller["biller_id"] = json!("nobody");
    let mut too_big = invoice("BAD-BIG", "a@example.com");
    too_big["description"] = json!("x".repeat(70 * 1024));

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not valid JSON"),
        (missing.to_string().into_bytes(), "due_date is missing"),
        (
            too_many_decimals.to_string().into_bytes(),
            "3 decimals but MXN allows 2",
        ),
        (bad_email.to_string().into_bytes(), "customer.email"),
        (bad_phone.to_string().into_bytes(), "customer.phone"),
        (unknown_biller.to_string().into_bytes(), "\"nobody\" is not a biller"),
        (too_big.to_string().into_bytes(), "more than the 65536 allowed"),
    ];
    let bodies: Vec<Vec<u8>> = cases.iter().map(|(b, _)| b.clone()).collect();
    env.publish_raw(&bodies).await;
    env.publish(&[invoice("GOOD-AFTER-BAD", "good@example.com")]).await;

    let emails = env.smtp.wait_for(1, WAIT).await;
    assert_eq!(emails[0].recipients, vec!["good@example.com".to_owned()]);

    let dead = env.dead_letters(cases.len()).await;
    for (body, expected_reason) in &cases {
        let (reason, _) = dead
            .iter()
            .find(|(_, b)| b == body)
            .unwrap_or_else(|| panic!("no dead letter for the case '{expected_reason}'"));
        assert!(
            reason.contains(expected_reason),
            "reason '{reason}' should say '{expected_reason}'"
        );
    }

    let rejected = env.wait_for("invoice.rejected", cases.len()).await;
    assert!(rejected
        .iter()
        .all(|e| e["detail"].as_str().is_some_and(|d| !d.is_empty())));
    assert!(
        rejected.iter().any(|e| e["invoice_id"] == "BAD-DECIMALS"),
        "ids are kept when readable"
    );
    for event in &rejected {
        let expected = match event["biller_id"].as_str() {
            Some(biller) => format!("{biller}.invoice.rejected"),
            None => "_.invoice.rejected".to_owned(),
        };
        assert_eq!(event["_routing_key"], expected, "{event}");
    }
    assert!(rejected.iter().any(|e| e["_routing_key"] == "_.invoice.rejected"));
    let ids: BTreeSet<_> = rejected.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), rejected.len(), "every event has its own id");
    env.wait_for("invoice.sent", 1).await;
    assert_eq!(env.smtp.received().len(), 1, "nothing bad was sent");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_invoice_published_twice_yields_one_email_and_a_duplicate_event() {
    let env = TestEnv::start().await;
    let same = invoice("INV-TWICE", "twice@example.com");
    // Together (handled concurrently) and once more after the first is done.
    env.publish(&[same.clone(), same.clone()]).await;
    env.wait_for("invoice.sent", 1).await;
    env.publish(&[same]).await;

    let duplicates = env.wait_for("invoice.duplicate", 2).await;
    assert!(duplicates.iter().all(|e| e["invoice_id"] == "INV-TWICE"));
    assert_eq!(env.smtp.received().len(), 1, "one email only");
    assert_eq!(env.events_named("invoice.sent").len(), 1);
    assert_eq!(env.events_named("invoice.accepted").len(), 1);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_and_message_ids_are_copied_into_events() {
    let env = TestEnv::start().await;
    let connection = lapin::Connection::connect(common::AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let properties = lapin::BasicProperties::default()
        .with_correlation_id("corr-42".into())
        .with_message_id("msg-7".into());
    channel
        .basic_publish(
            "".into(),
            env.config.broker.queue.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            invoice("INV-CORR", "corr@example.com").to_string().as_bytes(),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let sent = env.wait_for("invoice.sent", 1).await;
    assert_eq!(sent[0]["correlation_id"], "corr-42");
    assert_eq!(sent[0]["message_id"], "msg-7");
    assert_eq!(sent[0]["_amqp_correlation_id"], "corr-42");
    connection.close(200, "done".into()).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_smtp_refusal_fails_the_channel_and_exhausts_the_invoice() {
    let env = TestEnv::start().await;
    env.smtp.fail_recipient("gone@example.com", &["550 5.1.1 no such user"]);
    env.publish(&[invoice("INV-GONE", "gone@example.com")]).await;

    let failed = env.wait_for("invoice.channel_failed", 1).await;
    assert_eq!(failed[0]["channel"], "email");
    assert_eq!(failed[0]["attempt"], 1, "a permanent error is not retried");
    let detail = failed[0]["detail"].as_str().unwrap();
    assert!(detail.contains("permanent") && detail.contains("550"), "{detail}");
    let exhausted = env.wait_for("invoice.exhausted", 1).await;
    assert_eq!(exhausted[0]["invoice_id"], "INV-GONE");
    assert!(env.smtp.received().is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_smtp_refusal_is_retried_and_then_sent() {
    let env = TestEnv::start().await;
    env.smtp
        .fail_recipient("busy@example.com", &["451 4.3.0 try again later"]);
    env.publish(&[invoice("INV-BUSY", "busy@example.com")]).await;

    let sent = env.wait_for("invoice.sent", 1).await;
    assert_eq!(sent[0]["attempt"], 2, "sent on the second try");
    assert_eq!(env.smtp.received().len(), 1);
    assert!(env.events_named("invoice.channel_failed").is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_links_follow_the_invoice_life_paid_cancelled_superseded_and_stale() {
    let env = TestEnv::start().await;
    env.publish(&[
        invoice("INV-PAID", "paid@example.com"),
        invoice("INV-CANCEL", "cancel@example.com"),
        invoice("INV-REV", "rev@example.com"),
    ])
    .await;
    let emails = env.smtp.wait_for(3, WAIT).await;
    let link_for = |to: &str| {
        let email = emails.iter().find(|e| e.recipients[0] == to).unwrap();
        pay_link(&parts(&email.data).1, &env.base_url)
    };
    let (paid, cancelled, old_revision) = (
        link_for("paid@example.com"),
        link_for("cancel@example.com"),
        link_for("rev@example.com"),
    );

    let mut revision_2 = invoice("INV-REV", "rev@example.com");
    revision_2["revision"] = json!(2);
    env.publish(&[
        json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-PAID"}),
        json!({"kind": "invoice_cancelled", "biller_id": "acme", "invoice_id": "INV-CANCEL"}),
        revision_2,
    ])
    .await;
    env.wait_for("invoice.paid", 1).await;
    env.wait_for("invoice.cancelled", 1).await;
    env.smtp.wait_for(4, WAIT).await;

    let page = env.get(&paid).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("ya está pagada"),
        "the es-MX paid page"
    );
    let pay = env.get(&format!("{paid}/pay")).await;
    assert_eq!(pay.status(), 303);
    assert!(pay.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with(paid.rsplit('/').next().unwrap()));
    assert!(!pay.headers()["location"].to_str().unwrap().contains("pay.example"));

    assert_eq!(env.get(&cancelled).await.status(), 410);
    assert_eq!(env.get(&format!("{cancelled}/pay")).await.status(), 410);
    // An older revision's link leads to the newest revision's page.
    let superseded = env.get(&old_revision).await;
    assert_eq!(superseded.status(), 200);
    assert!(superseded.text().await.unwrap().contains("se actualizó"));

    // A stale revision is acked, not sent, and reported.
    env.publish(&[invoice("INV-REV", "rev@example.com")]).await;
    let rejected = env
        .wait_events("a stale revision rejection", |events| {
            events.iter().any(|e| {
                e["event"] == "invoice.rejected" && e["detail"].as_str().unwrap_or("").contains("stale revision")
            })
        })
        .await;
    assert!(!rejected.is_empty());
    // Paying again publishes nothing new.
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-PAID"})])
        .await;
    env.publish(&[invoice("INV-LAST", "last@example.com")]).await;
    env.smtp.wait_for(5, WAIT).await;
    env.wait_events("the last invoice sent", |events| {
        events
            .iter()
            .any(|e| e["event"] == "invoice.sent" && e["invoice_id"] == "INV-LAST")
    })
    .await;
    assert_eq!(env.events_named("invoice.paid").len(), 1, "paid is published once");
    assert_eq!(env.smtp.received().len(), 5, "nothing else was sent");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_links_answer_404_and_410() {
    let env = TestEnv::start_with(Options {
        paylink_ttl: "1s",
        ..Options::default()
    })
    .await;
    assert_eq!(env.get("/p/AAAAAAAAAAAAAAAAAAAAAAAAAAA").await.status(), 404);
    assert_eq!(env.get("/p/short").await.status(), 404);
    env.publish(&[invoice("INV-EXPIRES", "soon@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = pay_link(&parts(&emails[0].data).1, &env.base_url);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(env.get(&link).await.status(), 410);
    assert_eq!(env.get(&format!("{link}/pay")).await.status(), 410);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let env = TestEnv::start().await;
    assert_eq!(env.get("/healthz").await.status(), 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.get("/readyz").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.publish(&[invoice("INV-METRICS", "m@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    let response = env.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "the text is OpenMetrics (it ends with # EOF), and says so"
    );
    let metrics = response.text().await.unwrap();
    assert!(
        metrics.contains("payrelay_sends_total{channel=\"email\",outcome=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("payrelay_build_info{version="), "{metrics}");
    assert!(metrics.contains("process_resident_memory_bytes "), "{metrics}");
    assert!(!metrics.contains("m@example.com"));
    env.finish().await;
}
