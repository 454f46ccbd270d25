//! Sending a journey step when it comes due: the reminders that follow the
//! first request until the invoice is paid (docs/journeys.md).
//!
//! The scheduler claims a due step in the store (so of several instances
//! one sends it) and hands it here. The invoice is read again first: a
//! paid, cancelled or replaced invoice gets nothing more, and its step is
//! recorded as cancelled. A step placed `after` the previous message waits
//! until that long after the message actually went out. Then the step's
//! channels are walked as the first request's are (`fallback` stops at the
//! first send, `all` sends on each), each send recorded with the step's
//! name, and quiet hours put the step back until the window opens. A step
//! interrupted by a crash is claimed again once its claim is stale; the
//! channels it already sent on are not sent again.

use tracing::{info, warn, Instrument};

use super::admit::InFlight;
use super::send::{SendPlan, Sent, StepSend};
use super::{join_names, Dispatcher};
use crate::config::{Journey, JourneyStep, StepTime, Strategy};
use crate::domain::Status;
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;
use crate::router;
use crate::store::{AttemptState, DueStep, StepRecord, StepStatus, StoreError, StoredInvoice};

/// How long a step waits when its invoice is being handled right now (its
/// first request, or another step, in this process).
const BUSY_RETRY_MS: i64 = 1_000;
/// How long a step waits for a first request that has not gone out yet
/// (held for quiet hours, or still being tried).
const FIRST_REQUEST_WAIT_MS: i64 = 60_000;

/// How walking a step's channels ended.
enum Walk {
    /// Every channel it was to use has an outcome: whether any took it.
    Done { any_sent: bool },
    /// Quiet hours hold a channel until then.
    Held(i64),
    /// The invoice was closed or replaced meanwhile: nothing more to send.
    Closed,
}

impl Dispatcher {
    /// Sends one claimed step, or puts it back for later, or ends it
    /// unsent with the reason.
    pub async fn run_step(&self, due: &DueStep) -> Result<(), StoreError> {
        let key = &due.key;
        let now = self.clock.now_ms();
        let Some(_in_flight) = InFlight::enter(&self.in_flight, key) else {
            let why = "waiting for another send of this invoice to finish";
            return self.store.reschedule_step(key, due.seq, now + BUSY_RETRY_MS, why).await;
        };
        let Some(stored) = self.store.invoice(key).await? else {
            return self
                .end_step(due, StepStatus::Skipped, "the invoice is not stored", Vec::new())
                .await;
        };
        match stored.status {
            Status::Paid | Status::Cancelled | Status::Superseded => {
                let why = format!("the invoice is {}", stored.status.as_str());
                return self.end_step(due, StepStatus::Cancelled, &why, Vec::new()).await;
            }
            Status::Accepted => {
                let why = "waiting for the first request to go out";
                return self
                    .store
                    .reschedule_step(key, due.seq, now + FIRST_REQUEST_WAIT_MS, why)
                    .await;
            }
            Status::Sent | Status::Exhausted => {}
        }
        let Some((journey, step)) = self.step_config(due) else {
            let why = format!("journey {} has no step {} any more", due.journey, due.name);
            return self.end_step(due, StepStatus::Skipped, &why, Vec::new()).await;
        };
        let steps = self.store.steps(&key.biller_id, &key.invoice_id).await?;
        let later: Vec<&StepRecord> = steps
            .iter()
            .filter(|s| s.revision == key.revision && s.seq > due.seq && s.status == StepStatus::Planned)
            .collect();
        if later.iter().any(|s| s.due_ms <= now) {
            let why = "a later step is due too (payrelay was not running when this one was): only the latest goes out";
            return self.end_step(due, StepStatus::Skipped, why, Vec::new()).await;
        }
        if let StepTime::After(wait) = step.when {
            if let Some(at) = after_previous(&stored, wait.as_millis() as i64).filter(|at| *at > now) {
                let why = format!("placed {} after the previous message", humantime::format_duration(wait));
                return self.store.reschedule_step(key, due.seq, at, &why).await;
            }
        }
        let span = tracing::info_span!("step", %key, step = %due.name);
        self.send_step(due, journey, step, &stored, later.is_empty())
            .instrument(span)
            .await
    }

    /// The journey and step a stored step names, if the config still has them.
    fn step_config(&self, due: &DueStep) -> Option<(&Journey, &JourneyStep)> {
        let journey = self.config.journeys.get(&due.journey)?;
        let step = journey.steps.iter().find(|s| s.name == due.name)?;
        Some((journey, step))
    }

