//! payrelay: payment requests from billers' systems to their customers, on
//! the channel each customer reads, with a pay link that works.
//!
//! # Layout
//! The folders follow a message's path through the service:
//!
//! - [`broker`]: RabbitMQ. The consumer of `payrelay.invoices`, the
//!   dead-letter path, the event publisher and `payrelay publish`.
//! - [`invoice`]: parsing and validating what billers send, once, at the edge.
//! - [`dispatch`]: handling one invoice, stage by stage: admit, route and
//!   deliver, send with retries, record.
//! - [`router`]: which channels, in which order, and why.
//! - [`journey`]: which reminders follow the first request, and when.
//! - [`render`]: handlebars templates (built in from `templates/`, overridable).
//! - [`channels`] (top-level `channels/` folder): one folder per channel
//!   adapter behind the one `Channel` trait, each rate-limited.
//! - [`store`]: the durable state and the event outbox (SQLite or PostgreSQL).
//! - [`server`]: the axum server: pay pages, payments and admin API, the
//!   console, provider webhooks, health, readiness, metrics.
//! - [`config`]: `config.toml`, layered with the environment and checked
//!   completely before anything starts.
//! - [`app`]: wiring it all together for `payrelay serve` and the tests.
//!
//! # Layers
//! Each layer uses only the ones below it; `tests/architecture.rs` checks
//! that no module imports in a cycle and the rules in brackets.
//!
//! ```text
//! app                      wiring: serve, the tests
//! broker · server          the edges: AMQP in and out, HTTP (the consumer loop holds no business rules)
//! dispatch                 one invoice's handling, stage by stage
//! store                    durable state and the event outbox
//! config                   the whole checked configuration
//! router · journey · channels  decisions (no I/O) · adapters (reach no broker, router, store or server)
//! render                   templates and the view of an invoice
//! invoice · events         what billers send and receive (no I/O)
//! settings · metrics · …   reading settings, secrets; counters; redaction; log lines; pay-link tokens
//! domain                   names, keys, statuses, ids, the clock, quiet hours, money (uses nothing)
//! ```
//!
//! Time always comes from a [`domain::Clock`], so expiry, holds and
//! idleness are tested by moving a manual clock.

pub mod app;
pub mod broker;
#[path = "../channels/mod.rs"]
pub mod channels;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod invoice;
pub mod journey;
pub mod logging;
pub mod metrics;
pub mod paylink;
pub mod redact;
pub mod render;
pub mod router;
pub mod schema;
pub mod server;
pub mod settings;
pub mod store;
