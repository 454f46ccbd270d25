//! `GET /p/{token}` and `GET /p/{token}/pay`. The page also carries the
//! customer's "remind me by" form, which [`super::debtors`] receives.
//!
//! A link whose invoice has a newer revision is not a dead end: its page
//! shows the newest revision (amount, due date, status) with a notice that
//! the request was updated, and its checkout is the newest revision's. The
//! click is still the link's own, so it counts for the channel that sent it.
//! Whether a request is a person's click or a preview is [`people`]'s call.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use tracing::info;

use super::pages::Notice;
use super::people::{self, Visitor};
use super::{AppError, AppState};
use crate::config::BillerConfig;
use crate::domain::Status;
use crate::events::Event;
use crate::invoice::Invoice;
use crate::paylink;
use crate::render;
use crate::store::{CombinedLinkRecord, PaylinkRecord};

/// What a link may still do.
pub(super) enum LinkState {
    Open(Box<PaylinkRecord>),
    Paid(Box<PaylinkRecord>),
    /// 410: the customer's personal data was erased; the page names the
    /// biller, in the customer's language, and nothing of the invoice.
    Erased(Box<PaylinkRecord>),
    /// 410: the link may no longer be used, and why; the page names the
    /// biller and what to do, in the customer's language.
    Gone(Box<PaylinkRecord>, Ended),
    Unknown,
}

/// Why a link of a known invoice answers 410 (the gone page's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    Expired,
    Cancelled,
    /// The invoice was superseded without a newer revision for this link
    /// to show.
    Replaced,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Expired => "expired",
            Ended::Cancelled => "cancelled",
            Ended::Replaced => "replaced",
        }
    }
}

pub(super) async fn lookup(state: &AppState, token: &str) -> Result<LinkState, AppError> {
    if !paylink::is_well_formed(token) {
        return Ok(LinkState::Unknown);
    }
    let Some(record) = state.store.paylink(&paylink::token_hash(token)).await? else {
        return Ok(LinkState::Unknown);
    };
    // The newest revision's status decides, except that the link's own
    // expiry still ends it. Expiry before payment: paying an invoice must
    // not bring its expired links back to life.
    if record.erased {
        return Ok(LinkState::Erased(Box::new(record)));
    }
    let status = record.newest.as_ref().map_or(record.status, |newest| newest.status);
    let record = Box::new(record);
    Ok(match status {
        Status::Cancelled => LinkState::Gone(record, Ended::Cancelled),
        Status::Superseded => LinkState::Gone(record, Ended::Replaced),
        _ if record.expires_at_ms <= state.clock.now_ms() => LinkState::Gone(record, Ended::Expired),
        Status::Paid => LinkState::Paid(record),
        Status::Accepted | Status::Sent | Status::Exhausted => LinkState::Open(record),
    })
}

/// The revision a link's page shows and its checkout charges: the newest.
pub(super) fn shown(record: &PaylinkRecord) -> &Invoice {
    record.newest.as_ref().map_or(&record.invoice, |newest| &newest.invoice)
}

/// Counts a person's open of the link, on the link's own attempt: its
/// channel earned it, whichever revision the page shows. A preview is
/// only counted in the metrics.
async fn count(state: &AppState, token: &str, record: &PaylinkRecord, visitor: Visitor) -> Result<(), AppError> {
    if let Visitor::Preview(previewer) = visitor {
        state.metrics.preview(record.channel, previewer);
        info!(key = %record.key, channel = %record.channel, previewer, "pay page previewed");
        return Ok(());
    }
    let mut click =
        Event::clicked(&record.key, &record.correlation, record.channel).metadata(record.invoice.metadata.clone());
    if let Some(newest) = &record.newest {
        click = click.detail(format!(
            "first open of the pay link; it showed revision {}, which replaced this one",
            newest.invoice.key.revision
        ));
    }
    let clicks = state.store.record_click(&paylink::token_hash(token), &click).await?;
    state.metrics.click();
    if clicks == 1 {
        state.outbox_signal.notify_one();
    }
    info!(key = %record.key, channel = %record.channel, clicks, "pay page opened");
    Ok(())
}

/// The template data of a page about `invoice`, as of the customer's
/// date (in their time zone), so the due date is marked overdue on theirs.
pub(super) fn page_view(state: &AppState, invoice: &Invoice, biller: &BillerConfig, pay_url: &str) -> Value {
    let today = crate::dispatch::local_today(state.clock.as_ref(), invoice, biller);
    let first = render::Message::first_request();
    render::View::new(invoice, &invoice.key.biller_id, biller, pay_url, &first, today).data
}

