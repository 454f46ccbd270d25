//! Sending on one channel: rendering the message with a fresh pay link,
//! taking its turn under the channel's rate limits, recording the attempt
//! as started, and sending with retries as the [`RetryPolicy`] says.
//!
//! [`RetryPolicy`]: super::retry::RetryPolicy

use tracing::{info, warn};

use super::Dispatcher;
use crate::channels::{Prepared, Receipt, Registry, Request, SendError, Slot};
use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::{quiet, ChannelName};
use crate::events::Correlation;
use crate::invoice::Invoice;
use crate::paylink;
use crate::render::{self, Templates};
use crate::settings::BillerConfig;
use crate::store::{AttemptStart, NewPaylink, StoreError};

/// How one channel's send should behave.
#[derive(Debug, Clone, Copy)]
pub(super) struct SendPlan<'a> {
    /// An earlier send on this channel was interrupted: say so if this one succeeds.
    pub possibly_twice: bool,
    /// Wait out a paused channel instead of failing it at once.
    pub wait_if_paused: bool,
    /// A success ends the invoice (`fallback`): store both in one go.
    pub ends_invoice: bool,
    /// The journey step this send is for; `None` for the first request.
    pub step: Option<StepSend<'a>>,
    /// Until when a transient failure is left for the step to try again
    /// later instead of failing the channel (`[routing] retry_for`).
    pub retry_until: Option<i64>,
}

/// How a send on one channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// The provider accepted it; with `ends_invoice`, the invoice is stored as sent too.
    Accepted,
    /// The channel gave up; its failure is stored.
    Failed,
    /// A transient failure, stored as such: the step tries again later.
    Retrying,
    /// The invoice was paid, cancelled or superseded meanwhile: nothing was sent.
    Closed,
}

/// A send the scheduler makes: a journey step's, or the first request's
/// again on another channel (an escalation).
#[derive(Debug, Clone, Copy)]
pub(super) struct StepSend<'a> {
    /// The step's name, in the attempt and the events; `None` for the
    /// first request.
    pub name: Option<&'a str>,
    /// The template it renders.
    pub template: &'a str,
}

/// One channel's message before its attempt is recorded.
pub struct Outgoing {
    pub channel: ChannelName,
    /// The pay link the message carries, stored with the attempt.
    pub paylink: NewPaylink,
    /// The rendered message, or why it could not be rendered (recorded as
    /// the channel's failure once the attempt exists).
    pub message: Result<Prepared, String>,
}

/// The first send of a new invoice, recorded together with the invoice.
pub(super) struct Started {
    pub attempt_id: i64,
    pub outgoing: Outgoing,
    /// Its place under the channel's rate limits, taken before the record.
    pub slot: Slot,
}

/// How the tries on one channel ended, with how many were made.
type Tried = Result<(Receipt, u32), (SendError, u32)>;

impl Dispatcher {
    /// Renders, records and sends on one channel, retrying transient
    /// failures.
    pub(super) async fn send_on(
        &self,
        invoice: &Invoice,
        channel: ChannelName,
        correlation: &Correlation,
        plan: SendPlan<'_>,
    ) -> Result<Sent, StoreError> {
        let outgoing = self.prepare_send(invoice, channel, plan.step);
        // Its turn under the rate limits comes before the send is recorded
        // as started, so a process stopped while the message waited for its
        // turn does not count it as possibly sent. A paused or missing
        // channel takes no place: the send below meets the same answer and
        // handles it.
        let slot = match &outgoing.message {
            Ok(_) => self.channels.pace(channel).await.ok(),
            Err(_) => None,
        };
        let started = self
            .store
            .start_attempt(
                &invoice.key,
                channel,
                1,
                &outgoing.paylink,
                plan.step.and_then(|s| s.name),
            )
            .await?;
        let attempt_id = match started {
            AttemptStart::Started(id) => id,
            AttemptStart::Closed => return Ok(Sent::Closed),
            AttemptStart::Suppressed => {
                info!(%channel, "the address asked to stop: not sent; the next channel is tried");
                self.metrics.send(channel, "suppressed");
                return Ok(Sent::Failed);
            }
        };
        self.complete_send(invoice, correlation, plan, outgoing, attempt_id, slot)
            .await
    }

    /// [`prepare`] with this dispatcher's config, channels and templates:
    /// the first request's message, or a journey step's (`step`).
    pub(super) fn prepare_send(&self, invoice: &Invoice, channel: ChannelName, step: Option<StepSend<'_>>) -> Outgoing {
        let message = match step {
            None => render::Message::first_request(),
            Some(s) => render::Message {
                template: s.template.to_owned(),
                step: s.name.map(str::to_owned),
            },
        };
        prepare(
            &self.config,
            &self.channels,
            &self.templates,
            self.clock.as_ref(),
            invoice,
            channel,
            &message,
        )
    }

