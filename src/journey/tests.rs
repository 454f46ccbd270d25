use super::*;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use time::macros::date;

use crate::config::Strategy;
use crate::domain::ChannelName;
use crate::invoice::{parse, Message};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn config() -> Config {
    let text = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"
timezone = "Europe/Berlin"

[channels.email]
transport = "file"

[[routing.rules]]
name = "credit"
source = "credit"
channels = ["email"]

[[routing.rules]]
name = "quiet"
source = "quiet"
channels = ["email"]
"#;
    Config::from_toml(text, Path::new("/etc/payrelay"), &|_| None)
        .unwrap_or_else(|problems| panic!("test config refused: {problems:#?}"))
}

fn step(name: &str, when: StepTime) -> JourneyStep {
    JourneyStep {
        name: name.into(),
        when,
        channels: None,
        strategy: Strategy::Fallback,
        template: None,
    }
}

/// The ladder of the docs: three days before, on the day, three and ten after.
fn standard() -> Journey {
    Journey {
        name: "standard".into(),
        send_at: jiff::civil::time(10, 0, 0, 0),
        escalate_after: None,
        steps: vec![
            step("upcoming", StepTime::Due { days: -3 }),
            step("due", StepTime::Due { days: 0 }),
            step("overdue", StepTime::Due { days: 3 }),
            step("final", StepTime::Due { days: 10 }),
        ],
    }
}

fn invoice(due: &str, timezone: Option<&str>, source: &str) -> Invoice {
    let mut body = json!({
        "invoice_id": "INV-1", "biller_id": "acme", "amount": "10.00", "currency": "EUR",
        "due_date": due, "source": source,
        "customer": {"name": "Ana", "email": "ana@example.com"}
    });
    if let Some(tz) = timezone {
        body["customer"]["timezone"] = json!(tz);
    }
    match parse(body.to_string().as_bytes(), |_| true) {
        Ok(Message::PaymentRequest(invoice)) => *invoice,
        other => panic!("test invoice refused: {other:?}"),
    }
}

fn at(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .as_millisecond()
}

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

