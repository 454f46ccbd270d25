//! The journey part of `payrelay route`: which journey would follow the
//! invoice and why, its escalation and the daily cap when set, and each
//! step with its local time, its channels after routing, its strategy and
//! template, or why it would be skipped. Planned
//! with [`plan`] and routed with [`route_step`], as the dispatcher does,
//! so what it prints is what would happen.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use time::Date;

use super::{chosen, local_date, plan, template, time_zone, PlannedStep};
use crate::config::{Config, JourneyChoice, JourneyStep, StepTime};
use crate::invoice::Invoice;
use crate::router::{route, route_step, Decision};

/// Explains the journey of `invoice` accepted at `now_ms`, routed as of
/// `today` (the first request's routing decides the journey). Like the
/// routing explanation, the text is stable and holds no contact details.
pub fn explain(invoice: &Invoice, config: &Config, today: Date, now_ms: i64) -> String {
    let decision = route(invoice, config, today).decision;
    let mut out = String::new();
    let (name, named_by) = match named(config, invoice, &decision) {
        Named::Journey { name, by } => (name, by),
        Named::NoneBy(by) => {
            let _ = writeln!(out, "journey: none ({by} says journey = \"none\")");
            return out;
        }
        Named::Nobody => {
            let _ = writeln!(out, "journey: none (no rule, biller or [routing] journey names one)");
            return out;
        }
    };
    let Some(journey) = chosen(config, invoice, &decision) else {
        let _ = writeln!(
            out,
            "journey: none ({named_by} names journey \"{name}\", which has no [journeys.{name}] section)"
        );
        return out;
    };
    let tz = time_zone(config, invoice);
    let zone = zone_name(&tz);
    let _ = writeln!(out, "journey \"{}\" (named by {named_by})", journey.name);
    let _ = writeln!(
        out,
        "  local times in {zone} ({}), as of {}",
        zone_source(config, invoice),
        local_time(now_ms, &tz)
    );
    if let Some(wait) = journey.escalate_after {
        let _ = writeln!(
            out,
            "  escalate_after {}: a message of the first request or of a fallback step that no person opens in that long goes out on the next channel",
            duration_words(wait)
        );
    }
    if let Some(cap) = config.routing.max_messages_per_customer_per_day {
        let _ = writeln!(
            out,
            "  max_messages_per_customer_per_day {cap}: a step over it waits for the next day's send_at"
        );
    }
    // Step 0, the first request's escalation watch, has no line of its own.
    let planned = plan(journey, invoice, &tz, now_ms);
    for (i, step) in journey.steps.iter().enumerate() {
        if let Some(p) = planned.iter().find(|p| p.name == step.name) {
            write_step(&mut out, invoice, config, (i + 1, step), p, &tz, &zone);
        }
    }
    out
}

/// The start of `day` in the invoice's time zone, as ms since the epoch:
/// `route --today D` plans the journey as if the invoice arrived then.
pub fn start_of_day(config: &Config, invoice: &Invoice, day: Date) -> i64 {
    super::due_day_at(day, 0, jiff::civil::Time::midnight(), &time_zone(config, invoice))
}

/// One step: when, and then why it would be skipped or how it would go.
fn write_step(
    out: &mut String,
    invoice: &Invoice,
    config: &Config,
    (number, step): (usize, &JourneyStep),
    planned: &PlannedStep,
    tz: &TimeZone,
    zone: &str,
) {
    let at = local_time(planned.due_ms, tz);
    let when = match step.when {
        StepTime::Due { days } => format!("{at} {zone}, {}", due_words(days)),
        StepTime::After(wait) => format!(
            "about {at} {zone}, {} after the previous message is sent",
            duration_words(wait)
        ),
    };
    let _ = writeln!(out, "step {number} \"{}\": {when}", step.name);
    if let Some(why) = &planned.skipped {
        let _ = writeln!(out, "  skipped: {why}");
        return;
    }
    let day = local_date(planned.due_ms, tz);
    let own = step.channels.as_deref().map(|c| (c, step.strategy));
    let routed = route_step(invoice, config, day, own);
    let _ = writeln!(
        out,
        "  strategy: {}, template: {}",
        routed.strategy,
        template(step, invoice.due_date, day)
    );
    for (i, c) in routed.channels.iter().enumerate() {
        let _ = writeln!(out, "  {}. {c}", i + 1);
    }
    for (c, why) in &routed.skipped {
        let _ = writeln!(out, "  skipped {c}: {why}");
    }
    if routed.channels.is_empty() {
        let _ = writeln!(
            out,
            "  no channel of the step can reach the customer: the step would be skipped"
        );
    }
}

