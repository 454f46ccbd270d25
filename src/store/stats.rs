//! The funnel figures of `GET /v1/stats` (docs/stats.md): how many of a
//! biller's invoices were received, sent, delivered, opened by a person and
//! paid in a period, the rates between those stages, the amounts requested
//! and paid per currency, the median time from first message to payment,
//! split by channel, routing rule or journey step, and a daily series.
//!
//! The definitions live here, once, for both stores: a store reads one
//! [`InvoiceFacts`] per invoice of the period (with its attempts) and
//! [`aggregate`] turns them into [`Stats`]. So SQLite and PostgreSQL cannot
//! disagree on what a stage means, and the rules can be tested without a
//! database.
//!
//! An invoice is the biller's invoice, not a revision: it counts once, on
//! the day (UTC) its first revision was received, and its stages are
//! reached by any of its revisions' messages at any time up to now (a
//! cohort). Amounts are its latest revision's.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::{Date, Duration, OffsetDateTime, Time};

use crate::domain::money::Amount;
use crate::router::Decision;

/// How `GET /v1/stats` splits the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The channel of the message that earned the payment or, failing
    /// that, of the last message sent (see [`InvoiceFacts::attributed`]).
    Channel,
    /// What routed the invoice's first revision: [`routed_by`].
    Rule,
    /// The journey step of the same message as [`GroupBy::Channel`].
    Step,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "channel" => Some(GroupBy::Channel),
            "rule" => Some(GroupBy::Rule),
            "step" => Some(GroupBy::Step),
            _ => None,
        }
    }
}

/// What [`crate::store::Store::stats`] computes: one biller's invoices first
/// received from `from` to `to`, both days included (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub biller_id: String,
    pub from: Date,
    pub to: Date,
    /// Also split the funnel this way; `None`: the whole funnel only.
    pub by: Option<GroupBy>,
}

impl StatsQuery {
    /// The period as milliseconds since the epoch: `[start, end)`.
    pub fn range_ms(&self) -> (i64, i64) {
        (
            day_start_ms(self.from),
            day_start_ms(self.to.saturating_add(Duration::DAY)),
        )
    }
}

fn day_start_ms(day: Date) -> i64 {
    let at = day.with_time(Time::MIDNIGHT).assume_utc();
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The figures for one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub biller_id: String,
    /// `YYYY-MM-DD`, as asked.
    pub from: String,
    pub to: String,
    /// Every invoice of the period.
    pub funnel: Funnel,
    /// How `groups` splits the funnel; null when not asked.
    pub by: Option<GroupBy>,
    /// One funnel per channel, rule or step, largest `received` first; the
    /// groups add up to `funnel`. Empty when `by` is null.
    pub groups: Vec<GroupStats>,
    /// One row per day of the period, oldest first, days without invoices
    /// included.
    pub daily: Vec<DayStats>,
}

/// How many invoices reached each stage, and what it came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Funnel {
    pub received: u64,
    /// A provider accepted at least one of its messages (and did not report
    /// it failed afterwards).
    pub sent: u64,
    /// At least one message was reported delivered or read, or a person
    /// opened its pay link (which it could not have without receiving it).
    pub delivered: u64,
    /// A person opened at least one of its pay links; link previewers and
    /// mail scanners are never counted.
    pub opened: u64,
    /// Closed as paid, whether or not a link was opened.
    pub paid: u64,
    pub rates: Rates,
    /// Per currency, in code order.
    pub amounts: Vec<CurrencyAmounts>,
    /// The median, over paid invoices with a sent message, of the time from
    /// the first message a provider accepted to the payment; null when
    /// there is none.
    pub median_ms_to_payment: Option<i64>,
}

/// Each stage over the one before it (and `paid` over `received`), from 0
/// to 1 except `paid_of_opened`, which counts payments without a click
/// too; null when the stage before is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rates {
    pub sent_of_received: Option<f64>,
    pub delivered_of_sent: Option<f64>,
    pub opened_of_delivered: Option<f64>,
    pub paid_of_opened: Option<f64>,
    pub paid_of_received: Option<f64>,
}

/// Amounts of one currency, in its minor units and as decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyAmounts {
    pub currency: String,
    pub requested_minor: i64,
    pub paid_minor: i64,
    /// `requested_minor` with the currency's decimals: `"1234.50"`.
    pub requested: String,
    pub paid: String,
}

/// The funnel of one channel, rule or step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// A channel (`email`, ...), a step (`request` for the first request),
    /// or a rule (`rule:<name>`, `default`, `invoice_channels`); `none`
    /// when no message was tried, `unknown` for a rule not recorded
    /// (invoices stored before payrelay recorded it).
    pub key: String,
    pub funnel: Funnel,
}

/// One day of the period: the invoices first received that day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayStats {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub received: u64,
    pub sent: u64,
    pub delivered: u64,
    pub opened: u64,
    pub paid: u64,
}

