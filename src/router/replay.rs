//! Replaying past invoices under the current config and a new one, so that a
//! rules change can be dry-run before it is deployed (`payrelay route
//! --replay FILE --against NEW`).
//!
//! The input is JSON lines of invoice messages. Events
//! do not carry the invoice, so event lines are skipped with a
//! reason, like `invoice_paid` / `invoice_cancelled` messages, lines that are
//! not JSON, and invoices that fail validation under both configs. An invoice
//! valid under one config only (its biller was added or removed) is compared:
//! it is rejected under the other. Routing that leaves no channel counts as
//! rejected too, as the service dead-letters such an invoice.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde_json::Value;
use time::Date;

use super::explain::names;
use super::{route, unreachable_rules, Decision};
use crate::config::{Config, Strategy};
use crate::domain::ChannelName;
use crate::domain::InvoiceKey;
use crate::invoice::{self, Invoice, Message, Rejected};

/// How one config treats one invoice.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Routed; `channels` is empty when no channel can reach the customer
    /// (the service dead-letters the invoice).
    Routed {
        decision: Decision,
        strategy: Strategy,
        channels: Vec<ChannelName>,
    },
    /// Refused by validation, with the reasons.
    Invalid(String),
}

impl Outcome {
    /// Whether the service would refuse the invoice (invalid or no channel).
    pub fn is_rejected(&self) -> bool {
        match self {
            Outcome::Routed { channels, .. } => channels.is_empty(),
            Outcome::Invalid(_) => true,
        }
    }

    /// Same behaviour: same deciding rule (by name: moving a rule is not a
    /// change), strategy and channels; or invalid under both.
    pub fn same_as(&self, other: &Outcome) -> bool {
        self.what_decided() == other.what_decided()
            && match (self, other) {
                (
                    Outcome::Routed {
                        strategy: s1,
                        channels: c1,
                        ..
                    },
                    Outcome::Routed {
                        strategy: s2,
                        channels: c2,
                        ..
                    },
                ) => s1 == s2 && c1 == c2,
                _ => true,
            }
    }

    /// What decided, without the rule's position.
    pub fn what_decided(&self) -> Decided {
        match self {
            Outcome::Routed { decision, .. } => match decision {
                Decision::InvoiceChannels => Decided::InvoiceChannels,
                Decision::Rule { name, .. } => Decided::Rule(name.clone()),
                Decision::Default => Decided::Default,
            },
            Outcome::Invalid(_) => Decided::Invalid,
        }
    }

    fn channels(&self) -> &[ChannelName] {
        match self {
            Outcome::Routed { channels, .. } => channels,
            Outcome::Invalid(_) => &[],
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Routed {
                decision,
                strategy,
                channels,
            } if channels.is_empty() => write!(f, "{decision} ({strategy}: no channel left)"),
            Outcome::Routed {
                decision,
                strategy,
                channels,
            } => write!(f, "{decision} ({strategy}: {})", names(channels)),
            Outcome::Invalid(why) => write!(f, "rejected as invalid ({why})"),
        }
    }
}

/// What decided an outcome, for counting: a rule by name, not by position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decided {
    InvoiceChannels,
    Rule(String),
    Default,
    Invalid,
}

impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decided::InvoiceChannels => f.write_str("invoice channels"),
            Decided::Rule(name) => write!(f, "rule \"{name}\""),
            Decided::Default => f.write_str("default"),
            Decided::Invalid => f.write_str("rejected as invalid"),
        }
    }
}

/// One invoice routed under both configs.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// 1-based line in the input.
    pub line: usize,
    pub key: InvoiceKey,
    pub current: Outcome,
    pub new: Outcome,
}

impl Compared {
    pub fn changed(&self) -> bool {
        !self.current.same_as(&self.new)
    }