    /// Sends a message whose attempt is recorded, retrying transient
    /// failures, and records how it ended.
    pub(super) async fn complete_send(
        &self,
        invoice: &Invoice,
        correlation: &Correlation,
        plan: SendPlan<'_>,
        outgoing: Outgoing,
        attempt_id: i64,
        slot: Option<Slot>,
    ) -> Result<Sent, StoreError> {
        let channel = outgoing.channel;
        let attempt = super::record::Attempt {
            id: attempt_id,
            invoice,
            correlation,
            channel,
            step: plan.step.and_then(|s| s.name),
        };
        let prepared = match outgoing.message {
            Ok(p) => p,
            Err(reason) => {
                let detail = format!("cannot render the message: {reason}");
                warn!(%channel, detail = %crate::redact::text(&detail), "channel failed");
                return self.record_failed(&attempt, 1, detail).await;
            }
        };
        match self.send_with_retries(&prepared, plan, slot).await {
            Ok((receipt, tries)) => self.record_accepted(&attempt, tries, receipt, plan).await,
            Err((err, tries)) if err.is_transient() && plan.retry_until.is_some_and(|t| self.clock.now_ms() < t) => {
                let detail = format!("transient failure, tried again later: {err}");
                warn!(%channel, tries, code = err.code(), detail = %crate::redact::text(&detail), "channel failed for now");
                self.metrics.send(channel, "retry_later");
                self.store.retry_attempt_later(attempt.id, &detail).await?;
                Ok(Sent::Retrying)
            }
            Err((err, tries)) => {
                self.suppress_if_unsubscribed(invoice, channel, &err).await?;
                let detail = err.to_string();
                warn!(%channel, tries, code = err.code(), detail = %crate::redact::text(&detail), "channel failed");
                self.record_failed(&attempt, tries, detail).await
            }
        }
    }

    /// Sends, waiting out channel pauses and retrying transient failures as
    /// the retry policy says.
    pub(super) async fn send_with_retries(
        &self,
        prepared: &Prepared,
        plan: SendPlan<'_>,
        mut slot: Option<Slot>,
    ) -> Tried {
        let channel = prepared.channel;
        let mut tries = 0;
        let mut pauses_waited = 0;
        let mut backoff = self.retry.send_backoff.pauses();
        loop {
            tries += 1;
            let started = std::time::Instant::now();
            let result = match slot.take() {
                Some(slot) => self.channels.send_in(slot, prepared).await,
                None => self.channels.send(prepared).await,
            };
            self.metrics.send_latency(channel, started.elapsed());
            match result {
                Ok(receipt) => return Ok((receipt, tries)),
                Err(SendError::Paused { remaining })
                    if plan.wait_if_paused && self.retry.waits_for_pause(remaining, pauses_waited) =>
                {
                    info!(%channel, wait_ms = remaining.as_millis() as u64, "channel paused; waiting for it");
                    pauses_waited += 1;
                    tries -= 1;
                    tokio::time::sleep(remaining).await;
                }
                Err(err) if err.is_transient() && tries < self.retry.tries_per_channel => {
                    let wait = self.retry.send_wait(&err, backoff.next_pause());
                    warn!(
                        %channel,
                        tries,
                        code = err.code(),
                        detail = %crate::redact::text(&err.to_string()),
                        wait_ms = wait.as_millis() as u64,
                        "transient failure; trying again"
                    );
                    self.metrics.send(channel, "retried");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => return Err((err, tries)),
            }
        }
    }
}

/// The message for one channel, with a fresh pay link, ready to be recorded
/// as an attempt and sent. `payrelay preview` shows what this makes, so what
/// it shows is what goes out, pay link length included. `message` says
/// which template (and journey step) to render; its `days_to_due` count
/// from the customer's date (their time zone, else the biller's, else UTC).
pub fn prepare(
    config: &Config,
    channels: &Registry,
    templates: &Templates,
    clock: &dyn Clock,
    invoice: &Invoice,
    channel: ChannelName,
    message: &render::Message,
) -> Outgoing {
    let key = &invoice.key;
    let token = paylink::new_token();
    let pay_url = pay_url(config, &token);
    let paylink = NewPaylink {
        token_hash: paylink::token_hash(&token),
        expires_at_ms: clock.now_ms() + config.paylink.ttl.as_millis() as i64,
        address_hash: invoice
            .customer
            .contacts
            .address(channel)
            .map(|address| crate::domain::debtor::address_hash(channel, address)),
    };
    let message = match config.billers.get(&key.biller_id) {
        None => Err(format!("biller {} is not configured", key.biller_id)),
        Some(biller) => {
            let today = local_today(clock, invoice, biller);
            let view = render::View::new(invoice, &key.biller_id, biller, &pay_url, message, today);
            let to = invoice.customer.contacts.address(channel).unwrap_or_default();
            channels
                .get(channel)
                .ok_or_else(|| format!("channel {channel} is not configured"))
                .and_then(|c| {
                    let request = Request {
                        to,
                        token: &token,
                        view: &view,
                        biller,
                    };
                    c.prepare(&request, templates).map_err(|e| e.to_string())
                })
        }
    };
    Outgoing {
        channel,
        paylink,
        message,
    }
}

/// Today's date where the customer is: in their time zone, else the
/// biller's, else UTC (as quiet hours read it), so "due today" is said on
/// the customer's due date and not on UTC's.
pub(crate) fn local_today(clock: &dyn Clock, invoice: &Invoice, biller: &BillerConfig) -> time::Date {
    let zone = invoice
        .customer
        .timezone
        .as_deref()
        .or(biller.timezone.as_deref())
        .and_then(|name| quiet::time_zone(name).ok());
    let local = zone.and_then(|zone| {
        let date = jiff::Timestamp::from_millisecond(clock.now_ms())
            .ok()?
            .to_zoned(zone)
            .date();
        let month = time::Month::try_from(u8::try_from(date.month()).ok()?).ok()?;
        let day = u8::try_from(date.day()).ok()?;
        time::Date::from_calendar_date(i32::from(date.year()), month, day).ok()
    });
    local.unwrap_or_else(|| clock.today())
}

/// `public_base_url` + `/p/{token}`.
pub fn pay_url(config: &Config, token: &str) -> String {
    let base = config.http.public_base_url.as_str().trim_end_matches('/');
    format!("{base}/p/{token}")
}
