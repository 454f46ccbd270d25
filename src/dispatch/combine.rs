//! One message per debtor (`[billers.<id>] combine`): a first request waits
//! in its customer's group (same biller, customer and currency) until the
//! window that opened with the group's first invoice closes; then one
//! message per channel of the route lists every invoice of the group still
//! open, with one pay link.
//!
//! The wait is durable: the invoice and its place in the group are stored
//! in one transaction before the broker message is acked, and the scheduler
//! claims each due group once ([`Store::claim_due_groups`]), so with several
//! instances one sends it, and a group whose sender died is taken over.
//! Each listed invoice keeps its own attempt (carrying its own link derived
//! from the message's, see [`crate::store::member_link_hash`]) and its own
//! events: `invoice.sent` for each, with the message's provider id.
//!
//! [`Store::claim_due_groups`]: crate::store::Store::claim_due_groups

use std::time::Duration;

use tracing::{info, warn};

use super::record::Attempt;
use super::send::{local_today, pay_url, SendPlan};
use super::Dispatcher;
use crate::channels::{Prepared, Receipt, Registry, Request};
use crate::config::{Config, Strategy};
use crate::domain::clock::Clock;
use crate::domain::{ChannelName, InvoiceKey, Status};
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;
use crate::paylink;
use crate::render::{self, Templates};
use crate::router::Plan;
use crate::store::stats::routed_by;
use crate::store::{AttemptStart, AttemptState, Begin, CombineJoin, DueGroup, NewPaylink, StoreError, StoredInvoice};

/// One invoice a combined message lists, with the journey step its
/// attempt belongs to (`None` for a first request).
pub(super) struct Member<'a> {
    pub stored: &'a StoredInvoice,
    pub step: Option<&'a str>,
}

/// How one combined send went.
pub(super) enum Combined {
    /// The provider took it: these invoices were in it.
    Sent(Vec<InvoiceKey>),
    /// The channel failed for these invoices.
    Failed(Vec<InvoiceKey>),
    /// Every invoice was paid, cancelled or replaced meanwhile: nothing was sent.
    NoneOpen,
}

impl Dispatcher {
    /// The biller's combine window; `None`: its invoices go out on their own.
    pub(super) fn combine_window(&self, invoice: &Invoice) -> Option<Duration> {
        self.config.billers.get(&invoice.key.biller_id)?.combine
    }

    /// Whether any biller combines: only then does the scheduler look for
    /// due groups, so with `combine` off nothing is added.
    pub fn combines(&self) -> bool {
        self.config.billers.values().any(|b| b.combine.is_some())
    }

