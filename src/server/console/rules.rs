//! The rules page: the routing rules and journeys in force (from the loaded
//! config), and a dry run of an edited `[routing]` section over the
//! invoices stored in a period, which prints the report `payrelay route
//! --replay` prints ([`crate::router::replay_stored`]). Nothing is changed:
//! deploying the section is a config change, as always.
//!
//! A biller's session sees the rules that can route its invoices (a rule
//! naming several billers shows only its own), edits only those, and runs
//! the dry run over its own invoices.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use time::{Date, Duration};

use super::session::{form_field, Session};
use super::{signed_in_page, visible_billers};
use crate::config::{Config, JourneyChoice, RoutingConfig, StepTime};
use crate::domain::ChannelName;
use crate::invoice::Invoice;
use crate::server::{AppError, AppState};

/// The most invoices one dry run routes (a period holding more routes
/// the oldest this many, and says so).
const MAX_INVOICES: u32 = 10_000;
/// How many changed invoices and skipped ones the report lists.
const REPORT_LIMIT: usize = 50;
/// The period a dry run covers unless told otherwise: the last 7 days.
const DEFAULT_DAYS: i64 = 7;
/// The longest edited section read.
const MAX_TEXT: usize = 64 * 1024;

/// The routing a session sees: every rule for the admin; for a biller,
/// the rules that can route its invoices, each naming only that biller.
fn visible_routing(config: &Config, session: &Session) -> RoutingConfig {
    let mut routing = config.routing.clone();
    if let Some(own) = session.biller() {
        routing
            .rules
            .retain(|r| r.biller.as_ref().is_none_or(|b| b.iter().any(|id| id == own)));
        for rule in &mut routing.rules {
            if rule.biller.is_some() {
                rule.biller = Some(vec![own.to_owned()]);
            }
        }
    }
    routing
}

fn channels(list: &[ChannelName]) -> String {
    list.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

/// The rules and journeys as the page lists them.
fn in_force(config: &Config, routing: &RoutingConfig) -> Value {
    let rules: Vec<Value> = routing
        .rules
        .iter()
        .map(|r| {
            let mut when = Vec::new();
            for (key, list) in [
                ("biller", &r.biller),
                ("source", &r.source),
                ("currency", &r.currency),
                ("country", &r.country),
                ("locale", &r.locale),
            ] {
                if let Some(list) = list {
                    when.push(format!("{key} {}", list.join(" or ")));
                }
            }
            if let Some(min) = r.min_amount {
                when.push(format!("amount ≥ {min}"));
            }
            if let Some(max) = r.max_amount {
                when.push(format!("amount ≤ {max}"));
            }
            if let Some(days) = r.days_to_due {
                match (days.min, days.max) {
                    (Some(lo), Some(hi)) => when.push(format!("{lo} to {hi} days to due")),
                    (Some(lo), None) => when.push(format!("at least {lo} days to due")),
                    (None, Some(hi)) => when.push(format!("at most {hi} days to due")),
                    (None, None) => {}
                }
            }
            json!({
                "name": r.name,
                "when": if when.is_empty() { "always".to_owned() } else { when.join("; ") },
                "channels": channels(&r.channels),
                "strategy": r.strategy.to_string(),
                "journey": match &r.journey {
                    Some(JourneyChoice::Named(name)) => name.clone(),
                    Some(JourneyChoice::None) => "none".to_owned(),
                    None => "the biller's, else [routing] journey".to_owned(),
                },
            })
        })
        .collect();
    let journeys: Vec<Value> = config
        .journeys
        .values()
        .map(|j| {
            let steps: Vec<Value> = j
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "when": match s.when {
                            StepTime::Due { days: 0 } => "on the due date".to_owned(),
                            StepTime::Due { days } if days < 0 => format!("{} days before the due date", -days),
                            StepTime::Due { days } => format!("{days} days after the due date"),
                            StepTime::After(d) => format!("{} after the previous message", humantime::format_duration(d)),
                        },
                        "channels": s.channels.as_deref().map_or_else(|| "the first request's".to_owned(), channels),
                        "strategy": s.strategy.to_string(),
                        "template": s.template.clone().unwrap_or_else(|| "reminder, or overdue after the due date".to_owned()),
                    })
                })
                .collect();
            json!({
                "name": j.name,
                "send_at": j.send_at.strftime("%H:%M").to_string(),
                "escalate_after": j.escalate_after.map(|d| humantime::format_duration(d).to_string()),
                "steps": steps,
            })
        })
        .collect();
    json!({
        "default": channels(&routing.default),
        "default_strategy": routing.default_strategy.to_string(),
        "journey": routing.journey,
        "rules": rules,
        "journeys": journeys,
    })
}

