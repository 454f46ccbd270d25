//! What operators deploy, checked: the Prometheus alert rules (with
//! `promtool`, which must be installed: `.ci/run` installs Debian's
//! `prometheus` package for it) and their unit tests, the Grafana
//! dashboard, that both use only metrics payrelay really exports (read from
//! its metrics registry's exposition; `tests/metrics.rs` scrapes a running
//! service), the Dockerfile and docker-compose.yml (read as text:
//! Docker need not run here), and `payrelay health`, the image's health
//! check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `promtool` in deploy/prometheus/; fails, never skips, without it.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it (Debian: apt-get install -y prometheus, as .ci/run does; \
                 or put Prometheus's promtool on PATH)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "promtool check config:\n{out}");
}

#[test]
fn the_rules_name_the_alerts_the_runbook_documents() {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let docs = read("docs/operations.md");
    let alerts: Vec<&str> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for required in [
        "PayrelayNotReady",
        "PayrelayDeadLettersGrowing",
        "PayrelayExhaustedRateHigh",
        "PayrelayChannelPaused",
        "PayrelayOutboxBacklogHigh",
        "PayrelayOutboxNotDraining",
    ] {
        assert!(alerts.contains(&required), "no alert {required} in {alerts:?}");
    }
    for alert in alerts {
        assert!(
            docs.contains(&format!("### {alert}")),
            "docs/operations.md has no runbook section for {alert}"
        );
    }
}

/// The metric names an expression selects (everything payrelay's or the
/// process's, and Prometheus's own `up`).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("payrelay_") || word.starts_with("process_") || (word == "up" && c == '{') {
            into.insert(word.clone());
        }
        word.clear();
    }
}

/// Every `expr` in a dashboard's panels, rows' panels included.
fn dashboard_exprs(panels: &Value, into: &mut Vec<String>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                into.push(expr.to_owned());
            }
        }
        dashboard_exprs(&panel["panels"], into);
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/payrelay.json")).expect("the dashboard is JSON")
}

/// The sample names a scrape can carry: each `# TYPE` family's (a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`), so a family
/// with no sample yet counts too, and every sample's own.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_one_payrelay_exports() {
    let mut used = BTreeSet::new();
    let rules = yaml("deploy/prometheus/alerts.yml");
    for rule in rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        metric_names(rule["expr"].as_str().expect("every rule has an expr"), &mut used);
    }
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    for test in tests["tests"].as_sequence().unwrap() {
        for series in test["input_series"].as_sequence().unwrap() {
            metric_names(series["series"].as_str().unwrap(), &mut used);
        }
    }
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard()["panels"], &mut exprs);
    for expr in &exprs {
        metric_names(expr, &mut used);
    }
    let mut by_template = Vec::new();
    for variable in dashboard()["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            by_template.push(query.to_owned());
        }
    }
    for query in &by_template {
        metric_names(query, &mut used);
    }
    assert!(
        used.len() > 15,
        "the rules and dashboard use payrelay's metrics: {used:?}"
    );

    let exported = exported(&every_metric_recorded());
    // `up` is Prometheus's own: whether it could scrape the target.
    let unknown: Vec<&String> = used.iter().filter(|n| *n != "up" && !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the rules or the dashboard use metrics payrelay does not export: {unknown:?}\nexported: {exported:?}"
    );
}

/// The exposition of a service's registry once every kind of metric was
/// recorded (a labelled family shows only once it has a sample), with
/// the readiness and store counts a scrape sets.
fn every_metric_recorded() -> String {
    use payrelay::domain::ChannelName;
    let metrics = payrelay::metrics::Metrics::new();
    metrics.received();
    metrics.invoice("exhausted");
    metrics.dead_letter();
    metrics.send(ChannelName::Email, "sent");
    metrics.send_latency(ChannelName::Email, Duration::from_millis(20));
    metrics.step("sent");
    metrics.click();
    metrics.preview(ChannelName::Email, "head");
    metrics.events_published(1);
    metrics.rate_limit_fallback(ChannelName::Sms);
    metrics.channel_known(ChannelName::Email);
    metrics.channel_paused(ChannelName::Sms, "failures");
    metrics.set_ready("broker", true);
    metrics.set_store_gauges(&payrelay::metrics::StoreGauges::default());
    metrics.render()
}

#[test]
fn the_dashboard_is_importable_picks_its_data_source_and_has_every_panel() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "payrelay");
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable: {variables:#?}"
    );
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique");
    }
    for panel in &panels {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} shows something");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for required in [
        "Readiness",
        "Invoices received and handled",
        "Sends by channel and outcome",
        "Failed sends",
        "Dead letters",
        "Outbox backlog",
        "Held invoices",
        "Journey steps",
        "Channel pauses",
        "Previews",
        "Pay page clicks",
    ] {
        assert!(titles.contains(&required), "no panel {required} in {titles:?}");
    }
}

