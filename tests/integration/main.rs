//! The integration tests, one binary (each test binary recompiles the shared helpers and links the
//! whole library): every module is one part of opsrelay as an operator or AWS uses it, against real
//! PostgreSQL, MariaDB and moto, a Slack stand-in and the real binaries. The no-loss run, which
//! restarts PostgreSQL under every other test, is a binary of its own (`tests/no_loss.rs`).
//!
//! One module: `bash tests/run.sh --test integration -- doctor::`.

mod common;

mod cli;
mod database_address;
mod databases;
mod digests;
mod dlq_cli;
mod dlq_moto;
mod dlq_recorded;
mod doctor;
mod lambda_binary;
mod malformed_events;
mod outcomes;
mod properties;
mod runbooks;
mod sources;
mod sqs_flow;
