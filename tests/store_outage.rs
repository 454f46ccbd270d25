//! Store trouble on the real stores, with the real broker: an SQLite file
//! whose write lock another connection holds (as another process would),
//! and a PostgreSQL server that cannot be reached. While the store cannot
//! answer, nothing is sent, nothing is acked or dead-lettered and `/readyz`
//! answers 503 within about a second; when it is back,
//! every invoice goes out exactly once and the store's statuses match the
//! emails actually sent.
//!
//! Each fault lasts until the store's failure has reached the consumer (a
//! delivery kept after a store error, counted in
//! `payrelay_invoices_total{outcome="store_retry"}`): a fault shorter than the
//! store's own waits (SQLite's busy timeout, the PostgreSQL pool's acquire
//! timeout, 10 s each) would only make calls slow, never fail them.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::PgSchema;
use common::{invoice, Options, TestEnv, WAIT};
use serde_json::Value;
use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Invoices published while the store is away.
const N: usize = 20;
/// Invoices sent before the fault, to see the service work first.
const WARM: usize = 3;
/// The longest a `/readyz` answer may take while the store does not answer
/// (the service waits 1 s for its store ping; the rest is slack for a
/// loaded machine).
const READYZ_BOUND: Duration = Duration::from_secs(3);
/// A fault lasts at least this long, and ends once the consumer has met a
/// store error...
const MIN_FAULT: Duration = Duration::from_secs(5);
/// ...which must happen within this long (SQLite: two busy timeouts, see
/// `sqlite_locked_by_another_connection_*`; PostgreSQL: one acquire timeout).
const MAX_FAULT: Duration = Duration::from_secs(32);

// ---------------------------------------------------------------------------
// SQLite: another connection holds the write lock

/// A separate connection to the service's SQLite file that holds
/// `BEGIN EXCLUSIVE` until released (or dropped, also by a failing test).
struct SqliteLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqliteLock {
    fn take(path: &Path) -> SqliteLock {
        let path = path.to_owned();
        let (taken_tx, taken) = std::sync::mpsc::channel::<Result<(), String>>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let locked = (|| {
                let conn = rusqlite::Connection::open(&path)?;
                conn.busy_timeout(Duration::from_secs(20))?;
                conn.execute_batch("BEGIN EXCLUSIVE")?;
                Ok::<_, rusqlite::Error>(conn)
            })();
            let conn = match locked {
                Ok(conn) => {
                    let _ = taken_tx.send(Ok(()));
                    conn
                }
                Err(e) => {
                    let _ = taken_tx.send(Err(e.to_string()));
                    return;
                }
            };
            // Released on purpose, or the test is gone.
            let _ = released.recv();
            conn.execute_batch("ROLLBACK").expect("end the exclusive transaction");
        });
        taken
            .recv()
            .expect("the lock thread answers")
            .unwrap_or_else(|e| panic!("cannot lock the SQLite file: {e}"));
        SqliteLock {
            release: Some(release),
            thread: Some(thread),
        }
    }

    fn release(mut self) {
        self.release.take();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the lock thread ends");
        }
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        self.release.take();
    }
}

/// Every invoice's status and the states of its attempts, from the file.
fn sqlite_statuses(path: &Path) -> BTreeMap<String, (String, Vec<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut invoices = conn.prepare("SELECT invoice_id, status FROM invoices").unwrap();
    for row in invoices
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (id, status) = row.unwrap();
        out.insert(id, (status, Vec::new()));
    }
    let mut attempts = conn
        .prepare("SELECT invoice_id, state FROM attempts ORDER BY id")
        .unwrap();
    for row in attempts
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (id, state) = row.unwrap();
        out.entry(id).or_default().1.push(state);
    }
    out
}

