//! Identifiers payrelay makes, and the rule for the ones billers choose.

use rand::RngCore;

/// A random id, 128 bits in hex (Message-IDs, test names).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A new event id: 32 hex digits, the time in milliseconds first (so ids
/// sort roughly by time) then 80 random bits.
pub fn event_id() -> String {
    let ms = super::clock::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let mut id = format!("{ms:012x}");
    id.push_str(&hex::encode(random));
    id
}

/// Biller ids are one routing-key word: `[a-z0-9_-]{1,64}`. Config checks
/// enforce it; an id from a message that breaks it is never put in a
/// routing key (it could add words, or the `#`/`*` wildcards).
pub fn is_valid_biller_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biller_ids_are_one_lowercase_word() {
        for ok in ["acme", "a", "acme-energy_2", &"x".repeat(64)] {
            assert!(is_valid_biller_id(ok), "{ok}");
        }
        for bad in ["", "ACME", "acme.mx", "acme#", "acme energy", "ácme", &"x".repeat(65)] {
            assert!(!is_valid_biller_id(bad), "{bad}");
        }
    }

    #[test]
    fn event_ids_are_unique_and_start_with_the_time() {
        let a = event_id();
        let b = event_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a[..12] <= b[..12]);
    }

    #[test]
    fn random_ids_are_128_bits_of_hex() {
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, random_id());
    }
}
