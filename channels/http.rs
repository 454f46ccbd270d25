//! What every HTTP provider shares: one client setup, and the transport-level
//! error classes (timeouts, connection trouble, 429, 5xx) decided in one place.
//! Each adapter maps its provider's own error codes on top of these.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use super::{BuildError, SendError};
use crate::domain::ChannelName;

/// A client with bounded connect and request times; providers that hang
/// must not hold an invoice forever.
pub fn client(channel: ChannelName, timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("payrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError {
            channel,
            reason: format!("cannot build the HTTP client: {e}"),
        })
}

/// A request that got no HTTP answer: always worth another try.
pub fn transport_error(e: &reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        "the provider did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the provider"
    } else {
        "the request to the provider failed"
    };
    SendError::Transient {
        code: None,
        // reqwest's message may hold the URL and with it a token: keep it out.
        reason: what.to_owned(),
        retry_after: None,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from these APIs and
/// is treated as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The class of an HTTP error answer when the provider's own code does not
/// decide it: 408, 429 and 5xx are transient; 401 and 403 mean the channel's
/// credentials are refused; other 4xx are permanent.
pub fn by_status(status: StatusCode, headers: &HeaderMap, code: Option<String>, reason: String) -> SendError {
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        SendError::Transient {
            code,
            reason,
            retry_after: retry_after(headers),
        }
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        SendError::Misconfigured { code, reason }
    } else {
        SendError::Permanent { code, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn status_classes() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = by_status(StatusCode::TOO_MANY_REQUESTS, &headers, None, "slow down".into());
        assert!(matches!(e, SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        assert!(by_status(StatusCode::BAD_GATEWAY, &HeaderMap::new(), None, String::new()).is_transient());
        assert!(!by_status(StatusCode::BAD_REQUEST, &HeaderMap::new(), None, String::new()).is_transient());
        assert!(matches!(
            by_status(StatusCode::UNAUTHORIZED, &HeaderMap::new(), None, String::new()),
            SendError::Misconfigured { .. }
        ));
    }
}
