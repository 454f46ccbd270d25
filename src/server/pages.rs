//! What every page a consumer lands on has in common: the headers (no
//! framing, nothing loaded from elsewhere, no `Referer` with the token, no
//! caching), and, for answers that name no invoice (an unknown link, too
//! many of them, a failure), a page in the browser's language.
//!
//! A handler that has no invoice to show answers with a [`Notice`] (a
//! response extension) and a plain English body; [`layer`], around every
//! page route, alone sees the request's `Accept-Language` and renders the
//! notice from the `notice.html` template in the best language the browser
//! asks for that has one (the built-ins: en, es, pt, de; else en). A
//! handler that knows the invoice renders its page itself, in the
//! customer's language.
//!
//! The biller's logo is served here too, so the pages load nothing from
//! another origin.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use tracing::error;

use super::{message_page, AppError, AppState};
use crate::render::locale;

/// Pages show invoice data and carry a live token in their URL: no site
/// may frame them, they load nothing from elsewhere (styles are inline,
/// the logo is payrelay's own), forms post only to payrelay, and the
/// redirect to checkout leaks no `Referer` with the token.
pub(super) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// How long a browser keeps a logo: its URL changes with its contents.
const LOGO_CACHE: &str = "public, max-age=31536000, immutable";

/// How many `Accept-Language` entries are read; browsers send a handful.
const MOST_LANGUAGES: usize = 12;

/// A page that names no invoice: which one, and the customer's locale
/// when the link told it (it is preferred to the browser's).
#[derive(Debug, Clone)]
pub(super) struct Notice {
    /// The `notice` the template branches on: `not_found`, `throttled`,
    /// `unavailable`, `forbidden`, `bad_form`, `not_handled`, `unsubscribed`.
    pub kind: &'static str,
    pub locale: Option<String>,
}

impl Notice {
    pub fn new(kind: &'static str) -> Notice {
        Notice { kind, locale: None }
    }

    /// The notice in `locale` (an invoice's customer's), when it has one.
    pub fn in_locale(kind: &'static str, locale: Option<&str>) -> Notice {
        Notice {
            kind,
            locale: locale.map(str::to_owned),
        }
    }

    /// The answer: `code`, the notice, and English words in case nothing
    /// renders it (a route outside [`layer`]).
    pub fn answer(self, code: StatusCode, title: &str, text: &str) -> Response {
        let mut response = message_page(code, title, text);
        response.extensions_mut().insert(self);
        response
    }
}

/// Around every page route: renders a [`Notice`] in the browser's language
/// and sets the headers every page carries.
pub(super) async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let browser = browser_locales(request.headers());
    let mut response = next.run(request).await;
    if let Some(notice) = response.extensions_mut().remove::<Notice>() {
        response = render_notice(&state, &notice, &browser, response);
    }
    security_headers(response)
}

/// Replaces the English body of `fallback` with the notice's template, keeping
/// its status and headers (`Retry-After`). On a template failure (an
/// operator's override) the English page stays, and the failure is logged.
fn render_notice(state: &AppState, notice: &Notice, browser: &[String], fallback: Response) -> Response {
    let mut chain: Vec<String> = notice.locale.iter().flat_map(|l| locale::lookup(l)).collect();
    chain.extend(browser.iter().cloned());
    let data = json!({
        "notice": notice.kind,
        "biller": null,
        "locale": chain.first().map_or(locale::FALLBACK, String::as_str),
        "locale_chain": chain,
    });
    match state.templates.render("notice.html", &data) {
        Ok(html) => {
            let (parts, _) = fallback.into_parts();
            let mut response = Html(html).into_response();
            *response.status_mut() = parts.status;
            for (name, value) in &parts.headers {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
            }
            response
        }
        Err(e) => {
            error!(error = %e, "the notice page does not render; answered in English");
            fallback
        }
    }
}