/// 404: no invoice has this link; in the browser's language.
pub(super) fn not_found() -> Response {
    Notice::new("not_found").answer(
        StatusCode::NOT_FOUND,
        "Link not found",
        "This payment link does not exist. Please check that you copied it completely.",
    )
}

/// 410 for a link whose biller is no longer configured here: nothing to
/// name, so a notice in the customer's language.
pub(super) fn not_handled(invoice: &Invoice) -> Response {
    Notice::in_locale("not_handled", invoice.customer.locale.as_deref()).answer(
        StatusCode::GONE,
        "This link is no longer valid",
        "This payment request is no longer handled here. Please contact the sender.",
    )
}

/// The 410 of a known invoice's link (expired, cancelled, replaced): the
/// gone page, in the customer's language, naming the biller, its support
/// line and what to do next. No click is counted.
pub(super) fn gone(state: &AppState, invoice: &Invoice, ended: Ended) -> Result<Response, AppError> {
    let Some(biller) = state.config.billers.get(&invoice.key.biller_id) else {
        return Ok(not_handled(invoice));
    };
    let mut view = page_view(state, invoice, biller, "");
    view["reason"] = ended.as_str().into();
    let html = state.templates.render("gone.html", &view)?;
    Ok((StatusCode::GONE, Html(html)).into_response())
}

/// The 410 of an erased customer's link, in their language (the locale
/// stays with the erased invoice), else the biller's default; no click is
/// counted and nothing of the invoice is shown.
pub(super) fn erased(state: &AppState, record: &PaylinkRecord) -> Result<Response, AppError> {
    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        return Ok(not_handled(&record.invoice));
    };
    let view = page_view(state, &record.invoice, biller, "");
    let html = state.templates.render("erased.html", &view)?;
    Ok((StatusCode::GONE, Html(html)).into_response())
}

/// The page. `HEAD` (which axum answers with this handler, without the
/// body) and link previewers get it too, and count as previews.
pub(super) async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (record, status) = match lookup(&state, &token).await? {
        LinkState::Unknown => return show_combined(&state, &token, &method, &headers).await,
        LinkState::Gone(r, ended) => return gone(&state, shown(&r), ended),
        LinkState::Erased(r) => return erased(&state, &r),
        LinkState::Open(r) => (r, "open"),
        LinkState::Paid(r) => (r, "paid"),
    };
    count(&state, &token, &record, people::visitor(&method, &headers)).await?;

    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        return Ok(not_handled(shown(&record)));
    };
    let pay_url = crate::dispatch::pay_url(&state.config, &token);
    let mut view = page_view(&state, shown(&record), biller, &pay_url);
    view["status"] = status.into();
    view["updated"] = record.newest.is_some().into();
    view["checkout_path"] = format!("/p/{token}/pay").into();
    let invoice = shown(&record);
    let profile = state
        .store
        .debtor(
            &invoice.key.biller_id,
            &invoice.customer_key(),
            &crate::store::hashed_contacts(invoice),
        )
        .await?;
    let offered = super::debtors::offered(&state, invoice, &profile);
    view["preferences"] = super::debtors::form_view(&token, &offered, &profile.stopped);
    view["saved"] = query.is_some_and(|q| q.split('&').any(|pair| pair == "saved=1")).into();
    let html = state.templates.render("paypage.html", &view)?;
    Ok(Html(html).into_response())
}

/// The pay button: to the biller's checkout for the newest revision, with
/// the clicked link's token. A `GET` here is a person pressing it, whatever
/// the `User-Agent` says (previewers fetch the link they were given, not
/// the page's button); a `HEAD` counts nothing.
pub(super) async fn pay(
    State(state): State<AppState>,
    Path(token): Path<String>,
    method: Method,
) -> Result<Response, AppError> {
    let record = match lookup(&state, &token).await? {
        LinkState::Unknown => return pay_combined(&state, &token, &method).await,
        LinkState::Gone(r, ended) => return gone(&state, shown(&r), ended),
        LinkState::Erased(r) => return erased(&state, &r),
        // Never send a consumer to checkout for a closed invoice; the page
        // it goes back to counts the open by its own rules.
        LinkState::Paid(_) => return Ok(see_other(&format!("/p/{token}"))),
        LinkState::Open(r) => r,
    };
    let visitor = if method == Method::HEAD {
        Visitor::Preview("head")
    } else {
        Visitor::Person
    };
    count(&state, &token, &record, visitor).await?;
    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        return Ok(not_handled(shown(&record)));
    };
    let invoice = shown(&record);
    let amount = &invoice.amount;
    let url = paylink::checkout_url(
        &biller.checkout_url,
        &invoice.key,
        &amount.text,
        amount.minor,
        &amount.currency,
        &token,
    );
    Ok(see_other(&url))
}

