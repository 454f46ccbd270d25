//! `payrelay route` in words: what the rules saw of the invoice, which rules
//! did not match and why, what decided, and the channels with every skip.

use std::fmt::Write as _;

use time::Date;

use super::{country, days_to_due, locale, Decision, Plan};
use crate::config::Config;
use crate::domain::debtor::Profile;
use crate::domain::ChannelName;
use crate::invoice::Invoice;

/// What the rules see of an invoice: the values their conditions compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub biller: String,
    pub source: Option<String>,
    /// `1234.50 MXN`, as the invoice gave it.
    pub amount: String,
    /// The country and the contact field it was read from.
    pub country: Option<(String, &'static str)>,
    /// The locale and where it came from.
    pub locale: (String, &'static str),
    pub due_date: Date,
    /// Negative when overdue.
    pub days_to_due: i64,
}

/// The values `route` compares with rule conditions, as of `today`.
pub fn facts(invoice: &Invoice, config: &Config, today: Date) -> Facts {
    let (locale, locale_from) = locale(invoice, config);
    Facts {
        biller: invoice.key.biller_id.clone(),
        source: invoice.source.clone(),
        amount: format!("{} {}", invoice.amount.text, invoice.amount.currency),
        country: country(invoice).map(|(c, from)| (c.to_owned(), from)),
        locale: (locale.to_owned(), locale_from),
        due_date: invoice.due_date,
        days_to_due: days_to_due(invoice, today),
    }
}

/// Routes `invoice` as of `today` and explains the plan, one fact per line.
/// The text is stable (the golden tests compare it) and holds no contact
/// addresses or names: only what routing used.
pub fn explain(invoice: &Invoice, config: &Config, today: Date) -> String {
    explain_for(invoice, config, today, &Profile::default())
}

/// [`explain`] for a customer the store knows: their stored channel choice
/// and the channels they stopped or whose address asked to stop
/// (`suppressed` in the skipped list).
pub fn explain_for(invoice: &Invoice, config: &Config, today: Date, profile: &Profile) -> String {
    let plan = super::route_for(invoice, config, today, None, profile);
    let facts = facts(invoice, config, today);
    let mut out = String::new();
    let _ = writeln!(out, "invoice {} as the rules see it on {today}:", invoice.key);
    let source = facts.source.as_deref().unwrap_or("not given");
    let _ = writeln!(
        out,
        "  biller {}, source {source}, amount {}",
        facts.biller, facts.amount
    );
    let country = match &facts.country {
        Some((c, from)) => format!("{c} (from {from})"),
        None => "not known (no phone or whatsapp number with a country)".to_owned(),
    };
    let _ = writeln!(
        out,
        "  country {country}, locale {} ({})",
        facts.locale.0, facts.locale.1
    );
    let days = match facts.days_to_due {
        0 => "due today".to_owned(),
        -1 => "1 day overdue".to_owned(),
        1 => "1 day to due".to_owned(),
        d if d < 0 => format!("{} days overdue", -d),
        d => format!("{d} days to due"),
    };
    let _ = writeln!(
        out,
        "  due {}: {days} (days_to_due {})",
        facts.due_date, facts.days_to_due
    );
    let customer = &invoice.customer;
    if !customer.preferred_channels.is_empty() {
        let note = if invoice.channels.is_some() {
            "not applied: the invoice lists its own order"
        } else if config.routing.respect_preferences {
            "applied"
        } else {
            "not applied: respect_preferences = false"
        };
        let _ = writeln!(out, "  prefers {} ({note})", names(&customer.preferred_channels));
    }
    if !customer.opted_out.is_empty() {
        let _ = writeln!(out, "  opted out of {}", names(&customer.opted_out));
    }
    if let Some(chosen) = &profile.preferred {
        let _ = writeln!(out, "  chose {} on a pay page", names(chosen));
    }
    write_plan(&mut out, &plan);
    out
}

fn write_plan(out: &mut String, plan: &Plan) {
    for (rule, why) in &plan.not_matched {
        let _ = writeln!(out, "rule \"{rule}\": no match ({why})");
    }
    match &plan.decision {
        Decision::InvoiceChannels => {
            let _ = writeln!(
                out,
                "decided by: invoice channels (the invoice lists them; rules are not tried)"
            );
        }
        other => {
            let _ = writeln!(out, "decided by: {other}");
        }
    }
    let _ = writeln!(out, "strategy: {}", plan.strategy);
    for (i, c) in plan.channels.iter().enumerate() {
        let _ = writeln!(out, "  {}. {c}", i + 1);
    }
    for (c, why) in &plan.skipped {
        let _ = writeln!(out, "  skipped {c}: {why}");
    }
    if plan.all_suppressed() {
        let _ = writeln!(
            out,
            "every channel suppressed: the invoice would be acked and reported as invoice.rejected"
        );
    } else if plan.channels.is_empty() {
        let _ = writeln!(
            out,
            "no channel can reach this customer: the invoice would be dead-lettered"
        );
    }
}

/// `whatsapp, email`.
pub(super) fn names(channels: &[ChannelName]) -> String {
    channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use time::macros::date;

    use super::*;
    use crate::invoice::{parse, Message};

    fn config(routing: &str) -> Config {
        let text = format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n\
             [billers.globex]\ncheckout_url = \"https://pay.example/{{token}}\"\ndefault_locale = \"pt-BR\"\n\
             [channels.email]\ntransport = \"file\"\n[channels.whatsapp]\nprovider = \"file\"\n\
             [routing]\n{routing}"
        );
        Config::from_toml(&text, Path::new("/etc/payrelay"), &|_| None).unwrap()
    }

    fn invoice(json: &str) -> Invoice {
        match parse(json.as_bytes(), |b| b == "acme" || b == "globex") {
            Ok(Message::PaymentRequest(i)) => *i,
            other => panic!("{other:?}"),
        }
    }

    const TODAY: Date = date!(2026 - 11 - 20);

    #[test]
    fn facts_are_what_the_rules_compare() {
        let inv = invoice(
            r#"{"invoice_id": "I", "biller_id": "acme", "amount": "10.00", "currency": "EUR",
                "due_date": "2026-11-15", "customer": {"name": "N", "whatsapp": "+34612345678"}}"#,
        );
        let f = facts(&inv, &config(""), TODAY);
        assert_eq!(f.country, Some(("ES".to_owned(), "customer.whatsapp")));
        assert_eq!(
            f.locale,
            ("en".to_owned(), "neither the customer nor the biller sets one")
        );
        assert_eq!(f.days_to_due, -5);
        assert_eq!(f.amount, "10.00 EUR");
        assert_eq!(f.source, None);

        let inv = invoice(
            r#"{"invoice_id": "I", "biller_id": "globex", "amount": "10.00", "currency": "EUR",
                "due_date": "2026-11-20", "customer": {"name": "N", "email": "n@example.com"}}"#,
        );
        let f = facts(&inv, &config(""), TODAY);
        assert_eq!(f.country, None);
        assert_eq!(f.locale, ("pt-BR".to_owned(), "the biller's default_locale"));
        assert_eq!(f.days_to_due, 0);
    }

    #[test]
    fn the_explanation_names_what_decided_and_every_skip() {
        let config = config(
            "respect_preferences = true\n[[routing.rules]]\nname = \"euros\"\ncurrency = \"EUR\"\n\
             channels = [\"whatsapp\", \"email\"]\n[[routing.rules]]\nname = \"default\"\nchannels = [\"email\"]",
        );
        let inv = invoice(
            r#"{"invoice_id": "I", "biller_id": "acme", "amount": "10", "currency": "MXN", "source": "erp",
                "due_date": "2026-11-19", "customer": {"name": "N", "email": "n@example.com",
                "preferred_channels": ["whatsapp"], "opted_out": ["sms"], "locale": "es-MX"}}"#,
        );
        let text = explain(&inv, &config, TODAY);
        let expected = "\
invoice acme/I#1 as the rules see it on 2026-11-20:
  biller acme, source erp, amount 10 MXN
  country not known (no phone or whatsapp number with a country), locale es-MX (customer.locale)
  due 2026-11-19: 1 day overdue (days_to_due -1)
  prefers whatsapp (applied)
  opted out of sms
rule \"euros\": no match (currency is MXN, not EUR)
decided by: rule \"default\"
strategy: fallback
  1. email
";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_channel_left_says_the_invoice_would_be_dead_lettered() {
        let inv = invoice(
            r#"{"invoice_id": "I", "biller_id": "acme", "amount": "10", "currency": "MXN",
                "due_date": "2026-11-30", "channels": ["whatsapp"],
                "customer": {"name": "N", "email": "n@example.com"}}"#,
        );
        let text = explain(&inv, &config(""), TODAY);
        assert!(
            text.contains("decided by: invoice channels (the invoice lists them"),
            "{text}"
        );
        assert!(
            text.contains("  skipped whatsapp: the invoice has no customer.whatsapp\n"),
            "{text}"
        );
        assert!(text.ends_with("the invoice would be dead-lettered\n"), "{text}");
        assert!(text.contains("due 2026-11-30: 10 days to due"), "{text}");
    }
}