    /// The change in one phrase, for grouping: the first channel, else the
    /// list, else the strategy; or the rejection reason.
    pub fn detail(&self) -> String {
        let first = |o: &Outcome| o.channels().first().map(|c| c.as_str()).unwrap_or("none").to_owned();
        match (&self.current, &self.new) {
            (_, Outcome::Invalid(why)) => format!("rejected: {why}"),
            (
                Outcome::Routed {
                    strategy: s1,
                    channels: c1,
                    ..
                },
                Outcome::Routed {
                    strategy: s2,
                    channels: c2,
                    ..
                },
            ) => {
                if c1.first() != c2.first() {
                    format!("first channel {} -> {}", first(&self.current), first(&self.new))
                } else if c1 != c2 {
                    format!("channels {} -> {}", list(c1), list(c2))
                } else if s1 != s2 {
                    format!("strategy {s1} -> {s2}")
                } else {
                    "same channels and strategy".to_owned()
                }
            }
            (Outcome::Invalid(_), Outcome::Routed { .. }) => {
                format!("first channel none -> {}", first(&self.new))
            }
        }
    }
}

fn list(channels: &[ChannelName]) -> String {
    if channels.is_empty() {
        "none".to_owned()
    } else {
        names(channels)
    }
}

/// A line that was not compared, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line in the input.
    pub line: usize,
    pub reason: String,
}

/// Rejections under one config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    pub invalid: usize,
    pub no_channel: usize,
}

impl Rejections {
    pub fn total(&self) -> usize {
        self.invalid + self.no_channel
    }
}

/// The counts at the top of the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Invoices compared (valid under at least one config).
    pub compared: usize,
    pub unchanged: usize,
    pub changed: usize,
    pub rejected_current: Rejections,
    pub rejected_new: Rejections,
    pub skipped: usize,
}

/// Changed invoices that went from one decision to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeGroup {
    pub from: Decided,
    pub to: Decided,
    pub count: usize,
    /// [`Compared::detail`] phrases with their counts, most frequent first.
    pub details: Vec<(String, usize)>,
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Every invoice compared, in input order.
    pub compared: Vec<Compared>,
    /// Every line skipped, in input order (blank lines are not counted).
    pub skipped: Vec<Skipped>,
    /// [`unreachable_rules`] of the new config.
    pub new_unreachable: Vec<(usize, String)>,
}

/// Routes every invoice in `input` (JSON lines, or one JSON object) under
/// `current` and `new` as of `today`, and compares.
pub fn replay(input: &str, current: &Config, new: &Config, today: Date) -> Replay {
    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    for (line, text) in messages(input) {
        match compare(text, current, new, today) {
            Ok((key, before, after)) => compared.push(Compared {
                line,
                key,
                current: before,
                new: after,
            }),
            Err(reason) => skipped.push(Skipped { line, reason }),
        }
    }
    Replay {
        compared,
        skipped,
        new_unreachable: unreachable_rules(&new.routing),
    }
}

/// The messages with their 1-based line numbers: each non-blank line, or
/// the whole input when it is one JSON object spread over several lines.
fn messages(input: &str) -> Vec<(usize, &str)> {
    // A byte order mark from an editor is not part of the first message.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let trimmed = input.trim();
    if trimmed.starts_with('{') && trimmed.contains('\n') && serde_json::from_str::<Value>(trimmed).is_ok() {
        let first = input.lines().position(|l| !l.trim().is_empty()).unwrap_or(0);
        return vec![(first + 1, trimmed)];
    }
    input
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// Routes one message under both configs, or says why it is skipped.
fn compare(text: &str, current: &Config, new: &Config, today: Date) -> Result<(InvoiceKey, Outcome, Outcome), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".to_owned());
    };
    if let Some(event) = object.get("event").and_then(Value::as_str) {
        if !object.contains_key("amount") {
            return Err(format!(
                "an event ({event}), not an invoice: events do not carry the invoice"
            ));
        }
    }
    let before = invoice::parse(text.as_bytes(), |b| current.billers.contains_key(b));
    let after = invoice::parse(text.as_bytes(), |b| new.billers.contains_key(b));
    for parsed in [&before, &after] {
        match parsed {
            Ok(Message::Paid { .. }) => return Err("an invoice_paid message, not a payment request".to_owned()),
            Ok(Message::Cancelled { .. }) => {
                return Err("an invoice_cancelled message, not a payment request".to_owned())
            }
            _ => {}
        }
    }
    let outcome = |parsed: Result<Message, Rejected>, config: &Config| match parsed {
        Ok(Message::PaymentRequest(invoice)) => (Some(invoice.key.clone()), routed(&invoice, config, today)),
        Ok(_) => (None, Outcome::Invalid("not a payment request".to_owned())),
        Err(rejected) => (None, Outcome::Invalid(rejected.to_string())),
    };
    let (key_before, before) = outcome(before, current);
    let (key_after, after) = outcome(after, new);
    match (key_before.or(key_after), &before) {
        (Some(key), _) => Ok((key, before, after)),
        (None, Outcome::Invalid(why)) => Err(format!("invalid under both configs: {why}")),
        (None, Outcome::Routed { .. }) => Err("invalid under both configs".to_owned()),
    }
}

