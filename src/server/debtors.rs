//! What a customer decides about their messages (docs/debtors.md):
//! `POST /p/{token}/preferences` (the pay page's "remind me by" form) and
//! the email unsubscribe, `GET /u/{token}` (a page with a button: mail
//! scanners follow GETs, so a GET changes nothing) and `POST /u/{token}`
//! (RFC 8058 one-click, or that button).
//!
//! The token is the credential: 128 random bits that only the message's
//! recipient has. The preferences form also refuses a browser's
//! cross-site POST (an `Origin` other than `public_base_url`'s, or
//! `Sec-Fetch-Site: cross-site`), so another site cannot make a visitor's
//! browser change them; the unsubscribe cannot, since mailbox providers
//! post it from their own servers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{json, Value};
use tracing::info;

use super::pages::{notice_about, Notice};
use super::paypage::{erased, gone, lookup, not_found, not_handled, page_view, see_other, shown, LinkState};
use super::{AppError, AppState};
use crate::domain::debtor::{Profile, Reply};
use crate::domain::ChannelName;
use crate::events::{Event, EventName};
use crate::invoice::Invoice;
use crate::paylink;
use crate::router;

/// The channels the pay page offers a customer: those the invoice has a
/// contact for and payrelay is configured to send on, in the order their
/// messages go now (stored choice, else the invoice's
/// `preferred_channels`, else routing), then the rest; and which they
/// stopped.
pub(super) fn offered(state: &AppState, invoice: &Invoice, profile: &Profile) -> Vec<ChannelName> {
    let reachable =
        |c: &ChannelName| invoice.customer.contacts.address(*c).is_some() && state.config.channels.is_configured(*c);
    let plan = router::route_for(invoice, &state.config, state.clock.today(), None, profile);
    let mut order: Vec<ChannelName> = Vec::new();
    let mut add = |c: ChannelName| {
        if reachable(&c) && !order.contains(&c) {
            order.push(c);
        }
    };
    plan.channels.iter().copied().for_each(&mut add);
    profile.preferred.iter().flatten().copied().for_each(&mut add);
    invoice.customer.preferred_channels.iter().copied().for_each(&mut add);
    ChannelName::ALL.into_iter().for_each(&mut add);
    order
}

/// The pay page's "remind me by" form, as template data: `slots` (one
/// select per place, each with every channel and the current one
/// selected), `stops` (a checkbox per channel), and where it posts.
pub(super) fn form_view(token: &str, offered: &[ChannelName], stopped: &[ChannelName]) -> Value {
    let slots: Vec<Value> = offered
        .iter()
        .enumerate()
        .map(|(i, current)| {
            let options: Vec<Value> = offered
                .iter()
                .map(|c| json!({"name": c.as_str(), "selected": c == current}))
                .collect();
            json!({"position": i + 1, "options": options})
        })
        .collect();
    let stops: Vec<Value> = offered
        .iter()
        .map(|c| json!({"name": c.as_str(), "stopped": stopped.contains(c)}))
        .collect();
    json!({
        "action": format!("/p/{token}/preferences"),
        "slots": slots,
        "stops": stops,
        "show": !offered.is_empty(),
    })
}

/// A browser's POST from another site ([`super::pages::from_another_site`]):
/// our pages are served at `public_base_url`.
fn cross_site(state: &AppState, headers: &HeaderMap) -> bool {
    let ours = state.config.http.public_base_url.origin().ascii_serialization();
    super::pages::from_another_site(headers, &[&ours])
}

/// The form's fields: `channels` in order, `stop` (repeated). `Err` names
/// a value that is no channel.
fn read_form(body: &[u8]) -> Result<(Vec<ChannelName>, Vec<ChannelName>), String> {
    let mut channels = Vec::new();
    let mut stops = Vec::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        let list = match name.as_ref() {
            "channels" => &mut channels,
            "stop" => &mut stops,
            _ => continue,
        };
        let channel: ChannelName = value
            .trim()
            .parse()
            .map_err(|_| value.chars().take(40).collect::<String>())?;
        if !list.contains(&channel) {
            list.push(channel);
        }
    }
    Ok((channels, stops))
}

