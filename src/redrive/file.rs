//! Dead letters on disk, one JSON line each: reading an export or the local dead-letter file, with a
//! journal of the lines an import already sent so that a rerun continues; and writing an export, each
//! batch flushed and synced before its messages may be deleted from the queue.

use std::collections::HashSet;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::error::Error;
use super::letter::Letter;
use super::queue::BATCH;

/// A file that is only appended to, created by the first append; each append is on disk (flushed
/// and synced) when it returns, or cut off again when it fails, so that the file ends with a whole
/// line. A file that does not (a run killed while appending) is refused: [`Error::Unfinished`].
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: tokio::sync::Mutex<Option<tokio::fs::File>>,
}

impl AppendFile {
    pub fn new(path: &Path) -> Self {
        AppendFile {
            path: path.to_path_buf(),
            file: tokio::sync::Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn append(&self, text: &str) -> Result<(), Error> {
        let fail = |e| Error::write(&self.path, e);
        let mut file = self.file.lock().await;
        let file = match &mut *file {
            Some(file) => file,
            None => file.insert(self.open().await?),
        };
        let before = file.metadata().await.map_err(fail)?.len();
        let written = async {
            file.write_all(text.as_bytes()).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        if let Err(error) = written {
            // What got in would leave a part of a line for the next append to follow. Should cutting
            // it off fail too, the next run finds the file unfinished and says so.
            let _ = file.set_len(before).await;
            return Err(fail(error));
        }
        Ok(())
    }

    /// Opens the file to append to; a new one is created and its directory synced, so that its name
    /// is on disk with its first lines.
    async fn open(&self) -> Result<tokio::fs::File, Error> {
        let fail = |e| Error::write(&self.path, e);
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).append(true);
        match options.clone().create_new(true).open(&self.path).await {
            Ok(file) => {
                let directory = match self.path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                let synced = async { tokio::fs::File::open(directory).await?.sync_all().await };
                synced.await.map_err(|e| Error::write(directory, e))?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut file = options.open(&self.path).await.map_err(fail)?;
                if ends_with_newline(&mut file).await.map_err(fail)? {
                    Ok(file)
                } else {
                    Err(Error::Unfinished(self.path.display().to_string()))
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Writes one JSON line per letter.
    pub async fn write(&self, letters: &[&Letter]) -> Result<(), Error> {
        let mut text = String::new();
        for letter in letters {
            text += &serde_json::to_string(letter).map_err(|e| Error::write(&self.path, e))?;
            text.push('\n');
        }
        self.append(&text).await
    }
}

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
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
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
        journal.append(&text).await
    }
}

/// Whether the file is empty or ends with a newline.
async fn ends_with_newline(file: &mut tokio::fs::File) -> std::io::Result<bool> {
    if file.metadata().await?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1)).await?;
    Ok(file.read_u8().await? == b'\n')
}

/// A line of the journal: the line number and the message id, so that a line is left out only when
/// both still match (an edited file sends again rather than skip).
fn journal_key(letter: &Letter) -> String {
    format!("{}\t{}", letter.handle, letter.message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_whose_last_line_is_unfinished_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq_export.jsonl");
        let unfinished = "{\"message_id\":\"m-1\",\"body\":\"a\"}\n{\"message_id\":\"m-2\",\"bo";
        std::fs::write(&path, unfinished).unwrap();
        let error = AppendFile::new(&path).append("{}\n").await.unwrap_err();
        assert!(
            matches!(&error, Error::Unfinished(named) if *named == path.display().to_string()),
            "{error}"
        );
        assert!(error.to_string().contains("remove it"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), unfinished);
    }
}
