//! Delivering an admitted invoice: its route plan walked channel by channel
//! (`fallback` stops at the first send, `all` sends on each), quiet-hour
//! holds, and the invoice's final status.

use tracing::info;

use super::admit::InFlight;
use super::send::{SendPlan, Sent, Started};
use super::{join_names, Dispatcher};
use crate::config::Strategy;
use crate::domain::quiet::{self, QuietHours};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::domain::Status;
use crate::events::{Correlation, Event};
use crate::invoice::Invoice;
use crate::router::Plan;
use crate::store::{AttemptRecord, AttemptState, StoreError};

/// How one channel of the plan went.
enum Step {
    /// Quiet hours hold it until then.
    Held(i64),
    /// Tried: whether the provider took it.
    Tried(bool),
    /// Nothing more to do: the invoice closed meanwhile, or this send ended it.
    Finished,
}

impl Dispatcher {
    /// Sends on the plan's channels in order, skipping those with a recorded
    /// outcome, then stores the invoice's final status.
    pub(super) async fn deliver(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        done: &[AttemptRecord],
        mut started: Option<Started>,
        correlation: &Correlation,
    ) -> Result<(), StoreError> {
        let mut any_sent = false;
        let mut held_until: Option<i64> = None;
        for (i, channel) in plan.channels.iter().enumerate() {
            let previous = done.iter().rev().find(|a| a.channel == *channel);
            let sent = match previous.map(|a| a.state) {
                Some(AttemptState::Sent) => true,
                Some(AttemptState::Failed | AttemptState::Retrying) => false,
                Some(AttemptState::Sending) | None => {
                    let pre_started = started.take_if(|s| s.outgoing.channel == *channel);
                    let send = SendPlan {
                        possibly_twice: previous.is_some(),
                        // A paused channel is skipped when another can take
                        // over; the last one waits for the pause to end.
                        wait_if_paused: plan.strategy == Strategy::All || i + 1 == plan.channels.len(),
                        ends_invoice: plan.strategy == Strategy::Fallback && held_until.is_none(),
                        step: None,
                        retry_until: None,
                    };
                    match self
                        .on_channel(invoice, *channel, send, pre_started, correlation)
                        .await?
                    {
                        Step::Finished => return Ok(()),
                        Step::Tried(sent) => sent,
                        Step::Held(until) => {
                            held_until = Some(held_until.map_or(until, |h| h.min(until)));
                            // `fallback` waits for this channel; `all` sends the others now.
                            if plan.strategy == Strategy::Fallback {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            any_sent |= sent;
            if sent && plan.strategy == Strategy::Fallback {
                break;
            }
        }
        self.finish(invoice, plan, any_sent, held_until, correlation).await
    }

    /// Holds, or sends on, one channel with no recorded outcome.
    async fn on_channel(
        &self,
        invoice: &Invoice,
        channel: ChannelName,
        send: SendPlan<'_>,
        pre_started: Option<Started>,
        correlation: &Correlation,
    ) -> Result<Step, StoreError> {
        let sent = match pre_started {
            // Recorded with the invoice (quiet hours were checked then).
            Some(s) => {
                self.complete_send(invoice, correlation, send, s.outgoing, s.attempt_id, Some(s.slot))
                    .await?
            }
            None => {
                if let Some(until) = self.quiet_until(invoice, channel) {
                    return Ok(Step::Held(until));
                }
                self.send_on(invoice, channel, correlation, send).await?
            }
        };
        Ok(match sent {
            Sent::Closed => {
                info!("invoice closed meanwhile; nothing more is sent");
                Step::Finished
            }
            Sent::Accepted if send.ends_invoice => {
                self.metrics.invoice(Status::Sent.as_str());
                Step::Finished
            }
            Sent::Accepted => Step::Tried(true),
            Sent::Failed | Sent::Retrying => Step::Tried(false),
        })
    }

    /// Stores how the walk ended: held until the earliest window opens,
    /// sent, or exhausted.
    async fn finish(
        &self,
        invoice: &Invoice,
        plan: &Plan,
        any_sent: bool,
        held_until: Option<i64>,
        correlation: &Correlation,
    ) -> Result<(), StoreError> {
        let key = &invoice.key;
        if let Some(until) = held_until {
            info!(until = %crate::events::rfc3339_ms(until), "quiet hours: held until the window opens");
            self.store.hold(key, until).await?;
            self.metrics.invoice("held");
            return Ok(());
        }
        let (status, events) = if any_sent {
            (Status::Sent, Vec::new())
        } else {
            let why = format!("every routed channel failed: {}", join_names(&plan.channels));
            let event = Event::exhausted(key, correlation, why).metadata(invoice.metadata.clone());
            (Status::Exhausted, vec![event])
        };
        self.store.finish_invoice(key, status, &events).await?;
        self.metrics.invoice(status.as_str());
        Ok(())
    }

    /// Goes on with an invoice that was reopened by a later delivery
    /// failure, held for quiet hours, or left by a stopped handler.
    pub async fn resume(&self, key: &InvoiceKey) -> Result<(), StoreError> {
        let Some(_in_flight) = InFlight::enter(&self.in_flight, key) else {
            return Ok(());
        };
        let Some(stored) = self.store.invoice(key).await? else {
            return Ok(());
        };
        if stored.status != Status::Accepted {
            return Ok(());
        }
        let profile = self.profile(&stored.invoice).await?;
        let (plan, all_suppressed) =
            super::debtor_plan(&stored.invoice, &self.config, self.clock.today(), None, &profile);
        let result = if all_suppressed {
            self.every_channel_suppressed(&stored.invoice, &plan, &stored.correlation)
                .await
        } else {
            self.deliver(&stored.invoice, &plan, &stored.attempts, None, &stored.correlation)
                .await
        };
        self.outbox_signal.notify_one();
        result
    }

    /// When a send on `channel` may go, if quiet hours hold it now: in the
    /// customer's time zone, else the biller's, else UTC.
    pub(super) fn quiet_until(&self, invoice: &Invoice, channel: ChannelName) -> Option<i64> {
        let window = self.config.routing.quiet_hours?;
        if !QuietHours::applies_to(channel) {
            return None;
        }
        let biller_tz = self
            .config
            .billers
            .get(&invoice.key.biller_id)
            .and_then(|b| b.timezone.as_deref());
        let tz = invoice
            .customer
            .timezone
            .as_deref()
            .or(biller_tz)
            .and_then(|name| quiet::time_zone(name).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        window.held_until(&tz, self.clock.now_ms())
    }
}
