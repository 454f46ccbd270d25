//! Customer contacts. Each type masks itself in `Debug` so that personal data
//! cannot reach a log line by accident; `as_str` is the explicit way out.

use crate::domain::ChannelName;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Writes `value` with all but its first and last characters hidden.
fn mask(value: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let chars: Vec<char> = value.chars().collect();
    match chars.as_slice() {
        [] => write!(f, "\"\""),
        [first, .., last] if chars.len() > 4 => write!(f, "\"{first}***{last}\""),
        _ => write!(f, "\"***\""),
    }
}

/// A syntactically valid email address (as lettre will accept it for sending).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(lettre::Address);

impl Email {
    pub fn parse(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<lettre::Address>()
            .map(Email)
            .map_err(|_| "not a valid email address".to_owned())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    pub fn address(&self) -> &lettre::Address {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.as_str().to_owned()
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        mask(self.as_str(), f)
    }
}

/// A valid phone number in E.164 form (`+` and digits), with its country.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone {
    e164: String,
    /// ISO 3166 alpha-2 region, for routing rules by country.
    country: Option<String>,
}

impl Phone {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.strip_prefix('+').ok_or("not an E.164 number: it must start with +")?;
        if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err("not an E.164 number: + followed by 8 to 15 digits".to_owned());
        }
        // Parsing checks the country calling code and the number's shape.
        // Full validity is not required: numbering plans change faster than
        // billers' data (Mexico's old mobile `1` prefix, still used by
        // WhatsApp, is "invalid" today), and the provider has the last word.
        let number = phonenumber::parse(None, s).map_err(|_| "not a valid phone number".to_owned())?;
        Ok(Phone {
            e164: s.to_owned(),
            country: number.country().id().map(|id| id.as_ref().to_owned()),
        })
    }

    /// Loads the numbering plans now rather than in the first invoice with
    /// a phone number: building them takes a noticeable part of a second,
    /// which that invoice, and every other one with a phone number, would
    /// spend waiting on a runtime thread.
    pub fn load_numbering_plans() {
        let _ = phonenumber::parse(None, "+14155550100");
    }

    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The number's region (e.g. `MX`), when the numbering plan tells it.
    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.e164
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        mask(&self.e164, f)
    }
}

/// A Messenger page-scoped user id: digits only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Psid(String);

impl Psid {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if (5..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit()) {
            Ok(Psid(s.to_owned()))
        } else {
            Err("not a Messenger PSID (5 to 32 digits)".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Psid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Psid::parse(&s)
    }
}

impl From<Psid> for String {
    fn from(p: Psid) -> String {
        p.0
    }
}

impl fmt::Debug for Psid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        mask(&self.0, f)
    }
}

/// Every way a customer can be reached; at least one is set on a valid invoice.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contacts {
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub whatsapp: Option<Phone>,
    pub messenger_psid: Option<Psid>,
}

impl Contacts {
    /// The customer's address on `channel`, if the invoice gave one.
    pub fn address(&self, channel: ChannelName) -> Option<&str> {
        match channel {
            ChannelName::Email => self.email.as_ref().map(|e| e.as_str()),
            ChannelName::Sms => self.phone.as_ref().map(|p| p.as_str()),
            ChannelName::Whatsapp => self.whatsapp.as_ref().map(|p| p.as_str()),
            ChannelName::Messenger => self.messenger_psid.as_ref().map(|p| p.as_str()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.phone.is_none() && self.whatsapp.is_none() && self.messenger_psid.is_none()
    }
}
