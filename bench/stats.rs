//! The `stats` phase: how long `GET /v1/stats` takes over a big store.
//!
//! Fills a fresh store (SQLite, then a fresh PostgreSQL schema) with
//! `--stats-invoices` invoices spread evenly over 60 days among four
//! billers (`acme` has half of them), with their attempts, clicks and
//! payments, by bulk SQL into the store's own schema (made by opening the
//! store, so every migration and index is there). Then it times
//! `Store::stats`, the call the API makes, for `acme`'s last 30 days:
//! the whole funnel and `by=channel|rule|step`, each three times on the
//! same store (the first read after the fill, then warm).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sqlx::Connection as _;
use time::macros::date;

use payrelay::domain::clock::SystemClock;
use payrelay::store::stats::{GroupBy, StatsQuery};

/// The last day of the data; the period is its 30 days up to it.
const LAST_DAY: time::Date = date!(2026 - 03 - 31);
/// Days the invoices are spread over.
const DAYS: i64 = 60;
const DAY_MS: i64 = 86_400_000;
/// Times each query runs.
const RUNS: usize = 3;

/// The first millisecond of the data.
fn start_ms() -> i64 {
    let end = LAST_DAY.next_day().unwrap_or(LAST_DAY).midnight().assume_utc();
    (end.unix_timestamp() * 1000) - DAYS * DAY_MS
}

/// An `invoice_json` of the size real invoices have (the stats never read
/// it, but it decides how many pages the rows around it take).
fn invoice_json() -> String {
    format!(
        "{{\"kind\":\"payment_request\",\"description\":\"Electricity, February 2026\",\"pad\":\"{}\"}}",
        "x".repeat(700)
    )
}

