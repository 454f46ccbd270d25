//! `[channels.whatsapp]`: the WhatsApp Cloud API (`provider = "meta"`) or
//! JSON files (`provider = "file"`, the default), the approved template of
//! each message and how invoice fields fill their body parameters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::channels::meta::{self, GraphConfig};
use crate::channels::Limits;
use crate::domain::ChannelName;
use crate::render::{check_message_name, FIRST_TEMPLATE};
use crate::settings::{limits, read, secret, EnvLookup};
use crate::settings::{Problems, Secret};

/// The body parameters of the default `payment_request` template: who, how
/// much, by when.
pub const DEFAULT_PARAMETERS: [&str; 3] = [
    "{{customer.name}}",
    "{{amount.display}}",
    "{{invoice.due_date_display}}",
];

/// Where WhatsApp messages go.
#[derive(Debug, Clone)]
pub enum WhatsappProvider {
    /// The Cloud API, sending from one business phone number.
    Meta {
        graph: GraphConfig,
        /// The sending number's Graph id (digits), not the number itself.
        phone_number_id: String,
    },
    /// JSON files in a folder, for running without an account.
    File { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    pub provider: WhatsappProvider,
    /// The approved template of the first request (`payment_request`); a
    /// biller's `whatsapp_template` wins.
    pub template: String,
    /// The approved templates of the other messages (`templates`), by
    /// message template name. A message with none is not sent on WhatsApp:
    /// only an approved template can reach a customer there, and sending
    /// `payment_request`'s instead would say the wrong thing.
    pub templates: BTreeMap<String, String>,
    /// A fixed template language (`es_MX`); `None` derives it from the
    /// customer's locale, since a template is approved per language.
    pub language: Option<String>,
    /// Handlebars snippets, one per body parameter, in the template's order;
    /// a biller's `whatsapp_parameters` win.
    pub parameters: Vec<String>,
    pub limits: Limits,
    /// The `app_secret`: the key of `X-Hub-Signature-256` on status webhooks.
    pub webhook_secret: Option<Secret>,
    /// Meta's webhook handshake token.
    pub verify_token: Option<Secret>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    provider: Option<String>,
    base_url: Option<String>,
    phone_number_id: Option<GraphId>,
    access_token: Option<String>,
    template: Option<String>,
    templates: Option<BTreeMap<String, String>>,
    language: Option<String>,
    parameters: Option<Vec<String>>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    rate_per_second: Option<f64>,
    burst: Option<u32>,
    timeout: Option<String>,
    outbox_dir: Option<String>,
}

/// Graph ids are digit strings; written unquoted in TOML they are numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum GraphId {
    Text(String),
    Number(u64),
}

