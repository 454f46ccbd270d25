//! The web console at `/console` for operators and billers (docs/console.md):
//! the funnel, invoices with their timelines, the dead letters, and the
//! rules in force with a dry run of an edited `[routing]` section.
//!
//! One file per page; [`session`] signs visitors in and guards the forms,
//! [`mask`] hides customers' contacts.
//! The admin token sees every biller; a biller's token sees only its own,
//! and another biller's invoice or dead letter answers as if it did not
//! exist. Pages are HTML rendered on the server from the templates in
//! `templates/console/` (compiled in), work without JavaScript, load
//! nothing from elsewhere (CSS in the page, charts as inline SVG), and go
//! out with the pay pages' security headers.

mod dead_letters;
mod funnel;
mod invoices;
mod mask;
mod rules;
pub mod session;

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use handlebars::Handlebars;
use serde_json::{json, Value};

use super::{pages, AppError, AppState};
use session::Session;

/// Where a visitor signs in, and where signing in and out lead.
pub const HOME: &str = "/console";
/// The page a signed-in visitor starts on.
const START: &str = "/console/funnel";

/// The console's routes, under the pay pages' security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(HOME, get(home))
        .route("/console/sign-in", post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/funnel", get(funnel::show))
        .route("/console/invoices", get(invoices::search))
        .route("/console/invoices/{biller_id}/{invoice_id}", get(invoices::show))
        .route("/console/dead-letters", get(dead_letters::list))
        .route("/console/dead-letters/{id}/send-back", post(dead_letters::send_back))
        .route("/console/dead-letters/{id}/discard", post(dead_letters::discard))
        .route("/console/rules", get(rules::show))
        .route("/console/rules/dry-run", post(rules::dry_run))
        .layer(axum::middleware::map_response(|response: Response| async move {
            pages::security_headers(response)
        }))
}

/// `GET /console`: the sign-in form, or the first page when signed in.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    match session::current(&state, &headers) {
        Some(_) => Ok(Redirect::to(START).into_response()),
        None => session::sign_in_page(StatusCode::OK, None),
    }
}

/// The console's templates, compiled in: `layout` (a partial the pages
/// fill) and one per page. HTML-escaped like every `.html` template.
static TEMPLATES: LazyLock<Result<Handlebars<'static>, String>> = LazyLock::new(|| {
    let mut registry = Handlebars::new();
    for (name, text) in [
        ("layout", include_str!("../../../templates/console/layout.html.hbs")),
        ("sign_in", include_str!("../../../templates/console/sign_in.html.hbs")),
        ("funnel", include_str!("../../../templates/console/funnel.html.hbs")),
        ("invoices", include_str!("../../../templates/console/invoices.html.hbs")),
        ("invoice", include_str!("../../../templates/console/invoice.html.hbs")),
        (
            "dead_letters",
            include_str!("../../../templates/console/dead_letters.html.hbs"),
        ),
        ("rules", include_str!("../../../templates/console/rules.html.hbs")),
    ] {
        registry
            .register_template_string(name, text)
            .map_err(|e| format!("console template {name}: {e}"))?;
    }
    Ok(registry)
});

/// Renders page `template` with `title` and `data` (plus `session`'s view
/// when signed in, for the navigation and the forms' CSRF token).
fn render(template: &str, title: &str, session: Option<&Session>, mut data: Value) -> Result<String, AppError> {
    let registry = TEMPLATES.as_ref().map_err(|e| AppError(e.clone()))?;
    data["title"] = title.into();
    data["session"] = session.map_or(Value::Null, Session::view);
    registry
        .render(template, &data)
        .map_err(|e| AppError(format!("console template {template}: {e}")))
}

/// A page for a visitor who is not signed in.
fn page(code: StatusCode, template: &str, title: &str, data: Value) -> Result<Response, AppError> {
    Ok((code, Html(render(template, title, None, data)?)).into_response())
}

/// A page for a signed-in visitor.
fn signed_in_page(session: &Session, template: &str, title: &str, data: Value) -> Result<Response, AppError> {
    Ok(Html(render(template, title, Some(session), data)?).into_response())
}

/// The 404 of something the caller cannot see, or that does not exist.
fn not_found(session: &Session, what: &str) -> Result<Response, AppError> {
    let html = render(
        "invoice",
        "Not found",
        Some(session),
        json!({"missing": format!("No such {what} here.")}),
    )?;
    Ok((StatusCode::NOT_FOUND, Html(html)).into_response())
}

/// The billers a session sees, in id order.
fn visible_billers(state: &AppState, session: &Session) -> Vec<String> {
    state
        .config
        .billers
        .keys()
        .filter(|id| session.caller.sees(id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_console_template_compiles() {
        if let Err(e) = super::TEMPLATES.as_ref() {
            panic!("{e}");
        }
    }
}
