//! Logging: structured fields then a short sentence; JSON on Lambda (CloudWatch reads it), text
//! elsewhere, in colour only on a terminal (and never with `NO_COLOR`). `OPSRELAY_LOG` sets the
//! filter (default `info`), `OPSRELAY_LOG_FORMAT` (`json` or `text`) the format. Logs go to standard error, so standard output stays for the commands' own output.
//! The SDK's own warnings are left out unless `OPSRELAY_LOG` asks for them.

use tracing_subscriber::EnvFilter;

/// INFO, but the AWS SDK's own warnings only from ERROR: outside AWS its credential and region
/// providers warn, in several lines with `Debug` dumps, about the instance metadata service they try
/// last; what failed reaches the operator once, in the failed call's own error ([`crate::aws::describe`]).
const DEFAULT_FILTER: &str = "info,aws_config=error";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `default` applies unless `OPSRELAY_LOG_FORMAT` says otherwise.
pub fn init(default: LogFormat) {
    let format = match std::env::var("OPSRELAY_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ => default,
    };
    let filter =
        EnvFilter::try_from_env("OPSRELAY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(colour_on_stderr())
            .try_init(),
    };
}

/// Colour only for a person at a terminal: never when standard error is a file or a pipe (CI, cron,
/// `2> file`), nor when `NO_COLOR` is set to anything (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}
