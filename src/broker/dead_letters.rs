//! The dead-letter queue `<queue>.dead`, for the console: browsing it
//! without taking anything, and sending one message back to the input
//! queue or discarding it.
//!
//! A quorum queue cannot be browsed, so each look opens its own connection
//! and channel, takes messages with `basic.get` *without acking*, then puts
//! them all back with one `basic.nack` (`multiple`, `requeue`) and closes
//! the channel (which would put back whatever the nack did not). Acting on one message is the same walk until the message with
//! the chosen [`DeadLetter::id`] comes by; it is acked only after what
//! replaces it is done (for a send back, the broker confirmed the copy in
//! the input queue), so a failure at any point leaves it where it was.
//! While a look is open its messages are invisible to another look (they
//! are unacked on this channel); the console says a message it cannot find
//! may have been handled already.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use sha2::{Digest, Sha256};

use super::{connect, declare_topology, timed, BrokerError};
use crate::config::BrokerConfig;

/// The header payrelay puts the reason in when it dead-letters a message.
pub const REASON_HEADER: &str = "x-payrelay-reason";
/// The header payrelay puts the time in (RFC 3339, UTC) when it
/// dead-letters a message.
pub const TIME_HEADER: &str = "x-payrelay-dead-lettered-at";

/// Headers about a message's stay in the dead-letter queue (payrelay's and
/// the broker's), which a message sent back to the input queue drops: it
/// goes back as the biller's system sent it.
const DEAD_LETTER_HEADERS: [&str; 9] = [
    REASON_HEADER,
    TIME_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// One message of the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// A digest of the message (body, message id, reason and time): how the
    /// console names it in a form, to find it again.
    pub id: String,
    pub message_id: Option<String>,
    /// Why it was dead-lettered: payrelay's header, else the broker's
    /// (`delivery_limit` when the broker dropped it after too many deliveries).
    pub reason: Option<String>,
    /// When it was dead-lettered, RFC 3339; `None` for a message
    /// dead-lettered before payrelay recorded the time.
    pub at: Option<String>,
    pub body: Vec<u8>,
}

/// The first messages of the queue and how many it holds in all.
#[derive(Debug, Clone)]
pub struct Browse {
    pub letters: Vec<DeadLetter>,
    pub total: u32,
}

/// What became of the message a [`act`] was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    SentBack,
    Discarded,
    /// Not among the first `limit` messages, or `allowed` refused it.
    NotFound,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish it to the input queue (with publisher confirms), then ack it.
    SendBack,
    /// Ack it: it is gone.
    Discard,
}

/// The first `limit` messages of the dead-letter queue, leaving every one
/// of them there.
pub async fn browse(config: &BrokerConfig, limit: usize) -> Result<Browse, BrokerError> {
    let connection = connect(config).await?;
    let result = browse_on(&connection, config, limit).await;
    let _ = connection.close(200, "dead letters browsed".into()).await;
    result
}

async fn browse_on(connection: &Connection, config: &BrokerConfig, limit: usize) -> Result<Browse, BrokerError> {
    let channel = timed(connection.create_channel()).await?;
    declare_topology(&channel, config).await?;
    let queue = config.dead_letter_queue();
    let mut letters = Vec::new();
    let mut last = None;
    let mut total = 0;
    while letters.len() < limit {
        let Some(got) = timed(channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })).await?
        else {
            break;
        };
        // The count after this one, plus the ones taken so far.
        total = got.message_count + letters.len() as u32 + 1;
        letters.push(read(&got.delivery));
        last = Some(got.delivery);
    }
    put_back(last.as_ref()).await;
    let _ = channel.close(200, "browsed".into()).await;
    Ok(Browse { letters, total })
}

/// Puts every message taken on a channel, up to `last`, back in the queue:
/// a `basic.nack` with `requeue`, which recent brokers do not count as a
/// failed delivery (closing the channel would put them back too, and
/// does if this fails).
async fn put_back(last: Option<&Delivery>) {
    if let Some(last) = last {
        let all = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        let _ = timed(last.acker.nack(all)).await;
    }
}

/// Finds the message `id` among the first `limit` of the queue and, if
/// `allowed` accepts it, does `action` to it. Every other message stays.
pub async fn act(
    config: &BrokerConfig,
    id: &str,
    action: Action,
    limit: usize,
    allowed: impl Fn(&DeadLetter) -> bool,
) -> Result<Acted, BrokerError> {
    let connection = connect(config).await?;
    let result = act_on(&connection, config, id, action, limit, allowed).await;
    let _ = connection.close(200, "dead letter handled".into()).await;
    result
}

