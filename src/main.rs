//! The `payrelay` command line: the service, and the tools an operator and
//! a biller's developer use beside it (check, route, preview, publish).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use payrelay::channels::{Providers, Registry};
use payrelay::config::{Config, Source};
use payrelay::domain::ChannelName;
use payrelay::invoice::{self, Message};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "payrelay",
    version,
    about = "Payment requests from billers' queues to their customers' channels"
)]
struct Cli {
    /// The config file; relative paths in it resolve against its folder.
    /// Without it: config.toml in the working folder if there is one, else
    /// the built-in configuration (`payrelay config` prints it).
    #[arg(long, global = true, value_name = "PATH", env = "PAYRELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume invoices, send, serve pay pages.
    Serve,
    /// Validate the config and templates; list every problem.
    Check,
    /// Print the built-in configuration (what `serve` runs on when there is
    /// no config file); save it as config.toml to start your own.
    Config,
    /// Show which rule and channels an invoice would get, and why, and the
    /// journey that would follow it; with --replay, compare many past
    /// invoices under this config and a new one.
    #[command(after_help = ROUTE_HELP)]
    Route {
        /// The invoice: one JSON object as billers publish it.
        #[arg(required_unless_present = "replay", conflicts_with = "replay")]
        file: Option<PathBuf>,
        /// Past invoices, one JSON object a line (- for stdin), to route under
        /// --config (the current config) and under --against.
        #[arg(long, value_name = "INVOICES.jsonl", requires = "against")]
        replay: Option<PathBuf>,
        /// The new config to compare with the current one; with --replay.
        #[arg(long, value_name = "NEW.toml", requires = "replay", conflicts_with = "file")]
        against: Option<PathBuf>,
        /// Route as of this day, for days_to_due rules, and plan the journey
        /// from its start in the customer's time zone [default: today, UTC,
        /// and now].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_day)]
        today: Option<time::Date>,
        /// With --replay: how many changed invoices and skipped lines to list
        /// (a number, or "all").
        #[arg(long, value_name = "N", default_value = "20", value_parser = parse_limit)]
        limit: usize,
        /// With --replay: exit with status 3 when any invoice would be routed
        /// differently (for a CI check of a rules change).
        #[arg(long, requires = "replay", conflicts_with = "file")]
        fail_on_change: bool,
    },
    /// Print the messages an invoice would produce, exactly as sent.
    Preview {
        /// The invoice: one JSON object as billers publish it.
        file: PathBuf,
        /// Only this channel (email, sms, whatsapp, messenger) [default: the
        /// channels routing picks].
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<ChannelName>,
        /// The message template to render (payment_request, reminder,
        /// overdue, final_notice, or one the templates dir adds). With
        /// `combined`, FILE holds several invoices of one customer and
        /// currency (JSON lines), shown as the one message listing them.
        #[arg(long, value_name = "NAME", default_value = "payment_request", value_parser = parse_template)]
        template: String,
        /// The journey step sending it, as templates see it in `step`
        /// [default: none, the first request].
        #[arg(long, value_name = "NAME")]
        step: Option<String>,
    },
    /// Ask a running payrelay whether it is ready (GET /readyz): exit 0
    /// when it answers 200, 1 otherwise, with what it answered. For
    /// container health checks, where there is no curl.
    Health {
        /// What to ask [default: /readyz at the config's `[http] listen`,
        /// on the loopback address when it listens on every address].
        #[arg(long, value_name = "URL")]
        url: Option<url::Url>,
        /// How long to wait for the answer.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Publish invoices to the queue with publisher confirms. Every message
    /// is checked first: a bad one stops the run before anything is sent.
    Publish {
        /// One JSON object, or JSON lines (one invoice a line); - for stdin.
        file: PathBuf,
        /// Send the messages as they are, without checking them (to try how
        /// the service handles bad input).
        #[arg(long)]
        raw: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", causes(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let source = Source::locate(cli.config.as_deref());
    match cli.command {
        Command::Config => {
            print!("{}", payrelay::config::BUILT_IN);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => Ok(check(&source)),
        Command::Serve => serve_command(&source).await,
        Command::Route {
            file,
            replay,
            against,
            today,
            limit,
            fail_on_change,
        } => {
            let given = today;
            let today = today.unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
            let config = Config::load_from(&source)?;
            match (file, replay, against) {
                (_, Some(replay), Some(against)) => {
                    replay_command(&source, &config, &replay, &against, today, limit, fail_on_change)
                }
                (Some(file), _, _) => {
                    let invoice = read_invoice(&file, &config)?;
                    // The journey as if the invoice arrived at the start of
                    // that day in its time zone, or now.
                    let now_ms = match given {
                        Some(day) => payrelay::journey::start_of_day(&config, &invoice, day),
                        None => payrelay::domain::clock::now_ms(),
                    };
                    let profile = stored_profile(&config, &invoice).await;
                    print!("{}", payrelay::router::explain_for(&invoice, &config, today, &profile));
                    print!("{}", payrelay::journey::explain(&invoice, &config, today, now_ms));
                    Ok(ExitCode::SUCCESS)
                }
                _ => bail!("give an invoice FILE, or --replay FILE --against NEW.toml"),
            }
        }
        Command::Preview {
            file,
            channel,
            template,
            step,
        } => {
            let message = payrelay::render::Message { template, step };
            preview(&source, &file, channel, &message)
        }
        Command::Publish { file, raw } => publish(&source, &file, raw).await,
        Command::Health { url, timeout } => health(&source, url, timeout).await,
    }
}

/// `payrelay health`: `/readyz`'s answer, and whether it was 200.
async fn health(source: &Source, url: Option<url::Url>, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url,
        None => readiness_url(Config::load_from(source)?.http.listen)?,
    };
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    print!("{}", response.text().await.unwrap_or_default());
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{url} answered {status}: not ready");
        Ok(ExitCode::FAILURE)
    }
}

/// `/readyz` of a server listening on `listen`, reached from the same host.
fn readiness_url(listen: std::net::SocketAddr) -> anyhow::Result<url::Url> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = std::net::SocketAddr::new(ip, listen.port());
    Ok(url::Url::parse(&format!("http://{addr}/readyz"))?)
}

