//! Admitting a message: refusing what cannot be read or routed, closing
//! paid and cancelled invoices, keeping one handler per invoice (in this
//! process and across instances), and storing the invoice, with its first
//! send when that can go at once.

use std::collections::HashSet;
use std::sync::Mutex;

use tracing::info;

use super::send::Started;
use super::{Dispatcher, Disposition, Incoming, CLAIM_IDLE};
use crate::domain::InvoiceKey;
use crate::domain::Status;
use crate::events::{Correlation, Event};
use crate::invoice::{Invoice, Message, Rejected};
use crate::router::{self, Plan};
use crate::store::stats;
use crate::store::{AttemptRecord, Begin, StoreError};

/// Marks an invoice this process owns as interrupted unless its handling
/// ends well (see `Dispatcher::interrupted`).
struct Ownership<'a> {
    set: &'a Mutex<HashSet<InvoiceKey>>,
    key: InvoiceKey,
    owned: bool,
    finished: bool,
}

impl Drop for Ownership<'_> {
    fn drop(&mut self) {
        if self.owned && !self.finished {
            if let Ok(mut set) = self.set.lock() {
                set.insert(self.key.clone());
            }
        }
    }
}

/// Removes a key from the in-flight set however handling ends.
pub(super) struct InFlight<'a> {
    set: &'a Mutex<HashSet<InvoiceKey>>,
    key: InvoiceKey,
}