/// The group key of an invoice with no message tried (`by=channel|step`).
pub const NO_MESSAGE: &str = "none";
/// The `by=rule` key of an invoice stored before the rule was recorded.
pub const UNKNOWN_RULE: &str = "unknown";

/// What the store records of what routed an invoice: `rule:<name>`,
/// `default` or `invoice_channels`.
pub fn routed_by(decision: &Decision) -> String {
    match decision {
        Decision::Rule { name, .. } => format!("rule:{name}"),
        Decision::Default => "default".to_owned(),
        Decision::InvoiceChannels => "invoice_channels".to_owned(),
    }
}

/// One invoice of the period, as a store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    pub invoice_id: String,
    /// When its first revision was received.
    pub received_ms: i64,
    /// [`routed_by`] of its first revision; `None` when not recorded.
    pub routed_by: Option<String>,
    /// Its latest revision's amount.
    pub currency: String,
    pub amount_minor: i64,
    /// When it was closed as paid.
    pub paid_ms: Option<i64>,
    /// Every attempt of every revision, in any order.
    pub attempts: Vec<AttemptFacts>,
}

/// One send of an invoice, as a store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFacts {
    /// Its id: later attempts have higher ones.
    pub id: i64,
    pub channel: String,
    /// The journey step; `None` for the first request.
    pub step: Option<String>,
    /// `sending`, `sent`, `failed` or `retrying`.
    pub state: String,
    pub finished_ms: Option<i64>,
    /// A delivery or read report came.
    pub reached: bool,
    /// When a person first opened its pay link, if one did.
    pub first_click_ms: Option<i64>,
}

impl InvoiceFacts {
    fn sent(&self) -> bool {
        self.attempts.iter().any(|a| a.state == "sent")
    }

    fn opened(&self) -> bool {
        self.attempts.iter().any(|a| a.first_click_ms.is_some())
    }

    fn delivered(&self) -> bool {
        self.attempts.iter().any(|a| a.reached || a.first_click_ms.is_some())
    }

    /// When the first message a provider accepted went.
    fn first_sent_ms(&self) -> Option<i64> {
        self.attempts
            .iter()
            .filter(|a| a.state == "sent")
            .filter_map(|a| a.finished_ms)
            .min()
    }

    /// The message the invoice is attributed to: the one whose pay link a
    /// person opened last (first clicks compared; the later attempt on a
    /// tie), the one that earned a payment (as `invoice.paid` names it);
    /// else the last one sent; else the last one tried.
    pub fn attributed(&self) -> Option<&AttemptFacts> {
        let clicked = self
            .attempts
            .iter()
            .filter(|a| a.first_click_ms.is_some())
            .max_by_key(|a| (a.first_click_ms, a.id));
        clicked
            .or_else(|| self.attempts.iter().filter(|a| a.state == "sent").max_by_key(|a| a.id))
            .or_else(|| self.attempts.iter().max_by_key(|a| a.id))
    }

    fn key(&self, by: GroupBy) -> String {
        match by {
            GroupBy::Channel => self.attributed().map_or(NO_MESSAGE, |a| a.channel.as_str()).to_owned(),
            GroupBy::Step => match self.attributed() {
                Some(a) => a.step.as_deref().unwrap_or(crate::journey::REQUEST_STEP).to_owned(),
                None => NO_MESSAGE.to_owned(),
            },
            GroupBy::Rule => self.routed_by.clone().unwrap_or_else(|| UNKNOWN_RULE.to_owned()),
        }
    }
}

/// One revision as `STATS_INVOICES` reads it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub invoice_id: String,
    pub revision: i64,
    /// When the invoice's first revision was received.
    pub first_received_ms: i64,
    pub routed_by: Option<String>,
    /// `None` only for a revision whose amount could not be copied.
    pub currency: Option<String>,
    pub amount_minor: Option<i64>,
    /// When the invoice was paid.
    pub paid_ms: Option<i64>,
}

/// The revisions of a period's invoices gathered into one
/// [`InvoiceFacts`] each: what routed the first revision, the latest
/// revision's amount; attempts join them by invoice id.
#[derive(Default)]
pub struct Revisions {
    invoices: Vec<InvoiceFacts>,
    /// Per invoice, the lowest and highest revision seen.
    revisions: Vec<(i64, i64)>,
    by_id: HashMap<String, usize>,
}

impl Revisions {
    pub fn add(&mut self, row: Revision) {
        let amount = (row.currency.unwrap_or_default(), row.amount_minor.unwrap_or_default());
        match self.by_id.get(&row.invoice_id) {
            Some(&at) => {
                let (lowest, highest) = &mut self.revisions[at];
                let invoice = &mut self.invoices[at];
                if row.revision < *lowest {
                    *lowest = row.revision;
                    invoice.routed_by = row.routed_by;
                }
                if row.revision > *highest {
                    *highest = row.revision;
                    (invoice.currency, invoice.amount_minor) = amount;
                }
            }
            None => {
                self.by_id.insert(row.invoice_id.clone(), self.invoices.len());
                self.revisions.push((row.revision, row.revision));
                self.invoices.push(InvoiceFacts {
                    invoice_id: row.invoice_id,
                    received_ms: row.first_received_ms,
                    routed_by: row.routed_by,
                    currency: amount.0,
                    amount_minor: amount.1,
                    paid_ms: row.paid_ms,
                    attempts: Vec::new(),
                });
            }
        }
    }

