//! How far a source has read, and what its poller last saw: the one item per source that the
//! cursor store keeps ([`super::store`]), as JSON. A cursor remembers at most [`MAX_SENT`] rows of
//! its trailing window, so that its item stays well inside DynamoDB's 400 KB.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::CursorKind;

/// Rows of the trailing window a cursor remembers as sent, and a poll reads again, at most: the
/// newest ones. A timestamp cursor's item is then about 200 KB at most.
pub const MAX_SENT: usize = 5_000;

/// How long an `id` cursor waits between two marks: one a second at most, so that a poll that
/// loops through a backlog does not grow the item.
pub const MARK_EVERY_US: i64 = 1_000_000;

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
    /// The last id sent in the main read. An id is dated by the database's clock at the first poll
    /// that saw it as the highest (`marks`: `(µs since the epoch, highest id)`): the main read goes
    /// up to `upto`, the highest id seen at least `delay` ago, and the trailing window reads again
    /// the ids above `floor` (the highest seen `delay + window` ago) and sends those not `sent`.
    Id {
        id: i64,
        upto: Option<i64>,
        floor: i64,
        sent: IdSet,
        marks: Vec<(i64, i64)>,
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
            CursorKind::Id => Cursor::Id {
                id: i64::MIN,
                upto: None,
                floor: i64::MIN,
                sent: IdSet::default(),
                marks: Vec::new(),
            },
        }
    }

    pub fn kind(&self) -> CursorKind {
        match self {
            Cursor::Xid { .. } => CursorKind::Xid,
            Cursor::Timestamp { .. } => CursorKind::Timestamp,
            Cursor::Id { .. } => CursorKind::Id,
        }
    }

    /// An `id` cursor with what a poll saw at `now` (µs by the database's clock): the highest id
    /// (`None`: no row), which dates the ids, moving `upto` and `floor` (`delay` and `window` in
    /// µs). Other cursors are as they were.
    pub fn marked(self, highest: Option<i64>, now: i64, delay: i64, window: i64) -> Self {
        let Cursor::Id {
            id,
            mut floor,
            mut sent,
            mut marks,
            ..
        } = self
        else {
            return self;
        };
        if let Some(highest) = highest {
            match marks.last_mut() {
                Some((_, seen)) if highest <= *seen => {}
                // Within a second of the last mark: with no delay it is raised (its ids leave the
                // window up to a second early); with one, the next poll marks them.
                Some((at, seen)) if now.saturating_sub(*at) < MARK_EVERY_US => {
                    if delay == 0 {
                        *seen = highest;
                    }
                }
                _ => marks.push((now, highest)),
            }
        }
        let newest_by = |before: i64| marks.iter().rev().position(|&(at, _)| at <= before);
        let upto = newest_by(now.saturating_sub(delay)).map(|i| marks[marks.len() - 1 - i].1);
        if let Some(i) = newest_by(now.saturating_sub(delay).saturating_sub(window)) {
            let kept = marks.len() - 1 - i;
            floor = floor.max(marks[kept].1);
            marks.drain(..kept);
        }
        sent.retain_above(floor);
        Cursor::Id {
            id,
            upto,
            floor,
            sent,
            marks,
        }
    }
}

/// A set of ids, as sorted, disjoint, inclusive ranges: the rows a poll sends are mostly
/// consecutive ids, so that thousands of them take a few ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdSet(Vec<(i64, i64)>);

impl IdSet {
    pub fn contains(&self, id: i64) -> bool {
        let i = self.0.partition_point(|&(_, last)| last < id);
        self.0.get(i).is_some_and(|&(first, _)| first <= id)
    }

    pub fn insert(&mut self, id: i64) {
        let i = self
            .0
            .partition_point(|&(_, last)| last.saturating_add(1) < id);
        match self.0.get(i).copied() {
            Some((first, last)) if first <= id.saturating_add(1) => {
                let merged = (first.min(id), last.max(id));
                self.0[i] = merged;
                if let Some(&(next_first, next_last)) = self.0.get(i + 1)
                    && next_first <= merged.1.saturating_add(1)
                {
                    self.0[i].1 = next_last;
                    self.0.remove(i + 1);
                }
            }
            _ => self.0.insert(i, (id, id)),
        }
    }