/// SQLite keeps a writer waiting up to its busy timeout (10 s), then the
/// store's group commit fails and every call in the group gets a store
/// error. The group that is waiting when the lock is taken holds the
/// outbox publisher's poll (every 250 ms), so the invoices published just
/// after it land in the next group: their store error comes at about two
/// busy timeouts (~20 s). A lock that ends after one busy timeout (12 s)
/// would fail only that first group, and the invoices would merely wait;
/// this one is held until the consumer met the error, so the path it
/// proves is "group commit fails -> store error -> delivery kept and
/// retried, not requeued".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_connection_holds_invoices_and_sends_each_once_after() {
    let env = TestEnv::start_with(Options {
        // A requeue per try would dead-letter after two: the outage must not spend it.
        delivery_limit: 2,
        ..Options::default()
    })
    .await;
    let db: PathBuf = env.dir.path().join("var/payrelay.db");
    let mut all = invoices("SQL", WARM + N);
    let fault_invoices = all.split_off(WARM);
    warm_up(&env, &all).await;

    let lock = SqliteLock::take(&db);
    let locked = Instant::now();
    let outage = hold_fault(&env, locked, &fault_invoices, WARM).await;
    lock.release();
    let recovery = recover(&env, Instant::now(), WARM + N).await;

    all.extend(fault_invoices);
    let statuses = sqlite_statuses(&db);
    verify(&env, "SQLite locked", &all, &statuses, &outage, &recovery, true).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------
// PostgreSQL: the server cannot be reached

/// A TCP relay to PostgreSQL that the test can cut (every relayed
/// connection closed, new ones refused: the port is not listened on) and
/// restore (on the same port).
struct Relay {
    port: u16,
    upstream: SocketAddr,
    running: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    /// Relayed connections open now, and ever.
    open: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = listen(0);
        let port = listener.local_addr().unwrap().port();
        let relay = Relay {
            port,
            upstream,
            running: Mutex::new(None),
            open: Arc::new(AtomicUsize::new(0)),
            total: Arc::new(AtomicUsize::new(0)),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        let (upstream, open, total) = (self.upstream, self.open.clone(), self.total.clone());
        let accept_token = token.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    // Dropping the listener makes new connections refused.
                    _ = accept_token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let (token, open, total) = (accept_token.clone(), open.clone(), total.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    open.fetch_add(1, Ordering::SeqCst);
                    total.fetch_add(1, Ordering::SeqCst);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                    drop((inbound, outbound));
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        *self.running.lock().unwrap() = Some((token, task));
    }

    /// Closes every relayed connection and stops listening; how many were open.
    async fn cut(&self) -> usize {
        let open = self.open.load(Ordering::SeqCst);
        let running = self.running.lock().unwrap().take();
        if let Some((token, task)) = running {
            token.cancel();
            task.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "relayed connections did not close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open
    }

    /// Listens again on the same port.
    fn restore(&self) {
        self.serve(listen(self.port));
    }
}

fn listen(port: u16) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("relay cannot bind 127.0.0.1:{port}: {e}"));
    socket.listen(128).unwrap()
}

async fn postgres_statuses(schema: &PgSchema) -> BTreeMap<String, (String, Vec<String>)> {
    let mut admin = sqlx::PgConnection::connect(&schema.admin_url).await.unwrap();
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let invoices: Vec<(String, String)> =
        sqlx::query_as(&format!("SELECT invoice_id, status FROM \"{}\".invoices", schema.name))
            .fetch_all(&mut admin)
            .await
            .unwrap();
    for (id, status) in invoices {
        out.insert(id, (status, Vec::new()));
    }
    let attempts: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT invoice_id, state FROM \"{}\".attempts ORDER BY id",
        schema.name
    ))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    for (id, state) in attempts {
        out.entry(id).or_default().1.push(state);
    }
    let _ = admin.close().await;
    out
}

