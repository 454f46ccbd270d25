//! The router: which channels an invoice goes to, in which order, and why.
//!
//! Pure logic over the config and the invoice, so it is tested by tables and
//! shared by the service and `payrelay route`. Order of decisions (contract §3):
//! the invoice's own `channels`, else the first rule whose conditions all hold,
//! else `[routing] default`; then customer preferences reorder the list; then
//! opted-out channels, unconfigured channels and channels without a contact
//! are skipped, each with its reason.

use time::Date;

use crate::channels::ChannelName;
use crate::config::{Config, Rule, Strategy};
use crate::invoice::Invoice;

/// The routing decision for one invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What decided the list: a rule's name, `invoice channels` or `default`.
    pub decided_by: String,
    pub strategy: Strategy,
    /// Channels to try, in order.
    pub channels: Vec<ChannelName>,
    /// Channels left out, with the reason.
    pub skipped: Vec<(ChannelName, String)>,
    /// Rules tried before the deciding one, with the condition that failed.
    pub not_matched: Vec<(String, String)>,
}

/// Routes `invoice` as of `today` (for `days_to_due`).
pub fn route(invoice: &Invoice, config: &Config, today: Date) -> Plan {
    let routing = &config.routing;
    let mut not_matched = Vec::new();
    let (decided_by, list, strategy) = if let Some(explicit) = &invoice.channels {
        (
            "invoice channels".to_owned(),
            explicit.clone(),
            routing.default_strategy,
        )
    } else {
        let mut decided = None;
        for rule in &routing.rules {
            match first_mismatch(rule, invoice, config, today) {
                None => {
                    decided = Some((rule.name.clone(), rule.channels.clone(), rule.strategy));
                    break;
                }
                Some(why) => not_matched.push((rule.name.clone(), why)),
            }
        }
        decided.unwrap_or_else(|| ("default".to_owned(), routing.default.clone(), routing.default_strategy))
    };

    // An explicit list from the biller is an order, not a suggestion.
    let ordered = if routing.respect_preferences && invoice.channels.is_none() {
        prefer(&list, &invoice.customer.preferred_channels)
    } else {
        list
    };

    let mut channels = Vec::new();
    let mut skipped = Vec::new();
    for channel in ordered {
        if invoice.customer.opted_out.contains(&channel) {
            skipped.push((channel, "the customer opted out of this channel".to_owned()));
        } else if !config.channels.is_configured(channel) {
            skipped.push((channel, format!("channel {channel} is not configured")));
        } else if channel.address(&invoice.customer.contacts).is_none() {
            skipped.push((channel, format!("the invoice has no {}", channel.contact_field())));
        } else if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Plan {
        decided_by,
        strategy,
        channels,
        skipped,
        not_matched,
    }
}

/// Preferred channels that are in the list come first, in the customer's
/// order; the rest keep the rule's order.
fn prefer(list: &[ChannelName], preferred: &[ChannelName]) -> Vec<ChannelName> {
    let mut out: Vec<ChannelName> = preferred.iter().copied().filter(|c| list.contains(c)).collect();
    out.extend(list.iter().copied().filter(|c| !preferred.contains(c)));
    out
}

/// The first condition of `rule` that `invoice` fails, in words; None if all hold.
fn first_mismatch(rule: &Rule, invoice: &Invoice, config: &Config, today: Date) -> Option<String> {
    let key = &invoice.key;
    let one_of = |what: &str, allowed: &Option<Vec<String>>, actual: Option<&str>| -> Option<String> {
        let allowed = allowed.as_ref()?;
        match actual {
            Some(a) if allowed.iter().any(|v| v.eq_ignore_ascii_case(a)) => None,
            Some(a) => Some(format!("{what} is {a}, not {}", allowed.join(" or "))),
            None => Some(format!("{what} is not known, the rule wants {}", allowed.join(" or "))),
        }
    };
    if let Some(why) = one_of("biller", &rule.biller, Some(&key.biller_id)) {
        return Some(why);
    }
    if let Some(why) = one_of("source", &rule.source, invoice.source.as_deref()) {
        return Some(why);
    }
    if let Some(why) = one_of("currency", &rule.currency, Some(&invoice.amount.currency)) {
        return Some(why);
    }
    let contacts = &invoice.customer.contacts;
    let country = contacts
        .phone
        .as_ref()
        .or(contacts.whatsapp.as_ref())
        .and_then(|p| p.country());
    if let Some(why) = one_of("country", &rule.country, country) {
        return Some(why);
    }
    if let Some(locales) = &rule.locale {
        let locale = invoice
            .customer
            .locale
            .as_deref()
            .or_else(|| {
                config
                    .billers
                    .get(&key.biller_id)
                    .and_then(|b| b.default_locale.as_deref())
            })
            .unwrap_or("en");
        // A rule for `es` covers `es-MX`; a rule for `es-MX` only `es-MX`.
        let normal = locale.replace('_', "-").to_ascii_lowercase();
        let holds = locales.iter().any(|want| {
            let want = want.replace('_', "-").to_ascii_lowercase();
            normal == want || normal.starts_with(&format!("{want}-"))
        });
        if !holds {
            return Some(format!("locale is {locale}, not {}", locales.join(" or ")));
        }
    }
    let major = invoice.amount.minor as f64 / 10f64.powi(invoice.amount.exponent() as i32);
    if let Some(min) = rule.min_amount {
        if major < min {
            return Some(format!("amount {} is below min_amount {min}", invoice.amount.text));
        }
    }
    if let Some(max) = rule.max_amount {
        if major > max {
            return Some(format!("amount {} is above max_amount {max}", invoice.amount.text));
        }
    }
    if let Some(range) = rule.days_to_due {
        let days = (invoice.due_date - today).whole_days();
        if range.min.is_some_and(|min| days < min) || range.max.is_some_and(|max| days > max) {
            let bound = |b: Option<i64>| b.map(|v| v.to_string()).unwrap_or_else(|| "any".into());
            return Some(format!(
                "days to due is {days}, outside {}..{}",
                bound(range.min),
                bound(range.max)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests;
