//! Sends held invoices when their quiet hours end and journey steps when
//! they come due, and takes over invoices whose handler died without their
//! message coming back.
//!
//! Holds live in the store, so a restart loses none: the scheduler claims
//! what is due (so that of several instances only one sends each), resumes
//! each invoice through the dispatcher (which checks again that it is still
//! open and the window is open), and sleeps until the next hold ends.
//! Journey steps are claimed the same way and sent through the dispatcher,
//! which checks the invoice again right before each send. Abandoned
//! invoices are claimed the same way before they are resumed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Dispatcher;
use crate::domain::clock::Clock;
use crate::store::Store;

/// Invoices resumed at once when many holds end together (08:00).
const CONCURRENT_RESUMES: usize = 32;
/// Longest sleep between looks at the store: new holds appear all the time.
const LONGEST_SLEEP: Duration = Duration::from_secs(1);

pub async fn run(
    dispatcher: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    loop {
        let now = clock.now_ms();
        match store.claim_due_holds(now, 500).await {
            Ok(keys) => {
                futures_util::stream::iter(keys)
                    .for_each_concurrent(CONCURRENT_RESUMES, |key| {
                        let (dispatcher, store) = (dispatcher.clone(), store.clone());
                        async move {
                            if let Err(e) = dispatcher.resume(&key).await {
                                warn!(%key, error = %e, "could not send a held invoice; trying again shortly");
                                // Due again at once; if even that fails, the
                                // invoice is taken over once idle.
                                let _ = store.hold(&key, now).await;
                            }
                        }
                    })
                    .await;
            }
            Err(e) => warn!(error = %e, "cannot read quiet-hour holds; trying again shortly"),
        }
        match store
            .claim_due_steps(now, super::CLAIM_IDLE.as_millis() as i64, 500)
            .await
        {
            Ok(steps) => {
                futures_util::stream::iter(steps)
                    .for_each_concurrent(CONCURRENT_RESUMES, |step| {
                        let (dispatcher, store) = (dispatcher.clone(), store.clone());
                        async move {
                            if let Err(e) = dispatcher.run_step(&step).await {
                                warn!(key = %step.key, step = %step.name, error = %e, "could not send a journey step; trying again shortly");
                                // Due again soon; if even that fails, the
                                // claim goes stale and the step is taken again.
                                let _ = store
                                    .reschedule_step(&step.key, step.seq, now + 1_000, "the store failed; trying again")
                                    .await;
                            }
                        }
                    })
                    .await;
            }
            Err(e) => warn!(error = %e, "cannot read due journey steps; trying again shortly"),
        }
        match store.claim_stale(now, super::CLAIM_IDLE.as_millis() as i64, 100).await {
            Ok(keys) => {
                for key in keys {
                    warn!(%key, "taking over an invoice left unfinished by a stopped handler");
                    if let Err(e) = dispatcher.resume(&key).await {
                        warn!(%key, error = %e, "could not finish an abandoned invoice; trying again later");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot look for abandoned invoices; trying again shortly"),
        }
        let next_hold = store.next_hold().await.ok().flatten();
        let next_step = store.next_step().await.ok().flatten();
        let wait = match next_hold.into_iter().chain(next_step).min() {
            Some(next) if next > now => Duration::from_millis((next - now) as u64).min(LONGEST_SLEEP),
            _ => LONGEST_SLEEP,
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
        }
    }
}