/// A service whose store is a fresh schema reached through a [`Relay`].
async fn postgres_env() -> (PgSchema, Relay, TestEnv) {
    let schema = PgSchema::create("payrelay_outage").await;
    let admin_url = schema.admin_url.clone();
    let parsed = url::Url::parse(&admin_url).unwrap();
    let upstream = tokio::net::lookup_host((parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .expect("PostgreSQL's address");
    let relay = Relay::start(upstream).await;
    let mut store_url = parsed.clone();
    store_url.set_host(Some("127.0.0.1")).unwrap();
    store_url.set_port(Some(relay.port)).unwrap();
    store_url
        .query_pairs_mut()
        .append_pair("options[search_path]", &schema.name);

    let env = TestEnv::start_with(Options {
        // A requeue per try would dead-letter after two: the outage must not spend it.
        delivery_limit: 2,
        store_url: Some(store_url.into()),
        ..Options::default()
    })
    .await;
    (schema, relay, env)
}

/// The pool waits for a connection up to its acquire timeout (10 s) while
/// the server refuses, then the call fails: the relay stays cut until that
/// store error reached the consumer, so the delivery was really kept and
/// retried, not just slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_holds_invoices_and_sends_each_once_after() {
    let (schema, relay, env) = postgres_env().await;
    let mut all = invoices("PG", WARM + N);
    let fault_invoices = all.split_off(WARM);
    warm_up(&env, &all).await;

    let cut = Instant::now();
    let closed = relay.cut().await;
    let outage = hold_fault(&env, cut, &fault_invoices, WARM).await;
    relay.restore();
    let recovery = recover(&env, Instant::now(), WARM + N).await;

    all.extend(fault_invoices);
    let statuses = postgres_statuses(&schema).await;
    verify(
        &env,
        "PostgreSQL unreachable",
        &all,
        &statuses,
        &outage,
        &recovery,
        true,
    )
    .await;
    println!(
        "PostgreSQL unreachable: {closed} connections cut, {} relayed in all",
        relay.total.load(Ordering::SeqCst)
    );
    env.finish().await;
}

/// The same outage beginning while a batch is being handled: invoices
/// caught half-way (accepted and not sent, or sent and not recorded) must
/// go out once too: the retry of one accepted but not sent is sent, and a
/// send made but not recorded is recorded, not made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_in_the_middle_of_a_batch_sends_each_once_after() {
    const BATCH: usize = 100;
    let (schema, relay, env) = postgres_env().await;
    wait_readyz(&env, 200, WAIT).await;
    let all = invoices("MID", BATCH);
    env.publish(&all).await;
    env.smtp.wait_for(BATCH / 10, WAIT).await;
    let cut = Instant::now();
    relay.cut().await;
    // Sends under way at the cut may still end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = env.smtp.received().len();
    println!("in the middle of a batch: cut after {before} of {BATCH} emails");
    assert!(before < BATCH, "the batch was over before the cut");
    let outage = hold_fault(&env, cut, &[], before).await;
    relay.restore();
    let recovery = recover(&env, Instant::now(), BATCH).await;

    let statuses = postgres_statuses(&schema).await;
    verify(
        &env,
        "PostgreSQL unreachable mid-batch",
        &all,
        &statuses,
        &outage,
        &recovery,
        false,
    )
    .await;
    env.finish().await;
}

// ---------------------------------------------------------------------------
// What both faults share

/// `count` invoices `INV-<tag>-<i>` for `<tag>-<i>@example.com`.
fn invoices(tag: &str, count: usize) -> Vec<Value> {
    let tag_lower = tag.to_lowercase();
    (0..count)
        .map(|i| invoice(&format!("INV-{tag}-{i}"), &format!("{tag_lower}-{i}@example.com")))
        .collect()
}

fn email_of(invoice: &Value) -> String {
    invoice["customer"]["email"].as_str().unwrap().to_owned()
}

/// The service is ready and sends before the fault.
async fn warm_up(env: &TestEnv, invoices: &[Value]) {
    wait_readyz(env, 200, WAIT).await;
    env.publish(invoices).await;
    env.smtp.wait_for(invoices.len(), WAIT).await;
    env.wait_for("invoice.sent", invoices.len()).await;
}

