//! Sends held invoices when their quiet hours end and journey steps when
//! they come due, and takes over invoices whose handler died without their
//! message coming back.
//!
//! Holds live in the store, so a restart loses none: the scheduler claims
//! what is due (so that of several instances only one sends each), resumes
//! each invoice through the dispatcher (which checks again that it is still
//! open and the window is open), and sleeps until the next hold ends.
//! Journey steps are claimed the same way and sent through the dispatcher,
//! which checks the invoice again right before each send; the reminders of
//! billers that combine go to it as one batch, to be grouped by customer. Abandoned
//! invoices are claimed the same way before they are resumed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Dispatcher;
use crate::domain::clock::Clock;
use crate::store::Store;

/// Sends at once (held invoices and steps) when many come due together (08:00).
const CONCURRENT_RESUMES: usize = 32;
/// Holds, and steps, claimed per look at the store.
const CLAIM_BATCH: u32 = 500;
/// Longest sleep between looks at the store: new holds appear all the time.
const LONGEST_SLEEP: Duration = Duration::from_secs(1);
/// Shortest sleep between looks when nothing more is due.
const SHORTEST_SLEEP: Duration = Duration::from_millis(20);
/// Free slots a busy scheduler waits for before it claims more.
const REFILL: u32 = CONCURRENT_RESUMES as u32 / 2;
/// How often a scheduler whose billers no longer combine looks for
/// combined groups left from before.
const LEFTOVER_GROUPS_EVERY_MS: i64 = 60_000;
/// How long shutdown waits for the sends under way.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

pub async fn run(
    dispatcher: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    // Sends run as tasks of their own, at most this many at once: one slow
    // send (a provider taking seconds, a paused channel) must not hold back
    // every other invoice's steps until it is done.
    let slots = Arc::new(Semaphore::new(CONCURRENT_RESUMES));
    let failed = Arc::new(AtomicBool::new(false));
    // Combined groups exist where a biller combines. Without one, groups
    // left from when one did (the config changed) are still sent, looked
    // for once a minute rather than at every round.
    let combines = dispatcher.combines();
    let mut leftovers_at = i64::MIN;
    loop {
        let now = clock.now_ms();
        let look_for_groups = combines || now >= leftovers_at;
        if look_for_groups && !combines {
            leftovers_at = now.saturating_add(LEFTOVER_GROUPS_EVERY_MS);
        }
        // A full batch of holds or steps: more are likely due (a wave at the
        // same minute), so the next look comes at once, unless a send failed
        // (then what failed is due again soon, and the store may be down).
        let mut full = false;
        let free = (slots.available_permits() as u32).min(CLAIM_BATCH);
        if free > 0 {
            match store.claim_due_holds(now, free).await {
                Ok(keys) => {
                    full |= keys.len() >= free as usize;
                    for key in keys {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let (dispatcher, store, failed) = (dispatcher.clone(), store.clone(), failed.clone());
                        tokio::spawn(async move {
                            if let Err(e) = dispatcher.resume(&key).await {
                                failed.store(true, Ordering::Relaxed);
                                warn!(%key, error = %e, "could not send a held invoice; trying again shortly");
                                // Due again at once; if even that fails, the
                                // invoice is taken over once idle.
                                let _ = store.hold(&key, now).await;
                            }
                            drop(slot);
                        });
                    }
                }
                Err(e) => warn!(error = %e, "cannot read quiet-hour holds; trying again shortly"),
            }
        }
        let free = (slots.available_permits() as u32).min(CLAIM_BATCH);
        if free > 0 {
            match store
                .claim_due_steps(now, super::CLAIM_IDLE.as_millis() as i64, free)
                .await
            {
                Ok(steps) => {
                    full |= steps.len() >= free as usize;
                    // Reminders of billers that combine go by customer: the
                    // batch's own are grouped before any is sent (this
                    // instance holds them all), in one task.
                    let (combining, steps): (Vec<_>, Vec<_>) = match combines {
                        true => steps.into_iter().partition(|s| dispatcher.combines_reminder(s)),
                        false => (Vec::new(), steps),
                    };
                    if !combining.is_empty() {
                        // As many sends at once as slots it takes, one a step.
                        let n = (combining.len() as u32).min(slots.available_permits() as u32).max(1);
                        if let Ok(slot) = slots.clone().try_acquire_many_owned(n) {
                            let (dispatcher, failed) = (dispatcher.clone(), failed.clone());
                            tokio::spawn(async move {
                                if let Err(e) = dispatcher.run_combined_batch(combining, n as usize).await {
                                    failed.store(true, Ordering::Relaxed);
                                    warn!(error = %e, "could not send combined reminders; trying again shortly");
                                }
                                drop(slot);
                            });
                        }
                    }
                    for step in steps {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let (dispatcher, store, failed) = (dispatcher.clone(), store.clone(), failed.clone());
                        tokio::spawn(async move {
                            if let Err(e) = dispatcher.run_step(&step).await {
                                failed.store(true, Ordering::Relaxed);
                                warn!(key = %step.key, step = %step.name, error = %e, "could not send a journey step; trying again shortly");
                                // Due again soon; if even that fails, the
                                // claim goes stale and the step is taken again.
                                let _ = store
                                    .reschedule_step(&step.key, step.seq, now + 1_000, "the store failed; trying again")
                                    .await;
                            }
                            drop(slot);
                        });
                    }
                }
                Err(e) => warn!(error = %e, "cannot read due journey steps; trying again shortly"),
            }
        }
        let free = (slots.available_permits() as u32).min(CLAIM_BATCH);
        if look_for_groups && free > 0 {
            match store
                .claim_due_groups(now, super::CLAIM_IDLE.as_millis() as i64, free)
                .await
            {
                Ok(groups) => {
                    full |= groups.len() >= free as usize;
                    for group in groups {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let (dispatcher, store, failed) = (dispatcher.clone(), store.clone(), failed.clone());
                        tokio::spawn(async move {
                            if let Err(e) = dispatcher.send_group(&group).await {
                                failed.store(true, Ordering::Relaxed);
                                warn!(group = %group.id, error = %e, "could not send a combined message; trying again shortly");
                                // Due again soon; if even that fails, the
                                // claim goes stale and the group is taken again.
                                let _ = store.hold_group(&group.id, now + 1_000).await;
                            }
                            drop(slot);
                        });
                    }
                }
                Err(e) => warn!(error = %e, "cannot read due combined messages; trying again shortly"),
            }
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
        let busy = slots.available_permits() == 0;
        let more_due = full && !failed.swap(false, Ordering::Relaxed);
        let next = match more_due {
            true => None,
            false => {
                let next_hold = store.next_hold().await.ok().flatten();
                let next_step = store.next_step().await.ok().flatten();
                let next_group = match combines {
                    true => store.next_group().await.ok().flatten(),
                    false => None,
                };
                next_hold.into_iter().chain(next_step).chain(next_group).min()
            }
        };
        if busy {
            // Every slot taken: look again once half of them are free, so
            // that a wave is claimed in batches, not one step at a time.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = slots.acquire_many(REFILL) => {}
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause(now, more_due, next)) => {}
        }
    }
    // Let the sends under way finish (each has its own timeouts); what is
    // still running after that is claimed again once its claim is stale.
    let all = CONCURRENT_RESUMES as u32;
    if tokio::time::timeout(SHUTDOWN_WAIT, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("journey steps or held invoices still sending at shutdown; they are taken over once idle");
    }
}

