//! The billers' and operators' API: `POST /v1/payments` (a biller or its
//! PSP confirms a payment) and `GET /v1/invoices/{biller_id}/{invoice_id}`
//! (status, timeline and journey steps), and
//! `DELETE /v1/customers/{biller_id}/{customer_id}` (erasure). The last
//! two take the admin token or the biller's own `api_token` (see [`auth`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::{auth, AppError, AppState};
use crate::domain::{ChannelName, Status};
use crate::events::{rfc3339_ms, Correlation};
use crate::settings::Secret;
use crate::store::{History, StepRecord, StepStatus};

/// A payment confirmation's body. Signed with the biller's webhook secret
/// (see [`verify_payment_signature`]).
#[derive(Deserialize, schemars::JsonSchema)]
#[schemars(
    title = "payrelay payment confirmation",
    description = "The body of POST /v1/payments, signed with the biller's webhook_secret in X-Payrelay-Signature."
)]
pub(crate) struct Payment {
    /// The biller whose `webhook_secret` signed the body.
    biller_id: String,
    /// The invoice that was paid (every revision of it is closed).
    invoice_id: String,
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// How far a confirmation's signing time may be from now, either way: a
/// captured confirmation can be replayed for this long at most.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Why a payment confirmation's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Payrelay-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">")]
    Malformed,
    #[error("no v1 signature matches the biller's webhook_secret")]
    Mismatch,
    #[error("the signature's t is more than 300 seconds from now: sign each request when sending it, with a synchronised clock")]
    OutOfTime,
}

/// `X-Payrelay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<raw body>">` under one of the biller's secrets, compared in
/// constant time. Signing the time bounds replays to
/// [`SIGNATURE_TOLERANCE_SECS`]; several `v1=` and several secrets let a
/// biller rotate its key without a pause. Other schemes are ignored.
pub fn verify_payment_signature<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    body: &[u8],
    header: &str,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                timestamp = Some(t)
            }
            Some(("t", _)) => return Err(SignatureError::Malformed),
            Some(("v1", hex_digest)) => match hex::decode(hex_digest) {
                Ok(digest) => given.push(digest),
                Err(_) => return Err(SignatureError::Malformed),
            },
            _ => {}
        }
    }
    let Some(t) = timestamp.filter(|_| !given.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let signed_at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    let matches = secrets.into_iter().filter(|s| !s.is_empty()).any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        // Every candidate is compared, so timing tells nothing of which matched.
        given
            .iter()
            .fold(false, |found, g| found | bool::from(expected.as_slice().ct_eq(g)))
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if signed_at.abs_diff(now_secs) > SIGNATURE_TOLERANCE_SECS as u64 {
        return Err(SignatureError::OutOfTime);
    }
    Ok(())
}

/// Closes the invoice as paid: its links stop offering payment and nothing
/// more is sent. Answers 200 with whether this call closed it.
pub(super) async fn payment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let Ok(payment) = serde_json::from_slice::<Payment>(&body) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "the body must be JSON with biller_id and invoice_id",
        ));
    };
    let signature = headers
        .get("x-payrelay-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // An unknown biller and a wrong signature look the same from outside.
    let secrets = state
        .config
        .billers
        .get(&payment.biller_id)
        .map(|b| b.webhook_secret.as_slice())
        .unwrap_or_default();
    let now_secs = state.clock.now_ms().div_euclid(1000);
    let checked = verify_payment_signature(secrets.iter().map(Secret::expose), &body, signature, now_secs);
    if let Err(why) = checked {
        warn!(biller_id = %payment.biller_id, %why, "payment confirmation refused");
        return Ok(refuse(StatusCode::UNAUTHORIZED, &why.to_string()));
    }
    let correlation = Correlation {
        correlation_id: headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        message_id: None,
    };
    let closed = state
        .dispatcher
        .close_invoice(&payment.biller_id, &payment.invoice_id, Status::Paid, &correlation)
        .await?;
    info!(biller_id = %payment.biller_id, invoice_id = %payment.invoice_id, closed, "payment confirmed");
    Ok((
        StatusCode::OK,
        Json(json!({
            "biller_id": payment.biller_id,
            "invoice_id": payment.invoice_id,
            "status": "paid",
            "already_closed": !closed,
        })),
    )
        .into_response())
}

