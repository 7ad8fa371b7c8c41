//! A local stand-in for a Slack Incoming Webhook: a minimal HTTP/1.1 server on a loopback port that
//! answers from a script, as Slack documents (200 `ok`; 429 with `Retry-After`; 5xx; 400
//! `invalid_payload`; 404 `no_service`; 410 `channel_is_archived`), or answers too late, or drops the
//! connection, and limits the rate as Slack does ([`SlackStandIn::limit`]). It records every request (method, path, headers, body) and the most requests it had
//! in flight at once. [`SlackStandIn::answer_when`] (and `answer_once_when`) answers the posts whose
//! body holds a given text with a reply of their own, whatever order they come in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::http::{read_request, respond};

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
    /// 307 to this URL (a proxy or a moved endpoint).
    Redirect(String),
}

/// One request the stand-in got.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
    pub at: Instant,
    pub reply: Reply,
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    /// Replies for the requests whose body holds a text, before the script; a reply with `true`
    /// answers once.
    when: Vec<(String, Reply, bool)>,
    /// Percent of requests that get a fault, and the generator's state.
    chaos: Option<(u64, u64)>,
    requests: Vec<Request>,
    in_flight: usize,
    max_in_flight: usize,
    /// How long each request is held before its answer (20 ms unless [`SlackStandIn::hold`]).
    hold: Option<Duration>,
    /// Slack's rate limit ([`SlackStandIn::limit`]), before any other answer.
    bucket: Option<Bucket>,
}

/// A token bucket: `burst` posts at once, refilled at `per_second`; a post that finds it empty is
/// answered 429 with `Retry-After: 1`, as Slack answers a webhook posted to too fast.
struct Bucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
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

    /// Answers `reply` to every request whose body holds `text` (before the script, `always` and the
    /// chaos), until [`answer_normally`](Self::answer_normally).
    pub fn answer_when(&self, text: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .when
            .push((text.to_string(), reply, false));
    }

    /// Answers `reply` to the first request whose body holds `text`, then as before.
    pub fn answer_once_when(&self, text: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .when
            .push((text.to_string(), reply, true));
    }

    /// Undoes [`always`](Self::always) and [`answer_when`](Self::answer_when): `Ok`, or the chaos,
    /// again.
    pub fn answer_normally(&self) {
        let mut state = self.state.lock().unwrap();
        state.default = None;
        state.when.clear();
    }

    /// From now on, `percent` % of requests (drawn from a seeded generator) get a fault: 429 with
    /// Retry-After 1, 503, an answer past the client's timeout, or a dropped connection.
    pub fn chaos(&self, percent: u64, seed: u64) {
        self.state.lock().unwrap().chaos = (percent > 0).then_some((percent, seed.max(1)));
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

    /// Holds each request `hold` before answering it, so that requests overlap however slowly the
    /// machine schedules them.
    pub fn hold(&self, hold: Duration) {
        self.state.lock().unwrap().hold = Some(hold);
    }

    /// Limits the webhook as Slack does: `burst` posts at once, then `per_second`.
    pub fn limit(&self, burst: u32, per_second: f64) {
        self.state.lock().unwrap().bucket = Some(Bucket {
            burst: burst.into(),
            per_second,
            tokens: burst.into(),
            at: Instant::now(),
        });
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    loop {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        let (reply, hold) = {
            let mut s = state.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            let body = String::from_utf8_lossy(&request.body).to_string();
            let chosen = s
                .when
                .iter()
                .position(|(text, _, _)| body.contains(text.as_str()))
                .map(|i| match s.when[i].2 {
                    true => s.when.remove(i).1,
                    false => s.when[i].1.clone(),
                });
            let limited = s.bucket.as_mut().is_some_and(|b| !b.take());
            let scripted = limited
                .then_some(Reply::RateLimited(1))
                .or(chosen)
                .or_else(|| s.script.pop_front())
                .or_else(|| s.default.clone());
            let reply = scripted
                .or_else(|| chaos_reply(&mut s.chaos))
                .unwrap_or(Reply::Ok);
            s.requests.push(Request {
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null),
                at: Instant::now(),
                reply: reply.clone(),
            });
            (reply, s.hold.unwrap_or(Duration::from_millis(20)))
        };
        // Hold the request a moment so that concurrency is visible.
        tokio::time::sleep(hold).await;
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
            Reply::Redirect(location) => {
                respond(307, "Temporary Redirect", &[("Location", location)], "")
            }
        };
        state.lock().unwrap().in_flight -= 1;
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A fault for this request, or `None`, from a xorshift generator (deterministic per seed).
fn chaos_reply(chaos: &mut Option<(u64, u64)>) -> Option<Reply> {
    let (percent, state) = chaos.as_mut()?;
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    if next() % 100 >= *percent {
        return None;
    }
    Some(match next() % 4 {
        0 => Reply::RateLimited(1),
        1 => Reply::Status(503, "service_unavailable"),
        2 => Reply::Slow(Duration::from_secs(3)),
        _ => Reply::Drop,
    })
}
