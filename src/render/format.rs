//! Money and dates in the reader's locale, with ICU4X and its compiled-in
//! CLDR data, and the handlebars helpers that expose them.
//!
//! Amounts are exact: an invoice for 1234.567 KWD shows three decimals and
//! 1235 JPY none. ICU4X's currency formatter places the symbol (`$1,234.50`
//! in en-US, `1.234,50 €` in de-DE, `R$ 1.234,50` in pt-BR, `MX$1,234.50`
//! for pesos in English) but rounds to CLDR's digits for the currency, which
//! for some (IDR, HUF, COP, IQD and more) are fewer than ISO 4217's. When
//! that rounding changed a digit, the number inside the formatted amount is
//! replaced by the locale's exact decimal rendering, so the reader always
//! sees the amount the biller asked for.
//!
//! Dates use the Gregorian calendar and CLDR's long date pattern:
//! `December 1, 2026`, `1 de diciembre de 2026`, `1. Dezember 2026`.
//!
//! CLDR puts no-break spaces in some patterns (`1.234,50\u{a0}€`); the
//! strings here carry plain spaces instead, so an SMS stays in the GSM-7
//! alphabet (one no-break space would switch it to UCS-2, 70 characters a
//! segment) and a person who copies the amount gets what they see.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Range;
use std::thread::LocalKey;

use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason, ScopedJson};
use icu::calendar::cal::Gregorian;
use icu::calendar::Date as IcuDate;
use icu::datetime::fieldsets::YMD;
use icu::datetime::FixedCalendarDateTimeFormatter;
use icu::decimal::input::Decimal;
use icu::decimal::{parts, DecimalFormatter};
use icu::experimental::dimension::currency::formatter::CurrencyFormatter;
use icu::experimental::dimension::currency::CurrencyType;
use icu::locale::{locale, Locale};
use writeable::{Part, PartsWrite, Writeable};

use crate::invoice::Amount;

/// The amount in `locale` with the currency's symbol, exact to the minor
/// unit: `1.234,50 €` for 1234.50 EUR in `de-DE`.
pub fn money(amount: &Amount, locale: &str) -> String {
    money_minor(amount.minor, &amount.currency, amount.exponent(), locale)
}

/// [`money`] from minor units and the currency's number of decimals.
/// Never fails: a locale ICU4X cannot use falls back to `en`, and a
/// currency it cannot use to `MXN 1234.50`.
pub fn money_minor(minor: i64, currency: &str, exponent: u32, tag: &str) -> String {
    let value = exact(minor, exponent);
    candidates(tag)
        .iter()
        .find_map(|l| money_in(l, &value, currency))
        .unwrap_or_else(|| format!("{currency} {value}"))
}

/// The date in `locale`'s long form: `1 de diciembre de 2026` in `es-MX`.
/// Falls back to `en`, then to ISO 8601.
pub fn date(date: time::Date, tag: &str) -> String {
    candidates(tag)
        .iter()
        .find_map(|l| date_in(l, date))
        .unwrap_or_else(|| iso_date(date))
}

/// `2026-12-01`.
pub fn iso_date(date: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// The locale as given, then without its extensions (an `-u-ca-` calendar
/// request the Gregorian formatter refuses), then `en`.
fn candidates(tag: &str) -> Vec<Locale> {
    let mut out = Vec::with_capacity(3);
    if let Some(l) = super::locale::parse(tag) {
        let bare = Locale::from(l.id.clone());
        if bare != l {
            out.push(l);
        }
        out.push(bare);
    }
    out.push(locale!("en"));
    out
}

fn exact(minor: i64, exponent: u32) -> Decimal {
    let mut value = Decimal::from(minor);
    value.multiply_pow10(-i16::try_from(exponent).unwrap_or(0));
    value
}

fn money_in(locale: &Locale, value: &Decimal, currency: &str) -> Option<String> {
    let code = CurrencyType::try_from_str(currency).ok()?;
    let with_symbol = cached(
        &CURRENCY_FORMATTERS,
        (locale.clone(), code),
        || CurrencyFormatter::try_new_symbol(locale.into(), code, Default::default()).ok(),
        |f| Parts::of(&f.format_fixed_decimal(value)),
    )?;
    let plain = cached(
        &DECIMAL_FORMATTERS,
        locale.clone(),
        || DecimalFormatter::try_new(locale.into(), Default::default()).ok(),
        |f| Parts::of(&f.format(value)),
    )?;
    let text = if with_symbol.digits() == plain.digits() {
        with_symbol.text
    } else {
        // The currency formatter rounded: keep its symbol and placement,
        // put the exact number in.
        let exact = plain.text.get(plain.number()?)?;
        let number = with_symbol.number()?;
        let mut text = with_symbol.text;
        text.replace_range(number, exact);
        text
    };
    Some(plain_spaces(&text))
}

fn date_in(locale: &Locale, date: time::Date) -> Option<String> {
    let date = IcuDate::try_new_gregorian(date.year(), u8::from(date.month()), date.day()).ok()?;
    let text = cached(
        &DATE_FORMATTERS,
        locale.clone(),
        || FixedCalendarDateTimeFormatter::<Gregorian, _>::try_new(locale.into(), YMD::long()).ok(),
        |f| Some(f.format(&date).write_to_string().into_owned()),
    )?;
    Some(plain_spaces(&text))
}

/// Formatters by locale (and currency), built once per thread: building
/// one, which looks up its CLDR data, cost more than using it, and every
/// invoice formats an amount and a date. Locales come from invoices, so a
/// cache that reaches [`CACHE_LIMIT`] entries starts over. `None` records
/// a locale ICU4X cannot serve, so it is not tried again either.
type Cache<K, V> = RefCell<HashMap<K, Option<V>>>;

const CACHE_LIMIT: usize = 256;

thread_local! {
    static CURRENCY_FORMATTERS: Cache<(Locale, CurrencyType), CurrencyFormatter<DecimalFormatter>> = RefCell::default();
    static DECIMAL_FORMATTERS: Cache<Locale, DecimalFormatter> = RefCell::default();
    static DATE_FORMATTERS: Cache<Locale, FixedCalendarDateTimeFormatter<Gregorian, YMD>> = RefCell::default();
}

/// Runs `with` on the formatter for `key` from `cache`, building it first
/// if this thread has not yet.
fn cached<K: Eq + Hash, V, R>(
    cache: &'static LocalKey<Cache<K, V>>,
    key: K,
    build: impl FnOnce() -> Option<V>,
    with: impl FnOnce(&V) -> Option<R>,
) -> Option<R> {
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.entry(key).or_insert_with(build).as_ref().and_then(with)
    })
}