/// How `config` routes a valid invoice.
fn routed(invoice: &Invoice, config: &Config, today: Date) -> Outcome {
    let plan = route(invoice, config, today);
    Outcome::Routed {
        decision: plan.decision,
        strategy: plan.strategy,
        channels: plan.channels,
    }
}

/// Routes invoices the store kept (validated when they arrived) under
/// `current` and `new` as of `today`, and compares: the console's dry run
/// over a period. Each one's "line" is its 1-based place in `invoices`.
/// An invoice whose biller neither config knows any more is skipped, as
/// the CLI skips a line invalid under both.
pub fn replay_stored(invoices: &[Invoice], current: &Config, new: &Config, today: Date) -> Replay {
    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    let outcome = |invoice: &Invoice, config: &Config| {
        let biller = &invoice.key.biller_id;
        if config.billers.contains_key(biller) {
            routed(invoice, config, today)
        } else {
            Outcome::Invalid(format!(
                "biller_id \"{biller}\" is not a biller in payrelay's configuration"
            ))
        }
    };
    for (i, invoice) in invoices.iter().enumerate() {
        let (before, after) = (outcome(invoice, current), outcome(invoice, new));
        match (&before, &after) {
            (Outcome::Invalid(why), Outcome::Invalid(_)) => skipped.push(Skipped {
                line: i + 1,
                reason: format!("{}: invalid under both configs: {why}", invoice.key),
            }),
            _ => compared.push(Compared {
                line: i + 1,
                key: invoice.key.clone(),
                current: before,
                new: after,
            }),
        }
    }
    Replay {
        compared,
        skipped,
        new_unreachable: unreachable_rules(&new.routing),
    }
}

