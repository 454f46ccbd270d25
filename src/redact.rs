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

fn mask_word(word: &str) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    let looks_like_phone = digits >= 7 && word.chars().all(|c| c.is_ascii_digit() || "+-.".contains(c));
    if word.contains('@') || looks_like_phone {
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
    }
}