/// The browser's languages, most wanted first (by `q`, then order), each
/// followed by its shorter forms: `es-ES,es;q=0.9,en;q=0.5` -> `es-ES, es,
/// en`. Tags that are no locale, `*` and `q=0` are left out.
pub(super) fn browser_locales(headers: &HeaderMap) -> Vec<String> {
    let mut wanted: Vec<(u16, String)> = headers
        .get_all(header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(MOST_LANGUAGES)
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1000), |q| {
                    q.trim()
                        .parse::<f32>()
                        .ok()
                        .map(|q| (q.clamp(0.0, 1.0) * 1000.0) as u16)
                })?;
            (quality > 0 && tag != "*").then(|| (quality, tag.to_owned()))
        })
        .collect();
    // Stable: equal weights keep the browser's order.
    wanted.sort_by_key(|(quality, _)| std::cmp::Reverse(*quality));
    let mut chain: Vec<String> = Vec::new();
    for (_, tag) in wanted {
        for t in locale::lookup(&tag) {
            if !chain.contains(&t) {
                chain.push(t);
            }
        }
    }
    chain
}

/// A notice about a link whose invoice is known: rendered now from its
/// page data `view` (the biller, the customer's language) with `kind`.
pub(super) fn notice_about(
    state: &AppState,
    mut view: serde_json::Value,
    kind: &'static str,
    code: StatusCode,
) -> Result<Response, AppError> {
    view["notice"] = kind.into();
    let html = state.templates.render("notice.html", &view)?;
    Ok((code, Html(html)).into_response())
}

/// Whether a browser sent a form from another site: refused. Browsers say
/// where a form came from in `Sec-Fetch-Site`, which decides alone when
/// present (only `same-origin` passes). Without it, `Origin` must be one of
/// `ours`. Our pages' `Referrer-Policy: no-referrer` makes browsers send
/// `Origin: null` with a form they post to themselves, so an `Origin`
/// alone cannot tell such a post from a cross-site one; `Sec-Fetch-Site`
/// can. A POST with neither header (no browser: a mail client's one-click
/// unsubscribe, a script) is let through: what it may do needs the token
/// in its URL or a session.
pub(super) fn from_another_site(headers: &HeaderMap, ours: &[&str]) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = value("sec-fetch-site") {
        return site != "same-origin";
    }
    match value("origin") {
        None => false,
        Some(origin) => {
            let origin = origin.trim_end_matches('/');
            !ours.iter().any(|o| origin.eq_ignore_ascii_case(o))
        }
    }
}

/// Every page's headers. A `Cache-Control` the handler set (the logo's) stays.
pub(super) fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// `GET /brand/{biller_id}/logo`: the biller's `logo` file, cached for long
/// (the pages link it with its version).
pub(super) async fn logo(State(state): State<AppState>, Path(biller_id): Path<String>) -> Response {
    let Some(logo) = state.config.billers.get(&biller_id).and_then(|b| b.logo.as_ref()) else {
        return Notice::new("not_found").answer(StatusCode::NOT_FOUND, "Not found", "There is nothing here.");
    };
    (
        [
            (header::CONTENT_TYPE, logo.content_type),
            (header::CACHE_CONTROL, LOGO_CACHE),
        ],
        // Shares the bytes read at start rather than copying them.
        axum::body::Bytes::from_owner(logo.bytes.clone()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(value: &str) -> Vec<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, value.parse().unwrap());
        browser_locales(&headers)
    }

    #[test]
    fn the_browsers_languages_come_by_weight_then_order_with_their_shorter_forms() {
        assert_eq!(asking("es-ES,es;q=0.9,en;q=0.5"), ["es-ES", "es", "en"]);
        assert_eq!(asking("fr;q=0.4, pt-BR, de;q=0.8"), ["pt-BR", "pt", "de", "fr"]);
        assert_eq!(asking("de, en"), ["de", "en"]);
    }

    #[test]
    fn refused_wildcard_and_malformed_languages_are_left_out() {
        assert_eq!(asking("es;q=0, *, klingon-x-1;q=0.5, pt;q=abc, de"), ["de"]);
        assert!(browser_locales(&HeaderMap::new()).is_empty());
    }
}