/// The rows of every table, as one SQL script over `i` in [0, n): `{series}`
/// is the database's way to count. Invoice `i` belongs to `acme` when even,
/// else to one of three others; a twentieth have a second revision; a
/// third of first messages go by SMS, the rest by email; one in twenty
/// fails; three in five are reported delivered; a third are opened; a
/// quarter get an `overdue` reminder; a quarter are paid five hours in.
fn fill_script(n: i64, series: &str, with_links_on_attempts: bool) -> Vec<String> {
    let start = start_ms();
    let spread = DAYS * DAY_MS / n.max(1);
    let received = format!("({start} + i * {spread} + i % 997)");
    // Computed here: PostgreSQL multiplies two integer literals as 32-bit.
    let expiry = 45 * DAY_MS;
    let biller = "CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'biller' || (i % 3) END";
    let mut script = vec![format!(
        "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, received_ms, updated_ms,
                               customer, routed_by, currency, amount_minor, first_received_ms)
         SELECT {biller}, 'INV-' || i, 1, CASE WHEN i % 20 = 0 THEN 'superseded' ELSE 'sent' END, $1,
                {received}, {received}, 'c' || (i % 200000),
                CASE i % 10 WHEN 0 THEN 'rule:mexican mobiles' WHEN 1 THEN 'rule:mexican mobiles'
                            WHEN 2 THEN 'rule:big amounts' WHEN 3 THEN 'invoice_channels' ELSE 'default' END,
                CASE WHEN i % 7 = 0 THEN 'EUR' ELSE 'MXN' END, 10000 + i % 50000, {received}
         FROM {series}"
    )];
    script.push(format!(
        "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, received_ms, updated_ms,
                               customer, routed_by, currency, amount_minor, first_received_ms)
         SELECT {biller}, 'INV-' || i, 2, 'sent', $1, {received} + 7200000, {received} + 7200000,
                'c' || (i % 200000), 'default', 'MXN', 20000 + i % 50000, {received}
         FROM {series} WHERE i % 20 = 0"
    ));
    // Attempt ids: 3i (first request), 3i + 1 (reminder), 3i + 2 (revision 2).
    let attempt = |id: &str, revision: &str, channel: &str, state: &str, step: &str, at: &str, filter: &str| {
        let links = if with_links_on_attempts {
            ", token_hash, expires_ms, clicks, first_click_ms"
        } else {
            ""
        };
        let link_values = if with_links_on_attempts {
            format!(
                ", 'h' || ({id}), {at} + {expiry}, CASE WHEN i % 3 = 0 THEN 1 + i % 4 ELSE 0 END,
                 CASE WHEN i % 3 = 0 THEN {at} + 3600000 END"
            )
        } else {
            String::new()
        };
        format!(
            "INSERT INTO attempts (id, biller_id, invoice_id, revision, channel, attempt, state, provider_message_id,
                                   started_ms, finished_ms, delivered_ms, step{links})
             SELECT {id}, {biller}, 'INV-' || i, {revision}, {channel}, 1, {state}, 'p' || ({id}), {at}, {at} + 500,
                    CASE WHEN i % 5 < 3 THEN {at} + 60000 END, {step}{link_values}
             FROM {series} {filter}"
        )
    };
    let first = format!("{received} + 1000");
    script.push(attempt(
        "3 * i",
        "1",
        "CASE WHEN i % 3 = 1 THEN 'sms' ELSE 'email' END",
        "CASE WHEN i % 20 = 7 THEN 'failed' ELSE 'sent' END",
        "NULL",
        &first,
        "",
    ));
    let reminder = format!("{received} + 3 * {DAY_MS}");
    script.push(attempt(
        "3 * i + 1",
        "1",
        "'sms'",
        "'sent'",
        "'overdue'",
        &reminder,
        "WHERE i % 4 = 1",
    ));
    let second = format!("{received} + 7201000");
    script.push(attempt(
        "3 * i + 2",
        "2",
        "'email'",
        "'sent'",
        "NULL",
        &second,
        "WHERE i % 20 = 0",
    ));
    if !with_links_on_attempts {
        script.push(format!(
            "INSERT INTO paylinks (token_hash, attempt_id, biller_id, invoice_id, revision, channel, created_ms,
                                   expires_ms, clicks, first_click_ms)
             SELECT 'h' || a.id, a.id, a.biller_id, a.invoice_id, a.revision, a.channel, a.started_ms,
                    a.started_ms + {expiry},
                    CASE WHEN (a.id / 3) % 3 = 0 THEN 1 + (a.id / 3) % 4 ELSE 0 END,
                    CASE WHEN (a.id / 3) % 3 = 0 THEN a.started_ms + 3600000 END
             FROM attempts a"
        ));
        script.push("SELECT setval(pg_get_serial_sequence('attempts', 'id'), (SELECT MAX(id) FROM attempts))".into());
    }
    script.push(format!(
        "INSERT INTO closures (biller_id, invoice_id, status, closed_ms)
         SELECT {biller}, 'INV-' || i, CASE WHEN i % 50 = 3 THEN 'cancelled' ELSE 'paid' END, {received} + 18000000
         FROM {series} WHERE i % 4 = 0 OR i % 50 = 3"
    ));
    script
}

/// One row of the phase's table.
struct Timing {
    store: &'static str,
    by: &'static str,
    invoices: u64,
    runs: Vec<Duration>,
}

/// Times `Store::stats` on `store` for every split.
async fn time_queries(store: &dyn payrelay::store::Store, name: &'static str) -> Result<Vec<Timing>> {
    let mut timings = Vec::new();
    for (by, label) in [
        (None, "(funnel only)"),
        (Some(GroupBy::Channel), "channel"),
        (Some(GroupBy::Rule), "rule"),
        (Some(GroupBy::Step), "step"),
    ] {
        let query = StatsQuery {
            biller_id: "acme".into(),
            from: LAST_DAY - time::Duration::days(29),
            to: LAST_DAY,
            by,
        };
        let mut runs = Vec::new();
        let mut invoices = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let stats = store.stats(&query).await.context("the stats query")?;
            runs.push(started.elapsed());
            invoices = stats.funnel.received;
        }
        eprintln!("stats: {name} by {label}: {invoices} invoices, {runs:?}");
        timings.push(Timing {
            store: name,
            by: label,
            invoices,
            runs,
        });
    }
    Ok(timings)
}

