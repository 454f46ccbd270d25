use super::*;

use std::collections::BTreeSet;

use crate::channels::email::{EmailConfig, Transport};

/// The smallest config that loads: one biller and file email.
const MINIMAL: &str = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}&amt={amount}&cur={currency}"

[channels.email]
transport = "file"
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

fn base() -> PathBuf {
    PathBuf::from("/etc/payrelay")
}

fn load(text: &str) -> Config {
    Config::from_toml(text, &base(), &no_env).unwrap_or_else(|problems| panic!("config refused: {problems:#?}"))
}

fn load_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    Config::from_toml(text, &base(), env).unwrap_or_else(|problems| panic!("config refused: {problems:#?}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::from_toml(text, &base(), &no_env) {
        Ok(c) => panic!("config accepted: {c:#?}"),
        Err(problems) => problems,
    }
}

fn keys(problems: &[Problem]) -> BTreeSet<String> {
    problems.iter().map(|p| p.key.clone()).collect()
}

fn set_of(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// MINIMAL with `extra` appended (TOML tables can be added after it).
fn minimal_and(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

fn email(config: &Config) -> &EmailConfig {
    config.channels.email.as_ref().expect("email configured")
}

#[test]
fn a_minimal_config_loads_with_the_documented_defaults() {
    let c = load(MINIMAL);

    assert_eq!(c.base_dir, base());
    assert_eq!(c.broker.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(c.broker.queue, "payrelay.invoices");
    assert_eq!(c.broker.dead_letter_queue(), "payrelay.invoices.dead");
    assert_eq!(c.broker.events_exchange, "payrelay.events");
    assert_eq!(c.broker.prefetch, 256);
    assert_eq!(c.broker.delivery_limit, 10);

    assert_eq!(c.store.url.expose(), "sqlite:///etc/payrelay/var/payrelay.db");
    assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.http.public_base_url.as_str(), "http://127.0.0.1:8080/");
    assert!(c.http.admin_token.is_none());
    assert_eq!(c.paylink.ttl, Duration::from_secs(45 * 24 * 60 * 60));
    assert_eq!(c.templates.dir, None, "built-in templates unless a dir is given");

    let acme = &c.billers["acme"];
    assert_eq!(acme.name, "acme", "the name defaults to the id");
    assert_eq!(
        acme.checkout_url,
        "https://pay.example/c?inv={invoice_id}&amt={amount}&cur={currency}"
    );
    assert_eq!(acme.default_locale, None);
    assert!(acme.webhook_secret.is_empty());
    assert_eq!(c.billers.len(), 1);

    let e = email(&c);
    match &e.transport {
        Transport::File { dir } => assert_eq!(dir, Path::new("/etc/payrelay/var/outbox/email")),
        other => panic!("expected the file transport, got {other:?}"),
    }
    assert_eq!(e.limits.rate_per_second, 50.0);
    assert_eq!(e.limits.burst.get(), 50, "burst defaults to rate_per_second");

    assert!(c.channels.is_configured(ChannelName::Email));
    for other in [ChannelName::Sms, ChannelName::Whatsapp, ChannelName::Messenger] {
        assert!(!c.channels.is_configured(other), "{other}");
    }

    assert_eq!(c.routing.default, [ChannelName::Email]);
    assert_eq!(c.routing.default_strategy, Strategy::Fallback);
    assert!(c.routing.respect_preferences);
    assert!(c.routing.rules.is_empty());
}

#[test]
fn the_dead_letter_queue_follows_the_configured_queue() {
    let c = load(&minimal_and(
        "[broker]\nqueue = \"acme.bills\"\nevents_exchange = \"acme.events\"",
    ));
    assert_eq!(c.broker.queue, "acme.bills");
    assert_eq!(c.broker.dead_letter_queue(), "acme.bills.dead");
    assert_eq!(c.broker.events_exchange, "acme.events");
}

#[test]
fn the_contract_example_values_are_read() {
    let text = r#"
[broker]
url = "amqp://guest:guest@rabbit:5672/%2f"
queue = "payrelay.invoices"
events_exchange = "payrelay.events"
prefetch = 32
delivery_limit = 3

[store]
url = "sqlite://data/payrelay.db"

[http]
listen = "0.0.0.0:9090"
public_base_url = "https://pay.acme.example"
admin_token = "env:PAYRELAY_ADMIN_TOKEN"

[paylink]
ttl = "12h"

[billers.acme]
name = "ACME"
checkout_url = "https://pay.example/c?inv={invoice_id}&amt={amount}&cur={currency}"
default_locale = "es-MX"
webhook_secret = "env:ACME_WEBHOOK_SECRET"

[channels.email]
transport = "smtp"
smtp_url = "smtp://127.0.0.1:1025"
from = "ACME Billing <billing@acme.example>"
rate_per_second = 20
burst = 5

[templates]
dir = "templates"

[routing]
default = ["email"]
default_strategy = "all"
respect_preferences = false
"#;
    let env = |name: &str| match name {
        "PAYRELAY_ADMIN_TOKEN" => Some("admin-token-value".to_owned()),
        "ACME_WEBHOOK_SECRET" => Some("acme-webhook-value".to_owned()),
        _ => None,
    };
    let c = load_with_env(text, &env);
    assert_eq!(c.broker.prefetch, 32);
    assert_eq!(c.broker.delivery_limit, 3);
    assert_eq!(c.store.url.expose(), "sqlite:///etc/payrelay/data/payrelay.db");
    assert_eq!(c.http.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(c.http.public_base_url.as_str(), "https://pay.acme.example/");
    assert_eq!(c.paylink.ttl, Duration::from_secs(12 * 60 * 60));
    assert_eq!(c.billers["acme"].name, "ACME");
    assert_eq!(c.billers["acme"].default_locale.as_deref(), Some("es-MX"));
    assert_eq!(c.templates.dir.as_deref(), Some(Path::new("/etc/payrelay/templates")));
    let e = email(&c);
    match &e.transport {
        Transport::Smtp {
            url,
            pool_size,
            timeout,
        } => {
            assert_eq!(url.expose(), "smtp://127.0.0.1:1025");
            assert_eq!(*pool_size, 4);
            assert_eq!(*timeout, Duration::from_secs(30));
        }
        other => panic!("expected smtp, got {other:?}"),
    }
    assert_eq!(e.from.to_string(), "ACME Billing <billing@acme.example>");
    assert_eq!((e.limits.rate_per_second, e.limits.burst.get()), (20.0, 5));
    assert_eq!(c.routing.default_strategy, Strategy::All);
    assert!(!c.routing.respect_preferences);
}

#[test]
fn burst_defaults_to_the_rate_and_is_at_least_one() {
    let cases = [("50", 50), ("3", 3), ("2.5", 2), ("0.5", 1), ("0.01", 1)];
    for (rate, burst) in cases {
        let c = load(&format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/\"\n\
             [channels.email]\ntransport = \"file\"\nrate_per_second = {rate}\n"
        ));
        let limits = email(&c).limits;
        assert_eq!(limits.rate_per_second, rate.parse::<f64>().unwrap(), "rate {rate}");
        assert_eq!(limits.burst.get(), burst, "rate {rate}");
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder_and_absolute_ones_are_kept() {
    let cases = [
        (
            "/srv/payrelay",
            "var/p.db",
            "sqlite:///srv/payrelay/var/p.db",
            "out",
            "/srv/payrelay/out",
        ),
        (
            "/srv/payrelay",
            "/data/p.db",
            "sqlite:///data/p.db",
            "/spool/mail",
            "/spool/mail",
        ),
        (".", "p.db", "sqlite://./p.db", "mail", "./mail"),
    ];
    for (base_dir, db, store_url, outbox, outbox_dir) in cases {
        let text = format!(
            "[store]\nurl = \"sqlite://{db}\"\n\
             [billers.acme]\ncheckout_url = \"https://pay.example/\"\n\
             [channels.email]\ntransport = \"file\"\noutbox_dir = \"{outbox}\"\n"
        );
        let c = Config::from_toml(&text, Path::new(base_dir), &no_env).unwrap();
        assert_eq!(c.store.url.expose(), store_url, "{base_dir} {db}");
        match &email(&c).transport {
            Transport::File { dir } => assert_eq!(dir, Path::new(outbox_dir), "{base_dir} {outbox}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.resolve(Path::new("x")), Path::new(base_dir).join("x"));
    }
}

/// `[store] url` takes PostgreSQL too; its password can come from the
/// environment (the whole URL or the password alone) and never shows.
#[test]
fn postgres_store_urls_are_accepted_with_passwords_from_the_environment() {
    let store = |url: &str| format!("[store]\nurl = \"{url}\"\n{MINIMAL}");
    let env = |name: &str| match name {
        "PG_PASSWORD" => Some("s3cr:t@/x".to_owned()),
        "PG_URL" => Some("postgresql://payrelay:whole-secret@db.internal/payrelay".to_owned()),
        _ => None,
    };
    let plain = load(&store("postgres://payrelay@db.internal:5433/payrelay?sslmode=require"));
    assert_eq!(
        plain.store.url.expose(),
        "postgres://payrelay@db.internal:5433/payrelay?sslmode=require"
    );

    let from_password = load_with_env(&store("postgres://payrelay:env:PG_PASSWORD@db.internal/payrelay"), &env);
    let url = url::Url::parse(from_password.store.url.expose()).unwrap();
    let password = percent_encoding::percent_decode_str(url.password().unwrap())
        .decode_utf8()
        .unwrap();
    assert_eq!(password, "s3cr:t@/x");
    assert_eq!(url.host_str(), Some("db.internal"));
    assert_eq!(url.path(), "/payrelay");
    assert!(
        !format!("{from_password:?}").contains("s3cr"),
        "the password shows in Debug"
    );

    let whole = load_with_env(&store("env:PG_URL"), &env);
    assert_eq!(
        whole.store.url.expose(),
        "postgresql://payrelay:whole-secret@db.internal/payrelay"
    );
    assert!(
        !format!("{whole:?}").contains("whole-secret"),
        "the password shows in Debug"
    );

    let unset = problems(&store("postgres://payrelay:env:NOT_SET@db/payrelay"));
    assert_eq!(keys(&unset), BTreeSet::from(["store.url".to_owned()]));
    assert!(unset[0].message.contains("NOT_SET"), "{unset:?}");

    let literal = problems(&store("postgres://payrelay:hunter2@db:notaport/payrelay"));
    assert_eq!(keys(&literal), BTreeSet::from(["store.url".to_owned()]));
    assert!(
        !format!("{literal:?}").contains("hunter2"),
        "a problem quotes the password: {literal:?}"
    );
}

#[test]
fn load_resolves_paths_against_the_config_files_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payrelay.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.base_dir, dir.path());
    assert_eq!(
        c.store.url.expose(),
        format!("sqlite://{}", dir.path().join("var/payrelay.db").display())
    );

    let missing = Config::load(&dir.path().join("nope.toml")).unwrap_err();
    assert_eq!(missing.problems.len(), 1);
    assert!(missing.problems[0].message.contains("not found"), "{missing}");
}

/// One config with many independent mistakes: every one is listed, with its key.
#[test]
fn a_bad_config_lists_every_problem_with_its_key() {
    let text = r#"
[broker]
url = "env:AMQP_URL"
prefech = 10

[store]
url = "sqlite://var/payrelay.db"
pth = "var/other.db"

[http]
listen = 8080

[paylink]
ttl = "45 fortnights"

[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice}&amt={amount}"
webhook_secret = "env:ACME_WEBHOOK_SECRET"
defualt_locale = "es-MX"

[channels.email]
transport = "file"
rate_per_second = 0
form = "ACME <billing@acme.example>"

[channels.fax]
number = "+15005550006"

[templates]
directory = "templates"

[routing]
default = ["email", "sms"]
respect_preference = true

[[routing.rules]]
name = "erp first"
sorce = "erp"
channels = ["email", "pigeon"]

[metrics]
listen = "127.0.0.1:9100"
"#;
    let problems = problems(text);
    let expected = set_of(&[
        "broker.url",                     // env:AMQP_URL is not set
        "broker.prefech",                 // typo
        "store.pth",                      // typo
        "http.listen",                    // wrong type
        "paylink.ttl",                    // bad duration
        "billers.acme.checkout_url",      // unknown placeholder
        "billers.acme.webhook_secret",    // env:ACME_WEBHOOK_SECRET is not set
        "billers.acme.defualt_locale",    // typo
        "channels.email.rate_per_second", // zero
        "channels.email.form",            // typo
        "channels.fax",                   // unknown channel
        "templates.directory",            // typo
        "routing.default",                // sms is not configured
        "routing.respect_preference",     // typo
        "routing.rules[0].sorce",         // typo
        "routing.rules[0].channels",      // unknown channel name
        "metrics",                        // unknown section
    ]);
    assert_eq!(keys(&problems), expected, "{problems:#?}");
    assert_eq!(problems.len(), expected.len(), "one problem per mistake: {problems:#?}");

    let message = |key: &str| {
        problems
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.message.clone())
            .unwrap()
    };
    assert!(message("broker.url").contains("AMQP_URL"));
    assert!(message("billers.acme.webhook_secret").contains("ACME_WEBHOOK_SECRET"));
    assert!(message("broker.prefech").contains("unknown key"));
    assert!(message("billers.acme.checkout_url").contains("{invoice}"));
    assert!(message("routing.default").contains("sms"));
    assert!(message("routing.rules[0].channels").contains("pigeon"));
    assert!(message("channels.fax").contains("fax"));
    assert!(message("paylink.ttl").contains("45 fortnights"));
    assert!(message("metrics").contains("unknown section"));
}

/// Single mistakes on top of the minimal config: (what, extra TOML, the keys reported).
#[test]
fn each_single_mistake_is_reported_under_its_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "broker url not amqp",
            "[broker]\nurl = \"http://rabbit\"",
            &["broker.url"],
        ),
        ("prefetch zero", "[broker]\nprefetch = 0", &["broker.prefetch"]),
        (
            "prefetch too large for u16",
            "[broker]\nprefetch = 70000",
            &["broker.prefetch"],
        ),
        (
            "delivery_limit zero",
            "[broker]\ndelivery_limit = 0",
            &["broker.delivery_limit"],
        ),
        ("empty queue name", "[broker]\nqueue = \"\"", &["broker.queue"]),
        (
            "empty events exchange",
            "[broker]\nevents_exchange = \"\"",
            &["broker.events_exchange"],
        ),
        (
            "store of an unknown kind",
            "[store]\nurl = \"mysql://db/payrelay\"",
            &["store.url"],
        ),
        (
            "bad listen address",
            "[http]\nlisten = \"localhost\"\npublic_base_url = \"http://localhost\"",
            &["http.listen"],
        ),
        (
            "public_base_url not http",
            "[http]\npublic_base_url = \"ftp://pay.example\"",
            &["http.public_base_url"],
        ),
        (
            "admin token env unset",
            "[http]\nadmin_token = \"env:PAYRELAY_ADMIN_TOKEN\"",
            &["http.admin_token"],
        ),
        ("zero ttl", "[paylink]\nttl = \"0s\"", &["paylink.ttl"]),
        ("ttl as a number", "[paylink]\nttl = 45", &["paylink.ttl"]),
        (
            "a quiet-hours window that is not one",
            "[routing]\nquiet_hours = \"21:00 to 08:00\"",
            &["routing.quiet_hours"],
        ),
        ("empty default", "[routing]\ndefault = []", &["routing.default"]),
        (
            "default lists email twice",
            "[routing]\ndefault = [\"email\", \"email\"]",
            &["routing.default"],
        ),
        (
            "default names an unknown channel",
            "[routing]\ndefault = [\"telegram\"]",
            &["routing.default"],
        ),
        (
            "bad default_strategy",
            "[routing]\ndefault_strategy = \"some\"",
            &["routing.default_strategy"],
        ),
        (
            "second biller with a bad placeholder",
            "[billers.globex]\ncheckout_url = \"https://g.example/{amount_major}\"",
            &["billers.globex.checkout_url"],
        ),
        (
            "biller without checkout_url",
            "[billers.globex]\nname = \"Globex\"",
            &["billers.globex.checkout_url"],
        ),
        (
            "checkout_url not http",
            "[billers.globex]\ncheckout_url = \"mailto:pay@g.example\"",
            &["billers.globex.checkout_url"],
        ),
        (
            "checkout_url with an unclosed brace",
            "[billers.globex]\ncheckout_url = \"https://g.example/{amount\"",
            &["billers.globex.checkout_url"],
        ),
        (
            "rule with an unknown biller",
            "[[routing.rules]]\nbiller = \"globex\"\nchannels = [\"email\"]",
            &["routing.rules[0].biller"],
        ),
        (
            "rule with a bad currency",
            "[[routing.rules]]\ncurrency = [\"MXN\", \"PESO\"]\nchannels = [\"email\"]",
            &["routing.rules[0].currency"],
        ),
        (
            "rule amount not a number",
            "[[routing.rules]]\nmin_amount = \"lots\"\nchannels = [\"email\"]",
            &["routing.rules[0].min_amount"],
        ),
        (
            "rule min above max",
            "[[routing.rules]]\nmin_amount = 100\nmax_amount = \"10\"\nchannels = [\"email\"]",
            &["routing.rules[0].min_amount"],
        ),
        (
            "rule days min above max",
            "[[routing.rules]]\ndays_to_due = { min = 5, max = -5 }\nchannels = [\"email\"]",
            &["routing.rules[0].days_to_due"],
        ),
        (
            "rule days_to_due typo",
            "[[routing.rules]]\ndays_to_due = { maximum = 5 }\nchannels = [\"email\"]",
            &["routing.rules[0].days_to_due.maximum"],
        ),
        (
            "rule without channels",
            "[[routing.rules]]\nsource = \"erp\"",
            &["routing.rules[0].channels"],
        ),
        (
            "rule with an unconfigured channel",
            "[[routing.rules]]\nchannels = [\"whatsapp\"]",
            &["routing.rules[0].channels"],
        ),
        (
            "rule with a bad strategy",
            "[[routing.rules]]\nchannels = [\"email\"]\nstrategy = \"any\"",
            &["routing.rules[0].strategy"],
        ),
        (
            "second rule's typo",
            "[[routing.rules]]\nchannels = [\"email\"]\n[[routing.rules]]\nchannels = [\"email\"]\ncurency = \"MXN\"",
            &["routing.rules[1].curency"],
        ),
    ];
    for (what, extra, expected) in cases {
        let problems = problems(&minimal_and(extra));
        assert_eq!(keys(&problems), set_of(expected), "{what}: {problems:#?}");
    }
}

