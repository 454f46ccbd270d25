//! Debtors: what is known of a biller's customer beyond one invoice, and
//! the words with which a customer stops or restarts messages.
//!
//! A customer is named by [`crate::invoice::Invoice::customer_key`]'s key
//! (their `customer.id` at the biller, else a hash of their first contact).
//! Their contact addresses are kept only as [`address_hash`]es, so the
//! store can tell which customers an inbound STOP is about without keeping
//! a phone number or an email address in clear.

use sha2::{Digest, Sha256};

use super::ChannelName;

/// The SHA-256 (hex) of an address in its normal form: an email
/// lower-cased, a phone or WhatsApp number in E.164 with its `+` (WhatsApp
/// webhooks send it without), a Messenger PSID as it is. The same address
/// always hashes the same, whoever wrote it.
pub fn address_hash(channel: ChannelName, address: &str) -> String {
    let address = address.trim();
    let normal = match channel {
        ChannelName::Email => address.to_lowercase(),
        ChannelName::Sms | ChannelName::Whatsapp => {
            let digits: String = address.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        }
        ChannelName::Messenger => address.to_owned(),
    };
    hex::encode(Sha256::digest(normal.as_bytes()))
}

/// Which addresses a suppression covers: SMS and WhatsApp numbers stop for
/// every biller (one sending number serves them all), email per biller.
pub fn suppression_scope(channel: ChannelName, biller_id: &str) -> &str {
    match channel {
        ChannelName::Email | ChannelName::Messenger => biller_id,
        ChannelName::Sms | ChannelName::Whatsapp => ANY_BILLER,
    }
}

/// The scope of a suppression that holds for every biller.
pub const ANY_BILLER: &str = "*";

/// Whether a send on `channel` remembers whose the address is. A STOP or
/// START replied by SMS or WhatsApp names only the number, and every
/// biller that wrote to it is told; an email unsubscribe comes through
/// one invoice's link, which already names its customer.
pub fn remembers_address(channel: ChannelName) -> bool {
    suppression_scope(channel, "") == ANY_BILLER
}

/// What a customer said in a reply, as far as messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Send no more on this channel.
    Stop,
    /// Send again.
    Start,
}

/// Stop words: Twilio's defaults and their Spanish and Portuguese peers.
const STOP_WORDS: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "BAJA",
    "ALTO",
    "PARAR",
    "PARE",
];
const START_WORDS: &[&str] = &["START", "UNSTOP"];

/// Reads a reply's text: a stop or start word alone (any case, trimmed),
/// else nothing (a question, a thank-you).
pub fn reply_word(body: &str) -> Option<Reply> {
    let word = body.trim().to_uppercase();
    if STOP_WORDS.contains(&word.as_str()) {
        Some(Reply::Stop)
    } else if START_WORDS.contains(&word.as_str()) {
        Some(Reply::Start)
    } else {
        None
    }
}

/// What the store knows of one customer at one biller that changes where
/// their messages go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The channels the customer chose on a pay page, in their order.
    pub preferred: Option<Vec<ChannelName>>,
    /// Channels the customer stopped on a pay page.
    pub stopped: Vec<ChannelName>,
    /// Channels whose address (on this invoice) asked to stop.
    pub suppressed: Vec<ChannelName>,
}

impl Profile {
    /// True when nothing is known that changes routing.
    pub fn is_empty(&self) -> bool {
        self.preferred.is_none() && self.stopped.is_empty() && self.suppressed.is_empty()
    }
}

/// Channel names joined with `,`, as the store keeps a preference.
pub fn join_channels(channels: &[ChannelName]) -> String {
    channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
}

/// The channels [`join_channels`] wrote; unknown names (from a newer
/// version) are left out.
pub fn split_channels(text: &str) -> Vec<ChannelName> {
    text.split(',').filter_map(|c| c.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_address_hashes_the_same_however_it_is_written() {
        assert_eq!(
            address_hash(ChannelName::Email, "Maria@Example.com "),
            address_hash(ChannelName::Email, "maria@example.com")
        );
        assert_eq!(
            address_hash(ChannelName::Whatsapp, "5215512345678"),
            address_hash(ChannelName::Sms, "+5215512345678")
        );
        assert_ne!(
            address_hash(ChannelName::Sms, "+5215512345678"),
            address_hash(ChannelName::Sms, "+5215512345679")
        );
    }

    #[test]
    fn stop_and_start_words_are_read_alone_in_any_case() {
        for word in ["stop", " STOP ", "Baja", "parar", "optout", "STOPALL"] {
            assert_eq!(reply_word(word), Some(Reply::Stop), "{word}");
        }
        for word in ["start", "UNSTOP "] {
            assert_eq!(reply_word(word), Some(Reply::Start), "{word}");
        }
        for text in ["please stop", "help", "", "thanks"] {
            assert_eq!(reply_word(text), None, "{text}");
        }
    }

    #[test]
    fn a_stored_channel_list_reads_back() {
        let list = [ChannelName::Sms, ChannelName::Email];
        assert_eq!(split_channels(&join_channels(&list)), list);
        assert!(split_channels("").is_empty());
    }
}