/// Status and timeline of one invoice, for operators with the admin token
/// and for its biller with its `api_token`.
pub(super) async fn invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((biller_id, invoice_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let Some(caller) = auth::caller(&state.config, &headers) else {
        return Ok(auth::unauthorized());
    };
    // Another biller's invoice does not exist, as far as this caller knows.
    if !caller.sees(&biller_id) {
        return Ok(refuse(StatusCode::NOT_FOUND, "no such invoice"));
    }
    let Some(history) = state.store.history(&biller_id, &invoice_id).await? else {
        return Ok(refuse(StatusCode::NOT_FOUND, "no such invoice"));
    };
    let steps = state.store.steps(&biller_id, &invoice_id).await?;
    Ok(Json(InvoiceView::new(&history, &steps)).into_response())
}

/// The longest `customer.id` an invoice may carry.
const MAX_CUSTOMER_ID: usize = 128;

/// Erases a customer's personal data from every invoice of theirs at the
/// biller (see `dispatch::erasure`). Answers 200 with how many invoices it
/// erased (0 when none were left: erasing again is harmless); 404 when the
/// biller is unknown or not the caller's.
pub(super) async fn erase_customer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((biller_id, customer_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let Some(caller) = auth::caller(&state.config, &headers) else {
        return Ok(auth::unauthorized());
    };
    if !caller.sees(&biller_id) || !state.config.billers.contains_key(&biller_id) {
        return Ok(refuse(StatusCode::NOT_FOUND, "no such biller"));
    }
    if customer_id.is_empty() || customer_id.chars().count() > MAX_CUSTOMER_ID {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "the customer id is the invoices' customer.id: 1 to 128 characters",
        ));
    }
    let erasure = crate::dispatch::erasure::erase_customer(
        &state.config,
        state.store.as_ref(),
        &state.outbox_signal,
        &biller_id,
        &customer_id,
    )
    .await?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "biller_id": biller_id,
            "customer_id": customer_id,
            "invoices_erased": erasure.invoices_erased,
        })),
    )
        .into_response())
}

/// The body of `GET /v1/invoices/{biller_id}/{invoice_id}`; its schema is
/// published (`docs/schemas/invoice-status.schema.json`), so it is a type.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(
    title = "payrelay invoice status",
    description = "The body of GET /v1/invoices/{biller_id}/{invoice_id}: the latest revision's status, any quiet-hour hold, everything that happened to every revision, and every journey step. Every key is always present; what does not apply is null. No contact details are in it.",
    extend("additionalProperties" = false)
)]
pub(crate) struct InvoiceView {
    biller_id: String,
    invoice_id: String,
    /// The latest revision received; null when the invoice was paid or
    /// cancelled before any payment request for it arrived (the timeline
    /// then holds only that).
    revision: Option<i64>,
    /// `accepted`: stored, sends under way or held; `sent`: a provider
    /// accepted it; `exhausted`: every routed channel failed; `paid` /
    /// `cancelled`: closed; `superseded`: a higher revision replaced it.
    #[schemars(extend("enum" = ["accepted", "sent", "exhausted", "paid", "cancelled", "superseded"]))]
    status: &'static str,
    /// When a send held by quiet hours may go; null when nothing is held.
    #[schemars(extend("format" = "date-time"))]
    held_until: Option<String>,
    /// What happened, oldest first: journey steps that ended are in it too
    /// (`step_sent`, `step_failed`, `step_skipped`, `step_cancelled`).
    timeline: Vec<TimelineView>,
    /// Every journey step of every revision, by revision and then in
    /// journey order, whatever became of it; empty when no journey
    /// follows the invoice.
    steps: Vec<StepView>,
}

/// One thing that happened to an invoice.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename = "TimelineEntry")]
#[schemars(extend("additionalProperties" = false))]
struct TimelineView {
    #[schemars(extend("format" = "date-time"))]
    at: String,
    /// Null for `paid` and `cancelled`, which close every revision.
    revision: Option<i64>,
    #[schemars(extend("enum" = [
        "received", "held", "send_started", "sent", "send_failed", "delivered", "read", "clicked",
        "paid", "cancelled", "step_sent", "step_failed", "step_skipped", "step_cancelled"
    ]))]
    event: &'static str,
    channel: Option<ChannelName>,
    /// `sent`: the provider's id; `send_failed`: the provider's reason;
    /// `clicked`: how many times a person opened the link; `held`: until
    /// when; `paid` / `cancelled` before any request arrived: says so;
    /// `step_*`: the step, its journey and why (`step overdue (journey
    /// standard): the invoice is paid`).
    detail: Option<String>,
}

