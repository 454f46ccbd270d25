//! How many SMS segments a body costs, the way carriers and Twilio count.
//!
//! A body that fits the GSM 03.38 alphabet goes as GSM-7: 160 septets in one
//! segment, 153 per part once split (the rest is the concatenation header).
//! Extension-table characters (`^{}\[~]|€` and form feed) take an escape
//! septet, so they cost 2. One character outside the alphabet switches the
//! whole body to UCS-2: 70 UTF-16 code units, 67 per part. A 2-unit
//! character (escape pair, surrogate pair) is never split across parts, so
//! a part can end one unit short.

use std::fmt;
use std::sync::LazyLock;

/// GSM 03.38 basic set: 128 code points minus the escape (0x1B).
const GSM7_BASIC: &str = concat!(
    "@£$¥èéùìòÇ\nØø\rÅå",
    "\u{0394}_\u{03A6}\u{0393}\u{039B}\u{03A9}\u{03A0}\u{03A8}\u{03A3}\u{0398}\u{039E}ÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmnopqrstuvwxyzäöñüà",
);

/// GSM 03.38 extension table characters in use: an escape plus one septet.
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// Which alphabet the body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// (units in a single segment, units per part of a split message).
    fn limits(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 => (70, 67),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        })
    }
}

/// The cost of one body. Displays as `2 (UCS-2)` for `payrelay preview`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// Segments billed; 0 for an empty body.
    pub count: usize,
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
}

impl Segments {
    pub fn of(text: &str) -> Segments {
        let (encoding, units) = match gsm7_units(text) {
            Some(units) => (Encoding::Gsm7, units),
            None => (Encoding::Ucs2, text.chars().map(char::len_utf16).collect()),
        };
        let (single, part) = encoding.limits();
        let total: usize = units.iter().sum();
        let count = if total == 0 {
            0
        } else if total <= single {
            1
        } else {
            let (mut parts, mut used) = (1, 0);
            for u in units {
                if used + u > part {
                    parts += 1;
                    used = 0;
                }
                used += u;
            }
            parts
        };
        Segments {
            count,
            encoding,
            units: total,
        }
    }
}

impl fmt::Display for Segments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.count, self.encoding)
    }
}

/// Septets per character, or `None` when one character forces UCS-2.
fn gsm7_units(text: &str) -> Option<Vec<usize>> {
    let mut units = Vec::with_capacity(text.len());
    for c in text.chars() {
        units.push(gsm7_septets(c)?);
    }
    Some(units)
}

/// Septets for `c` in GSM-7, or `None` when it forces UCS-2.
fn gsm7_septets(c: char) -> Option<usize> {
    // Most of a body is ASCII: a table instead of a scan of both sets for
    // every character (which was most of the SMS channel's CPU).
    static ASCII: LazyLock<[u8; 128]> = LazyLock::new(|| std::array::from_fn(|i| slow_septets(char::from(i as u8))));
    let septets = match ASCII.get(c as usize) {
        Some(&n) => n,
        None => slow_septets(c),
    };
    (septets > 0).then_some(usize::from(septets))
}

