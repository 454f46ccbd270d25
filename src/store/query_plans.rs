//! The plan of the scheduler's look for due journey steps
//! (`CLAIM_DUE_STEPS`), which runs every second over a table that keeps
//! every step ever planned: both stores must find the due ones through the
//! partial index `steps_due`, not by reading the table. The tests print the
//! plans (`cargo test --lib query_plans -- --nocapture`); bench/README.md
//! shows them for 100,000 steps (`PAYRELAY_PLAN_STEPS=100000`).
//!
//! Likewise the counts `/metrics` shows (`GAUGES`): every table that keeps
//! its history (invoices, steps, combine groups) is read through a partial
//! index; only the outbox, which holds just what is unpublished, is read
//! whole.

use std::time::Duration;

use rusqlite::{params, Connection};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection as _, Row as _};

use super::sql::{CLAIM_DUE_STEPS, GAUGES};

/// The scheduler's "now" in the plans.
const NOW_MS: i64 = 1_800_000_000_000;
/// The claims it takes over: older than this.
const IDLE_MS: i64 = 60_000;
/// Steps claimed per look (the scheduler's batch).
const BATCH: i64 = 500;

/// Steps in the table. A few thousand give both stores a stable plan.
fn step_count() -> i64 {
    std::env::var("PAYRELAY_PLAN_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000)
}

/// The rows of `n` steps, three per invoice, as SQL over an integer `i`
/// from 0: the first half sent in the past, the rest planned, of which a
/// twentieth is due now (a wave) and the others later.
fn step_rows(n: i64) -> String {
    let (half, wave) = (n / 2, n / 2 + n / 20);
    format!(
        "'acme', 'INV-' || (i / 3), 1, i % 3 + 1, 'standard', 'step',
         CASE WHEN i < {half} THEN 'sent' ELSE 'planned' END,
         CASE WHEN i < {half} THEN {NOW_MS} - ({half} - i) * 60000
              WHEN i < {wave} THEN {NOW_MS} - 1000
              ELSE {NOW_MS} + (i - {half}) * 60000 END"
    )
}

const STEP_COLUMNS: &str = "biller_id, invoice_id, revision, seq, journey, name, status, due_ms";

/// `EXPLAIN QUERY PLAN` as SQLite prints it: one line per step, indented
/// under its parent.
fn sqlite_plan(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_DUE_STEPS}")).unwrap();
    let rows: Vec<(i64, i64, String)> = stmt
        .query_map(params![NOW_MS, NOW_MS - IDLE_MS, BATCH], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let depth = |mut parent: i64| {
        let mut depth = 0;
        while let Some((_, up, _)) = rows.iter().find(|(id, _, _)| *id == parent) {
            depth += 1;
            parent = *up;
        }
        depth
    };
    rows.iter()
        .map(|(_, parent, detail)| format!("{}{detail}", "  ".repeat(depth(*parent))))
        .collect()
}

#[test]
fn sqlite_claims_due_steps_through_the_steps_due_index() {
    let n = step_count();
    let conn = Connection::open_in_memory().unwrap();
    for step in super::sqlite::MIGRATIONS {
        conn.execute_batch(step).unwrap();
    }
    conn.execute_batch(&format!(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n} - 1)
         INSERT INTO steps ({STEP_COLUMNS}) SELECT {} FROM c",
        step_rows(n)
    ))
    .unwrap();
    // The service never runs ANALYZE; a database that someone analyzed
    // must plan the same way.
    for analyzed in [false, true] {
        if analyzed {
            conn.execute_batch("ANALYZE").unwrap();
        }
        let plan = sqlite_plan(&conn);
        eprintln!(
            "SQLite, {n} steps{}:\n{}\n",
            if analyzed { ", after ANALYZE" } else { "" },
            plan.join("\n")
        );
        assert!(
            plan.iter().any(|l| l.contains("USING INDEX steps_due")),
            "the due steps are found through steps_due: {plan:#?}"
        );
        assert!(
            !plan.iter().any(|l| l.trim_start().starts_with("SCAN steps")),
            "the steps table is never read whole: {plan:#?}"
        );
    }
    // And the plan claims what is due, first due first.
    let claimed: Vec<i64> = conn
        .prepare(CLAIM_DUE_STEPS)
        .unwrap()
        .query_map(params![NOW_MS, NOW_MS - IDLE_MS, BATCH], |r| r.get(6))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(claimed.len() as i64, BATCH.min(n / 20));
    assert!(claimed.iter().all(|due| *due <= NOW_MS));
}

