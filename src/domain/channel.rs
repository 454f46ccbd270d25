//! The channels payrelay sends on, by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The channels payrelay knows. Their names are part of what billers see:
/// invoices name them and events carry them, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(description = "A channel payrelay sends on.")]
pub enum ChannelName {
    Email,
    Sms,
    Whatsapp,
    Messenger,
}

impl ChannelName {
    pub const ALL: [ChannelName; 4] = [
        ChannelName::Email,
        ChannelName::Sms,
        ChannelName::Whatsapp,
        ChannelName::Messenger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelName::Email => "email",
            ChannelName::Sms => "sms",
            ChannelName::Whatsapp => "whatsapp",
            ChannelName::Messenger => "messenger",
        }
    }

    /// Name of the contact field this channel needs, for skip reasons.
    pub fn contact_field(self) -> &'static str {
        match self {
            ChannelName::Email => "customer.email",
            ChannelName::Sms => "customer.phone",
            ChannelName::Whatsapp => "customer.whatsapp",
            ChannelName::Messenger => "customer.messenger_psid",
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChannelName::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("\"{s}\" is not a channel (email, sms, whatsapp, messenger)"))
    }
}
