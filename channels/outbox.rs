//! The `file` provider: what would have been sent, written as one JSON file
//! per message under `var/outbox/<channel>/`, so the service does its whole
//! job on a machine with no provider accounts.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{BuildError, ChannelName, Prepared, Receipt, SendError};

#[derive(Debug, Clone)]
pub struct FileOutbox {
    dir: PathBuf,
}

impl FileOutbox {
    pub fn new(channel: ChannelName, dir: &Path) -> Result<FileOutbox, BuildError> {
        std::fs::create_dir_all(dir).map_err(|e| BuildError {
            channel,
            reason: format!("cannot create the outbox folder {}: {e}", dir.display()),
        })?;
        Ok(FileOutbox { dir: dir.to_owned() })
    }

    /// Writes `{"channel", "to", <parts>}` to `<id>.json`; the id is the
    /// provider message id.
    pub async fn write(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let id = crate::paylink::random_id();
        let mut body = Map::new();
        body.insert("channel".into(), Value::from(message.channel.as_str()));
        body.insert("to".into(), Value::from(message.to.as_str()));
        for (name, content) in &message.parts {
            body.insert((*name).to_owned(), Value::from(content.as_str()));
        }
        let json = serde_json::to_vec_pretty(&Value::Object(body)).map_err(|e| SendError::Permanent {
            code: None,
            reason: format!("cannot encode the message: {e}"),
        })?;
        let path = self.dir.join(format!("{id}.json"));
        // Write then rename, so a reader never sees half a file.
        let partial = self.dir.join(format!(".{id}.json.part"));
        let written = async {
            tokio::fs::write(&partial, &json).await?;
            tokio::fs::rename(&partial, &path).await
        };
        written.await.map_err(|e| SendError::Transient {
            code: None,
            reason: format!("cannot write {}: {e}", path.display()),
            retry_after: None,
        })?;
        Ok(Receipt {
            provider_message_id: Some(id),
        })
    }
}
