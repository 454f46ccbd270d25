//! `GET /v1/stats?biller_id=&from=&to=&by=channel|rule|step`: the funnel
//! figures of one biller's invoices (docs/stats.md), as JSON.
//!
//! The admin token names the biller (`biller_id` is required: figures are
//! per biller); a biller's `api_token` sees only its own, which is also
//! the default, and another biller answers 404 as if it did not exist.
//! `from` and `to` are days (UTC, both included) and default to the last
//! 30 days up to today.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime};

use super::auth::{self, Caller};
use super::{AppError, AppState};
use crate::store::stats::{GroupBy, StatsQuery};

/// Days in the default period: today and the 29 before it.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest period one request may ask for, in days.
pub const MAX_DAYS: i64 = 366;

/// Why a request for figures was refused, in the words of its JSON error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("biller_id is required with the admin token: figures are per biller")]
    NoBiller,
    #[error("{0} must be a day as YYYY-MM-DD (UTC), e.g. 2026-03-01")]
    NotADay(&'static str),
    #[error("from ({from}) is after to ({to})")]
    Backwards { from: Date, to: Date },
    #[error("the period is {0} days; ask for at most 366 at a time")]
    TooLong(i64),
    #[error("by must be channel, rule or step")]
    By,
    #[error("unknown parameter {0}: the parameters are biller_id, from, to and by")]
    Unknown(String),
}

/// The query `params` ask for, for `caller`, on `today` (UTC).
pub fn parse_query(params: &HashMap<String, String>, caller: &Caller, today: Date) -> Result<StatsQuery, BadQuery> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !["biller_id", "from", "to", "by"].contains(&k.as_str()))
    {
        return Err(BadQuery::Unknown(unknown.clone()));
    }
    let biller_id = match (params.get("biller_id"), caller) {
        (Some(id), _) => id.clone(),
        (None, Caller::Biller(own)) => own.clone(),
        (None, Caller::Admin) => return Err(BadQuery::NoBiller),
    };
    let day = |name: &'static str| -> Result<Option<Date>, BadQuery> {
        params
            .get(name)
            .map(|text| {
                Date::parse(text, format_description!("[year]-[month]-[day]")).map_err(|_| BadQuery::NotADay(name))
            })
            .transpose()
    };
    let (from, to) = match (day("from")?, day("to")?) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (from, today),
        (None, to) => {
            let to = to.unwrap_or(today);
            (to.saturating_sub(Duration::days(DEFAULT_DAYS - 1)), to)
        }
    };
    if from > to {
        return Err(BadQuery::Backwards { from, to });
    }
    let days = (to - from).whole_days() + 1;
    if days > MAX_DAYS {
        return Err(BadQuery::TooLong(days));
    }
    let by = params
        .get("by")
        .map(|by| GroupBy::parse(by).ok_or(BadQuery::By))
        .transpose()?;
    Ok(StatsQuery {
        biller_id,
        from,
        to,
        by,
    })
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

pub(super) async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let Some(caller) = auth::caller(&state.config, &headers) else {
        return Ok(auth::unauthorized());
    };
    let today = OffsetDateTime::from_unix_timestamp_nanos(i128::from(state.clock.now_ms()) * 1_000_000)
        .map(|now| now.date())
        .unwrap_or(Date::MIN);
    let query = match parse_query(&params, &caller, today) {
        Ok(query) => query,
        Err(bad) => return Ok(refuse(StatusCode::BAD_REQUEST, &bad.to_string())),
    };
    // Another biller's figures do not exist, as far as this caller knows.
    if !caller.sees(&query.biller_id) || !state.config.billers.contains_key(&query.biller_id) {
        return Ok(refuse(StatusCode::NOT_FOUND, "no such biller"));
    }
    let stats = state.store.stats(&query).await?;
    Ok(Json(stats).into_response())
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    const TODAY: Date = date!(2026 - 03 - 31);

    fn parse(pairs: &[(&str, &str)], caller: &Caller) -> Result<StatsQuery, BadQuery> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_query(&params, caller, TODAY)
    }

    #[test]
    fn a_biller_gets_its_last_30_days_by_default_and_the_admin_must_name_one() {
        let acme = Caller::Biller("acme".into());
        let query = parse(&[], &acme).unwrap();
        assert_eq!(
            (query.biller_id.as_str(), query.from, query.to, query.by),
            ("acme", date!(2026 - 03 - 02), TODAY, None)
        );
        assert_eq!(parse(&[], &Caller::Admin), Err(BadQuery::NoBiller));
        let named = parse(&[("biller_id", "beta"), ("by", "rule")], &Caller::Admin).unwrap();
        assert_eq!((named.biller_id.as_str(), named.by), ("beta", Some(GroupBy::Rule)));
    }

    #[test]
    fn one_day_given_sets_the_other_end() {
        let acme = Caller::Biller("acme".into());
        let until = parse(&[("to", "2026-02-28")], &acme).unwrap();
        assert_eq!((until.from, until.to), (date!(2026 - 01 - 30), date!(2026 - 02 - 28)));
        let since = parse(&[("from", "2026-03-30")], &acme).unwrap();
        assert_eq!((since.from, since.to), (date!(2026 - 03 - 30), TODAY));
        let one = parse(&[("from", "2026-03-01"), ("to", "2026-03-01")], &acme).unwrap();
        assert_eq!(one.range_ms().1 - one.range_ms().0, 86_400_000, "one whole day");
    }

    #[test]
    fn bad_parameters_are_named() {
        let acme = Caller::Biller("acme".into());
        assert_eq!(parse(&[("from", "2026-3-1")], &acme), Err(BadQuery::NotADay("from")));
        assert_eq!(parse(&[("to", "yesterday")], &acme), Err(BadQuery::NotADay("to")));
        assert_eq!(
            parse(&[("from", "2026-03-02"), ("to", "2026-03-01")], &acme),
            Err(BadQuery::Backwards {
                from: date!(2026 - 03 - 02),
                to: date!(2026 - 03 - 01)
            })
        );
        assert_eq!(
            parse(&[("from", "2024-12-31"), ("to", "2026-01-01")], &acme),
            Err(BadQuery::TooLong(367))
        );
        assert!(
            parse(&[("from", "2025-01-01"), ("to", "2026-01-01")], &acme).is_ok(),
            "366 days"
        );
        assert_eq!(parse(&[("by", "currency")], &acme), Err(BadQuery::By));
        assert_eq!(
            parse(&[("biller", "acme")], &acme),
            Err(BadQuery::Unknown("biller".into()))
        );
    }
}
