//! WhatsApp through the Cloud API (or JSON files with `provider = "file"`).
//!
//! Outside the 24-hour customer-service window a business may only send
//! approved templates, so every message is a template message: the
//! approved template mapped to the view's message template (`template` for
//! `payment_request`, `templates` for the others; a message with none
//! mapped is refused, never sent as another), body parameters rendered
//! from handlebars snippets (the channel's, or for `payment_request` the
//! biller's own mapping), and a URL button whose suffix is the pay token
//! (the template's button URL is `{public_base_url}/p/`). The template's
//! language comes from `language` or from the customer's locale. `prepare`
//! makes a `TemplateMessage`; `wire.rs` turns it into the Cloud API's body.
//! Delivery statuses arrive on Meta's shared webhook under this channel's
//! `object`.

mod config;
mod wire;

pub use config::{check_parameter_snippet, check_template_name, WhatsappConfig, WhatsappProvider, DEFAULT_PARAMETERS};

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_trait::async_trait;

use super::meta::{GraphClient, GraphWebhook};
use super::outbox::FileOutbox;
use super::webhook::Webhook;
use super::{
    Adapter, BuildContext, BuildError, Built, Channel, ChannelMessage, Prepared, Providers, Receipt, Request, SendError,
};
use crate::channels::ChannelsConfig;
use crate::domain::ChannelName;
use crate::render::{RenderError, Templates, FIRST_TEMPLATE};

/// The `object` Meta names WhatsApp Business Account webhooks with.
const WEBHOOK_OBJECT: &str = "whatsapp_business_account";

pub(super) const ADAPTER: Adapter = Adapter {
    name: ChannelName::Whatsapp,
    build,
    webhook: Some(webhook),
};

fn build(
    config: &ChannelsConfig,
    context: &BuildContext,
    providers: Providers<'_>,
) -> Option<Result<Built, BuildError>> {
    let whatsapp = config.whatsapp.as_ref()?;
    let channel = match providers.files_for(ChannelName::Whatsapp) {
        None => WhatsappChannel::new(whatsapp, context),
        Some(dir) => WhatsappChannel::new(
            &WhatsappConfig {
                provider: WhatsappProvider::File { dir },
                ..whatsapp.clone()
            },
            context,
        ),
    };
    Some(channel.map(|c| Built::new(c, &whatsapp.limits)))
}

fn webhook(config: &ChannelsConfig, _: &BuildContext) -> Box<dyn Webhook> {
    let whatsapp = config.whatsapp.as_ref();
    Box::new(GraphWebhook {
        channel: ChannelName::Whatsapp,
        object: WEBHOOK_OBJECT,
        app_secret: whatsapp.and_then(|c| c.webhook_secret.clone()),
        verify_token: whatsapp.and_then(|c| c.verify_token.clone()),
    })
}

/// A message as a template message, rendered.
#[derive(Debug, Clone)]
struct TemplateMessage {
    template: String,
    /// WhatsApp's code, e.g. `es_MX`.
    language: String,
    /// The body's parameters, each on one line.
    parameters: Vec<String>,
    /// The pay token, which WhatsApp appends to the button's URL.
    button: String,
}

impl ChannelMessage for TemplateMessage {
    /// `parameters` shows as a JSON list of strings.
    fn parts(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let parameters = serde_json::to_string(&self.parameters).unwrap_or_default();
        vec![
            ("template", Cow::Borrowed(self.template.as_str())),
            ("language", Cow::Borrowed(self.language.as_str())),
            ("parameters", Cow::Owned(parameters)),
            ("button", Cow::Borrowed(self.button.as_str())),
        ]
    }
}

enum Sender {
    Graph {
        client: GraphClient,
        /// `{phone_number_id}/messages`.
        path: String,
    },
    File(FileOutbox),
}