/// One `/readyz` answer and how long it took.
async fn readyz(env: &TestEnv) -> (u16, Duration) {
    let started = Instant::now();
    let response = env
        .http
        .get(format!("{}/readyz", env.base_url))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/readyz did not answer within 15 s: {e}"));
    (response.status().as_u16(), started.elapsed())
}

/// Asks `/readyz` until it answers `want`; how long that took.
async fn wait_readyz(env: &TestEnv, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = readyz(env).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz still answers {status}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deliveries the consumer kept after a store error
/// (`payrelay_invoices_total{outcome="store_retry"}`).
async fn store_errors_met(env: &TestEnv) -> u64 {
    let text = env.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("payrelay_invoices_total{") && l.contains("outcome=\"store_retry\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn sent_events(env: &TestEnv) -> usize {
    env.events_named("invoice.sent").len()
}

/// What was seen while the store was away.
struct Outage {
    until_503: Duration,
    slowest_readyz: Duration,
    readyz_probes: usize,
    lasted: Duration,
    store_errors: u64,
}

/// With the fault in place since `started`: sees `/readyz` go 503, publishes
/// `invoices`, and keeps checking that nothing is sent (no email, no
/// `invoice.sent`: nothing more than the `before` sent earlier) and that
/// `/readyz` answers 503 quickly, until the consumer has met a store error.
async fn hold_fault(env: &TestEnv, started: Instant, invoices: &[Value], before: usize) -> Outage {
    let sent_before = sent_events(env);
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    loop {
        let (status, took) = readyz(env).await;
        probes += 1;
        slowest = slowest.max(took);
        assert!(
            took <= READYZ_BOUND,
            "/readyz took {took:?} to answer while the store was away"
        );
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz still answers {status} 10 s into the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until_503 = started.elapsed();
    if !invoices.is_empty() {
        env.publish(invoices).await;
    }

    let mut last_probe = Instant::now();
    let store_errors = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let emails = env.smtp.received().len();
        assert_eq!(emails, before, "an email was sent while the store was away");
        assert_eq!(sent_events(env), sent_before, "invoice.sent while the store was away");
        if last_probe.elapsed() >= Duration::from_secs(2) {
            let (status, took) = readyz(env).await;
            probes += 1;
            slowest = slowest.max(took);
            assert_eq!(status, 503, "/readyz while the store is away");
            assert!(took <= READYZ_BOUND, "/readyz took {took:?} while the store was away");
            last_probe = Instant::now();
        }
        let met = store_errors_met(env).await;
        if met > 0 && started.elapsed() >= MIN_FAULT {
            break met;
        }
        assert!(
            started.elapsed() < MAX_FAULT,
            "no delivery met a store error within {MAX_FAULT:?} of the fault"
        );
    };
    // Nothing went out in the last moment either.
    assert_eq!(
        env.smtp.received().len(),
        before,
        "an email was sent while the store was away"
    );
    Outage {
        until_503,
        slowest_readyz: slowest,
        readyz_probes: probes,
        lasted: started.elapsed(),
        store_errors,
    }
}

/// How the service came back after the fault ended at `ended`.
struct Recovery {
    first_email: Duration,
    all_emails: Duration,
    ready: Duration,
}

async fn recover(env: &TestEnv, ended: Instant, total: usize) -> Recovery {
    let before = env.smtp.received().len();
    let ready_task = {
        let http = env.http.clone();
        let url = format!("{}/readyz", env.base_url);
        tokio::spawn(async move {
            loop {
                if let Ok(r) = http.get(&url).timeout(Duration::from_secs(15)).send().await {
                    if r.status() == 200 {
                        return ended.elapsed();
                    }
                }
                assert!(ended.elapsed() < WAIT, "/readyz not 200 again within {WAIT:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    env.smtp.wait_for(before + 1, WAIT).await;
    let first_email = ended.elapsed();
    env.smtp.wait_for(total, WAIT).await;
    let all_emails = ended.elapsed();
    env.wait_for("invoice.sent", total).await;
    let ready = ready_task.await.unwrap();
    Recovery {
        first_email,
        all_emails,
        ready,
    }
}

/// Every invoice sent exactly once, its status and attempts in the store
/// saying exactly that, nothing dead-lettered or rejected.
async fn verify(
    env: &TestEnv,
    what: &str,
    invoices: &[Value],
    statuses: &BTreeMap<String, (String, Vec<String>)>,
    outage: &Outage,
    recovery: &Recovery,
    events_once: bool,
) {
    // Late copies would show up here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut emails: BTreeMap<String, usize> = BTreeMap::new();
    for email in env.smtp.received() {
        for to in email.recipients {
            *emails.entry(to).or_default() += 1;
        }
    }
    // (event, invoice) -> how often it was published.
    let mut events: BTreeMap<(String, String), usize> = BTreeMap::new();
    for event in env.events() {
        let key = (
            event["event"].as_str().unwrap_or_default().to_owned(),
            event["invoice_id"].as_str().unwrap_or_default().to_owned(),
        );
        *events.entry(key).or_default() += 1;
    }
    let dead = common::messages_in_queue(&env.config.broker.dead_letter_queue()).await;
    println!(
        "{what}: /readyz 503 after {:?} (slowest of {} answers {:?}); fault held {:?}, \
         {} store errors met by deliveries; after it: first email {:?}, all {} emails {:?}, ready {:?}; \
         {} emails, {} invoice.sent events, {} dead letters",
        outage.until_503,
        outage.readyz_probes,
        outage.slowest_readyz,
        outage.lasted,
        outage.store_errors,
        recovery.first_email,
        invoices.len(),
        recovery.all_emails,
        recovery.ready,
        emails.values().sum::<usize>(),
        env.events_named("invoice.sent").len(),
        dead,
    );

    for invoice in invoices {
        let id = invoice["invoice_id"].as_str().unwrap();
        let to = email_of(invoice);
        assert_eq!(emails.get(&to).copied(), Some(1), "{id}: emails to {to}");
        let (status, attempts) = statuses.get(id).unwrap_or_else(|| panic!("{id} is not in the store"));
        assert_eq!(status, "sent", "{id}: stored status");
        if events_once {
            assert_eq!(attempts, &["sent"], "{id}: stored attempts");
        } else {
            // A connection cut during a commit can lose its answer: an
            // attempt recorded as starting whose handler never learned it
            // was, and so never sent it (the one email above says so). It
            // stays `sending`; the attempt that sent is the last.
            let (last, earlier) = attempts
                .split_last()
                .unwrap_or_else(|| panic!("{id}: no attempt stored"));
            assert_eq!(last, "sent", "{id}: stored attempts {attempts:?}");
            assert!(
                earlier.iter().all(|a| a == "sending"),
                "{id}: stored attempts {attempts:?}"
            );
        }
        // Events are at-least-once (a commit whose answer was lost is
        // written again), but where the store failed only while nothing of
        // these invoices was under way, none may be published twice.
        for name in ["invoice.accepted", "invoice.sent"] {
            let published = events.get(&(name.to_owned(), id.to_owned())).copied().unwrap_or(0);
            if events_once {
                assert_eq!(published, 1, "{id}: {name} published");
            } else {
                assert!(published >= 1, "{id}: no {name}");
            }
        }
    }
    assert_eq!(
        emails.values().sum::<usize>(),
        invoices.len(),
        "no other email: {emails:?}"
    );
    assert_eq!(statuses.len(), invoices.len(), "no other invoice in the store");
    assert_eq!(dead, 0, "nothing was dead-lettered");
    assert!(env.events_named("invoice.rejected").is_empty(), "nothing was rejected");
    assert!(
        env.events_named("invoice.duplicate").is_empty(),
        "no invoice was taken for a duplicate: {:#?}",
        env.events_named("invoice.duplicate")
    );
}
