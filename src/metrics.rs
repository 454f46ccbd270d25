//! Prometheus metrics, one registry per running service (so tests can run
//! several services in one process). Served as OpenMetrics text, with the
//! standard `process_*` metrics and `payrelay_build_info` beside payrelay's
//! own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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
struct PreviewLabels {
    channel: String,
    previewer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
            store_write_failed: AtomicBool::new(false),
        }
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
}
