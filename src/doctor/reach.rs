//! The doctor's checks of what the relay sends to: each Slack webhook's host, reached through the
//! client that posts (nothing posted), and the dead-letter queue (or the local dead-letter file).

use aws_sdk_sqs::types::QueueAttributeName;

use super::{CHECK_TIMEOUT, Report, Subject};
use crate::deadletter::DeadLetters;
use crate::sqs::queue_attributes;

/// Each destination with a webhook.
pub(super) async fn slack(report: &mut Report, subject: &Subject<'_>) {
    for destination in subject.destinations.values() {
        let Some(origin) = destination.origin() else {
            continue;
        };
        report
            .run(
                format!("slack {} ({origin})", destination.name),
                subject.slack.probe(destination, CHECK_TIMEOUT),
            )
            .await;
    }
}

/// The DLQ answers (`GetQueueAttributes`), or the dead-letter file's directory can be written.
pub(super) async fn dead_letters(report: &mut Report, dead_letters: Option<&DeadLetters>) {
    match dead_letters {
        Some(DeadLetters::Sqs { client, queue_url }) => {
            report
                .run("dlq", async {
                    let depth = QueueAttributeName::ApproximateNumberOfMessages;
                    let attributes =
                        queue_attributes(client, queue_url, std::slice::from_ref(&depth))
                            .await
                            .map_err(|e| crate::aws::describe(&e))?;
                    let depth = attributes.get(&depth).cloned().unwrap_or_default();
                    Ok(format!("reachable (GetQueueAttributes), {depth} messages"))
                })
                .await;
        }
        Some(DeadLetters::File(file)) => {
            let path = file.path().to_path_buf();
            report
                .run("dead-letter file", async move {
                    let dir = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    match std::fs::metadata(dir) {
                        Ok(meta) if !meta.permissions().readonly() => {
                            Ok(format!("{} is writable", path.display()))
                        }
                        _ => Err(format!("{} cannot be written", dir.display())),
                    }
                })
                .await;
        }
        // Reported among the configuration's problems.
        None => {}
    }
}