#[test]
fn email_mistakes_are_reported_under_channels_email() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "smtp without smtp_url",
            "transport = \"smtp\"",
            "channels.email.smtp_url",
        ),
        (
            "smtp_url not smtp",
            "transport = \"smtp\"\nsmtp_url = \"http://mail.example\"",
            "channels.email.smtp_url",
        ),
        (
            "smtp_url env unset",
            "transport = \"smtp\"\nsmtp_url = \"env:SMTP_URL\"",
            "channels.email.smtp_url",
        ),
        (
            "bad smtp timeout",
            "transport = \"smtp\"\nsmtp_url = \"smtp://mail\"\ntimeout = \"soon\"",
            "channels.email.timeout",
        ),
        (
            "zero pool",
            "transport = \"smtp\"\nsmtp_url = \"smtp://mail\"\npool_size = 0",
            "channels.email.pool_size",
        ),
        (
            "unknown transport",
            "transport = \"pigeon\"",
            "channels.email.transport",
        ),
        ("bad from", "from = \"billing at acme\"", "channels.email.from"),
        ("zero rate", "rate_per_second = 0", "channels.email.rate_per_second"),
        (
            "negative rate",
            "rate_per_second = -5",
            "channels.email.rate_per_second",
        ),
        ("zero burst", "burst = 0", "channels.email.burst"),
        (
            "rate as text",
            "rate_per_second = \"fast\"",
            "channels.email.rate_per_second",
        ),
    ];
    for (what, keys_toml, key) in cases {
        let text = format!("[billers.acme]\ncheckout_url = \"https://pay.example/\"\n[channels.email]\n{keys_toml}\n");
        let problems = problems(&text);
        assert!(keys(&problems).contains(*key), "{what}: {problems:#?}");
    }
}

