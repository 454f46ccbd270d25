//! Handlebars templates for every message and the pay page.
//!
//! The default templates live in `templates/` and are built into the binary,
//! so payrelay runs anywhere; a file of the same name under `[templates] dir`
//! overrides one template. Templates whose name ends in `.html` are rendered
//! with HTML escaping, all others as plain text; in both, data is never
//! evaluated as a template, so a customer named `{{x}}` stays `{{x}}`.

use std::path::Path;

use handlebars::Handlebars;
use serde_json::json;

use crate::config::BillerConfig;
use crate::invoice::{Amount, Invoice};

/// Built-in templates: (name, source).
const BUILT_IN: [(&str, &str); 6] = [
    ("email/subject", include_str!("../../templates/email/subject.hbs")),
    ("email/body.txt", include_str!("../../templates/email/body.txt.hbs")),
    ("email/body.html", include_str!("../../templates/email/body.html.hbs")),
    ("paypage.html", include_str!("../../templates/paypage.html.hbs")),
    ("sms/body", include_str!("../../templates/sms/body.hbs")),
    ("messenger/text", include_str!("../../templates/messenger/text.hbs")),
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name} is not defined")]
    Missing { name: String },
    #[error("template {name}: {reason}")]
    Failed { name: String, reason: String },
}

/// A problem with one template file, found when templates are loaded.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct TemplateProblem {
    pub location: String,
    pub reason: String,
}

