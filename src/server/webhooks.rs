//! Provider status callbacks: `POST /webhooks/twilio` and
//! `GET`/`POST /webhooks/meta` (WhatsApp and Messenger share it).
//!
//! Checks fail closed: a missing or wrong signature, or a channel with no
//! secret configured, answers 401 and changes nothing. The signature is
//! checked over the exact bytes and URL the provider signed, before any
//! parsing that could act on the content.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::{AppError, AppState};
use crate::channels::{meta, sms, ChannelName, StatusReport};
use crate::config::Secret;

/// Twilio posts form fields; the signature covers our public URL and all of them.
pub(super) async fn twilio(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let Some(token) = state
        .config
        .channels
        .sms
        .as_ref()
        .and_then(|c| c.webhook_secret.as_ref())
    else {
        warn!("Twilio webhook called but no SMS auth token is configured; refused");
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    // Exactly the URL we gave Twilio as StatusCallback.
    let mut url = sms::status_callback_url(&state.config.http.public_base_url);
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !sms::verify_signature(token.expose(), &url, &fields, signature) {
        warn!("Twilio webhook with a bad signature; refused");
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    if let Some(report) = sms::parse_status(&fields) {
        apply(&state, ChannelName::Sms, report).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Meta's subscription handshake: echo the challenge when the token is one
/// of ours.
pub(super) async fn meta_verify(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mode = query.get("hub.mode").map(String::as_str);
    let offered = query.get("hub.verify_token").map(String::as_str).unwrap_or_default();
    let challenge = query.get("hub.challenge").cloned().unwrap_or_default();
    let channels = &state.config.channels;
    let tokens = [
        channels.whatsapp.as_ref().and_then(|c| c.verify_token.as_ref()),
        channels.messenger.as_ref().and_then(|c| c.verify_token.as_ref()),
    ];
    let matches = tokens
        .into_iter()
        .flatten()
        .any(|t| constant_time_eq(t.expose(), offered));
    if mode == Some("subscribe") && matches {
        info!("Meta webhook subscription verified");
        (StatusCode::OK, challenge).into_response()
    } else {
        warn!("Meta webhook handshake with a wrong token; refused");
        StatusCode::FORBIDDEN.into_response()
    }
}

/// A Meta status POST, signed with the app secret of the channel its
/// `object` names.
pub(super) async fn meta_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Only `object` is read before the signature check, to pick the key.
    let object = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("object").and_then(|o| o.as_str()).map(str::to_owned));
    let channels = &state.config.channels;
    let (channel, secret): (ChannelName, Option<&Secret>) = match object.as_deref() {
        Some("whatsapp_business_account") => (
            ChannelName::Whatsapp,
            channels.whatsapp.as_ref().and_then(|c| c.webhook_secret.as_ref()),
        ),
        Some("page") => (
            ChannelName::Messenger,
            channels.messenger.as_ref().and_then(|c| c.webhook_secret.as_ref()),
        ),
        _ => {
            warn!("Meta webhook for an unknown object; refused");
            return Ok(StatusCode::UNAUTHORIZED.into_response());
        }
    };
    let Some(secret) = secret else {
        warn!(%channel, "Meta webhook for a channel with no app_secret configured; refused");
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    if !meta::verify_signature(secret.expose(), &body, signature) {
        warn!(%channel, "Meta webhook with a bad signature; refused");
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    }
    let webhook = match meta::parse_webhook(&body) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "Meta webhook body not understood; acknowledged and dropped");
            return Ok(StatusCode::OK.into_response());
        }
    };
    for report in webhook.reports {
        apply(&state, channel, report).await?;
    }
    Ok(StatusCode::OK.into_response())
}

async fn apply(state: &AppState, channel: ChannelName, report: StatusReport) -> Result<(), AppError> {
    state.dispatcher.handle_report(channel, report).await?;
    Ok(())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
