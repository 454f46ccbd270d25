//! The funnel page: one biller's invoices of a period (today, the last 7
//! or 30 days, or dates) from received to paid, with the rates between
//! stages, amounts per currency, the median time to payment, a split by
//! channel, rule or step, and a daily chart drawn on the server as inline
//! SVG. The figures are the store's ([`crate::store::stats`], the same as
//! `GET /v1/stats`); this page only lays them out.

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Date, Duration};

use super::session::Session;
use super::{not_found, signed_in_page, visible_billers};
use crate::server::{AppError, AppState};
use crate::store::stats::{DayStats, Funnel, GroupBy, Stats, StatsQuery};

/// The periods offered, by their `period` value.
const PERIODS: [(&str, &str); 4] = [
    ("today", "Today"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("dates", "Dates"),
];
/// The splits offered, by their `by` value.
const SPLITS: [(&str, &str); 3] = [("channel", "Channel"), ("rule", "Rule"), ("step", "Journey step")];
/// The longest period a page covers.
const MAX_DAYS: i64 = 366;

#[derive(Deserialize, Default)]
pub(super) struct Ask {
    biller: Option<String>,
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    by: Option<String>,
}

fn parse_date(text: Option<&str>) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text?.trim(), format).ok()
}

/// The period asked for: `(period, from, to)`, both days included.
fn period(ask: &Ask, today: Date) -> (&'static str, Date, Date) {
    match ask.period.as_deref() {
        Some("today") => ("today", today, today),
        Some("30d") => ("30d", today - Duration::days(29), today),
        Some("dates") => {
            let to = parse_date(ask.to.as_deref()).unwrap_or(today);
            let from = parse_date(ask.from.as_deref())
                .unwrap_or(to - Duration::days(6))
                .min(to);
            ("dates", from.max(to - Duration::days(MAX_DAYS - 1)), to)
        }
        _ => ("7d", today - Duration::days(6), today),
    }
}

/// `GET /console/funnel?biller=&period=&from=&to=&by=`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Query(ask): Query<Ask>,
) -> Result<Response, AppError> {
    let billers = visible_billers(&state, &session);
    let biller = match (&ask.biller, session.biller()) {
        (Some(asked), _) if !billers.contains(asked) => return not_found(&session, "biller"),
        (Some(asked), _) => asked.clone(),
        (None, Some(own)) => own.to_owned(),
        (None, None) => match billers.first() {
            Some(first) => first.clone(),
            None => return not_found(&session, "biller"),
        },
    };
    let (period, from, to) = period(&ask, state.clock.today());
    let by = ask.by.as_deref().and_then(GroupBy::parse).unwrap_or(GroupBy::Channel);
    let query = StatsQuery {
        biller_id: biller.clone(),
        from,
        to,
        by: Some(by),
    };
    let stats = state.store.stats(&query).await?;
    let by_name = SPLITS
        .iter()
        .find(|(value, _)| GroupBy::parse(value) == Some(by))
        .map_or("channel", |(value, _)| value);
    let link = |period: &str, by: &str| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("biller", &biller)
            .append_pair("period", period)
            .append_pair("by", by);
        if period == "dates" {
            query
                .append_pair("from", &from.to_string())
                .append_pair("to", &to.to_string());
        }
        format!("/console/funnel?{}", query.finish())
    };
    let periods: Vec<Value> = PERIODS
        .iter()
        .map(|(value, label)| json!({"label": label, "href": link(value, by_name), "current": *value == period}))
        .collect();
    let splits: Vec<Value> = SPLITS
        .iter()
        .map(|(value, label)| json!({"label": label, "href": link(period, value), "current": *value == by_name}))
        .collect();
    let groups: Vec<Value> = stats
        .groups
        .iter()
        .map(|g| json!({"key": g.key, "funnel": funnel_view(&g.funnel)}))
        .collect();
    signed_in_page(
        &session,
        "funnel",
        "Funnel",
        json!({
            "biller": biller,
            "billers": billers.iter().map(|b| json!({"id": b, "selected": *b == biller})).collect::<Vec<_>>(),
            "choose_biller": billers.len() > 1,
            "period": period,
            "from": from.to_string(),
            "to": to.to_string(),
            "by": by_name,
            "periods": periods,
            "splits": splits,
            "funnel": funnel_view(&stats.funnel),
            "groups": groups,
            "chart": chart(&stats),
        }),
    )
}