/// Where a combined message's link stands: the invoices it listed that
/// are still open (or, when none is, those paid), by the same rules as a
/// single link's.
enum CombinedState {
    Open(CombinedLinkRecord),
    Paid(CombinedLinkRecord),
    /// 410, on the page of the first invoice listed.
    Gone(CombinedLinkRecord, Ended),
    Unknown,
}

async fn lookup_combined(state: &AppState, token: &str) -> Result<CombinedState, AppError> {
    if !paylink::is_well_formed(token) {
        return Ok(CombinedState::Unknown);
    }
    let Some(mut record) = state.store.combined_link(&paylink::token_hash(token)).await? else {
        return Ok(CombinedState::Unknown);
    };
    let open = |s: Status| matches!(s, Status::Accepted | Status::Sent | Status::Exhausted);
    let any_open = record.invoices.iter().any(|i| open(i.status));
    let any_paid = record.invoices.iter().any(|i| i.status == Status::Paid);
    if !any_open && !any_paid {
        let replaced = record.invoices.iter().all(|i| i.status == Status::Superseded);
        let ended = if replaced { Ended::Replaced } else { Ended::Cancelled };
        return Ok(CombinedState::Gone(record, ended));
    }
    if record.expires_at_ms <= state.clock.now_ms() {
        return Ok(CombinedState::Gone(record, Ended::Expired));
    }
    // An invoice paid, cancelled or replaced since leaves the list.
    let keep = if any_open { open } else { |s: Status| s == Status::Paid };
    record.invoices.retain(|i| keep(i.status));
    Ok(match any_open {
        true => CombinedState::Open(record),
        false => CombinedState::Paid(record),
    })
}

/// Counts a person's visit as a click on every invoice the page lists (the
/// first one queues each invoice's `invoice.clicked`), so no listed
/// invoice escalates to its next channel as if unread.
async fn count_combined(
    state: &AppState,
    token: &str,
    record: &CombinedLinkRecord,
    visitor: Visitor,
) -> Result<(), AppError> {
    if let Visitor::Preview(previewer) = visitor {
        state.metrics.preview(record.channel, previewer);
        info!(group = %record.group_id, channel = %record.channel, previewer, "combined pay page previewed");
        return Ok(());
    }
    let hash = paylink::token_hash(token);
    let mut first = false;
    for listed in &record.invoices {
        let click = Event::clicked(&listed.key, &listed.correlation, record.channel)
            .metadata(listed.invoice.metadata.clone())
            .detail("opened the pay link of a message that listed several invoices");
        let own = crate::store::member_link_hash(&hash, &listed.key.invoice_id);
        first |= state.store.record_click(&own, &click).await? == 1;
    }
    state.metrics.click();
    if first {
        state.outbox_signal.notify_one();
    }
    info!(group = %record.group_id, channel = %record.channel, invoices = record.invoices.len(), "combined pay page opened");
    Ok(())
}

/// `GET /p/{token}` of a combined message: its open invoices and their total.
async fn show_combined(
    state: &AppState,
    token: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let (record, status) = match lookup_combined(state, token).await? {
        CombinedState::Unknown => return Ok(not_found()),
        CombinedState::Gone(r, ended) => return gone_combined(state, &r, ended),
        CombinedState::Open(r) => (r, "open"),
        CombinedState::Paid(r) => (r, "paid"),
    };
    count_combined(state, token, &record, people::visitor(method, headers)).await?;
    let invoices: Vec<&Invoice> = record.invoices.iter().map(|i| &i.invoice).collect();
    let Some(first) = invoices.first().copied() else {
        return Ok(not_found());
    };
    let Some(biller) = state.config.billers.get(&first.key.biller_id) else {
        return Ok(not_handled(first));
    };
    let pay_url = crate::dispatch::pay_url(&state.config, token);
    let mut view = page_view(state, first, biller, &pay_url);
    let locale = view["locale"].as_str().unwrap_or(render::locale::FALLBACK).to_owned();
    if let Err(e) = render::add_combined(&mut view, &invoices, &locale) {
        return Err(AppError(format!(
            "a combined pay link lists invoices that cannot be added up: {e}"
        )));
    }
    view["combined"] = true.into();
    view["status"] = status.into();
    view["checkout_path"] = format!("/p/{token}/pay").into();
    let html = state.templates.render("paypage.html", &view)?;
    Ok(Html(html).into_response())
}

