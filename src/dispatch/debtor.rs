//! Stops and starts (docs/debtors.md): a customer's STOP or START reply,
//! an email unsubscribe, or a provider saying the address unsubscribed,
//! stored as a suppression with one `customer.suppressed` /
//! `customer.unsuppressed` event for each customer the address belongs to.
//! The suppression itself is enforced by the store at every send.

use tracing::info;

use super::Dispatcher;
use crate::channels::webhook::InboundReply;
use crate::channels::SendError;
use crate::domain::debtor::{address_hash, Reply};
use crate::domain::ChannelName;
use crate::invoice::Invoice;
use crate::store::{Owner, StoreError, SuppressionChange};

/// Twilio's "Attempt to send to unsubscribed recipient": the number
/// replied STOP to the sending number, outside payrelay's sight.
const TWILIO_UNSUBSCRIBED: &str = "21610";

impl Dispatcher {
    /// Applies a STOP or START reply that came to a provider webhook on
    /// `channel` (SMS, WhatsApp): it holds for every biller, since one
    /// sending number serves them all. True when it changed anything.
    pub async fn handle_reply(&self, channel: ChannelName, reply: &InboundReply) -> Result<bool, StoreError> {
        let change = SuppressionChange {
            channel,
            address_hash: address_hash(channel, &reply.from),
            biller_id: crate::domain::debtor::ANY_BILLER.to_owned(),
            reply: reply.reply,
            reason: reply.how.to_owned(),
            owner: None,
        };
        self.change_suppression(&change).await
    }

    /// Stops (or restarts) messages on `channel` to the address `invoice`
    /// has there, for the invoice's biller (for SMS and WhatsApp, every
    /// biller). False when the invoice has no such address or nothing
    /// changed.
    pub async fn suppress_invoice_address(
        &self,
        invoice: &Invoice,
        channel: ChannelName,
        reply: Reply,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let Some(address) = invoice.customer.contacts.address(channel) else {
            return Ok(false);
        };
        let change = SuppressionChange {
            channel,
            address_hash: address_hash(channel, address),
            biller_id: invoice.key.biller_id.clone(),
            reply,
            reason: reason.to_owned(),
            owner: Some(Owner::of(invoice)),
        };
        self.change_suppression(&change).await
    }

    /// A provider's refusal that means the address unsubscribed: stop
    /// sending to it. The failure itself is recorded as usual.
    pub(super) async fn suppress_if_unsubscribed(
        &self,
        invoice: &Invoice,
        channel: ChannelName,
        err: &SendError,
    ) -> Result<(), StoreError> {
        if channel == ChannelName::Sms && err.code() == Some(TWILIO_UNSUBSCRIBED) {
            let why = "Twilio refused the send with error 21610 (the number unsubscribed)";
            self.suppress_invoice_address(invoice, channel, Reply::Stop, why)
                .await?;
        }
        Ok(())
    }

    async fn change_suppression(&self, change: &SuppressionChange) -> Result<bool, StoreError> {
        let changed = self.store.suppress(change).await?;
        let what = match change.reply {
            Reply::Stop => "suppressed",
            Reply::Start => "unsuppressed",
        };
        info!(channel = %change.channel, scope = change.scope(), changed, "address {what}");
        self.outbox_signal.notify_one();
        Ok(changed)
    }
}