/// The compiled templates.
pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// Compiles the built-in templates and the overrides in `dir`, listing
    /// every template that fails to compile.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Vec<TemplateProblem>> {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut problems = Vec::new();
        for (name, builtin) in BUILT_IN {
            let (source, location) = match dir.map(|d| d.join(format!("{name}.hbs"))) {
                Some(path) if path.is_file() => match std::fs::read_to_string(&path) {
                    Ok(s) => (s, path.display().to_string()),
                    Err(e) => {
                        problems.push(TemplateProblem {
                            location: path.display().to_string(),
                            reason: format!("cannot read: {e}"),
                        });
                        continue;
                    }
                },
                _ => (builtin.to_owned(), format!("built-in template {name}")),
            };
            let registry = if name.ends_with(".html") { &mut html } else { &mut text };
            if let Err(e) = registry.register_template_string(name, source) {
                problems.push(TemplateProblem {
                    location,
                    reason: e.to_string(),
                });
            }
        }
        if let Some(dir) = dir {
            if !dir.is_dir() {
                problems.push(TemplateProblem {
                    location: dir.display().to_string(),
                    reason: "templates.dir is not a folder".into(),
                });
            }
        }
        if problems.is_empty() {
            Ok(Templates { html, text })
        } else {
            Err(problems)
        }
    }

    pub fn render(&self, name: &str, data: &serde_json::Value) -> Result<String, RenderError> {
        let registry = if name.ends_with(".html") {
            &self.html
        } else {
            &self.text
        };
        if !registry.has_template(name) {
            return Err(RenderError::Missing { name: name.to_owned() });
        }
        registry.render(name, data).map_err(|e| RenderError::Failed {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Renders a one-off snippet from the config (such as a WhatsApp
    /// parameter mapping) as plain text.
    pub fn render_inline(&self, source: &str, data: &serde_json::Value) -> Result<String, RenderError> {
        self.text
            .render_template(source, data)
            .map_err(|e| RenderError::Failed {
                name: format!("\"{source}\""),
                reason: e.to_string(),
            })
    }

    /// Renders every template with a sample invoice, so `payrelay check`
    /// catches a template that names a field that does not exist.
    pub fn check_with_sample(&self) -> Vec<TemplateProblem> {
        let sample = sample_view();
        BUILT_IN
            .iter()
            .filter_map(|(name, _)| self.render(name, &sample).err())
            .map(|e| TemplateProblem {
                location: "templates".into(),
                reason: e.to_string(),
            })
            .collect()
    }
}

/// Template data for a made-up invoice, built by [`view`] like a real one,
/// so `payrelay check` can render each template and config snippet once.
pub fn sample_view() -> serde_json::Value {
    const SAMPLE: &str = r#"{"invoice_id": "INV-SAMPLE", "biller_id": "sample", "amount": "1234.50",
        "currency": "EUR", "due_date": "2026-12-01", "description": "Sample", "source": "erp",
        "customer": {"id": "C-1", "name": "Sample Customer", "email": "sample@example.com", "locale": "en"}}"#;
    let biller = BillerConfig {
        name: "Sample Biller".into(),
        ..BillerConfig::default()
    };
    match crate::invoice::parse(SAMPLE.as_bytes(), |_| true) {
        Ok(crate::invoice::Message::PaymentRequest(invoice)) => {
            let mut data = view(&invoice, "sample", &biller, "https://pay.example/p/SAMPLE-TOKEN");
            data["status"] = json!("open");
            data["checkout_path"] = json!("/p/SAMPLE-TOKEN/pay");
            data
        }
        // The sample is fixed text that parses; an empty view would make
        // every template report its fields missing, which says as much.
        _ => json!({}),
    }
}

/// Formats an amount with its currency code and the currency's decimals,
/// with thousands grouped: `MXN 1,234.50`.
pub fn money(amount: &Amount) -> String {
    let plain = amount.to_decimal_string();
    let (int, frac) = plain.split_once('.').unwrap_or((&plain, ""));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{} {grouped}", amount.currency)
    } else {
        format!("{} {grouped}.{frac}", amount.currency)
    }
}

/// The data every template sees for one invoice.
pub fn view(invoice: &Invoice, biller_id: &str, biller: &BillerConfig, pay_url: &str) -> serde_json::Value {
    let due = invoice.due_date;
    let due_text = format!("{:04}-{:02}-{:02}", due.year(), u8::from(due.month()), due.day());
    json!({
        "customer": {"name": invoice.customer.name, "id": invoice.customer.id},
        "biller": {"id": biller_id, "name": biller.name},
        "invoice": {
            "id": invoice.key.invoice_id,
            "revision": invoice.key.revision,
            "description": invoice.description,
            "due_date": due_text,
            "due_date_display": due_text,
            "source": invoice.source,
        },
        "amount": {
            "value": invoice.amount.to_decimal_string(),
            "currency": invoice.amount.currency,
            "display": money(&invoice.amount),
            "minor": invoice.amount.minor,
        },
        "pay_url": pay_url,
        "locale": invoice.customer.locale.as_deref().or(biller.default_locale.as_deref()).unwrap_or("en"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands_and_keeps_the_currency_decimals() {
        let a = |t: &str, c: &str| money(&Amount::parse(t, c).unwrap());
        assert_eq!(a("1234.5", "MXN"), "MXN 1,234.50");
        assert_eq!(a("1234567", "JPY"), "JPY 1,234,567");
        assert_eq!(a("12.345", "KWD"), "KWD 12.345");
        assert_eq!(a("999", "EUR"), "EUR 999.00");
    }

    #[test]
    fn built_in_templates_compile_and_render_the_sample() {
        let t = Templates::load(None).unwrap();
        assert!(t.check_with_sample().is_empty());
    }

    #[test]
    fn markup_and_template_syntax_in_data_render_as_text() {
        let t = Templates::load(None).unwrap();
        let mut data: serde_json::Value = serde_json::from_str(
            r#"{"customer":{"name":"<b>x</b> {{pay_url}}"},"biller":{"name":"B"},"invoice":{"id":"1","due_date_display":"d","description":null},"amount":{"display":"EUR 1.00"},"pay_url":"u"}"#,
        )
        .unwrap();
        data["status"] = json!("open");
        let html = t.render("email/body.html", &data).unwrap();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt; {{pay_url}}"), "{html}");
        let text = t.render("email/body.txt", &data).unwrap();
        assert!(text.contains("<b>x</b> {{pay_url}}"), "{text}");
    }
}
