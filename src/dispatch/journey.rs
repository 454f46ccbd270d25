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
//!
//! Escalation: with the journey's `escalate_after`, a `fallback` step that
//! went out on a channel stays planned, due again that long after the send.
//! Then, unless a person opened that message's pay link (previews do not
//! count) or the invoice was closed, the same message goes out on the
//! step's next channel with `invoice.escalated`, and is watched in turn.
//! Step 0 ([`crate::journey::REQUEST_STEP`]) watches the first request the
//! same way.

use tracing::{info, warn, Instrument};

use super::admit::InFlight;
use super::send::{SendPlan, Sent, StepSend};
use super::{join_names, Dispatcher};
use crate::config::{Journey, JourneyStep, StepTime, Strategy};
use crate::domain::ChannelName;
use crate::domain::Status;
use crate::events::{Event, EventName};
use crate::router;
use crate::store::{AttemptState, DueStep, HeldStep, StepRecord, StepStatus, StoreError, StoredInvoice};

/// How long a step waits when its invoice is being handled right now (its
/// first request, or another step, in this process).
const BUSY_RETRY_MS: i64 = 1_000;
/// How long a step waits for a first request that has not gone out yet
/// (held for quiet hours, or still being tried).
const FIRST_REQUEST_WAIT_MS: i64 = 5_000;

/// How walking a step's channels ended.
enum Walk {
    /// Every channel it was to use has an outcome: whether any took it,
    /// and whether this walk tried any (a walk that only found earlier
    /// outcomes reports no failure again).
    Done { any_sent: bool, tried: bool },
    /// Quiet hours hold a channel until then.
    Held(i64),
    /// Sent; the step's next channel follows then unless a person opens it.
    Watch(i64),
    /// A channel failed for now: tried again then (`[routing] retry_for`).
    Retry(i64),
    /// The invoice was closed or replaced meanwhile: nothing more to send.
    Closed,
}

/// What one step's send is: which attempts are its own, what it renders,
/// how its channels are walked.
struct StepWork<'a> {
    journey: &'a Journey,
    send: StepSend<'a>,
    plan: router::Plan,
}

/// A claimed step that passed every check before its send (see
/// [`Dispatcher::check_step`]): what sending it needs. It holds its
/// invoice in flight until dropped.
pub(super) struct ReadyStep<'a> {
    pub due: DueStep,
    pub stored: StoredInvoice,
    pub journey: &'a Journey,
    /// `None` for step 0, the first request watched for escalation.
    pub step: Option<&'a JourneyStep>,
    /// No later step of the invoice is planned: this one completes the journey.
    pub last: bool,
    _in_flight: InFlight<'a>,
}

impl Dispatcher {
    /// Sends one claimed step, or puts it back for later, or ends it
    /// unsent with the reason. A reminder of a biller that combines goes
    /// out with the customer's other reminders of the day (see
    /// [`Dispatcher::run_customer_steps`]).
    pub async fn run_step(&self, due: &DueStep) -> Result<(), StoreError> {
        if self.combines_reminder(due) {
            return self.run_customer_steps(vec![due.clone()]).await;
        }
        match self.check_step(due).await? {
            Some(ready) => self.send_ready(&ready).await,
            None => Ok(()),
        }
    }

    /// Sends a step that passed its checks on its own.
    pub(super) async fn send_ready(&self, ready: &ReadyStep<'_>) -> Result<(), StoreError> {
        let span = tracing::info_span!("step", key = %ready.due.key, step = %ready.due.name);
        self.send_step(&ready.due, ready.journey, ready.step, &ready.stored, ready.last)
            .instrument(span)
            .await
    }

    /// Puts a claimed step back until `at`, never before it was planned (a
    /// step taken early with the customer's other reminders of the day
    /// keeps its own time when it cannot go with them).
    async fn put_back(&self, due: &DueStep, at: i64, why: &str) -> Result<(), StoreError> {
        self.store
            .reschedule_step(&due.key, due.seq, at.max(due.due_ms), why)
            .await
    }

