//! `GET /p/{token}` and `GET /p/{token}/pay`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tracing::info;

use super::{message_page, AppError, AppState};
use crate::domain::Status;
use crate::events::Event;
use crate::paylink;
use crate::render;
use crate::store::PaylinkRecord;

/// What a link may still do.
enum LinkState {
    Open(Box<PaylinkRecord>),
    Paid(Box<PaylinkRecord>),
    /// 410, with the words to show.
    Gone(&'static str),
    Unknown,
}

async fn lookup(state: &AppState, token: &str) -> Result<LinkState, AppError> {
    if !paylink::is_well_formed(token) {
        return Ok(LinkState::Unknown);
    }
    let Some(record) = state.store.paylink(&paylink::token_hash(token)).await? else {
        return Ok(LinkState::Unknown);
    };
    // Expiry before payment: paying an invoice must not bring its expired
    // links back to life.
    Ok(match record.status {
        Status::Cancelled => LinkState::Gone("This payment request was cancelled by the sender."),
        Status::Superseded => LinkState::Gone("This payment request was replaced by a newer request."),
        _ if record.expires_at_ms <= state.clock.now_ms() => LinkState::Gone("This payment link has expired."),
        Status::Paid => LinkState::Paid(Box::new(record)),
        Status::Accepted | Status::Sent | Status::Exhausted => LinkState::Open(Box::new(record)),
    })
}

fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Link not found",
        "This payment link does not exist. Please check that you copied it completely.",
    )
}

fn gone(text: &str) -> Response {
    message_page(StatusCode::GONE, "This link is no longer valid", text)
}

pub(super) async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, AppError> {
    let (record, status) = match lookup(&state, &token).await? {
        LinkState::Unknown => return Ok(not_found()),
        LinkState::Gone(text) => return Ok(gone(text)),
        LinkState::Open(r) => (r, "open"),
        LinkState::Paid(r) => (r, "paid"),
    };
    let click =
        Event::clicked(&record.key, &record.correlation, record.channel).metadata(record.invoice.metadata.clone());
    let clicks = state.store.record_click(&paylink::token_hash(&token), &click).await?;
    state.metrics.click();
    if clicks == 1 {
        state.outbox_signal.notify_one();
    }
    info!(key = %record.key, channel = %record.channel, clicks, "pay page opened");

    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        return Ok(gone("This payment request is no longer handled here."));
    };
    let pay_url = crate::dispatch::pay_url(&state.config, &token);
    let mut view = render::view(&record.invoice, &record.key.biller_id, biller, &pay_url);
    view["status"] = status.into();
    view["checkout_path"] = format!("/p/{token}/pay").into();
    let html = state.templates.render("paypage.html", &view)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response())
}

pub(super) async fn pay(State(state): State<AppState>, Path(token): Path<String>) -> Result<Response, AppError> {
    let record = match lookup(&state, &token).await? {
        LinkState::Unknown => return Ok(not_found()),
        LinkState::Gone(text) => return Ok(gone(text)),
        // Never send a consumer to checkout for a closed invoice.
        LinkState::Paid(_) => return Ok(see_other(&format!("/p/{token}"))),
        LinkState::Open(r) => r,
    };
    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        return Ok(gone("This payment request is no longer handled here."));
    };
    let amount = &record.invoice.amount;
    let url = paylink::checkout_url(
        &biller.checkout_url,
        &record.key,
        &amount.text,
        amount.minor,
        &amount.currency,
        &token,
    );
    Ok(see_other(&url))
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

/// Pay pages show invoice data and carry a live token in their URL: no site
/// may frame them, they load nothing from elsewhere (styles are inline), and
/// the redirect to checkout leaks no `Referer` with the token.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every answer under `/p/`, the 404, 410 and 503 pages included.
pub(super) async fn security_headers(mut response: Response) -> Response {
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