/// `POST /p/{token}/preferences`: stores the customer's order and stops
/// for the biller, with `customer.preferences_changed`, and goes back to
/// the pay page, which says it was saved.
pub(super) async fn preferences(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if cross_site(&state, &headers) {
        info!("preferences posted from another site; refused");
        return Ok(Notice::new("forbidden").answer(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This form can only be sent from its own page.",
        ));
    }
    let record = match lookup(&state, &token).await? {
        LinkState::Unknown => return Ok(not_found()),
        LinkState::Gone(r, ended) => return gone(&state, shown(&r), ended),
        LinkState::Erased(r) => return erased(&state, &r),
        LinkState::Open(r) | LinkState::Paid(r) => r,
    };
    let invoice = shown(&record);
    let Ok((chosen, stops)) = read_form(&body) else {
        let Some(biller) = state.config.billers.get(&invoice.key.biller_id) else {
            return Ok(not_handled(invoice));
        };
        let mut view = page_view(&state, invoice, biller, "");
        view["back_path"] = format!("/p/{token}").into();
        return notice_about(&state, view, "bad_form", StatusCode::BAD_REQUEST);
    };
    let key = &invoice.key;
    let customer = invoice.customer_key();
    let profile = state
        .store
        .debtor(&key.biller_id, &customer, &crate::store::hashed_contacts(invoice))
        .await?;
    let offered = offered(&state, invoice, &profile);
    let mut order: Vec<ChannelName> = chosen.into_iter().filter(|c| offered.contains(c)).collect();
    let rest: Vec<ChannelName> = offered.iter().copied().filter(|c| !order.contains(c)).collect();
    order.extend(rest);
    let stopped: Vec<ChannelName> = stops.into_iter().filter(|c| offered.contains(c)).collect();
    let names = |list: &[ChannelName]| match list {
        [] => "none".to_owned(),
        list => list.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
    };
    let event = Event::about(EventName::PreferencesChanged, key, &record.correlation)
        .customer_id(invoice.customer.id.clone())
        .detail(format!(
            "the customer chose on the pay page: remind by {}; stopped: {}",
            names(&order),
            names(&stopped)
        ))
        .metadata(invoice.metadata.clone());
    state
        .store
        .set_preferences(&key.biller_id, &customer, &order, &stopped, &event)
        .await?;
    state.outbox_signal.notify_one();
    info!(%key, "customer preferences saved");
    Ok(see_other(&format!("/p/{token}?saved=1")))
}

/// `GET /u/{token}`: the unsubscribe page, with a button that posts. Changes nothing.
pub(super) async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    unsubscribe_answer(&state, &token, false).await
}

/// `POST /u/{token}` (one-click `List-Unsubscribe=One-Click`, or the
/// page's button): no more email to that address from this biller. Works
/// for any link ever sent, paid or expired: an unsubscribe must always work.
pub(super) async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    unsubscribe_answer(&state, &token, true).await
}

async fn unsubscribe_answer(state: &AppState, token: &str, act: bool) -> Result<Response, AppError> {
    if !paylink::is_well_formed(token) {
        return Ok(not_found());
    }
    let Some(record) = state.store.paylink(&paylink::token_hash(token)).await? else {
        return Ok(not_found());
    };
    // An erased customer's address is gone, and nothing more is sent to it.
    if record.erased {
        return erased(state, &record);
    }
    // The address the email went to: the link's own revision's.
    let invoice = &record.invoice;
    if act {
        let why = "the customer unsubscribed from email (List-Unsubscribe)";
        let changed = state
            .dispatcher
            .suppress_invoice_address(invoice, ChannelName::Email, Reply::Stop, why)
            .await?;
        info!(key = %record.key, changed, "email unsubscribe");
    }
    let Some(biller) = state.config.billers.get(&record.key.biller_id) else {
        if act {
            return Ok(
                Notice::in_locale("unsubscribed", invoice.customer.locale.as_deref()).answer(
                    StatusCode::OK,
                    "Unsubscribe",
                    "You will receive no more emails from this sender.",
                ),
            );
        }
        return Ok(not_handled(invoice));
    };
    let pay_url = crate::dispatch::pay_url(&state.config, token);
    let mut view = page_view(state, invoice, biller, &pay_url);
    view["unsubscribed"] = act.into();
    view["unsubscribe_path"] = format!("/u/{token}").into();
    let html = state.templates.render("unsubscribe.html", &view)?;
    Ok(Html(html).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_channels_in_order_once_each_and_refuses_unknown_names() {
        let (order, stops) = read_form(b"channels=sms&channels=email&channels=sms&stop=whatsapp").unwrap();
        assert_eq!(order, [ChannelName::Sms, ChannelName::Email]);
        assert_eq!(stops, [ChannelName::Whatsapp]);
        assert_eq!(read_form(b"channels=pigeon").unwrap_err(), "pigeon");
        assert_eq!(read_form(b"other=1").unwrap(), (vec![], vec![]));
    }

    #[test]
    fn the_form_view_selects_the_current_channel_in_each_place() {
        let view = form_view("T", &[ChannelName::Sms, ChannelName::Email], &[ChannelName::Email]);
        assert_eq!(view["action"], "/p/T/preferences");
        assert_eq!(view["slots"][0]["options"][0], json!({"name": "sms", "selected": true}));
        assert_eq!(
            view["slots"][1]["options"][1],
            json!({"name": "email", "selected": true})
        );
        assert_eq!(view["stops"][1], json!({"name": "email", "stopped": true}));
    }
}
