//! The opsrelay Lambda: builds everything once at init, then handles SQS batches.

// The async state machine of `main` is deep enough that release builds need more than the
// default query depth to lay it out.
#![recursion_limit = "256"]

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};
use opsrelay::lambda::{Invocation, Metrics};
use opsrelay::telemetry::{self, LogFormat};

// One thread: a function gets at most one vCPU below 1,769 MB, and with one thread the HTTP and
// database connections need no wake-ups across threads (README, Performance: CPU per event).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    telemetry::init(LogFormat::Json);
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "opsrelay-lambda stopped.");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), anyhow::Error> {
    let sdk = opsrelay::aws::sdk_config().await;
    let relay = opsrelay::startup::relay_from_env(&sdk).await?;
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Invocation>| async move {
            let deadline = event.context.deadline();
            opsrelay::lambda::handle_any(relay, event.payload, deadline, Metrics::Stdout)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
