//! The router: which channels an invoice goes to, in which order, and why.
//!
//! Pure logic over the config and the invoice, so it is tested by tables and
//! shared by the service and `payrelay route`. Order of decisions (docs/routing.md):
//! the invoice's own `channels`, else the first rule whose conditions all hold,
//! else `[routing] default`; then customer preferences reorder the list; then
//! opted-out channels, unconfigured channels and channels without a contact
//! are skipped, each with its reason.
//!
//! Around [`route`]: [`explain`] words one decision for `payrelay route`,
//! [`replay`] compares the routing of many invoices under two configs, and
//! [`unreachable_rules`] finds rules that can never decide.

mod explain;
pub mod replay;
mod unreachable;

pub use explain::{explain, explain_for, facts, Facts};
pub use replay::{replay, replay_stored, Replay};
pub use unreachable::unreachable_rules;

use std::fmt;

use time::Date;

use crate::config::{Config, Rule, Strategy};
use crate::domain::debtor::Profile;
use crate::domain::ChannelName;
use crate::invoice::Invoice;

/// What decided an invoice's channel list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    /// The invoice's own `channels`: rules were not tried.
    InvoiceChannels,
    /// The rule at this index of `[[routing.rules]]`, with its name.
    Rule { index: usize, name: String },
    /// `[routing] default`: no rule matched.
    Default,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::InvoiceChannels => f.write_str("invoice channels"),
            Decision::Rule { name, .. } => write!(f, "rule \"{name}\""),
            Decision::Default => f.write_str("default"),
        }
    }
}

/// The routing decision for one invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What decided the list: a rule's name, `invoice channels` or `default`.
    pub decided_by: String,
    /// The same, typed: a rule named "default" is still a rule here.
    pub decision: Decision,
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
    route_step(invoice, config, today, None)
}

/// Routes a journey step: the same decision as [`route`] (it names the
/// rule), with the step's own channels and strategy when it has them, and
/// the same preferences, opt-outs and contacts applied to them.
pub fn route_step(invoice: &Invoice, config: &Config, today: Date, step: Option<(&[ChannelName], Strategy)>) -> Plan {
    route_for(invoice, config, today, step, &Profile::default())
}

/// Why a channel is left out when the customer's address on it asked to stop.
pub const SUPPRESSED: &str = "suppressed: this address asked to receive no more messages";
/// Why a channel is left out when the customer stopped it on a pay page.
pub const STOPPED: &str = "suppressed: the customer stopped reminders on this channel";

