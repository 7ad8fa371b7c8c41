//! A local stand-in for a Slack Incoming Webhook: a minimal HTTP/1.1 server on a loopback port that
//! answers from a script, as Slack documents (200 `ok`; 429 with `Retry-After`; 5xx; 400
//! `invalid_payload`; 404 `no_service`; 410 `channel_is_archived`), or answers too late, or drops the
//! connection. It records every request and the most requests it had in flight at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    /// A status with Slack's plain-text error code.
    Status(u16, &'static str),
    /// 429 with `Retry-After: seconds`.
    RateLimited(u64),
    /// 200, but only after this long (past the client's timeout).
    Slow(Duration),
    /// Close the connection without answering.
    Drop,
}

/// One request the stand-in got.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub body: serde_json::Value,
    pub at: Instant,
    pub reply: Reply,
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<Request>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The running stand-in; stops with the test's runtime.
#[derive(Clone)]
pub struct SlackStandIn {
    /// The webhook URL, with a secret-looking path (tests check it never reaches a log).
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl SlackStandIn {
    /// Starts a stand-in that answers `script` in order, then `Ok`.
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self {
            url: format!(
                "http://127.0.0.1:{port}/services/T0SECRET/B0SECRET/{}",
                uuid::Uuid::new_v4().simple()
            ),
            state,
        }
    }

    /// Answers `reply` to every request once the script is used up (instead of `Ok`).
    pub fn always(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The bodies Slack accepted (answered 200 in time).
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.reply, Reply::Ok))
            .map(|r| r.body)
            .collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    loop {
        let Some((path, body)) = read_request(&mut stream).await else {
            return;
        };
        let reply = {
            let mut s = state.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let reply = s
                .script
                .pop_front()
                .or_else(|| s.default.clone())
                .unwrap_or(Reply::Ok);
            s.requests.push(Request {
                path,
                body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                at: Instant::now(),
                reply: reply.clone(),
            });
            reply
        };
        // Hold the request a moment so that concurrency is visible.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let response = match reply {
            Reply::Ok => respond(200, "OK", &[], "ok"),
            Reply::Status(code, text) => respond(code, "Error", &[], text),
            Reply::RateLimited(seconds) => respond(
                429,
                "Too Many Requests",
                &[("Retry-After", seconds.to_string())],
                "rate_limited",
            ),
            Reply::Slow(delay) => {
                tokio::time::sleep(delay).await;
                respond(200, "OK", &[], "ok")
            }
            Reply::Drop => {
                state.lock().unwrap().in_flight -= 1;
                return;
            }
        };
        state.lock().unwrap().in_flight -= 1;
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn respond(code: u16, reason: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// Reads one request: its path and body. `None` when the connection closed.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((path, buffer[header_end..header_end + length].to_vec()))
}