/// The Dockerfile's lines, continuation lines joined.
fn dockerfile() -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() && current.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

#[test]
fn the_image_caches_dependencies_runs_unprivileged_and_checks_its_health() {
    let lines = dockerfile();
    let position = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    // The build stage: the manifests and a build of the dependencies alone,
    // then the sources.
    let manifests = position(&|l| l.starts_with("COPY Cargo.toml Cargo.lock")).expect("the manifests are copied first");
    let sources = position(&|l| l == "COPY . .").expect("then the sources");
    assert!(
        lines[manifests..sources].iter().any(|l| l.contains("cargo build")),
        "the dependencies are built between the two: {lines:#?}"
    );
    // The image that runs.
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let image = &lines[last_from..];
    let user = image
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets its USER");
    let user = user.split(':').next().unwrap().trim();
    assert!(!["root", "0"].contains(&user), "runs as {user}");
    assert!(
        image.iter().any(|l| l.contains("useradd") && l.contains(user)),
        "the image creates {user}"
    );
    let healthcheck = image
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains("CMD") && healthcheck.contains("\"payrelay\", \"health\""),
        "{healthcheck}"
    );
    let cmd = position(&|l| l.starts_with("CMD ")).unwrap();
    let user_at = position(&|l| l.starts_with("USER ")).unwrap();
    assert!(user_at < cmd, "USER comes before the service starts");
    for from in lines.iter().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t);
        assert!(tag.is_some_and(|t| t != "latest"), "{from}: a tag, not latest");
    }
}

/// An exact version: `1.2.3`, `v1.2.3`, `3.13.7-management`.
fn exact_tag(tag: &str) -> bool {
    let version = tag.trim_start_matches('v').split('-').next().unwrap_or_default();
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn compose_pins_every_image_and_gives_payrelay_longer_than_its_shutdown_deadline() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    for (name, service) in services {
        if let Some(image) = service["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
            assert!(exact_tag(tag), "{name:?}: {image} is not pinned to an exact version");
        } else {
            assert!(service["build"].is_string(), "{name:?} is built here or pinned");
        }
    }
    assert!(!exact_tag("latest") && !exact_tag("3.13-management") && exact_tag("v1.21.8"));

    let payrelay = &compose["services"]["payrelay"];
    let grace = payrelay["stop_grace_period"]
        .as_str()
        .map(|g| humantime::parse_duration(g).unwrap())
        .expect("payrelay has a stop_grace_period");
    // The deadline it runs with: the environment's, else config.toml's.
    let deadline = match payrelay["environment"]["PAYRELAY__BROKER__SHUTDOWN_DEADLINE"].as_str() {
        Some(d) => humantime::parse_duration(d).unwrap(),
        None => {
            payrelay::config::Config::load(&repo("config.toml"))
                .unwrap()
                .broker
                .shutdown_deadline
        }
    };
    // In-flight invoices get the deadline; then the scheduler, the HTTP
    // server and the outbox stop, which takes a few seconds more.
    assert!(
        grace >= deadline + Duration::from_secs(10),
        "stop_grace_period {grace:?} leaves less than 10 s after the shutdown deadline {deadline:?}"
    );
}

/// A server that answers `/readyz` with `code`; its port.
async fn readyz_answering(code: StatusCode) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/readyz",
        axum::routing::get(move || async move { (code, "broker: ok\nstore: unavailable\n") }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn health(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrelay"))
        .arg("--config")
        .arg(repo("config.toml"))
        .arg("health")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("PAYRELAY_CONFIG")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_only_when_readyz_answers_200_and_says_what_it_answered() {
    let ready = readyz_answering(StatusCode::OK).await;
    let (code, out) = health(&["--url", &format!("http://127.0.0.1:{ready}/readyz")], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("broker: ok"), "{out}");

    let not_ready = readyz_answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let (code, out) = health(&["--url", &format!("http://127.0.0.1:{not_ready}/readyz")], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("503") && out.contains("store: unavailable"), "{out}");

    // Nothing listens there any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, out) = health(&["--url", &format!("http://127.0.0.1:{closed}/readyz")], &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no answer from"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_the_configs_listen_address_on_loopback_when_it_listens_everywhere() {
    let port = readyz_answering(StatusCode::OK).await;
    // As in the container: docker-compose.yml sets the listen address.
    let listen = [("PAYRELAY__HTTP__LISTEN", format!("0.0.0.0:{port}"))];
    let (code, out) = health(&[], &listen).await;
    assert_eq!(code, 0, "{out}");
    let elsewhere = [("PAYRELAY__HTTP__LISTEN", "0.0.0.0:1".to_owned())];
    let (code, out) = health(&["--timeout", "2s"], &elsewhere).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("http://127.0.0.1:1/readyz"), "{out}");
}