async fn sqlite(n: i64, dir: &Path) -> Result<(Vec<Timing>, Duration, u64)> {
    let path = dir.join("stats.db");
    let url = format!("sqlite://{}", path.display());
    // The store makes its schema, then lets go of the file.
    drop(payrelay::store::open(&url, Arc::new(SystemClock)).await?);
    let filled = Instant::now();
    let fill_path = path.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut conn = rusqlite::Connection::open(&fill_path)?;
        conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")?;
        let tx = conn.transaction()?;
        let series = format!(
            "(WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n} - 1) SELECT i FROM c)"
        );
        for statement in fill_script(n, &series, true) {
            let mut stmt = tx.prepare(&statement)?;
            if stmt.parameter_count() == 1 {
                stmt.execute([invoice_json()])?;
            } else {
                stmt.execute([])?;
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    })
    .await??;
    let fill = filled.elapsed();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let store = payrelay::store::open(&url, Arc::new(SystemClock)).await?;
    let timings = time_queries(store.as_ref(), "SQLite").await?;
    Ok((timings, fill, bytes))
}

async fn postgres(n: i64, admin_url: &str) -> Result<(Vec<Timing>, Duration, u64)> {
    let schema = format!("payrelay_bench_stats_{:08x}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| "PostgreSQL must answer at --stats-postgres-url")?;
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut admin)
        .await?;
    let result = async {
        let mut url = url::Url::parse(admin_url)?;
        url.query_pairs_mut().append_pair("options[search_path]", &schema);
        drop(payrelay::store::open(url.as_str(), Arc::new(SystemClock)).await?);
        let filled = Instant::now();
        let mut conn = sqlx::PgConnection::connect(url.as_str()).await?;
        sqlx::query("SET synchronous_commit = off").execute(&mut conn).await?;
        let series = format!("generate_series(0::BIGINT, {n} - 1) AS s(i)");
        for statement in fill_script(n, &series, false) {
            if statement.contains("$1") {
                sqlx::query(&statement).bind(invoice_json()).execute(&mut conn).await?;
            } else {
                sqlx::query(&statement).execute(&mut conn).await?;
            }
        }
        // What autovacuum does after a bulk load (PostgreSQL 13 and later
        // vacuum tables that only grow too): statistics for the planner, and
        // the visibility map that lets the stats read the invoices' index
        // alone. The service itself runs neither.
        for table in ["invoices", "closures", "attempts", "paylinks"] {
            sqlx::query(&format!("VACUUM ANALYZE {table}"))
                .execute(&mut conn)
                .await?;
        }
        let fill = filled.elapsed();
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c
             JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await?;
        let store = payrelay::store::open(url.as_str(), Arc::new(SystemClock)).await?;
        let timings = time_queries(store.as_ref(), "PostgreSQL").await?;
        Ok::<_, anyhow::Error>((timings, fill, u64::try_from(bytes).unwrap_or(0)))
    }
    .await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut admin)
        .await?;
    result
}

/// Runs the phase; answers its part of the report (markdown).
pub async fn run(n: usize, dir: &Path, postgres_url: &str) -> Result<String> {
    let n = i64::try_from(n).context("--stats-invoices")?;
    let (mut timings, sqlite_fill, sqlite_bytes) = sqlite(n, dir).await?;
    let (pg_timings, pg_fill, pg_bytes) = postgres(n, postgres_url).await?;
    timings.extend(pg_timings);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### stats: `GET /v1/stats` over {n} invoices\n\n\
         {n} invoices over {DAYS} days (half of them `acme`'s), with their attempts, clicks and payments; \
         filled by bulk SQL in {:.0} s (SQLite, {:.0} MB) and {:.0} s (PostgreSQL, {:.0} MB). \
         `Store::stats` for `acme`, {} to {LAST_DAY} (30 days), {RUNS} runs each:\n",
        sqlite_fill.as_secs_f64(),
        sqlite_bytes as f64 / 1e6,
        pg_fill.as_secs_f64(),
        pg_bytes as f64 / 1e6,
        LAST_DAY - time::Duration::days(29),
    );
    let _ = writeln!(
        out,
        "| store | by | invoices in the period | first run | fastest | slowest |"
    );
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
    for t in &timings {
        let ms = |d: &Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let fastest = t.runs.iter().min().map(ms).unwrap_or_default();
        let slowest = t.runs.iter().max().map(ms).unwrap_or_default();
        let first = t.runs.first().map(ms).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {first} | {fastest} | {slowest} |",
            t.store, t.by, t.invoices
        );
    }
    Ok(out)
}