/// A rate as a percentage with one decimal, or a dash.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// A duration in milliseconds, in days, hours and minutes.
fn duration(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

fn funnel_view(f: &Funnel) -> Value {
    let amounts: Vec<Value> = f
        .amounts
        .iter()
        .map(|a| json!({"currency": a.currency, "requested": a.requested, "paid": a.paid}))
        .collect();
    json!({
        "received": f.received,
        "sent": f.sent,
        "delivered": f.delivered,
        "opened": f.opened,
        "paid": f.paid,
        "sent_of_received": percent(f.rates.sent_of_received),
        "delivered_of_sent": percent(f.rates.delivered_of_sent),
        "opened_of_delivered": percent(f.rates.opened_of_delivered),
        "paid_of_opened": percent(f.rates.paid_of_opened),
        "paid_of_received": percent(f.rates.paid_of_received),
        "amounts": amounts,
        "median_to_payment": f.median_ms_to_payment.map(duration),
    })
}

/// The series the chart draws, each with its colour.
const SERIES: [(&str, &str); 3] = [("received", "#9fb3c8"), ("sent", "#486581"), ("paid", "#27ab83")];

/// The daily series as an inline SVG bar chart: per day, received, sent
/// and paid side by side, each bar titled with its figure (shown on
/// hover, no script). Only numbers and dates go in, so it is safe to
/// insert unescaped.
fn chart(stats: &Stats) -> String {
    let (width, height, left, bottom) = (900.0_f64, 220.0_f64, 40.0_f64, 24.0_f64);
    let days: &[DayStats] = &stats.daily;
    let value = |d: &DayStats, series: &str| match series {
        "received" => d.received,
        "sent" => d.sent,
        _ => d.paid,
    };
    let top = days
        .iter()
        .map(|d| d.received.max(d.sent).max(d.paid))
        .max()
        .unwrap_or(0)
        .max(1);
    let plot = height - bottom - 10.0;
    let slot = (width - left) / days.len().max(1) as f64;
    let bar = (slot / (SERIES.len() as f64 + 1.0)).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"invoices per day\" \
         viewBox=\"0 0 {width} {height}\" width=\"100%\" height=\"{height}\">\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{width}\" y2=\"{y0}\" stroke=\"#9aa5b1\"/>\
         <text x=\"{lx}\" y=\"16\" font-size=\"11\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx}\" y=\"{y0}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        y0 = height - bottom,
        lx = left - 4.0,
    );
    for (i, day) in days.iter().enumerate() {
        let x0 = left + i as f64 * slot + bar / 2.0;
        for (j, (series, colour)) in SERIES.iter().enumerate() {
            let n = value(day, series);
            let h = plot * n as f64 / top as f64;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{date}: {n} {series}</title></rect>",
                x = x0 + j as f64 * bar,
                y = height - bottom - h,
                date = day.day,
            ));
        }
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        svg.push_str(&format!(
            "<text x=\"{left}\" y=\"{y}\" font-size=\"11\">{}</text>\
             <text x=\"{width}\" y=\"{y}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            first.day,
            last.day,
            y = height - 6.0,
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, received: u64, sent: u64, paid: u64) -> DayStats {
        DayStats {
            day: day.into(),
            received,
            sent,
            delivered: sent,
            opened: paid,
            paid,
        }
    }

    #[test]
    fn the_chart_draws_three_bars_a_day_scaled_to_the_busiest() {
        let stats = Stats {
            biller_id: "acme".into(),
            from: "2026-11-01".into(),
            to: "2026-11-02".into(),
            funnel: Funnel::default(),
            by: None,
            groups: vec![],
            daily: vec![day("2026-11-01", 10, 8, 2), day("2026-11-02", 5, 5, 0)],
        };
        let svg = chart(&stats);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains("<title>2026-11-01: 10 received</title>"), "{svg}");
        // The busiest day's bar is the full plot height (220 - 24 - 10).
        assert!(
            svg.contains("height=\"186.0\" fill=\"#9fb3c8\"><title>2026-11-01"),
            "{svg}"
        );
        assert!(
            svg.contains("height=\"0.0\" fill=\"#27ab83\"><title>2026-11-02: 0 paid"),
            "{svg}"
        );
    }

    #[test]
    fn periods_end_today_and_dates_are_read_in_order() {
        let today = time::macros::date!(2026 - 11 - 20);
        let ask = |period: &str, from: Option<&str>, to: Option<&str>| Ask {
            period: Some(period.into()),
            from: from.map(Into::into),
            to: to.map(Into::into),
            ..Ask::default()
        };
        assert_eq!(period(&ask("today", None, None), today), ("today", today, today));
        assert_eq!(
            period(&ask("30d", None, None), today).1,
            time::macros::date!(2026 - 10 - 22)
        );
        let dates = period(&ask("dates", Some("2026-11-15"), Some("2026-11-01")), today);
        assert_eq!(
            (dates.1, dates.2),
            (time::macros::date!(2026 - 11 - 01), time::macros::date!(2026 - 11 - 01))
        );
        assert_eq!(period(&Ask::default(), today).1, time::macros::date!(2026 - 11 - 14));
    }

    #[test]
    fn durations_and_rates_read_as_people_write_them() {
        assert_eq!(duration(90 * 60_000), "1 h 30 min");
        assert_eq!(duration(26 * 3_600_000), "1 d 2 h");
        assert_eq!(percent(Some(0.4567)), "45.7 %");
        assert_eq!(percent(None), "–");
    }
}