/// Regression (this was a bug): when `[channels.email]` has an error, `EmailConfig::check` returns None,
/// so `routing.default` (and every rule naming email) also reports "channel
/// email is used here but not configured under [channels.email]", which is
/// false: the section is there, it is only broken.
#[test]

fn a_broken_email_section_is_not_also_reported_as_missing() {
    let text = "[billers.acme]\ncheckout_url = \"https://pay.example/\"\n[channels.email]\ntransport = \"smtp\"\n";
    let problems = problems(text);
    assert_eq!(keys(&problems), set_of(&["channels.email.smtp_url"]), "{problems:#?}");
}

/// Regression (this was a bug): `check_broker` returns early (`secret(..)?`) when `broker.url` is an
/// unset `env:` secret, so the queue, exchange, prefetch and delivery_limit
/// checks never run and their problems are not listed.
#[test]

fn broker_problems_are_all_listed_when_the_url_secret_is_missing() {
    let problems = problems(&minimal_and(
        "[broker]\nurl = \"env:AMQP_URL\"\nqueue = \"\"\nevents_exchange = \"\"",
    ));
    assert_eq!(
        keys(&problems),
        set_of(&["broker.url", "broker.queue", "broker.events_exchange"]),
        "{problems:#?}"
    );
}

#[test]
fn several_mistakes_in_one_section_are_all_listed() {
    let problems = problems(&minimal_and(
        "[broker]\ndelivery_limit = \"ten\"\nprefetch = \"many\"\nqueu = \"payrelay.invoices\"",
    ));
    assert_eq!(
        keys(&problems),
        set_of(&["broker.delivery_limit", "broker.prefetch", "broker.queu"]),
        "{problems:#?}"
    );
}

#[test]
fn no_biller_and_no_channel_are_both_reported() {
    let problems = problems("");
    assert_eq!(
        keys(&problems),
        set_of(&["billers", "channels", "routing.default"]),
        "{problems:#?}"
    );
}

