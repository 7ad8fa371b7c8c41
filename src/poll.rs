//! `opsrelay poll`: polls the rules' sources outside Lambda, once or every interval, with the
//! Lambda's semantics (the same [`Poller`], cursors and queue). Each poll prints a line per source.

use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Problems;
use crate::source::Poller;

/// How long one poll of every source may take before it stops, when it is not repeated.
const ONCE: Duration = Duration::from_secs(60);

/// Polls once (`every` is `None`) or every `every` until interrupted; exit 1 when a poll of a
/// source stopped short (its line says why).
pub async fn run(every: Option<Duration>) -> Result<ExitCode, anyhow::Error> {
    let sdk = crate::aws::sdk_config().await;
    let parts = crate::startup::parts_from_env(&sdk).await?;
    let sources = &parts.rules.sources;
    if sources.is_empty() {
        anyhow::bail!(
            "the rules file has no [sources.\"<name>\"] table: add one (README, Sources) to poll the database"
        );
    }
    let Some(database) = &parts.database else {
        anyhow::bail!(
            "OPSRELAY_DATABASE_URL is not set: sources read the database (set it to the read replica)"
        );
    };
    Problems::of_sources(&parts.rules, &parts.settings.poll).into_result()?;
    let Some(poller) = Poller::from_settings(&parts.settings, &sdk) else {
        anyhow::bail!("the sources' settings are incomplete (opsrelay check says which)");
    };
    loop {
        let started = Instant::now();
        let report = poller
            .poll(database, sources, started + every.unwrap_or(ONCE))
            .await;
        for polled in &report {
            println!("{}", polled.line());
        }
        let Some(every) = every else {
            let failed = report.iter().any(|p| p.problem.is_some());
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        };
        tokio::select! {
            _ = tokio::time::sleep_until(started + every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
