//! Reminders of one customer due on the same day go together
//! (`[billers.<id>] combine`, docs/combining.md): when a reminder of a
//! biller that combines comes due, the customer's other reminders of that
//! (customer-local) day at the biller, in the same currency, are taken too
//! ([`Store::claim_customer_steps`], one statement, so of several
//! instances each step goes to one), and when more than one is left after
//! each step's usual checks, one message per channel lists them all with
//! one pay link. Each invoice keeps its own step record and its own events.
//!
//! The scheduler hands the due steps of billers that combine over as one
//! batch ([`Dispatcher::run_combined_batch`]): they were all claimed by
//! this instance at once, so the batch is grouped by customer here, before
//! any is sent, instead of each step claiming its siblings.
//!
//! A combined reminder walks the channels of its earliest step with
//! `fallback` to the next channel on failure, but is not escalated when
//! nobody opens it (docs/combining.md says so).
//!
//! [`Store::claim_customer_steps`]: crate::store::Store::claim_customer_steps

use futures_util::StreamExt;
use tracing::{info, warn};

use super::combine::{new_group_id, Combined, Member};
use super::journey::ReadyStep;
use super::send::{SendPlan, StepSend};
use super::Dispatcher;
use crate::config::Strategy;
use crate::domain::InvoiceKey;
use crate::events::Event;
use crate::store::{AttemptState, CustomerDay, DueStep, HeldStep, StepStatus, StoreError};

impl Dispatcher {
    /// Whether a claimed step is a reminder of a biller that combines (the
    /// first request, step 0, is combined by its group instead).
    pub fn combines_reminder(&self, due: &DueStep) -> bool {
        due.seq > 0
            && self
                .config
                .billers
                .get(&due.key.biller_id)
                .is_some_and(|b| b.combine.is_some())
    }

    /// Runs claimed steps one after the other as the scheduler would: each
    /// on its own, except reminders of billers that combine, which go by
    /// customer ([`Dispatcher::run_combined_batch`]).
    pub async fn run_steps(&self, steps: Vec<DueStep>) -> Result<(), StoreError> {
        let (combining, single): (Vec<DueStep>, Vec<DueStep>) =
            steps.into_iter().partition(|s| self.combines_reminder(s));
        for due in &single {
            self.run_step(due).await?;
        }
        if !combining.is_empty() {
            self.run_combined_batch(combining, 1).await?;
        }
        Ok(())
    }