/// `payrelay check`: every problem, or "ok".
fn check(source: &Source) -> ExitCode {
    match payrelay::app::check(source) {
        Ok(_) => {
            println!("{}: ok", source.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::FAILURE
        }
    }
}

/// `payrelay serve`: refuses to start on a config `check` refuses.
async fn serve_command(source: &Source) -> anyhow::Result<ExitCode> {
    if *source == Source::BuiltIn {
        eprintln!(
            "no {} here and no --config: running on the built-in configuration \
             (`payrelay config` prints it; files go under ./var)",
            payrelay::config::DEFAULT_PATH
        );
    }
    let config = match payrelay::app::check(source) {
        Ok((config, _)) => config,
        Err(problems) => {
            eprintln!("{problems}\nnot starting: fix the problems above (payrelay check lists them)");
            return Ok(ExitCode::FAILURE);
        }
    };
    init_logging()?;
    serve(config).await?;
    Ok(ExitCode::SUCCESS)
}

/// `payrelay route --replay FILE --against NEW`: exit 3 with
/// `--fail-on-change` when any invoice would be routed differently.
fn replay_command(
    source: &Source,
    config: &Config,
    replay: &Path,
    against: &Path,
    today: time::Date,
    limit: usize,
    fail_on_change: bool,
) -> anyhow::Result<ExitCode> {
    let new = Config::load(against)?;
    let input = read_input(replay)?;
    let result = payrelay::router::replay(&input, config, &new, today);
    let name = if replay == Path::new("-") {
        "stdin".to_owned()
    } else {
        replay.display().to_string()
    };
    println!("replay of {name} as of {today}");
    println!("  current config: {}", source.display());
    println!("  new config: {}", against.display());
    println!();
    print!("{}", result.report(limit));
    let totals = result.totals();
    if totals.compared == 0 {
        bail!("{name} holds no invoice to compare");
    }
    if fail_on_change && totals.changed > 0 {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `payrelay preview`: each message through the dispatcher's own
/// preparation, with a real pay link (never stored, so it opens nothing).
fn preview(
    source: &Source,
    file: &Path,
    channel: Option<ChannelName>,
    message: &payrelay::render::Message,
) -> anyhow::Result<ExitCode> {
    let (config, templates) = payrelay::app::check(source).map_err(|p| anyhow::anyhow!("{p}"))?;
    if message.template == payrelay::render::COMBINED_TEMPLATE {
        return preview_combined(&config, &templates, file, channel);
    }
    let invoice = read_invoice(file, &config)?;
    let plan = payrelay::router::route(&invoice, &config, time::OffsetDateTime::now_utc().date());
    let registry = preview_registry(&config)?;
    let channels: Vec<ChannelName> = match channel {
        Some(c) => vec![c],
        None => plan.channels.clone(),
    };
    if !config.billers.contains_key(&invoice.key.biller_id) {
        bail!("the invoice's biller is not configured");
    }
    let clock = payrelay::domain::clock::SystemClock;
    for c in channels {
        if registry.get(c).is_none() {
            println!("== {c}: not configured");
            continue;
        }
        if invoice.customer.contacts.address(c).is_none() {
            println!("== {c}: the invoice has no {}", c.contact_field());
            continue;
        }
        let outgoing = payrelay::dispatch::prepare(&config, &registry, &templates, &clock, &invoice, c, message);
        let prepared = outgoing.message.map_err(|e| anyhow::anyhow!("{c}: {e}"))?;
        println!("== {c} to {}", prepared.to);
        for (name, content) in prepared.parts() {
            println!("-- {name}\n{content}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `payrelay preview --template combined`: the one message that lists the
/// invoices in `file` (JSON lines), as a combining biller sends it.
fn preview_combined(
    config: &Config,
    templates: &payrelay::render::Templates,
    file: &Path,
    channel: Option<ChannelName>,
) -> anyhow::Result<ExitCode> {
    let input = read_input(file)?;
    let mut invoices = Vec::new();
    for line in payrelay::broker::publish::split_messages(&input) {
        match invoice::parse(line.body.as_bytes(), |b| config.billers.contains_key(b)) {
            Ok(Message::PaymentRequest(inv)) => invoices.push(*inv),
            Ok(_) => bail!("{}:{}: not a payment request", file.display(), line.number),
            Err(rejected) => bail!("{}:{}: would be rejected: {rejected}", file.display(), line.number),
        }
    }
    let Some(first) = invoices.first() else {
        bail!("{} holds no invoice", file.display());
    };
    let customer = first.customer_key();
    if invoices.iter().any(|i| i.customer_key() != customer) {
        bail!(
            "a combined message lists one customer's invoices: {} names more than one",
            file.display()
        );
    }
    let plan = payrelay::router::route(first, config, time::OffsetDateTime::now_utc().date());
    let registry = preview_registry(config)?;
    let channels: Vec<ChannelName> = match channel {
        Some(c) => vec![c],
        None => plan.channels.clone(),
    };
    let listed: Vec<&invoice::Invoice> = invoices.iter().collect();
    let clock = payrelay::domain::clock::SystemClock;
    for c in channels {
        if registry.get(c).is_none() {
            println!("== {c}: not configured");
            continue;
        }
        if first.customer.contacts.address(c).is_none() {
            println!("== {c}: the invoice has no {}", c.contact_field());
            continue;
        }
        let token = payrelay::paylink::new_token();
        let prepared =
            payrelay::dispatch::prepare_combined(config, &registry, templates, &clock, first, &listed, c, &token, None)
                .map_err(|e| anyhow::anyhow!("{c}: {e}"))?;
        println!("== {c} to {}", prepared.to);
        for (name, content) in prepared.parts() {
            println!("-- {name}\n{content}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `payrelay publish`: every message checked first (unless `raw`), then
/// published with confirms.
async fn publish(source: &Source, file: &Path, raw: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load_from(source)?;
    let input = read_input(file)?;
    let messages = payrelay::broker::publish::split_messages(&input);
    if messages.is_empty() {
        bail!("{} holds no message", file.display());
    }
    if !raw {
        let bad = refused(&messages, |b| config.billers.contains_key(b));
        if !bad.is_empty() {
            for line in &bad {
                eprintln!("{}:{line}", file.display());
            }
            bail!(
                "{} of {} message(s) would be rejected; nothing was published (--raw sends them anyway)",
                bad.len(),
                messages.len()
            );
        }
    }
    let bodies: Vec<&str> = messages.iter().map(|m| m.body).collect();
    let n = payrelay::broker::publish::publish(&config.broker, &bodies).await?;
    println!("published {n} message(s) to {}", config.broker.queue);
    Ok(ExitCode::SUCCESS)
}

const ROUTE_HELP: &str = "\
Examples:
  payrelay route invoice.json --today 2026-11-20
  payrelay --config current.toml route --replay past.jsonl --against new.toml

For one invoice, after the routing decision comes its journey: which one
and why (the deciding rule's, the biller's or [routing] journey), the time
zone its steps are placed in, and each step with its local send time, its
strategy, template and channels after routing (opt-outs and contacts
applied), or why it would be skipped (its time had passed as of --today).

A replay routes every invoice in the file under the current config (--config)
and the new one (--against), as of --today, and reports: totals (compared,
unchanged, changed, rejected under each config), how many invoices each rule
took under each config, the changes grouped by deciding rule with the first
channel's change, and the changed invoices one per line (--limit). Lines that
are not payment requests (events, invoice_paid, not JSON) or are invalid under
both configs are skipped and listed with their line number and reason.
Nothing is sent or stored.";

/// `--today YYYY-MM-DD`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (say 5s, 500ms)"))
}

fn parse_day(text: &str) -> Result<time::Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, format).map_err(|_| format!("\"{text}\" is not a date in the form YYYY-MM-DD"))
}

/// `--template NAME`: a message template's name.
fn parse_template(text: &str) -> Result<String, String> {
    payrelay::render::check_message_name(text).map(|()| text.to_owned())
}

/// `--limit N` or `--limit all`.
fn parse_limit(text: &str) -> Result<usize, String> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(usize::MAX);
    }
    text.parse()
        .map_err(|_| format!("\"{text}\" is not a number of lines or \"all\""))
}

/// A file's text, or stdin's for `-`.
fn read_input(file: &Path) -> anyhow::Result<String> {
    let mut input = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read stdin")?;
    } else {
        input = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(input)
}

/// The messages the service would dead-letter, as "line: reason", checked
/// as the service checks them (`is_biller` says which billers exist).
fn refused(messages: &[payrelay::broker::publish::Line<'_>], is_biller: impl Fn(&str) -> bool) -> Vec<String> {
    messages
        .iter()
        .filter_map(|line| {
            invoice::parse(line.body.as_bytes(), &is_biller)
                .err()
                .map(|rejected| format!("{}: {rejected}", line.number))
        })
        .collect()
}

/// An error and its causes on one line, each cause once: many errors
/// already quote their source in their own message.
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn read_invoice(file: &Path, config: &Config) -> anyhow::Result<invoice::Invoice> {
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    match invoice::parse(&body, |b| config.billers.contains_key(b)) {
        Ok(Message::PaymentRequest(inv)) => Ok(*inv),
        Ok(_) => bail!("{} is not a payment request", file.display()),
        Err(rejected) => bail!("{} would be rejected: {rejected}", file.display()),
    }
}

/// The configured channels, each on its `file` provider in a throwaway
/// folder: preview must not touch the configured outboxes or open provider
/// connections (and it never sends).
fn preview_registry(config: &Config) -> anyhow::Result<Registry> {
    let tmp = std::env::temp_dir().join("payrelay-preview");
    let context = payrelay::channels::BuildContext {
        public_base_url: config.http.public_base_url.clone(),
    };
    Ok(Registry::with_providers(
        &config.channels,
        &context,
        Providers::Files(&tmp),
    )?)
}

fn init_logging() -> anyhow::Result<()> {
    let format = payrelay::logging::Format::from_env()?;
    let filter = EnvFilter::try_from_env("PAYRELAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    payrelay::logging::subscriber(format, filter, std::io::stdout().is_terminal(), std::io::stdout).try_init()?;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let loading = std::time::Instant::now();
    tokio::task::spawn_blocking(payrelay::invoice::Phone::load_numbering_plans).await?;
    tracing::debug!(
        ms = loading.elapsed().as_millis() as u64,
        "phone numbering plans loaded"
    );
    let running = payrelay::app::start(config).await?;
    let token = running.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested; finishing in-flight invoices"),
        _ = token.cancelled() => {}
    }
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// What the configured store knows of the invoice's customer (preferences,
/// stopped addresses), for `payrelay route`. When the store cannot be
/// opened (a SQLite file that does not exist yet is not created), says so
/// in one line and routes without it.
async fn stored_profile(config: &Config, invoice: &payrelay::invoice::Invoice) -> payrelay::domain::debtor::Profile {
    let url = config.store.url.expose();
    let missing_file = url
        .strip_prefix("sqlite://")
        .map(|path| path.split_once('?').map_or(path, |(p, _)| p))
        .is_some_and(|path| !std::path::Path::new(path).exists());
    let opened = if missing_file {
        Err("its SQLite file does not exist yet".to_owned())
    } else {
        let clock: std::sync::Arc<dyn payrelay::domain::clock::Clock> =
            std::sync::Arc::new(payrelay::domain::clock::SystemClock);
        match tokio::time::timeout(std::time::Duration::from_secs(5), payrelay::store::open(url, clock)).await {
            Ok(Ok(store)) => {
                let addresses = payrelay::store::hashed_contacts(invoice);
                store
                    .debtor(&invoice.key.biller_id, &invoice.customer_key(), &addresses)
                    .await
                    .map_err(|e| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("it did not answer within 5 s".to_owned()),
        }
    };
    opened.unwrap_or_else(|why| {
        eprintln!("note: the store could not be read ({why}); routed without stopped channels and preferences");
        payrelay::domain::debtor::Profile::default()
    })
}
