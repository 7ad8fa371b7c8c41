//! The doctor's checks of the rules' sources: each source's query read as a poll reads it (no row
//! sent), its cursor columns returned, and its cursor's item in the store, with the cursor's age.

use std::time::Duration;

use super::{Report, Subject};
use crate::db::Database;
use crate::human::Age;
use crate::source::Poller;
use crate::source::read;

pub(super) async fn check(report: &mut Report, subject: &Subject<'_>, database: &Database) {
    let Some(poller) = subject.poller else {
        return;
    };
    for source in &subject.rules.sources {
        report
            .run(format!("source {}", source.name), async {
                read::probe(database, source, poller.query_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                let cursor = cursor_state(poller, &source.name).await?;
                Ok(format!(
                    "its query returns {} (read, none sent); {cursor}",
                    source.cursor.columns().join(" and ")
                ))
            })
            .await;
    }
}

/// What the store holds for `source`: its cursor's age, or that it has none yet.
async fn cursor_state(poller: &Poller, source: &str) -> Result<String, String> {
    let stored = poller.store.load(source).await.map_err(|e| e.to_string())?;
    let place = poller.store.place();
    Ok(match stored.state.caught_up_at {
        None => format!("no cursor in {place} yet: the first poll starts from the first row"),
        Some(at) => {
            let age = (chrono::Utc::now() - at).to_std().unwrap_or(Duration::ZERO);
            format!("cursor in {place}, caught up {} ago", Age(age))
        }
    })
}
