//! The rate limit, measured: a 10-second run through a channel's governor
//! limiter, comparing the delivered count and timestamps with the setting
//! (with a tolerance), never a timed assertion on a single send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use payrelay::channels::email::EmailMessage;
use payrelay::channels::{BuildContext, Prepared, Registry};
use payrelay::config::Config;
use payrelay::domain::ChannelName;

const RATE: u32 = 40;
const BURST: u32 = 8;
const SECONDS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_delivers_at_its_configured_rate_and_never_bursts_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        &format!(
            r#"
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
[channels.email]
transport = "file"
rate_per_second = {RATE}
burst = {BURST}
"#
        ),
        dir.path(),
        &|_| None,
    )
    .unwrap();
    let context = BuildContext {
        public_base_url: url::Url::parse("http://127.0.0.1:8080").unwrap(),
    };
    let registry = Arc::new(Registry::from_config(&config.channels, &context).unwrap());
    let message = Prepared::new(
        ChannelName::Email,
        "rate@example.com",
        EmailMessage {
            from: None,
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            unsubscribe: None,
        },
    );

    // Everything is offered at once; the limiter decides when each goes.
    let total = (BURST + RATE * SECONDS) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for _ in 0..total {
        let (registry, message) = (registry.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            registry.send(&message).await.expect("file send");
            start.elapsed()
        }));
    }
    let mut delivered = Vec::with_capacity(total);
    for task in tasks {
        delivered.push(task.await.unwrap());
    }
    delivered.sort();
    let written = std::fs::read_dir(dir.path().join("var/outbox/email")).unwrap().count();
    assert_eq!(written, total, "every message was delivered");

    // Over the run: (total - burst) cells at RATE per second.
    let elapsed = delivered.last().unwrap().as_secs_f64();
    let measured = (total - BURST as usize) as f64 / elapsed;
    let expected = RATE as f64;
    assert!(
        (measured - expected).abs() <= expected * 0.05,
        "measured {measured:.2}/s over {elapsed:.2}s, configured {expected}/s"
    );

    // Never more than BURST + RATE in any one-second window.
    let window = Duration::from_secs(1);
    let mut first = 0;
    for (last, at) in delivered.iter().enumerate() {
        while *at - delivered[first] >= window {
            first += 1;
        }
        let in_window = last - first + 1;
        assert!(
            in_window <= (RATE + BURST) as usize,
            "{in_window} deliveries within one second ending at {at:?}"
        );
    }
    // And the burst itself is allowed: the first BURST go out together.
    assert!(delivered[BURST as usize - 1] < Duration::from_millis(500));
}