#[test]
fn text_that_is_not_toml_is_one_problem() {
    let problems = problems("[broker\nurl = ");
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn secrets_from_env_take_the_value_of_the_env_lookup() {
    let text = r#"
[broker]
url = "env:AMQP_URL"

[http]
admin_token = "env:ADMIN_TOKEN"

[billers.acme]
checkout_url = "https://pay.example/"
webhook_secret = "env:ACME_SECRET"

[billers.globex]
checkout_url = "https://pay.example/"
webhook_secret = "globex-literal-secret"

[channels.email]
transport = "smtp"
smtp_url = "env:SMTP_URL"
"#;
    let env = |name: &str| {
        Some(
            match name {
                "AMQP_URL" => "amqp://payrelay:amqp-pw-4711@rabbit:5672/%2f",
                "ADMIN_TOKEN" => "admin-tok-4711",
                "ACME_SECRET" => "acme-hmac-4711",
                "SMTP_URL" => "smtp://mailer:smtp-pw-4711@mail:587",
                _ => return None,
            }
            .to_owned(),
        )
    };
    let c = load_with_env(text, &env);
    assert_eq!(c.broker.url.expose(), "amqp://payrelay:amqp-pw-4711@rabbit:5672/%2f");
    assert_eq!(c.http.admin_token.as_ref().map(Secret::expose), Some("admin-tok-4711"));
    assert_eq!(
        c.billers["acme"].webhook_secret.first().map(Secret::expose),
        Some("acme-hmac-4711")
    );
    assert_eq!(
        c.billers["globex"].webhook_secret.first().map(Secret::expose),
        Some("globex-literal-secret"),
        "a value without env: is taken literally"
    );
    match &email(&c).transport {
        Transport::Smtp { url, .. } => assert_eq!(url.expose(), "smtp://mailer:smtp-pw-4711@mail:587"),
        other => panic!("{other:?}"),
    }

    for debug in [format!("{c:?}"), format!("{c:#?}")] {
        for secret in [
            "amqp-pw-4711",
            "admin-tok-4711",
            "acme-hmac-4711",
            "globex-literal-secret",
            "smtp-pw-4711",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }
}

#[test]
fn an_env_secret_set_to_the_empty_string_counts_as_unset() {
    let env = |name: &str| (name == "ADMIN_TOKEN").then(String::new);
    let problems =
        Config::from_toml(&minimal_and("[http]\nadmin_token = \"env:ADMIN_TOKEN\""), &base(), &env).unwrap_err();
    assert_eq!(keys(&problems), set_of(&["http.admin_token"]));
    assert!(problems[0].message.contains("ADMIN_TOKEN"));
}

#[test]
fn rule_conditions_take_one_value_or_a_list_and_amounts_as_text_or_numbers() {
    let text = minimal_and(
        r#"
[billers.globex]
checkout_url = "https://g.example/{token}"

[[routing.rules]]
name = "overdue credit cases"
biller = "acme"
source = ["credit", "collections"]
currency = "MXN"
country = ["MX", "CO"]
locale = "es"
min_amount = "100.50"
max_amount = 5000
days_to_due = { max = -1 }
channels = ["email"]
strategy = "all"

[[routing.rules]]
biller = ["acme", "globex"]
min_amount = 0.5
days_to_due = { min = 0, max = 30 }
channels = ["email"]
"#,
    );
    let c = load(&text);
    let [first, second] = c.routing.rules.as_slice() else {
        panic!("two rules expected: {:#?}", c.routing.rules);
    };
    let v = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(first.name, "overdue credit cases");
    assert_eq!(first.biller, v(&["acme"]));
    assert_eq!(first.source, v(&["credit", "collections"]));
    assert_eq!(first.currency, v(&["MXN"]));
    assert_eq!(first.country, v(&["MX", "CO"]));
    assert_eq!(first.locale, v(&["es"]));
    assert_eq!(first.min_amount, Some(100.5));
    assert_eq!(first.max_amount, Some(5000.0));
    assert_eq!(
        first.days_to_due,
        Some(DaysToDue {
            min: None,
            max: Some(-1)
        })
    );
    assert_eq!(first.channels, [ChannelName::Email]);
    assert_eq!(first.strategy, Strategy::All);

    assert_eq!(second.name, "rule 2", "an unnamed rule is named by its position");
    assert_eq!(second.biller, v(&["acme", "globex"]));
    assert_eq!(second.source, None);
    assert_eq!(second.min_amount, Some(0.5));
    assert_eq!(second.max_amount, None);
    assert_eq!(
        second.days_to_due,
        Some(DaysToDue {
            min: Some(0),
            max: Some(30)
        })
    );
    assert_eq!(second.strategy, Strategy::Fallback, "strategy defaults to fallback");
}

#[test]
fn problems_display_as_key_and_message() {
    let p = Problem {
        key: "broker.url".into(),
        message: "must be an amqp:// or amqps:// URL".into(),
    };
    assert_eq!(p.to_string(), "broker.url: must be an amqp:// or amqps:// URL");
    let whole = Problem {
        key: String::new(),
        message: "file not found".into(),
    };
    assert_eq!(whole.to_string(), "file not found");
}

#[test]
fn environment_variables_override_the_file_and_take_the_type_of_their_key() {
    let text =
        "[billers.acme]\ncheckout_url = \"https://pay.example/{token}\"\n[channels.email]\ntransport = \"file\"\n";
    let vars = [
        ("PAYRELAY__BROKER__PREFETCH", "12"),
        ("PAYRELAY__BROKER__QUEUE", "12345"),
        ("PAYRELAY__ROUTING__RESPECT_PREFERENCES", "false"),
        ("PAYRELAY__ROUTING__DEFAULT", "[\"email\"]"),
        ("PAYRELAY__CHANNELS__EMAIL__FROM", "Billing <billing@acme.example>"),
        ("PAYRELAY__BILLERS__ACME__NAME", "+15005550006"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let c = Config::from_layers(text, vars, Path::new("/srv"), &|_| None).unwrap();
    assert_eq!(c.broker.prefetch, 12, "a number where the key wants one");
    assert_eq!(c.broker.queue, "12345", "digits stay text where the key wants text");
    assert!(!c.routing.respect_preferences);
    assert_eq!(
        c.billers["acme"].name, "+15005550006",
        "a phone-like value stays a string"
    );
    assert_eq!(c.channels.email.unwrap().from.email.to_string(), "billing@acme.example");

    let bad = [("PAYRELAY__BROKER__PREFETCH".to_owned(), "lots".to_owned())];
    let problems = Config::from_layers(text, bad, Path::new("/srv"), &|_| None).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "broker.prefetch");
    assert!(
        problems[0].message.ends_with("(set by PAYRELAY__BROKER__PREFETCH)"),
        "the variable is named, since the file does not hold the value: {}",
        problems[0].message
    );

    // A variable that sets a table names the problems under it.
    let bad = [("PAYRELAY__BILLERS__ACME__CHECKOUT_URL".to_owned(), "nowhere".to_owned())];
    let problems = Config::from_layers(text, bad, Path::new("/srv"), &|_| None).unwrap_err();
    assert!(
        problems
            .iter()
            .all(|p| p.message.contains("(set by PAYRELAY__BILLERS__ACME__CHECKOUT_URL)")),
        "{problems:#?}"
    );
}

#[test]
fn the_built_in_configuration_loads_and_resolves_against_the_working_folder() {
    let config = Config::load_from(&Source::BuiltIn).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.base_dir, Path::new("."));
    assert_eq!(config.store.url.expose(), "sqlite://./var/payrelay.db");
    assert!(config.channels.email.is_some());
}

#[test]
fn a_config_with_problems_still_says_what_the_templates_check_needs() {
    let text = r#"
[broker]
prefetch = 0
[billers.acme]
checkout_url = "https://pay.example/{token}"
default_locale = "fr-FR"
[channels.email]
transport = "file"
[templates]
dir = "mine"
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payrelay.toml");
    std::fs::write(&path, text).unwrap();
    let error = Config::load(&path).unwrap_err();
    assert_eq!(keys(&error.problems), set_of(&["broker.prefetch"]));
    let uses = error.template_uses.expect("known despite the broker problem");
    assert_eq!(uses.dir, Some(dir.path().join("mine")));
    assert_eq!(
        uses.locales,
        vec![("billers.acme.default_locale".to_owned(), "fr-FR".to_owned(), true)]
    );
}

#[test]
fn without_a_rate_limit_section_each_instance_paces_alone() {
    assert!(load(MINIMAL).rate_limit.is_none());
}

#[test]
fn the_rate_limit_section_takes_a_redis_url_from_the_environment_and_defaults_the_rest() {
    let env = |name: &str| (name == "REDIS_URL").then(|| "redis://:redis-pw-4711@cache:6379/2".to_owned());
    let c = load_with_env(&minimal_and("[rate_limit]\nredis_url = \"env:REDIS_URL\""), &env);
    let rate_limit = c.rate_limit.as_ref().expect("[rate_limit] read");
    assert_eq!(rate_limit.redis_url.expose(), "redis://:redis-pw-4711@cache:6379/2");
    assert_eq!(rate_limit.key_prefix, "payrelay");
    assert_eq!(rate_limit.timeout, Duration::from_millis(250));
    assert!(!format!("{c:?}").contains("redis-pw-4711"), "the URL is a secret");

    let c = load(&minimal_and(
        "[rate_limit]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"payrelay-staging\"\ntimeout = \"100ms\"",
    ));
    let rate_limit = c.rate_limit.expect("[rate_limit] read");
    assert_eq!(rate_limit.key_prefix, "payrelay-staging");
    assert_eq!(rate_limit.timeout, Duration::from_millis(100));
}

#[test]
fn rate_limit_mistakes_are_reported_under_their_keys_without_quoting_the_url() {
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "not a Redis URL",
            "redis_url = \"http://:hunter2@cache:6379\"",
            &["rate_limit.redis_url"],
            "redis://",
        ),
        (
            "not a URL at all",
            "redis_url = \"redis//:hunter2@127.0.0.1\"",
            &["rate_limit.redis_url"],
            "not a URL",
        ),
        (
            "a database that is not a number",
            "redis_url = \"redis://:hunter2@cache:6379/zero\"",
            &["rate_limit.redis_url"],
            "database",
        ),
        (
            "no URL",
            "key_prefix = \"payrelay\"",
            &["rate_limit.redis_url"],
            "is required",
        ),
        (
            "a typo",
            "redis_url = \"redis://127.0.0.1:6379\"\nkey_prefx = \"x\"",
            &["rate_limit.key_prefx"],
            "unknown key",
        ),
        (
            "an empty prefix",
            "redis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"\"",
            &["rate_limit.key_prefix"],
            "1 to 100",
        ),
        (
            "an unset variable",
            "redis_url = \"env:PAYRELAY_TEST_UNSET_REDIS\"",
            &["rate_limit.redis_url"],
            "PAYRELAY_TEST_UNSET_REDIS",
        ),
        (
            "a bad timeout",
            "redis_url = \"redis://127.0.0.1:6379\"\ntimeout = \"soon\"",
            &["rate_limit.timeout"],
            "soon",
        ),
    ];
    for (what, section, expected, says) in cases {
        let problems = problems(&minimal_and(&format!("[rate_limit]\n{section}")));
        assert_eq!(keys(&problems), set_of(expected), "{what}: {problems:#?}");
        let text = problems.iter().map(|p| p.to_string()).collect::<String>();
        assert!(text.contains(says), "{what}: {text}");
        assert!(!text.contains("hunter2"), "{what}: the URL is quoted: {text}");
    }
}

