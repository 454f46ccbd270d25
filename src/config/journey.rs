//! Journeys: the ladders of reminders that follow an invoice's first request
//! until it is paid (docs/journeys.md). Read from `[journeys.<name>]`; which
//! one follows an invoice is decided by rule, biller or `[routing] journey`.

use std::time::Duration;

use crate::config::Strategy;
use crate::domain::ChannelName;

pub use crate::settings::JourneyChoice;

/// Template of the first request; steps default to `reminder` up to the
/// due date and `overdue` after it.
pub const FIRST_TEMPLATE: &str = "payment_request";

/// One named ladder of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub name: String,
    /// Local time (the customer's time zone, else the biller's, else UTC)
    /// at which steps placed by `due` go out.
    pub send_at: jiff::civil::Time,
    /// A message of a `fallback` step (or the first request) that no person
    /// opened within this long goes out again on the step's next channel.
    pub escalate_after: Option<Duration>,
    /// In sending order: `check` refuses steps whose dates go backwards.
    pub steps: Vec<JourneyStep>,
}

/// One reminder of a journey.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyStep {
    /// Unique within its journey; events and the status API carry it.
    pub name: String,
    pub when: StepTime,
    /// `None`: the channels of whatever decided the first request's route.
    pub channels: Option<Vec<ChannelName>>,
    pub strategy: Strategy,
    /// `None`: `reminder` when sent on or before the due date, `overdue` after.
    pub template: Option<String>,
}

/// When a step goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepTime {
    /// `due = "-3d"`: this many days from the due date (negative before
    /// it), at the journey's `send_at`.
    Due { days: i32 },
    /// `after = "36h"`: this long after the invoice's previous message was sent.
    After(Duration),
}
