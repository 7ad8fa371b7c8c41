//! `opsrelay dlq`: inspect, export, filter and redrive the dead-letter queue without losing a message.
//!
//! A dead letter is [`crate::deadletter`]'s (the runtime writes them, this tool reads them); this tool
//! imports only the shared layer, and the runtime never imports it.
//!
//! Reading order: [`letter`] is what a redrive reads of a dead letter and what it sends for it;
//! [`filter`] selects letters; [`queue`] makes the SQS calls ten at a time; [`mover`] is the one loop
//! behind every command (read, take, put, and only then remove); [`file`](mod@file) reads the
//! JSON-lines files; [`native`] drives SQS's own message move tasks; [`inspect`] and [`progress`]
//! print; [`cli`] is the commands.

pub mod cli;
pub mod error;
pub mod file;
pub mod filter;
pub mod inspect;
pub mod letter;
pub mod mover;
pub mod native;
pub mod progress;
pub mod queue;

pub use cli::{DlqArgs, run};
pub use error::Error;