/// Who names the journey, by the same order [`chosen`] follows.
enum Named<'a> {
    Journey { name: &'a str, by: String },
    NoneBy(String),
    Nobody,
}

fn named<'a>(config: &'a Config, invoice: &Invoice, decision: &Decision) -> Named<'a> {
    let by_rule = match decision {
        Decision::Rule { index, name } => config
            .routing
            .rules
            .get(*index)
            .and_then(|r| r.journey.as_ref())
            .map(|c| (c, format!("rule \"{name}\""))),
        Decision::InvoiceChannels | Decision::Default => None,
    };
    let biller = &invoice.key.biller_id;
    let by_biller = || {
        config
            .billers
            .get(biller)
            .and_then(|b| b.journey.as_ref())
            .map(|c| (c, format!("biller {biller}")))
    };
    match by_rule.or_else(by_biller) {
        Some((JourneyChoice::None, by)) => Named::NoneBy(by),
        Some((JourneyChoice::Named(name), by)) => Named::Journey { name, by },
        None => match &config.routing.journey {
            Some(name) => Named::Journey {
                name,
                by: "[routing] journey".to_owned(),
            },
            None => Named::Nobody,
        },
    }
}

/// Where the invoice's time zone comes from, as [`time_zone`] picks it.
fn zone_source(config: &Config, invoice: &Invoice) -> &'static str {
    let valid = |name: &str| crate::domain::quiet::time_zone(name).is_ok();
    if invoice.customer.timezone.as_deref().is_some_and(valid) {
        return "customer.timezone";
    }
    let biller = config.billers.get(&invoice.key.biller_id);
    if biller.and_then(|b| b.timezone.as_deref()).is_some_and(valid) {
        return "the biller's timezone";
    }
    "neither the customer nor the biller sets a time zone"
}

fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_owned()
}

/// `2026-11-28 10:00` in `tz`.
fn local_time(ms: i64, tz: &TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => "never (beyond the calendar)".to_owned(),
    }
}

/// `due = "-3d"` in words.
fn due_words(days: i32) -> String {
    match days {
        0 => "on the due date".to_owned(),
        1 => "1 day after the due date".to_owned(),
        -1 => "1 day before the due date".to_owned(),
        d if d < 0 => format!("{} days before the due date", -d),
        d => format!("{d} days after the due date"),
    }
}

/// `2 days`, `36 hours`, `90 minutes`, `30 seconds`: the largest unit that
/// divides it, as a step's `after` is usually written.
fn duration_words(wait: std::time::Duration) -> String {
    if wait.subsec_nanos() != 0 {
        return humantime::format_duration(wait).to_string();
    }
    let secs = wait.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs >= *size && secs.is_multiple_of(*size))
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;
    use time::macros::date;

    use super::*;
    use crate::invoice::{parse, Message};

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={{invoice_id}}"
timezone = "Europe/Berlin"
{extra}

[channels.email]
transport = "file"

[channels.sms]
provider = "file"

[journeys.standard]
send_at = "10:00"
steps = [
  {{ name = "upcoming", due = "-3d" }},
  {{ name = "texted", due = "+1d", channels = ["sms"] }},
]

[journeys.night]
send_at = "02:30"
steps = [{{ name = "due", due = "0d" }}]

[routing]
default = ["email"]
journey = "standard"

[[routing.rules]]
name = "at night"
source = "night"
channels = ["email"]
journey = "night"