    /// Walks the step's channels and records how the step ended; the last
    /// step of the journey reports the journey completed.
    async fn send_step(
        &self,
        due: &DueStep,
        journey: &Journey,
        step: &JourneyStep,
        stored: &StoredInvoice,
        last: bool,
    ) -> Result<(), StoreError> {
        let invoice = &stored.invoice;
        let key = &invoice.key;
        let tz = crate::journey::time_zone(&self.config, invoice);
        let today = crate::journey::local_date(self.clock.now_ms(), &tz);
        let template = crate::journey::template(step, invoice.due_date, today);
        let own = step.channels.as_deref().map(|c| (c, step.strategy));
        let plan = router::route_step(invoice, &self.config, today, own);
        if plan.channels.is_empty() {
            let why = "no channel of the step can reach the customer";
            return self.end_step(due, StepStatus::Skipped, why, Vec::new()).await;
        }
        let send = StepSend {
            name: &due.name,
            template,
        };
        let walk = self
            .walk_step(invoice, &plan, stored, &send, &stored.correlation)
            .await?;
        let mut events = Vec::new();
        let (status, detail) = match walk {
            Walk::Closed => {
                return self
                    .end_step(due, StepStatus::Cancelled, "the invoice was closed", Vec::new())
                    .await
            }
            Walk::Held(until) => {
                info!(until = %crate::events::rfc3339_ms(until), "quiet hours: step held until the window opens");
                let why = format!("quiet hours: held until {}", crate::events::rfc3339_ms(until));
                return self.store.reschedule_step(key, due.seq, until, &why).await;
            }
            Walk::Done { any_sent: true } => (StepStatus::Sent, format!("template {template}")),
            Walk::Done { any_sent: false } => {
                let why = format!("every channel of the step failed: {}", join_names(&plan.channels));
                events.push(
                    Event::exhausted(key, &stored.correlation, why.clone())
                        .step(Some(&due.name))
                        .metadata(invoice.metadata.clone()),
                );
                (StepStatus::Failed, why)
            }
        };
        if last {
            let why = format!(
                "the last step of journey {} is done and the invoice is still open",
                journey.name
            );
            events.push(
                Event::journey_completed(key, &stored.correlation, why)
                    .step(Some(&due.name))
                    .metadata(invoice.metadata.clone()),
            );
        }
        self.end_step(due, status, &detail, events).await
    }

    /// Sends on the plan's channels in order, skipping those this step has
    /// an outcome on (from before a crash).
    async fn walk_step(
        &self,
        invoice: &Invoice,
        plan: &router::Plan,
        stored: &StoredInvoice,
        step: &StepSend<'_>,
        correlation: &Correlation,
    ) -> Result<Walk, StoreError> {
        let mut any_sent = false;
        let mut held_until: Option<i64> = None;
        for (i, channel) in plan.channels.iter().enumerate() {
            let previous = stored
                .attempts
                .iter()
                .rev()
                .find(|a| a.channel == *channel && a.step.as_deref() == Some(step.name));
            let sent = match previous.map(|a| a.state) {
                Some(AttemptState::Sent) => true,
                Some(AttemptState::Failed) => false,
                Some(AttemptState::Sending) | None => {
                    if let Some(until) = self.quiet_until(invoice, *channel) {
                        held_until = Some(held_until.map_or(until, |h| h.min(until)));
                        if plan.strategy == Strategy::Fallback {
                            break;
                        }
                        continue;
                    }
                    let send = SendPlan {
                        possibly_twice: previous.is_some(),
                        wait_if_paused: plan.strategy == Strategy::All || i + 1 == plan.channels.len(),
                        ends_invoice: false,
                        step: Some(*step),
                    };
                    match self.send_on(invoice, *channel, correlation, send).await? {
                        Sent::Closed => return Ok(Walk::Closed),
                        Sent::Accepted => true,
                        Sent::Failed => false,
                    }
                }
            };
            any_sent |= sent;
            if sent && plan.strategy == Strategy::Fallback {
                break;
            }
        }
        Ok(match held_until {
            Some(until) => Walk::Held(until),
            None => Walk::Done { any_sent },
        })
    }

    /// Records how a step ended, with its events.
    async fn end_step(
        &self,
        due: &DueStep,
        status: StepStatus,
        detail: &str,
        events: Vec<Event>,
    ) -> Result<(), StoreError> {
        if status != StepStatus::Sent {
            info!(key = %due.key, step = %due.name, status = status.as_str(), detail, "journey step ended");
        }
        self.metrics.step(status.as_str());
        if !self
            .store
            .finish_step(&due.key, due.seq, status, Some(detail), &events)
            .await?
        {
            warn!(key = %due.key, step = %due.name, "the step was ended elsewhere meanwhile");
        }
        self.outbox_signal.notify_one();
        Ok(())
    }
}

/// When a step placed `wait` after the previous message may go: that long
/// after the last message of this revision went out (`None`: nothing went
/// out yet, so the wait counts from now, as planned).
fn after_previous(stored: &StoredInvoice, wait: i64) -> Option<i64> {
    stored
        .attempts
        .iter()
        .filter(|a| a.state == AttemptState::Sent)
        .filter_map(|a| a.finished_ms)
        .max()
        .map(|last| last.saturating_add(wait))
}
