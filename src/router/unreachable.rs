//! Rules that can never decide, found from the config alone.
//!
//! Conservative: a rule is reported only when it is certain that no invoice
//! reaches it: its own conditions can never hold, or one earlier rule
//! matches every invoice it would match (that rule has no conditions, or is
//! the same or broader on every condition: lists as sets, amounts and days as
//! intervals, locales by prefix as `route` reads them). A rule hidden only by
//! several earlier rules together is not reported.

use std::str::FromStr;

use super::locale_covers;
use crate::config::{RoutingConfig, Rule};

/// Rules of `routing` that can never decide, by index in `[[routing.rules]]`,
/// each with the reason in words (the reason names the rule; the caller adds
/// the key, e.g. `routing.rules[2]`).
pub fn unreachable_rules(routing: &RoutingConfig) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (j, later) in routing.rules.iter().enumerate() {
        if let Some(why) = never_holds(later) {
            out.push((j, format!("rule \"{}\" can never decide: {why}", later.name)));
            continue;
        }
        let shadow = routing.rules[..j]
            .iter()
            .enumerate()
            .find(|(_, earlier)| never_holds(earlier).is_none() && covers(earlier, later));
        if let Some((i, earlier)) = shadow {
            let conditions = conditions(earlier);
            let how = if conditions.is_empty() {
                "has no conditions, so it matches every invoice first".to_owned()
            } else {
                format!(
                    "comes first and matches every invoice this rule would: its conditions ({}) are the same or broader",
                    conditions.join(", ")
                )
            };
            out.push((
                j,
                format!(
                    "rule \"{}\" can never decide: rule \"{}\" (routing.rules[{i}]) {how}",
                    later.name, earlier.name
                ),
            ));
        }
    }
    out
}

/// The keys of the conditions `rule` sets.
fn conditions(rule: &Rule) -> Vec<&'static str> {
    let (lo, hi) = amounts(rule);
    let (dlo, dhi) = days(rule);
    [
        ("biller", rule.biller.is_some()),
        ("source", rule.source.is_some()),
        ("currency", rule.currency.is_some()),
        ("country", rule.country.is_some()),
        ("locale", rule.locale.is_some()),
        ("min_amount", lo.is_some()),
        ("max_amount", hi.is_some()),
        ("days_to_due", dlo.is_some() || dhi.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Why `rule`'s own conditions can never all hold; None when they can (or
/// when it is not certain that they cannot).
fn never_holds(rule: &Rule) -> Option<String> {
    let lists = [
        ("biller", &rule.biller),
        ("source", &rule.source),
        ("currency", &rule.currency),
        ("country", &rule.country),
        ("locale", &rule.locale),
    ];
    for (key, list) in lists {
        if matches!(list, Some(values) if values.is_empty()) {
            return Some(format!("{key} is an empty list, which no invoice matches"));
        }
    }
    if let Some(countries) = &rule.country {
        if countries.iter().all(|c| !is_region(c)) {
            return Some(format!(
                "country {} is not a region a phone number can have (use ISO 3166 codes like MX)",
                countries.join(" or ")
            ));
        }
    }
    let (lo, hi) = amounts(rule);
    if let Some(hi) = hi {
        if hi <= 0.0 {
            return Some(format!("max_amount {hi} is not above 0, and every amount is"));
        }
    }
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo > hi {
            return Some(format!("min_amount {lo} is above max_amount {hi}"));
        }
    }
    if let (Some(lo), Some(hi)) = days(rule) {
        if lo > hi {
            return Some(format!("days_to_due min {lo} is above max {hi}"));
        }
    }
    None
}

/// Whether every invoice that `later` matches is matched by `earlier`:
/// `earlier` is the same or broader on every condition.
fn covers(earlier: &Rule, later: &Rule) -> bool {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    // Countries that no phone number has do not widen `later`.
    let later_countries = later
        .country
        .as_ref()
        .map(|cs| cs.iter().filter(|c| is_region(c)).cloned().collect::<Vec<_>>());
    let (e_lo, e_hi) = amounts(earlier);
    let (l_lo, l_hi) = amounts(later);
    let (e_dlo, e_dhi) = days(earlier);
    let (l_dlo, l_dhi) = days(later);
    subset(&earlier.biller, &later.biller, same)
        && subset(&earlier.source, &later.source, same)
        && subset(&earlier.currency, &later.currency, same)
        && subset(&earlier.country, &later_countries, same)
        && subset(&earlier.locale, &later.locale, locale_covers)
        && within(e_lo, l_lo, |e, l| l >= e)
        && within(e_hi, l_hi, |e, l| l <= e)
        && within(e_dlo, l_dlo, |e, l| l >= e)
        && within(e_dhi, l_dhi, |e, l| l <= e)
}

/// A list condition of the earlier rule holds for everything the later one
/// allows: it is not set, or each later value is covered by an earlier one.
fn subset(earlier: &Option<Vec<String>>, later: &Option<Vec<String>>, covers: impl Fn(&str, &str) -> bool) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|v| e.iter().any(|w| covers(w, v))),
    }
}

