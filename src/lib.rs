//! opsrelay: operational events from SQS (often via SNS) become Slack messages, built from a database
//! lookup and a template, with every message ending delivered, retried later, or dead-lettered with the
//! reason.
//!
//! Reading order for one event, top-down through the layers (dependencies point down only):
//!
//! - **entry** — the binaries (`src/bin/`), [`lambda`] (the handler), [`worker`] (long-polls a
//!   queue with the Lambda's semantics), [`local`] (the main job on embedded defaults), [`check`],
//!   [`doctor`], [`startup`] (builds everything once), [`poll`] (polls the sources), and [`redrive`] (`opsrelay dlq`, the
//!   operator tool, which the runtime never imports).
//! - **runtime** — [`pipeline`]: a batch in, one outcome per record out.
//! - **components** — [`event`] parses the SQS record, [`rules`] finds what to do for its type,
//!   [`db`] fetches the record, [`render`] builds the Slack message, [`slack`] posts it; [`source`]
//!   polls the database for events and sends them into the queue (the application publishes none).
//! - **shared** — [`sqs`] (SQS facts and record conversion), [`deadletter`] (the one definition of a
//!   dead letter), [`config`] (settings, secrets, what the rules need), [`aws`], [`secret`],
//!   [`telemetry`], [`metrics`], [`pace`], [`tls`], [`lock`], [`human`].

pub mod aws;
pub mod check;
pub mod config;
pub mod db;
pub mod deadletter;
pub mod doctor;
pub mod event;
pub mod human;
pub mod lambda;
pub mod local;
pub mod lock;
pub mod metrics;
pub mod pace;
pub mod pipeline;
pub mod poll;
pub mod redrive;
pub mod render;
pub mod rules;
pub mod secret;
pub mod slack;
pub mod source;
pub mod sqs;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod worker;