pub struct WhatsappChannel {
    /// Approved template by message template, `payment_request`'s included
    /// (see [`WhatsappConfig::approved`]).
    templates: BTreeMap<String, String>,
    language: Option<String>,
    parameters: Vec<String>,
    sender: Sender,
}

impl WhatsappChannel {
    pub fn new(config: &WhatsappConfig, _context: &BuildContext) -> Result<WhatsappChannel, BuildError> {
        let sender = match &config.provider {
            WhatsappProvider::Meta { graph, phone_number_id } => Sender::Graph {
                client: GraphClient::new(ChannelName::Whatsapp, graph)?,
                path: format!("{phone_number_id}/messages"),
            },
            WhatsappProvider::File { dir } => Sender::File(FileOutbox::new(ChannelName::Whatsapp, dir)?),
        };
        let mut templates = config.templates.clone();
        templates.insert(FIRST_TEMPLATE.to_owned(), config.template.clone());
        Ok(WhatsappChannel {
            templates,
            language: config.language.clone(),
            parameters: config.parameters.clone(),
            sender,
        })
    }
}

#[async_trait]
impl Channel for WhatsappChannel {
    fn name(&self) -> ChannelName {
        ChannelName::Whatsapp
    }

    fn prepare(&self, request: &Request<'_>, templates: &Templates) -> Result<Prepared, RenderError> {
        let biller = request.biller;
        let message = request.view.template;
        // A biller's own template and parameters are its payment_request's.
        let first = message == FIRST_TEMPLATE;
        let own_template = biller.whatsapp_template.as_deref().filter(|_| first);
        let Some(template) = own_template.or_else(|| self.templates.get(message).map(String::as_str)) else {
            return Err(RenderError::Failed {
                name: format!("{message} on whatsapp"),
                reason: format!(
                    "no approved WhatsApp template is mapped to the {message} message; \
                     add one to [channels.whatsapp] templates ({message} = \"<approved name>\")"
                ),
            });
        };
        let own_parameters = biller.whatsapp_parameters.as_deref().filter(|_| first);
        let snippets = own_parameters.unwrap_or(&self.parameters);
        let language = match &self.language {
            Some(fixed) => fixed.clone(),
            None => language_code(Some(request.view.locale)),
        };
        let mut parameters = Vec::with_capacity(snippets.len());
        for (i, snippet) in snippets.iter().enumerate() {
            let text = one_line(&templates.render_inline(snippet, &request.view.data)?);
            if text.is_empty() {
                return Err(RenderError::Failed {
                    name: format!("whatsapp parameter {} (\"{snippet}\")", i + 1),
                    reason: "rendered empty, and WhatsApp refuses empty parameters".to_owned(),
                });
            }
            parameters.push(text);
        }
        let message = TemplateMessage {
            template: template.to_owned(),
            language,
            parameters,
            button: request.token.to_owned(),
        };
        Ok(Prepared::new(ChannelName::Whatsapp, request.to, message))
    }

    async fn send(&self, message: &Prepared) -> Result<Receipt, SendError> {
        let payload = wire::SendMessage::try_from(message)?;
        match &self.sender {
            Sender::Graph { client, path } => {
                let body = client.post(path, &payload, &message.to).await?;
                Ok(wire::receipt(&body))
            }
            Sender::File(outbox) => {
                // The file shows the exact body the Cloud API would get.
                let body = serde_json::to_string_pretty(&payload).map_err(|e| SendError::Permanent {
                    code: None,
                    reason: format!("cannot encode the message: {e}"),
                })?;
                let mut parts = message.parts();
                parts.push(("payload", Cow::Owned(body)));
                outbox.write(ChannelName::Whatsapp, &message.to, &parts).await
            }
        }
    }
}