/// No-break, narrow no-break and thin spaces become plain spaces.
fn plain_spaces(s: &str) -> String {
    s.replace(['\u{a0}', '\u{202f}', '\u{2009}'], " ")
}

/// A formatted string with the spans ICU4X annotated (integer, group
/// separator, decimal separator, fraction, ...).
#[derive(Default)]
struct Parts {
    text: String,
    spans: Vec<(Range<usize>, Part)>,
}

impl Parts {
    fn of(w: &impl Writeable) -> Option<Parts> {
        let mut p = Parts::default();
        w.write_to_parts(&mut p).ok()?;
        Some(p)
    }

    fn inside(&self, i: usize, part: Part) -> bool {
        self.spans.iter().any(|(r, p)| *p == part && r.contains(&i))
    }

    /// The digits of the integer and of the fraction, separators left out,
    /// in the locale's own digits.
    fn digits(&self) -> (String, String) {
        let pick = |part: Part| -> String {
            self.text
                .char_indices()
                .filter(|&(i, _)| self.inside(i, part) && !self.inside(i, parts::GROUP))
                .map(|(_, c)| c)
                .collect()
        };
        (pick(parts::INTEGER), pick(parts::FRACTION))
    }

    /// Where the number (integer, separators, fraction) is in the text.
    fn number(&self) -> Option<Range<usize>> {
        let number = [parts::INTEGER, parts::GROUP, parts::DECIMAL, parts::FRACTION];
        let mut spans = self.spans.iter().filter(|(_, p)| number.contains(p)).map(|(r, _)| r);
        let first = spans.next()?.clone();
        Some(spans.fold(first, |a, r| a.start.min(r.start)..a.end.max(r.end)))
    }
}

impl std::fmt::Write for Parts {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

impl PartsWrite for Parts {
    type SubPartsWrite = Parts;

    fn with_part(
        &mut self,
        part: Part,
        mut f: impl FnMut(&mut Self::SubPartsWrite) -> std::fmt::Result,
    ) -> std::fmt::Result {
        let start = self.text.len();
        f(self)?;
        self.spans.push((start..self.text.len(), part));
        Ok(())
    }
}

/// `{{money minor currency [locale]}}`: `{{money amount.minor amount.currency locale}}`
/// gives what `amount.display` holds. Without a locale, the view's `locale`.
pub(super) struct MoneyHelper;

impl HelperDef for MoneyHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let minor = h
            .param(0)
            .map(|p| p.value())
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| {
                misuse(
                    "money",
                    "the first parameter must be the amount in minor units (amount.minor)",
                )
            })?;
        let code = h.param(1).and_then(|p| p.value().as_str()).ok_or_else(|| {
            misuse(
                "money",
                "the second parameter must be a currency code (amount.currency)",
            )
        })?;
        let currency = iso_currency::Currency::from_code(code)
            .ok_or_else(|| misuse("money", &format!("\"{code}\" is not an ISO 4217 currency")))?;
        let exponent = currency.exponent().map(u32::from).unwrap_or(0);
        let text = money_minor(minor, currency.code(), exponent, locale_param(h, 2, ctx));
        Ok(ScopedJson::Derived(text.into()))
    }
}

/// `{{date yyyy-mm-dd [locale]}}`: `{{date invoice.due_date locale}}` gives
/// what `invoice.due_date_display` holds. Without a locale, the view's `locale`.
pub(super) struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let iso = time::macros::format_description!("[year]-[month]-[day]");
        let day = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .and_then(|s| time::Date::parse(s, iso).ok())
            .ok_or_else(|| {
                misuse(
                    "date",
                    "the first parameter must be a YYYY-MM-DD date (invoice.due_date)",
                )
            })?;
        Ok(ScopedJson::Derived(date(day, locale_param(h, 1, ctx)).into()))
    }
}

fn locale_param<'a>(h: &'a Helper<'_>, index: usize, ctx: &'a Context) -> &'a str {
    h.param(index)
        .and_then(|p| p.value().as_str())
        .or_else(|| ctx.data().get("locale").and_then(|l| l.as_str()))
        .unwrap_or(super::locale::FALLBACK)
}

fn misuse(helper: &str, what: &str) -> RenderError {
    RenderErrorReason::Other(format!("{{{{{helper}}}}}: {what}")).into()
}
