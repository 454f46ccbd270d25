//! Prometheus metrics, one registry per running service (so tests can run
//! several services in one process). Served as OpenMetrics text, with the
//! standard `process_*` metrics and `payrelay_build_info` beside payrelay's
//! own.
//!
//! Counters are counted where things happen. The gauges read from the store
//! (outbox backlog, held invoices, planned steps) are set from
//! [`StoreGauges`] by whoever reads them (the `/metrics` handler, at most
//! every few seconds); readiness is set on each scrape. Labels are bounded:
//! channel, outcome, status, reason, previewer, part; never an invoice or a
//! customer. `docs/operations.md` lists every metric.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::ChannelName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PauseLabels {
    channel: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreviewLabels {
    channel: String,
    previewer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the store holds that operators watch, counted by the store
/// (`Store::gauges`) with queries that use indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Events stored and not yet confirmed by the broker (all instances').
    pub outbox_backlog: i64,
    /// Invoices whose first request, or whose combined message, waits for
    /// the customer's quiet hours to end, plus reminders held for them.
    pub held_quiet_hours: i64,
    /// Invoices waiting in a combine group for its window to close.
    pub held_combining: i64,
    /// Reminders put off to the next day by the daily cap on messages.
    pub held_cap: i64,
    /// Journey steps planned and not yet done (held ones included).
    pub steps_planned: i64,
}