/// One journey step: planned, or how it ended.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename = "JourneyStep")]
#[schemars(extend("additionalProperties" = false))]
struct StepView {
    /// The revision whose journey the step belongs to: a new revision has
    /// its own steps, and the older one's stop.
    revision: i64,
    /// The step's name in the journey's config and in events; `request`
    /// for the watch over the first request that a journey with
    /// `escalate_after` plans before its steps.
    name: String,
    journey: String,
    /// When it goes (`planned`), went (`sent`, `failed`) or would have gone
    /// (`skipped`, `cancelled`). A step placed `after` the previous message
    /// shows an estimate until that message is out.
    #[schemars(extend("format" = "date-time"))]
    at: String,
    /// `planned`: still to go (or sent and watched for escalation, as its
    /// `detail` says); `sent`: a channel took it; `failed`: every
    /// channel failed; `skipped`: not sent, see `detail` (its time had
    /// passed at intake, a later step was due too, no channel could reach
    /// the customer); `cancelled`: the invoice was paid, cancelled or
    /// replaced first.
    #[schemars(extend("enum" = ["planned", "sent", "failed", "skipped", "cancelled"]))]
    status: &'static str,
    /// Why, when there is something to say: the skip's or cancellation's
    /// reason, why a planned step waits (quiet hours, the daily cap, a
    /// retry, an escalation watch), the template sent.
    detail: Option<String>,
    /// When it ended; null while planned.
    #[schemars(extend("format" = "date-time"))]
    done_at: Option<String>,
}

impl InvoiceView {
    pub(crate) fn new(history: &History, steps: &[StepRecord]) -> InvoiceView {
        let happened = history.timeline.iter().map(|e| {
            let view = TimelineView {
                at: rfc3339_ms(e.at_ms),
                revision: e.revision,
                event: e.what,
                channel: e.channel,
                detail: e.detail.clone(),
            };
            (e.at_ms, view)
        });
        let mut timeline: Vec<(i64, TimelineView)> = happened.chain(steps.iter().filter_map(step_ended)).collect();
        // Stable: a step stays after what happened in the same millisecond
        // (the payment that cancelled it).
        timeline.sort_by_key(|(at, _)| *at);
        InvoiceView {
            biller_id: history.key.biller_id.clone(),
            invoice_id: history.key.invoice_id.clone(),
            revision: history.received.then_some(history.key.revision),
            status: history.status.as_str(),
            held_until: history.held_until_ms.map(rfc3339_ms),
            timeline: timeline.into_iter().map(|(_, view)| view).collect(),
            steps: steps
                .iter()
                .map(|s| StepView {
                    revision: s.revision,
                    name: s.name.clone(),
                    journey: s.journey.clone(),
                    at: rfc3339_ms(s.due_ms),
                    status: s.status.as_str(),
                    detail: s.detail.clone(),
                    done_at: s.done_ms.map(rfc3339_ms),
                })
                .collect(),
        }
    }
}

/// A step that ended, as a timeline entry at the time it ended.
fn step_ended(step: &StepRecord) -> Option<(i64, TimelineView)> {
    let event = match step.status {
        StepStatus::Planned => return None,
        StepStatus::Sent => "step_sent",
        StepStatus::Failed => "step_failed",
        StepStatus::Skipped => "step_skipped",
        StepStatus::Cancelled => "step_cancelled",
    };
    let at = step.done_ms?;
    let about = format!("step {} (journey {})", step.name, step.journey);
    let detail = match &step.detail {
        Some(why) => format!("{about}: {why}"),
        None => about,
    };
    let view = TimelineView {
        at: rfc3339_ms(at),
        revision: Some(step.revision),
        event,
        channel: None,
        detail: Some(detail),
    };
    Some((at, view))
}

#[cfg(test)]
mod tests {
    use super::{verify_payment_signature, SignatureError, SIGNATURE_TOLERANCE_SECS};
    use hmac::{Hmac, Mac};

    const NOW: i64 = 1_800_000_000;

