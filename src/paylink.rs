//! Pay links: unguessable tokens and the biller's checkout URL.
//!
//! A token is 160 random bits, base64url-encoded; only its SHA-256 is stored,
//! so a copy of the database holds no working link. Tokens carry no personal
//! data, and each channel's message gets its own, so a click is attributed to
//! the channel that earned it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::invoice::InvoiceKey;

/// Everything but RFC 3986's unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A new random token for one message.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A short random id (for Message-IDs and similar), 128 bits, hex.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a path segment could be a token at all, to answer 404 without a
/// database lookup for junk.
pub fn is_well_formed(token: &str) -> bool {
    (16..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Fills `{placeholder}`s of a checkout URL template, each value URL-encoded
/// (contract §7). `amount` is the biller's own decimal string.
pub fn checkout_url(
    template: &str,
    key: &InvoiceKey,
    amount: &str,
    amount_minor: i64,
    currency: &str,
    token: &str,
) -> String {
    let minor = amount_minor.to_string();
    let values: [(&str, &str); 6] = [
        ("{invoice_id}", &key.invoice_id),
        ("{biller_id}", &key.biller_id),
        ("{amount}", amount),
        ("{amount_minor}", &minor),
        ("{currency}", currency),
        ("{token}", token),
    ];
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match values.iter().find(|(name, _)| tail.starts_with(name)) {
            Some((name, value)) => {
                out.extend(utf8_percent_encode(value, COMPONENT));
                rest = &tail[name.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 27);
        assert!(is_well_formed(&a));
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn checkout_placeholders_are_filled_and_encoded() {
        let key = InvoiceKey {
            biller_id: "acme".into(),
            invoice_id: "INV 1/2&x".into(),
            revision: 1,
        };
        let url = checkout_url(
            "https://pay.example/c?inv={invoice_id}&amt={amount}&m={amount_minor}&cur={currency}&b={biller_id}&t={token}",
            &key,
            "1234.50",
            123450,
            "MXN",
            "tok_en-1",
        );
        assert_eq!(
            url,
            "https://pay.example/c?inv=INV%201%2F2%26x&amt=1234.50&m=123450&cur=MXN&b=acme&t=tok_en-1"
        );
    }
}
