//! Pay links: unguessable tokens and the biller's checkout URL.
//!
//! A token is the time it was made (12 hex digits of milliseconds), then 160
//! random bits, base64url-encoded. Only its SHA-256 is stored, after that
//! time, so a copy of the database holds no working link while the store's
//! key grows at its end: a random key put every new link on a random page of
//! the index, written out again at every commit. Tokens carry no personal
//! data, and each channel's message gets its own, so a click is attributed to
//! the channel that earned it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::InvoiceKey;

/// Everything but RFC 3986's unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Hex digits of time a token starts with.
const TIME_DIGITS: usize = 12;
/// Length of a token: the time, then 20 random bytes in base64url (27).
/// Tokens made before the time was added are the 27 alone.
const TOKEN_LEN: usize = TIME_DIGITS + 27;

/// A new token for one message: the time, then 160 random bits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let ms = crate::domain::clock::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let mut token = format!("{ms:0TIME_DIGITS$x}");
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// What the store keeps instead of the token: its SHA-256 in hex, after the
/// time the token starts with (a token made before tokens carried the time
/// is kept as its hash alone, so its link still works).
pub fn token_hash(token: &str) -> String {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    match time_of(token) {
        Some(time) => format!("{time}{hash}"),
        None => hash,
    }
}

/// The time digits a token starts with, if it is one that carries them.
fn time_of(token: &str) -> Option<&str> {
    let time = token.get(..TIME_DIGITS)?;
    let carries_time = token.len() == TOKEN_LEN && time.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    carries_time.then_some(time)
}

/// Whether a path segment could be a token at all, to answer 404 without a
/// database lookup for junk.
pub fn is_well_formed(token: &str) -> bool {
    (16..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Fills `{placeholder}`s of a biller's checkout URL template, each value
/// URL-encoded. `amount` is the biller's own decimal string.
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

/// The host the Pay button leads to, which the pay page names so the
/// customer knows where they will pay: the checkout URL's host, with its
/// placeholders filled (the biller's id, a host never holds the others).
/// `None` if it has no host (`payrelay check` refuses such a URL).
pub fn checkout_host(template: &str, biller_id: &str) -> Option<String> {
    let key = InvoiceKey {
        biller_id: biller_id.into(),
        invoice_id: "i".into(),
        revision: 1,
    };
    let url = checkout_url(template, &key, "0", 0, "XXX", "t");
    let parsed = url::Url::parse(&url).ok()?;
    parsed.host_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_host_is_the_urls_host_with_its_placeholders_filled() {
        assert_eq!(
            checkout_host("https://pay.acme.example:8443/c?inv={invoice_id}&t={token}", "acme").as_deref(),
            Some("pay.acme.example")
        );
        assert_eq!(
            checkout_host("https://{biller_id}.checkout.example/{token}", "acme").as_deref(),
            Some("acme.checkout.example")
        );
        assert_eq!(checkout_host("not a url", "acme"), None);
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(is_well_formed(&a));
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn store_keys_start_with_the_time_so_later_links_sort_after_earlier_ones() {
        let first = new_token();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_token();
        let (k1, k2) = (token_hash(&first), token_hash(&second));
        assert!(k1 < k2, "{k1} then {k2}");
        assert_eq!(&k1[..TIME_DIGITS], &first[..TIME_DIGITS]);
        assert_eq!(&k1[TIME_DIGITS..], hex::encode(Sha256::digest(first.as_bytes())));
        // The key holds no working token.
        assert!(!k1.contains(&first[TIME_DIGITS..]));
    }

    #[test]
    fn tokens_made_before_the_time_prefix_keep_their_plain_hash() {
        // 160 random bits in 27 characters, as every token was before;
        // some of them start with hex digits.
        let mut bytes = [0u8; 20];
        rand::rng().fill_bytes(&mut bytes);
        let random = URL_SAFE_NO_PAD.encode(bytes);
        for old in [random.as_str(), "abcdef0123456789abcdefABCDE"] {
            assert_eq!(old.len(), 27);
            assert!(is_well_formed(old));
            assert_eq!(token_hash(old), hex::encode(Sha256::digest(old.as_bytes())));
        }
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
