//! The `[routing]` section as TOML text and back, for the console's rules
//! page: it shows the section in force as text to edit, and a dry run
//! checks the edited text against the rest of the loaded config (its
//! channels, billers and journeys) exactly as `payrelay check` would.

use serde_json::Value;

use super::{raw, Config, JourneyChoice, Problem, Problems, RoutingConfig};
use crate::domain::ChannelName;

impl Config {
    /// This config with `[routing]` replaced by the one in `text` (a TOML
    /// document holding only a `[routing]` section, as in config.toml), or
    /// every problem found in it, each with its key.
    pub fn with_routing(&self, text: &str) -> Result<Config, Vec<Problem>> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            vec![Problem {
                key: String::new(),
                message: format!("not valid TOML: {e}"),
            }]
        })?;
        let mut problems = Problems::default();
        let mut routing = Value::Object(Default::default());
        for (key, value) in table {
            if key == "routing" {
                routing = serde_json::to_value(value).map_err(|e| {
                    vec![Problem {
                        key: "routing".into(),
                        message: e.to_string(),
                    }]
                })?;
            } else {
                problems.push(
                    key,
                    "only the [routing] section is read here: start the text with [routing]",
                );
            }
        }
        let declared: Vec<ChannelName> = ChannelName::ALL
            .into_iter()
            .filter(|c| self.channels.is_configured(*c))
            .collect();
        let journeys: Vec<String> = self.journeys.keys().cloned().collect();
        let routing = raw::check_routing(routing, &declared, &self.billers, &journeys, &mut problems);
        if problems.0.is_empty() {
            Ok(Config {
                routing,
                ..self.clone()
            })
        } else {
            Err(problems.0)
        }
    }
}

impl RoutingConfig {
    /// The section as config.toml would write it: what
    /// [`Config::with_routing`] reads back to the same routing.
    pub fn to_toml(&self) -> String {
        let mut section = toml::Table::new();
        let names = |channels: &[ChannelName]| -> toml::Value {
            channels
                .iter()
                .map(|c| toml::Value::from(c.as_str()))
                .collect::<Vec<_>>()
                .into()
        };
        let strings = |list: &[String]| -> toml::Value {
            list.iter()
                .map(|s| toml::Value::from(s.as_str()))
                .collect::<Vec<_>>()
                .into()
        };
        section.insert("default".into(), names(&self.default));
        section.insert("default_strategy".into(), self.default_strategy.to_string().into());
        section.insert("respect_preferences".into(), self.respect_preferences.into());
        if let Some(quiet) = &self.quiet_hours {
            section.insert("quiet_hours".into(), quiet.to_string().into());
        }
        if let Some(journey) = &self.journey {
            section.insert("journey".into(), journey.as_str().into());
        }
        if let Some(cap) = self.max_messages_per_customer_per_day {
            section.insert("max_messages_per_customer_per_day".into(), i64::from(cap.get()).into());
        }
        section.insert(
            "retry_for".into(),
            humantime::format_duration(self.retry_for).to_string().into(),
        );
        let rules: Vec<toml::Value> = self
            .rules
            .iter()
            .map(|rule| {
                let mut t = toml::Table::new();
                t.insert("name".into(), rule.name.as_str().into());
                for (key, list) in [
                    ("biller", &rule.biller),
                    ("source", &rule.source),
                    ("currency", &rule.currency),
                    ("country", &rule.country),
                    ("locale", &rule.locale),
                ] {
                    if let Some(list) = list {
                        t.insert(key.into(), strings(list));
                    }
                }
                if let Some(min) = rule.min_amount {
                    t.insert("min_amount".into(), min.into());
                }
                if let Some(max) = rule.max_amount {
                    t.insert("max_amount".into(), max.into());
                }
                if let Some(days) = rule.days_to_due {
                    let mut d = toml::Table::new();
                    if let Some(min) = days.min {
                        d.insert("min".into(), min.into());
                    }
                    if let Some(max) = days.max {
                        d.insert("max".into(), max.into());
                    }
                    t.insert("days_to_due".into(), d.into());
                }
                t.insert("channels".into(), names(&rule.channels));
                t.insert("strategy".into(), rule.strategy.to_string().into());
                match &rule.journey {
                    Some(JourneyChoice::Named(name)) => {
                        t.insert("journey".into(), name.as_str().into());
                    }
                    Some(JourneyChoice::None) => {
                        t.insert("journey".into(), raw::NO_JOURNEY.into());
                    }
                    None => {}
                }
                t.into()
            })
            .collect();
        if !rules.is_empty() {
            section.insert("rules".into(), rules.into());
        }
        let mut document = toml::Table::new();
        document.insert("routing".into(), section.into());
        // A table of plain values always serializes.
        toml::to_string(&document).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        let toml = r#"
[billers.acme]
checkout_url = "https://a.example/{token}"
[channels.email]
transport = "file"
[channels.sms]
provider = "file"
[journeys.standard]
steps = [{ name = "soon", due = "-3d" }]
[routing]
default = ["email", "sms"]
quiet_hours = "21:00-08:00"
journey = "standard"
max_messages_per_customer_per_day = 3
retry_for = "12h"
[[routing.rules]]
name = "big MXN by SMS"
biller = "acme"
currency = ["MXN"]
min_amount = 1000.5
days_to_due = { max = -1 }
channels = ["sms", "email"]
strategy = "all"
journey = "none"
"#;
        Config::from_toml(toml, Path::new("/srv/payrelay"), &|_| None).unwrap()
    }

    #[test]
    fn the_section_written_as_text_reads_back_to_the_same_routing() {
        let config = config();
        let text = config.routing.to_toml();
        assert!(text.starts_with("[routing]"), "{text}");
        let again = config.with_routing(&text).unwrap();
        assert_eq!(format!("{:?}", again.routing), format!("{:?}", config.routing));
    }

    #[test]
    fn an_edited_section_replaces_only_the_routing() {
        let config = config();
        let edited = config
            .with_routing("[routing]\ndefault = [\"sms\"]\n[[routing.rules]]\nname = \"x\"\nchannels = [\"email\"]\n")
            .unwrap();
        assert_eq!(edited.routing.default, [ChannelName::Sms]);
        assert_eq!(edited.routing.rules.len(), 1);
        assert_eq!(edited.routing.journey, None);
        assert_eq!(edited.billers.len(), config.billers.len());
    }

    #[test]
    fn every_problem_of_an_edited_section_is_listed_with_its_key() {
        let problems = config()
            .with_routing(
                "[routing]\ndefault = [\"whatsapp\"]\n[[routing.rules]]\nbiller = \"globex\"\nchannels = [\"email\"]\n[http]\nlisten = \"x\"\n",
            )
            .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"routing.default"), "{problems:?}");
        assert!(keys.contains(&"routing.rules[0].biller"), "{problems:?}");
        assert!(keys.contains(&"http"), "{problems:?}");
        assert!(config().with_routing("[routing\n").unwrap_err()[0]
            .message
            .starts_with("not valid TOML"));
    }
}