/// [`gsm7_septets`] from the two sets themselves: 0 when not in GSM-7.
fn slow_septets(c: char) -> u8 {
    if GSM7_BASIC.contains(c) {
        1
    } else if GSM7_EXTENSION.contains(c) {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn of(text: &str) -> (usize, Encoding) {
        let s = Segments::of(text);
        (s.count, s.encoding)
    }

    fn repeat(c: &str, n: usize) -> String {
        c.repeat(n)
    }

    #[test]
    fn the_alphabet_tables_have_the_standard_sizes() {
        let basic: BTreeSet<char> = GSM7_BASIC.chars().collect();
        assert_eq!(GSM7_BASIC.chars().count(), 127, "128 code points minus the escape");
        assert_eq!(basic.len(), 127, "no character listed twice");
        assert_eq!(GSM7_EXTENSION.chars().count(), 10);
        assert!(GSM7_EXTENSION.chars().all(|c| !basic.contains(&c)));
    }

    #[test]
    fn gsm7_fits_160_in_one_segment_and_153_per_part() {
        assert_eq!(of(&repeat("a", 160)), (1, Encoding::Gsm7));
        assert_eq!(of(&repeat("a", 161)), (2, Encoding::Gsm7));
        assert_eq!(of(&repeat("a", 306)), (2, Encoding::Gsm7));
        assert_eq!(of(&repeat("a", 307)), (3, Encoding::Gsm7));
        assert_eq!(of(&repeat("a", 459)), (3, Encoding::Gsm7));
        assert_eq!(of(&repeat("a", 460)), (4, Encoding::Gsm7));
    }

    #[test]
    fn ucs2_fits_70_in_one_segment_and_67_per_part() {
        assert_eq!(of(&repeat("я", 70)), (1, Encoding::Ucs2));
        assert_eq!(of(&repeat("я", 71)), (2, Encoding::Ucs2));
        assert_eq!(of(&repeat("я", 134)), (2, Encoding::Ucs2));
        assert_eq!(of(&repeat("я", 135)), (3, Encoding::Ucs2));
    }

    #[test]
    fn extension_characters_count_double() {
        assert_eq!(of(&repeat("€", 80)), (1, Encoding::Gsm7));
        assert_eq!(of(&repeat("€", 81)), (2, Encoding::Gsm7));
        let mixed = format!("{}{{", repeat("a", 159));
        assert_eq!(Segments::of(&mixed).units, 161);
        assert_eq!(of(&mixed), (2, Encoding::Gsm7));
        for c in "^{}\\[~]|€\u{000C}".chars() {
            assert_eq!(Segments::of(&c.to_string()).units, 2, "{c:?}");
        }
    }

    #[test]
    fn an_escape_pair_is_not_split_across_parts() {
        // 306 septets would be 2 parts if split anywhere; the € cannot start
        // at the last septet of part one, so it moves and a third part follows.
        let text = format!("{}€{}", repeat("a", 152), repeat("a", 152));
        assert_eq!(Segments::of(&text).units, 306);
        assert_eq!(of(&text), (3, Encoding::Gsm7));
    }

    #[test]
    fn one_character_outside_gsm7_switches_the_whole_body_to_ucs2() {
        // ASCII outside the alphabet too (the ASCII table's zeroes).
        for c in ['`', '\t', '\u{7f}', '\u{0}'] {
            assert_eq!(of(&format!("pay now{c}")), (1, Encoding::Ucs2), "{c:?}");
        }
        assert_eq!(of(&repeat("a", 70)), (1, Encoding::Gsm7));
        assert_eq!(of(&format!("{}í", repeat("a", 69))), (1, Encoding::Ucs2));
        assert_eq!(of(&format!("{}í", repeat("a", 70))), (2, Encoding::Ucs2));
        // Accents in the basic set stay GSM-7; most others (í, ú, á) do not.
        assert_eq!(of("Ñandu, ¿é è ù ì ò à ä ö ü ß Ø Å Æ Ç?"), (1, Encoding::Gsm7));
    }

    #[test]
    fn an_emoji_is_two_utf16_units_and_never_split() {
        assert_eq!(Segments::of("😀").units, 2);
        assert_eq!(of(&repeat("😀", 35)), (1, Encoding::Ucs2));
        assert_eq!(of(&repeat("😀", 36)), (2, Encoding::Ucs2));
        // 66 + 2 + 66 = 134 units, but the emoji cannot straddle parts at 67.
        let text = format!("{}😀{}", repeat("a", 66), repeat("a", 66));
        assert_eq!(of(&text), (3, Encoding::Ucs2));
    }

    #[test]
    fn an_empty_body_costs_nothing_and_the_display_names_the_encoding() {
        assert_eq!(of(""), (0, Encoding::Gsm7));
        assert_eq!(Segments::of("hello").to_string(), "1 (GSM-7)");
        assert_eq!(Segments::of(&repeat("я", 71)).to_string(), "2 (UCS-2)");
    }
}
