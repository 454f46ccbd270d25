//! The billers' and operators' API: `POST /v1/payments` (a biller or its
//! PSP confirms a payment) and `GET /v1/invoices/{biller_id}/{invoice_id}`
//! (status and timeline, for the admin token).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::{AppError, AppState};
use crate::domain::Status;
use crate::events::{rfc3339_ms, Correlation};

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

/// `X-Payrelay-Signature: sha256=<hex HMAC-SHA256 of the raw body>` under the
/// biller's `webhook_secret`, compared in constant time.
pub fn verify_payment_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    !secret.is_empty() && bool::from(expected.as_slice().ct_eq(&given))
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
    let secret = state
        .config
        .billers
        .get(&payment.biller_id)
        .and_then(|b| b.webhook_secret.as_ref());
    let valid = secret.is_some_and(|s| verify_payment_signature(s.expose(), &body, signature));
    if !valid {
        warn!(biller_id = %payment.biller_id, "payment confirmation with a bad signature; refused");
        return Ok(refuse(StatusCode::UNAUTHORIZED, "bad or missing X-Payrelay-Signature"));
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

/// Status and timeline of one invoice, for operators with the admin token.
pub(super) async fn invoice(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((biller_id, invoice_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let authorized = state
        .config
        .http
        .admin_token
        .as_ref()
        .is_some_and(|t| !offered.is_empty() && bool::from(t.expose().as_bytes().ct_eq(offered.as_bytes())));
    if !authorized {
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "an admin bearer token is required ([http] admin_token)"})),
        )
            .into_response());
    }
    let Some(history) = state.store.history(&biller_id, &invoice_id).await? else {
        return Ok(refuse(StatusCode::NOT_FOUND, "no such invoice"));
    };
    let timeline: Vec<_> = history
        .timeline
        .iter()
        .map(|e| {
            json!({
                "at": rfc3339_ms(e.at_ms),
                "revision": e.revision,
                "event": e.what,
                "channel": e.channel,
                "detail": e.detail,
            })
        })
        .collect();
    Ok(Json(json!({
        "biller_id": history.key.biller_id,
        "invoice_id": history.key.invoice_id,
        "revision": history.key.revision,
        "status": history.status.as_str(),
        "held_until": history.held_until_ms.map(rfc3339_ms),
        "timeline": timeline,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::verify_payment_signature;

    #[test]
    fn payment_signatures_follow_the_documented_algorithm() {
        // HMAC-SHA256("secret", "test"), the same vector as Meta's.
        let good = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914";
        assert!(verify_payment_signature("secret", b"test", good));
        assert!(!verify_payment_signature("secret", b"test ", good), "tampered body");
        assert!(!verify_payment_signature("other", b"test", good), "other key");
        assert!(
            !verify_payment_signature("secret", b"test", &good[7..]),
            "no sha256= prefix"
        );
        assert!(!verify_payment_signature("secret", b"test", "sha256=zz"), "not hex");
        assert!(!verify_payment_signature("", b"test", good), "no secret, no trust");
    }
}