/// The 410 of a combined message's link, in its first invoice's customer's
/// language.
fn gone_combined(state: &AppState, record: &CombinedLinkRecord, ended: Ended) -> Result<Response, AppError> {
    match record.invoices.first() {
        Some(first) => gone(state, &first.invoice, ended),
        None => Ok(not_found()),
    }
}

/// `GET /p/{token}/pay` of a combined message: checkout for the open
/// invoices at once, `{invoice_id}` their ids joined by commas and
/// `{amount}` / `{amount_minor}` their total.
async fn pay_combined(state: &AppState, token: &str, method: &Method) -> Result<Response, AppError> {
    let record = match lookup_combined(state, token).await? {
        CombinedState::Unknown => return Ok(not_found()),
        CombinedState::Gone(r, ended) => return gone_combined(state, &r, ended),
        CombinedState::Paid(_) => return Ok(see_other(&format!("/p/{token}"))),
        CombinedState::Open(r) => r,
    };
    let visitor = if *method == Method::HEAD {
        Visitor::Preview("head")
    } else {
        Visitor::Person
    };
    count_combined(state, token, &record, visitor).await?;
    let invoices: Vec<&Invoice> = record.invoices.iter().map(|i| &i.invoice).collect();
    let Some(first) = invoices.first().copied() else {
        return Ok(not_found());
    };
    let Some(biller) = state.config.billers.get(&first.key.biller_id) else {
        return Ok(not_handled(first));
    };
    let total = match render::total_of(&invoices) {
        Ok(total) => total,
        Err(e) => {
            return Err(AppError(format!(
                "a combined pay link lists invoices that cannot be added up: {e}"
            )))
        }
    };
    let ids: Vec<&str> = invoices.iter().map(|i| i.key.invoice_id.as_str()).collect();
    let key = crate::domain::InvoiceKey {
        biller_id: first.key.biller_id.clone(),
        invoice_id: ids.join(","),
        revision: first.key.revision,
    };
    let url = paylink::checkout_url(
        &biller.checkout_url,
        &key,
        &total.text,
        total.minor,
        &total.currency,
        token,
    );
    Ok(see_other(&url))
}

pub(super) fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::BillerConfig;
    use crate::render::{view, Templates};

    /// The built-in page of a sample invoice for a customer with `locale`.
    fn page(templates: &Templates, locale: &str, updated: Option<bool>, status: &str) -> String {
        let body = json!({"kind": "payment_request", "invoice_id": "INV-7", "biller_id": "acme", "revision": 2,
            "amount": "1234.50", "currency": "EUR", "due_date": "2026-12-01",
            "customer": {"name": "C", "email": "c@example.com", "locale": locale}});
        let Ok(crate::invoice::Message::PaymentRequest(invoice)) =
            crate::invoice::parse(body.to_string().as_bytes(), |_| true)
        else {
            panic!("the test invoice parses");
        };
        let biller = BillerConfig {
            name: "ACME".into(),
            ..BillerConfig::default()
        };
        let mut v = view(&invoice, "acme", &biller, "https://pay.example/p/T");
        v["status"] = json!(status);
        v["checkout_path"] = json!("/p/T/pay");
        if let Some(updated) = updated {
            v["updated"] = json!(updated);
        }
        templates.render("paypage.html", &v).unwrap()
    }

    #[test]
    fn an_older_links_page_says_in_its_language_that_the_request_was_updated() {
        let templates = Templates::load(None).unwrap();
        let cases = [
            ("en", "This payment request was updated"),
            ("es-MX", "Esta solicitud de pago se actualizó"),
            ("pt-BR", "Esta solicitação de pagamento foi atualizada"),
            ("de-DE", "Diese Zahlungsaufforderung wurde aktualisiert"),
        ];
        for (locale, notice) in cases {
            for status in ["open", "paid"] {
                let updated = page(&templates, locale, Some(true), status);
                assert!(updated.contains(notice), "{locale} {status}: {updated}");
                assert_eq!(updated.matches("class=\"updated\"").count(), 1, "{updated}");
            }
            for flag in [Some(false), None] {
                let current = page(&templates, locale, flag, "open");
                assert!(
                    !current.contains(notice) && !current.contains("class=\"updated\""),
                    "{locale}: {current}"
                );
            }
        }
    }
}
