//! The one definition of a dead letter, shared by the runtime (which writes them) and the operator
//! tool (which reads and redrives them): the failure record and its attribute ([`record`]), the
//! JSON line of a dead letter on disk ([`letter`]), the append-only file ([`file`](mod@file)), and the sender
//! the pipeline uses ([`sender`]: the SQS DLQ, or the local run's file).

pub mod file;
pub mod letter;
pub mod record;
pub mod sender;

pub use file::{AppendFile, FileError};
pub use letter::{Letter, NO_REASON};
pub use record::{FAILURE_ATTRIBUTE, Failure, FailureClass, FailureRecord};
pub use sender::{DeadLetters, DlqError};
