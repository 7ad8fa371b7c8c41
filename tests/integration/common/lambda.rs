//! Runs the real `opsrelay-lambda` binary against a [`RuntimeApi`], with its output in a log file.

use std::process::Stdio;

use super::runtime::RuntimeApi;
use super::service;

pub struct Lambda {
    pub child: tokio::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Lambda {
    /// Starts the binary with `rules` and `env` on top of the test defaults.
    pub async fn start(api: &RuntimeApi, rules_toml: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, rules_toml).unwrap();
        let log = dir.path().join("lambda.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrelay-lambda"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "opsrelay")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/opsrelay")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_ENDPOINT_URL", service("OPSRELAY_TEST_AWS_ENDPOINT"))
            .env("OPSRELAY_RULES", &rules)
            .env("OPSRELAY_LOG", "debug")
            .env("OPSRELAY_RETRY_INITIAL_MS", "20")
            .env("OPSRELAY_RETRY_MAX_MS", "100")
            .env("OPSRELAY_DEADLINE_MARGIN_MS", "500")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start opsrelay-lambda");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}
