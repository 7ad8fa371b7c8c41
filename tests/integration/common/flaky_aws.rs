//! A proxy in front of moto that fails a share of `SendMessage` calls (the relay's DLQ sends) with
//! HTTP 500, so the "DLQ unavailable" path runs under load, or one `SendMessageBatch` call of its
//! choosing (a poll's send failing midway). Every other call passes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::http::{read_request, respond};

/// The running proxy.
#[derive(Clone)]
pub struct FlakyAws {
    pub url: String,
    percent: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// Fails every `SendMessageBatch` call from this number on (from 1; 0 for none), the SDK's
    /// own retries included.
    fail_batch_call: Arc<AtomicU64>,
}

impl FlakyAws {
    /// Forwards to `upstream` (moto's URL), failing `percent` % of SendMessage calls.
    pub async fn start(upstream: String, percent: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            percent: Arc::new(AtomicU64::new(percent)),
            failed: Arc::default(),
            fail_batch_call: Arc::default(),
        };
        let state = proxy.clone();
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            let counter = Arc::new(AtomicU64::new(0));
            let batches = Arc::new(AtomicU64::new(0));
            while let Ok((mut stream, _)) = listener.accept().await {
                let (state, http, counter, batches, upstream) = (
                    state.clone(),
                    http.clone(),
                    counter.clone(),
                    batches.clone(),
                    upstream.clone(),
                );
                tokio::spawn(async move {
                    while let Some(request) = read_request(&mut stream).await {
                        let target = request
                            .headers
                            .get("x-amz-target")
                            .cloned()
                            .unwrap_or_default();
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let batch = target
                            .ends_with(".SendMessageBatch")
                            .then(|| batches.fetch_add(1, Ordering::SeqCst) + 1);
                        let fail = (target.ends_with(".SendMessage")
                            && (n * 37 % 100) < state.percent.load(Ordering::SeqCst))
                            || batch.is_some_and(|b| {
                                let from = state.fail_batch_call.load(Ordering::SeqCst);
                                from > 0 && b >= from
                            });
                        let response = if fail {
                            state.failed.fetch_add(1, Ordering::SeqCst);
                            respond(
                                500,
                                "Internal Server Error",
                                &[],
                                r#"{"__type":"InternalError","message":"injected"}"#,
                            )
                        } else {
                            let mut forward = http
                                .request(
                                    request.method.parse().unwrap(),
                                    format!("{upstream}{}", request.path),
                                )
                                .body(request.body);
                            for (name, value) in &request.headers {
                                if name != "host" && name != "content-length" {
                                    forward = forward.header(name, value);
                                }
                            }
                            match forward.send().await {
                                Ok(answer) => {
                                    let status = answer.status().as_u16();
                                    let kind = answer
                                        .headers()
                                        .get("content-type")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("application/json")
                                        .to_string();
                                    let body = answer.text().await.unwrap_or_default();
                                    respond(status, "Relayed", &[("content-type", kind)], &body)
                                }
                                Err(_) => respond(502, "Bad Gateway", &[], ""),
                            }
                        };
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        proxy
    }

    /// Fails every SendMessageBatch call from the `n`th on (counted from the proxy's start; 0
    /// stops failing them).
    pub fn fail_batch_calls_from(&self, n: u64) {
        self.fail_batch_call.store(n, Ordering::SeqCst);
    }

    /// Changes the share of failed SendMessage calls.
    pub fn set_percent(&self, percent: u64) {
        self.percent.store(percent, Ordering::SeqCst);
    }
}
