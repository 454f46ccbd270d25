//! The HTTP side: the pages consumers land on (the pay page, its answers,
//! the unsubscribe page, the biller's logo: see [`pages`]), the payments
//! and admin API, the console for operators and billers, provider status
//! webhooks, health, readiness and metrics.
//!
//! Two routers: the public one (pay pages, payments, webhooks, health) and
//! the operators' (metrics, invoices, figures, erasure, the console). With `[http]
//! admin_listen` each has its own listener; without it one listener serves
//! both ([`router`]).
//!
//! Errors are opaque to callers and logged in full for operators; a pay
//! link's answer never reveals anything personal about another invoice.

pub(crate) mod api;
pub mod auth;
mod console;
mod debtors;
mod listen;
mod pages;
mod paypage;
mod people;
mod stats;
pub mod throttle;
mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::render::Templates;
use crate::store::{Store, StoreError};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub templates: Arc<Templates>,
    pub metrics: Arc<Metrics>,
    pub outbox_signal: Arc<Notify>,
    /// Set by the broker supervisor while it is connected.
    pub broker_ready: Arc<AtomicBool>,
    /// Status webhooks hand provider reports to it.
    pub dispatcher: Arc<crate::dispatch::Dispatcher>,
    /// The service's time: pay pages expire by it.
    pub clock: Arc<dyn crate::domain::clock::Clock>,
    pub unknown_links: Arc<throttle::UnknownLinks>,
}

/// Every route on one listener: what serves when `[http] admin_listen` is
/// not set.
pub fn router(state: AppState) -> Router {
    limited(
        public_routes(&state).merge(admin_routes().with_state(state.clone())),
        &state,
    )
}

/// What `[http] listen` serves when `[http] admin_listen` is set: pay
/// pages, payment confirmations, provider webhooks, health and readiness.
/// The operators' routes answer 404 here.
pub fn public_router(state: AppState) -> Router {
    limited(public_routes(&state), &state)
}

/// What `[http] admin_listen` serves: the operators' routes, and health.
pub fn admin_router(state: AppState) -> Router {
    let admin = admin_routes()
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state.clone());
    limited(admin, &state)
}

/// The operators' routes: metrics, the invoice status, figures and
/// erasure API, and the console.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/invoices/{biller_id}/{invoice_id}", get(api::invoice))
        .route("/v1/customers/{biller_id}/{customer_id}", delete(api::erase_customer))
        .route("/v1/stats", get(stats::stats))
        .route("/metrics", get(metrics))
        .merge(console::routes())
}

fn public_routes(state: &AppState) -> Router {
    // Every channel's provider callbacks, under the path its adapter declares.
    let webhooks = Router::new()
        .route("/webhooks/{path}", get(webhooks::handshake).post(webhooks::receive))
        .with_state(webhooks::Hooks::new(state.clone()));
    let links = Router::new()
        .route("/p/{token}", get(paypage::show))
        .route("/p/{token}/pay", get(paypage::pay))
        .route("/p/{token}/preferences", post(debtors::preferences))
        .route("/u/{token}", get(debtors::unsubscribe_page).post(debtors::unsubscribe))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle::unknown_links,
        ));
    // The logo is no link: a 404 there counts as no guess.
    let pages = Router::new()
        .route("/brand/{biller_id}/logo", get(pages::logo))
        .merge(links)
        .layer(axum::middleware::from_fn_with_state(state.clone(), pages::layer));
    Router::new()
        .route("/v1/payments", post(api::payment))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(pages)
        .with_state(state.clone())
        .merge(webhooks)
}

/// The limits every listener applies: `[http] max_body_bytes` and
/// `[http] request_timeout`.
fn limited(router: Router, state: &AppState) -> Router {
    let http = &state.config.http;
    router
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(http.request_timeout, bounded))
}

/// Answers 408 to a request that takes longer than `[http] request_timeout`,
/// a client trickling its body included.
async fn bounded(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => message_page(
            StatusCode::REQUEST_TIMEOUT,
            "Request timed out",
            "The request took too long. Please try again.",
        ),
    }
}

