//! Prometheus metrics, one registry per running service (so tests can run
//! several services in one process).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::channels::ChannelName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    invoices: Family<OutcomeLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    send_seconds: Family<ChannelLabels, Histogram>,
    clicks: Counter,
    events_published: Counter,
    rate_limit_fallback: Family<ChannelLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("payrelay");
        let invoices = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invoices",
            "Messages from the invoices queue by outcome",
            invoices.clone(),
        );
        let sends = Family::<SendLabels, Counter>::default();
        registry.register("sends", "Provider sends by channel and outcome", sends.clone());
        let send_seconds = Family::<ChannelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "send_seconds",
            "Time a provider took to accept a message",
            send_seconds.clone(),
        );
        let clicks = Counter::default();
        registry.register("paylink_clicks", "Pay page opens", clicks.clone());
        let events_published = Counter::default();
        registry.register(
            "events_published",
            "Events confirmed by the broker",
            events_published.clone(),
        );
        let rate_limit_fallback = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "rate_limit_fallback",
            "Sends paced by the instance's own limit alone because the shared limit's Redis did not answer",
            rate_limit_fallback.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            invoices,
            sends,
            send_seconds,
            clicks,
            events_published,
            rate_limit_fallback,
        }
    }

    pub fn invoice(&self, outcome: &str) {
        self.invoices
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn send(&self, channel: ChannelName, outcome: &str) {
        self.sends
            .get_or_create(&SendLabels {
                channel: channel.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn send_latency(&self, channel: ChannelName, took: Duration) {
        self.send_seconds
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn click(&self) {
        self.clicks.inc();
    }

    pub fn events_published(&self, n: u64) {
        self.events_published.inc_by(n);
    }

    pub fn rate_limit_fallback(&self, channel: ChannelName) {
        self.rate_limit_fallback
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
