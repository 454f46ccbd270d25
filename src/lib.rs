//! payrelay: payment requests from billers' systems to their customers, on
//! the channel each customer reads, with a pay link that works.
//!
//! # Layout
//! The folders follow a message's path through the service:
//!
//! - [`broker`]: RabbitMQ. The consumer of `payrelay.invoices`, the
//!   dead-letter path, the event publisher and `payrelay publish`.
//! - [`invoice`]: parsing and validating what billers send, once, at the edge.
//! - [`dispatch`]: handling one invoice: dedup, route, render, send, record.
//! - [`router`]: which channels, in which order, and why.
//! - [`render`]: handlebars templates (built in from `templates/`, overridable).
//! - [`channels`] (top-level `channels/` folder): one folder per channel
//!   adapter behind the one `Channel` trait, each rate-limited.
//! - [`store`]: the durable state and the event outbox (SQLite or PostgreSQL).
//! - [`server`]: the axum server: pay pages, payments and admin API,
//!   provider webhooks, health, readiness, metrics.
//! - [`config`]: `config.toml`, layered with the environment and checked
//!   completely before anything starts.
//! - [`app`]: wiring it all together for `payrelay serve` and the tests.

pub mod app;
pub mod broker;
#[path = "../channels/mod.rs"]
pub mod channels;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod invoice;
pub mod metrics;
pub mod paylink;
pub mod redact;
pub mod render;
pub mod router;
pub mod schema;
pub mod server;
pub mod store;
