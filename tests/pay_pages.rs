//! What strangers get from pay links: the headers every page under `/p/`
//! carries, whatever its answer, and 429 once an address has guessed too
//! many links, while real links keep working for it. Link previewers and
//! mail scanners get the page without counting as the customer, and an
//! older message's link leads to the invoice's newest revision.

mod common;

use std::sync::Arc;

use common::{invoice, test_secrets, Options, TestEnv, WAIT};
use payrelay::domain::clock::ManualClock;
use serde_json::{json, Value};

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

const BROWSER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const WHATSAPP: &str = "WhatsApp/2.24.6.77 A";

/// GET with a `User-Agent`.
async fn get_as(env: &TestEnv, url: &str, agent: &str) -> reqwest::Response {
    env.http
        .get(url)
        .header("user-agent", agent)
        .send()
        .await
        .expect("http request")
}

/// The status API's view of an invoice.
async fn status_of(env: &TestEnv, invoice_id: &str) -> Value {
    let token = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let response = env
        .http
        .get(format!("{}/v1/invoices/acme/{invoice_id}", env.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("status API");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// The timeline's `clicked` entries: (revision, channel, detail).
async fn clicks_of(env: &TestEnv, invoice_id: &str) -> Vec<(Value, Value, Value)> {
    let view = status_of(env, invoice_id).await;
    view["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter(|e| e["event"] == "clicked")
        .map(|e| (e["revision"].clone(), e["channel"].clone(), e["detail"].clone()))
        .collect()
}

/// Publishes an email-only invoice and waits until it is sent: every event
/// queued before it has been published by then.
async fn settle(env: &TestEnv, id: &str) {
    let mut marker = invoice(id, "marker@example.com");
    marker["channels"] = json!(["email"]);
    env.publish(&[marker]).await;
    env.wait_events(id, |events| {
        events
            .iter()
            .any(|e| e["invoice_id"] == id && e["event"] == "invoice.sent")
    })
    .await;
}

/// One line of the metrics text, `name{labels} value`, or "" when absent.
async fn metric(env: &TestEnv, series: &str) -> String {
    let text = env.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .unwrap_or_default()
        .to_owned()
}

/// Waits until `n` events named `name` for `invoice_id` arrived; returns them.
async fn wait_for_invoice(env: &TestEnv, invoice_id: &str, name: &str, n: usize) -> Vec<Value> {
    let of = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["invoice_id"] == invoice_id && e["event"] == name)
            .cloned()
            .collect()
    };
    of(&env
        .wait_events(&format!("{n} {name} of {invoice_id}"), |events| of(events).len() >= n)
        .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_and_head_requests_get_the_page_but_only_people_count_as_clicks() {
    let env = TestEnv::start().await;
    env.publish(&[invoice("INV-PREVIEW", "preview@example.com")]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let link = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    env.wait_for("invoice.sent", 1).await;

    let head = env.http.head(&link).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD gets the page's answer");
    let head_pay = env.http.head(format!("{link}/pay")).send().await.unwrap();
    assert_eq!(head_pay.status(), 303);
    for agent in [
        WHATSAPP,
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
        "SLACKBOT-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ] {
        let page = get_as(&env, &link, agent).await;
        assert_eq!(page.status(), 200, "{agent}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("1,234.50") && html.contains("/pay\""),
            "{agent} gets the whole page: {html}"
        );
    }
    assert!(
        clicks_of(&env, "INV-PREVIEW").await.is_empty(),
        "no preview counts as a click"
    );
    settle(&env, "INV-SETTLE").await;
    assert!(
        env.events_named("invoice.clicked").is_empty(),
        "no preview reports a click"
    );
    let series =
        |previewer: &str| format!("payrelay_paylink_previews_total{{channel=\"email\",previewer=\"{previewer}\"}}");
    assert!(
        metric(&env, &series("head")).await.ends_with(" 2"),
        "HEAD of the page and of /pay"
    );
    for previewer in ["whatsapp", "facebook", "microsoft", "slack"] {
        assert!(metric(&env, &series(previewer)).await.ends_with(" 1"), "{previewer}");
    }
    assert_eq!(
        metric(&env, "payrelay_paylink_clicks_total").await,
        "payrelay_paylink_clicks_total 0"
    );

    // A person's browser counts.
    assert_eq!(get_as(&env, &link, BROWSER).await.status(), 200);
    let clicked = env.wait_for("invoice.clicked", 1).await;
    assert_eq!(
        (&clicked[0]["invoice_id"], &clicked[0]["channel"]),
        (&json!("INV-PREVIEW"), &json!("email"))
    );
    assert_eq!(
        clicks_of(&env, "INV-PREVIEW").await,
        [(json!(1), json!("email"), json!("pay link opened 1 time(s)"))]
    );
    // The pay button is pressed by a person, whatever the agent says.
    let checkout = get_as(&env, &format!("{link}/pay"), WHATSAPP).await;
    assert_eq!(checkout.status(), 303);
    assert!(checkout.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://pay.example/c?"));
    assert_eq!(
        clicks_of(&env, "INV-PREVIEW").await,
        [(json!(1), json!("email"), json!("pay link opened 2 time(s)"))]
    );
    assert_eq!(
        metric(&env, "payrelay_paylink_clicks_total").await,
        "payrelay_paylink_clicks_total 2"
    );
    assert!(
        metric(&env, &series("whatsapp")).await.ends_with(" 1"),
        "the checkout is no preview"
    );
    settle(&env, "INV-SETTLE-2").await;
    assert_eq!(
        env.events_named("invoice.clicked").len(),
        1,
        "the first click's event, once"
    );
    env.finish().await;
}

/// An SMS-and-email service on `clock`, links lasting `ttl`.
fn sms_and_email(ttl: &'static str, clock: Option<Arc<ManualClock>>) -> Options {
    Options {
        paylink_ttl: ttl,
        channels: "[channels.sms]\nprovider = \"file\"\nrate_per_second = 50\n".into(),
        clock,
        ..Options::default()
    }
}

/// Revision `revision` of `id` for `amount` due `due`, sent on `channel`.
fn revision(id: &str, revision: i64, amount: &str, due: &str, channel: &str) -> Value {
    let mut message = invoice(id, "rev@example.com");
    message["revision"] = json!(revision);
    message["amount"] = json!(amount);
    message["due_date"] = json!(due);
    message["channels"] = json!([channel]);
    message
}

/// The pay link of the one SMS the file provider wrote.
fn sms_link(env: &TestEnv) -> String {
    let dir = env.dir.path().join("var/outbox/sms");
    let files: Vec<_> = std::fs::read_dir(&dir).expect("the SMS outbox").collect();
    assert_eq!(files.len(), 1, "one SMS");
    let file = files.into_iter().next().unwrap().unwrap().path();
    let sms: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    common::pay_link(sms["text"].as_str().expect("SMS text"), &env.base_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_revisions_link_shows_and_charges_the_newest_and_counts_for_its_own_channel() {
    let env = TestEnv::start_with(sms_and_email("45d", None)).await;
    env.publish(&[revision("INV-REV", 1, "1234.50", "2026-12-01", "sms")])
        .await;
    wait_for_invoice(&env, "INV-REV", "invoice.sent", 1).await;
    let old = sms_link(&env);
    let page = get_as(&env, &old, WHATSAPP).await.text().await.unwrap();
    assert!(
        !page.contains("se actualizó"),
        "no notice while it is the newest: {page}"
    );

    env.publish(&[revision("INV-REV", 2, "1500.00", "2026-12-15", "email")])
        .await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let new = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    wait_for_invoice(&env, "INV-REV", "invoice.sent", 2).await;
    assert_ne!(old, new);

    let page = get_as(&env, &old, BROWSER).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<div class=\"amount\">$1,500.00</div>"),
        "revision 2's amount: {html}"
    );
    assert!(
        html.contains("15 de diciembre de 2026"),
        "revision 2's due date: {html}"
    );
    assert!(!html.contains("1,234.50"), "nothing of revision 1: {html}");
    assert!(
        html.contains("Esta solicitud de pago se actualizó"),
        "the notice, in the customer's language: {html}"
    );
    let checkout_path = format!("{}/pay", old.trim_start_matches(&env.base_url));
    assert!(html.contains(&format!("href=\"{checkout_path}\"")), "{html}");
    let current = get_as(&env, &new, WHATSAPP).await.text().await.unwrap();
    assert!(
        current.contains("$1,500.00") && !current.contains("se actualizó"),
        "{current}"
    );

    let checkout = get_as(&env, &format!("{old}/pay"), BROWSER).await;
    assert_eq!(checkout.status(), 303);
    let token = old.rsplit('/').next().unwrap();
    assert_eq!(
        checkout.headers()["location"].to_str().unwrap(),
        format!("https://pay.example/c?inv=INV-REV&amt=1500.00&cur=MXN&t={token}"),
        "revision 2's checkout, with the link clicked"
    );
    assert_eq!(
        clicks_of(&env, "INV-REV").await,
        [(json!(1), json!("sms"), json!("pay link opened 2 time(s)"))],
        "the old link's channel earned the clicks; revision 2's email has none"
    );
    let clicked = wait_for_invoice(&env, "INV-REV", "invoice.clicked", 1).await;
    assert_eq!(
        (&clicked[0]["revision"], &clicked[0]["channel"]),
        (&json!(1), &json!("sms"))
    );
    assert!(
        clicked[0]["detail"].as_str().unwrap().contains("revision 2"),
        "{}",
        clicked[0]
    );

    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-REV"})])
        .await;
    let paid = wait_for_invoice(&env, "INV-REV", "invoice.paid", 1).await;
    assert_eq!((&paid[0]["revision"], &paid[0]["channel"]), (&json!(2), &json!("sms")));
    for link in [&old, &new] {
        let page = get_as(&env, link, BROWSER).await;
        assert_eq!(page.status(), 200, "{link}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("Esta factura ya está pagada")
                && html.contains("$1,500.00")
                && !html.contains("class=\"pay\""),
            "already paid: {html}"
        );
        let back = get_as(&env, &format!("{link}/pay"), BROWSER).await;
        assert_eq!(back.status(), 303);
        assert!(
            back.headers()["location"].to_str().unwrap().starts_with("/p/"),
            "back to the page, not checkout"
        );
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_link_is_gone_when_the_newest_is_cancelled_and_when_its_own_time_is_up() {
    let clock = Arc::new(ManualClock::at_ms(NOW_MS));
    let env = TestEnv::start_with(sms_and_email("1h", Some(clock.clone()))).await;
    env.publish(&[revision("INV-OLD", 1, "100.00", "2026-12-01", "sms")])
        .await;
    wait_for_invoice(&env, "INV-OLD", "invoice.sent", 1).await;
    let old = sms_link(&env);
    // Revision 2 half an hour later: its link lasts half an hour longer.
    clock.set_ms(NOW_MS + 1_800_000);
    env.publish(&[revision("INV-OLD", 2, "200.00", "2026-12-01", "email")])
        .await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let new = common::pay_link(&common::parts(&emails[0].data).1, &env.base_url);
    wait_for_invoice(&env, "INV-OLD", "invoice.sent", 2).await;
    assert_eq!(get_as(&env, &old, BROWSER).await.status(), 200);

    clock.set_ms(NOW_MS + 3_600_000);
    let expired = get_as(&env, &old, BROWSER).await;
    assert_eq!(expired.status(), 410, "the clicked link's own expiry decides");
    let page = expired.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"es\">")
            && page.contains("<h1>ACME Energy</h1>")
            && page.contains("Este enlace de pago venció.")
            && page.contains("comuníquese con ACME Energy y pida un enlace nuevo"),
        "in the customer's language, naming the biller and what to do: {page}"
    );
    assert_eq!(get_as(&env, &format!("{old}/pay"), BROWSER).await.status(), 410);
    assert_eq!(
        get_as(&env, &new, BROWSER).await.status(),
        200,
        "revision 2's link still lasts"
    );
    let clicks = clicks_of(&env, "INV-OLD").await;
    assert_eq!(
        clicks.len(),
        2,
        "the old link's open before it expired, and the new one's: {clicks:?}"
    );

    env.publish(&[json!({"kind": "invoice_cancelled", "biller_id": "acme", "invoice_id": "INV-OLD"})])
        .await;
    wait_for_invoice(&env, "INV-OLD", "invoice.cancelled", 1).await;
    for link in [&old, &new] {
        assert_eq!(get_as(&env, link, BROWSER).await.status(), 410, "{link}");
        assert_eq!(
            get_as(&env, &format!("{link}/pay"), BROWSER).await.status(),
            410,
            "{link}"
        );
    }
    // A cancelled newest revision ends the old link before its expiry would.
    clock.set_ms(NOW_MS + 1_800_000);
    let cancelled = get_as(&env, &old, BROWSER).await;
    assert_eq!(cancelled.status(), 410);
    let page = cancelled.text().await.unwrap();
    assert!(
        page.contains("ACME Energy canceló esta solicitud de pago.") && page.contains("Factura INV-OLD"),
        "{page}"
    );
    env.finish().await;
}

/// GET with an `Accept-Language`.
async fn get_in(env: &TestEnv, url: &str, languages: &str) -> reqwest::Response {
    env.http
        .get(format!("{}{url}", env.base_url))
        .header("accept-language", languages)
        .send()
        .await
        .expect("http request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_we_do_not_know_answers_in_the_browsers_language_and_names_no_one() {
    let env = TestEnv::start_with(Options {
        http: "unknown_links_per_minute = 4".into(),
        ..Options::default()
    })
    .await;
    let cases = [
        ("de-DE,de;q=0.9,en;q=0.8", "de", "Link nicht gefunden"),
        ("fr-FR, pt-BR;q=0.7, es;q=0.5", "pt", "Link não encontrado"),
        ("es-ES,es;q=0.9", "es", "Enlace no encontrado"),
        ("ja", "en", "Link not found"),
    ];
    for (i, (languages, lang, title)) in cases.into_iter().enumerate() {
        let page = get_in(&env, &guess(i), languages).await;
        assert_eq!(page.status(), 404);
        assert_page_headers(&page, languages);
        let html = page.text().await.unwrap();
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{languages}: {html}");
        assert!(html.contains(&format!("<h2>{title}</h2>")), "{languages}: {html}");
        assert!(
            !html.contains("ACME") && !html.contains("class=\"brand\""),
            "no biller: {html}"
        );
    }
    let refused = get_in(&env, &guess(9), "es-MX").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_page_headers(&refused, "the 429 page");
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"es\">") && html.contains("Demasiadas solicitudes"),
        "{html}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billers_logo_is_served_by_payrelay_with_its_type_a_long_cache_and_the_page_headers() {
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("globex.svg");
    let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"80\" height=\"24\"><rect width=\"80\" height=\"24\" fill=\"#7b2cbf\"/></svg>";
    std::fs::write(&logo, svg).unwrap();
    let env = TestEnv::start_with(Options {
        billers: format!(
            "[billers.globex]\nname = \"Globex\"\ncheckout_url = \"https://checkout.globex.example/{{token}}\"\n\
             brand_color = \"#7B2CBF\"\nlogo = \"{}\"\nsupport = \"help@globex.example\"\n",
            logo.display()
        ),
        ..Options::default()
    })
    .await;
    let mut message = invoice("INV-GLOBEX", "logo@example.com");
    message["biller_id"] = json!("globex");
    env.publish(&[message]).await;
    let emails = env.smtp.wait_for(1, WAIT).await;
    let (_, text, html) = common::parts(&emails[0].data);
    assert!(
        html.contains("bgcolor=\"#7b2cbf\""),
        "the email's Pay button is a cell of the brand colour: {html}"
    );
    let link = common::pay_link(&text, &env.base_url);
    let page = get_as(&env, &link, BROWSER).await.text().await.unwrap();
    let src = page
        .split("<img src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page shows the logo")
        .replace("&#x3D;", "=");
    assert!(src.starts_with("/brand/globex/logo?v="), "{src}");
    assert!(
        page.contains("checkout.globex.example") && page.contains("help@globex.example"),
        "the checkout's host and the support line: {page}"
    );

    let served = env.get(&src).await;
    assert_eq!(served.status(), 200);
    let header = |name: &str| served.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "image/svg+xml");
    assert!(
        header("cache-control").contains("max-age=31536000"),
        "{}",
        header("cache-control")
    );
    assert!(header("content-security-policy").contains("default-src 'none'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(served.text().await.unwrap(), svg);
    let none = env.get("/brand/acme/logo").await;
    assert_eq!(none.status(), 404, "acme has no logo");
    assert_page_headers(&none, "a biller without a logo");
    env.finish().await;
}