    fn v1(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(secrets: &[&str], body: &[u8], header: &str) -> Result<(), SignatureError> {
        verify_payment_signature(secrets.iter().copied(), body, header, NOW)
    }

    #[test]
    fn payment_signatures_follow_the_documented_algorithm() {
        // HMAC-SHA256("secret", "1800000000.test"), computed with Python's hmac.
        let good = "t=1800000000,v1=87ae81535e16c475c56bca6dfa94b6572c22902de4295d68ac0690eda85f6aff";
        assert_eq!(v1("secret", NOW, b"test"), &good[16..], "the documented payload");
        assert_eq!(check(&["secret"], b"test", good), Ok(()));
        assert_eq!(
            check(&["secret"], b"test ", good),
            Err(SignatureError::Mismatch),
            "tampered body"
        );
        assert_eq!(
            check(&["other"], b"test", good),
            Err(SignatureError::Mismatch),
            "other key"
        );
        assert_eq!(
            check(&[], b"test", good),
            Err(SignatureError::Mismatch),
            "unknown biller"
        );
        assert_eq!(
            check(&[""], b"test", good),
            Err(SignatureError::Mismatch),
            "no secret, no trust"
        );
        let body_only = format!("sha256={}", &good[16..]);
        assert_eq!(
            check(&["secret"], b"test", &body_only),
            Err(SignatureError::Malformed),
            "no t"
        );
        for bad in [
            "",
            "t=1800000000",
            "t=1800000000,v1=zz",
            "t=-5,v1=00",
            "t=1,t=2,v1=00",
            "v1=00",
        ] {
            assert_eq!(
                check(&["secret"], b"test", bad),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        let other_t = format!("t=1800000001,v1={}", &good[16..]);
        assert_eq!(
            check(&["secret"], b"test", &other_t),
            Err(SignatureError::Mismatch),
            "t is signed"
        );
    }

    #[test]
    fn an_old_or_future_signature_is_refused_even_when_it_matches() {
        let body = br#"{"biller_id":"acme","invoice_id":"INV-1"}"#;
        let at = |t: i64| format!("t={t},v1={}", v1("secret", t, body));
        let limit = SIGNATURE_TOLERANCE_SECS;
        assert_eq!(check(&["secret"], body, &at(NOW - limit)), Ok(()));
        assert_eq!(check(&["secret"], body, &at(NOW + limit)), Ok(()));
        assert_eq!(
            check(&["secret"], body, &at(NOW - limit - 1)),
            Err(SignatureError::OutOfTime),
            "a replay"
        );
        assert_eq!(
            check(&["secret"], body, &at(NOW + limit + 1)),
            Err(SignatureError::OutOfTime)
        );
        assert_eq!(check(&["secret"], body, &at(0)), Err(SignatureError::OutOfTime));
    }

    #[test]
    fn a_rotating_biller_may_sign_with_either_secret() {
        let body = b"{}";
        let (old, new) = (v1("old", NOW, body), v1("new", NOW, body));
        let both = format!("t={NOW}, v1={new}, v1={old}, v0=ignored");
        assert_eq!(
            check(&["old"], body, &both),
            Ok(()),
            "the receiver still has only the old secret"
        );
        assert_eq!(check(&["new", "old"], body, &format!("t={NOW},v1={old}")), Ok(()));
        assert_eq!(check(&["new", "old"], body, &format!("t={NOW},v1={new}")), Ok(()));
        assert_eq!(
            check(&["newer"], body, &both),
            Err(SignatureError::Mismatch),
            "neither key is the receiver's"
        );
    }

    /// Steps that ended join the timeline when they ended, after what
    /// happened in the same millisecond; planned ones are only in `steps`.
    #[test]
    fn ended_steps_join_the_timeline_and_every_step_is_listed() {
        use super::InvoiceView;
        use crate::domain::{InvoiceKey, Status};
        use crate::store::{History, StepRecord, StepStatus, TimelineEntry};

        let entry = |at_ms, revision, what| TimelineEntry {
            at_ms,
            revision,
            what,
            channel: None,
            detail: None,
        };
        let history = History {
            key: InvoiceKey {
                biller_id: "acme".into(),
                invoice_id: "INV-1".into(),
                revision: 1,
            },
            received: true,
            status: Status::Paid,
            held_until_ms: None,
            timeline: vec![entry(1_000, Some(1), "received"), entry(5_000, None, "paid")],
        };
        let step = |seq, name: &str, status, due_ms, done_ms, detail: Option<&str>| StepRecord {
            revision: 1,
            seq,
            journey: "standard".into(),
            name: name.into(),
            status,
            due_ms,
            done_ms,
            detail: detail.map(str::to_owned),
            after_ms: None,
        };
        let steps = [
            step(1, "upcoming", StepStatus::Skipped, 500, Some(1_000), Some("too late")),
            step(2, "due", StepStatus::Sent, 3_000, Some(3_001), None),
            step(3, "overdue", StepStatus::Cancelled, 9_000, Some(5_000), Some("paid")),
            step(4, "final", StepStatus::Planned, 20_000, None, None),
        ];
        let view = serde_json::to_value(InvoiceView::new(&history, &steps)).unwrap();
        let timeline: Vec<(&str, &str)> = view["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            timeline,
            [
                ("received", ""),
                ("step_skipped", "step upcoming (journey standard): too late"),
                ("step_sent", "step due (journey standard)"),
                ("paid", ""),
                ("step_cancelled", "step overdue (journey standard): paid"),
            ]
        );
        assert_eq!(view["steps"].as_array().unwrap().len(), 4);
        assert_eq!(view["steps"][3]["status"], "planned");
        assert_eq!(view["steps"][3]["at"], "1970-01-01T00:00:20Z");
        assert_eq!(view["steps"][3]["done_at"], serde_json::Value::Null);
        assert_eq!(view["steps"][2]["done_at"], "1970-01-01T00:00:05Z");
    }
}