/// How long to sleep after a look at the store: not at all when it claimed
/// a full batch that went out (`more_due`: a wave of reminders at the same
/// minute drains batch after batch, not one batch a second); else until
/// the next hold ends or step is due, within [`SHORTEST_SLEEP`] and
/// [`LONGEST_SLEEP`]. One already due but not claimed (another instance
/// has it, or it failed just now) is looked at again after the longest.
fn pause(now: i64, more_due: bool, next: Option<i64>) -> Duration {
    match next {
        _ if more_due => Duration::ZERO,
        Some(next) if next > now => Duration::from_millis((next - now) as u64).clamp(SHORTEST_SLEEP, LONGEST_SLEEP),
        _ => LONGEST_SLEEP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_is_followed_by_the_next_at_once() {
        assert_eq!(pause(1_000, true, None), Duration::ZERO);
        assert_eq!(pause(1_000, true, Some(900)), Duration::ZERO);
    }

    #[test]
    fn otherwise_sleeps_until_the_next_due_time_within_bounds() {
        assert_eq!(pause(1_000, false, Some(1_300)), Duration::from_millis(300));
        assert_eq!(pause(1_000, false, Some(1_005)), SHORTEST_SLEEP);
        assert_eq!(pause(1_000, false, Some(60_000)), LONGEST_SLEEP);
        assert_eq!(pause(1_000, false, None), LONGEST_SLEEP);
        assert_eq!(
            pause(1_000, false, Some(900)),
            LONGEST_SLEEP,
            "due already but not claimed: another instance has it"
        );
    }
}
