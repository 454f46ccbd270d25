//! The `file` provider: what would have been sent, written as one JSON file
//! per message under `var/outbox/<channel>/`, so the service does its whole
//! job on a machine with no provider accounts. The files hold customers'
//! contact details and live pay links: only payrelay's user can read them
//! (files 0600, folders payrelay creates 0700).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::{BuildError, Receipt, SendError};
use crate::domain::ChannelName;

/// Writes files on a thread of its own (see [`FileOutbox::write_file`]).
#[derive(Debug, Clone)]
pub struct FileOutbox {
    dir: PathBuf,
    writes: mpsc::Sender<FileWrite>,
}

/// One file for the writer thread, and who waits for it.
#[derive(Debug)]
struct FileWrite {
    partial: PathBuf,
    target: PathBuf,
    contents: Vec<u8>,
    done: oneshot::Sender<std::io::Result<()>>,
}

impl FileOutbox {
    pub fn new(channel: ChannelName, dir: &Path) -> Result<FileOutbox, BuildError> {
        create_private_dir(dir).map_err(|e| BuildError {
            channel,
            reason: format!("cannot create the outbox folder {}: {e}", dir.display()),
        })?;
        let (writes, queue) = mpsc::channel::<FileWrite>();
        std::thread::Builder::new()
            .name(format!("payrelay-outbox-{}", channel.as_str()))
            .spawn(move || write_files(queue))
            .map_err(|e| BuildError {
                channel,
                reason: format!("cannot start the outbox thread: {e}"),
            })?;
        Ok(FileOutbox {
            dir: dir.to_owned(),
            writes,
        })
    }

    /// Writes `{"channel", "to", <parts>}` to `<id>.json`; the id is the
    /// provider message id.
    pub async fn write(
        &self,
        channel: ChannelName,
        to: &str,
        parts: &[(&str, Cow<'_, str>)],
    ) -> Result<Receipt, SendError> {
        let mut body = Map::new();
        body.insert("channel".into(), Value::from(channel.as_str()));
        body.insert("to".into(), Value::from(to));
        for (name, content) in parts {
            body.insert((*name).to_owned(), Value::from(content.as_ref()));
        }
        let json = serde_json::to_vec_pretty(&Value::Object(body)).map_err(|e| SendError::Permanent {
            code: None,
            reason: format!("cannot encode the message: {e}"),
        })?;
        self.write_file("json", json).await
    }

    /// Writes `contents` to `<id>.<extension>` and returns the id as the
    /// provider message id.
    ///
    /// Ids start with the time, so the store's index of provider ids grows
    /// at its end rather than at a random page for every message. The file
    /// is written under a temporary name and renamed, so a reader never sees
    /// half a file. One thread per outbox does both steps for every message:
    /// the blocking pool grew to a hundred threads under load and spent more
    /// CPU waking them than writing.
    pub async fn write_file(&self, extension: &str, contents: Vec<u8>) -> Result<Receipt, SendError> {
        let id = time_ordered_id();
        let path = self.dir.join(format!("{id}.{extension}"));
        let (done, written) = oneshot::channel();
        let write = FileWrite {
            partial: self.dir.join(format!(".{id}.{extension}.part")),
            target: path.clone(),
            contents,
            done,
        };
        let written = match self.writes.send(write) {
            Ok(()) => written
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the outbox thread stopped"))),
            Err(_) => Err(std::io::Error::other("the outbox thread stopped")),
        };
        written.map_err(|e| SendError::Transient {
            code: None,
            reason: format!("cannot write {}: {e}", path.display()),
            retry_after: None,
        })?;
        Ok(Receipt {
            provider_message_id: Some(id),
        })
    }
}

/// Removes the copies (`<id>.json`, `<id>.eml`) of the message `id` from
/// the outbox folder `dir`, when a customer's personal data is erased;
/// returns how many there were. An id that cannot be one of this
/// provider's (it would name a path elsewhere) removes nothing.
pub fn remove_copies(dir: &Path, id: &str) -> std::io::Result<usize> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Ok(0);
    }
    let mut removed = 0;
    for extension in ["json", "eml"] {
        match std::fs::remove_file(dir.join(format!("{id}.{extension}"))) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The outbox thread: writes files in the order asked, until every
/// [`FileOutbox`] handle is gone.
fn write_files(queue: mpsc::Receiver<FileWrite>) {
    while let Ok(write) = queue.recv() {
        let written = write_private(&write.partial, &write.contents)
            .and_then(|()| std::fs::rename(&write.partial, &write.target));
        // The sender may have gone (its send was cancelled); nothing to do then.
        let _ = write.done.send(written);
    }
}

/// Creates `dir` and any missing parents, readable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `std::fs::write`, but a file it creates is readable by this user only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

/// 32 hex digits: milliseconds since 1970 (12), then 80 random bits.
fn time_ordered_id() -> String {
    let ms = crate::domain::clock::now_ms().max(0) as u64;
    let random = crate::domain::ids::random_id();
    format!("{:012x}{}", ms & 0xffff_ffff_ffff, &random[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_differ() {
        let first = time_ordered_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = time_ordered_id();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(first < second, "{first} then {second}");
        assert_ne!(time_ordered_id(), time_ordered_id());
    }

    #[tokio::test]
    async fn an_erasure_removes_a_messages_copies_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = FileOutbox::new(ChannelName::Email, tmp.path()).unwrap();
        let gone = outbox.write_file("eml", b"To: a".to_vec()).await.unwrap();
        let kept = outbox.write_file("eml", b"To: b".to_vec()).await.unwrap();
        let (gone, kept) = (gone.provider_message_id.unwrap(), kept.provider_message_id.unwrap());
        assert_eq!(remove_copies(tmp.path(), &gone).unwrap(), 1);
        assert_eq!(
            remove_copies(tmp.path(), &gone).unwrap(),
            0,
            "removing again is no error"
        );
        assert!(!tmp.path().join(format!("{gone}.eml")).exists());
        assert!(tmp.path().join(format!("{kept}.eml")).exists());
        std::fs::write(tmp.path().join("x.json"), "{}").unwrap();
        assert_eq!(remove_copies(tmp.path(), "../x").unwrap(), 0);
        assert_eq!(remove_copies(tmp.path(), "").unwrap(), 0);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn outbox_files_and_the_folders_made_for_them_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("var/outbox/email");
        let outbox = FileOutbox::new(ChannelName::Email, &dir).unwrap();
        let receipt = outbox
            .write_file("eml", b"To: maria@example.com\r\n".to_vec())
            .await
            .unwrap();
        let id = receipt.provider_message_id.unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(format!("{id}.eml"))), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("var")), 0o700);
    }
}