#[test]
fn steps_by_date_go_at_send_at_in_the_customers_time_zone() {
    let invoice = invoice("2026-06-10", Some("America/Mexico_City"), "erp");
    let planned = plan(
        &standard(),
        &invoice,
        &tz("America/Mexico_City"),
        at("2026-06-01T12:00:00Z"),
    );
    let due: Vec<i64> = planned.iter().map(|s| s.due_ms).collect();
    // Mexico City is UTC-6 all year: 10:00 local is 16:00Z.
    assert_eq!(
        due,
        [
            at("2026-06-07T16:00:00Z"),
            at("2026-06-10T16:00:00Z"),
            at("2026-06-13T16:00:00Z"),
            at("2026-06-20T16:00:00Z"),
        ]
    );
    assert!(planned.iter().all(|s| s.skipped.is_none() && s.after_ms.is_none()));
    assert_eq!(planned.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(planned.iter().all(|s| s.journey == "standard"));
}

/// Berlin leaves summer time on 2026-10-25: 10:00 local is 08:00Z before
/// and 09:00Z after; Sydney enters summer time on 2026-10-04.
#[test]
fn local_send_times_follow_daylight_saving_changes() {
    let invoice = invoice("2026-10-24", None, "erp");
    let planned = plan(&standard(), &invoice, &tz("Europe/Berlin"), at("2026-10-01T00:00:00Z"));
    assert_eq!(planned[1].due_ms, at("2026-10-24T08:00:00Z"), "due day, summer time");
    assert_eq!(planned[2].due_ms, at("2026-10-27T09:00:00Z"), "+3d, winter time");

    let sydney = plan(
        &standard(),
        &invoice,
        &tz("Australia/Sydney"),
        at("2026-09-01T00:00:00Z"),
    );
    assert_eq!(
        sydney[1].due_ms,
        at("2026-10-23T23:00:00Z"),
        "10:00 AEDT is 23:00Z the day before"
    );
}

#[test]
fn steps_already_past_at_intake_are_planned_as_skipped_with_the_reason() {
    let invoice = invoice("2026-06-10", None, "erp");
    // Arrives on the due day at noon UTC: -3d and the due day's 10:00 are gone.
    let planned = plan(&standard(), &invoice, &TimeZone::UTC, at("2026-06-10T12:00:00Z"));
    let skipped: Vec<bool> = planned.iter().map(|s| s.skipped.is_some()).collect();
    assert_eq!(skipped, [true, true, false, false]);
    assert_eq!(planned[0].skipped.as_deref(), Some(PAST_AT_INTAKE));
}

#[test]
fn steps_placed_after_the_previous_message_are_estimated_from_it() {
    let mut journey = standard();
    journey.steps = vec![
        step("nudge", StepTime::After(Duration::from_secs(2 * 86_400))),
        step("due", StepTime::Due { days: 0 }),
        step("again", StepTime::After(Duration::from_secs(36 * 3_600))),
    ];
    let invoice = invoice("2026-06-10", None, "erp");
    let now = at("2026-06-01T09:30:00Z");
    let planned = plan(&journey, &invoice, &TimeZone::UTC, now);
    assert_eq!(planned[0].due_ms, now + 2 * DAY);
    assert_eq!(planned[0].after_ms, Some(2 * DAY));
    assert_eq!(planned[1].due_ms, at("2026-06-10T10:00:00Z"));
    assert_eq!(planned[2].due_ms, at("2026-06-10T10:00:00Z") + 36 * HOUR);
    assert!(planned.iter().all(|s| s.skipped.is_none()));
}

#[test]
fn the_template_is_the_steps_own_else_reminder_until_the_due_date_else_overdue() {
    let plain = step("x", StepTime::Due { days: 0 });
    let due = date!(2026 - 06 - 10);
    assert_eq!(template(&plain, due, date!(2026 - 06 - 07)), "reminder");
    assert_eq!(template(&plain, due, due), "reminder", "the due day is not overdue yet");
    assert_eq!(template(&plain, due, date!(2026 - 06 - 11)), "overdue");
    let own = JourneyStep {
        template: Some("final_notice".into()),
        ..plain
    };
    assert_eq!(template(&own, due, date!(2026 - 06 - 01)), "final_notice");
}

#[test]
fn the_journey_is_the_rules_else_the_billers_else_the_routing_default() {
    let mut config = config();
    let mut short = standard();
    short.name = "short".into();
    config.journeys.insert("standard".into(), standard());
    config.journeys.insert("short".into(), short);
    let route = |config: &Config, source: &str| {
        let invoice = invoice("2026-06-10", None, source);
        let plan = crate::router::route(&invoice, config, date!(2026 - 06 - 01));
        chosen(config, &invoice, &plan.decision).map(|j| j.name.clone())
    };
    assert_eq!(route(&config, "erp"), None, "no journey anywhere: no reminders");

    config.routing.journey = Some("standard".into());
    assert_eq!(route(&config, "erp").as_deref(), Some("standard"));

    config.billers.get_mut("acme").unwrap().journey = Some(JourneyChoice::Named("short".into()));
    assert_eq!(
        route(&config, "erp").as_deref(),
        Some("short"),
        "the biller's beats the default"
    );

    config.routing.rules[0].journey = Some(JourneyChoice::Named("standard".into()));
    config.routing.rules[1].journey = Some(JourneyChoice::None);
    assert_eq!(
        route(&config, "credit").as_deref(),
        Some("standard"),
        "the rule's beats the biller's"
    );
    assert_eq!(route(&config, "quiet"), None, "\"none\" on the rule: no reminders");
}

#[test]
fn the_time_zone_is_the_customers_else_the_billers_else_utc() {
    let mut config = config();
    let with_own = invoice("2026-06-10", Some("Asia/Tokyo"), "erp");
    assert_eq!(time_zone(&config, &with_own), tz("Asia/Tokyo"));
    let without = invoice("2026-06-10", None, "erp");
    assert_eq!(time_zone(&config, &without), tz("Europe/Berlin"));
    config.billers.get_mut("acme").unwrap().timezone = None;
    assert_eq!(time_zone(&config, &without), TimeZone::UTC);
}

#[test]
fn the_customers_date_is_read_in_their_time_zone() {
    let now = at("2026-06-10T23:30:00Z");
    assert_eq!(local_date(now, &TimeZone::UTC), date!(2026 - 06 - 10));
    assert_eq!(local_date(now, &tz("Europe/Berlin")), date!(2026 - 06 - 11));
    assert_eq!(local_date(now, &tz("America/Mexico_City")), date!(2026 - 06 - 10));
    let _ = ChannelName::Email;
}
