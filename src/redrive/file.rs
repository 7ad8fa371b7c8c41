//! Reading dead letters from disk, one JSON line each (an export or the local dead-letter file), with a
//! journal of the lines an import already sent so that a rerun continues. Writing them is
//! [`AppendFile`]'s, each batch flushed and synced before its messages may be deleted from the queue.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use super::error::Error;
use super::queue::BATCH;
use crate::deadletter::{AppendFile, Letter};

/// The letters of a file, handed out ten at a time.
#[derive(Debug)]
pub struct FileSource {
    pending: Mutex<std::vec::IntoIter<Letter>>,
    journal: Option<AppendFile>,
    /// Lines left out because the journal says an earlier import sent them.
    pub already_sent: usize,
    pub total: usize,
}

impl FileSource {
    /// Reads `path`; with `journal`, the lines it lists are left out and [`FileSource::remove`]
    /// adds to it.
    pub async fn open(path: &Path, journal: Option<&Path>) -> Result<Self, Error> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Error::read(path, e))?;
        let done: HashSet<String> = match journal {
            Some(journal) => match tokio::fs::read_to_string(journal).await {
                Ok(text) => text.lines().map(str::to_string).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
                Err(e) => return Err(Error::read(journal, e)),
            },
            None => HashSet::new(),
        };
        let mut letters = Vec::new();
        let mut total = 0;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            total += 1;
            let mut letter: Letter = serde_json::from_str(line).map_err(|e| Error::Line {
                path: path.display().to_string(),
                line: index + 1,
                error: e.to_string(),
            })?;
            letter.handle = (index + 1).to_string();
            if !done.contains(&journal_key(&letter)) {
                letters.push(letter);
            }
        }
        Ok(FileSource {
            already_sent: total - letters.len(),
            total,
            pending: Mutex::new(letters.into_iter()),
            journal: journal.map(AppendFile::new),
        })
    }

    pub fn next(&self) -> Vec<Letter> {
        let mut pending = crate::lock::lock(&self.pending);
        pending.by_ref().take(BATCH).collect()
    }

    /// Records that these letters were sent, so that a rerun leaves them out.
    pub async fn remove(&self, letters: &[&Letter]) -> Result<(), Error> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let text: String = letters
            .iter()
            .map(|letter| journal_key(letter) + "\n")
            .collect();
        Ok(journal.append(&text).await?)
    }
}

/// A line of the journal: the line number and the message id, so that a line is left out only when
/// both still match (an edited file sends again rather than skip).
fn journal_key(letter: &Letter) -> String {
    format!("{}\t{}", letter.handle, letter.message_id)
}
