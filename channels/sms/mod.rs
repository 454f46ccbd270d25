//! The sms channel (skeleton: the `file` provider only).

mod config;

pub use config::SmsConfig;

use async_trait::async_trait;

use super::outbox::FileOutbox;
use super::{BuildContext, BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

pub struct SmsChannel {
    outbox: FileOutbox,
}

impl SmsChannel {
    pub fn new(config: &SmsConfig, _context: &BuildContext) -> Result<SmsChannel, BuildError> {
        Ok(SmsChannel {
            outbox: FileOutbox::new(ChannelName::Sms, &config.outbox_dir)?,
        })
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Sms
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        Ok(Prepared {
            channel: ChannelName::Sms,
            to: request.to.to_owned(),
            parts: vec![("text", templates.render("sms/body", request.view)?)],
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        self.outbox.write(message).await
    }
}