impl WhatsappConfig {
    pub(crate) fn check(
        value: Value,
        prefix: &str,
        base_dir: &Path,
        env: EnvLookup<'_>,
        problems: &mut Problems,
    ) -> Option<WhatsappConfig> {
        let raw: Raw = read(value, prefix, problems)?;
        let key = |k: &str| format!("{prefix}.{k}");
        let limits = limits(prefix, raw.rate_per_second, raw.burst, 80.0, problems);

        let mut templates = raw.templates.unwrap_or_default();
        for (message, approved) in &templates {
            let at = key(&format!("templates.{message}"));
            if let Err(e) = check_message_name(message) {
                problems.push(at, e);
            } else if let Err(e) = check_template_name(approved) {
                problems.push(at, e);
            }
        }
        // `template` stays payment_request's; the map may name it too, once.
        let first = templates.remove(FIRST_TEMPLATE);
        let template = match (raw.template, first) {
            (Some(t), Some(m)) if t != m => {
                problems.push(
                    key(&format!("templates.{FIRST_TEMPLATE}")),
                    format!("\"{m}\" differs from template = \"{t}\"; give {FIRST_TEMPLATE}'s approved template once"),
                );
                t
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => FIRST_TEMPLATE.to_owned(),
        };
        if let Err(e) = check_template_name(&template) {
            problems.push(key("template"), e);
        }
        if let Some(language) = &raw.language {
            if !is_language_code(language) {
                problems.push(
                    key("language"),
                    format!("\"{language}\" is not a WhatsApp language code like \"en\" or \"es_MX\""),
                );
            }
        }
        let parameters = raw
            .parameters
            .unwrap_or_else(|| DEFAULT_PARAMETERS.map(str::to_owned).to_vec());
        for (i, snippet) in parameters.iter().enumerate() {
            if let Err(e) = check_parameter_snippet(snippet) {
                problems.push(key(&format!("parameters[{i}]")), e);
            }
        }
        let webhook_secret = secret(&key("app_secret"), raw.app_secret, env, problems);
        let verify_token = secret(&key("verify_token"), raw.verify_token, env, problems);

        let provider = match meta::provider_is_meta(prefix, raw.provider.as_deref(), problems)? {
            true => {
                let phone_number_id = match raw.phone_number_id.map(|id| match id {
                    GraphId::Text(t) => t.trim().to_owned(),
                    GraphId::Number(n) => n.to_string(),
                }) {
                    Some(id) if is_graph_id(&id) => Some(id),
                    Some(id) => {
                        problems.push(
                            key("phone_number_id"),
                            format!("\"{id}\" is not a phone number id (digits, from the WhatsApp Manager)"),
                        );
                        None
                    }
                    None => {
                        problems.push(key("phone_number_id"), "is required when provider = \"meta\"");
                        None
                    }
                };
                let graph = GraphConfig::check(
                    prefix,
                    raw.base_url.as_deref(),
                    ("access_token", raw.access_token),
                    raw.timeout.as_deref(),
                    env,
                    problems,
                );
                WhatsappProvider::Meta {
                    graph: graph?,
                    phone_number_id: phone_number_id?,
                }
            }
            false => WhatsappProvider::File {
                dir: meta::outbox_dir(base_dir, raw.outbox_dir.as_deref(), ChannelName::Whatsapp),
            },
        };
        Some(WhatsappConfig {
            provider,
            template,
            templates,
            language: raw.language,
            parameters,
            limits,
            webhook_secret,
            verify_token,
        })
    }
}

impl WhatsappConfig {
    /// The approved WhatsApp template that carries message `template`
    /// (`payment_request`, `reminder`, ...); `None` when none is mapped, and
    /// the message cannot go out on WhatsApp. A biller's
    /// `whatsapp_template` replaces `payment_request`'s only.
    pub fn approved(&self, template: &str) -> Option<&str> {
        if template == FIRST_TEMPLATE {
            Some(&self.template)
        } else {
            self.templates.get(template).map(String::as_str)
        }
    }
}

/// Template names are what WhatsApp Manager allows: lowercase letters,
/// digits and underscores, at most 512. Public so a biller's
/// `whatsapp_template` can be checked the same way.
pub fn check_template_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a template name (lowercase letters, digits and _)"
        ))
    }
}

