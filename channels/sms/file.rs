//! The `file` provider: each SMS as a JSON file under the outbox folder
//! (`{"channel", "to", "text", "segments"}`), for running without an account.

use async_trait::async_trait;

use super::{SmsMessage, SmsProvider};
use crate::channels::outbox::FileOutbox;
use crate::channels::{BuildError, ChannelMessage, Receipt, SendError};
use crate::domain::ChannelName;

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
    async fn send(&self, to: &str, message: &SmsMessage) -> Result<Receipt, SendError> {
        self.outbox.write(ChannelName::Sms, to, &message.parts()).await
    }
}