/// The reasons [`StoreGauges`] holds invoices for, as `reason` labels.
const HELD_REASONS: [&str; 3] = ["quiet_hours", "combining", "cap"];

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Unprefixed: the `process_*` names are the same in every service.
    process: Registry,
    invoices: Family<OutcomeLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    /// Journey steps by how they ended (sent, failed, skipped, cancelled).
    steps: Family<StatusLabels, Counter>,
    send_seconds: Family<ChannelLabels, Histogram>,
    clicks: Counter,
    previews: Family<PreviewLabels, Counter>,
    events_published: Counter,
    rate_limit_fallback: Family<ChannelLabels, Counter>,
    /// New payment requests stored: the base of the exhausted rate.
    received: Counter,
    /// Messages moved to the dead-letter queue (confirmed by the broker).
    dead_letters: Counter,
    /// 1 from a channel's pause until a send on it succeeds again.
    channel_paused: Family<ChannelLabels, Gauge>,
    /// Each time a channel's breaker opened, by why.
    channel_pauses: Family<PauseLabels, Counter>,
    outbox_backlog: Gauge,
    held: Family<ReasonLabels, Gauge>,
    steps_planned: Gauge,
    ready: Family<PartLabels, Gauge>,
    /// When the store gauges were last read, so scrapes close together
    /// share one read.
    store_gauges_read: Mutex<Option<Instant>>,
    /// Set when the store refused an invoice's write, cleared by the next
    /// invoice it took: `/readyz` reports it, since a store that answers
    /// pings can still fail every write (a full disk).
    store_write_failed: AtomicBool,
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
        let steps = Family::<StatusLabels, Counter>::default();
        registry.register("journey_steps", "Journey steps by how they ended", steps.clone());
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
        let previews = Family::<PreviewLabels, Counter>::default();
        registry.register(
            "paylink_previews",
            "Pay page fetches by link previewers and mail scanners (and HEAD requests), not counted as clicks",
            previews.clone(),
        );
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
        let received = Counter::default();
        registry.register(
            "invoices_received",
            "New payment requests stored (not duplicates, stale revisions or closed invoices)",
            received.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Messages moved to the dead-letter queue (invalid, or their handler kept crashing)",
            dead_letters.clone(),
        );
        let channel_paused = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "channel_paused",
            "1 while a channel is paused after provider failures, until a send on it succeeds again",
            channel_paused.clone(),
        );
        let channel_pauses = Family::<PauseLabels, Counter>::default();
        registry.register(
            "channel_pauses",
            "Times a channel was paused, by reason (failures: transient failures in a row; misconfigured)",
            channel_pauses.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Events stored but not yet confirmed by the broker, of all instances sharing the store",
            outbox_backlog.clone(),
        );
        let held = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "invoices_held",
            "Invoices waiting before their next message, by reason (quiet_hours, combining, cap)",
            held.clone(),
        );
        let steps_planned = Gauge::default();
        registry.register(
            "journey_steps_planned",
            "Journey steps planned and not yet done",
            steps_planned.clone(),
        );
        let ready = Family::<PartLabels, Gauge>::default();
        registry.register(
            "ready",
            "1 when the part (broker, store) is ready as /readyz checks it, at the last scrape",
            ready.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The running payrelay's version", build_info);
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry: Mutex::new(registry),
            process,
            invoices,
            sends,
            steps,
            send_seconds,
            clicks,
            previews,
            events_published,
            rate_limit_fallback,
            received,
            dead_letters,
            channel_paused,
            channel_pauses,
            outbox_backlog,
            held,
            steps_planned,
            ready,
            store_gauges_read: Mutex::new(None),
            store_write_failed: AtomicBool::new(false),
        }
    }

    /// A new payment request was stored.
    pub fn received(&self) {
        self.received.inc();
    }

    /// The broker confirmed a message moved to the dead-letter queue.
    pub fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    /// A configured channel, shown as not paused until it is.
    pub fn channel_known(&self, channel: ChannelName) {
        self.channel_paused
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
            .set(0);
    }

    /// A channel's breaker opened; `reason` is `failures` or `misconfigured`.
    pub fn channel_paused(&self, channel: ChannelName, reason: &str) {
        let name = channel.as_str().to_owned();
        self.channel_paused
            .get_or_create(&ChannelLabels { channel: name.clone() })
            .set(1);
        self.channel_pauses
            .get_or_create(&PauseLabels {
                channel: name,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A send on a paused channel succeeded: it works again.
    pub fn channel_resumed(&self, channel: ChannelName) {
        self.channel_paused
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
            .set(0);
    }

    /// Whether the store gauges were read less than `within` ago; if not,
    /// the caller is to read them now, and the next callers within
    /// `within` are told they are fresh (also when that read fails: a
    /// failing store is not asked again at every scrape).
    pub fn store_gauges_fresh(&self, within: Duration) -> bool {
        let mut read = self.store_gauges_read.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if read.is_some_and(|at| now.duration_since(at) < within) {
            return true;
        }
        *read = Some(now);
        false
    }

    pub fn set_store_gauges(&self, gauges: &StoreGauges) {
        self.outbox_backlog.set(gauges.outbox_backlog);
        let held = [gauges.held_quiet_hours, gauges.held_combining, gauges.held_cap];
        for (reason, count) in HELD_REASONS.into_iter().zip(held) {
            self.held
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .set(count);
        }
        self.steps_planned.set(gauges.steps_planned);
    }

    /// Readiness of a part `/readyz` checks (`broker`, `store`) as it found it.
    pub fn set_ready(&self, part: &str, ready: bool) {
        self.ready
            .get_or_create(&PartLabels { part: part.to_owned() })
            .set(i64::from(ready));
    }

    pub fn invoice(&self, outcome: &str) {
        match outcome {
            "store_retry" => self.store_write_failed.store(true, Ordering::Relaxed),
            // A rejected message is dead-lettered before anything is written.
            "rejected" => {}
            _ => self.store_write_failed.store(false, Ordering::Relaxed),
        }
        self.invoices
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Whether the store refused the last invoice write it was given.
    pub fn store_write_failed(&self) -> bool {
        self.store_write_failed.load(Ordering::Relaxed)
    }

    pub fn send(&self, channel: ChannelName, outcome: &str) {
        self.sends
            .get_or_create(&SendLabels {
                channel: channel.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn step(&self, status: &str) {
        self.steps
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
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

    /// A pay page fetched by software, not a person: `previewer` is the
    /// name `server::people` knows it by (`head` for a HEAD request).
    pub fn preview(&self, channel: ChannelName, previewer: &str) {
        self.previews
            .get_or_create(&PreviewLabels {
                channel: channel.as_str().to_owned(),
                previewer: previewer.to_owned(),
            })
            .inc();
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

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let encoded = encode_registry(&mut out, &registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

/// The process metrics Prometheus clients export, read on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    #[cfg(target_os = "linux")]
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use procfs::process::{LimitValue, Process};
        use procfs::WithCurrentSystemInfo;
        // A /proc that cannot be read (a hardened container) leaves these
        // metrics out; the scrape still answers.
        let Ok(me) = Process::myself() else { return Ok(()) };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            let cpu_encoder = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?;
            cpu.encode(cpu_encoder)?;
            let gauges = [
                (
                    "process_resident_memory",
                    "Resident memory size in bytes",
                    Some(Unit::Bytes),
                    stat.rss_bytes().get() as i64,
                ),
                (
                    "process_virtual_memory",
                    "Virtual memory size in bytes",
                    Some(Unit::Bytes),
                    stat.vsize as i64,
                ),
                (
                    "process_threads",
                    "Number of OS threads in the process",
                    None,
                    stat.num_threads,
                ),
            ];
            for (name, help, unit, value) in gauges {
                encode_gauge(&mut encoder, name, help, unit.as_ref(), value)?;
            }
            if let Ok(boot) = procfs::boot_time_secs() {
                encode_gauge(
                    &mut encoder,
                    "process_start_time",
                    "Start time of the process since the Unix epoch in seconds",
                    Some(&Unit::Seconds),
                    (boot + stat.starttime / ticks as u64) as i64,
                )?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            encode_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                None,
                fds as i64,
            )?;
        }
        if let Ok(limits) = me.limits() {
            if let LimitValue::Value(max) = limits.max_open_files.soft_limit {
                encode_gauge(
                    &mut encoder,
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    None,
                    max as i64,
                )?;
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn encode(&self, _: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_process_and_build_metrics_and_one_end() {
        let metrics = Metrics::new();
        metrics.send(ChannelName::Email, "sent");
        metrics.preview(ChannelName::Whatsapp, "whatsapp");
        metrics.preview(ChannelName::Whatsapp, "whatsapp");
        let text = metrics.render();
        assert!(
            text.contains("payrelay_sends_total{channel=\"email\",outcome=\"sent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE payrelay_paylink_previews counter")
                && text.contains("payrelay_paylink_previews_total{channel=\"whatsapp\",previewer=\"whatsapp\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "payrelay_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_threads ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.contains(name), "no {name}in:\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn scrapes_close_together_share_one_read_of_the_store() {
        let metrics = Metrics::new();
        let window = Duration::from_secs(60);
        assert!(!metrics.store_gauges_fresh(window), "the first scrape reads");
        assert!(
            metrics.store_gauges_fresh(window),
            "the next one within the window does not"
        );
        assert!(
            !metrics.store_gauges_fresh(Duration::ZERO),
            "once the window is over, one reads again"
        );
    }

    #[test]
    fn the_store_counts_show_by_reason() {
        let metrics = Metrics::new();
        metrics.set_store_gauges(&StoreGauges {
            outbox_backlog: 7,
            held_quiet_hours: 3,
            held_combining: 2,
            held_cap: 1,
            steps_planned: 40,
        });
        let text = metrics.render();
        for line in [
            "payrelay_outbox_backlog 7",
            "payrelay_invoices_held{reason=\"quiet_hours\"} 3",
            "payrelay_invoices_held{reason=\"combining\"} 2",
            "payrelay_invoices_held{reason=\"cap\"} 1",
            "payrelay_journey_steps_planned 40",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
        }
    }
}
