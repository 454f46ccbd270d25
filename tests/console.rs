//! The web console at `/console` (docs/console.md), on the real service:
//! RabbitMQ, a SQLite store, SMTP. Signing in as the admin and as a biller,
//! what a biller cannot see, the forms' CSRF guard, dead letters browsed,
//! sent back after a config fix and discarded, and the rules dry run.

mod common;

use std::time::Duration;

use common::{invoice, messages_in_queue, Options, TestEnv, WAIT};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::json;

const ADMIN_TOKEN: &str = "test-secret-payrelay_admin_token";
const BETA_TOKEN: &str = "beta-console-token-0123456789";

/// The test service with a second biller, beta, that has its own token.
async fn start() -> TestEnv {
    TestEnv::start_with(Options {
        billers: format!(
            "[billers.beta]\nname = \"Beta\"\ncheckout_url = \"https://pay.beta.example/{{token}}\"\napi_token = \"{BETA_TOKEN}\"\n"
        ),
        ..Options::default()
    })
    .await
}

/// A browser's session: its cookie, and the CSRF token its pages carry.
struct Visitor {
    cookie: String,
}

/// The text of a page with the few entities handlebars writes decoded.
async fn text(response: Response) -> String {
    response
        .text()
        .await
        .expect("body")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        body.append_pair(name, value);
    }
    body.finish()
}

async fn post(env: &TestEnv, path: &str, cookie: Option<&str>, origin: Option<&str>, body: String) -> Response {
    let mut request = env
        .http
        .post(format!("{}{path}", env.base_url))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    if let Some(origin) = origin {
        request = request.header(ORIGIN, origin);
    }
    request.send().await.expect("http request")
}

