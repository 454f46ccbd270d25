//! Journeys planned: which journey follows an invoice's first request, when
//! each of its steps goes out, and which template each step sends.
//!
//! Pure logic over the config and the invoice, with time given by the
//! caller, so the dispatcher (which stores the plan with the invoice) and
//! `payrelay route` (which prints it) plan the same way, and a test can
//! plan weeks of reminders from a fixed instant. Sending the steps is the
//! dispatcher's (`dispatch::journey`); storing them, the store's.

mod explain;
#[cfg(test)]
mod tests;

pub use explain::{explain, start_of_day};

use jiff::tz::TimeZone;

use crate::config::{Config, Journey, JourneyChoice, JourneyStep, StepTime};
use crate::invoice::Invoice;
use crate::router::Decision;

/// The name of step 0: not a reminder but the first request's watch for
/// escalation, planned when the journey has `escalate_after`.
pub const REQUEST_STEP: &str = "request";

/// Why a step is not sent when its time had passed at intake.
pub const PAST_AT_INTAKE: &str = "its time had passed when the invoice arrived";

/// A journey step as planned when its invoice is accepted, which the store
/// keeps until it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    /// 1, 2, ... in journey order.
    pub seq: u32,
    pub journey: String,
    pub name: String,
    /// When it goes out (ms since the epoch). For a step placed `after`
    /// the previous message, an estimate: checked against that message
    /// when it comes due.
    pub due_ms: i64,
    /// For a step placed after the previous message: how long after.
    pub after_ms: Option<i64>,
    /// Its time had passed at intake: stored as skipped, with this reason.
    pub skipped: Option<String>,
}

/// The journey that follows an invoice routed by `decision`: the deciding
/// rule's, else the biller's, else `[routing] journey`; `None` for no
/// reminders. A name `check` let through always exists.
pub fn chosen<'a>(config: &'a Config, invoice: &Invoice, decision: &Decision) -> Option<&'a Journey> {
    let by_rule = match decision {
        Decision::Rule { index, .. } => config.routing.rules.get(*index).and_then(|r| r.journey.as_ref()),
        Decision::InvoiceChannels | Decision::Default => None,
    };
    let by_biller = || {
        config
            .billers
            .get(&invoice.key.biller_id)
            .and_then(|b| b.journey.as_ref())
    };
    let name = match by_rule.or_else(by_biller) {
        Some(JourneyChoice::None) => return None,
        Some(JourneyChoice::Named(name)) => name,
        None => config.routing.journey.as_ref()?,
    };
    config.journeys.get(name)
}

/// The time zone an invoice's local times are read in: the customer's,
/// else the biller's, else UTC.
pub fn time_zone(config: &Config, invoice: &Invoice) -> TimeZone {
    let biller_tz = config
        .billers
        .get(&invoice.key.biller_id)
        .and_then(|b| b.timezone.as_deref());
    invoice
        .customer
        .timezone
        .as_deref()
        .or(biller_tz)
        .and_then(|name| crate::domain::quiet::time_zone(name).ok())
        .unwrap_or(TimeZone::UTC)
}

/// Every step of `journey` for `invoice` accepted at `now_ms`: steps placed
/// by the due date at the journey's `send_at` in `tz`, steps placed `after`
/// the previous message estimated from the previous step (or from now,
/// when the first request goes out). A step whose time is already past is
/// planned as skipped, so the status API can say why it never came. With
/// `escalate_after`, step 0 ([`REQUEST_STEP`]) watches the first request.
pub fn plan(journey: &Journey, invoice: &Invoice, tz: &TimeZone, now_ms: i64) -> Vec<PlannedStep> {
    let mut previous = now_ms;
    let mut planned = Vec::with_capacity(journey.steps.len() + 1);
    if let Some(wait) = journey.escalate_after {
        // Checked against the request's real send time when it comes due.
        planned.push(PlannedStep {
            seq: 0,
            journey: journey.name.clone(),
            name: REQUEST_STEP.to_owned(),
            due_ms: now_ms.saturating_add(wait.as_millis() as i64),
            after_ms: None,
            skipped: None,
        });
    }
    for (i, step) in journey.steps.iter().enumerate() {
        let (due_ms, after_ms) = match step.when {
            StepTime::Due { days } => (due_day_at(invoice.due_date, days, journey.send_at, tz), None),
            StepTime::After(wait) => {
                let wait = wait.as_millis() as i64;
                (previous.saturating_add(wait), Some(wait))
            }
        };
        let past = due_ms < now_ms;
        if !past {
            previous = due_ms;
        }
        planned.push(PlannedStep {
            seq: i as u32 + 1,
            journey: journey.name.clone(),
            name: step.name.clone(),
            due_ms,
            after_ms,
            skipped: past.then(|| PAST_AT_INTAKE.to_owned()),
        });
    }
    planned
}

/// `days` from `due_date`, at `send_at` in `tz`, as ms since the epoch. A
/// local time that a DST change skips moves forward with the clocks; one
/// that happens twice is the first of the two.
pub fn due_day_at(due_date: time::Date, days: i32, send_at: jiff::civil::Time, tz: &TimeZone) -> i64 {
    let date = due_date.saturating_add(time::Duration::days(i64::from(days)));
    let civil = jiff::civil::Date::new(date.year() as i16, date.month() as i8, date.day() as i8)
        .map(|d| d.to_datetime(send_at));
    match civil.and_then(|dt| dt.to_zoned(tz.clone())) {
        Ok(zoned) => zoned.timestamp().as_millisecond(),
        // Out of jiff's range (years beyond 9999): never.
        Err(_) => i64::MAX,
    }
}

/// The template a step sends on `today` (the customer's date): its own,
/// else `reminder` up to the due date and `overdue` after it.
pub fn template(step: &JourneyStep, due_date: time::Date, today: time::Date) -> &str {
    match &step.template {
        Some(name) => name,
        None if today > due_date => "overdue",
        None => "reminder",
    }
}

/// The customer's date at `now_ms` in `tz`.
pub fn local_date(now_ms: i64, tz: &TimeZone) -> time::Date {
    let date = jiff::Timestamp::from_millisecond(now_ms)
        .map(|t| t.to_zoned(tz.clone()).date())
        .unwrap_or_default();
    time::Date::from_calendar_date(
        i32::from(date.year()),
        time::Month::try_from(date.month() as u8).unwrap_or(time::Month::January),
        date.day() as u8,
    )
    .unwrap_or(time::Date::MIN)
}

/// The start of the customer's day at `now_ms` in `tz`, and of the next:
/// the day whose reminders of one customer go out together when the
/// biller combines.
pub fn local_day(now_ms: i64, tz: &TimeZone) -> (i64, i64) {
    let today = local_date(now_ms, tz);
    let midnight = jiff::civil::Time::midnight();
    (due_day_at(today, 0, midnight, tz), due_day_at(today, 1, midnight, tz))
}

/// The start of the customer's day at `now_ms` in `tz` (the daily cap's
/// window), and `send_at` on the next day: when a step over the cap goes.
pub fn day_window(now_ms: i64, tz: &TimeZone, send_at: jiff::civil::Time) -> (i64, i64) {
    let today = local_date(now_ms, tz);
    let start = due_day_at(today, 0, jiff::civil::Time::midnight(), tz);
    (start, due_day_at(today, 1, send_at, tz))
}