/// [`route_step`] for a customer the store knows (docs/debtors.md): the
/// channels they chose on a pay page replace the invoice's
/// `preferred_channels` (with `[routing] respect_preferences`, and unless
/// the invoice names its `channels`), and the channels they stopped or
/// whose address asked to stop are skipped whatever the invoice says.
pub fn route_for(
    invoice: &Invoice,
    config: &Config,
    today: Date,
    step: Option<(&[ChannelName], Strategy)>,
    profile: &Profile,
) -> Plan {
    let routing = &config.routing;
    let mut not_matched = Vec::new();
    let (decision, list, strategy) = if let Some(explicit) = &invoice.channels {
        (Decision::InvoiceChannels, explicit.clone(), routing.default_strategy)
    } else {
        let mut decided = None;
        for (index, rule) in routing.rules.iter().enumerate() {
            match first_mismatch(rule, invoice, config, today) {
                None => {
                    let name = rule.name.clone();
                    decided = Some((Decision::Rule { index, name }, rule.channels.clone(), rule.strategy));
                    break;
                }
                Some(why) => not_matched.push((rule.name.clone(), why)),
            }
        }
        decided.unwrap_or_else(|| (Decision::Default, routing.default.clone(), routing.default_strategy))
    };
    let (list, strategy) = match step {
        Some((channels, strategy)) => (channels.to_vec(), strategy),
        None => (list, strategy),
    };
    let decided_by = match &decision {
        Decision::Rule { name, .. } => name.clone(),
        other => other.to_string(),
    };

    // An explicit list from the biller is an order, not a suggestion.
    let ordered = if routing.respect_preferences && invoice.channels.is_none() {
        let preferred = profile
            .preferred
            .as_deref()
            .unwrap_or(&invoice.customer.preferred_channels);
        prefer(&list, preferred)
    } else {
        list
    };

    let mut channels = Vec::new();
    let mut skipped = Vec::new();
    for channel in ordered {
        if invoice.customer.opted_out.contains(&channel) {
            skipped.push((channel, "the customer opted out of this channel".to_owned()));
        } else if profile.stopped.contains(&channel) {
            skipped.push((channel, STOPPED.to_owned()));
        } else if profile.suppressed.contains(&channel) {
            skipped.push((channel, SUPPRESSED.to_owned()));
        } else if !config.channels.is_configured(channel) {
            skipped.push((channel, format!("channel {channel} is not configured")));
        } else if invoice.customer.contacts.address(channel).is_none() {
            skipped.push((channel, format!("the invoice has no {}", channel.contact_field())));
        } else if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Plan {
        decided_by,
        decision,
        strategy,
        channels,
        skipped,
        not_matched,
    }
}

impl Plan {
    /// True when channels were left only because the customer stopped them
    /// (and others for no contact or configuration): with none left, the
    /// invoice is reported as rejected rather than dead-lettered.
    pub fn all_suppressed(&self) -> bool {
        self.channels.is_empty() && self.skipped.iter().any(|(_, why)| why == SUPPRESSED || why == STOPPED)
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
    if let Some(why) = one_of("country", &rule.country, country(invoice).map(|(c, _)| c)) {
        return Some(why);
    }
    if let Some(locales) = &rule.locale {
        let (locale, _) = locale(invoice, config);
        let holds = locales.iter().any(|want| locale_covers(want, locale));
        if !holds {
            return Some(format!("locale is {locale}, not {}", locales.join(" or ")));
        }
    }
    let major = major_amount(invoice);
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
        let days = days_to_due(invoice, today);
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

/// The invoice's country for rules, from the phone number, else the
/// WhatsApp number, with the contact field it came from.
fn country(invoice: &Invoice) -> Option<(&str, &'static str)> {
    let contacts = &invoice.customer.contacts;
    match (&contacts.phone, &contacts.whatsapp) {
        (Some(phone), _) => phone.country().map(|c| (c, "customer.phone")),
        (None, Some(whatsapp)) => whatsapp.country().map(|c| (c, "customer.whatsapp")),
        (None, None) => None,
    }
}

/// The invoice's locale for rules (the customer's, else the
/// biller's default, else `en`), with where it came from.
fn locale<'a>(invoice: &'a Invoice, config: &'a Config) -> (&'a str, &'static str) {
    if let Some(l) = invoice.customer.locale.as_deref() {
        return (l, "customer.locale");
    }
    match config
        .billers
        .get(&invoice.key.biller_id)
        .and_then(|b| b.default_locale.as_deref())
    {
        Some(l) => (l, "the biller's default_locale"),
        None => ("en", "neither the customer nor the biller sets one"),
    }
}

/// Normalises a locale for comparison: `ES_mx` is `es-mx`.
fn normal_locale(locale: &str) -> String {
    locale.replace('_', "-").to_ascii_lowercase()
}

/// Whether a rule's `want` covers `locale`: a rule for `es` covers `es-MX`;
/// a rule for `es-MX` only `es-MX` (and its own subtags).
fn locale_covers(want: &str, locale: &str) -> bool {
    let (want, locale) = (normal_locale(want), normal_locale(locale));
    locale == want || locale.starts_with(&format!("{want}-"))
}

/// The amount in major units, as `min_amount` and `max_amount` read it.
fn major_amount(invoice: &Invoice) -> f64 {
    invoice.amount.minor as f64 / 10f64.powi(invoice.amount.exponent() as i32)
}

/// Days from `today` to the due date; negative when overdue.
fn days_to_due(invoice: &Invoice, today: Date) -> i64 {
    (invoice.due_date - today).whole_days()
}

#[cfg(test)]
mod tests;
