//! What `/metrics` shows of a running service, on the real broker and
//! store: readiness, new and dead-lettered invoices, the store's counts
//! (outbox backlog, held invoices, planned steps) and the channels'
//! pauses. How each count moves is the store suite's
//! (`the_gauges_count_...`) and the channel registry's tests; here, that a
//! scrape carries them.

mod common;

use std::sync::Arc;

use common::{invoice, Options, TestEnv, WAIT};
use payrelay::domain::clock::ManualClock;
use serde_json::json;

/// The value of one series (`name{labels}`) in a scrape, if it is there.
fn sample(text: &str, series: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(&format!("{series} ")))?;
    line.rsplit(' ').next()?.parse().ok()
}

async fn scrape(env: &TestEnv) -> String {
    let response = env.get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

async fn wait_until_ready(env: &TestEnv) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.get("/readyz").await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_readiness_new_and_dead_lettered_invoices_and_the_stores_counts() {
    let env = TestEnv::start().await;
    wait_until_ready(&env).await;
    env.publish(&[invoice("INV-M1", "m1@example.com")]).await;
    env.publish_as(&json!({"kind": "payment_request", "biller_id": "acme"}), None)
        .await;
    env.wait_for("invoice.sent", 1).await;
    env.wait_for("invoice.rejected", 1).await;

    let text = scrape(&env).await;
    for (series, value) in [
        (r#"payrelay_ready{part="broker"}"#, 1.0),
        (r#"payrelay_ready{part="store"}"#, 1.0),
        ("payrelay_invoices_received_total", 1.0),
        ("payrelay_dead_letters_total", 1.0),
        (r#"payrelay_channel_paused{channel="email"}"#, 0.0),
        (r#"payrelay_invoices_held{reason="quiet_hours"}"#, 0.0),
        (r#"payrelay_invoices_held{reason="combining"}"#, 0.0),
        (r#"payrelay_invoices_held{reason="cap"}"#, 0.0),
        ("payrelay_journey_steps_planned", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    // Events may still be on their way to the broker: a count, whatever it is.
    assert!(sample(&text, "payrelay_outbox_backlog").is_some(), "{text}");
    env.finish().await;
}

/// 00:30 on 2026-11-21 in Mexico City (UTC-6), the test customer's zone:
/// inside quiet hours 21:00-08:00.
const NIGHT_MS: i64 = 1_795_242_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_held_for_quiet_hours_shows_as_held() {
    let clock = Arc::new(ManualClock::at_ms(NIGHT_MS));
    let env = TestEnv::start_with(Options {
        channels: "[channels.sms]\nprovider = \"file\"\nrate_per_second = 50\n".into(),
        routing: "default = [\"sms\"]\nquiet_hours = \"21:00-08:00\"".into(),
        clock: Some(clock),
        ..Options::default()
    })
    .await;
    wait_until_ready(&env).await;
    env.publish(&[invoice("INV-NIGHT", "night@example.com")]).await;
    env.wait_for("invoice.accepted", 1).await;
    // Held once the store says so (the status API shows the hold).
    let token = common::test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view: serde_json::Value = env
            .http
            .get(format!("{}/v1/invoices/acme/INV-NIGHT", env.base_url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !view["held_until"].is_null() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {view:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = scrape(&env).await;
    assert_eq!(
        sample(&text, r#"payrelay_invoices_held{reason="quiet_hours"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"payrelay_channel_paused{channel="sms"}"#),
        Some(0.0),
        "{text}"
    );
    env.finish().await;
}