/// The page's data: what is in force, and the dry-run form as given.
fn view(state: &AppState, session: &Session, text: &str, from: Date, to: Date) -> Value {
    let routing = visible_routing(&state.config, session);
    json!({
        "in_force": in_force(&state.config, &routing),
        "text": text,
        "from": from.to_string(),
        "to": to.to_string(),
        "max_invoices": MAX_INVOICES,
    })
}

/// `GET /console/rules`.
pub(super) async fn show(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    let today = state.clock.today();
    let text = visible_routing(&state.config, &session).to_toml();
    let data = view(&state, &session, &text, today - Duration::days(DEFAULT_DAYS - 1), today);
    signed_in_page(&session, "rules", "Rules", data)
}

/// `POST /console/rules/dry-run`: fields `routing` (the edited section),
/// `from` and `to` (dates, UTC, both included) and `csrf`.
pub(super) async fn dry_run(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if let Some(refused) = session.refuse_form(&state, &headers, &body) {
        return Ok(refused);
    }
    let today = state.clock.today();
    let text: String = form_field(&body, "routing")
        .unwrap_or_default()
        .chars()
        .take(MAX_TEXT)
        .collect();
    let date = |name: &str, default: Date| {
        form_field(&body, name)
            .and_then(|d| Date::parse(d.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok())
            .unwrap_or(default)
    };
    let from = date("from", today - Duration::days(DEFAULT_DAYS - 1));
    let to = date("to", today).max(from);
    let mut data = view(&state, &session, &text, from, to);
    let new = match edited_config(&state.config, &session, &text) {
        Ok(new) => new,
        Err(problems) => {
            data["problems"] = problems.into();
            return signed_in_page(&session, "rules", "Rules: dry run", data);
        }
    };
    let start_ms = from.midnight().assume_utc().unix_timestamp() * 1000;
    let end_ms = (to + Duration::days(1)).midnight().assume_utc().unix_timestamp() * 1000;
    // Each biller's through the index on (biller, arrival), then the
    // oldest of them all.
    let mut found = Vec::new();
    for biller in visible_billers(&state, &session) {
        found.extend(
            state
                .store
                .invoices_received(&biller, start_ms, end_ms, MAX_INVOICES)
                .await?,
        );
    }
    found.sort_by_key(|f| f.received_ms);
    found.truncate(MAX_INVOICES as usize);
    let invoices: Vec<Invoice> = found.into_iter().map(|f| f.invoice).collect();
    let replay = crate::router::replay_stored(&invoices, &state.config, &new, today);
    data["report"] = json!({
        "text": replay.report(REPORT_LIMIT),
        "invoices": invoices.len(),
        "capped": invoices.len() as u32 >= MAX_INVOICES,
        "today": today.to_string(),
    });
    signed_in_page(&session, "rules", "Rules: dry run", data)
}

/// The loaded config with the edited section, or every problem with its
/// key. A biller's section may name only that biller.
fn edited_config(config: &Config, session: &Session, text: &str) -> Result<Config, Vec<String>> {
    if let Some(own) = session.biller() {
        let others = named_billers(text).into_iter().filter(|b| b != own).collect::<Vec<_>>();
        if !others.is_empty() {
            return Err(vec![format!(
                "routing.rules: a rule here may name only biller \"{own}\" (found {})",
                others.join(", ")
            )]);
        }
    }
    config
        .with_routing(text)
        .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

/// Every biller the rules of a `[routing]` text name.
fn named_billers(text: &str) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let rules = table
        .get("routing")
        .and_then(|r| r.get("rules"))
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names = Vec::new();
    for rule in rules {
        match rule.get("biller") {
            Some(toml::Value::String(one)) => names.push(one.clone()),
            Some(toml::Value::Array(many)) => names.extend(many.iter().filter_map(|v| v.as_str().map(str::to_owned))),
            _ => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_billers_a_section_names_are_read_from_each_rule() {
        let text = "[routing]\n[[routing.rules]]\nbiller = \"acme\"\nchannels = [\"email\"]\n\
                    [[routing.rules]]\nbiller = [\"beta\", \"gamma\"]\nchannels = [\"email\"]\n";
        assert_eq!(super::named_billers(text), ["acme", "beta", "gamma"]);
        assert!(super::named_billers("not toml [").is_empty());
    }
}
