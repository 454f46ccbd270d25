//! A real SMTP listener for tests: speaks enough of RFC 5321 for lettre
//! (EHLO/HELO, MAIL, RCPT, DATA with dot-stuffing, RSET, NOOP, QUIT) and
//! keeps every message it accepts. Recipients can be made to fail with a
//! chosen reply, to test permanent and transient classification.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Recipient -> replies to give to RCPT, one per attempt; when the list
    /// is used up the recipient is accepted.
    failures: Mutex<HashMap<String, Vec<String>>>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let addr = listener.local_addr().expect("smtp addr");
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let _ = session(stream, shared).await;
                });
            }
        });
        SmtpServer { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Makes RCPT for `recipient` answer each of `replies` in turn (e.g.
    /// "550 5.1.1 no such user" or "451 4.3.0 try later").
    pub fn fail_recipient(&self, recipient: &str, replies: &[&str]) {
        self.shared
            .failures
            .lock()
            .unwrap()
            .insert(recipient.to_owned(), replies.iter().map(|r| r.to_string()).collect());
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived, or panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} emails within {within:?}, got {}", self.received().len());
            }
        }
    }
}

async fn session(stream: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 payrelay-test ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: String = if command.starts_with("EHLO") {
            "250-payrelay-test\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            "250 ok".into()
        } else if command.starts_with("RSET") || command.starts_with("MAIL FROM") {
            recipients.clear();
            "250 ok".into()
        } else if command.starts_with("RCPT TO") {
            let address = line
                .trim_end()
                .split_once(':')
                .map(|(_, a)| {
                    a.trim()
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .unwrap_or_default();
            let failure = {
                let mut failures = shared.failures.lock().unwrap();
                failures.get_mut(&address).and_then(|replies| {
                    if replies.is_empty() {
                        None
                    } else {
                        Some(replies.remove(0))
                    }
                })
            };
            match failure {
                Some(reply) => reply,
                None => {
                    recipients.push(address);
                    "250 ok".into()
                }
            }
        } else if command == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut raw = Vec::new();
                if lines.read_until(b'\n', &mut raw).await? == 0 {
                    return Ok(());
                }
                if raw == b".\r\n" || raw == b".\n" {
                    break;
                }
                let unstuffed = if raw.starts_with(b"..") { &raw[1..] } else { &raw[..] };
                data.extend_from_slice(unstuffed);
            }
            shared.received.lock().unwrap().push(Received {
                recipients: std::mem::take(&mut recipients),
                data,
            });
            shared.arrived.notify_waiters();
            "250 queued".into()
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 not implemented".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}
