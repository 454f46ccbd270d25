//! Masks personal data in free text before it reaches a log line.
//!
//! Provider error messages often quote the recipient ("550 <maria@x.com>:
//! unknown user"); anything that looks like an email address or a phone
//! number is masked, keeping only its first and last characters.

/// Returns `text` with email addresses and long digit runs masked.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || "<>;,()\"'[]".contains(c) {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    out
}

/// A phone number in international form (`+` and at least 7 digits), or a
/// bare run of 10 or more digits (a national number). Shorter bare numbers
/// are sizes, counts and codes, and dates and times have their own shape:
/// masking those would hide what an operator needs to read.
fn looks_like_phone(word: &str) -> bool {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let phone_chars = word.chars().all(|c| c.is_ascii_digit() || "+-.".contains(c));
    let international = word.starts_with('+') && digits >= 7;
    phone_chars && (international || digits >= 10) && !looks_like_date(word)
}

/// `YYYY-MM-DD`, or a digit run written that way with dots.
fn looks_like_date(word: &str) -> bool {
    let parts: Vec<&str> = word.split(['-', '.']).collect();
    matches!(parts.as_slice(), [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2)
}

fn mask_word(word: &str) -> String {
    if word.contains('@') || looks_like_phone(word) {
        let chars: Vec<char> = word.chars().collect();
        match (chars.first(), chars.last()) {
            (Some(first), Some(last)) if chars.len() > 4 => format!("{first}***{last}"),
            _ => "***".to_owned(),
        }
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_and_numbers_are_masked_and_the_rest_kept() {
        let masked = super::text("550 5.1.1 <maria@example.com>: no such user; call +5215512345678 (code 21211)");
        assert_eq!(masked, "550 5.1.1 <m***m>: no such user; call +***8 (code 21211)");
        assert_eq!(super::text("call 5512345678 now"), "call 5***8 now");
    }

    #[test]
    fn dates_sizes_and_codes_are_not_mistaken_for_phone_numbers() {
        for kept in [
            "due_date 2026-12-01 is in the past",
            "due_date 2026-1-1 is not YYYY-MM-DD",
            "body is 1048576 bytes, more than the 65536 allowed",
            "code 63016, retry in 30 s",
        ] {
            assert_eq!(super::text(kept), kept);
        }
    }
}