#[test]
fn biller_ids_must_be_one_routing_key_word() {
    for bad in ["ACME", "acme.mx", "acme#"] {
        let text = minimal_and(&format!(
            "[billers.\"{bad}\"]\ncheckout_url = \"https://pay.example/c?inv={{invoice_id}}\""
        ));
        let problems = problems(&text);
        assert_eq!(keys(&problems), set_of(&[&format!("billers.{bad}")]), "{problems:#?}");
        assert!(problems[0].message.contains("a-z, 0-9"), "{problems:#?}");
    }
    load(&minimal_and(
        "[billers.acme-energy_2]\ncheckout_url = \"https://pay.example/c?inv={invoice_id}\"",
    ));
}

#[test]
fn the_http_bounds_default_to_safe_values_and_refuse_nonsense() {
    let c = load(MINIMAL);
    assert_eq!(c.http.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(c.http.request_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.http.max_connections, 1024);
    assert_eq!(c.http.max_body_bytes, 256 * 1024);
    let text = minimal_and("[http]\nmax_connections = 0\nheader_timeout = \"0s\"\nrequest_timeout = \"soon\"");
    assert_eq!(
        keys(&problems(&text)),
        set_of(&["http.max_connections", "http.header_timeout", "http.request_timeout"])
    );
}

/// A pay-link token in a checkout URL ends up in the payment provider's
/// logs; the shipped example must not teach that.
#[test]
fn the_example_config_hands_no_pay_link_token_to_the_checkout() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load(&path).unwrap();
    for (id, biller) in &config.billers {
        assert!(
            !biller.checkout_url.contains("{token}"),
            "billers.{id}.checkout_url: {}",
            biller.checkout_url
        );
    }
}

#[test]
fn the_pay_link_throttle_keys_are_read_and_checked() {
    let c = load(MINIMAL);
    assert_eq!(c.http.unknown_links_per_minute.get(), 30);
    assert!(c.http.client_ip_header.is_none());
    let c = load(&minimal_and(
        "[http]\nunknown_links_per_minute = 5\nclient_ip_header = \"X-Forwarded-For\"",
    ));
    assert_eq!(c.http.unknown_links_per_minute.get(), 5);
    assert_eq!(c.http.client_ip_header.unwrap().as_str(), "x-forwarded-for");
    let text = minimal_and("[http]\nunknown_links_per_minute = 0\nclient_ip_header = \"Forwarded For\"");
    assert_eq!(
        keys(&problems(&text)),
        set_of(&["http.unknown_links_per_minute", "http.client_ip_header"])
    );
}

