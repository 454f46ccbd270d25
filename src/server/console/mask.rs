//! What the console shows of a customer: enough to recognise them, not
//! their contacts. An email keeps its first character and its domain
//! (`m•••@example.com`), a phone number its country code and last four
//! digits (`+52•••••5678`), a name its initials.

use crate::invoice::{Contacts, Phone};

const HIDDEN: &str = "•••";

/// `maria@example.com` -> `m•••@example.com`.
pub fn email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{HIDDEN}@{domain}")
        }
        None => HIDDEN.to_owned(),
    }
}

/// `+525512345678` -> `+52•••••5678`: the country calling code, a fixed
/// run of dots (the length is not told) and the last four digits.
pub fn phone(phone: &Phone) -> String {
    let e164 = phone.as_str();
    let code = phonenumber::parse(None, e164)
        .map(|n| n.code().value().to_string())
        .unwrap_or_default();
    let last: String = e164
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("+{code}•••••{last}")
}

/// A Messenger PSID: its last four digits.
pub fn psid(psid: &str) -> String {
    let last: String = psid
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{HIDDEN}{last}")
}

/// `María López` -> `M••• L•••`.
pub fn name(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|word| word.chars().next())
        .map(|initial| format!("{initial}{HIDDEN}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each contact an invoice has, masked: `(channel, shown)`.
pub fn contacts(contacts: &Contacts) -> Vec<(&'static str, String)> {
    let mut shown = Vec::new();
    if let Some(e) = &contacts.email {
        shown.push(("email", email(e.as_str())));
    }
    if let Some(p) = &contacts.phone {
        shown.push(("phone", phone(p)));
    }
    if let Some(p) = &contacts.whatsapp {
        shown.push(("whatsapp", phone(p)));
    }
    if let Some(p) = &contacts.messenger_psid {
        shown.push(("messenger", psid(p.as_str())));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_keep_only_what_recognises_them() {
        assert_eq!(email("maria@example.com"), "m•••@example.com");
        assert_eq!(phone(&Phone::parse("+525512345678").unwrap()), "+52•••••5678");
        assert_eq!(phone(&Phone::parse("+14155550100").unwrap()), "+1•••••0100");
        assert_eq!(psid("1234567890"), "•••7890");
        assert_eq!(name("María  López"), "M••• L•••");
        assert_eq!(email("no-at-sign"), "•••");
    }
}