/// A bound of the earlier rule holds for everything the later one allows:
/// it is not set, or the later bound is set and at least as tight.
fn within<T: Copy>(earlier: Option<T>, later: Option<T>, tighter: impl Fn(T, T) -> bool) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => tighter(e, l),
    }
}

/// The amount bounds that can fail, as `route` compares them: amounts are
/// above 0, so a minimum of 0 or less always holds, and comparisons with NaN
/// or an infinite maximum never fail.
fn amounts(rule: &Rule) -> (Option<f64>, Option<f64>) {
    let lo = rule.min_amount.filter(|m| *m > 0.0);
    let hi = rule.max_amount.filter(|m| !m.is_nan() && *m != f64::INFINITY);
    (lo, hi)
}

fn days(rule: &Rule) -> (Option<i64>, Option<i64>) {
    rule.days_to_due.map(|d| (d.min, d.max)).unwrap_or((None, None))
}

/// Whether a phone number can have `code` as its region (compared as
/// `route` does, ignoring case).
fn is_region(code: &str) -> bool {
    phonenumber::country::Id::from_str(&code.to_ascii_uppercase()).is_ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn routing(rules: &str) -> RoutingConfig {
        let text = format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
             [billers.globex]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
             [channels.email]\ntransport = \"file\"\n{rules}"
        );
        match Config::from_toml(&text, Path::new("/etc/payrelay"), &|_| None) {
            Ok(c) => c.routing,
            Err(p) => panic!("{p:#?}"),
        }
    }

    /// `[[routing.rules]]` sections, each named after its position (`r0`,
    /// `r1`, ...) with the given conditions.
    fn rules(conditions: &[&str]) -> RoutingConfig {
        let text: String = conditions
            .iter()
            .enumerate()
            .map(|(i, c)| format!("[[routing.rules]]\nname = \"r{i}\"\nchannels = [\"email\"]\n{c}\n"))
            .collect();
        routing(&text)
    }

    fn indexes(found: &[(usize, String)]) -> Vec<usize> {
        found.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn a_rule_without_conditions_hides_every_later_rule() {
        let found = unreachable_rules(&rules(&["currency = \"MXN\"", "", "source = \"erp\"", ""]));
        assert_eq!(indexes(&found), [2, 3]);
        assert_eq!(
            found[0].1,
            "rule \"r2\" can never decide: rule \"r1\" (routing.rules[1]) has no conditions, \
             so it matches every invoice first"
        );
    }

    #[test]
    fn nothing_is_reported_for_rules_that_can_decide() {
        let cases = [
            vec!["currency = \"MXN\"", "currency = \"EUR\""],
            vec!["currency = \"MXN\"", ""],
            vec!["currency = \"MXN\"", "currency = [\"MXN\", \"EUR\"]"],
            vec!["min_amount = 100", "min_amount = 50"],
            vec!["max_amount = 100", "max_amount = 150"],
            vec!["min_amount = 100", "max_amount = 1000"],
            vec!["days_to_due = { max = -1 }", "days_to_due = { max = 0 }"],
            vec![
                "days_to_due = { min = 0, max = 7 }",
                "days_to_due = { min = -3, max = 3 }",
            ],
            vec!["locale = \"es-MX\"", "locale = \"es\""],
            vec!["source = \"erp\"", "currency = \"MXN\""],
            vec!["source = \"erp\"\ncurrency = \"MXN\"", "source = \"erp\""],
            // Two earlier rules together cover the third; not reported (conservative).
            vec!["max_amount = 100", "min_amount = 100", ""],
            // A minimum of 0 always holds but the rule's other condition does not.
            vec!["min_amount = 0\ncurrency = \"MXN\"", ""],
        ];
        for case in cases {
            let found = unreachable_rules(&rules(&case));
            assert!(found.is_empty(), "{case:?}: {found:#?}");
        }
    }

    #[test]
    fn an_earlier_rule_that_is_the_same_or_broader_on_every_condition_hides_the_later() {
        let cases = [
            vec!["currency = \"MXN\"", "currency = \"MXN\""],
            vec!["currency = [\"MXN\", \"EUR\"]", "currency = \"MXN\""],
            vec!["source = [\"erp\", \"crm\"]", "source = \"ERP\""],
            vec!["currency = \"MXN\"", "currency = \"MXN\"\nsource = \"erp\""],
            vec![
                "biller = \"acme\"",
                "biller = \"acme\"\nmin_amount = 5\ndays_to_due = { min = 0 }",
            ],
            vec!["min_amount = 100", "min_amount = 150"],
            vec!["min_amount = 100", "min_amount = 100\nmax_amount = 200"],
            vec!["max_amount = 100", "min_amount = 10\nmax_amount = 99.5"],
            vec!["days_to_due = { max = -1 }", "days_to_due = { min = -30, max = -10 }"],
            vec![
                "days_to_due = { min = 0, max = 7 }",
                "days_to_due = { min = 1, max = 7 }",
            ],
            vec!["locale = \"es\"", "locale = [\"es-MX\", \"ES_es\"]"],
            vec!["country = [\"MX\", \"CO\"]", "country = \"co\""],
            // Always-true bounds are no conditions at all.
            vec!["min_amount = 0", "currency = \"EUR\""],
            vec!["days_to_due = {}", "currency = \"EUR\""],
            // A country no phone number has does not widen the later rule.
            vec!["country = \"MX\"", "country = [\"MX\", \"MEX\"]"],
        ];
        for case in cases {
            let found = unreachable_rules(&rules(&case));
            assert_eq!(indexes(&found), [1], "{case:?}: {found:#?}");
            assert!(
                found[0].1.contains("rule \"r0\" (routing.rules[0])"),
                "{case:?}: {found:#?}"
            );
        }
        let found = unreachable_rules(&rules(&[
            "source = \"erp\"\nmax_amount = 100",
            "source = \"ERP\"\nmax_amount = 50",
        ]));
        assert_eq!(
            found[0].1,
            "rule \"r1\" can never decide: rule \"r0\" (routing.rules[0]) comes first and matches every \
             invoice this rule would: its conditions (source, max_amount) are the same or broader"
        );
    }

    #[test]
    fn a_rule_whose_own_conditions_can_never_hold() {
        let cases = [
            ("currency = []", "currency is an empty list, which no invoice matches"),
            ("source = []", "source is an empty list, which no invoice matches"),
            (
                "country = [\"MEX\", \"XX\"]",
                "country MEX or XX is not a region a phone number can have (use ISO 3166 codes like MX)",
            ),
            ("max_amount = 0", "max_amount 0 is not above 0, and every amount is"),
            ("max_amount = -5", "max_amount -5 is not above 0, and every amount is"),
        ];
        for (condition, why) in cases {
            let found = unreachable_rules(&rules(&[condition]));
            assert_eq!(
                found,
                [(0, format!("rule \"r0\" can never decide: {why}"))],
                "{condition}"
            );
        }
        // One region the rule can match is enough.
        assert!(unreachable_rules(&rules(&["country = [\"MEX\", \"mx\"]"])).is_empty());
    }

    #[test]
    fn bounds_the_config_already_refuses_are_reported_too_when_built_by_hand() {
        let mut routing = rules(&["", ""]);
        routing.rules[0].min_amount = Some(10.0);
        routing.rules[0].max_amount = Some(5.0);
        routing.rules[1].days_to_due = Some(crate::config::DaysToDue {
            min: Some(3),
            max: Some(1),
        });
        let found = unreachable_rules(&routing);
        assert_eq!(
            found,
            [
                (
                    0,
                    "rule \"r0\" can never decide: min_amount 10 is above max_amount 5".to_owned()
                ),
                (
                    1,
                    "rule \"r1\" can never decide: days_to_due min 3 is above max 1".to_owned()
                ),
            ],
            "an impossible rule hides nothing"
        );
    }

    #[test]
    fn the_index_is_the_position_in_the_config() {
        let found = unreachable_rules(&rules(&[
            "currency = \"EUR\"",
            "source = \"erp\"",
            "currency = \"EUR\"\nsource = \"crm\"",
            "currency = \"USD\"",
            "source = \"ERP\"\ncountry = \"MX\"",
        ]));
        assert_eq!(indexes(&found), [2, 4]);
        assert!(found[1].1.contains("rule \"r1\" (routing.rules[1])"), "{found:#?}");
    }
}