#[test]
fn a_biller_may_list_several_webhook_secrets_while_it_rotates() {
    let with = |secrets: &str| {
        format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/\"\nwebhook_secret = {secrets}\n\n\
             [channels.email]\ntransport = \"file\"\n"
        )
    };
    let env = |name: &str| (name == "NEW").then(|| "new-secret".to_owned());
    let c = load_with_env(&with(r#"["env:NEW", "old-literal"]"#), &env);
    let secrets: Vec<&str> = c.billers["acme"].webhook_secret.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["new-secret", "old-literal"]);
    let one = load_with_env(&with(r#""env:NEW""#), &env);
    assert_eq!(one.billers["acme"].webhook_secret.len(), 1, "one secret as before");

    let problems = Config::from_toml(&with(r#"["env:NEW", "env:GONE"]"#), &base(), &env).unwrap_err();
    assert_eq!(
        keys(&problems),
        set_of(&["billers.acme.webhook_secret[1]"]),
        "{problems:#?}"
    );
    assert!(problems[0].message.contains("GONE"));
    assert_eq!(
        keys(&self::problems(&with("[]"))),
        set_of(&["billers.acme.webhook_secret"])
    );
    assert_eq!(
        keys(&self::problems(&with("[1]"))),
        set_of(&["billers.acme.webhook_secret"])
    );
}

#[test]
fn a_biller_may_name_the_amqp_user_it_publishes_as() {
    let c = load(&minimal_and(
        "[billers.globex]\ncheckout_url = \"https://pay.example/\"\namqp_user = \"billing-globex\"",
    ));
    assert_eq!(c.billers["globex"].amqp_user.as_deref(), Some("billing-globex"));
    assert_eq!(c.billers["acme"].amqp_user, None, "any publisher unless set");
    let problems = problems(&minimal_and(
        "[billers.globex]\ncheckout_url = \"https://pay.example/\"\namqp_user = \" \"",
    ));
    assert_eq!(keys(&problems), set_of(&["billers.globex.amqp_user"]));
}

#[test]
fn a_billers_brand_colour_is_six_hex_digits_and_its_logo_a_small_image_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logo.png"), b"\x89PNG\r\n\x1a\n rest of the file").unwrap();
    std::fs::write(
        dir.path().join("logo.svg"),
        b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    std::fs::write(dir.path().join("huge.png"), vec![0x89; raw::LARGEST_LOGO + 1]).unwrap();
    let billers = |acme: &str, globex: &str| {
        format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/\"\n{acme}\n\
             [billers.globex]\ncheckout_url = \"https://pay.example/\"\n{globex}\n\
             [channels.email]\ntransport = \"file\"\n"
        )
    };
    let text = billers("brand_color = \"#0B6BCB\"\nlogo = \"logo.png\"", "logo = \"logo.svg\"");
    let c = Config::from_toml(&text, dir.path(), &no_env).unwrap();
    let acme = &c.billers["acme"];
    assert_eq!(acme.brand_color.as_deref(), Some("#0b6bcb"));
    let logo = acme.logo.as_ref().expect("acme's logo");
    assert_eq!((logo.content_type, logo.bytes.len()), ("image/png", 25));
    assert_eq!(logo.version.len(), 12);
    assert_eq!(
        c.billers["globex"].logo.as_ref().map(|l| l.content_type),
        Some("image/svg+xml")
    );
    assert_eq!(c.billers["globex"].brand_color, None);

    let text = billers(
        "brand_color = \"blue\"\nlogo = \"missing.png\"",
        "brand_color = \"#12345\"\nlogo = \"notes.txt\"",
    );
    let found = Config::from_toml(&text, dir.path(), &no_env).unwrap_err();
    assert_eq!(
        keys(&found),
        set_of(&[
            "billers.acme.brand_color",
            "billers.acme.logo",
            "billers.globex.brand_color",
            "billers.globex.logo"
        ]),
        "{found:#?}"
    );
    let text = billers("logo = \"huge.png\"", "");
    let found = Config::from_toml(&text, dir.path(), &no_env).unwrap_err();
    assert!(found[0].message.contains("at most 256 KiB"), "{found:#?}");
}

// --- journeys ------------------------------------------------------------

/// MINIMAL with SMS, so steps can name a second channel.
const WITH_SMS: &str = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"

[channels.email]
transport = "file"

[channels.sms]
provider = "file"
"#;

/// WITH_SMS and `[journeys.j]` with `journey` as its body.
fn journey_and(journey: &str) -> String {
    format!("{WITH_SMS}\n[journeys.j]\n{journey}\n")
}

fn step(c: &Config, journey: &str, i: usize) -> JourneyStep {
    c.journeys[journey].steps[i].clone()
}

#[test]
fn without_journeys_nothing_follows_the_first_request() {
    let c = load(MINIMAL);
    assert!(c.journeys.is_empty());
    assert_eq!(c.routing.journey, None);
    assert_eq!(c.routing.max_messages_per_customer_per_day, None);
    assert_eq!(c.routing.retry_for, Duration::from_secs(24 * 60 * 60));
    assert_eq!(c.billers["acme"].journey, None);
}

#[test]
fn a_journey_is_read_with_its_steps_and_defaults() {
    let c = load(&format!(
        r#"{WITH_SMS}
[journeys.standard]
send_at = "09:30"
escalate_after = "36h"
steps = [
  {{ name = "upcoming", due = "-3d", channels = ["email"] }},
  {{ name = "due", due = "0d", channels = ["sms", "email"], strategy = "all" }},
  {{ name = "nudge", after = "30s" }},
  {{ name = "overdue", due = "3d" }},
  {{ name = "later", after = "2d" }},
  {{ name = "final", due = "+10d", template = "final_notice" }},
]

[journeys.quick]
steps = [{{ name = "again", after = "36h" }}]
"#
    ));
    let standard = &c.journeys["standard"];
    assert_eq!(standard.name, "standard");
    assert_eq!(standard.send_at, jiff::civil::time(9, 30, 0, 0));
    assert_eq!(standard.escalate_after, Some(Duration::from_secs(36 * 3600)));
    let when: Vec<StepTime> = standard.steps.iter().map(|s| s.when).collect();
    assert_eq!(
        when,
        [
            StepTime::Due { days: -3 },
            StepTime::Due { days: 0 },
            StepTime::After(Duration::from_secs(30)),
            StepTime::Due { days: 3 },
            StepTime::After(Duration::from_secs(2 * 24 * 3600)),
            StepTime::Due { days: 10 },
        ]
    );
    let names: Vec<&str> = standard.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["upcoming", "due", "nudge", "overdue", "later", "final"]);
    assert_eq!(
        step(&c, "standard", 1),
        JourneyStep {
            name: "due".into(),
            when: StepTime::Due { days: 0 },
            channels: Some(vec![ChannelName::Sms, ChannelName::Email]),
            strategy: Strategy::All,
            template: None,
        }
    );
    assert_eq!(step(&c, "standard", 5).template.as_deref(), Some("final_notice"));

    let quick = &c.journeys["quick"];
    assert_eq!(
        quick.send_at,
        jiff::civil::time(10, 0, 0, 0),
        "send_at defaults to 10:00"
    );
    assert_eq!(quick.escalate_after, None, "no escalation unless asked");
    assert_eq!(
        quick.steps,
        [JourneyStep {
            name: "again".into(),
            when: StepTime::After(Duration::from_secs(36 * 3600)),
            channels: None,
            strategy: Strategy::Fallback,
            template: None,
        }],
        "channels default to the route's, strategy to fallback, template to reminder/overdue"
    );
}

#[test]
fn due_takes_days_with_or_without_a_sign_and_send_at_any_24_hour_time() {
    for (due, days) in [
        ("-3d", -3),
        ("0d", 0),
        ("-0d", 0),
        ("+10d", 10),
        ("3d", 3),
        ("-3650d", -3650),
    ] {
        let c = load(&journey_and(&format!("steps = [{{ name = \"s\", due = \"{due}\" }}]")));
        assert_eq!(step(&c, "j", 0).when, StepTime::Due { days }, "{due}");
    }
    for (text, (h, m)) in [("00:00", (0, 0)), ("9:05", (9, 5)), ("23:59", (23, 59))] {
        let c = load(&journey_and(&format!(
            "send_at = \"{text}\"\nsteps = [{{ name = \"s\", due = \"0d\" }}]"
        )));
        assert_eq!(c.journeys["j"].send_at, jiff::civil::time(h, m, 0, 0), "{text}");
    }
}

#[test]
fn rules_billers_and_routing_name_a_journey_or_none() {
    let c = load(&format!(
        r#"{WITH_SMS}
[billers.globex]
checkout_url = "https://pay.example/g"
journey = "none"

[billers.initech]
checkout_url = "https://pay.example/i"
journey = "soft"

[journeys.standard]
steps = [{{ name = "due", due = "0d" }}]

[journeys.soft]
steps = [{{ name = "later", after = "7d" }}]

[routing]
journey = "standard"
max_messages_per_customer_per_day = 3
retry_for = "6h"

[[routing.rules]]
name = "credit"
source = "credit"
channels = ["sms", "email"]
journey = "soft"

[[routing.rules]]
name = "one-off"
source = "pos"
channels = ["email"]
journey = "none"

[[routing.rules]]
channels = ["email"]
"#
    ));
    assert_eq!(c.routing.journey.as_deref(), Some("standard"));
    assert_eq!(c.routing.max_messages_per_customer_per_day.map(|n| n.get()), Some(3));
    assert_eq!(c.routing.retry_for, Duration::from_secs(6 * 3600));
    let rules: Vec<Option<JourneyChoice>> = c.routing.rules.iter().map(|r| r.journey.clone()).collect();
    assert_eq!(
        rules,
        [
            Some(JourneyChoice::Named("soft".into())),
            Some(JourneyChoice::None),
            None
        ]
    );
    assert_eq!(c.billers["acme"].journey, None);
    assert_eq!(c.billers["globex"].journey, Some(JourneyChoice::None));
    assert_eq!(c.billers["initech"].journey, Some(JourneyChoice::Named("soft".into())));

    for routing in ["journey = \"none\"", ""] {
        let c = load(&format!(
            "{WITH_SMS}\n[journeys.standard]\nsteps = [{{ name = \"due\", due = \"0d\" }}]\n[routing]\n{routing}\n"
        ));
        assert_eq!(c.routing.journey, None, "[routing] {routing:?}: no reminders");
    }
}

/// Single journey mistakes: (what, extra TOML on WITH_SMS, the keys reported).
#[test]
fn each_journey_mistake_is_reported_under_its_key() {
    let ok = "[journeys.j]\nsteps = [{ name = \"due\", due = \"0d\" }]\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "a rule names a journey that does not exist",
            format!("{ok}[[routing.rules]]\nchannels = [\"email\"]\njourney = \"standard\""),
            &["routing.rules[0].journey"],
        ),
        (
            "a biller names a journey that does not exist",
            format!("{ok}[billers.globex]\ncheckout_url = \"https://pay.example/\"\njourney = \"gentle\""),
            &["billers.globex.journey"],
        ),
        (
            "[routing] names a journey that does not exist",
            format!("{ok}[routing]\njourney = \"standrad\""),
            &["routing.journey"],
        ),
        (
            "a journey named without any configured",
            "[routing]\njourney = \"standard\"".into(),
            &["routing.journey"],
        ),
        (
            "a step with both due and after",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", after = \"2d\" }]".into(),
            &["journeys.j.steps[0]"],
        ),
        (
            "a step with neither due nor after",
            "[journeys.j]\nsteps = [{ name = \"a\", due = \"0d\" }, { name = \"s\", channels = [\"email\"] }]".into(),
            &["journeys.j.steps[1]"],
        ),
        (
            "two steps with one name",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\" }, { name = \"t\", after = \"1d\" }, { name = \"s\", due = \"+3d\" }]"
                .into(),
            &["journeys.j.steps[2].name"],
        ),
        (
            "a step dated before an earlier one",
            "[journeys.j]\nsteps = [{ name = \"a\", due = \"+3d\" }, { name = \"b\", due = \"-3d\" }]".into(),
            &["journeys.j.steps[1].due"],
        ),
        (
            "a step on the same day as an earlier one",
            "[journeys.j]\nsteps = [{ name = \"a\", due = \"0d\" }, { name = \"b\", due = \"0d\" }]".into(),
            &["journeys.j.steps[1].due"],
        ),
        (
            "an after step between does not excuse a date going back",
            "[journeys.j]\nsteps = [{ name = \"a\", due = \"+3d\" }, { name = \"b\", after = \"1d\" }, { name = \"c\", due = \"+1d\" }]"
                .into(),
            &["journeys.j.steps[2].due"],
        ),
        (
            "a step dated before the latest, not only the previous, due step",
            "[journeys.j]\nsteps = [{ name = \"a\", due = \"+5d\" }, { name = \"b\", due = \"+1d\" }, { name = \"c\", due = \"+3d\" }]"
                .into(),
            &["journeys.j.steps[1].due", "journeys.j.steps[2].due"],
        ),
        (
            "an after of zero",
            "[journeys.j]\nsteps = [{ name = \"s\", after = \"0s\" }]".into(),
            &["journeys.j.steps[0].after"],
        ),
        (
            "an after that is no duration",
            "[journeys.j]\nsteps = [{ name = \"s\", after = \"soon\" }]".into(),
            &["journeys.j.steps[0].after"],
        ),
        (
            "an empty steps list",
            "[journeys.j]\nsteps = []".into(),
            &["journeys.j.steps"],
        ),
        (
            "no steps at all",
            "[journeys.j]\nsend_at = \"10:00\"".into(),
            &["journeys.j.steps"],
        ),
        (
            "steps that are not a list, reported once",
            "[journeys.j]\nsteps = \"due\"".into(),
            &["journeys.j.steps"],
        ),
        (
            "an unknown key in a step",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", chanels = [\"email\"] }]".into(),
            &["journeys.j.steps[0].chanels"],
        ),
        (
            "an unknown key in a journey",
            format!("{ok}escalate = \"24h\""),
            &["journeys.j.escalate"],
        ),
        (
            "send_at past midnight",
            format!("{ok}send_at = \"24:00\""),
            &["journeys.j.send_at"],
        ),
        (
            "send_at in 12-hour form",
            format!("{ok}send_at = \"10am\""),
            &["journeys.j.send_at"],
        ),
        (
            "send_at with one minute digit",
            format!("{ok}send_at = \"10:0\""),
            &["journeys.j.send_at"],
        ),
        (
            "escalate_after of zero",
            format!("{ok}escalate_after = \"0s\""),
            &["journeys.j.escalate_after"],
        ),
        (
            "due without a d",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"-3\" }]".into(),
            &["journeys.j.steps[0].due"],
        ),
        (
            "due in words",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"3 days\" }]".into(),
            &["journeys.j.steps[0].due"],
        ),
        (
            "due with two signs",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"+-3d\" }]".into(),
            &["journeys.j.steps[0].due"],
        ),
        (
            "due as a bare number",
            "[journeys.j]\nsteps = [{ name = \"s\", due = -3 }]".into(),
            &["journeys.j.steps[0].due"],
        ),
        (
            "due years away",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"+3651d\" }]".into(),
            &["journeys.j.steps[0].due"],
        ),
        (
            "a step without a name",
            "[journeys.j]\nsteps = [{ due = \"0d\" }]".into(),
            &["journeys.j.steps[0].name"],
        ),
        (
            "a blank step name",
            "[journeys.j]\nsteps = [{ name = \" \", due = \"0d\" }]".into(),
            &["journeys.j.steps[0].name"],
        ),
        (
            "a step on a channel that is not configured",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", channels = [\"whatsapp\"] }]".into(),
            &["journeys.j.steps[0].channels"],
        ),
        (
            "a step with an empty channel list",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", channels = [] }]".into(),
            &["journeys.j.steps[0].channels"],
        ),
        (
            "a step with a bad strategy",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", strategy = \"any\" }]".into(),
            &["journeys.j.steps[0].strategy"],
        ),
        (
            "a step with a template name that is not one",
            "[journeys.j]\nsteps = [{ name = \"s\", due = \"0d\", template = \"Final Notice\" }]".into(),
            &["journeys.j.steps[0].template"],
        ),
        (
            "a journey name that is not one word",
            "[journeys.Standard]\nsteps = [{ name = \"s\", due = \"0d\" }]".into(),
            &["journeys.Standard"],
        ),
        (
            "the reserved name none",
            "[journeys.none]\nsteps = [{ name = \"s\", due = \"0d\" }]".into(),
            &["journeys.none"],
        ),
        (
            "a daily cap of zero",
            "[routing]\nmax_messages_per_customer_per_day = 0".into(),
            &["routing.max_messages_per_customer_per_day"],
        ),
        (
            "a negative daily cap",
            "[routing]\nmax_messages_per_customer_per_day = -1".into(),
            &["routing.max_messages_per_customer_per_day"],
        ),
        (
            "retry_for of zero",
            "[routing]\nretry_for = \"0s\"".into(),
            &["routing.retry_for"],
        ),
        (
            "retry_for that is no duration",
            "[routing]\nretry_for = \"a while\"".into(),
            &["routing.retry_for"],
        ),
    ];
    for (what, extra, expected) in cases {
        let problems = problems(&format!("{WITH_SMS}\n{extra}\n"));
        assert_eq!(keys(&problems), set_of(expected), "{what}: {problems:#?}");
        assert_eq!(
            problems.len(),
            expected.len(),
            "{what}: one problem each: {problems:#?}"
        );
    }
    // A key of the root table must come before the first section.
    let problems = problems(&format!("journeys = 3\n{WITH_SMS}"));
    assert_eq!(keys(&problems), set_of(&["journeys"]), "{problems:#?}");
}

