//! What strangers get from pay links: the headers every page under `/p/`
//! carries, whatever its answer, and 429 once an address has guessed too
//! many links, while real links keep working for it.

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

/// A well-formed token no invoice has.
fn guess(i: usize) -> String {
    format!("/p/01a1f97c7288{i:0>27}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_links_is_throttled_per_address_and_real_links_never_are() {
    let env = TestEnv::start_with(Options {
        http: "unknown_links_per_minute = 5".into(),
        ..Options::default()
    })
    .await;
    env.publish(&[invoice("INV-REAL", "real@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    for i in 0..5 {
        assert_eq!(env.get(&guess(i)).await.status(), 404, "guess {i} is within the quota");
    }
    let refused = env.get(&guess(5)).await;
    assert_eq!(refused.status(), 429);
    assert_page_headers(&refused, "the 429 page");
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=13).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        env.get("/p/not-a-token").await.status(),
        429,
        "malformed guesses count too"
    );
    for _ in 0..3 {
        assert_eq!(
            env.get(&link).await.status(),
            200,
            "the real link from the same address"
        );
        assert_eq!(env.get(&format!("{link}/pay")).await.status(), 303);
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_configured_header_names_the_client() {
    let env = TestEnv::start_with(Options {
        http: "unknown_links_per_minute = 2\nclient_ip_header = \"X-Forwarded-For\"".into(),
        ..Options::default()
    })
    .await;
    let from = |client: &'static str, i: usize| {
        let url = format!("{}{}", env.base_url, guess(i));
        let request = env.http.get(url).header("x-forwarded-for", client);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(from("203.0.113.7", 0).await, 404);
    assert_eq!(from("198.51.100.1, 203.0.113.7", 1).await, 404);
    assert_eq!(
        from("203.0.113.7", 2).await,
        429,
        "the proxy's last value is the client"
    );
    assert_eq!(
        from("203.0.113.8", 3).await,
        404,
        "another client behind the same proxy"
    );
    env.finish().await;
}