    /// The checks before a claimed step's send: the invoice still open and
    /// its first request out, its journey and step still configured, the
    /// steps before it gone first, a later due step superseding it, its
    /// `after` wait, the daily cap. `None`: the step was put back or ended
    /// here, with why.
    pub(super) async fn check_step(&self, due: &DueStep) -> Result<Option<ReadyStep<'_>>, StoreError> {
        let key = &due.key;
        let now = self.clock.now_ms();
        let Some(in_flight) = InFlight::enter(&self.in_flight, key) else {
            let why = "waiting for another send of this invoice to finish";
            self.put_back(due, now + BUSY_RETRY_MS, why).await?;
            return Ok(None);
        };
        let Some(stored) = self.store.invoice(key).await? else {
            self.end_step(due, StepStatus::Skipped, "the invoice is not stored", Vec::new())
                .await?;
            return Ok(None);
        };
        match stored.status {
            Status::Paid | Status::Cancelled | Status::Superseded => {
                let why = format!("the invoice is {}", stored.status.as_str());
                self.end_step(due, StepStatus::Cancelled, &why, Vec::new()).await?;
                return Ok(None);
            }
            Status::Accepted => {
                let why = "waiting for the first request to go out";
                self.put_back(due, now + FIRST_REQUEST_WAIT_MS, why).await?;
                return Ok(None);
            }
            Status::Sent | Status::Exhausted => {}
        }
        let Some(journey) = self.config.journeys.get(&due.journey) else {
            let why = format!("journey {} is no longer configured", due.journey);
            self.end_step(due, StepStatus::Skipped, &why, Vec::new()).await?;
            return Ok(None);
        };
        let step = match due.seq {
            0 => None,
            _ => match journey.steps.iter().find(|s| s.name == due.name) {
                Some(step) => Some(step),
                None => {
                    let why = format!("journey {} has no step {} any more", due.journey, due.name);
                    self.end_step(due, StepStatus::Skipped, &why, Vec::new()).await?;
                    return Ok(None);
                }
            },
        };
        let steps = self.store.steps(&key.biller_id, &key.invoice_id).await?;
        let mine: Vec<&StepRecord> = steps.iter().filter(|s| s.revision == key.revision).collect();
        let sent_by = |name: &str| {
            stored
                .attempts
                .iter()
                .any(|a| a.state == AttemptState::Sent && a.step.as_deref() == Some(name))
        };
        let planned = |s: &&&StepRecord| s.status == StepStatus::Planned;
        // Steps go in order: one before this that has sent nothing yet (held
        // for quiet hours or the cap, failing for now, claimed elsewhere)
        // goes first. One that went out and only waits to escalate does not
        // hold this one back: this step supersedes its escalation.
        let before: Vec<&&StepRecord> = mine.iter().filter(|s| s.seq < due.seq).filter(planned).collect();
        let waiting = before
            .iter()
            .filter(|s| s.seq > 0 && !sent_by(&s.name))
            .map(|s| s.due_ms)
            .max();
        if let Some(at) = waiting {
            let why = "waits for the step before it to go out first";
            self.put_back(due, at.max(now).saturating_add(BUSY_RETRY_MS), why)
                .await?;
            return Ok(None);
        }
        let later: Vec<&&StepRecord> = mine.iter().filter(|s| s.seq > due.seq).filter(planned).collect();
        // Only a step placed by date is really due when its time has come;
        // one placed after the previous message waits for this one.
        if later.iter().any(|s| s.after_ms.is_none() && s.due_ms <= now) {
            let why = "a later step is due too (payrelay was not running when this one was): only the latest goes out";
            self.end_step(due, StepStatus::Skipped, why, Vec::new()).await?;
            return Ok(None);
        }
        if let Some(StepTime::After(wait)) = step.map(|s| s.when) {
            let earlier: Vec<&str> = mine
                .iter()
                .filter(|s| s.seq < due.seq)
                .map(|s| s.name.as_str())
                .collect();
            let previous = after_previous(&stored, &earlier, wait.as_millis() as i64);
            if let Some(at) = previous.filter(|at| *at > now) {
                let why = format!("placed {} after the previous message", humantime::format_duration(wait));
                self.put_back(due, at, &why).await?;
                return Ok(None);
            }
        }
        for watching in &before {
            let why = format!("step {} went out before anyone opened this one", due.name);
            self.end_step(&due_of(key, watching), StepStatus::Sent, &why, Vec::new())
                .await?;
        }
        if let Some(cap) = self.config.routing.max_messages_per_customer_per_day {
            let tz = crate::journey::time_zone(&self.config, &stored.invoice);
            let (today, tomorrow) = crate::journey::day_window(now, &tz, journey.send_at);
            let customer = stored.invoice.customer_key();
            if self.store.messages_to_customer(&customer, today).await? >= cap.get() {
                let why = format!("the customer had {cap} messages today, the daily cap: waits for tomorrow");
                self.metrics.step("capped");
                let until = tomorrow.max(due.due_ms);
                self.store
                    .hold_step(&due.key, due.seq, until, HeldStep::Cap, &why)
                    .await?;
                return Ok(None);
            }
        }
        let last = later.is_empty();
        Ok(Some(ReadyStep {
            due: due.clone(),
            stored,
            journey,
            step,
            last,
            _in_flight: in_flight,
        }))
    }

    /// Walks the step's channels and records how the step ended; the last
    /// step of the journey reports the journey completed.
    async fn send_step(
        &self,
        due: &DueStep,
        journey: &Journey,
        step: Option<&JourneyStep>,
        stored: &StoredInvoice,
        last: bool,
    ) -> Result<(), StoreError> {
        let invoice = &stored.invoice;
        let key = &invoice.key;
        let tz = crate::journey::time_zone(&self.config, invoice);
        let today = crate::journey::local_date(self.clock.now_ms(), &tz);
        let profile = self.profile(invoice).await?;
        let (send, plan) = match step {
            Some(step) => {
                let own = step.channels.as_deref().map(|c| (c, step.strategy));
                let send = StepSend {
                    name: Some(&due.name),
                    template: crate::journey::template(step, invoice.due_date, today),
                };
                (send, super::debtor_plan(invoice, &self.config, today, own, &profile))
            }
            None => {
                let send = StepSend {
                    name: None,
                    template: crate::config::journey::FIRST_TEMPLATE,
                };
                (send, super::debtor_plan(invoice, &self.config, today, None, &profile))
            }
        };
        let (plan, all_suppressed) = plan;
        if all_suppressed {
            let why = super::EVERY_CHANNEL_SUPPRESSED;
            return self.end_step(due, StepStatus::Skipped, why, Vec::new()).await;
        }
        if plan.channels.is_empty() {
            let why = "no channel of the step can reach the customer";
            return self.end_step(due, StepStatus::Skipped, why, Vec::new()).await;
        }
        let work = StepWork { journey, send, plan };
        let mut events = Vec::new();
        let (status, detail) = match self.walk_step(&work, stored).await? {
            Walk::Closed => {
                return self
                    .end_step(due, StepStatus::Cancelled, "the invoice was closed", Vec::new())
                    .await
            }
            Walk::Held(until) => {
                info!(until = %crate::events::rfc3339_ms(until), "quiet hours: step held until the window opens");
                let why = format!("quiet hours: held until {}", crate::events::rfc3339_ms(until));
                return self
                    .store
                    .hold_step(key, due.seq, until, HeldStep::QuietHours, &why)
                    .await;
            }
            Walk::Retry(at) => {
                let why = format!(
                    "a channel failed for now; tried again at {}",
                    crate::events::rfc3339_ms(at)
                );
                return self.store.reschedule_step(key, due.seq, at, &why).await;
            }
            Walk::Watch(at) => {
                let why = format!(
                    "sent; escalates to the next channel at {} unless it is opened",
                    crate::events::rfc3339_ms(at)
                );
                return self.store.reschedule_step(key, due.seq, at, &why).await;
            }
            Walk::Done { any_sent: true, .. } => (StepStatus::Sent, format!("template {}", work.send.template)),
            Walk::Done { any_sent: false, tried } => {
                let why = format!("every channel of the step failed: {}", join_names(&work.plan.channels));
                if tried {
                    events.push(
                        Event::exhausted(key, &stored.correlation, why.clone())
                            .step(work.send.name)
                            .metadata(invoice.metadata.clone()),
                    );
                }
                (StepStatus::Failed, why)
            }
        };
        if last && step.is_some() {
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
    /// an outcome on (from before a crash, or an earlier channel of an
    /// escalation), and escalating past a sent message nobody opened.
    async fn walk_step(&self, work: &StepWork<'_>, stored: &StoredInvoice) -> Result<Walk, StoreError> {
        let invoice = &stored.invoice;
        let plan = &work.plan;
        let now = self.clock.now_ms();
        let watch = match plan.strategy {
            Strategy::Fallback => work.journey.escalate_after.map(|d| d.as_millis() as i64),
            Strategy::All => None,
        };
        let mut any_sent = false;
        let mut tried = false;
        let mut held_until: Option<i64> = None;
        let mut retry_at: Option<i64> = None;
        // The channel whose unopened message this walk escalates.
        let mut escalating: Option<ChannelName> = None;
        for (i, channel) in plan.channels.iter().enumerate() {
            let has_next = i + 1 < plan.channels.len();
            let previous = stored
                .attempts
                .iter()
                .rev()
                .find(|a| a.channel == *channel && a.step.as_deref() == work.send.name);
            match previous.map(|a| (a.state, a)) {
                Some((AttemptState::Sent, sent)) => {
                    any_sent = true;
                    if plan.strategy == Strategy::Fallback {
                        let Some(wait) = watch.filter(|_| has_next && !sent.opened) else {
                            break;
                        };
                        let at = sent.finished_ms.unwrap_or(now).saturating_add(wait);
                        if at > now {
                            return Ok(Walk::Watch(at));
                        }
                        escalating = Some(*channel);
                    }
                    continue;
                }
                Some((AttemptState::Failed, _)) => continue,
                Some((AttemptState::Sending | AttemptState::Retrying, _)) | None => {}
            }
            if let Some(until) = self.quiet_until(invoice, *channel) {
                held_until = Some(held_until.map_or(until, |h| h.min(until)));
                if plan.strategy == Strategy::Fallback {
                    break;
                }
                continue;
            }
            if let (Some(from), None) = (escalating, previous) {
                let event = self.escalated(work, stored, from, *channel);
                self.store.record_event(&event).await?;
            }
            // A step's last channel (every channel, with `all`) is tried
            // again later on a transient failure, until `retry_for` after
            // its first one.
            let retries: Vec<i64> = stored
                .attempts
                .iter()
                .filter(|a| a.channel == *channel && a.step.as_deref() == work.send.name)
                .filter(|a| a.state == AttemptState::Retrying)
                .map(|a| a.finished_ms.unwrap_or(now))
                .collect();
            let retry_for = self.config.routing.retry_for.as_millis() as i64;
            let retry_until = (plan.strategy == Strategy::All || !has_next)
                .then(|| retries.iter().min().copied().unwrap_or(now).saturating_add(retry_for));
            let send = SendPlan {
                possibly_twice: previous.is_some_and(|a| a.state == AttemptState::Sending),
                wait_if_paused: plan.strategy == Strategy::All || !has_next,
                ends_invoice: false,
                step: Some(work.send),
                retry_until,
            };
            tried = true;
            let sent = match self.send_on(invoice, *channel, &stored.correlation, send).await? {
                Sent::Closed => return Ok(Walk::Closed),
                Sent::Accepted => true,
                Sent::Failed => false,
                Sent::Retrying => {
                    let at = self.clock.now_ms().saturating_add(retry_pause(retries.len()));
                    retry_at = Some(retry_at.map_or(at, |r: i64| r.min(at)));
                    if plan.strategy == Strategy::Fallback {
                        break;
                    }
                    continue;
                }
            };
            any_sent |= sent;
            if sent && plan.strategy == Strategy::Fallback {
                if let Some(wait) = watch.filter(|_| has_next) {
                    return Ok(Walk::Watch(self.clock.now_ms().saturating_add(wait)));
                }
                break;
            }
        }
        Ok(match (held_until, retry_at) {
            (_, Some(at)) => Walk::Retry(held_until.map_or(at, |h| h.min(at))),
            (Some(until), None) => Walk::Held(until),
            (None, None) => Walk::Done { any_sent, tried },
        })
    }

    /// `invoice.escalated`: the message on `from` was not opened in time
    /// and goes out on `to`.
    fn escalated(&self, work: &StepWork<'_>, stored: &StoredInvoice, from: ChannelName, to: ChannelName) -> Event {
        let wait = work
            .journey
            .escalate_after
            .map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_default();
        let what = match work.send.name {
            Some(step) => format!("the {from} message of step {step}"),
            None => format!("the {from} payment request"),
        };
        info!(%from, %to, "not opened in time: escalating to the next channel");
        self.metrics.step("escalated");
        Event::about(EventName::Escalated, &stored.invoice.key, &stored.correlation)
            .channel(to, 1)
            .step(work.send.name)
            .detail(format!("{what} was not opened within {wait}; sending it by {to}"))
            .metadata(stored.invoice.metadata.clone())
    }

    /// Records how a step ended, with its events.
    pub(super) async fn end_step(
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

/// How long a step waits before trying a channel again after its `n`th
/// transient failure (from 0): a minute, doubling, at most an hour.
fn retry_pause(n: usize) -> i64 {
    const MINUTE: i64 = 60_000;
    (MINUTE << n.min(6)).min(60 * MINUTE)
}

/// When a step placed `wait` after the previous message may go: that long
/// after the last message the steps before it (`earlier`, by name) or the
/// first request sent (`None`: nothing went out yet, so the wait counts
/// from now, as planned).
fn after_previous(stored: &StoredInvoice, earlier: &[&str], wait: i64) -> Option<i64> {
    stored
        .attempts
        .iter()
        .filter(|a| a.state == AttemptState::Sent)
        .filter(|a| a.step.as_deref().is_none_or(|step| earlier.contains(&step)))
        .filter_map(|a| a.finished_ms)
        .max()
        .map(|last| last.saturating_add(wait))
}

/// The [`DueStep`] a stored step would be, to end it.
fn due_of(key: &crate::domain::InvoiceKey, step: &StepRecord) -> DueStep {
    DueStep {
        key: key.clone(),
        seq: step.seq,
        journey: step.journey.clone(),
        name: step.name.clone(),
        due_ms: step.due_ms,
    }
}