#[test]
fn journey_problems_say_what_to_write_instead() {
    let text = format!(
        r#"{WITH_SMS}
[journeys.standard]
steps = [
  {{ name = "due", due = "+3d" }},
  {{ name = "early", due = "-3d" }},
  {{ name = "both", due = "5d", after = "1d" }},
  {{ name = "due", after = "1d" }},
  {{ name = "typed", due = 7 }},
]

[[routing.rules]]
channels = ["email"]
journey = "gentle"
"#
    );
    let problems = problems(&text);
    let message = |key: &str| {
        problems
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("no problem at {key}: {problems:#?}"))
    };
    assert!(message("journeys.standard.steps[1].due").contains("-3d is not later than steps[0]'s +3d"));
    assert!(message("journeys.standard.steps[2]").contains("both due and after"));
    assert!(message("journeys.standard.steps[3].name").contains("steps[0]"));
    assert!(message("journeys.standard.steps[4].due").contains("\"+7d\""));
    let missing = message("routing.rules[0].journey");
    assert!(
        missing.contains("\"gentle\"") && missing.contains("standard") && missing.contains("\"none\""),
        "{missing}"
    );
}

/// Every journey problem of one file comes out of one `check`, beside the
/// problems of the other sections.
#[test]
fn all_journey_problems_are_listed_in_one_pass() {
    let text = r#"
[broker]
prefetch = 0

[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"
journey = "missing"

[channels.email]
transport = "file"

[journeys.standard]
send_at = "10h"
steps = [
  { name = "due", due = "0d", after = "1d" },
  { name = "due", due = "+3d" },
  { name = "back", due = "-1d" },
  { name = "void" },
  { name = "zero", after = "0s", chanels = ["email"] },
]

[journeys.empty]
steps = []

[routing]
journey = "nope"
max_messages_per_customer_per_day = 0
retry_for = "never"

[[routing.rules]]
channels = ["email"]
journey = "absent"
"#;
    let problems = problems(text);
    let expected = set_of(&[
        "broker.prefetch",
        "billers.acme.journey",
        "journeys.standard.send_at",
        "journeys.standard.steps[0]",
        "journeys.standard.steps[1].name",
        "journeys.standard.steps[2].due",
        "journeys.standard.steps[3]",
        "journeys.standard.steps[4].after",
        "journeys.standard.steps[4].chanels",
        "journeys.empty.steps",
        "routing.journey",
        "routing.max_messages_per_customer_per_day",
        "routing.retry_for",
        "routing.rules[0].journey",
    ]);
    assert_eq!(keys(&problems), expected, "{problems:#?}");
    assert_eq!(problems.len(), expected.len(), "one problem per mistake: {problems:#?}");
}

/// A journey whose section has problems exists all the same: naming it is
/// not a second mistake.
#[test]
fn a_broken_journey_is_not_also_reported_as_missing() {
    let text = format!(
        "{WITH_SMS}\n[journeys.standard]\nsend_at = \"noon\"\nsteps = []\n\
         [routing]\njourney = \"standard\"\n[[routing.rules]]\nchannels = [\"email\"]\njourney = \"standard\"\n"
    );
    let problems = problems(&text);
    assert_eq!(
        keys(&problems),
        set_of(&["journeys.standard.send_at", "journeys.standard.steps"]),
        "{problems:#?}"
    );
}

#[test]
fn journey_keys_can_be_set_from_the_environment() {
    let text = journey_and("steps = [{ name = \"due\", due = \"0d\" }]");
    let vars = [
        ("PAYRELAY__JOURNEYS__J__SEND_AT", "08:15"),
        ("PAYRELAY__JOURNEYS__J__ESCALATE_AFTER", "2d"),
        ("PAYRELAY__ROUTING__JOURNEY", "j"),
        ("PAYRELAY__ROUTING__MAX_MESSAGES_PER_CUSTOMER_PER_DAY", "2"),
        ("PAYRELAY__ROUTING__RETRY_FOR", "12h"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let c = Config::from_layers(&text, vars, &base(), &no_env).unwrap_or_else(|p| panic!("{p:#?}"));
    let j = &c.journeys["j"];
    assert_eq!(j.send_at, jiff::civil::time(8, 15, 0, 0));
    assert_eq!(j.escalate_after, Some(Duration::from_secs(2 * 24 * 3600)));
    assert_eq!(c.routing.journey.as_deref(), Some("j"));
    assert_eq!(c.routing.max_messages_per_customer_per_day.map(|n| n.get()), Some(2));
    assert_eq!(c.routing.retry_for, Duration::from_secs(12 * 3600));

    let vars = [("PAYRELAY__ROUTING__JOURNEY".to_owned(), "gone".to_owned())];
    let problems = Config::from_layers(&text, vars, &base(), &no_env).unwrap_err();
    assert_eq!(keys(&problems), set_of(&["routing.journey"]));
    assert!(
        problems[0].message.contains("PAYRELAY__ROUTING__JOURNEY"),
        "{problems:#?}"
    );
}

/// The shipped example is the journey a collections team starts from.
#[test]
fn the_example_config_follows_each_request_with_the_standard_journey() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    for config in [
        Config::load(&path).unwrap_or_else(|e| panic!("{e}")),
        Config::load_from(&Source::BuiltIn).unwrap_or_else(|e| panic!("{e}")),
    ] {
        assert_eq!(config.routing.journey.as_deref(), Some("standard"));
        assert_eq!(config.routing.max_messages_per_customer_per_day, None, "lands later");
        let standard = &config.journeys["standard"];
        assert_eq!(standard.send_at, jiff::civil::time(10, 0, 0, 0));
        assert_eq!(standard.escalate_after, None, "lands later");
        let ladder: Vec<(&str, StepTime, Strategy, Option<&str>)> = standard
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.when, s.strategy, s.template.as_deref()))
            .collect();
        assert_eq!(
            ladder,
            [
                ("upcoming", StepTime::Due { days: -3 }, Strategy::Fallback, None),
                ("due", StepTime::Due { days: 0 }, Strategy::Fallback, None),
                ("overdue", StepTime::Due { days: 3 }, Strategy::Fallback, None),
                ("final", StepTime::Due { days: 10 }, Strategy::All, Some("final_notice")),
            ]
        );
        assert_eq!(standard.steps[0].channels, Some(vec![ChannelName::Email]));
    }
}