/// A schema of the test's own in the test database, dropped at the end,
/// also when the test fails.
struct PgSchema {
    admin: PgConnectOptions,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (admin, sql) = (
            self.admin.clone(),
            format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name),
        );
        // No runtime to await in while a failed test unwinds: a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = admin.connect().await.ok()?;
                sqlx::query(&sql).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// The lines of PostgreSQL's `EXPLAIN` output.
async fn pg_plan(
    conn: &mut sqlx::PgConnection,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Vec<String> {
    query
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect()
}

#[tokio::test]
async fn postgres_claims_due_steps_through_the_steps_due_index() {
    let n = step_count();
    let url = std::env::var("PAYRELAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let admin: PgConnectOptions = url.parse().unwrap();
    let schema = PgSchema {
        admin: admin.clone(),
        name: format!("payrelay_plan_{:016x}", rand::random::<u64>()),
    };
    let mut conn = tokio::time::timeout(Duration::from_secs(10), admin.connect())
        .await
        .unwrap_or_else(|_| panic!("PostgreSQL does not answer at {url}"))
        .unwrap_or_else(|e| panic!("PostgreSQL does not answer at {url}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA \"{}\"", schema.name))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("SET search_path = \"{}\"", schema.name))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::migrate!("src/store/migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO steps ({STEP_COLUMNS}) SELECT {} FROM generate_series(0::bigint, {n} - 1) AS i",
        step_rows(n)
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE steps").execute(&mut conn).await.unwrap();

    // The plan for the values bound, which PostgreSQL makes for each run
    // of a prepared statement until it finds a generic plan as cheap.
    let explain = format!("EXPLAIN {CLAIM_DUE_STEPS}");
    let query = sqlx::query(&explain).bind(NOW_MS).bind(NOW_MS - IDLE_MS).bind(BATCH);
    let custom = pg_plan(&mut conn, query).await;
    // The generic plan, for any values: what it would switch to.
    sqlx::raw_sql(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE claim(bigint, bigint, bigint) AS {CLAIM_DUE_STEPS}"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let execute = format!("EXPLAIN EXECUTE claim({NOW_MS}, {}, {BATCH})", NOW_MS - IDLE_MS);
    let generic = pg_plan(&mut conn, sqlx::query(&execute)).await;
    for (which, plan) in [("for the values bound", &custom), ("generic", &generic)] {
        eprintln!("PostgreSQL, {n} steps, ANALYZE, plan {which}:\n{}\n", plan.join("\n"));
        assert!(
            plan.iter().any(|l| l.contains("using steps_due on steps")),
            "the due steps are found through steps_due ({which}): {plan:#?}"
        );
    }
    let _ = conn.close().await;
    drop(schema);
}

/// Rows for the gauges' plans over a series `i` of `n`: invoices mostly
/// sent (a fiftieth accepted, of which some held), combine groups mostly
/// done, steps mostly sent (the planned ones a few held).
fn gauge_rows(n: i64, series: &str) -> [String; 3] {
    [
        format!(
            "INSERT INTO invoices (biller_id, invoice_id, revision, status, invoice_json, received_ms, updated_ms,
                                   held_until_ms, combine_group)
             SELECT 'acme', 'INV-' || i, 1, CASE WHEN i % 50 = 0 THEN 'accepted' ELSE 'sent' END, '{{}}', 0, 0,
                    CASE WHEN i % 100 = 0 THEN {NOW_MS} END, 'g-' || (i / 3) FROM {series}"
        ),
        format!(
            "INSERT INTO combine_groups (id, biller_id, customer, currency, status, due_ms, created_ms)
             SELECT 'g-' || i, 'acme', 'c-' || i, 'MXN',
                    CASE WHEN i % 200 = 0 THEN 'open' WHEN i % 201 = 0 THEN 'held' ELSE 'done' END, 0, 0
             FROM {series} WHERE i < {n} / 3"
        ),
        format!(
            "INSERT INTO steps ({STEP_COLUMNS}, held) SELECT {},
                    CASE WHEN i >= {n} / 2 AND i % 97 = 0 THEN 'cap'
                         WHEN i >= {n} / 2 AND i % 89 = 0 THEN 'quiet_hours' END
             FROM {series}",
            step_rows(n)
        ),
    ]
}

#[test]
fn sqlite_counts_the_gauges_through_partial_indexes() {
    let n = step_count();
    let conn = Connection::open_in_memory().unwrap();
    for step in super::sqlite::MIGRATIONS {
        conn.execute_batch(step).unwrap();
    }
    let series =
        format!("(WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n} - 1) SELECT i FROM c)");
    for insert in gauge_rows(n, &series) {
        conn.execute_batch(&insert).unwrap();
    }
    for analyzed in [false, true] {
        if analyzed {
            conn.execute_batch("ANALYZE").unwrap();
        }
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {GAUGES}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        eprintln!(
            "SQLite gauges, {n} rows each{}:\n{}\n",
            if analyzed { ", after ANALYZE" } else { "" },
            plan.join("\n")
        );
        for index in [
            "invoices_held",
            "combine_groups_waiting",
            "invoices_by_group",
            "steps_held",
            "steps_due",
        ] {
            assert!(plan.iter().any(|l| l.contains(index)), "{index} is used: {plan:#?}");
        }
        let whole: Vec<&String> = plan
            .iter()
            .filter(|l| l.starts_with("SCAN ") && !l.contains(" USING ") && *l != "SCAN CONSTANT ROW")
            .collect();
        assert_eq!(whole, ["SCAN outbox"], "only the outbox is read whole: {plan:#?}");
    }
    // What it costs the writer thread, which runs it between writes.
    let started = std::time::Instant::now();
    let planned: i64 = conn.query_row(GAUGES, [], |r| r.get(6)).unwrap();
    eprintln!("SQLite gauges, {n} rows each: counted in {:?}", started.elapsed());
    assert_eq!(planned, n - n / 2, "the planned half of the steps");
}

#[tokio::test]
async fn postgres_counts_the_gauges_through_partial_indexes() {
    let n = step_count();
    let url = std::env::var("PAYRELAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let admin: PgConnectOptions = url.parse().unwrap();
    let schema = PgSchema {
        admin: admin.clone(),
        name: format!("payrelay_plan_{:016x}", rand::random::<u64>()),
    };
    let mut conn = tokio::time::timeout(Duration::from_secs(10), admin.connect())
        .await
        .unwrap_or_else(|_| panic!("PostgreSQL does not answer at {url}"))
        .unwrap_or_else(|e| panic!("PostgreSQL does not answer at {url}: {e}"));
    for setup in [
        format!("CREATE SCHEMA \"{}\"", schema.name),
        format!("SET search_path = \"{}\"", schema.name),
    ] {
        sqlx::query(&setup).execute(&mut conn).await.unwrap();
    }
    sqlx::migrate!("src/store/migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();
    let series = format!("generate_series(0::bigint, {n} - 1) AS i");
    for insert in gauge_rows(n, &series) {
        sqlx::query(&insert).execute(&mut conn).await.unwrap();
    }
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    let plan = pg_plan(&mut conn, sqlx::query(&format!("EXPLAIN {GAUGES}"))).await;
    eprintln!("PostgreSQL gauges, {n} rows each, ANALYZE:\n{}\n", plan.join("\n"));
    for index in ["invoices_held", "invoices_by_group", "steps_held", "steps_due"] {
        assert!(plan.iter().any(|l| l.contains(index)), "{index} is used: {plan:#?}");
    }
    let whole: Vec<&str> = plan
        .iter()
        .filter_map(|l| l.split("Seq Scan on ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(whole, ["outbox"], "only the outbox is read whole: {plan:#?}");
    let started = std::time::Instant::now();
    let row = sqlx::query(GAUGES).fetch_one(&mut conn).await.unwrap();
    eprintln!("PostgreSQL gauges, {n} rows each: counted in {:?}", started.elapsed());
    assert_eq!(row.get::<i64, _>(6), n - n / 2, "the planned half of the steps");
    let _ = conn.close().await;
    drop(schema);
}
