//! opsrelay: operational events from SQS (often via SNS) become Slack messages, built from a database
//! lookup and a template, with every message ending delivered, retried later, or dead-lettered with the
//! reason.
//!
//! Reading order for one event: [`event`] parses the SQS record, [`rules`] finds what to do for its type,
//! [`lookup`] fetches the record, [`render`] builds the Slack message, [`slack`] posts it, [`failure`]
//! classifies anything that went wrong, [`pipeline`] turns that into an outcome and [`dlq`] keeps the
//! messages that cannot be delivered.

pub mod aws;
pub mod check;
pub mod config;
pub mod dlq;
pub mod doctor;
pub mod event;
pub mod failure;
pub mod lambda;
pub mod local;
pub mod lookup;
pub mod name_check;
pub mod pace;
pub mod pipeline;
pub mod redrive;
pub mod render;
pub mod resolve;
pub mod retry;
pub mod rules;
pub mod secret;
pub mod slack;
pub mod startup;
pub mod telemetry;
pub mod worker;