/// configuration.md shows the built-in configuration; it must be the real one.
#[test]
fn the_configuration_page_shows_the_built_in_configuration_as_it_is() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    assert!(
        page.contains(&format!("```toml\n{BUILT_IN}```")),
        "docs/configuration.md's built-in configuration block differs from config.toml"
    );
}

/// MINIMAL with `api_token = "<token>"` for acme.
fn acme_with_token(token: &str) -> String {
    MINIMAL.replace(
        "[billers.acme]\n",
        &format!("[billers.acme]\napi_token = \"{token}\"\n"),
    )
}

#[test]
fn a_billers_api_token_is_a_secret_of_its_own() {
    let env = |name: &str| (name == "ACME_API_TOKEN").then(|| "acme-tok-0042".to_owned());
    let c = load_with_env(
        &(acme_with_token("env:ACME_API_TOKEN")
            + "[billers.beta]\ncheckout_url = \"https://b.example/{invoice_id}\"\n"),
        &env,
    );
    let token = c.billers["acme"].api_token.as_ref().expect("the token is read");
    assert_eq!(token.expose(), "acme-tok-0042");
    assert!(!format!("{c:?}").contains("acme-tok-0042"), "the token never prints");
    assert!(c.billers["beta"].api_token.is_none());
    assert!(
        c.store.personal_data_ttl.is_none(),
        "personal data is kept unless a TTL is set"
    );
}

#[test]
fn an_empty_shared_or_admin_api_token_is_refused() {
    let biller = |id: &str, token: &str| {
        format!("[billers.{id}]\ncheckout_url = \"https://b.example/{{invoice_id}}\"\napi_token = \"{token}\"\n")
    };
    let empty = problems(&acme_with_token(" "));
    assert_eq!(keys(&empty), set_of(&["billers.acme.api_token"]));
    let shared = problems(&minimal_and(
        &(biller("beta", "tok-shared-9") + &biller("gamma", "tok-shared-9")),
    ));
    assert_eq!(
        keys(&shared),
        set_of(&["billers.beta.api_token", "billers.gamma.api_token"])
    );
    assert!(shared.iter().all(|p| !p.message.contains("tok-shared-9")), "{shared:?}");
    let admin = problems(&minimal_and(&format!(
        "[http]\nadmin_token = \"root\"\n{}",
        biller("beta", "root")
    )));
    assert_eq!(keys(&admin), set_of(&["billers.beta.api_token"]));
}

#[test]
fn personal_data_ttl_is_a_duration() {
    let c = load(&minimal_and("[store]\npersonal_data_ttl = \"180d\""));
    assert_eq!(c.store.personal_data_ttl, Some(Duration::from_secs(180 * 24 * 3600)));
    for bad in ["\"soon\"", "\"0s\""] {
        let found = problems(&minimal_and(&format!("[store]\npersonal_data_ttl = {bad}")));
        assert_eq!(keys(&found), set_of(&["store.personal_data_ttl"]), "{bad}");
    }
}

#[test]
fn combine_is_a_window_of_at_most_a_day_and_off_when_absent() {
    let c = load(MINIMAL);
    assert_eq!(c.billers["acme"].combine, None, "off unless set");
    let c = load(&MINIMAL.replace("[channels.email]", "combine = \"10m\"\n\n[channels.email]"));
    assert_eq!(c.billers["acme"].combine, Some(Duration::from_secs(600)));
    for (value, says) in [("\"25h\"", "longer than 24h"), ("\"0s\"", "zero"), ("\"soon\"", "")] {
        let text = MINIMAL.replace("[channels.email]", &format!("combine = {value}\n\n[channels.email]"));
        let found = problems(&text);
        assert_eq!(keys(&found), set_of(&["billers.acme.combine"]), "{value}: {found:?}");
        assert!(found[0].message.contains(says), "{value}: {}", found[0].message);
    }
}

#[test]
fn the_operators_routes_may_have_an_address_of_their_own() {
    assert_eq!(
        load(MINIMAL).http.admin_listen,
        None,
        "unset: [http] listen serves everything"
    );
    let c = load(&minimal_and(
        "[http]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:9090\"",
    ));
    assert_eq!(c.http.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let c = load(&minimal_and(
        "[http]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
    ));
    assert_eq!(
        c.http.admin_listen,
        Some("127.0.0.1:0".parse().unwrap()),
        "port 0 picks a free port each"
    );
}

#[test]
fn an_admin_address_that_is_not_one_or_is_listen_s_own_is_refused() {
    for admin_listen in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080", "localhost:9090", "9090"] {
        let text = minimal_and(&format!(
            "[http]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"{admin_listen}\""
        ));
        let found = problems(&text);
        assert_eq!(
            keys(&found),
            set_of(&["http.admin_listen"]),
            "{admin_listen}: {found:?}"
        );
        assert!(found[0].message.contains(admin_listen), "{found:?}");
    }
}