    /// Stores a first request in its customer's group. `None`: it waits
    /// there (new, or redelivered while it waits), the message may be
    /// acked; otherwise what the store knew, to handle as usual.
    pub(super) async fn begin_combined(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        correlation: &Correlation,
        window: Duration,
    ) -> Result<Option<Begin>, StoreError> {
        let (accepted, steps) = self.accepted_with_steps(invoice, plan, correlation);
        let join = CombineJoin {
            new_group_id: new_group_id(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        };
        let (begun, place) = self
            .store
            .begin_combined(
                invoice,
                correlation,
                &accepted,
                &steps,
                &routed_by(&plan.decision),
                &join,
            )
            .await?;
        match (begun, place) {
            (Begin::New, Some(place)) => {
                info!(until = %crate::events::rfc3339_ms(place.due_ms), "waiting to be combined with the customer's other invoices");
                self.metrics.received();
                self.metrics.invoice("combining");
                Ok(None)
            }
            (Begin::Resume { .. }, Some(_)) => {
                info!("redelivered while it waits to be combined; its group sends it");
                Ok(None)
            }
            (begun, _) => Ok(Some(begun)),
        }
    }

    /// Sends a claimed group: nothing when no invoice is open any more, an
    /// ordinary request when one is, else one message per channel listing
    /// them all. Quiet hours put the group back until they end.
    pub async fn send_group(&self, group: &DueGroup) -> Result<(), StoreError> {
        let mut open = Vec::new();
        for key in &group.members {
            if let Some(stored) = self.store.invoice(key).await? {
                if stored.status == Status::Accepted {
                    open.push(stored);
                }
            }
        }
        let held = match open.len() {
            0 => None,
            1 => {
                self.resume(&open[0].invoice.key).await?;
                None
            }
            n => {
                info!(group = %group.id, invoices = n, "sending one message for the customer's invoices");
                self.deliver_combined(group, open).await?
            }
        };
        match held {
            Some(until) => {
                info!(group = %group.id, until = %crate::events::rfc3339_ms(until), "quiet hours: combined message held until the window opens");
                self.store.hold_group(&group.id, until).await?;
                self.metrics.invoice("held");
            }
            None => self.store.finish_group(&group.id).await?,
        }
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// Walks the route of the group's first invoice as a single request's
    /// is walked, one combined message per channel; answers until when
    /// quiet hours hold it, if they do.
    async fn deliver_combined(
        &self,
        group: &DueGroup,
        mut listed: Vec<StoredInvoice>,
    ) -> Result<Option<i64>, StoreError> {
        // Routed as the group's first invoice; listed by due date, then id.
        let first = listed[0].invoice.clone();
        listed.sort_by(|a, b| {
            (a.invoice.due_date, &a.invoice.key.invoice_id).cmp(&(b.invoice.due_date, &b.invoice.key.invoice_id))
        });
        // What the store knows of the customer (their choice on a pay page,
        // their stops) routes the combined message as it would a single one.
        let profile = self.profile(&first).await?;
        let (plan, all_suppressed) = super::debtor_plan(&first, &self.config, self.clock.today(), None, &profile);
        if all_suppressed {
            for stored in &listed {
                self.every_channel_suppressed(&stored.invoice, &plan, &stored.correlation)
                    .await?;
            }
            return Ok(None);
        }
        let fallback = plan.strategy == Strategy::Fallback;
        let mut any_sent = false;
        let mut held_until: Option<i64> = None;
        for (i, channel) in plan.channels.iter().copied().enumerate() {
            let tried = |s: &StoredInvoice, state: Option<AttemptState>| {
                s.attempts
                    .iter()
                    .any(|a| a.channel == channel && a.step.is_none() && state.is_none_or(|st| a.state == st))
            };
            // Taken over from a sender that died: what it sent stays sent.
            if listed.iter().all(|s| tried(s, Some(AttemptState::Sent))) {
                any_sent = true;
                if fallback {
                    break;
                }
                continue;
            }
            if let Some(until) = self.quiet_until(&first, channel) {
                held_until = Some(held_until.map_or(until, |h| h.min(until)));
                if fallback {
                    break;
                }
                continue;
            }
            let send = SendPlan {
                possibly_twice: listed.iter().any(|s| tried(s, None)),
                wait_if_paused: !fallback || i + 1 == plan.channels.len(),
                ends_invoice: fallback && held_until.is_none(),
                step: None,
                retry_until: None,
            };
            let members: Vec<Member<'_>> = listed.iter().map(|stored| Member { stored, step: None }).collect();
            let (sent, keys) = match self.send_combined(&group.id, &members, channel, send).await? {
                Combined::NoneOpen => return Ok(None),
                Combined::Sent(keys) => (true, keys),
                Combined::Failed(keys) => (false, keys),
            };
            listed.retain(|s| keys.contains(&s.invoice.key));
            any_sent |= sent;
            if sent && fallback {
                break;
            }
        }
        if held_until.is_some() {
            return Ok(held_until);
        }
        for stored in &listed {
            let key = &stored.invoice.key;
            let (status, events) = if any_sent {
                (Status::Sent, Vec::new())
            } else {
                let why = format!("every routed channel failed: {}", super::join_names(&plan.channels));
                let event = Event::exhausted(key, &stored.correlation, why).metadata(stored.invoice.metadata.clone());
                (Status::Exhausted, vec![event])
            };
            // Only from accepted: one a fallback send ended already stays.
            self.store.finish_invoice(key, status, &events).await?;
            self.metrics.invoice(status.as_str());
        }
        Ok(None)
    }

    /// One combined message on one channel: an attempt for each invoice
    /// still open (the check right before the send), the link, the send
    /// with retries, and each invoice's outcome with its own events.
    /// A combined reminder (`plan.step` set) renders the step's name into
    /// the message, and each attempt carries its own invoice's step.
    pub(super) async fn send_combined(
        &self,
        group_id: &str,
        listed: &[Member<'_>],
        channel: ChannelName,
        plan: SendPlan<'_>,
    ) -> Result<Combined, StoreError> {
        let token = paylink::new_token();
        // The message goes to the address of the invoice listed first, the
        // one each attempt's suppression check is about.
        let Some(recipient) = listed.first().map(|m| &m.stored.invoice) else {
            return Ok(Combined::NoneOpen);
        };
        let address_hash = recipient
            .customer
            .contacts
            .address(channel)
            .map(|address| crate::domain::debtor::address_hash(channel, address));
        let link = NewPaylink {
            token_hash: paylink::token_hash(&token),
            expires_at_ms: self.clock.now_ms() + i64::try_from(self.config.paylink.ttl.as_millis()).unwrap_or(i64::MAX),
            address_hash: address_hash.clone(),
        };
        // Its turn under the rate limits before the sends are recorded, as
        // for a single request.
        let slot = self.channels.pace(channel).await.ok();
        let mut members = Vec::with_capacity(listed.len());
        let mut suppressed = Vec::new();
        for member in listed {
            let (stored, step) = (member.stored, member.step);
            let key = &stored.invoice.key;
            let own = NewPaylink {
                token_hash: crate::store::member_link_hash(&link.token_hash, &key.invoice_id),
                expires_at_ms: link.expires_at_ms,
                address_hash: address_hash.clone(),
            };
            match self.store.start_attempt(key, channel, 1, &own, step).await? {
                AttemptStart::Started(id) => members.push((stored, step, id)),
                AttemptStart::Closed => {}
                // The address asked to stop: the store recorded each refusal
                // as a failed attempt; the next channel is tried.
                AttemptStart::Suppressed => suppressed.push(key.clone()),
            }
        }
        if !suppressed.is_empty() {
            info!(group = %group_id, %channel, "the address asked to stop; trying the next channel");
            suppressed.extend(members.iter().map(|(s, _, _)| s.invoice.key.clone()));
            for (stored, step, id) in &members {
                let attempt = Attempt {
                    id: *id,
                    invoice: &stored.invoice,
                    correlation: &stored.correlation,
                    channel,
                    step: *step,
                };
                self.record_failed(&attempt, 1, crate::store::SUPPRESSED_DETAIL.to_owned())
                    .await?;
            }
            return Ok(Combined::Failed(suppressed));
        }
        if members.is_empty() {
            info!(group = %group_id, "every invoice of the group closed meanwhile; nothing is sent");
            return Ok(Combined::NoneOpen);
        }
        let keys: Vec<InvoiceKey> = members.iter().map(|(s, _, _)| s.invoice.key.clone()).collect();
        self.store.add_combined_link(group_id, channel, &link, &keys).await?;
        let invoices: Vec<&Invoice> = members.iter().map(|(s, _, _)| &s.invoice).collect();
        let message = prepare_combined(
            &self.config,
            &self.channels,
            &self.templates,
            self.clock.as_ref(),
            recipient,
            &invoices,
            channel,
            &token,
            plan.step.and_then(|s| s.name),
        );
        let attempts: Vec<Attempt<'_>> = members
            .iter()
            .map(|(s, step, id)| Attempt {
                id: *id,
                invoice: &s.invoice,
                correlation: &s.correlation,
                channel,
                step: *step,
            })
            .collect();
        let prepared = match message {
            Ok(p) => p,
            Err(reason) => {
                let detail = format!("cannot render the combined message: {reason}");
                warn!(%channel, detail = %crate::redact::text(&detail), "channel failed");
                for attempt in &attempts {
                    self.record_failed(attempt, 1, detail.clone()).await?;
                }
                return Ok(Combined::Failed(keys));
            }
        };
        match self.send_with_retries(&prepared, plan, slot).await {
            Ok((receipt, tries)) => {
                info!(%channel, invoices = attempts.len(), "combined message sent");
                for attempt in &attempts {
                    let receipt = Receipt {
                        provider_message_id: receipt.provider_message_id.clone(),
                    };
                    self.record_accepted(attempt, tries, receipt, plan).await?;
                }
                Ok(Combined::Sent(keys))
            }
            Err((err, tries)) => {
                let detail = err.to_string();
                warn!(%channel, tries, code = err.code(), detail = %crate::redact::text(&detail), "channel failed");
                for attempt in &attempts {
                    self.record_failed(attempt, tries, detail.clone()).await?;
                }
                Ok(Combined::Failed(keys))
            }
        }
    }
}

/// A new group's id: random, so instances never pick the same one.
pub(super) fn new_group_id() -> String {
    format!("grp-{}", paylink::new_token())
}

/// The combined message listing `invoices` (one customer, one currency,
/// the first one's language) on `channel`, to `recipient`'s address (the
/// one the store checked against the suppression list), carrying the pay
/// link of `token`; `step` names the journey step of a combined reminder
/// (the template's `step`, so its text can say it reminds). `payrelay
/// preview --template combined` shows what this makes.
#[allow(clippy::too_many_arguments)]
pub fn prepare_combined(
    config: &Config,
    channels: &Registry,
    templates: &Templates,
    clock: &dyn Clock,
    recipient: &Invoice,
    invoices: &[&Invoice],
    channel: ChannelName,
    token: &str,
    step: Option<&str>,
) -> Result<Prepared, String> {
    let first = invoices
        .first()
        .ok_or("a combined message lists at least one invoice")?;
    let key = &first.key;
    let biller = config
        .billers
        .get(&key.biller_id)
        .ok_or_else(|| format!("biller {} is not configured", key.biller_id))?;
    let pay_url = pay_url(config, token);
    let today = local_today(clock, first, biller);
    let message = render::Message {
        template: render::COMBINED_TEMPLATE.to_owned(),
        step: step.map(str::to_owned),
    };
    let mut view = render::View::new(first, &key.biller_id, biller, &pay_url, &message, today);
    let locale = view.locale;
    render::add_combined(&mut view.data, invoices, locale)?;
    let to = recipient.customer.contacts.address(channel).unwrap_or_default();
    let adapter = channels
        .get(channel)
        .ok_or_else(|| format!("channel {channel} is not configured"))?;
    let request = Request {
        to,
        token,
        view: &view,
        biller,
    };
    adapter.prepare(&request, templates).map_err(|e| e.to_string())
}
