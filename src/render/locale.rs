//! Which language a message is written in: the locale fallback chain.
//!
//! A chain lists BCP 47 tags, most wanted first, each in canonical case
//! (`es-MX`, `zh-Hant-TW`). Each wanted locale is followed by its shorter
//! forms (RFC 4647 lookup: drop the variants, then the region, then the
//! script), so `es-MX` is followed by `es`. The customer's locale comes
//! first, then the biller's `default_locale`, and [`FALLBACK`] always ends
//! the chain: `es-MX` with default `de-DE` gives
//! `["es-MX", "es", "de-DE", "de", "en"]`.

use icu::locale::{LanguageIdentifier, Locale};

/// The language that ends every chain; built-in templates exist for it.
pub const FALLBACK: &str = "en";

/// Parses a BCP 47 tag as a locale, accepting `_` for `-` (`es_MX`) and
/// any case. `None` for anything else, and for a language that is not a
/// two- or three-letter ISO 639 code (`und`, `espanol`).
pub fn parse(tag: &str) -> Option<Locale> {
    let tag = tag.trim().replace('_', "-");
    let locale = Locale::try_from_str(&tag).ok()?;
    let language = locale.id.language.as_str();
    (language.len() <= 3 && !locale.id.language.is_unknown()).then_some(locale)
}

/// The canonical tag of a locale's language part, without extensions:
/// `es-mx` -> `es-MX`, `de-DE-u-nu-latn` -> `de-DE`.
pub fn canonical(tag: &str) -> Option<String> {
    parse(tag).map(|l| l.id.to_string())
}

/// A tag and its shorter forms, longest first: `zh-Hant-TW` ->
/// `["zh-Hant-TW", "zh-Hant", "zh"]`. Empty when `tag` is not a locale.
pub fn lookup(tag: &str) -> Vec<String> {
    let Some(locale) = parse(tag) else {
        return Vec::new();
    };
    let full = locale.id;
    let mut shorter = vec![
        LanguageIdentifier {
            variants: Default::default(),
            ..full.clone()
        },
        LanguageIdentifier {
            region: None,
            variants: Default::default(),
            ..full.clone()
        },
        LanguageIdentifier::from((full.language, None, None)),
    ];
    let mut tags = vec![full.to_string()];
    for id in shorter.drain(..) {
        push_new(&mut tags, id.to_string());
    }
    tags
}

/// The chain for the wanted locales in order (absent or malformed ones are
/// skipped), ending with [`FALLBACK`].
pub fn chain(wanted: &[Option<&str>]) -> Vec<String> {
    let mut tags = Vec::new();
    for tag in wanted.iter().flatten() {
        for t in lookup(tag) {
            push_new(&mut tags, t);
        }
    }
    push_new(&mut tags, FALLBACK.to_owned());
    tags
}

fn push_new(tags: &mut Vec<String>, tag: String) {
    if !tags.contains(&tag) {
        tags.push(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regional_locale_falls_back_to_its_language_then_english() {
        assert_eq!(chain(&[Some("es-MX"), None]), ["es-MX", "es", "en"]);
    }

    #[test]
    fn the_billers_default_comes_after_the_customers_locale() {
        assert_eq!(
            chain(&[Some("fr-FR"), Some("de-DE")]),
            ["fr-FR", "fr", "de-DE", "de", "en"]
        );
        assert_eq!(chain(&[None, Some("pt-BR")]), ["pt-BR", "pt", "en"]);
        assert_eq!(chain(&[Some("de"), Some("de-AT")]), ["de", "de-AT", "en"]);
    }

    #[test]
    fn without_any_locale_the_chain_is_english() {
        assert_eq!(chain(&[None, None]), ["en"]);
        assert_eq!(chain(&[Some("not a locale"), Some("und")]), ["en"]);
    }

    #[test]
    fn tags_are_canonical_whatever_the_input_case_or_separator() {
        assert_eq!(chain(&[Some("es_mx")]), ["es-MX", "es", "en"]);
        assert_eq!(canonical("DE-de-u-nu-latn").as_deref(), Some("de-DE"));
        assert_eq!(canonical("espanol"), None);
    }

    #[test]
    fn lookup_drops_variants_then_region_then_script() {
        assert_eq!(lookup("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh"]);
        assert_eq!(lookup("ca-ES-valencia"), ["ca-ES-valencia", "ca-ES", "ca"]);
        assert_eq!(lookup("en"), ["en"]);
        assert!(lookup("").is_empty());
    }
}
