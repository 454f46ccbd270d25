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
        .unwrap_or_default();
    token_caller(config, offered)
}

/// The caller a token belongs to, if any (the console's sign-in form
/// offers one without the header).
pub fn token_caller(config: &Config, offered: &str) -> Option<Caller> {
    let offered = offered.as_bytes();
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::HeaderValue;

    use super::*;

    fn config() -> Config {
        let toml = r#"
[http]
admin_token = "root-token"
[billers.acme]
checkout_url = "https://a.example/{token}"
api_token = "acme-token"
[billers.beta]
checkout_url = "https://b.example/{token}"
[channels.email]
transport = "file"
"#;
        Config::from_toml(toml, Path::new("/srv/payrelay"), &|_| None).unwrap()
    }

    fn with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn the_admin_sees_every_biller_and_a_biller_only_itself() {
        let config = config();
        let admin = caller(&config, &with("Bearer root-token")).unwrap();
        assert!(admin.sees("acme") && admin.sees("beta"));
        let acme = caller(&config, &with("Bearer acme-token")).unwrap();
        assert_eq!(acme, Caller::Biller("acme".into()));
        assert!(acme.sees("acme") && !acme.sees("beta"));
    }

    #[test]
    fn no_token_a_wrong_one_or_another_scheme_is_nobody() {
        let config = config();
        for header in [
            "Bearer ",
            "Bearer acme-token2",
            "Bearer acme",
            "Basic acme-token",
            "acme-token",
        ] {
            assert_eq!(caller(&config, &with(header)), None, "{header}");
        }
        assert_eq!(caller(&config, &HeaderMap::new()), None);
    }
}
