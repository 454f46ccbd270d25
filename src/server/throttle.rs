//! The throttle on pay-link guessing: per client address, lookups of links
//! that do not exist get 429 past `[http] unknown_links_per_minute`. It
//! counts only the 404s a pay-link route gives, so a customer's real link
//! is never counted nor refused, whatever its address did before.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::pages::Notice;
use super::AppState;
use crate::config::HttpConfig;

/// Every this many refusals and passes, addresses whose quota is full again
/// are forgotten, so a crawl from many addresses does not grow memory.
const FORGET_EVERY: u32 = 4096;

pub struct UnknownLinks {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    client_ip_header: Option<HeaderName>,
    counted: AtomicU32,
}

impl UnknownLinks {
    pub fn new(http: &HttpConfig) -> UnknownLinks {
        UnknownLinks {
            limiter: RateLimiter::keyed(Quota::per_minute(http.unknown_links_per_minute)),
            client_ip_header: http.client_ip_header.clone(),
            counted: AtomicU32::new(0),
        }
    }

    /// The client's address: the configured header's last value (what the
    /// proxy in front saw), else the connection's.
    fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let from_header = self.client_ip_header.as_ref().and_then(|name| {
            let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse().ok()
        });
        from_header.or(peer)
    }

    /// How long `client` must wait, if it has used up its unknown lookups.
    fn refuse(&self, client: IpAddr) -> Option<std::time::Duration> {
        if self.counted.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Wraps the pay-link routes: a 404 past the client's quota becomes a 429.
pub(super) async fn unknown_links(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = state.unknown_links.client(peer, request.headers());
    let response = next.run(request).await;
    if response.status() != StatusCode::NOT_FOUND {
        return response;
    }
    let Some(wait) = client.and_then(|c| state.unknown_links.refuse(c)) else {
        return response;
    };
    let mut refused = Notice::new("throttled").answer(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "Too many links that do not exist were opened from your connection. Please wait a minute.",
    );
    let seconds = wait.as_secs() + 1;
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        refused.headers_mut().insert(header::RETRY_AFTER, value);
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(header: Option<&'static str>) -> UnknownLinks {
        UnknownLinks {
            limiter: RateLimiter::keyed(Quota::per_minute(std::num::NonZeroU32::new(2).unwrap())),
            client_ip_header: header.map(HeaderName::from_static),
            counted: AtomicU32::new(0),
        }
    }

    #[test]
    fn the_proxy_header_names_the_client_by_its_last_value_else_the_connection_does() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.9, 203.0.113.7".parse().unwrap());
        let behind = throttle(Some("x-forwarded-for"));
        assert_eq!(behind.client(Some(peer), &headers), "203.0.113.7".parse().ok());
        assert_eq!(behind.client(Some(peer), &HeaderMap::new()), Some(peer));
        assert_eq!(
            throttle(None).client(Some(peer), &headers),
            Some(peer),
            "no header trusted"
        );
    }

    #[test]
    fn each_address_has_its_own_quota() {
        let t = throttle(None);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(t.refuse(a).is_none() && t.refuse(a).is_none());
        assert!(t.refuse(a).is_some(), "the third unknown lookup in a minute");
        assert!(t.refuse(b).is_none(), "another address is not affected");
    }
}
