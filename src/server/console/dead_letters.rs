//! The dead letters page: the messages in `<queue>.dead` with their reason
//! and time, each with a form to send it back to the input queue (after
//! the config was fixed) or to discard it. The broker side is
//! [`crate::broker::dead_letters`]; browsing leaves every message in place.
//!
//! A biller sees the messages whose body names it as `biller_id`; the
//! admin sees them all, those no biller can be told from included.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::session::Session;
use super::signed_in_page;
use crate::broker::dead_letters::{self, Acted, Action, DeadLetter};
use crate::server::{AppError, AppState};

/// How many messages from the head of the queue the page lists and an
/// action looks through.
const LIMIT: usize = 200;
/// The most of a body the page shows.
const BODY_SHOWN: usize = 2000;

#[derive(Deserialize)]
pub(super) struct Done {
    done: Option<String>,
}

/// A dead letter's body as the console shows it: JSON pretty-printed (its
/// text as written, not `\u` escapes), the customer's name down to its
/// initials, and every email address and phone number masked.
fn shown_body(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut json) => {
            if let Some(name) = json.pointer_mut("/customer/name") {
                if let Some(masked) = name.as_str().map(super::mask::name) {
                    *name = Value::String(masked);
                }
            }
            serde_json::to_string_pretty(&json).unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    crate::redact::text(&text)
}

/// The biller a dead letter's body names, if it is JSON with a `biller_id`.
fn biller_of(letter: &DeadLetter) -> Option<String> {
    let body: Value = serde_json::from_slice(&letter.body).ok()?;
    body.get("biller_id")?.as_str().map(str::to_owned)
}

fn visible(session: &Session, letter: &DeadLetter) -> bool {
    match session.biller() {
        None => true,
        Some(own) => biller_of(letter).as_deref() == Some(own),
    }
}

/// `GET /console/dead-letters`.
pub(super) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(done): Query<Done>,
) -> Result<Response, AppError> {
    let browse = match dead_letters::browse(&state.config.broker, LIMIT).await {
        Ok(browse) => browse,
        Err(e) => {
            warn!(error = %e, "the console could not read the dead letters");
            return signed_in_page(
                &session,
                "dead_letters",
                "Dead letters",
                json!({"unavailable": "RabbitMQ could not be reached; try again in a minute."}),
            );
        }
    };
    let letters: Vec<Value> = browse
        .letters
        .iter()
        .filter(|l| visible(&session, l))
        .map(|l| {
            let body = shown_body(&l.body);
            let shown: String = body.chars().take(BODY_SHOWN).collect();
            json!({
                "id": l.id,
                "message_id": l.message_id,
                "reason": l.reason.as_deref().map(crate::redact::text),
                "at": l.at,
                "biller_id": biller_of(l),
                "body": shown,
                "cut": body.chars().count() > BODY_SHOWN,
            })
        })
        .collect();
    let notice = match done.done.as_deref() {
        Some("sent-back") => Some("The message was sent back to the input queue."),
        Some("discarded") => Some("The message was discarded."),
        Some("not-found") => Some("That message is no longer in the queue (someone may have handled it already)."),
        _ => None,
    };
    signed_in_page(
        &session,
        "dead_letters",
        "Dead letters",
        json!({
            "letters": letters,
            "queue": state.config.broker.dead_letter_queue(),
            "input": state.config.broker.queue,
            "total": browse.total,
            "more": browse.total as usize > browse.letters.len(),
            "limit": LIMIT,
            "notice": notice,
        }),
    )
}

/// `POST /console/dead-letters/{id}/send-back`.
pub(super) async fn send_back(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    act(&state, &session, &id, Action::SendBack, &headers, &body).await
}

/// `POST /console/dead-letters/{id}/discard`.
pub(super) async fn discard(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    act(&state, &session, &id, Action::Discard, &headers, &body).await
}

async fn act(
    state: &AppState,
    session: &Session,
    id: &str,
    action: Action,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    if let Some(refused) = session.refuse_form(state, headers, body) {
        return Ok(refused);
    }
    let acted = dead_letters::act(&state.config.broker, id, action, LIMIT, |l| visible(session, l))
        .await
        .map_err(|e| AppError(format!("handling a dead letter failed (it stays in the queue): {e}")))?;
    let done = match acted {
        Acted::SentBack => "sent-back",
        Acted::Discarded => "discarded",
        Acted::NotFound => "not-found",
    };
    info!(id, ?action, ?acted, who = ?session.caller, "console: dead letter");
    Ok(Redirect::to(&format!("/console/dead-letters?done={done}")).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dead_letter_shows_no_name_email_or_number_in_clear() {
        let body = "{\"biller_id\":\"zeta\",\"customer\":{\"name\":\"Mar\\u00eda L\\u00f3pez\",\
                    \"email\":\"maria@example.com\",\"phone\":\"+5215512345678\"}}";
        let shown = super::shown_body(body.as_bytes());
        assert!(shown.contains("\"M••• L•••\""), "{shown}");
        for personal in ["María", "López", "maria@example.com", "5512345678"] {
            assert!(!shown.contains(personal), "{personal} in {shown}");
        }
        assert!(shown.contains("\"zeta\""), "{shown}");
        // Not JSON: emails and numbers are masked all the same.
        let shown = super::shown_body(b"not json maria@example.com +5215512345678");
        assert_eq!(shown, "not json m***m +***8");
    }
}
