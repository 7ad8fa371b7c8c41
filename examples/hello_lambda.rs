//! The `lambda_runtime` hello world (its basic example: the default tracing subscriber, a handler that
//! answers every event), built with opsrelay's release profile: the floor opsrelay-lambda's init time
//! is compared with in `benches/whole_process.rs`.

use lambda_runtime::{Error, LambdaEvent, service_fn, tracing};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(json!({ "message": "Hello", "request_id": event.context.request_id }))
    }))
    .await
}