    /// Sends a batch of claimed reminders of billers that combine: grouped
    /// by biller, customer and currency, each group with the customer's
    /// other reminders of the day, up to `at_once` customers at a time (the
    /// scheduler's slots it took). A group whose store failed is due again
    /// in a second; the first such error is answered after every group ran.
    pub async fn run_combined_batch(&self, steps: Vec<DueStep>, at_once: usize) -> Result<(), StoreError> {
        let mut groups: Vec<((String, String, String), Vec<DueStep>)> = Vec::new();
        for due in steps {
            let id = match self.store.invoice(&due.key).await? {
                Some(stored) => (
                    due.key.biller_id.clone(),
                    stored.invoice.customer_key(),
                    stored.invoice.amount.currency.clone(),
                ),
                // Not stored: its own check ends it.
                None => (due.key.biller_id.clone(), due.key.to_string(), String::new()),
            };
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, members)) => members.push(due),
                None => groups.push((id, vec![due])),
            }
        }
        let results: Vec<(Vec<DueStep>, Result<(), StoreError>)> = futures_util::stream::iter(groups)
            .map(|(_, steps)| async move {
                let result = self.run_customer_steps(steps.clone()).await;
                (steps, result)
            })
            .buffer_unordered(at_once.max(1))
            .collect()
            .await;
        let mut first_error = None;
        for (steps, result) in results {
            if let Err(e) = result {
                warn!(error = %e, steps = steps.len(), "could not send a customer's reminders; trying again shortly");
                let again = self.clock.now_ms() + 1_000;
                for due in &steps {
                    let _ = self
                        .store
                        .reschedule_step(&due.key, due.seq, again, "the store failed; trying again")
                        .await;
                }
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends claimed reminders of one customer (same biller and currency)
    /// with the customer's other reminders of the same local day: each
    /// checked as a single step is; one left goes out on its own as
    /// before, more go out as one combined message per channel.
    pub(super) async fn run_customer_steps(&self, batch: Vec<DueStep>) -> Result<(), StoreError> {
        let mut ready = Vec::new();
        for due in &batch {
            if let Some(r) = self.check_step(due).await? {
                ready.push(r);
            }
        }
        let Some(first) = ready.first() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let invoice = &first.stored.invoice;
        let tz = crate::journey::time_zone(&self.config, invoice);
        let (from_ms, to_ms) = crate::journey::local_day(now, &tz);
        let day = CustomerDay {
            biller_id: invoice.key.biller_id.clone(),
            customer: invoice.customer_key(),
            currency: invoice.amount.currency.clone(),
            from_ms,
            to_ms,
        };
        let idle = super::CLAIM_IDLE.as_millis() as i64;
        for due in self.store.claim_customer_steps(&day, now, idle).await? {
            if let Some(r) = self.check_step(&due).await? {
                ready.push(r);
            }
        }
        ready.sort_by(|a, b| (a.due.due_ms, &a.due.key.invoice_id).cmp(&(b.due.due_ms, &b.due.key.invoice_id)));
        match ready.len() {
            1 => self.send_ready(&ready[0]).await,
            _ => self.send_combined_steps(&day, &ready).await,
        }
    }

    /// One combined reminder per channel of the earliest step, listing
    /// every invoice of `ready`; then each step ends with its own events.
    async fn send_combined_steps(&self, day: &CustomerDay, ready: &[ReadyStep<'_>]) -> Result<(), StoreError> {
        let first = &ready[0];
        let invoice = &first.stored.invoice;
        let now = self.clock.now_ms();
        let tz = crate::journey::time_zone(&self.config, invoice);
        let today = crate::journey::local_date(now, &tz);
        // What the store knows of the customer (their choice on a pay
        // page, their stops) routes it as it would a single reminder.
        let profile = self.profile(invoice).await?;
        let own = first.step.and_then(|s| s.channels.as_deref().map(|c| (c, s.strategy)));
        let (plan, all_suppressed) = super::debtor_plan(invoice, &self.config, today, own, &profile);
        let unreachable = match (all_suppressed, plan.channels.is_empty()) {
            (true, _) => Some(super::EVERY_CHANNEL_SUPPRESSED),
            (false, true) => Some("no channel of the step can reach the customer"),
            (false, false) => None,
        };
        if let Some(why) = unreachable {
            for r in ready {
                self.end_step(&r.due, StepStatus::Skipped, why, Vec::new()).await?;
            }
            return Ok(());
        }
        let group_id = new_group_id();
        self.store.add_reminder_group(&group_id, day).await?;
        info!(group = %group_id, invoices = ready.len(), "sending one reminder for the customer's invoices due today");
        // Listed by due date, then invoice id, as a first request's group.
        let mut listed: Vec<&ReadyStep<'_>> = ready.iter().collect();
        listed.sort_by(|a, b| {
            (a.stored.invoice.due_date, &a.stored.invoice.key.invoice_id)
                .cmp(&(b.stored.invoice.due_date, &b.stored.invoice.key.invoice_id))
        });
        let fallback = plan.strategy == Strategy::Fallback;
        let (mut any_sent, mut tried) = (false, false);
        let mut held_until: Option<i64> = None;
        for (i, channel) in plan.channels.iter().copied().enumerate() {
            let before = |r: &ReadyStep<'_>| {
                r.stored
                    .attempts
                    .iter()
                    .rev()
                    .find(|a| a.channel == channel && a.step.as_deref() == Some(r.due.name.as_str()))
                    .map(|a| a.state)
            };
            // Taken over from a sender that died: what it sent stays sent.
            if listed.iter().all(|r| before(r) == Some(AttemptState::Sent)) {
                any_sent = true;
                if fallback {
                    break;
                }
                continue;
            }
            // Every listed reminder failed on it already (before a crash).
            if listed.iter().all(|r| before(r) == Some(AttemptState::Failed)) {
                continue;
            }
            if let Some(until) = self.quiet_until(invoice, channel) {
                held_until = Some(held_until.map_or(until, |h| h.min(until)));
                if fallback {
                    break;
                }
                continue;
            }
            let send = SendPlan {
                possibly_twice: listed
                    .iter()
                    .any(|r| matches!(before(r), Some(AttemptState::Sending | AttemptState::Retrying))),
                wait_if_paused: !fallback || i + 1 == plan.channels.len(),
                ends_invoice: false,
                step: Some(StepSend {
                    name: Some(&first.due.name),
                    template: crate::render::COMBINED_TEMPLATE,
                }),
                retry_until: None,
            };
            let members: Vec<Member<'_>> = listed
                .iter()
                .map(|r| Member {
                    stored: &r.stored,
                    step: Some(&r.due.name),
                })
                .collect();
            tried = true;
            let (sent, keys) = match self.send_combined(&group_id, &members, channel, send).await? {
                Combined::NoneOpen => (false, Vec::new()),
                Combined::Sent(keys) => (true, keys),
                Combined::Failed(keys) => (false, keys),
            };
            listed.retain(|r| keys.contains(&r.stored.invoice.key));
            any_sent |= sent;
            if listed.is_empty() || (sent && fallback) {
                break;
            }
        }
        let listed_keys: Vec<&InvoiceKey> = listed.iter().map(|r| &r.stored.invoice.key).collect();
        for r in ready {
            let key = &r.stored.invoice.key;
            if !listed_keys.contains(&key) {
                self.end_step(&r.due, StepStatus::Cancelled, "the invoice was closed", Vec::new())
                    .await?;
                continue;
            }
            if let Some(until) = held_until {
                let why = format!("quiet hours: held until {}", crate::events::rfc3339_ms(until));
                self.store
                    .hold_step(key, r.due.seq, until, HeldStep::QuietHours, &why)
                    .await?;
                continue;
            }
            let mut events = Vec::new();
            let (status, detail) = if any_sent {
                let detail = format!(
                    "template {} with the customer's {} reminders due today",
                    crate::render::COMBINED_TEMPLATE,
                    ready.len()
                );
                (StepStatus::Sent, detail)
            } else {
                let why = format!(
                    "every channel of the step failed: {}",
                    super::join_names(&plan.channels)
                );
                if tried {
                    events.push(
                        Event::exhausted(key, &r.stored.correlation, why.clone())
                            .step(Some(&r.due.name))
                            .metadata(r.stored.invoice.metadata.clone()),
                    );
                }
                (StepStatus::Failed, why)
            };
            if r.last && r.step.is_some() {
                let why = format!(
                    "the last step of journey {} is done and the invoice is still open",
                    r.journey.name
                );
                events.push(
                    Event::journey_completed(key, &r.stored.correlation, why)
                        .step(Some(&r.due.name))
                        .metadata(r.stored.invoice.metadata.clone()),
                );
            }
            self.end_step(&r.due, status, &detail, events).await?;
        }
        Ok(())
    }
}
