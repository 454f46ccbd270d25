//! Provider callbacks: `POST /webhooks/{path}` and the subscription
//! handshake `GET /webhooks/{path}`, routed to the channel adapters'
//! [`Webhook`]s (see [`crate::channels::webhook`]); nothing here knows a
//! provider.
//!
//! Checks fail closed: a request no channel claims, a missing or wrong
//! signature, or a channel with no secret configured answers 401 and
//! changes nothing. The signature is checked over the exact bytes and URL
//! the provider signed, before anything reads the content.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::{AppError, AppState};
use crate::channels::webhook::{Handshake, Refused, Webhook, WebhookRequest};
use crate::channels::{BuildContext, StatusReport};

/// What the webhook routes share: the service's state and every channel's
/// webhook, built once.
#[derive(Clone)]
pub(super) struct Hooks {
    state: AppState,
    webhooks: Arc<[Box<dyn Webhook>]>,
}

impl Hooks {
    pub(super) fn new(state: AppState) -> Hooks {
        let context = BuildContext {
            public_base_url: state.config.http.public_base_url.clone(),
        };
        let webhooks = crate::channels::webhooks(&state.config.channels, &context).into();
        Hooks { state, webhooks }
    }

    /// The webhooks the provider calling `/webhooks/{path}` may be for.
    fn on<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a dyn Webhook> + 'a {
        self.webhooks
            .iter()
            .map(|w| w.as_ref())
            .filter(move |w| w.path() == path)
    }
}

/// A provider's status POST: the channel that claims it checks its
/// signature and reads its reports, which the dispatcher then applies.
pub(super) async fn receive(
    State(hooks): State<Hooks>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let Some(provider) = hooks.on(&path).next().map(|w| w.provider()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let (webhook, reports, replies) = {
        let request = WebhookRequest::new(uri.query(), &headers, &body);
        let Some(webhook) = hooks.on(&path).find(|w| w.claims(&request)) else {
            warn!("{provider} webhook for an unknown object; refused");
            return Ok(StatusCode::UNAUTHORIZED.into_response());
        };
        let channel = webhook.channel();
        match webhook.verify(&request) {
            Ok(()) => {}
            Err(Refused::NoSecret(key)) => {
                warn!(%channel, "{provider} webhook for a channel with no {key} configured; refused");
                return Ok(StatusCode::UNAUTHORIZED.into_response());
            }
            Err(Refused::BadSignature) => {
                warn!(%channel, "{provider} webhook with a bad signature; refused");
                return Ok(StatusCode::UNAUTHORIZED.into_response());
            }
        }
        let replies = webhook.replies(&request);
        match webhook.parse(&request) {
            Ok(reports) => (webhook, reports, replies),
            Err(e) => {
                warn!(error = %e, "{provider} webhook body not understood; acknowledged and dropped");
                return Ok(webhook.answer().into_response());
            }
        }
    };
    for report in reports {
        apply(&hooks.state, webhook, report).await?;
    }
    for reply in &replies {
        hooks.state.dispatcher.handle_reply(webhook.channel(), reply).await?;
    }
    Ok(webhook.answer().into_response())
}

/// A subscription handshake: echoes the challenge when a channel on the
/// path recognises its verify token.
pub(super) async fn handshake(
    State(hooks): State<Hooks>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(provider) = hooks.on(&path).next().map(|w| w.provider()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut offered = false;
    for webhook in hooks.on(&path) {
        match webhook.handshake(&query) {
            Handshake::Accepted(challenge) => {
                info!("{provider} webhook subscription verified");
                return (StatusCode::OK, challenge).into_response();
            }
            Handshake::Refused => offered = true,
            Handshake::NotOffered => {}
        }
    }
    if offered {
        warn!("{provider} webhook handshake with a wrong token; refused");
        StatusCode::FORBIDDEN.into_response()
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

async fn apply(state: &AppState, webhook: &dyn Webhook, report: StatusReport) -> Result<(), AppError> {
    state.dispatcher.handle_report(webhook.channel(), report).await?;
    Ok(())
}
