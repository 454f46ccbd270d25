//! `GET /v1/stats` end to end: invoices through the broker, pay pages
//! opened by a link previewer and by a person, and the figures the API
//! then answers, on the real SQLite store; who may see which biller's.

mod common;

use common::{invoice, test_secrets, Options, TestEnv, WAIT};
use serde_json::Value;

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

async fn stats(env: &TestEnv, query: &str, token: &str) -> (u16, Value) {
    let response = env
        .http
        .get(format!("{}/v1/stats{query}", env.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("the stats API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_opens_nothing_and_a_persons_click_counts_once() {
    let env = TestEnv::start_with(Options {
        billers: "[billers.beta]\ncheckout_url = \"https://pay.example/b/{token}\"\napi_token = \"beta-token\"".into(),
        ..Options::default()
    })
    .await;
    env.publish(&[
        invoice("INV-PREVIEWED", "previewed@example.com"),
        invoice("INV-OPENED", "opened@example.com"),
    ])
    .await;
    let emails = env.smtp.wait_for(2, WAIT).await;
    env.wait_for("invoice.sent", 2).await;
    for email in &emails {
        let (_, body, _) = common::parts(&email.data);
        let link = common::pay_link(&body, &env.base_url);
        let agent = if email.recipients.iter().any(|to| to.contains("previewed")) {
            SLACK
        } else {
            BROWSER
        };
        for _ in 0..2 {
            let page = env.http.get(&link).header("user-agent", agent).send().await.unwrap();
            assert_eq!(page.status(), 200, "{agent}");
        }
    }
    env.wait_for("invoice.clicked", 1).await;

    let admin = test_secrets("PAYRELAY_ADMIN_TOKEN").unwrap();
    let (status, figures) = stats(&env, "?biller_id=acme&by=channel", &admin).await;
    assert_eq!(status, 200, "{figures}");
    let funnel = &figures["funnel"];
    assert_eq!(
        [&funnel["received"], &funnel["sent"], &funnel["opened"], &funnel["paid"]],
        [2, 2, 1, 0],
        "{figures}"
    );
    assert_eq!(funnel["rates"]["sent_of_received"], 1.0);
    assert_eq!(funnel["amounts"][0]["currency"], "MXN");
    assert_eq!(figures["groups"][0]["key"], "email");
    assert_eq!(figures["daily"].as_array().map(Vec::len), Some(30), "the last 30 days");
    assert_eq!(figures["daily"][29]["received"], 2, "today's row is the last");

    // The admin names the biller; a biller sees only its own.
    let (status, refused) = stats(&env, "", &admin).await;
    assert_eq!((status, refused["error"].as_str().is_some()), (400, true), "{refused}");
    let (status, _) = stats(&env, "?biller_id=acme", "beta-token").await;
    assert_eq!(status, 404, "another biller's figures do not exist for beta");
    let (status, own) = stats(&env, "", "beta-token").await;
    assert_eq!(
        (status, &own["biller_id"], &own["funnel"]["received"]),
        (200, &"beta".into(), &0.into())
    );
    let (status, _) = stats(&env, "?biller_id=nobody", &admin).await;
    assert_eq!(status, 404);
    let (status, bad) = stats(&env, "?biller_id=acme&by=colour", &admin).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("by must be channel, rule or step"))
    );
    env.finish().await;
}
