//! Amounts of money: exact minor units with their ISO 4217 currency.

use iso_currency::Currency;
use serde::{Deserialize, Serialize};

/// A positive amount, exact to the currency's minor unit.
///
/// `text` keeps the biller's own decimal string, because checkout URLs must
/// carry the amount as the invoice gave it (the `{amount}` checkout
/// placeholder), but without leading zeros: `007.50` is the same amount,
/// and a PSP may read a zero-padded number differently or refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub minor: i64,
    pub currency: String,
    pub text: String,
}

impl Amount {
    /// Parses `"1234.50"` in `"MXN"`; refuses more decimals than the currency
    /// has, and the codes ISO 4217 reserves for things a customer cannot pay
    /// in (precious metals, units of account, testing, "no currency").
    pub fn parse(text: &str, currency: &str) -> Result<Amount, String> {
        let cur =
            Currency::from_code(currency).ok_or_else(|| format!("currency \"{currency}\" is not an ISO 4217 code"))?;
        if cur.is_special() {
            return Err(format!(
                "currency \"{currency}\" ({}) is not money a customer can pay in; use the currency of the invoice",
                cur.name()
            ));
        }
        let exponent = cur.exponent().unwrap_or(0) as usize;
        let bad = || format!("amount \"{text}\" is not a positive decimal number like 1234.50");
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty() || !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if text.ends_with('.') {
            return Err(bad());
        }
        if frac.len() > exponent {
            return Err(format!(
                "amount \"{text}\" has {} decimals but {currency} allows {exponent}",
                frac.len()
            ));
        }
        let mut digits = String::with_capacity(int.len() + exponent);
        digits.push_str(int);
        digits.push_str(frac);
        digits.extend(std::iter::repeat_n('0', exponent - frac.len()));
        let minor: i64 = digits.parse().map_err(|_| format!("amount \"{text}\" is too large"))?;
        if minor <= 0 {
            return Err(format!("amount \"{text}\" must be more than zero"));
        }
        // `int` starts `text`: drop its leading zeros, keeping one before the point.
        let zeros = int.len() - int.trim_start_matches('0').len();
        let text = &text[zeros.min(int.len() - 1)..];
        Ok(Amount {
            minor,
            currency: cur.code().to_owned(),
            text: text.to_owned(),
        })
    }

    /// Number of decimals of the currency (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u32 {
        Currency::from_code(&self.currency)
            .and_then(|c| c.exponent())
            .unwrap_or(0) as u32
    }

    /// The amount as a plain decimal string with exactly the currency's decimals.
    pub fn to_decimal_string(&self) -> String {
        let exp = self.exponent();
        if exp == 0 {
            return self.minor.to_string();
        }
        let div = 10i64.pow(exp);
        format!(
            "{}.{:0width$}",
            self.minor / div,
            self.minor % div,
            width = exp as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_respect_the_currency_exponent() {
        assert_eq!(Amount::parse("1234.50", "MXN").unwrap().minor, 123450);
        assert_eq!(Amount::parse("1234.5", "EUR").unwrap().minor, 123450);
        assert_eq!(Amount::parse("1500", "JPY").unwrap().minor, 1500);
        assert_eq!(Amount::parse("1.234", "KWD").unwrap().minor, 1234);
        assert!(Amount::parse("1.5", "JPY").unwrap_err().contains("allows 0"));
        assert!(Amount::parse("1.234", "EUR").unwrap_err().contains("3 decimals"));
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        for bad in ["", "-1.00", "1,00", "abc", "1.", ".5", "0", "0.00", "1e3"] {
            assert!(Amount::parse(bad, "EUR").is_err(), "{bad} accepted");
        }
        assert!(Amount::parse("1", "XYZ").unwrap_err().contains("ISO 4217"));
    }

    #[test]
    fn currencies_that_are_not_money_are_refused() {
        for code in ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XSU", "XUA"] {
            let refused = Amount::parse("1", code).unwrap_err();
            assert!(refused.contains("not money"), "{code}: {refused}");
        }
        for code in ["MXN", "EUR", "CLF", "USN"] {
            assert!(Amount::parse("1", code).is_ok(), "{code} is money");
        }
    }

    #[test]
    fn leading_zeros_are_dropped_from_the_text() {
        for (given, text, minor) in [
            ("007.50", "7.50", 750),
            ("0000012", "12", 1200),
            ("00.50", "0.50", 50),
            ("0.5", "0.5", 50),
            ("10.00", "10.00", 1000),
        ] {
            let amount = Amount::parse(given, "EUR").unwrap();
            assert_eq!((amount.text.as_str(), amount.minor), (text, minor), "{given}");
        }
        assert!(Amount::parse("000", "EUR").is_err(), "still zero");
    }

    #[test]
    fn decimal_string_has_the_currency_decimals() {
        assert_eq!(Amount::parse("1234.5", "EUR").unwrap().to_decimal_string(), "1234.50");
        assert_eq!(Amount::parse("7", "KWD").unwrap().to_decimal_string(), "7.000");
        assert_eq!(Amount::parse("1500", "JPY").unwrap().to_decimal_string(), "1500");
    }
}
