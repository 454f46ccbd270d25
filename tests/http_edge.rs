//! The HTTP edge strangers reach, on the real binary through raw sockets:
//! slow and idle clients are disconnected, connections are capped, a
//! trickling body times out and an oversized one is refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::{free_port, Service};
use common::AMQP_URL;

/// The real binary with `http` appended to its `[http]` section.
struct Edge {
    _dir: tempfile::TempDir,
    _service: Service,
    port: u16,
}

fn start(http: &str) -> Edge {
    let id = payrelay::domain::ids::random_id()[..10].to_owned();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config: PathBuf = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[broker]
url = "{AMQP_URL}"
queue = "payrelay.test.{id}.edge"
events_exchange = "payrelay.test.{id}.edge-events"
[http]
listen = "127.0.0.1:{port}"
{http}
[billers.acme]
checkout_url = "https://pay.example/{{token}}"
webhook_secret = "s3cret"
[channels.email]
transport = "file"
"#
        ),
    )
    .unwrap();
    let service = Service::spawn(&config);
    let deadline = Instant::now() + common::WAIT;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            if s.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "payrelay did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Edge {
        _dir: dir,
        _service: service,
        port,
    }
}

impl Edge {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        s
    }
}

/// Waits for the server to close `s`: true if it did (end of stream or a
/// reset) before the socket's read timeout, with anything it sent first.
fn closed_by_server(s: &mut TcpStream) -> (bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (false, String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return (true, String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

#[test]
fn half_sent_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let edge = start(r#"header_timeout = "1s""#);
    let mut half = edge.connect();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap();
    let mut idle = edge.connect();
    let started = Instant::now();
    assert!(closed_by_server(&mut half).0, "a half-sent request stayed open");
    assert!(closed_by_server(&mut idle).0, "an idle connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed late: {:?}",
        started.elapsed()
    );
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let edge = start("max_connections = 2\nheader_timeout = \"60s\"");
    let idle: Vec<TcpStream> = (0..2).map(|_| edge.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = edge.connect();
    third.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (_, early) = closed_by_server(&mut third);
    assert!(
        early.is_empty(),
        "a third connection was served past the cap of 2: {early}"
    );
    drop(idle);
    third.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let (closed, answer) = closed_by_server(&mut third);
    assert!(
        closed && answer.starts_with("HTTP/1.1 200"),
        "answered once a slot freed: {answer:?}"
    );
}

#[test]
fn a_body_that_trickles_is_answered_408_at_the_request_timeout() {
    let edge = start(r#"request_timeout = "1s""#);
    let mut s = edge.connect();
    s.write_all(
        b"POST /v1/payments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"bi",
    )
    .unwrap();
    let started = Instant::now();
    let (_, answer) = closed_by_server(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_body_over_the_limit_is_refused_413() {
    let edge = start("max_body_bytes = 1024");
    let mut s = edge.connect();
    let body = format!("{{\"biller_id\":\"acme\",\"invoice_id\":\"{}\"}}", "x".repeat(2000));
    write!(
        s,
        "POST /v1/payments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (_, answer) = closed_by_server(&mut s);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

/// The answer to `GET path` on `port`, with a bearer `token` if any.
fn get(port: u16, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn with_an_admin_address_the_operators_routes_answer_only_there() {
    let admin = free_port();
    let edge = start(&format!(
        "admin_listen = \"127.0.0.1:{admin}\"\nadmin_token = \"root-token\""
    ));
    let stats = "/v1/stats?biller_id=acme&from=2026-03-01&to=2026-03-02&by=channel";
    for path in ["/metrics", stats] {
        let answer = get(admin, path, Some("root-token"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{path} on the admin port: {answer}");
        let answer = get(edge.port, path, Some("root-token"));
        assert!(
            answer.starts_with("HTTP/1.1 404"),
            "{path} on the public port: {answer}"
        );
    }
    let figures = get(admin, stats, Some("root-token"));
    assert!(
        figures.contains(r#""biller_id":"acme""#) && figures.contains(r#""by":"channel""#),
        "{figures}"
    );
    assert!(
        get(admin, stats, None).starts_with("HTTP/1.1 401"),
        "the admin port still wants the token"
    );
    assert!(get(admin, "/v1/stats?biller_id=acme&from=yesterday", Some("root-token")).starts_with("HTTP/1.1 400"));
    assert!(get(edge.port, "/healthz", None).starts_with("HTTP/1.1 200"));
    assert!(
        get(admin, "/p/nothing-here", None).starts_with("HTTP/1.1 404"),
        "no pay pages on the admin port"
    );
}

#[test]
fn without_an_admin_address_one_listener_serves_everything() {
    let edge = start("admin_token = \"root-token\"");
    assert!(get(edge.port, "/metrics", None).starts_with("HTTP/1.1 200"));
    let answer = get(edge.port, "/v1/stats?biller_id=acme", Some("root-token"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
