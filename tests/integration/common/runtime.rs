//! A local stand-in for the Lambda Runtime API, enough to run the real `opsrelay-lambda` binary:
//! `GET /2018-06-01/runtime/invocation/next` hands out queued events with the request id and deadline
//! headers, and the binary's `…/response`, `…/error` and `init/error` posts are recorded, with when
//! each `next` request and each post arrived (the benchmarks time init and batches with them).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http::{read_request, respond};

/// What the binary posted back.
#[derive(Clone, Debug)]
pub enum Posted {
    Response {
        request_id: String,
        body: serde_json::Value,
    },
    Error {
        request_id: String,
        body: serde_json::Value,
    },
    InitError(serde_json::Value),
}

#[derive(Default)]
struct State {
    events: VecDeque<(String, serde_json::Value, Duration)>,
    posted: Vec<Posted>,
    posted_at: Vec<Instant>,
    next_requested_at: Vec<Instant>,
}

/// The running stand-in.
#[derive(Clone)]
pub struct RuntimeApi {
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let api = Self {
            address,
            state: Arc::default(),
            changed: Arc::default(),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(stream));
            }
        });
        api
    }

    /// Queues an invocation with `timeout` until its deadline.
    pub fn invoke(&self, request_id: &str, event: serde_json::Value, timeout: Duration) {
        self.state
            .lock()
            .unwrap()
            .events
            .push_back((request_id.to_string(), event, timeout));
        self.changed.notify_waiters();
    }

    /// Waits until `count` results were posted (or `wait` passes) and returns them.
    pub async fn posted(&self, count: usize, wait: Duration) -> Vec<Posted> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let posted = self.state.lock().unwrap().posted.clone();
            if posted.len() >= count || tokio::time::Instant::now() >= until {
                return posted;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the result of `request_id`, up to `wait`.
    pub async fn result_of(&self, request_id: &str, wait: Duration) -> Option<Posted> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let found = self
                .state
                .lock()
                .unwrap()
                .posted
                .iter()
                .find(|p| match p {
                    Posted::Response { request_id: id, .. }
                    | Posted::Error { request_id: id, .. } => id == request_id,
                    Posted::InitError(_) => false,
                })
                .cloned();
            if found.is_some() || tokio::time::Instant::now() >= until {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops invocations not yet handed out (their process was killed).
    pub fn forget_pending(&self) {
        self.state.lock().unwrap().events.clear();
    }

    /// When each `next` request arrived, in order.
    pub fn next_requested_at(&self) -> Vec<Instant> {
        self.state.lock().unwrap().next_requested_at.clone()
    }

    /// When each result was posted, in the order of [`RuntimeApi::posted`].
    pub fn posted_at(&self) -> Vec<Instant> {
        self.state.lock().unwrap().posted_at.clone()
    }

    async fn serve(self, mut stream: TcpStream) {
        while let Some(request) = read_request(&mut stream).await {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let response = if request.method == "GET" && request.path.ends_with("/invocation/next")
            {
                let now = Instant::now();
                self.state.lock().unwrap().next_requested_at.push(now);
                let (request_id, event, timeout) = self.next_event().await;
                let deadline = chrono::Utc::now().timestamp_millis() + timeout.as_millis() as i64;
                let payload = event.to_string();
                let headers = [
                    ("Lambda-Runtime-Aws-Request-Id", request_id),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    (
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:opsrelay".into(),
                    ),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                    ("content-type", "application/json".into()),
                ];
                respond(200, "OK", &headers, &payload)
            } else {
                let id = request
                    .path
                    .split('/')
                    .nth(4)
                    .unwrap_or_default()
                    .to_string();
                let posted = if request.path.ends_with("/response") {
                    Posted::Response {
                        request_id: id,
                        body,
                    }
                } else if request.path.ends_with("/init/error") {
                    Posted::InitError(body)
                } else {
                    Posted::Error {
                        request_id: id,
                        body,
                    }
                };
                let mut state = self.state.lock().unwrap();
                state.posted.push(posted);
                state.posted_at.push(Instant::now());
                drop(state);
                respond(202, "Accepted", &[], "{}")
            };
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    async fn next_event(&self) -> (String, serde_json::Value, Duration) {
        loop {
            let notified = self.changed.notified();
            if let Some(event) = self.state.lock().unwrap().events.pop_front() {
                return event;
            }
            notified.await;
        }
    }
}