    /// Keeps the ids above `floor`.
    pub fn retain_above(&mut self, floor: i64) {
        let i = self.0.partition_point(|&(_, last)| last <= floor);
        self.0.drain(..i);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(floor.saturating_add(1));
        }
    }

    /// Keeps the `n` highest ids.
    pub fn keep_highest(&mut self, n: u64) {
        let mut kept = 0u64;
        let mut i = self.0.len();
        while i > 0 && kept < n {
            i -= 1;
            let (first, last) = self.0[i];
            let size = last.abs_diff(first) + 1;
            if kept + size > n {
                self.0[i].0 = last - (n - kept - 1) as i64;
                kept = n;
            } else {
                kept += size;
            }
        }
        self.0.drain(..i);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[i64]) -> IdSet {
        let mut set = IdSet::default();
        for &id in ids {
            set.insert(id);
        }
        set
    }

    #[test]
    fn an_id_set_keeps_consecutive_ids_as_one_range_in_any_order_of_insertion() {
        assert_eq!(set(&[3, 1, 2, 7, 5, 6, 4]), IdSet(vec![(1, 7)]));
        assert_eq!(set(&[10, 1, 5]), IdSet(vec![(1, 1), (5, 5), (10, 10)]));
        let holes = set(&[1, 2, 4, 5, 9]);
        assert_eq!(holes, IdSet(vec![(1, 2), (4, 5), (9, 9)]));
        assert!(holes.contains(4) && holes.contains(9) && !holes.contains(3) && !holes.contains(6));
    }

    #[test]
    fn an_id_set_drops_what_is_at_or_below_the_floor_and_keeps_the_highest_ids() {
        let mut ids = set(&[1, 2, 3, 4, 8, 9, 10]);
        ids.retain_above(2);
        assert_eq!(ids, IdSet(vec![(3, 4), (8, 10)]));
        ids.keep_highest(4);
        assert_eq!(ids, IdSet(vec![(4, 4), (8, 10)]));
        ids.keep_highest(2);
        assert_eq!(ids, IdSet(vec![(9, 10)]));
    }

    fn id_cursor(cursor: &Cursor) -> (Option<i64>, i64, usize) {
        match cursor {
            Cursor::Id {
                upto, floor, marks, ..
            } => (*upto, *floor, marks.len()),
            _ => unreachable!("an id cursor"),
        }
    }

    #[test]
    fn an_id_cursor_reads_up_to_the_highest_id_seen_a_delay_ago_and_again_above_the_floor() {
        let (s, delay, window) = (1_000_000, 5_000_000, 60_000_000);
        let cursor = Cursor::start(CursorKind::Id).marked(Some(100), 0, delay, window);
        assert_eq!(
            id_cursor(&cursor),
            (None, i64::MIN, 1),
            "nothing is old enough"
        );
        let cursor = cursor.marked(Some(150), 3 * s, delay, window);
        assert_eq!(id_cursor(&cursor), (None, i64::MIN, 2));
        let cursor = cursor.marked(Some(150), 6 * s, delay, window);
        assert_eq!(id_cursor(&cursor).0, Some(100), "100 was seen 6 s ago");
        let cursor = cursor.marked(Some(160), 8 * s, delay, window);
        assert_eq!(id_cursor(&cursor).0, Some(150));
        let cursor = cursor.marked(None, 66 * s, delay, window);
        assert_eq!(
            id_cursor(&cursor),
            (Some(160), 100, 3),
            "100 left the window"
        );
        let cursor = cursor.marked(None, 200 * s, delay, window);
        assert_eq!(id_cursor(&cursor), (Some(160), 160, 1));
    }

    #[test]
    fn an_id_cursor_marks_at_most_once_a_second_unless_it_has_no_delay() {
        let cursor = Cursor::start(CursorKind::Id).marked(Some(1), 0, 5_000_000, 0);
        let cursor = cursor.marked(Some(2), 500_000, 5_000_000, 0);
        assert_eq!(id_cursor(&cursor).2, 1);
        let cursor = Cursor::start(CursorKind::Id).marked(Some(1), 0, 0, 60_000_000);
        let cursor = cursor.marked(Some(2), 10, 0, 60_000_000);
        assert_eq!((id_cursor(&cursor).0, id_cursor(&cursor).2), (Some(2), 1));
    }
}