impl<'a> InFlight<'a> {
    /// Marks `key` in flight; `None` when it already is.
    pub(super) fn enter(set: &'a Mutex<HashSet<InvoiceKey>>, key: &InvoiceKey) -> Option<InFlight<'a>> {
        let first = set.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        first.then(|| InFlight { set, key: key.clone() })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

/// What admitting an invoice decided.
enum Admitted {
    /// This handler owns the invoice: go on with the attempts already recorded.
    Deliver(Vec<AttemptRecord>),
    /// Nothing to send (a duplicate, a stale revision, a closed invoice).
    Done(Disposition),
}

impl Dispatcher {
    /// What to do with a message whose body is `body_len` bytes, when that
    /// alone refuses it: the consumer asks before copying the body, so an
    /// oversized message costs no more memory than the broker client's own
    /// buffer. `None`: the body may be handled.
    pub fn refuse_oversized(&self, body_len: usize, correlation: &Correlation) -> Option<Disposition> {
        let rejected = crate::invoice::check_size(body_len).err()?;
        Some(self.dead_letter(rejected, correlation))
    }

    pub(super) fn dead_letter(&self, rejected: Rejected, correlation: &Correlation) -> Disposition {
        let reason = rejected.to_string();
        info!(reason = %crate::redact::text(&reason), "invoice rejected");
        self.metrics.invoice("rejected");
        let mut event = Event::rejected(correlation, reason.clone());
        event.biller_id = rejected.biller_id;
        event.invoice_id = rejected.invoice_id;
        event.revision = rejected.revision;
        Disposition::DeadLetter {
            reason,
            event: Box::new(event),
        }
    }

    /// Refuses a message for a biller with `amqp_user` unless it was
    /// published as that user: otherwise anyone who may publish to the
    /// queue could close another biller's invoices, which over HTTP needs
    /// the biller's signature.
    pub(super) fn check_publisher(&self, message: Message, user_id: Option<&str>) -> Result<Message, Rejected> {
        let (biller_id, invoice_id, revision) = match &message {
            Message::PaymentRequest(invoice) => (
                &invoice.key.biller_id,
                &invoice.key.invoice_id,
                Some(invoice.key.revision),
            ),
            Message::Paid { biller_id, invoice_id } | Message::Cancelled { biller_id, invoice_id } => {
                (biller_id, invoice_id, None)
            }
        };
        let required = self.config.billers.get(biller_id).and_then(|b| b.amqp_user.as_deref());
        match required {
            Some(user) if user_id != Some(user) => Err(Rejected {
                problems: vec![format!(
                    "biller \"{biller_id}\" accepts only messages published as its AMQP user \
                     ([billers.{biller_id}] amqp_user) with that user in the user_id property; this one {}",
                    match user_id {
                        Some(_) => "was published as another user",
                        None => "has no user_id",
                    }
                )],
                biller_id: Some(biller_id.clone()),
                invoice_id: Some(invoice_id.clone()),
                revision,
            }),
            _ => Ok(message),
        }
    }

    /// Closes every revision of an invoice as paid or cancelled, once: the
    /// event is published the first time only. Returns whether this call
    /// closed it.
    pub async fn close_invoice(
        &self,
        biller_id: &str,
        invoice_id: &str,
        status: Status,
        correlation: &Correlation,
    ) -> Result<bool, StoreError> {
        let event = if status == Status::Paid {
            Event::paid(biller_id, invoice_id, correlation)
        } else {
            Event::cancelled(biller_id, invoice_id, correlation)
        };
        let first = self.store.close(biller_id, invoice_id, status, &event).await?;
        info!(biller_id, invoice_id, status = status.as_str(), first, "invoice closed");
        self.metrics.invoice(status.as_str());
        self.outbox_signal.notify_one();
        Ok(first)
    }

    pub(super) async fn payment_request(
        &self,
        invoice: Invoice,
        incoming: &Incoming,
    ) -> Result<Disposition, StoreError> {
        let correlation = &incoming.correlation;
        let plan = router::route(&invoice, &self.config, self.clock.today());
        if plan.channels.is_empty() {
            return Ok(self.dead_letter(unroutable(&invoice, &plan), correlation));
        }
        let Some(_in_flight) = InFlight::enter(&self.in_flight, &invoice.key) else {
            let why = "the same request is being handled right now";
            return self.duplicate(&invoice, correlation, why).await;
        };
        let ours = self
            .interrupted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&invoice.key);
        let mut ownership = Ownership {
            set: &self.interrupted,
            key: invoice.key.clone(),
            owned: ours,
            finished: false,
        };
        let (begun, started) = match self.combine_window(&invoice) {
            None => self.begin(&invoice, &plan, correlation).await?,
            Some(window) => match self.begin_combined(&invoice, &plan, correlation, window).await? {
                // Stored in its customer's group, which the scheduler sends.
                None => {
                    ownership.finished = true;
                    return Ok(Disposition::Ack);
                }
                Some(begun) => (begun, None),
            },
        };
        let done = match self.admit(begun, &invoice, incoming, ours).await? {
            Admitted::Deliver(done) => done,
            Admitted::Done(disposition) => return Ok(disposition),
        };
        ownership.owned = true;
        // The store recorded the first send only when nothing it knows of
        // the customer routes it otherwise; else route again knowing it.
        let plan = match started {
            Some(_) => plan,
            None => {
                let profile = self.profile(&invoice).await?;
                let (plan, all_suppressed) =
                    super::debtor_plan(&invoice, &self.config, self.clock.today(), None, &profile);
                if all_suppressed {
                    self.every_channel_suppressed(&invoice, &plan, correlation).await?;
                    ownership.finished = true;
                    return Ok(Disposition::Ack);
                }
                plan
            }
        };
        if plan.channels.is_empty() {
            // Not reached: routing found channels above, and a customer's
            // stops and preferences alone leave none only when all are stopped.
            self.every_channel_suppressed(&invoice, &plan, correlation).await?;
            ownership.finished = true;
            return Ok(Disposition::Ack);
        }
        self.deliver(&invoice, &plan, &done, started, correlation).await?;
        ownership.finished = true;
        Ok(Disposition::Ack)
    }

    /// Stores the invoice with its `accepted` event. The first send is
    /// recorded with it when it can go now: not in quiet hours, and with a
    /// place free under its rate limits (one store round trip less per
    /// invoice). Otherwise delivery holds it or waits for its turn.
    async fn begin(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        correlation: &Correlation,
    ) -> Result<(Begin, Option<Started>), StoreError> {
        let (accepted, steps) = self.accepted_with_steps(invoice, plan, correlation);
        let routed = stats::routed_by(&plan.decision);
        let first = plan.channels[0];
        let slot = match self.quiet_until(invoice, first) {
            None => self.channels.try_pace(first).await,
            Some(_) => None,
        };
        let Some(slot) = slot else {
            let begun = self
                .store
                .begin(invoice, correlation, &accepted, &steps, &routed)
                .await?;
            return Ok((begun, None));
        };
        let outgoing = self.prepare_send(invoice, first, None);
        let (begun, attempt) = self
            .store
            .begin_with_attempt(
                invoice,
                correlation,
                &accepted,
                &steps,
                &routed,
                first,
                &outgoing.paylink,
            )
            .await?;
        let started = attempt.map(|attempt_id| Started {
            attempt_id,
            outgoing,
            slot,
        });
        Ok((begun, started))
    }

    /// The invoice's `accepted` event and its journey's planned steps.
    pub(super) fn accepted_with_steps(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        correlation: &Correlation,
    ) -> (Event, Vec<crate::store::PlannedStep>) {
        let journey = crate::journey::chosen(&self.config, invoice, &plan.decision);
        let steps = match journey {
            Some(journey) => {
                let tz = crate::journey::time_zone(&self.config, invoice);
                crate::journey::plan(journey, invoice, &tz, self.clock.now_ms())
            }
            None => Vec::new(),
        };
        let mut detail = routed_by(plan);
        if let Some(journey) = journey {
            let reminders = steps.iter().filter(|s| s.seq > 0);
            let skipped = reminders.clone().filter(|s| s.skipped.is_some()).count();
            detail.push_str(&format!(
                "; journey {}: {} reminder(s) planned",
                journey.name,
                reminders.count() - skipped
            ));
            if skipped > 0 {
                detail.push_str(&format!(", {skipped} skipped (their time had passed)"));
            }
        }
        let accepted = Event::accepted(&invoice.key, correlation, detail).metadata(invoice.metadata.clone());
        (accepted, steps)
    }

    /// Decides from what the store knew of the invoice whether this handler
    /// goes on with it.
    async fn admit(
        &self,
        begun: Begin,
        invoice: &Invoice,
        incoming: &Incoming,
        ours: bool,
    ) -> Result<Admitted, StoreError> {
        let correlation = &incoming.correlation;
        let refused = match begun {
            Begin::New => {
                self.metrics.received();
                return Ok(Admitted::Deliver(Vec::new()));
            }
            Begin::Resume { attempts } => {
                if self.take_over(&invoice.key, incoming.redelivered || ours).await? {
                    info!(
                        redelivered = incoming.redelivered,
                        "resuming an invoice whose handling was interrupted"
                    );
                    return Ok(Admitted::Deliver(attempts));
                }
                let why = "the same request is being handled by another instance";
                return Ok(Admitted::Done(self.duplicate(invoice, correlation, why).await?));
            }
            Begin::Duplicate { status } => {
                let why = format!("already handled (status {})", status.as_str());
                return Ok(Admitted::Done(self.duplicate(invoice, correlation, &why).await?));
            }
            Begin::Stale { latest } => {
                self.metrics.invoice("stale");
                format!("stale revision: revision {latest} is already known")
            }
            Begin::Closed { status } => {
                self.metrics.invoice("closed");
                format!("the invoice is already {}", status.as_str())
            }
        };
        let event = Event::rejected(correlation, refused)
            .for_invoice(&invoice.key)
            .metadata(invoice.metadata.clone());
        self.store.record_event(&event).await?;
        Ok(Admitted::Done(Disposition::Ack))
    }

    /// Ends an invoice the customer stopped every channel of: not a bad
    /// message (nothing for the dead-letter queue), but nothing is sent.
    pub(super) async fn every_channel_suppressed(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        correlation: &Correlation,
    ) -> Result<(), StoreError> {
        let reasons: Vec<String> = plan.skipped.iter().map(|(c, why)| format!("{c}: {why}")).collect();
        info!(skipped = %reasons.join("; "), "every channel suppressed; nothing sent");
        self.metrics.invoice("suppressed");
        let event = Event::rejected(correlation, super::EVERY_CHANNEL_SUPPRESSED)
            .for_invoice(&invoice.key)
            .metadata(invoice.metadata.clone());
        self.store
            .finish_invoice(&invoice.key, Status::Exhausted, &[event])
            .await
    }

    /// Claims an unfinished invoice. A redelivered message lost its handler
    /// (a crash, a closed channel): take the invoice over at once; so does
    /// this process's own retry after a store error. A fresh copy of a
    /// message whose invoice is still moving is being handled by another
    /// instance; if that one dies, its own message comes back redelivered,
    /// or the scheduler reclaims the idle invoice.
    async fn take_over(&self, key: &InvoiceKey, at_once: bool) -> Result<bool, StoreError> {
        let idle_ms = if at_once { 0 } else { CLAIM_IDLE.as_millis() as i64 };
        self.store.claim(key, self.clock.now_ms(), idle_ms).await
    }

    pub(super) async fn duplicate(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        why: &str,
    ) -> Result<Disposition, StoreError> {
        info!(why, "duplicate invoice");
        self.metrics.invoice("duplicate");
        let event = Event::duplicate(&invoice.key, correlation, why).metadata(invoice.metadata.clone());
        self.store.record_event(&event).await?;
        Ok(Disposition::Ack)
    }
}

/// The refusal of an invoice no enabled channel can reach.
fn unroutable(invoice: &Invoice, plan: &Plan) -> Rejected {
    let reasons: Vec<String> = plan.skipped.iter().map(|(c, why)| format!("{c}: {why}")).collect();
    Rejected {
        problems: vec![format!(
            "no contact that any enabled channel can reach ({})",
            reasons.join("; ")
        )],
        biller_id: Some(invoice.key.biller_id.clone()),
        invoice_id: Some(invoice.key.invoice_id.clone()),
        revision: Some(invoice.key.revision),
    }
}

/// The `accepted` event's detail: which rule routed it where.
fn routed_by(plan: &Plan) -> String {
    format!(
        "routed by {}: {} ({})",
        plan.decided_by,
        super::join_names(&plan.channels),
        plan.strategy
    )
}
