//! How a long run shows how far it is: a progress bar with the counts on a terminal, a plain line every
//! few seconds otherwise (a log, CI).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::mover::{Counts, Progress};

/// Plain lines come at most this often.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// A bar on standard error when it is a terminal, plain lines otherwise; `total` is how many the run
/// may move, when known.
pub fn on_stderr(total: Option<u64>) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Box::new(Bar(bar))
    } else {
        Box::new(Lines(Mutex::new(None)))
    }
}

/// What happened to the messages that did not move: `30 not matching, 0 failed`.
pub fn describe(counts: &Counts) -> String {
    let mut parts = vec![
        format!("{} not matching", counts.not_matching),
        format!("{} failed", counts.failed),
    ];
    let extra = [
        (counts.over_max, "beyond --max"),
        (counts.over_max_redrives, "left past --max-redrives"),
        (counts.not_removed, "sent but not removed"),
        (counts.removed_again, "came back and were removed"),
        (counts.without_counter, "sent without the redrive counter"),
    ];
    for (count, what) in extra {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    parts.join(", ")
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn update(&self, counts: &Counts) {
        self.0.set_position(counts.moved);
        self.0.set_message(describe(counts));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

struct Lines(Mutex<Option<Instant>>);

impl Progress for Lines {
    fn update(&self, counts: &Counts) {
        let mut last = crate::lock::lock(&self.0);
        if last.is_none_or(|at| at.elapsed() >= LINE_EVERY) {
            *last = Some(Instant::now());
            eprintln!("moved {}, {}", counts.moved, describe(counts));
        }
    }
}