async fn act_on(
    connection: &Connection,
    config: &BrokerConfig,
    id: &str,
    action: Action,
    limit: usize,
    allowed: impl Fn(&DeadLetter) -> bool,
) -> Result<Acted, BrokerError> {
    let channel = timed(connection.create_channel()).await?;
    declare_topology(&channel, config).await?;
    let queue = config.dead_letter_queue();
    let mut found = None;
    let mut last_other = None;
    for _ in 0..limit {
        let Some(got) = timed(channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })).await?
        else {
            break;
        };
        let letter = read(&got.delivery);
        if letter.id == id && allowed(&letter) {
            found = Some(got.delivery);
            break;
        }
        last_other = Some(got.delivery);
    }
    let acted = match found {
        None => Ok(Acted::NotFound),
        Some(delivery) => settle(connection, config, &delivery, action).await,
    };
    // Every other message taken goes back (the one acted on is acked, or
    // goes back with the channel when the action failed).
    put_back(last_other.as_ref()).await;
    let _ = channel.close(200, "dead letter handled".into()).await;
    acted
}

/// Does `action` to the message found: for a send back, the copy is
/// confirmed in the input queue before the message is acked.
async fn settle(
    connection: &Connection,
    config: &BrokerConfig,
    delivery: &Delivery,
    action: Action,
) -> Result<Acted, BrokerError> {
    if action == Action::SendBack {
        send_back(connection, config, delivery).await?;
    }
    timed(delivery.acker.ack(BasicAckOptions::default())).await?;
    Ok(match action {
        Action::SendBack => Acted::SentBack,
        Action::Discard => Acted::Discarded,
    })
}

/// Publishes the message, persistent and without its dead-letter headers,
/// to the input queue and waits for the broker's confirm.
async fn send_back(connection: &Connection, config: &BrokerConfig, delivery: &Delivery) -> Result<(), BrokerError> {
    let channel: Channel = timed(connection.create_channel()).await?;
    timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut headers = FieldTable::default();
    if let Some(old) = delivery.properties.headers() {
        for (name, value) in old.inner() {
            if !DEAD_LETTER_HEADERS.contains(&name.as_str()) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    let properties: BasicProperties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let confirm = timed(channel.basic_publish(
        "".into(),
        config.queue.as_str().into(),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        &delivery.data,
        properties,
    ))
    .await?;
    let confirmed = timed(confirm).await?;
    let _ = channel.close(200, "sent back".into()).await;
    match confirmed {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(BrokerError::Other(format!("queue {} does not exist", config.queue))),
        other => Err(BrokerError::Other(format!("the broker did not confirm: {other:?}"))),
    }
}

/// The header a message was dead-lettered with, as text.
fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The first `x-death` entry the broker added, when it dead-lettered the
/// message itself: (reason, time in seconds).
fn broker_death(delivery: &Delivery) -> Option<(Option<String>, Option<u64>)> {
    let AMQPValue::FieldArray(deaths) = delivery.properties.headers().as_ref()?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = match death.inner().get("reason") {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    let time = match death.inner().get("time") {
        Some(AMQPValue::Timestamp(t)) => Some(*t),
        _ => None,
    };
    Some((reason, time))
}

fn read(delivery: &Delivery) -> DeadLetter {
    let message_id = delivery.properties.message_id().as_ref().map(|s| s.to_string());
    let death = broker_death(delivery);
    let reason = header_text(delivery, REASON_HEADER).or_else(|| {
        death
            .as_ref()
            .and_then(|(reason, _)| reason.as_ref())
            .map(|r| format!("the broker dead-lettered it ({r})"))
    });
    let at = header_text(delivery, TIME_HEADER).or_else(|| {
        let seconds = death.as_ref()?.1?;
        Some(crate::events::rfc3339_ms(
            i64::try_from(seconds).ok()?.saturating_mul(1000),
        ))
    });
    let mut digest = Sha256::new();
    for part in [
        delivery.data.as_slice(),
        message_id.as_deref().unwrap_or_default().as_bytes(),
        reason.as_deref().unwrap_or_default().as_bytes(),
        at.as_deref().unwrap_or_default().as_bytes(),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    DeadLetter {
        id: hex::encode(&digest.finalize()[..16]),
        message_id,
        reason,
        at,
        body: delivery.data.clone(),
    }
}

/// The headers a dead letter gets: the message's own, the reason and the time.
pub(super) fn dead_letter_headers(original: Option<&FieldTable>, reason: &str, at_ms: i64) -> FieldTable {
    let mut headers = original.cloned().unwrap_or_default();
    headers.insert(
        ShortString::from(REASON_HEADER),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        ShortString::from(TIME_HEADER),
        AMQPValue::LongString(LongString::from(crate::events::rfc3339_ms(at_ms))),
    );
    headers
}