[[routing.rules]]
name = "no reminders"
source = "once"
channels = ["email"]
journey = "none"
"#
        );
        Config::from_toml(&text, Path::new("/etc/payrelay"), &|_| None)
            .unwrap_or_else(|problems| panic!("test config refused: {problems:#?}"))
    }

    fn invoice(due: &str, source: &str, timezone: Option<&str>) -> Invoice {
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

    #[test]
    fn steps_go_at_local_times_in_the_customers_zone_from_the_start_of_today_there() {
        let config = config("");
        let inv = invoice("2026-12-01", "erp", Some("America/Mexico_City"));
        let today = date!(2026 - 11 - 20);
        let start = start_of_day(&config, &inv, today);
        assert_eq!(start, 1_795_154_400_000, "2026-11-20 00:00 in Mexico City is 06:00 UTC");
        let text = explain(&inv, &config, today, start);
        let expected = "\
journey \"standard\" (named by [routing] journey)
  local times in America/Mexico_City (customer.timezone), as of 2026-11-20 00:00
step 1 \"upcoming\": 2026-11-28 10:00 America/Mexico_City, 3 days before the due date
  strategy: fallback, template: reminder
  1. email
step 2 \"texted\": 2026-12-02 10:00 America/Mexico_City, 1 day after the due date
  strategy: fallback, template: overdue
  skipped sms: the invoice has no customer.phone
  no channel of the step can reach the customer: the step would be skipped
";
        assert_eq!(text, expected);

        // Without the customer's zone, the biller's; a day later, the
        // first step's time has passed.
        let inv = invoice("2026-11-21", "erp", None);
        let text = explain(&inv, &config, today, start_of_day(&config, &inv, date!(2026 - 11 - 19)));
        assert!(
            text.contains("local times in Europe/Berlin (the biller's timezone), as of 2026-11-19 00:00\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "step 1 \"upcoming\": 2026-11-18 10:00 Europe/Berlin, 3 days before the due date\n  \
                 skipped: its time had passed when the invoice arrived\n"
            ),
            "{text}"
        );
    }

    /// 02:30 does not exist in Berlin on 2026-03-29: the clocks jump from
    /// 02:00 to 03:00, and the step goes at 03:30.
    #[test]
    fn a_local_time_a_dst_change_skips_is_shown_as_it_will_happen() {
        let config = config("");
        let inv = invoice("2026-03-29", "night", None);
        let today = date!(2026 - 03 - 20);
        let text = explain(&inv, &config, today, start_of_day(&config, &inv, today));
        assert!(
            text.starts_with("journey \"night\" (named by rule \"at night\")\n"),
            "{text}"
        );
        assert!(
            text.contains("step 1 \"due\": 2026-03-29 03:30 Europe/Berlin, on the due date\n"),
            "{text}"
        );
    }

    #[test]
    fn a_rule_or_biller_that_says_none_is_named_and_so_is_a_missing_choice() {
        let today = date!(2026 - 11 - 20);
        let now = start_of_day(&config(""), &invoice("2026-12-01", "erp", None), today);
        let once = invoice("2026-12-01", "once", None);
        assert_eq!(
            explain(&once, &config(""), today, now),
            "journey: none (rule \"no reminders\" says journey = \"none\")\n"
        );
        let by_biller = config("journey = \"none\"");
        assert_eq!(
            explain(&invoice("2026-12-01", "erp", None), &by_biller, today, now),
            "journey: none (biller acme says journey = \"none\")\n"
        );
        // The deciding rule comes before the biller.
        let night = explain(&invoice("2026-12-01", "night", None), &by_biller, today, now);
        assert!(
            night.starts_with("journey \"night\" (named by rule \"at night\")\n"),
            "{night}"
        );

        let mut nobody = config("");
        nobody.routing.journey = None;
        assert_eq!(
            explain(&invoice("2026-12-01", "erp", None), &nobody, today, now),
            "journey: none (no rule, biller or [routing] journey names one)\n"
        );
        let mut missing = config("");
        missing.routing.journey = Some("gone".into());
        assert_eq!(
            explain(&invoice("2026-12-01", "erp", None), &missing, today, now),
            "journey: none ([routing] journey names journey \"gone\", which has no [journeys.gone] section)\n"
        );
    }

    #[test]
    fn escalation_and_the_daily_cap_are_named_when_set() {
        let mut config = config("");
        let inv = invoice("2026-12-01", "erp", None);
        let today = date!(2026 - 11 - 20);
        let now = start_of_day(&config, &inv, today);
        let text = explain(&inv, &config, today, now);
        assert!(
            !text.contains("escalate_after") && !text.contains("max_messages"),
            "{text}"
        );

        if let Some(journey) = config.journeys.get_mut("standard") {
            journey.escalate_after = Some(Duration::from_secs(24 * 3_600));
        }
        config.routing.max_messages_per_customer_per_day = std::num::NonZeroU32::new(3);
        let text = explain(&inv, &config, today, now);
        assert!(
            text.contains(
                "\n  escalate_after 1 day: a message of the first request or of a fallback step that no person \
                 opens in that long goes out on the next channel\n  max_messages_per_customer_per_day 3: a step over \
                 it waits for the next day's send_at\nstep 1 "
            ),
            "{text}"
        );
    }

    #[test]
    fn after_is_said_in_its_largest_whole_unit() {
        let words = |secs| duration_words(Duration::from_secs(secs));
        assert_eq!(words(2 * 86_400), "2 days");
        assert_eq!(words(86_400), "1 day");
        assert_eq!(words(36 * 3_600), "36 hours");
        assert_eq!(words(90 * 60), "90 minutes");
        assert_eq!(words(30), "30 seconds");
        assert_eq!(duration_words(Duration::from_millis(1_500)), "1s 500ms");
    }
}
