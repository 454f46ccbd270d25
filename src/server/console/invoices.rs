//! The invoices page: search by invoice id or customer id among the
//! billers the session sees, and one invoice's timeline and journey steps
//! (the admin API's view of it) with its customer masked.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::Session;
use super::{mask, not_found, signed_in_page, visible_billers};
use crate::events::rfc3339_ms;
use crate::invoice::{customer_key_of_id, Invoice};
use crate::server::api::InvoiceView;
use crate::server::{AppError, AppState};
use crate::store::FoundInvoice;

/// What a path segment escapes: all but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Most invoices a search lists.
const SEARCH_LIMIT: u32 = 50;
/// The longest search text read: ids are at most this long.
const MAX_QUERY: usize = 128;

#[derive(Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /console/invoices?q=`: the invoices whose id, or whose customer's
/// id, is `q`, newest first.
pub(super) async fn search(
    State(state): State<AppState>,
    session: Session,
    Query(search): Query<Search>,
) -> Result<Response, AppError> {
    let q: String = search.q.trim().chars().take(MAX_QUERY).collect();
    let mut found: Vec<(String, FoundInvoice)> = Vec::new();
    if !q.is_empty() {
        for biller in visible_billers(&state, &session) {
            let customer = customer_key_of_id(&biller, &q);
            for invoice in state.store.find_invoices(&biller, &q, &customer, SEARCH_LIMIT).await? {
                found.push((biller.clone(), invoice));
            }
        }
    }
    found.sort_by_key(|(_, f)| std::cmp::Reverse(f.received_ms));
    found.truncate(SEARCH_LIMIT as usize);
    let rows: Vec<Value> = found
        .iter()
        .map(|(biller, f)| {
            let mut row = summary(&f.invoice, f.erased);
            row["href"] = link(biller, &f.invoice.key.invoice_id).into();
            row["status"] = f.status.as_str().into();
            row["received"] = rfc3339_ms(f.received_ms).into();
            row
        })
        .collect();
    signed_in_page(
        &session,
        "invoices",
        "Invoices",
        json!({"q": q, "searched": !q.is_empty(), "rows": rows, "limit": SEARCH_LIMIT}),
    )
}

/// `GET /console/invoices/{biller_id}/{invoice_id}`: what happened to the
/// invoice, oldest first, and its steps; 404 for another biller's.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path((biller_id, invoice_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    if !session.caller.sees(&biller_id) {
        return not_found(&session, "invoice");
    }
    let Some(history) = state.store.history(&biller_id, &invoice_id).await? else {
        return not_found(&session, "invoice");
    };
    let steps = state.store.steps(&biller_id, &invoice_id).await?;
    let view = serde_json::to_value(InvoiceView::new(&history, &steps)).map_err(|e| AppError(e.to_string()))?;
    let newest = match history.received {
        true => state.store.invoice(&history.key).await?,
        false => None,
    };
    let invoice = newest.as_ref().map(|stored| summary(&stored.invoice, false));
    signed_in_page(
        &session,
        "invoice",
        &format!("Invoice {invoice_id}"),
        json!({"status": view, "invoice": invoice}),
    )
}

/// The console's link to an invoice.
fn link(biller_id: &str, invoice_id: &str) -> String {
    format!(
        "/console/invoices/{biller_id}/{}",
        utf8_percent_encode(invoice_id, SEGMENT)
    )
}

/// An invoice as the pages list it, its customer masked.
fn summary(invoice: &Invoice, erased: bool) -> Value {
    let contacts: Vec<Value> = mask::contacts(&invoice.customer.contacts)
        .into_iter()
        .map(|(channel, shown)| json!({"channel": channel, "shown": shown}))
        .collect();
    json!({
        "biller_id": invoice.key.biller_id,
        "invoice_id": invoice.key.invoice_id,
        "revision": invoice.key.revision,
        "amount": format!("{} {}", invoice.amount.text, invoice.amount.currency),
        "due_date": invoice.due_date.to_string(),
        "customer_id": invoice.customer.id,
        "customer": mask::name(&invoice.customer.name),
        "contacts": contacts,
        "erased": erased,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_invoice_id_is_one_path_segment_in_its_link() {
        assert_eq!(super::link("acme", "INV-7/b a"), "/console/invoices/acme/INV-7%2Fb%20a");
    }
}
