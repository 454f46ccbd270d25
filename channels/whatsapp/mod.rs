//! The whatsapp channel (skeleton: the `file` provider only).

mod config;

pub use config::WhatsappConfig;

use async_trait::async_trait;

use super::outbox::FileOutbox;
use super::{BuildContext, BuildError, Channel, ChannelName, Prepared, Receipt, Request, SendError};
use crate::render::{RenderError, Templates};

pub struct WhatsappChannel {
    outbox: FileOutbox,
}

impl WhatsappChannel {
    pub fn new(config: &WhatsappConfig, _context: &BuildContext) -> Result<WhatsappChannel, BuildError> {
        Ok(WhatsappChannel {
            outbox: FileOutbox::new(ChannelName::Whatsapp, &config.outbox_dir)?,
        })
    }
}

#[async_trait]
impl Channel for WhatsappChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Whatsapp
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        Ok(Prepared {
            channel: ChannelName::Whatsapp,
            to: request.to.to_owned(),
            parts: vec![("text", templates.render("sms/body", request.view)?)],
        })
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        self.outbox.write(message).await
    }
}
