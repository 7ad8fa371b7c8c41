//! How far a source has read, and what its poller last saw: the one item per source that the
//! cursor store keeps ([`super::store`]), as JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::CursorKind;

/// Where a source has read to: the last row sent, in the source's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cursor {
    /// `(xid, id)` of the last row sent (xid as text: an `xid8` may pass 2^53).
    Xid { xid: String, id: i64 },
    /// `(ts, id)` of the last row sent in the main read, and the rows sent within the trailing
    /// window (so that reading it again sends only the rows that committed late).
    Timestamp {
        ts: String,
        id: i64,
        sent: Vec<(String, i64)>,
    },
}

impl Cursor {
    /// Where a source of `kind` starts: before every row.
    pub fn start(kind: CursorKind) -> Self {
        match kind {
            CursorKind::Xid => Cursor::Xid {
                xid: "0".into(),
                id: i64::MIN,
            },
            CursorKind::Timestamp => Cursor::Timestamp {
                ts: "0001-01-01 00:00:00.000000".into(),
                id: i64::MIN,
                sent: Vec::new(),
            },
        }
    }

    pub fn kind(&self) -> CursorKind {
        match self {
            Cursor::Xid { .. } => CursorKind::Xid,
            Cursor::Timestamp { .. } => CursorKind::Timestamp,
        }
    }
}

/// A source's stored state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// `None` before the first row was sent.
    pub cursor: Option<Cursor>,
    /// The horizon (oldest running transaction) a poll of an `xid` source last saw: one that does
    /// not move while transactions run is held back by a long one.
    pub horizon: Option<String>,
    /// When a poll last found nothing left to read: the cursor's age is the time since.
    pub caught_up_at: Option<DateTime<Utc>>,
}

/// The state as the store read it, and the version a write must find to replace it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub state: State,
    /// `None`: no item yet.
    pub version: Option<u64>,
}
