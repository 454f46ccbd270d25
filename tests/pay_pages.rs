//! What strangers get from pay links: the headers every page under `/p/`
//! carries, whatever its answer.

mod common;

use std::sync::Arc;

use common::{invoice, Options, TestEnv, WAIT};
use payrelay::domain::clock::ManualClock;

/// 2026-11-20 09:31 UTC; any fixed instant serves.
const NOW_MS: i64 = 1_795_635_060_000;

fn assert_page_headers(response: &reqwest::Response, what: &str) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp:?}");
    assert!(csp.contains("default-src 'none'"), "{what}: CSP {csp:?}");
    assert!(!csp.contains("http"), "{what}: no third-party origin in {csp:?}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pay_link_answer_carries_the_security_headers() {
    let clock = Arc::new(ManualClock::at_ms(NOW_MS));
    let env = TestEnv::start_with(Options {
        paylink_ttl: "1h",
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-HEADERS", "headers@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    env.wait_for("invoice.sent", 1).await;

    let page = env.get(&link).await;
    assert_eq!(page.status(), 200);
    assert_page_headers(&page, "the pay page");
    let checkout = env.get(&format!("{link}/pay")).await;
    assert_eq!(checkout.status(), 303);
    assert_page_headers(&checkout, "the redirect to checkout");
    let unknown = env.get("/p/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(unknown.status(), 404);
    assert_page_headers(&unknown, "an unknown link");
    let malformed = env.get("/p/not-a-token/pay").await;
    assert_eq!(malformed.status(), 404);
    assert_page_headers(&malformed, "a malformed link");
    clock.set_ms(NOW_MS + 3_600_000);
    let expired = env.get(&link).await;
    assert_eq!(expired.status(), 410);
    assert_page_headers(&expired, "an expired link");
    env.finish().await;
}
