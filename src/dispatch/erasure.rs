//! Erasure and retention: a customer's personal data erased on request
//! (`DELETE /v1/customers/{biller_id}/{customer_id}`) or, with
//! `[store] personal_data_ttl`, from invoices closed (or whose links all
//! expired) longer ago than that. The store does the rows, the outbox and
//! the `customer.erased` events in one transaction ([`Store::erase_customer`],
//! [`Store::erase_expired`]); what is left here is the `file` providers'
//! copies of the messages (the store lists them, and lists them again on
//! a second erasure, so a copy a crash left behind goes then).
//! docs/erasure.md tells billers what goes and what stays.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::ChannelName;
use crate::events::{Correlation, Event, EventName};
use crate::store::{Erasure, Store, StoreError};

/// Revisions erased per store call by the retention sweep: one transaction
/// stays short, so other writers hardly wait.
const RETENTION_BATCH: u32 = 200;

/// How often retention looks for what has become old enough, on the
/// service's clock (a look reads the whole invoices table).
const RETENTION_EVERY_MS: i64 = 60 * 60 * 1000;

/// How soon a look that failed (the store was away) is tried again, on the
/// service's clock.
const RETENTION_RETRY_MS: i64 = 60 * 1000;

/// How often the sweep checks whether a look is due (real time).
const RETENTION_TICK: Duration = Duration::from_secs(1);

/// Erases one customer's personal data at one biller, on request: their
/// invoices, their messages' copies, and one `customer.erased` event.
pub async fn erase_customer(
    config: &Config,
    store: &dyn Store,
    outbox_signal: &Notify,
    biller_id: &str,
    customer_id: &str,
) -> Result<Erasure, StoreError> {
    let customer = crate::invoice::customer_key_of_id(biller_id, customer_id);
    let mut event = Event::bare(EventName::Erased, &Correlation::default()).customer_id(Some(customer_id.to_owned()));
    event.biller_id = Some(biller_id.to_owned());
    let erasure = store.erase_customer(biller_id, &customer, &event).await?;
    outbox_signal.notify_one();
    let removed = remove_copies(config, &erasure.messages);
    info!(
        %biller_id,
        invoices = erasure.invoices_erased,
        copies_removed = removed,
        "a customer's personal data was erased on request"
    );
    Ok(erasure)
}

/// Removes the `file` providers' copies of `messages`; returns how many
/// files went. One that cannot be removed is logged (by its id only) and
/// left for the next erasure of the same customer.
pub fn remove_copies(config: &Config, messages: &[(ChannelName, String)]) -> usize {
    let mut removed = 0;
    for (channel, id) in messages {
        let Some(dir) = config.channels.file_outbox_dir(*channel) else {
            continue;
        };
        match crate::channels::outbox::remove_copies(dir, id) {
            Ok(n) => removed += n,
            Err(e) => {
                warn!(%channel, provider_message_id = %id, error = %e, "cannot remove a copy of an erased customer's message")
            }
        }
    }
    removed
}

/// The retention sweep, until `shutdown`: with `[store] personal_data_ttl`
/// set, once at start and then every hour of the service's clock, erases
/// batch after batch until nothing old enough is left. With several
/// instances each runs it; the store gives each revision to one of them.
pub async fn run_retention(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    outbox_signal: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let Some(ttl) = config.store.personal_data_ttl else {
        return;
    };
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let mut last: Option<i64> = None;
    loop {
        let now = clock.now_ms();
        if last.is_none_or(|at| now - at >= RETENTION_EVERY_MS || now < at) {
            match sweep(
                &config,
                store.as_ref(),
                &outbox_signal,
                now.saturating_sub(ttl_ms),
                &shutdown,
            )
            .await
            {
                Ok(()) => last = Some(now),
                Err(e) => {
                    warn!(error = %e, "retention could not erase old personal data; trying again in a minute");
                    // Due again a minute from now, not at every tick.
                    last = Some(now - RETENTION_EVERY_MS + RETENTION_RETRY_MS);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RETENTION_TICK) => {}
        }
    }
}

/// Erases everything closed or expired at or before `before_ms`.
async fn sweep(
    config: &Config,
    store: &dyn Store,
    outbox_signal: &Notify,
    before_ms: i64,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let (mut invoices, mut customers) = (0, 0);
    while !shutdown.is_cancelled() {
        let erasure = store.erase_expired(before_ms, RETENTION_BATCH).await?;
        if erasure.customers == 0 {
            break;
        }
        outbox_signal.notify_one();
        remove_copies(config, &erasure.messages);
        invoices += erasure.invoices_erased;
        customers += erasure.customers;
    }
    if customers > 0 {
        info!(
            invoices,
            customers, "retention erased the personal data of old invoices"
        );
    }
    Ok(())
}
