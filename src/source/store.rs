//! Durable cursors, one item per source: a DynamoDB table (`OPSRELAY_STATE_TABLE`), or for the local
//! run and `opsrelay poll` without one, a JSON file. Each write is a compare-and-set on the item's
//! version, so that of two overlapping polls only one moves a cursor; the other's rows were sent
//! and are at most duplicates.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::cursor::{State, Stored};
use crate::aws::describe;

/// Where the cursors live.
#[derive(Clone, Debug)]
pub enum CursorStore {
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    File(PathBuf),
}

/// What went wrong with a cursor.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "another poll moved the cursor of source `{0}` first; the rows this poll sent are at most duplicates"
    )]
    Raced(String),
    #[error(
        "the cursor item of source `{name}` in {place} is not one opsrelay wrote ({problem}): reset it as runbooks/poller-behind.md says"
    )]
    BadItem {
        name: String,
        place: String,
        problem: String,
    },
    #[error("the cursor store {place} failed: {detail}")]
    Unavailable { place: String, detail: String },
}

/// The file store's content: each source's state and version.
#[derive(Default, Serialize, Deserialize)]
struct FileItems(BTreeMap<String, FileItem>);

#[derive(Serialize, Deserialize)]
struct FileItem {
    state: serde_json::Value,
    version: u64,
}

impl CursorStore {
    /// Where it is, for messages (never a secret).
    pub fn place(&self) -> String {
        match self {
            CursorStore::Dynamo { table, .. } => format!("DynamoDB table {table}"),
            CursorStore::File(path) => format!("file {}", path.display()),
        }
    }

    /// The state of `source`, and its version (none before its first write).
    pub async fn load(&self, source: &str) -> Result<Stored, StoreError> {
        let (state, version) = match self {
            CursorStore::Dynamo { client, table } => {
                let item = client
                    .get_item()
                    .table_name(table)
                    .key("source", AttributeValue::S(source.to_string()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| self.unavailable(describe(&e), "dynamodb:GetItem"))?
                    .item;
                match item {
                    None => return Ok(Stored::default()),
                    Some(item) => self.dynamo_item(source, &item)?,
                }
            }
            CursorStore::File(path) => match self.read_file(path)?.0.remove(source) {
                None => return Ok(Stored::default()),
                Some(item) => (item.state, item.version),
            },
        };
        let state = serde_json::from_value(state).map_err(|e| self.bad(source, e.to_string()))?;
        Ok(Stored {
            state,
            version: Some(version),
        })
    }

    /// Writes `state` for `source` if its version is still `expected`.
    pub async fn save(
        &self,
        source: &str,
        state: &State,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let next = expected.map_or(1, |v| v + 1);
        let json = serde_json::to_value(state).expect("a state is JSON");
        match self {
            CursorStore::Dynamo { client, table } => {
                let item = HashMap::from([
                    ("source".to_string(), AttributeValue::S(source.to_string())),
                    ("state".to_string(), AttributeValue::S(json.to_string())),
                    ("version".to_string(), AttributeValue::N(next.to_string())),
                ]);
                let put = client.put_item().table_name(table).set_item(Some(item));
                let put = match expected {
                    None => put
                        .condition_expression("attribute_not_exists(#source)")
                        .expression_attribute_names("#source", "source"),
                    Some(v) => put
                        .condition_expression("#version = :version")
                        .expression_attribute_names("#version", "version")
                        .expression_attribute_values(":version", AttributeValue::N(v.to_string())),
                };
                match put.send().await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        Err(StoreError::Raced(source.to_string()))
                    }
                    Err(e) => Err(self.unavailable(describe(&e), "dynamodb:PutItem")),
                }
            }
            CursorStore::File(path) => {
                let mut items = self.read_file(path)?;
                if items.0.get(source).map(|i| i.version) != expected {
                    return Err(StoreError::Raced(source.to_string()));
                }
                items.0.insert(
                    source.to_string(),
                    FileItem {
                        state: json,
                        version: next,
                    },
                );
                let text = serde_json::to_string_pretty(&items).expect("items are JSON");
                let temporary = path.with_extension("tmp");
                std::fs::write(&temporary, text)
                    .and_then(|()| std::fs::rename(&temporary, path))
                    .map_err(|e| self.unavailable(e.to_string(), "a writable directory"))
            }
        }
    }

    /// The state (as JSON) and version of a DynamoDB item.
    fn dynamo_item(
        &self,
        source: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<(serde_json::Value, u64), StoreError> {
        let state = item
            .get("state")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| self.bad(source, "no `state` string".into()))?;
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| self.bad(source, "no `version` number".into()))?;
        let state = serde_json::from_str(state).map_err(|e| self.bad(source, e.to_string()))?;
        Ok((state, version))
    }

    fn read_file(&self, path: &std::path::Path) -> Result<FileItems, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::BadItem {
                name: "(all)".into(),
                place: self.place(),
                problem: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileItems::default()),
            Err(e) => Err(self.unavailable(e.to_string(), "a readable file")),
        }
    }

    fn bad(&self, source: &str, problem: String) -> StoreError {
        StoreError::BadItem {
            name: source.to_string(),
            place: self.place(),
            problem,
        }
    }

    fn unavailable(&self, detail: String, needs: &str) -> StoreError {
        StoreError::Unavailable {
            place: self.place(),
            detail: format!("{detail} (needs {needs})"),
        }
    }
}
