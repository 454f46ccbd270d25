//! The `file` provider: each SMS as a JSON file under the outbox folder
//! (`{"channel", "to", "text", "segments"}`), for running without an account.

use async_trait::async_trait;

use super::{Segments, SmsProvider};
use crate::channels::outbox::FileOutbox;
use crate::channels::{BuildError, ChannelName, Prepared, Receipt, SendError};

pub(super) struct File {
    outbox: FileOutbox,
}

impl File {
    pub(super) fn new(dir: &std::path::Path) -> Result<File, BuildError> {
        Ok(File {
            outbox: FileOutbox::new(ChannelName::Sms, dir)?,
        })
    }
}

#[async_trait]
impl SmsProvider for File {
    async fn send(&self, to: &str, body: &str) -> Result<Receipt, SendError> {
        let message = Prepared {
            channel: ChannelName::Sms,
            to: to.to_owned(),
            parts: vec![("text", body.to_owned()), ("segments", Segments::of(body).to_string())],
        };
        self.outbox.write(&message).await
    }
}