/// WhatsApp's language codes: a language (2-3 lowercase letters) with an
/// optional `_REGION` (`en`, `es_MX`, `fil`, `zh_TW`).
fn is_language_code(code: &str) -> bool {
    let (language, region) = match code.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (code, None),
    };
    (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Graph ids are numeric; anything else would also change the request path.
fn is_graph_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

/// A parameter snippet must compile, so a typo is found by `payrelay check`
/// and not by the first invoice. Public so a biller's `whatsapp_parameters`
/// can be checked the same way.
pub fn check_parameter_snippet(snippet: &str) -> Result<(), String> {
    if snippet.trim().is_empty() {
        return Err("is empty; WhatsApp refuses empty parameters".to_owned());
    }
    handlebars::Template::compile(snippet)
        .map(|_| ())
        .map_err(|e| format!("is not a valid handlebars snippet: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Problem};

    const MINIMAL: &str = r#"
[billers.acme]
checkout_url = "https://pay.example/c?inv={invoice_id}"

[channels.email]
transport = "file"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "WHATSAPP_TOKEN" => Some("EAAG-token".into()),
            "META_APP_SECRET" => Some("app-secret".into()),
            "META_VERIFY_TOKEN" => Some("verify-me".into()),
            _ => None,
        }
    }

    fn load(section: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml(
            &format!("{MINIMAL}\n[channels.whatsapp]\n{section}"),
            Path::new("/etc/payrelay"),
            &env,
        )
    }

    fn whatsapp(section: &str) -> WhatsappConfig {
        match load(section) {
            Ok(c) => c.channels.whatsapp.expect("whatsapp configured"),
            Err(p) => panic!("refused: {p:#?}"),
        }
    }

    fn problem_keys(section: &str) -> BTreeSet<String> {
        match load(section) {
            Ok(c) => panic!("accepted: {c:#?}"),
            Err(p) => p.into_iter().map(|p| p.key).collect(),
        }
    }

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| format!("channels.whatsapp.{k}")).collect()
    }

    #[test]
    fn an_empty_section_is_the_file_provider_with_the_documented_defaults() {
        let c = whatsapp("");
        assert!(
            matches!(&c.provider, WhatsappProvider::File { dir } if dir == Path::new("/etc/payrelay/var/outbox/whatsapp"))
        );
        assert_eq!(c.template, "payment_request");
        assert_eq!(c.language, None);
        assert_eq!(c.parameters, DEFAULT_PARAMETERS.map(str::to_owned).to_vec());
        assert_eq!(c.limits.rate_per_second, 80.0);
        assert_eq!(c.limits.burst.get(), 80);
        assert!(c.webhook_secret.is_none() && c.verify_token.is_none());
    }

    #[test]
    fn the_meta_provider_reads_every_key() {
        let c = whatsapp(
            r#"
provider = "meta"
base_url = "http://127.0.0.1:9999/v21.0"
phone_number_id = "106540352242922"
access_token = "env:WHATSAPP_TOKEN"
template = "factura_pendiente"
language = "es_MX"
parameters = ["{{customer.name}}", "{{invoice.id}}"]
app_secret = "env:META_APP_SECRET"
verify_token = "env:META_VERIFY_TOKEN"
rate_per_second = 20
burst = 5
timeout = "3s"
"#,
        );
        let WhatsappProvider::Meta { graph, phone_number_id } = &c.provider else {
            panic!("not meta: {c:?}");
        };
        assert_eq!(graph.base_url.as_str(), "http://127.0.0.1:9999/v21.0");
        assert_eq!(graph.access_token.expose(), "EAAG-token");
        assert_eq!(graph.timeout, Duration::from_secs(3));
        assert_eq!(phone_number_id, "106540352242922");
        assert_eq!(c.template, "factura_pendiente");
        assert_eq!(c.language.as_deref(), Some("es_MX"));
        assert_eq!(c.parameters, vec!["{{customer.name}}", "{{invoice.id}}"]);
        assert_eq!(c.webhook_secret.as_ref().map(Secret::expose), Some("app-secret"));
        assert_eq!(c.verify_token.as_ref().map(Secret::expose), Some("verify-me"));
        assert_eq!((c.limits.rate_per_second, c.limits.burst.get()), (20.0, 5));
        assert!(!format!("{c:?}").contains("EAAG-token"), "the token never prints");
    }

    #[test]
    fn meta_defaults_to_the_graph_url_and_ten_seconds() {
        let c = whatsapp("provider = \"meta\"\nphone_number_id = \"1\"\naccess_token = \"literal\"");
        let WhatsappProvider::Meta { graph, .. } = &c.provider else {
            panic!("not meta");
        };
        assert_eq!(graph.base_url.as_str(), "https://graph.facebook.com/v21.0");
        assert_eq!(graph.timeout, Duration::from_secs(10));
    }

    #[test]
    fn meta_without_its_required_keys_lists_each() {
        assert_eq!(
            problem_keys("provider = \"meta\""),
            keys(&["phone_number_id", "access_token"])
        );
    }

    #[test]
    fn each_mistake_is_reported_under_its_key() {
        let meta = "provider = \"meta\"\nphone_number_id = \"106540352242922\"\n";
        let cases: &[(&str, &str, &[&str])] = &[
            ("unknown provider", "provider = \"twilio\"", &["provider"]),
            ("typo", "templte = \"x\"", &["templte"]),
            (
                "template with capitals",
                "template = \"Payment Request\"",
                &["template"],
            ),
            ("empty template", "template = \"\"", &["template"]),
            ("language with a dash", "language = \"es-MX\"", &["language"]),
            (
                "parameter that does not compile",
                "parameters = [\"{{customer.name\"]",
                &["parameters[0]"],
            ),
            ("empty parameter", "parameters = [\"ok\", \" \"]", &["parameters[1]"]),
            (
                "parameters not a list",
                "parameters = \"{{customer.name}}\"",
                &["parameters"],
            ),
            ("unset app secret", "app_secret = \"env:NOPE\"", &["app_secret"]),
            ("unset verify token", "verify_token = \"env:NOPE\"", &["verify_token"]),
            ("zero rate", "rate_per_second = 0", &["rate_per_second"]),
            ("zero burst", "burst = 0", &["burst"]),
        ];
        for (what, section, expected) in cases {
            assert_eq!(problem_keys(section), keys(expected), "{what}");
        }
        let meta_cases: &[(&str, &str, &[&str])] = &[
            ("unset token", "access_token = \"env:NOPE\"", &["access_token"]),
            (
                "base_url not http",
                "access_token = \"t\"\nbase_url = \"ftp://graph\"",
                &["base_url"],
            ),
            (
                "base_url not a URL",
                "access_token = \"t\"\nbase_url = \"graph.facebook.com\"",
                &["base_url"],
            ),
            (
                "base_url with a query",
                "access_token = \"t\"\nbase_url = \"https://graph.facebook.com/v21.0?access_token=x\"",
                &["base_url"],
            ),
            ("bad timeout", "access_token = \"t\"\ntimeout = \"soon\"", &["timeout"]),
            ("zero timeout", "access_token = \"t\"\ntimeout = \"0s\"", &["timeout"]),
        ];
        for (what, extra, expected) in meta_cases {
            assert_eq!(problem_keys(&format!("{meta}{extra}")), keys(expected), "{what}");
        }
        let unquoted = whatsapp("provider = \"meta\"\nphone_number_id = 106540352242922\naccess_token = \"t\"");
        assert!(
            matches!(unquoted.provider, WhatsappProvider::Meta { phone_number_id, .. } if phone_number_id == "106540352242922")
        );
        let bad_id = "provider = \"meta\"\nphone_number_id = \"+1 555\"\naccess_token = \"t\"";
        assert_eq!(problem_keys(bad_id), keys(&["phone_number_id"]));
        let empty_token = "provider = \"meta\"\nphone_number_id = \"1\"\naccess_token = \"\"";
        assert_eq!(problem_keys(empty_token), keys(&["access_token"]));
    }

    #[test]
    fn templates_map_each_message_to_an_approved_template() {
        let c = whatsapp(
            "templates = { reminder = \"payment_reminder\", overdue = \"payment_overdue\", final_notice = \"payment_final\" }",
        );
        assert_eq!(c.approved("payment_request"), Some("payment_request"));
        assert_eq!(c.approved("reminder"), Some("payment_reminder"));
        assert_eq!(c.approved("overdue"), Some("payment_overdue"));
        assert_eq!(c.approved("final_notice"), Some("payment_final"));
        assert_eq!(c.approved("second_reminder"), None);

        let c = whatsapp("template = \"factura\"");
        assert_eq!(c.approved("payment_request"), Some("factura"));
        assert_eq!(c.approved("reminder"), None, "no default for the others");
        let c = whatsapp("templates = { payment_request = \"factura\" }");
        assert_eq!(
            (c.template.as_str(), c.approved("payment_request")),
            ("factura", Some("factura"))
        );
        assert!(c.templates.is_empty(), "payment_request's lives in `template`");
        let same = whatsapp("template = \"factura\"\ntemplates = { payment_request = \"factura\" }");
        assert_eq!(same.approved("payment_request"), Some("factura"));

        let cases: &[(&str, &str, &[&str])] = &[
            (
                "approved name with capitals",
                "templates = { reminder = \"Payment Reminder\" }",
                &["templates.reminder"],
            ),
            (
                "empty approved name",
                "templates = { reminder = \"\" }",
                &["templates.reminder"],
            ),
            (
                "message name not one",
                "templates = { Final-Notice = \"payment_final\" }",
                &["templates.Final-Notice"],
            ),
            (
                "message name a channel",
                "templates = { sms = \"payment_sms\" }",
                &["templates.sms"],
            ),
            ("not a table", "templates = \"payment_reminder\"", &["templates"]),
            ("not a string", "templates = { reminder = 3 }", &["templates.reminder"]),
            (
                "payment_request given twice, differently",
                "template = \"factura\"\ntemplates = { payment_request = \"otra\" }",
                &["templates.payment_request"],
            ),
        ];
        for (what, section, expected) in cases {
            assert_eq!(problem_keys(section), keys(expected), "{what}");
        }
    }

    #[test]
    fn the_file_provider_ignores_the_meta_credentials() {
        // An unset token env var must not block running with files.
        let c = whatsapp("provider = \"file\"\naccess_token = \"env:NOPE\"\noutbox_dir = \"/tmp/wa\"");
        assert!(matches!(&c.provider, WhatsappProvider::File { dir } if dir == Path::new("/tmp/wa")));
    }

    #[test]
    fn language_codes() {
        for ok in ["en", "es_MX", "pt_BR", "fil", "zh_CN"] {
            assert!(is_language_code(ok), "{ok}");
        }
        for bad in ["", "EN", "es-MX", "es_mx", "es_", "english", "es_MEX"] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
