//! The messenger channel (skeleton: the `file` provider only).

mod config;

pub use config::MessengerConfig;

use async_trait::async_trait;

use super::outbox::FileOutbox;
use super::{BuildContext, BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

pub struct MessengerChannel {
    outbox: FileOutbox,
}

impl MessengerChannel {
    pub fn new(config: &MessengerConfig, _context: &BuildContext) -> Result<MessengerChannel, BuildError> {
        Ok(MessengerChannel {
            outbox: FileOutbox::new(ChannelName::Messenger, &config.outbox_dir)?,
        })
    }
}

#[async_trait]
impl Channel for MessengerChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Messenger
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        Ok(Prepared {
            channel: ChannelName::Messenger,
            to: request.to.to_owned(),
            parts: vec![("text", templates.render("sms/body", request.view)?)],
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        self.outbox.write(message).await
    }
}