    /// The invoice an attempt belongs to, if it is one of the period's.
    pub fn get_mut(&mut self, invoice_id: &str) -> Option<&mut InvoiceFacts> {
        let at = *self.by_id.get(invoice_id)?;
        self.invoices.get_mut(at)
    }

    pub fn into_facts(self) -> Vec<InvoiceFacts> {
        self.invoices
    }
}

/// Adds invoices up into a [`Funnel`].
#[derive(Default)]
struct Tally {
    received: u64,
    sent: u64,
    delivered: u64,
    opened: u64,
    paid: u64,
    /// Currency: (requested, paid) in minor units.
    amounts: BTreeMap<String, (i64, i64)>,
    to_payment_ms: Vec<i64>,
}

impl Tally {
    fn add(&mut self, invoice: &InvoiceFacts) {
        self.received += 1;
        self.sent += u64::from(invoice.sent());
        self.delivered += u64::from(invoice.delivered());
        self.opened += u64::from(invoice.opened());
        let amounts = self.amounts.entry(invoice.currency.clone()).or_default();
        amounts.0 = amounts.0.saturating_add(invoice.amount_minor);
        if let Some(paid_ms) = invoice.paid_ms {
            self.paid += 1;
            amounts.1 = amounts.1.saturating_add(invoice.amount_minor);
            if let Some(first) = invoice.first_sent_ms().filter(|first| *first <= paid_ms) {
                self.to_payment_ms.push(paid_ms - first);
            }
        }
    }

    fn funnel(mut self) -> Funnel {
        let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        Funnel {
            received: self.received,
            sent: self.sent,
            delivered: self.delivered,
            opened: self.opened,
            paid: self.paid,
            rates: Rates {
                sent_of_received: rate(self.sent, self.received),
                delivered_of_sent: rate(self.delivered, self.sent),
                opened_of_delivered: rate(self.opened, self.delivered),
                paid_of_opened: rate(self.paid, self.opened),
                paid_of_received: rate(self.paid, self.received),
            },
            amounts: self
                .amounts
                .into_iter()
                .map(|(currency, (requested, paid))| CurrencyAmounts {
                    requested: decimal(requested, &currency),
                    paid: decimal(paid, &currency),
                    currency,
                    requested_minor: requested,
                    paid_minor: paid,
                })
                .collect(),
            median_ms_to_payment: median(&mut self.to_payment_ms),
        }
    }
}

fn decimal(minor: i64, currency: &str) -> String {
    Amount {
        minor,
        currency: currency.to_owned(),
        text: String::new(),
    }
    .to_decimal_string()
}

/// The middle value; of an even count, the mean of the two middle ones
/// (rounded down).
fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        values[mid - 1] + (values[mid] - values[mid - 1]) / 2
    })
}

fn day_of(ms: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .map(|t| t.date())
}

fn day_text(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day())
}

/// The figures of `query` from its invoices' facts.
pub fn aggregate(query: &StatsQuery, invoices: &[InvoiceFacts]) -> Stats {
    let mut total = Tally::default();
    let mut groups: BTreeMap<String, Tally> = BTreeMap::new();
    let mut days: BTreeMap<Date, DayStats> = BTreeMap::new();
    let mut day = query.from;
    while day <= query.to {
        days.insert(day, DayStats::empty(day));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    for invoice in invoices {
        total.add(invoice);
        if let Some(by) = query.by {
            groups.entry(invoice.key(by)).or_default().add(invoice);
        }
        if let Some(row) = day_of(invoice.received_ms).and_then(|d| days.get_mut(&d)) {
            row.received += 1;
            row.sent += u64::from(invoice.sent());
            row.delivered += u64::from(invoice.delivered());
            row.opened += u64::from(invoice.opened());
            row.paid += u64::from(invoice.paid_ms.is_some());
        }
    }
    let mut groups: Vec<GroupStats> = groups
        .into_iter()
        .map(|(key, tally)| GroupStats {
            key,
            funnel: tally.funnel(),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.funnel
            .received
            .cmp(&a.funnel.received)
            .then_with(|| a.key.cmp(&b.key))
    });
    Stats {
        biller_id: query.biller_id.clone(),
        from: day_text(query.from),
        to: day_text(query.to),
        funnel: total.funnel(),
        by: query.by,
        groups,
        daily: days.into_values().collect(),
    }
}

impl DayStats {
    fn empty(day: Date) -> DayStats {
        DayStats {
            day: day_text(day),
            received: 0,
            sent: 0,
            delivered: 0,
            opened: 0,
            paid: 0,
        }
    }
}
