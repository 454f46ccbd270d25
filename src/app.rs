//! Starting and stopping the whole service: store, templates, channels, the
//! broker side and the HTTP server, sharing one shutdown token.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, BrokerParts};
use crate::channels::ratelimit::{LimiterError, SharedLimiter};
use crate::channels::{BuildContext, BuildError, Registry};
use crate::config::{Config, Source, TemplateUses};
use crate::dispatch::Dispatcher;
use crate::domain::clock::{Clock, SystemClock};
use crate::metrics::Metrics;
use crate::render::{TemplateProblem, Templates};
use crate::server::{self, AppState};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("templates have problems:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Templates(Vec<TemplateProblem>),
    #[error("cannot set up a channel: {0}")]
    Channel(#[from] BuildError),
    #[error("cannot set up the shared rate limit: {0}")]
    RateLimit(#[from] LimiterError),
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Languages a biller declares (its default locale, and locales its rules
/// route on) must have every template, or customers would silently get
/// another language.
fn locale_problems(uses: &TemplateUses, templates: &Templates) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, locale, biller_default) in &uses.locales {
        let missing = templates.missing_for_locale(locale);
        if !missing.is_empty() {
            let fallback = if *biller_default {
                " (they would be sent in English)"
            } else {
                ""
            };
            problems.push(format!(
                "{key} = \"{locale}\": no template in that language for {}{fallback}",
                missing.join(", ")
            ));
        }
    }
    problems
}

/// Renders the WhatsApp parameter snippets from the config with the sample
/// invoice, so a misspelt field fails here and not on the first customer.
fn snippet_problems(uses: &TemplateUses, templates: &Templates) -> Vec<String> {
    let sample = crate::render::sample_view();
    uses.snippets
        .iter()
        .filter_map(|(key, snippet)| {
            templates
                .render_inline(snippet, &sample)
                .err()
                .map(|e| format!("{key}: {e}"))
        })
        .collect()
}

/// Every message a journey step can send must exist on every channel it
/// can use: in English at least (else it cannot be sent), and in each
/// declared language (else it goes out in English); on WhatsApp, mapped to
/// an approved template.
fn journey_problems(config: &Config, uses: &TemplateUses, templates: &Templates) -> Vec<String> {
    use crate::config::StepTime;
    use crate::domain::ChannelName;
    let mut problems = Vec::new();
    for (name, journey) in &config.journeys {
        for (i, step) in journey.steps.iter().enumerate() {
            let key = format!("journeys.{name}.steps[{i}]");
            let messages: Vec<&str> = match (&step.template, step.when) {
                (Some(own), _) => vec![own.as_str()],
                (None, StepTime::Due { days }) if days > 0 => vec!["overdue"],
                (None, StepTime::Due { .. }) => vec!["reminder"],
                (None, StepTime::After(_)) => vec!["reminder", "overdue"],
            };
            let channels: Vec<ChannelName> = match &step.channels {
                Some(own) => own.clone(),
                None => ChannelName::ALL
                    .into_iter()
                    .filter(|c| config.channels.is_configured(*c))
                    .collect(),
            };
            for message in messages {
                for channel in &channels {
                    if *channel == ChannelName::Whatsapp {
                        let mapped = config.channels.whatsapp.as_ref().and_then(|w| w.approved(message));
                        if mapped.is_none() {
                            problems.push(format!(
                                "{key}: no approved WhatsApp template is mapped to the {message} message \
                                 (add it to [channels.whatsapp] templates)"
                            ));
                        }
                        continue;
                    }
                    let missing = templates.missing_message_on(message, "en", *channel);
                    if !missing.is_empty() {
                        problems.push(format!(
                            "{key}: the {message} message has no template for {channel}: {}",
                            missing.join(", ")
                        ));
                        continue;
                    }
                    // The built-in messages' languages are checked with the
                    // rest of the templates (`locale_problems`).
                    let built_in = crate::render::BUILT_IN_MESSAGES.contains(&message);
                    for (declared, locale, _) in uses.locales.iter().filter(|_| !built_in) {
                        let missing = templates.missing_message_on(message, locale, *channel);
                        if !missing.is_empty() {
                            problems.push(format!(
                                "{key}: the {message} message has no {locale} template for {channel} \
                                 ({declared} declares that language; it would be sent in English): {}",
                                missing.join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// A biller that combines sends the `combined` message on every channel
/// its invoices can be routed to: on WhatsApp it must be mapped to an
/// approved template (the other channels' templates are built in, and
/// checked with the rest).
fn combine_problems(config: &Config) -> Vec<String> {
    let Some(whatsapp) = config.channels.whatsapp.as_ref() else {
        return Vec::new();
    };
    let message = crate::render::COMBINED_TEMPLATE;
    if whatsapp.approved(message).is_some() {
        return Vec::new();
    }
    config
        .billers
        .iter()
        .filter(|(_, biller)| biller.combine.is_some())
        .map(|(id, _)| {
            format!(
                "billers.{id}.combine: no approved WhatsApp template is mapped to the {message} message \
                 (add {message} = \"<approved name>\" to [channels.whatsapp] templates)"
            )
        })
        .collect()
}

/// `payrelay check`: config and templates checked together, every problem
/// in one report, even when the config has problems of its own; `serve`
/// runs it first and refuses to start on a problem.
pub fn check(source: &Source) -> Result<(Config, Templates), String> {
    let mut report = Vec::new();
    let (config, uses) = match Config::load_from(source) {
        Ok(c) => {
            let uses = c.template_uses();
            (Some(c), Some(uses))
        }
        Err(e) => {
            report.push(e.to_string());
            let uses = e.template_uses;
            (None, uses)
        }
    };
    if let Some(config) = &config {
        // Certain, not guesses: a rule that can never decide is a mistake.
        for (i, why) in crate::router::unreachable_rules(&config.routing) {
            report.push(format!("  - routing.rules[{i}]: {why}"));
        }
    }
    let dir = uses.as_ref().and_then(|u| u.dir.clone());
    let templates = match Templates::load(dir.as_deref()) {
        Ok(t) => {
            let mut problems: Vec<String> = t.check_with_sample().iter().map(|p| p.to_string()).collect();
            if let Some(uses) = &uses {
                problems.extend(snippet_problems(uses, &t));
                problems.extend(locale_problems(uses, &t));
                if let Some(config) = &config {
                    problems.extend(journey_problems(config, uses, &t));
                    problems.extend(combine_problems(config));
                }
            }
            if problems.is_empty() {
                Some(t)
            } else {
                report.extend(problems.iter().map(|p| format!("  - {p}")));
                None
            }
        }
        Err(problems) => {
            report.push("templates have problems:".into());
            report.extend(problems.iter().map(|p| format!("  - {p}")));
            None
        }
    };
    match (config, templates) {
        (Some(c), Some(t)) if report.is_empty() => Ok((c, t)),
        _ => Err(report.join("\n")),
    }
}

/// A running service.
pub struct Running {
    /// Where the HTTP server listens (useful when the config asked for port 0).
    pub addr: SocketAddr,
    /// Where the operators' routes are served, with `[http] admin_listen`.
    pub admin_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: CancellationToken,
    broker: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    retention: JoinHandle<()>,
    http: JoinHandle<std::io::Result<()>>,
    admin_http: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops taking deliveries, finishes in-flight ones, flushes events and
    /// closes the HTTP server.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.broker.await;
        let _ = self.scheduler.await;
        let _ = self.retention.await;
        let _ = self.http.await;
        if let Some(admin_http) = self.admin_http {
            let _ = admin_http.await;
        }
        if let Err(e) = self.state.store.release_outbox().await {
            warn!(error = %e, "could not hand unpublished events to other instances; they take them after this instance's lease");
        }
        info!("payrelay stopped");
    }

    /// Completes when something asks the service to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Starts the service on a checked config, listening on `[http] listen`.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http.listen,
            source,
        })?;
    start_on(config, listener).await
}

/// Starts the service on a listener bound by the caller (tests bind port 0
/// first, so `public_base_url` can name the real port).
pub async fn start_on(config: Config, listener: TcpListener) -> Result<Running, StartError> {
    start_with_clock(config, listener, Arc::new(SystemClock)).await
}

/// Starts the service with its own clock (tests move it through quiet hours).
pub async fn start_with_clock(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    let store = crate::store::open(config.store.url.expose(), clock.clone()).await?;
    start_with_store(config, listener, clock, store).await
}

/// Starts the service on a store opened by the caller (tests wrap the real
/// store to make it fail on cue), which should be on the same `clock`.
pub async fn start_with_store(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    // With `[http] admin_listen` the operators' routes have a listener of
    // their own, bound before anything starts, so a taken port fails the
    // start; both listeners stop on the same shutdown.
    let admin = match config.http.admin_listen {
        None => None,
        Some(addr) => {
            let bind_error = |source| StartError::Bind { addr, source };
            let admin = TcpListener::bind(addr).await.map_err(bind_error)?;
            let bound = admin.local_addr().map_err(bind_error)?;
            Some((admin, bound))
        }
    };
    let config = Arc::new(config);
    let templates = Arc::new(Templates::load(config.templates.dir.as_deref()).map_err(StartError::Templates)?);
    let context = BuildContext {
        public_base_url: config.http.public_base_url.clone(),
    };
    let metrics = Arc::new(Metrics::new());
    let mut channels = Registry::from_config(&config.channels, &context)?.with_metrics(metrics.clone());
    if let Some(rate_limit) = &config.rate_limit {
        channels = channels.with_shared_limiter(Arc::new(SharedLimiter::new(rate_limit, metrics.clone())?));
    }
    let channels = Arc::new(channels);
    let outbox_signal = Arc::new(Notify::new());
    let broker_ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();

    let dispatcher = Arc::new(Dispatcher::new(
        config.clone(),
        store.clone(),
        channels,
        templates.clone(),
        metrics.clone(),
        outbox_signal.clone(),
        clock.clone(),
    ));
    let scheduler = tokio::spawn(crate::dispatch::scheduler::run(
        dispatcher.clone(),
        store.clone(),
        clock.clone(),
        shutdown.clone(),
    ));
    let retention = tokio::spawn(crate::dispatch::erasure::run_retention(
        config.clone(),
        store.clone(),
        clock.clone(),
        outbox_signal.clone(),
        shutdown.clone(),
    ));
    let state = AppState {
        config: config.clone(),
        store: store.clone(),
        templates,
        metrics: metrics.clone(),
        outbox_signal: outbox_signal.clone(),
        broker_ready: broker_ready.clone(),
        dispatcher: dispatcher.clone(),
        clock,
        unknown_links: Arc::new(server::throttle::UnknownLinks::new(&config.http)),
    };
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.http.listen,
        source,
    })?;
    let (http, admin_http, admin_addr) = match admin {
        None => (
            tokio::spawn(server::serve(listener, state.clone(), shutdown.clone())),
            None,
            None,
        ),
        Some((admin, admin_addr)) => {
            let http = tokio::spawn({
                let (router, state, shutdown) = (server::public_router(state.clone()), state.clone(), shutdown.clone());
                async move { server::serve_router(listener, router, &state, shutdown).await }
            });
            let admin_http = tokio::spawn({
                let (router, state, shutdown) = (server::admin_router(state.clone()), state.clone(), shutdown.clone());
                async move { server::serve_router(admin, router, &state, shutdown).await }
            });
            (http, Some(admin_http), Some(admin_addr))
        }
    };
    let broker = tokio::spawn(broker::run(
        BrokerParts {
            config: config.broker.clone(),
            dispatcher,
            store,
            metrics,
            outbox_signal,
            ready: broker_ready,
        },
        shutdown.clone(),
    ));
    info!(%addr, admin = ?admin_addr, "payrelay listening");
    Ok(Running {
        addr,
        admin_addr,
        state,
        shutdown,
        broker,
        scheduler,
        retention,
        http,
        admin_http,
    })
}