impl Replay {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            compared: self.compared.len(),
            skipped: self.skipped.len(),
            ..Totals::default()
        };
        for c in &self.compared {
            if c.changed() {
                t.changed += 1;
            } else {
                t.unchanged += 1;
            }
            for (outcome, count) in [(&c.current, &mut t.rejected_current), (&c.new, &mut t.rejected_new)] {
                match outcome {
                    Outcome::Invalid(_) => count.invalid += 1,
                    Outcome::Routed { channels, .. } if channels.is_empty() => count.no_channel += 1,
                    Outcome::Routed { .. } => {}
                }
            }
        }
        t
    }

    /// How many invoices each decision took, under the current and the new
    /// config: `(decision, current, new)`, invoice channels first, then the
    /// rules by name, the default and the invalid.
    pub fn decisions(&self) -> Vec<(Decided, usize, usize)> {
        let mut counts: BTreeMap<Decided, (usize, usize)> = BTreeMap::new();
        for c in &self.compared {
            counts.entry(c.current.what_decided()).or_default().0 += 1;
            counts.entry(c.new.what_decided()).or_default().1 += 1;
        }
        counts.into_iter().map(|(d, (a, b))| (d, a, b)).collect()
    }

    /// The changed invoices grouped by (current decision, new decision),
    /// largest group first, each with its [`Compared::detail`] phrases.
    pub fn changes(&self) -> Vec<ChangeGroup> {
        let mut groups: BTreeMap<(Decided, Decided), BTreeMap<String, usize>> = BTreeMap::new();
        for c in self.compared.iter().filter(|c| c.changed()) {
            let details = groups
                .entry((c.current.what_decided(), c.new.what_decided()))
                .or_default();
            *details.entry(c.detail()).or_default() += 1;
        }
        let mut out: Vec<ChangeGroup> = groups
            .into_iter()
            .map(|((from, to), details)| {
                let mut details: Vec<(String, usize)> = details.into_iter().collect();
                details.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                ChangeGroup {
                    from,
                    to,
                    count: details.iter().map(|(_, n)| n).sum(),
                    details,
                }
            })
            .collect();
        // Stable: the sort keeps the (from, to) order among equal counts.
        out.sort_by_key(|g| std::cmp::Reverse(g.count));
        out
    }

    /// The report `payrelay route --replay` prints: totals, decisions,
    /// changes, then at most `limit` changed invoices and `limit` skipped
    /// lines. Stable for the same input (golden tests compare it).
    pub fn report(&self, limit: usize) -> String {
        let mut out = String::new();
        let t = self.totals();
        let rejected = |r: Rejections| {
            format!(
                "{} (invalid: {}, no channel left: {})",
                r.total(),
                r.invalid,
                r.no_channel
            )
        };
        let _ = writeln!(out, "invoices compared: {}", t.compared);
        let _ = writeln!(out, "  unchanged: {}", t.unchanged);
        let _ = writeln!(out, "  changed: {}", t.changed);
        let _ = writeln!(
            out,
            "  rejected under the current config: {}",
            rejected(t.rejected_current)
        );
        let _ = writeln!(out, "  rejected under the new config: {}", rejected(t.rejected_new));
        let _ = writeln!(
            out,
            "lines skipped: {} (not payment requests, or invalid under both configs)",
            t.skipped
        );

        let decisions = self.decisions();
        if !decisions.is_empty() {
            let _ = writeln!(out, "\ndecided by (current -> new):");
            for (decided, before, after) in decisions {
                let _ = writeln!(out, "  {decided}: {before} -> {after}");
            }
        }

        let changes = self.changes();
        if changes.is_empty() {
            let _ = writeln!(out, "\nno invoice would be routed differently");
        } else {
            let _ = writeln!(out, "\nchanges (current -> new):");
            for group in &changes {
                let _ = if group.from == group.to {
                    writeln!(out, "  {} (same decision): {}", group.from, invoices(group.count))
                } else {
                    writeln!(out, "  {} -> {}: {}", group.from, group.to, invoices(group.count))
                };
                for (detail, n) in &group.details {
                    let _ = writeln!(out, "    {detail}: {n}");
                }
            }
            let changed: Vec<&Compared> = self.compared.iter().filter(|c| c.changed()).collect();
            let _ = writeln!(out, "\nchanged invoices{}:", shown(limit, changed.len()));
            for c in changed.iter().take(limit) {
                let _ = writeln!(out, "  {} (line {}): {} -> {}", c.key, c.line, c.current, c.new);
            }
        }

        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped lines{}:", shown(limit, self.skipped.len()));
            for s in self.skipped.iter().take(limit) {
                let _ = writeln!(out, "  line {}: {}", s.line, s.reason);
            }
        }

        if !self.new_unreachable.is_empty() {
            let _ = writeln!(out, "\nthe new config has rules that can never decide:");
            for (i, why) in &self.new_unreachable {
                let _ = writeln!(out, "  routing.rules[{i}]: {why}");
            }
        }
        out
    }
}

fn invoices(n: usize) -> String {
    if n == 1 {
        "1 invoice".to_owned()
    } else {
        format!("{n} invoices")
    }
}