/// WhatsApp's code for a BCP 47 locale: `es-MX` -> `es_MX`, `pt` -> `pt`;
/// scripts and variants are dropped (`zh-Hant-TW` -> `zh_TW`), and anything
/// unreadable is `en`.
pub fn language_code(locale: Option<&str>) -> String {
    let mut subtags = locale.unwrap_or("en").split(['-', '_']);
    let language = subtags.next().unwrap_or_default().to_ascii_lowercase();
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_lowercase()) {
        return "en".to_owned();
    }
    match subtags.find(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic())) {
        Some(region) => format!("{language}_{}", region.to_ascii_uppercase()),
        None => language,
    }
}

/// WhatsApp refuses parameters with new lines, tabs or more than four
/// spaces in a row: whitespace runs become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::View;
    use crate::settings::BillerConfig;
    use serde_json::json;

    fn channel(language: Option<&str>) -> WhatsappChannel {
        channel_in(
            &std::env::temp_dir().join(format!("payrelay-wa-{}", crate::domain::ids::random_id())),
            language,
        )
    }

    fn channel_in(dir: &std::path::Path, language: Option<&str>) -> WhatsappChannel {
        WhatsappChannel {
            templates: BTreeMap::from([
                ("payment_request".to_owned(), "payment_request".to_owned()),
                ("reminder".to_owned(), "payment_reminder".to_owned()),
            ]),
            language: language.map(str::to_owned),
            parameters: DEFAULT_PARAMETERS.map(str::to_owned).to_vec(),
            sender: Sender::File(FileOutbox::new(ChannelName::Whatsapp, dir).unwrap()),
        }
    }

    fn view(locale: &str) -> View<'_> {
        view_of(locale, "payment_request")
    }

    /// The view of message `template`, five days after the due date.
    fn view_of<'a>(locale: &'a str, template: &'a str) -> View<'a> {
        let data = json!({
            "customer": {"name": "María\n López", "id": "C-1"},
            "biller": {"id": "acme", "name": "ACME"},
            "invoice": {"id": "INV-1", "revision": 1, "description": null, "due_date": "2026-12-01",
                        "due_date_display": "2026-12-01", "source": "erp"},
            "amount": {"value": "1234.50", "currency": "MXN", "display": "MXN 1,234.50", "minor": 123450},
            "pay_url": "https://pay.example/p/tok",
            "locale": locale,
        });
        View {
            pay_url: "https://pay.example/p/tok",
            locale,
            template,
            step: (template != "payment_request").then_some("overdue"),
            days_to_due: -5,
            days_overdue: 5,
            data,
        }
    }

    fn prepare(channel: &WhatsappChannel, biller: &BillerConfig, view: &View<'_>) -> Prepared {
        let templates = Templates::load(None).unwrap();
        let request = Request {
            to: "+5215512345678",
            token: "tok",
            view,
            biller,
        };
        channel.prepare(&request, &templates).unwrap()
    }

    #[test]
    fn locales_become_whatsapp_language_codes() {
        assert_eq!(language_code(Some("es-MX")), "es_MX");
        assert_eq!(language_code(Some("pt-br")), "pt_BR");
        assert_eq!(language_code(Some("de")), "de");
        assert_eq!(language_code(Some("zh-Hant-TW")), "zh_TW");
        assert_eq!(language_code(Some("es-419")), "es");
        assert_eq!(language_code(Some("en_GB")), "en_GB");
        assert_eq!(language_code(Some("")), "en");
        assert_eq!(language_code(Some("x")), "en");
        assert_eq!(language_code(None), "en");
    }

    #[test]
    fn prepare_renders_the_channel_mapping_on_one_line_each() {
        let p = prepare(&channel(None), &BillerConfig::default(), &view("es-MX"));
        assert_eq!(p.part("template").as_deref(), Some("payment_request"));
        assert_eq!(p.part("language").as_deref(), Some("es_MX"));
        assert_eq!(
            p.part("parameters").as_deref(),
            Some(r#"["María López","MXN 1,234.50","2026-12-01"]"#)
        );
        assert_eq!(p.part("button").as_deref(), Some("tok"));
        assert_eq!(p.to, "+5215512345678");
    }

    #[test]
    fn a_fixed_language_wins_over_the_locale() {
        let p = prepare(&channel(Some("es")), &BillerConfig::default(), &view("es-MX"));
        assert_eq!(p.part("language").as_deref(), Some("es"));
    }

    #[test]
    fn a_biller_mapping_overrides_template_and_parameters() {
        let biller = BillerConfig {
            whatsapp_template: Some("acme_invoice".into()),
            whatsapp_parameters: Some(vec![
                "{{invoice.id}}".into(),
                "{{biller.name}}: {{amount.value}}".into(),
            ]),
            ..BillerConfig::default()
        };
        let p = prepare(&channel(None), &biller, &view("en"));
        assert_eq!(p.part("template").as_deref(), Some("acme_invoice"));
        assert_eq!(p.part("parameters").as_deref(), Some(r#"["INV-1","ACME: 1234.50"]"#));
    }

    #[test]
    fn each_message_goes_out_as_its_mapped_approved_template() {
        let p = prepare(&channel(None), &BillerConfig::default(), &view_of("en", "reminder"));
        assert_eq!(p.part("template").as_deref(), Some("payment_reminder"));
        assert_eq!(
            p.part("parameters").as_deref(),
            Some(r#"["María López","MXN 1,234.50","2026-12-01"]"#)
        );
        // A biller's own template and parameters are its first request's only.
        let biller = BillerConfig {
            whatsapp_template: Some("acme_invoice".into()),
            whatsapp_parameters: Some(vec!["{{invoice.id}}".into()]),
            ..BillerConfig::default()
        };
        let p = prepare(&channel(None), &biller, &view_of("en", "reminder"));
        assert_eq!(p.part("template").as_deref(), Some("payment_reminder"));
        assert_eq!(
            p.part("parameters").as_deref(),
            Some(r#"["María López","MXN 1,234.50","2026-12-01"]"#)
        );
    }

    #[test]
    fn a_message_with_no_approved_template_is_refused_not_sent_as_another() {
        let templates = Templates::load(None).unwrap();
        let v = view_of("en", "overdue");
        let biller = BillerConfig {
            whatsapp_template: Some("acme_invoice".into()),
            ..BillerConfig::default()
        };
        let request = Request {
            to: "+5215512345678",
            token: "tok",
            view: &v,
            biller: &biller,
        };
        let refused = channel(None).prepare(&request, &templates).unwrap_err().to_string();
        assert!(
            refused.contains("no approved WhatsApp template is mapped to the overdue message")
                && refused.contains("[channels.whatsapp] templates"),
            "{refused}"
        );
    }

    #[test]
    fn an_empty_or_unknown_parameter_is_a_render_error() {
        let templates = Templates::load(None).unwrap();
        let v = view("en");
        for snippet in ["{{invoice.description}}", "{{customer.nickname}}"] {
            let biller = BillerConfig {
                whatsapp_parameters: Some(vec![snippet.into()]),
                ..BillerConfig::default()
            };
            let request = Request {
                to: "+5215512345678",
                token: "tok",
                view: &v,
                biller: &biller,
            };
            assert!(channel(None).prepare(&request, &templates).is_err(), "{snippet}");
        }
    }

    #[tokio::test]
    async fn the_file_provider_writes_the_parts_and_the_exact_payload() {
        let dir = tempfile::tempdir().unwrap();
        let c = channel_in(dir.path(), None);
        let p = prepare(&c, &BillerConfig::default(), &view("es-MX"));
        let id = c.send(&p).await.unwrap().provider_message_id.unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{id}.json"))).unwrap()).unwrap();
        assert_eq!(written["channel"], "whatsapp");
        assert_eq!(written["template"], "payment_request");
        let payload: serde_json::Value = serde_json::from_str(written["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["to"], "5215512345678");
        assert_eq!(payload["template"]["components"][1]["parameters"][0]["text"], "tok");
    }
}