/// Signs in with `token` through the form, as a browser on our origin does.
async fn sign_in(env: &TestEnv, token: &str) -> Visitor {
    let answer = post(
        env,
        "/console/sign-in",
        None,
        Some(&env.base_url),
        form(&[("token", token)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let set = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    Visitor { cookie }
}

impl Visitor {
    async fn get(&self, env: &TestEnv, path: &str) -> Response {
        env.http
            .get(format!("{}{path}", env.base_url))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("http request")
    }

    /// The CSRF token in the page's forms.
    async fn csrf(&self, env: &TestEnv) -> String {
        let page = text(self.get(env, "/console/rules").await).await;
        let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        page[at..at + 64].to_owned()
    }

    async fn post(&self, env: &TestEnv, path: &str, fields: &[(&str, &str)]) -> Response {
        post(env, path, Some(&self.cookie), Some(&env.base_url), form(fields)).await
    }
}

#[tokio::test]
async fn the_admin_and_a_biller_sign_in_and_a_wrong_token_is_refused() {
    let env = start().await;

    let sign_in_page = env.get("/console").await;
    assert_eq!(sign_in_page.status(), StatusCode::OK);
    let headers = sign_in_page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    let page = text(sign_in_page).await;
    assert!(page.contains("name=\"token\""), "{page}");
    assert!(
        !page.contains("src=") && !page.contains("://"),
        "no asset from elsewhere: {page}"
    );

    let answer = post(
        &env,
        "/console/sign-in",
        None,
        Some(&env.base_url),
        form(&[("token", ADMIN_TOKEN)]),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let set_cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "http here: {set_cookie}");
    assert!(!set_cookie.contains(ADMIN_TOKEN), "the token is not the cookie");
    let admin = Visitor {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
    };
    let page = text(admin.get(&env, "/console/invoices").await).await;
    assert!(page.contains("signed in as admin"), "{page}");

    let beta = sign_in(&env, BETA_TOKEN).await;
    let page = text(beta.get(&env, "/console/invoices").await).await;
    assert!(page.contains("signed in as biller beta"), "{page}");

    let wrong = post(
        &env,
        "/console/sign-in",
        None,
        Some(&env.base_url),
        form(&[("token", "not-a-token")]),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(text(wrong).await.contains("not known here"));

    // Without a session, or with a forged one, a page sends to the sign-in.
    for cookie in ["", "payrelay_console=admin|9999999999|00"] {
        let answer = env
            .http
            .get(format!("{}/console/invoices", env.base_url))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{cookie}");
        assert_eq!(answer.headers()[LOCATION], "/console");
    }

    // Signing out clears the cookie.
    let csrf = admin.csrf(&env).await;
    let out = admin.post(&env, "/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    env.finish().await;
}

#[tokio::test]
async fn an_invoice_shows_its_timeline_with_contacts_masked_and_another_billers_is_not_found() {
    let env = start().await;
    env.publish(&[invoice("INV-C1", "maria@example.com")]).await;
    env.wait_for("invoice.sent", 1).await;
    let admin = sign_in(&env, ADMIN_TOKEN).await;

    for q in ["INV-C1", "C-9981"] {
        let page = text(admin.get(&env, &format!("/console/invoices?q={q}")).await).await;
        assert!(page.contains("/console/invoices/acme/INV-C1"), "search {q}: {page}");
        assert!(page.contains("M••• L•••") && !page.contains("María"), "{page}");
    }
    let answer = admin.get(&env, "/console/invoices/acme/INV-C1").await;
    assert_eq!(answer.status(), StatusCode::OK);
    let page = text(answer).await;
    for shown in ["m•••@example.com", "+52•••••5678", "received", "sent", "1234.50 MXN"] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    assert!(
        !page.contains("maria@example.com") && !page.contains("12345678<"),
        "{page}"
    );

    let beta = sign_in(&env, BETA_TOKEN).await;
    let answer = beta.get(&env, "/console/invoices/acme/INV-C1").await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let page = text(beta.get(&env, "/console/invoices?q=INV-C1").await).await;
    assert!(
        page.contains("No invoice with that id") && !page.contains("/console/invoices/acme/"),
        "{page}"
    );
    assert_eq!(
        admin.get(&env, "/console/invoices/acme/NO-SUCH").await.status(),
        StatusCode::NOT_FOUND
    );
    env.finish().await;
}

#[tokio::test]
async fn a_post_without_the_csrf_token_or_from_another_site_is_refused() {
    let env = start().await;
    let admin = sign_in(&env, ADMIN_TOKEN).await;
    let csrf = admin.csrf(&env).await;
    let routing = "[routing]\ndefault = [\"email\"]\n";

    let without = admin
        .post(&env, "/console/rules/dry-run", &[("routing", routing)])
        .await;
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let wrong = admin
        .post(
            &env,
            "/console/rules/dry-run",
            &[("routing", routing), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let body = form(&[("routing", routing), ("csrf", &csrf)]);
    let cross = post(
        &env,
        "/console/rules/dry-run",
        Some(&admin.cookie),
        Some("https://evil.example"),
        body,
    )
    .await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let cross_sign_in = post(
        &env,
        "/console/sign-in",
        None,
        Some("https://evil.example"),
        form(&[("token", ADMIN_TOKEN)]),
    )
    .await;
    assert_eq!(cross_sign_in.status(), StatusCode::FORBIDDEN);
    // Another session's token is not this one's.
    let beta = sign_in(&env, BETA_TOKEN).await;
    let borrowed = beta
        .post(&env, "/console/rules/dry-run", &[("routing", routing), ("csrf", &csrf)])
        .await;
    assert_eq!(borrowed.status(), StatusCode::FORBIDDEN);

    let ok = admin
        .post(&env, "/console/rules/dry-run", &[("routing", routing), ("csrf", &csrf)])
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    env.finish().await;
}

/// The dead letters page's first send-back form's letter id.
fn first_letter_id(page: &str) -> String {
    let at = page.find("/console/dead-letters/").expect("a dead letter form") + 22;
    page[at..].split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_dead_letter_is_listed_without_loss_sent_back_after_the_fix_and_another_discarded() {
    let mut env = start().await;
    let mut globex = invoice("G-1", "maria@example.com");
    globex["biller_id"] = json!("globex");
    env.publish(&[globex]).await;
    let dead = env.config.broker.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while messages_in_queue(&dead).await < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let admin = sign_in(&env, ADMIN_TOKEN).await;
    for _ in 0..2 {
        let page = text(admin.get(&env, "/console/dead-letters").await).await;
        assert!(
            page.contains("biller_id \"globex\" is not a biller in payrelay's configuration"),
            "{page}"
        );
        assert!(page.contains("1 in all"), "{page}");
        assert!(!page.contains(">unknown<"), "payrelay recorded when: {page}");
        assert!(!page.contains("maria@example.com"), "contacts masked: {page}");
    }
    assert_eq!(messages_in_queue(&dead).await, 1, "browsing leaves the message there");

    // A biller sees neither another biller's dead letters nor acts on them.
    let beta = sign_in(&env, BETA_TOKEN).await;
    let page = text(beta.get(&env, "/console/dead-letters").await).await;
    assert!(page.contains("No dead letters") && !page.contains("globex"), "{page}");
    let admin_page = text(admin.get(&env, "/console/dead-letters").await).await;
    let id = first_letter_id(&admin_page);
    let beta_csrf = beta.csrf(&env).await;
    let refused = beta
        .post(
            &env,
            &format!("/console/dead-letters/{id}/send-back"),
            &[("csrf", &beta_csrf)],
        )
        .await;
    assert_eq!(refused.headers()[LOCATION], "/console/dead-letters?done=not-found");
    assert_eq!(messages_in_queue(&dead).await, 1);

    // The operator adds globex and restarts; the message goes back and is sent.
    let acme = env.config.billers["acme"].clone();
    env.config.billers.insert("globex".into(), acme);
    env.restart().await;
    let admin = sign_in(&env, ADMIN_TOKEN).await;
    let csrf = admin.csrf(&env).await;
    let sent_back = admin
        .post(
            &env,
            &format!("/console/dead-letters/{id}/send-back"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(sent_back.headers()[LOCATION], "/console/dead-letters?done=sent-back");
    let sent = env
        .wait_events("globex's invoice sent", |events| {
            events
                .iter()
                .any(|e| e["event"] == "invoice.sent" && e["biller_id"] == "globex")
        })
        .await;
    assert!(!sent.is_empty());
    let emails = env.smtp.wait_for(1, WAIT).await;
    assert_eq!(emails.len(), 1);
    assert_eq!(messages_in_queue(&dead).await, 0);

    // Of two messages that are not invoices at all, the first is discarded
    // and the other stays.
    env.publish_raw(&[b"not json".to_vec(), b"not json either".to_vec()])
        .await;
    while messages_in_queue(&dead).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no dead letters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = text(admin.get(&env, "/console/dead-letters").await).await;
    assert!(page.contains("2 in all"), "{page}");
    let id = first_letter_id(&page);
    let discarded = admin
        .post(&env, &format!("/console/dead-letters/{id}/discard"), &[("csrf", &csrf)])
        .await;
    assert_eq!(discarded.headers()[LOCATION], "/console/dead-letters?done=discarded");
    assert_eq!(messages_in_queue(&dead).await, 1);
    let page = text(admin.get(&env, "/console/dead-letters?done=discarded").await).await;
    assert!(page.contains("was discarded") && page.contains("1 in all"), "{page}");
    assert!(page.contains("not json either") && !page.contains(&id), "{page}");
    env.finish().await;
}

#[tokio::test]
async fn the_rules_dry_run_shows_the_replay_report_of_an_edited_section() {
    let env = start().await;
    let mut small = invoice("INV-S", "small@example.com");
    small["amount"] = json!("50.00");
    env.publish(&[invoice("INV-B", "big@example.com"), small]).await;
    env.wait_for("invoice.sent", 2).await;

    let admin = sign_in(&env, ADMIN_TOKEN).await;
    let page = text(admin.get(&env, "/console/rules").await).await;
    assert!(
        page.contains("[routing]") && page.contains("default = [\"email\"]"),
        "{page}"
    );
    let csrf = admin.csrf(&env).await;
    let edited = "[routing]\ndefault = [\"email\"]\n\n[[routing.rules]]\nname = \"big ones\"\n\
                  min_amount = 1000\nchannels = [\"email\"]\nstrategy = \"all\"\n";
    let answer = admin
        .post(&env, "/console/rules/dry-run", &[("routing", edited), ("csrf", &csrf)])
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let page = text(answer).await;
    for line in [
        "invoices compared: 2",
        "  unchanged: 1",
        "  changed: 1",
        "default -> rule \"big ones\": 1 invoice",
        "acme/INV-B#1",
    ] {
        assert!(page.contains(line), "{line:?} in {page}");
    }

    // A biller's dry run covers its own invoices only: beta has none.
    let beta = sign_in(&env, BETA_TOKEN).await;
    let beta_csrf = beta.csrf(&env).await;
    let page = text(
        beta.post(
            &env,
            "/console/rules/dry-run",
            &[("routing", edited), ("csrf", &beta_csrf)],
        )
        .await,
    )
    .await;
    assert!(page.contains("invoices compared: 0"), "{page}");

    // Problems are listed with their keys, as `payrelay check` lists them.
    let broken = "[routing]\ndefault = [\"sms\"]\n[[routing.rules]]\nbiller = \"nobody\"\nchannels = [\"email\"]\n";
    let page = text(
        admin
            .post(&env, "/console/rules/dry-run", &[("routing", broken), ("csrf", &csrf)])
            .await,
    )
    .await;
    assert!(
        page.contains("routing.default") && page.contains("routing.rules[0].biller"),
        "{page}"
    );
    assert!(!page.contains("invoices compared"), "{page}");
    env.finish().await;
}

#[tokio::test]
async fn the_funnel_shows_a_billers_figures_with_a_daily_chart_and_not_another_billers() {
    let env = start().await;
    env.publish(&[
        invoice("INV-F1", "one@example.com"),
        invoice("INV-F2", "two@example.com"),
    ])
    .await;
    env.wait_for("invoice.sent", 2).await;
    env.publish(&[json!({"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "INV-F1"})])
        .await;
    env.wait_for("invoice.paid", 1).await;

    let admin = sign_in(&env, ADMIN_TOKEN).await;
    let start = admin.get(&env, "/console").await;
    assert_eq!(
        start.headers()[LOCATION],
        "/console/funnel",
        "signed in, the console opens on the funnel"
    );
    let answer = admin
        .get(&env, "/console/funnel?biller=acme&period=today&by=channel")
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let page = text(answer).await;
    for shown in [
        "Received<strong>2</strong>",
        "Sent<strong>2</strong>",
        "Paid<strong>1</strong>",
        "50.0 % of received",
        "<td>MXN</td><td>2469.00</td><td>1234.50</td>",
        "<svg",
        ": 2 received</title>",
        ": 1 paid</title>",
        "<td>email</td><td>2</td>",
    ] {
        assert!(page.contains(shown), "{shown:?} in {page}");
    }
    assert!(!page.contains("<script"), "no script: {page}");

    // A biller sees its own funnel, and another biller's is not found.
    let beta = sign_in(&env, BETA_TOKEN).await;
    let own = text(beta.get(&env, "/console/funnel?period=7d").await).await;
    assert!(
        own.contains("Funnel <span class=\"muted\">beta,") && own.contains("Received<strong>0</strong>"),
        "{own}"
    );
    let other = beta.get(&env, "/console/funnel?biller=acme").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    env.finish().await;
}

#[tokio::test]
async fn on_the_operators_address_the_console_signs_in_and_its_forms_work() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let env = TestEnv::start_with(Options {
        http: format!("admin_listen = \"127.0.0.1:{port}\""),
        ..Options::default()
    })
    .await;
    assert_eq!(
        env.get("/console").await.status(),
        StatusCode::NOT_FOUND,
        "not on the public address"
    );

    // The browser's Origin is the operators' address, not public_base_url.
    let admin_base = format!("http://127.0.0.1:{port}");
    let send = |path: &str, cookie: Option<&str>, body: String| {
        let mut request = env
            .http
            .post(format!("{admin_base}{path}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ORIGIN, &admin_base)
            .header("sec-fetch-site", "same-origin")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    let signed_in = send("/console/sign-in", None, form(&[("token", ADMIN_TOKEN)]))
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = env
        .http
        .get(format!("{admin_base}/console/rules"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let page = text(page).await;
    let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
    let csrf = page[at..at + 64].to_owned();
    let routing = "[routing]\ndefault = [\"email\"]\n";
    let dry_run = send(
        "/console/rules/dry-run",
        Some(&cookie),
        form(&[("routing", routing), ("csrf", &csrf)]),
    )
    .await
    .unwrap();
    assert_eq!(dry_run.status(), StatusCode::OK);
    assert!(text(dry_run).await.contains("invoices compared: 0"));
    env.finish().await;
}
