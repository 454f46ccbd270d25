//! Bearer tokens of the API, in one place: `[http] admin_token` sees every
//! biller; a biller's `[billers.<id>] api_token` sees only that biller.
//! Another biller's data answers as if it did not exist (404), so a token
//! tells nothing about who else is served here.
//!
//! Every configured token is compared, in constant time, whatever the
//! offered one matches, so the time an answer takes says nothing of which
//! token (or how much of one) was right.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::Config;

/// Who a request's bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `[http] admin_token`: every biller.
    Admin,
    /// A biller's `api_token`: that biller only.
    Biller(String),
}

impl Caller {
    /// Whether this caller may see `biller_id`'s data.
    pub fn sees(&self, biller_id: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Biller(own) => own == biller_id,
        }
    }
}

/// The caller whose token the `Authorization: Bearer` header carries, if any.
pub fn caller(config: &Config, headers: &HeaderMap) -> Option<Caller> {
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    if offered.is_empty() {
        return None;
    }
    let matches = |token: &str| bool::from(token.as_bytes().ct_eq(offered));
    let mut found = config
        .http
        .admin_token
        .as_ref()
        .is_some_and(|t| matches(t.expose()))
        .then_some(Caller::Admin);
    for (id, biller) in &config.billers {
        // `check` makes every token unique, so at most one matches; each
        // is compared all the same.
        if biller.api_token.as_ref().is_some_and(|t| matches(t.expose())) && found.is_none() {
            found = Some(Caller::Biller(id.clone()));
        }
    }
    found
}

/// The 401 for a request without a token that is known here.
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "a bearer token is required: [http] admin_token, or the biller's [billers.<id>] api_token"})),
    )
        .into_response()
}