/// ` (first 20 of 31; --limit N shows more)` when the list is cut short.
fn shown(limit: usize, total: usize) -> String {
    if total > limit {
        format!(" (first {limit} of {total}; --limit N shows more)")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use time::macros::date;

    use super::*;

    const TODAY: Date = date!(2026 - 11 - 20);

    /// acme (and globex when `with_globex`), email, sms and whatsapp
    /// to files, and `routing` as the `[routing]` section's body.
    fn config(routing: &str, with_globex: bool) -> Config {
        let globex = if with_globex {
            "[billers.globex]\ncheckout_url = \"https://pay.example/{token}\"\n"
        } else {
            ""
        };
        let text = format!(
            "[billers.acme]\ncheckout_url = \"https://pay.example/{{token}}\"\n{globex}\
             [channels.email]\ntransport = \"file\"\n[channels.sms]\nprovider = \"file\"\n\
             [channels.whatsapp]\nprovider = \"file\"\n[routing]\nrespect_preferences = false\n{routing}"
        );
        match Config::from_toml(&text, Path::new("/etc/payrelay"), &|_| None) {
            Ok(c) => c,
            Err(p) => panic!("{p:#?}"),
        }
    }

    const OVERDUE_WHATSAPP: &str = "default = [\"email\"]\n[[routing.rules]]\nname = \"overdue credit cases\"\n\
        source = \"credit\"\ndays_to_due = { max = -1 }\nchannels = [\"whatsapp\", \"sms\", \"email\"]";

    /// An invoice line: `id`, biller, source, due date and extra JSON fields.
    fn line(id: &str, biller: &str, source: &str, due: &str, extra: &str) -> String {
        format!(
            r#"{{"invoice_id": "{id}", "biller_id": "{biller}", "source": "{source}", "amount": "10.00", "currency": "MXN", "due_date": "{due}", "customer": {{"name": "N", "email": "n@example.com", "phone": "+5215512345678", "whatsapp": "+5215512345678"}}{extra}}}"#
        )
    }

    fn input(lines: &[String]) -> String {
        lines.join("\n") + "\n"
    }

    #[test]
    fn stored_invoices_give_the_report_their_messages_give() {
        let current = config(OVERDUE_WHATSAPP, true);
        let new = config("default = [\"sms\"]", true);
        let lines = [
            line("1", "acme", "credit", "2026-11-01", ""),
            line("2", "acme", "erp", "2026-11-01", ""),
            line("3", "globex", "credit", "2026-12-01", ""),
        ];
        let stored: Vec<Invoice> = lines
            .iter()
            .map(|l| match invoice::parse(l.as_bytes(), |_| true) {
                Ok(Message::PaymentRequest(invoice)) => *invoice,
                other => panic!("{other:?}"),
            })
            .collect();
        let from_messages = replay(&input(&lines), &current, &new, TODAY);
        let from_store = replay_stored(&stored, &current, &new, TODAY);
        assert_eq!(from_store.totals().changed, 3);
        assert_eq!(from_store.report(10), from_messages.report(10));
        // A biller neither config knows is skipped with the invoice's key.
        let without_globex = config("default = [\"sms\"]", false);
        let skipped = replay_stored(&stored, &without_globex, &without_globex, TODAY).skipped;
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].reason.starts_with("globex/3#1: invalid under both configs"),
            "{skipped:?}"
        );
    }

    #[test]
    fn an_unchanged_config_changes_nothing() {
        let c = config(OVERDUE_WHATSAPP, true);
        let text = input(&[
            line("1", "acme", "credit", "2026-11-01", ""),
            line("2", "acme", "erp", "2026-11-01", ""),
        ]);
        let r = replay(&text, &c, &c, TODAY);
        let t = r.totals();
        assert_eq!((t.compared, t.unchanged, t.changed, t.skipped), (2, 2, 0, 0));
        assert!(r.changes().is_empty());
        assert!(
            r.report(10).contains("no invoice would be routed differently"),
            "{}",
            r.report(10)
        );
    }

    #[test]
    fn removing_a_rule_moves_its_invoices_to_the_default() {
        let current = config(OVERDUE_WHATSAPP, true);
        let new = config("default = [\"email\"]", true);
        let text = input(&[
            line("1", "acme", "credit", "2026-11-01", ""),
            line("2", "acme", "credit", "2026-12-01", ""),
            line("3", "acme", "credit", "2026-11-19", ""),
        ]);
        let r = replay(&text, &current, &new, TODAY);
        let t = r.totals();
        assert_eq!((t.compared, t.unchanged, t.changed), (3, 1, 2));
        assert_eq!(
            r.changes(),
            [ChangeGroup {
                from: Decided::Rule("overdue credit cases".into()),
                to: Decided::Default,
                count: 2,
                details: vec![("first channel whatsapp -> email".into(), 2)],
            }]
        );
        assert_eq!(
            r.decisions(),
            [
                (Decided::Rule("overdue credit cases".into()), 2, 0),
                (Decided::Default, 1, 3),
            ]
        );
        let changed: Vec<(usize, String)> = r
            .compared
            .iter()
            .filter(|c| c.changed())
            .map(|c| (c.line, format!("{} -> {}", c.current, c.new)))
            .collect();
        assert_eq!(
            changed,
            [
                (
                    1,
                    "rule \"overdue credit cases\" (fallback: whatsapp, sms, email) -> default (fallback: email)"
                        .into()
                ),
                (
                    3,
                    "rule \"overdue credit cases\" (fallback: whatsapp, sms, email) -> default (fallback: email)"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn moving_a_rule_is_not_a_change_but_a_new_strategy_or_order_is() {
        let current = config(
            "[[routing.rules]]\nname = \"a\"\nsource = \"erp\"\nchannels = [\"sms\", \"email\"]",
            true,
        );
        let moved = config(
            "[[routing.rules]]\nname = \"x\"\nsource = \"crm\"\nchannels = [\"email\"]\n\
             [[routing.rules]]\nname = \"a\"\nsource = \"erp\"\nchannels = [\"sms\", \"email\"]",
            true,
        );
        let text = input(&[line("1", "acme", "erp", "2026-12-01", "")]);
        assert_eq!(replay(&text, &current, &moved, TODAY).totals().changed, 0);

        let cases = [
            (
                "channels = [\"sms\", \"email\"]\nstrategy = \"all\"",
                "strategy fallback -> all",
            ),
            (
                "channels = [\"sms\", \"whatsapp\", \"email\"]",
                "channels sms, email -> sms, whatsapp, email",
            ),
            ("channels = [\"email\", \"sms\"]", "first channel sms -> email"),
        ];
        for (rule, detail) in cases {
            let new = config(
                &format!("[[routing.rules]]\nname = \"a\"\nsource = \"erp\"\n{rule}"),
                true,
            );
            let r = replay(&text, &current, &new, TODAY);
            assert_eq!(r.totals().changed, 1, "{rule}");
            assert_eq!(r.changes()[0].details, [(detail.to_owned(), 1)], "{rule}");
            assert_eq!(r.changes()[0].from, r.changes()[0].to, "{rule}");
        }
    }

    #[test]
    fn a_biller_valid_under_one_config_only_is_rejected_under_the_other() {
        let current = config("", true);
        let new = config("", false);
        let text = input(&[line("1", "globex", "erp", "2026-12-01", "")]);
        let r = replay(&text, &current, &new, TODAY);
        let t = r.totals();
        assert_eq!((t.compared, t.changed), (1, 1));
        assert_eq!(t.rejected_current, Rejections::default());
        assert_eq!(
            t.rejected_new,
            Rejections {
                invalid: 1,
                no_channel: 0
            }
        );
        let why = "biller_id \"globex\" is not a biller in payrelay's configuration";
        assert_eq!(r.compared[0].new, Outcome::Invalid(why.into()));
        assert_eq!(r.changes()[0].details, [(format!("rejected: {why}"), 1)]);

        let back = replay(&text, &new, &current, TODAY);
        assert_eq!(back.totals().rejected_current.invalid, 1);
        assert_eq!(
            back.changes()[0].details,
            [("first channel none -> email".to_owned(), 1)]
        );
    }

    #[test]
    fn no_channel_left_counts_as_rejected() {
        let current = config("default = [\"email\"]", true);
        let new = config("default = [\"sms\"]", true);
        let text = r#"{"invoice_id": "1", "biller_id": "acme", "amount": "1", "currency": "MXN", "due_date": "2026-12-01", "customer": {"name": "N", "email": "n@example.com"}}"#;
        let r = replay(text, &current, &new, TODAY);
        assert_eq!(
            r.totals().rejected_new,
            Rejections {
                invalid: 0,
                no_channel: 1
            }
        );
        assert_eq!(r.compared[0].new.to_string(), "default (fallback: no channel left)");
        assert_eq!(r.changes()[0].details, [("first channel email -> none".to_owned(), 1)]);
    }

    #[test]
    fn lines_that_are_not_payment_requests_are_skipped_with_their_line_and_reason() {
        let c = config("", true);
        let text = format!(
            "{}\n\nnot json\n[1, 2]\n{}\n{}\n{}\n{}\n",
            line("1", "acme", "erp", "2026-12-01", ""),
            r#"{"event": "invoice.sent", "biller_id": "acme", "invoice_id": "1", "channel": "email"}"#,
            r#"{"kind": "invoice_paid", "biller_id": "acme", "invoice_id": "1"}"#,
            line("2", "nobody", "erp", "2026-12-01", ""),
            r#"{"invoice_id": "3", "biller_id": "acme", "amount": "1.234", "currency": "EUR"}"#,
        );
        let r = replay(&text, &c, &c, TODAY);
        assert_eq!(r.compared.len(), 1);
        let skipped: Vec<(usize, &str)> = r.skipped.iter().map(|s| (s.line, s.reason.as_str())).collect();
        assert_eq!(skipped[0], (3, "not JSON (expected ident at line 1 column 2)"));
        assert_eq!(skipped[1], (4, "not a JSON object"));
        assert_eq!(
            skipped[2],
            (
                5,
                "an event (invoice.sent), not an invoice: events do not carry the invoice"
            )
        );
        assert_eq!(skipped[3], (6, "an invoice_paid message, not a payment request"));
        assert_eq!(
            skipped[4],
            (
                7,
                "invalid under both configs: biller_id \"nobody\" is not a biller in payrelay's configuration"
            )
        );
        assert_eq!(skipped[5].0, 8);
        assert!(skipped[5].1.contains("3 decimals but EUR allows 2"), "{skipped:?}");
        assert_eq!(r.totals().skipped, 6);
    }

    #[test]
    fn a_byte_order_mark_and_windows_line_ends_are_read() {
        let c = config("", true);
        let text = format!(
            "\u{feff}{}\r\n{}\r\n",
            line("1", "acme", "erp", "2026-12-01", ""),
            line("2", "acme", "erp", "2026-12-01", "")
        );
        let r = replay(&text, &c, &c, TODAY);
        assert_eq!(r.compared.len(), 2, "{r:#?}");
        assert!(r.skipped.is_empty(), "{r:#?}");
    }

    #[test]
    fn one_json_object_over_several_lines_is_one_invoice() {
        let c = config("", true);
        let text =
            "\n{\n  \"invoice_id\": \"1\", \"biller_id\": \"acme\", \"amount\": \"1\", \"currency\": \"MXN\",\n  \
                    \"due_date\": \"2026-12-01\", \"customer\": {\"name\": \"N\", \"email\": \"n@example.com\"}\n}\n";
        let r = replay(text, &c, &c, TODAY);
        assert_eq!(r.compared.len(), 1, "{r:#?}");
        assert_eq!(r.compared[0].line, 2);
    }

    #[test]
    fn the_report_lists_at_most_limit_invoices_and_names_dead_rules_of_the_new_config() {
        let current = config(OVERDUE_WHATSAPP, true);
        let new = config(
            "default = [\"email\"]\n[[routing.rules]]\nname = \"all\"\nchannels = [\"sms\"]\n\
             [[routing.rules]]\nname = \"never\"\nsource = \"credit\"\nchannels = [\"email\"]",
            true,
        );
        let text = input(&[
            line("1", "acme", "credit", "2026-11-01", ""),
            line("2", "acme", "erp", "2026-11-01", ""),
            line("3", "acme", "erp", "2026-11-01", ""),
            "oops".to_owned(),
        ]);
        let report = replay(&text, &current, &new, TODAY).report(1);
        let expected = "\
invoices compared: 3
  unchanged: 0
  changed: 3
  rejected under the current config: 0 (invalid: 0, no channel left: 0)
  rejected under the new config: 0 (invalid: 0, no channel left: 0)
lines skipped: 1 (not payment requests, or invalid under both configs)

decided by (current -> new):
  rule \"all\": 0 -> 3
  rule \"overdue credit cases\": 1 -> 0
  default: 2 -> 0

changes (current -> new):
  default -> rule \"all\": 2 invoices
    first channel email -> sms: 2
  rule \"overdue credit cases\" -> rule \"all\": 1 invoice
    first channel whatsapp -> sms: 1

changed invoices (first 1 of 3; --limit N shows more):
  acme/1#1 (line 1): rule \"overdue credit cases\" (fallback: whatsapp, sms, email) -> rule \"all\" (fallback: sms)

skipped lines:
  line 4: not JSON (expected value at line 1 column 1)

the new config has rules that can never decide:
  routing.rules[1]: rule \"never\" can never decide: rule \"all\" (routing.rules[0]) has no conditions, so it matches every invoice first
";
        assert_eq!(report, expected);
    }
}