/// Serves until `shutdown` is cancelled, then finishes open requests.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_router(listener, router(state.clone()), &state, shutdown).await
}

/// [`serve`] with one of the routers above (each listener caps its own
/// connections).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = listen::Limits {
        header_timeout: state.config.http.header_timeout,
        max_connections: state.config.http.max_connections,
    };
    listen::serve(listener, router, limits, shutdown).await
}

/// How long `/readyz` waits for the store to answer a ping. A store that
/// is locked or away would otherwise keep the probe waiting for as long as
/// the store's own limits allow (SQLite's busy timeout, the PostgreSQL
/// pool's acquire timeout: 10 s each), longer than probes wait; a store that
/// cannot answer `SELECT 1` within this bound cannot serve a pay page either.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` found: whether the broker connection is up, and how the
/// store answered (`ok`, or why not).
struct Readiness {
    broker: bool,
    store: &'static str,
}

async fn readiness(state: &AppState) -> Readiness {
    let broker = state.broker_ready.load(Ordering::SeqCst);
    let store = match tokio::time::timeout(READY_STORE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(_)) => "unavailable",
        Err(_) => "unavailable (no answer within 1 s)",
    };
    let store = if store == "ok" && state.metrics.store_write_failed() {
        "failing (it refused the last write)"
    } else {
        store
    };
    Readiness { broker, store }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let Readiness { broker, store } = readiness(&state).await;
    let store_ok = store == "ok";
    let body = format!(
        "broker: {}\nstore: {store}\n",
        if broker { "ok" } else { "unavailable" },
    );
    let code = if broker && store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

/// How long the store's counts read for one scrape serve the next ones:
/// two Prometheus servers scraping every 15 s cost one read.
const STORE_GAUGES_FOR: Duration = Duration::from_secs(10);
/// How long a scrape waits for those counts before it answers with the
/// last ones read.
const STORE_GAUGES_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics, with readiness checked now and the store's counts read
/// unless a scrape read them less than [`STORE_GAUGES_FOR`] ago.
async fn metrics(State(state): State<AppState>) -> Response {
    let counts = async {
        if state.metrics.store_gauges_fresh(STORE_GAUGES_FOR) {
            return;
        }
        match tokio::time::timeout(STORE_GAUGES_TIMEOUT, state.store.gauges()).await {
            Ok(Ok(gauges)) => state.metrics.set_store_gauges(&gauges),
            Ok(Err(e)) => {
                warn!(error = %e, "could not count the store's backlog and holds; /metrics shows the last counts")
            }
            Err(_) => warn!(
                timeout_ms = STORE_GAUGES_TIMEOUT.as_millis() as u64,
                "the store did not count its backlog and holds in time; /metrics shows the last counts"
            ),
        }
    };
    let (ready, ()) = tokio::join!(readiness(&state), counts);
    state.metrics.set_ready("broker", ready.broker);
    state.metrics.set_ready("store", ready.store == "ok");
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// An error a handler could not answer properly: logged in full, shown as
/// a plain 503 so the consumer can try again.
pub struct AppError(String);

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError(e.to_string())
    }
}

impl From<crate::render::RenderError> for AppError {
    fn from(e: crate::render::RenderError) -> Self {
        AppError(e.to_string())
    }
}

impl IntoResponse for AppError {
    /// On a page route, the page is shown in the browser's language.
    fn into_response(self) -> Response {
        error!(error = %self.0, "request failed");
        pages::Notice::new("unavailable").answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "We could not load this page right now. Please try again in a minute.",
        )
    }
}

/// A small English page for answers that carry no invoice data, outside
/// the page routes (408), and under a page's [`pages::Notice`] until it is
/// rendered in the browser's language.
pub fn message_page(code: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\
         <body style=\"font-family: Arial, sans-serif; max-width: 420px; margin: 48px auto; padding: 0 16px; color: #1f2933;\">\
         <h1 style=\"font-size: 20px;\">{title}</h1><p>{text}</p></body></html>"
    );
    (code, Html(body)).into_response()
}
