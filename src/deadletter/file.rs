//! The append-only file that holds dead letters on disk (the local run's dead-letter file, an export,
//! an import's journal): each append is whole on disk or cut off again, so the file always ends with
//! a whole line.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::Letter;

/// An append that did not get onto the disk whole.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "writing {path} failed: {error}. The file is cut back to its last whole line, and nothing that waited on this write was done (no message deleted from a queue, no import line counted as sent): free disk space, fix the file's permissions or write to another file, then run again"
    )]
    Write { path: String, error: String },
    #[error(
        "{0} does not end with a newline: its last line is unfinished, most likely by a run killed while writing it. Removing that line loses nothing (a message is deleted from the DLQ, or an import line counted as sent, only once its line is whole on disk): remove it, or end it with a newline if it is whole, then run again; or write to another file"
    )]
    Unfinished(String),
}

impl FileError {
    fn write(path: &Path, error: impl std::fmt::Display) -> Self {
        FileError::Write {
            path: path.display().to_string(),
            error: error.to_string(),
        }
    }
}

/// A file that is only appended to, created by the first append; each append is on disk (flushed
/// and synced) when it returns, or cut off again when it fails, so that the file ends with a whole
/// line. A file that does not (a run killed while appending) is refused: [`FileError::Unfinished`].
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

    /// Appends one JSON line per letter, all of them or none.
    pub async fn write(&self, letters: &[&Letter]) -> Result<(), FileError> {
        let mut text = String::new();
        for letter in letters {
            text += &serde_json::to_string(letter).map_err(|e| FileError::write(&self.path, e))?;
            text.push('\n');
        }
        self.append(&text).await
    }

    pub async fn append(&self, text: &str) -> Result<(), FileError> {
        let fail = |e| FileError::write(&self.path, e);
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
    async fn open(&self) -> Result<tokio::fs::File, FileError> {
        let fail = |e| FileError::write(&self.path, e);
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).append(true);
        match options.clone().create_new(true).open(&self.path).await {
            Ok(file) => {
                let directory = match self.path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                let synced = async { tokio::fs::File::open(directory).await?.sync_all().await };
                synced.await.map_err(|e| FileError::write(directory, e))?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut file = options.open(&self.path).await.map_err(fail)?;
                if ends_with_newline(&mut file).await.map_err(fail)? {
                    Ok(file)
                } else {
                    Err(FileError::Unfinished(self.path.display().to_string()))
                }
            }
            Err(e) => Err(fail(e)),
        }
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
            matches!(&error, FileError::Unfinished(named) if *named == path.display().to_string()),
            "{error}"
        );
        assert!(error.to_string().contains("remove it"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), unfinished);
    }
}
