//! Handlebars templates for every message and the pay page, in the
//! customer's language, with money and dates in the customer's format.
//!
//! # Templates and languages
//! Each template exists once per language, in a folder named by the
//! locale's BCP 47 tag: `templates/<locale>/<name>.hbs`, e.g.
//! `templates/es/email/subject.hbs` or, for a regional variant,
//! `templates/es-MX/sms/body.hbs`. The names are [`NAMES`]; the built-in
//! languages are [`BUILT_IN_LOCALES`] (English, Spanish, Portuguese as
//! written in Brazil, German). The built-ins are compiled into the binary,
//! so payrelay runs anywhere.
//!
//! A file under `[templates] dir` with the same relative path overrides
//! that one template in that one language (`<dir>/es/email/subject.hbs`);
//! a folder for another locale adds that language (`<dir>/fr/...`), one
//! template at a time. A file directly under the dir, without a locale
//! folder (`<dir>/email/subject.hbs`, the layout before languages), still
//! overrides the English template. Folder names may use any case and `_`
//! (`es_mx` is `es-MX`).
//!
//! # Which language
//! [`view`] puts `locale_chain` in the template data: the customer's locale
//! and its shorter forms, then the biller's `default_locale` and its
//! shorter forms, then `en` (see [`locale`]). [`Templates::render`] uses,
//! for each template separately, the first locale in the chain that has
//! it: `es-MX` -> `es`; `fr-FR` with a biller default of `de` -> `de`;
//! nothing known -> `en`. A view without `locale_chain` is read from its
//! `locale`. While rendering, `lang` holds the locale of the template
//! picked (the pay page's `<html lang>`). `payrelay check` lists the
//! templates a declared locale lacks with [`Templates::missing_for_locale`].
//!
//! # Money and dates
//! `amount.display` and `invoice.due_date_display` hold the amount and the
//! due date formatted for the view's `locale` (the customer's, else the
//! biller's default, else `en`) by ICU4X with CLDR data (see [`format`]):
//! `1.234,50 €` and `1. Dezember 2026` in `de-DE`. The same in a template
//! or a WhatsApp parameter snippet, for any amount, date or locale:
//! `{{money amount.minor amount.currency locale}}`,
//! `{{date invoice.due_date locale}}`. The locale argument is optional.
//!
//! # Escaping
//! Templates whose name ends in `.html` are rendered with HTML escaping,
//! all others as plain text; in both, data is never evaluated as a
//! template, so a customer named `{{x}}` stays `{{x}}`.

pub mod format;
pub mod locale;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use handlebars::Handlebars;
use serde_json::json;

pub use format::{date, money, money_minor};

use crate::invoice::Invoice;
use crate::settings::BillerConfig;

/// Every template a channel or the pay page renders, by name.
pub const NAMES: [&str; 6] = [
    "email/subject",
    "email/body.txt",
    "email/body.html",
    "paypage.html",
    "sms/body",
    "messenger/text",
];

/// Languages with a complete set of built-in templates.
pub const BUILT_IN_LOCALES: [&str; 4] = ["en", "es", "pt", "de"];

macro_rules! built_in {
    ($($locale:literal),*) => {
        [$(
            ($locale, "email/subject", include_str!(concat!("../../templates/", $locale, "/email/subject.hbs"))),
            ($locale, "email/body.txt", include_str!(concat!("../../templates/", $locale, "/email/body.txt.hbs"))),
            ($locale, "email/body.html", include_str!(concat!("../../templates/", $locale, "/email/body.html.hbs"))),
            ($locale, "paypage.html", include_str!(concat!("../../templates/", $locale, "/paypage.html.hbs"))),
            ($locale, "sms/body", include_str!(concat!("../../templates/", $locale, "/sms/body.hbs"))),
            ($locale, "messenger/text", include_str!(concat!("../../templates/", $locale, "/messenger/text.hbs"))),
        )*]
    };
}

/// Built-in templates: (locale, name, source).
const BUILT_IN: [(&str, &str, &str); 24] = built_in!("en", "es", "pt", "de");

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

/// The compiled templates, every language.
pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
    /// (locale, name) of every template registered.
    variants: BTreeSet<(String, String)>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("locales", &self.locales())
            .finish_non_exhaustive()
    }
}

/// A template's source and where it came from, for problem reports.
struct Source {
    text: String,
    location: String,
    from_dir: bool,
}

impl Templates {
    /// Compiles the built-in templates and the overrides in `dir`, listing
    /// every template that fails to compile or cannot be read.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Vec<TemplateProblem>> {
        let mut sources: BTreeMap<(String, String), Source> = BUILT_IN
            .iter()
            .map(|&(locale, name, text)| {
                let source = Source {
                    text: text.to_owned(),
                    location: format!("built-in template {locale}/{name}"),
                    from_dir: false,
                };
                ((locale.to_owned(), name.to_owned()), source)
            })
            .collect();
        let mut problems = Vec::new();
        if let Some(dir) = dir {
            if dir.is_dir() {
                read_overrides(dir, &mut sources, &mut problems);
            } else {
                problems.push(TemplateProblem {
                    location: dir.display().to_string(),
                    reason: "templates.dir is not a folder".into(),
                });
            }
        }

        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(escape_html);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        for registry in [&mut html, &mut text] {
            registry.register_helper("money", Box::new(format::MoneyHelper));
            registry.register_helper("date", Box::new(format::DateHelper));
        }
        let mut variants = BTreeSet::new();
        for ((locale, name), source) in sources {
            let registry = if is_html(&name) { &mut html } else { &mut text };
            match registry.register_template_string(&key(&locale, &name), source.text) {
                Ok(()) => {
                    variants.insert((locale, name));
                }
                Err(e) => problems.push(TemplateProblem {
                    location: source.location,
                    reason: e.to_string(),
                }),
            }
        }
        if problems.is_empty() {
            Ok(Templates { html, text, variants })
        } else {
            Err(problems)
        }
    }

    /// Renders template `name` (one of [`NAMES`]) in the first locale of
    /// the data's `locale_chain` that has it (see the module doc).
    pub fn render(&self, name: &str, data: &serde_json::Value) -> Result<String, RenderError> {
        let [rendered] = self.render_each([name], data)?;
        Ok(rendered)
    }

    /// [`Templates::render`] for several templates of one message (an
    /// email's subject, text and HTML), reading the locale chain and
    /// copying the data once rather than once per template.
    pub fn render_each<const N: usize>(
        &self,
        names: [&str; N],
        data: &serde_json::Value,
    ) -> Result<[String; N], RenderError> {
        let chain = chain_of(data);
        let mut context = handlebars::Context::from(data.clone());
        let mut lang: Option<&str> = None;
        let mut rendered: [String; N] = std::array::from_fn(|_| String::new());
        for (name, out) in names.iter().zip(rendered.iter_mut()) {
            let Some(locale) = chain.iter().find(|l| self.has(l, name)) else {
                return Err(RenderError::Missing {
                    name: (*name).to_owned(),
                });
            };
            if lang != Some(locale.as_str()) {
                if let Some(fields) = context.data_mut().as_object_mut() {
                    fields.insert("lang".into(), json!(locale));
                }
                lang = Some(locale.as_str());
            }
            *out = self.render_in(locale, name, &context)?;
        }
        Ok(rendered)
    }

    /// Renders a one-off snippet from the config (such as a WhatsApp
    /// parameter mapping) as plain text; the `money` and `date` helpers work.
    pub fn render_inline(&self, source: &str, data: &serde_json::Value) -> Result<String, RenderError> {
        self.text
            .render_template(source, data)
            .map_err(|e| RenderError::Failed {
                name: format!("\"{source}\""),
                reason: e.to_string(),
            })
    }

    /// The templates that a customer or biller with `locale` would get in
    /// another language, because neither the locale nor its shorter forms
    /// (`es` for `es-MX`) have them. All of [`NAMES`] for a tag that is not
    /// a locale.
    pub fn missing_for_locale(&self, locale: &str) -> Vec<String> {
        let own = locale::lookup(locale);
        NAMES
            .iter()
            .filter(|name| !own.iter().any(|l| self.has(l, name)))
            .map(|name| (*name).to_owned())
            .collect()
    }

    /// Every locale with at least one template, sorted.
    pub fn locales(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.variants.iter().map(|(l, _)| l).collect();
        set.into_iter().cloned().collect()
    }

    /// Renders every template in every language with a sample invoice, so
    /// `payrelay check` catches a template that names a field that does
    /// not exist.
    pub fn check_with_sample(&self) -> Vec<TemplateProblem> {
        let sample = sample_view();
        self.variants
            .iter()
            .filter_map(|(locale, name)| self.render_variant(locale, name, &sample).err())
            .map(|e| TemplateProblem {
                location: "templates".into(),
                reason: e.to_string(),
            })
            .collect()
    }

    fn has(&self, locale: &str, name: &str) -> bool {
        self.registry(name).has_template(&key(locale, name))
    }

    fn registry(&self, name: &str) -> &Handlebars<'static> {
        if is_html(name) {
            &self.html
        } else {
            &self.text
        }
    }

    fn render_variant(&self, locale: &str, name: &str, data: &serde_json::Value) -> Result<String, RenderError> {
        let mut data = data.clone();
        if let Some(fields) = data.as_object_mut() {
            fields.insert("lang".into(), json!(locale));
        }
        self.render_in(locale, name, &handlebars::Context::from(data))
    }

    /// Renders one template variant on data that already holds its `lang`.
    /// A [`handlebars::Context`] is passed, not the data: handlebars would
    /// copy data into one for every render.
    fn render_in(&self, locale: &str, name: &str, context: &handlebars::Context) -> Result<String, RenderError> {
        let key = key(locale, name);
        self.registry(name)
            .render_with_context(&key, context)
            .map_err(|e| RenderError::Failed {
                name: key,
                reason: e.to_string(),
            })
    }
}

/// handlebars' `html_escape` (the same seven characters, the same
/// entities) without its push per character: a value with nothing to
/// escape, most of them, is copied whole. handlebars' escape was a fifth
/// of rendering an email's three templates.
fn escape_html(s: &str) -> String {
    let entity = |b: u8| match b {
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'"' => Some("&quot;"),
        b'&' => Some("&amp;"),
        b'\'' => Some("&#x27;"),
        b'`' => Some("&#x60;"),
        b'=' => Some("&#x3D;"),
        _ => None,
    };
    // All seven are ASCII, so a byte match is never inside a multi-byte
    // character and every slice below is on a character boundary.
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(entity) = entity(b) {
            out.push_str(&s[copied..i]);
            out.push_str(entity);
            copied = i + 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

fn is_html(name: &str) -> bool {
    name.ends_with(".html")
}

fn key(locale: &str, name: &str) -> String {
    format!("{locale}/{name}")
}

/// The locale chain of template data: its `locale_chain`, else the chain of
/// its `locale`; `en` last either way.
fn chain_of(data: &serde_json::Value) -> Vec<String> {
    match data.get("locale_chain").and_then(|c| c.as_array()) {
        Some(tags) => {
            let mut chain: Vec<String> = tags
                .iter()
                .filter_map(|t| t.as_str().and_then(locale::canonical))
                .collect();
            chain.push(locale::FALLBACK.to_owned());
            chain
        }
        None => locale::chain(&[data.get("locale").and_then(|l| l.as_str())]),
    }
}

/// Reads the override files in `dir` into `sources`: `<dir>/<locale>/<name>.hbs`
/// for any locale, and `<dir>/<name>.hbs` for English.
fn read_overrides(dir: &Path, sources: &mut BTreeMap<(String, String), Source>, problems: &mut Vec<TemplateProblem>) {
    let mut found: Vec<(String, std::path::PathBuf)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            // The first folder of a template name ("email") is no locale.
            let template_folders: BTreeSet<&str> =
                NAMES.iter().filter_map(|n| n.split_once('/')).map(|(f, _)| f).collect();
            for entry in entries.flatten() {
                let path = entry.path();
                let folder = entry.file_name().to_string_lossy().into_owned();
                if !path.is_dir() || template_folders.contains(folder.as_str()) {
                    continue;
                }
                if let Some(tag) = locale::canonical(&folder) {
                    found.push((tag, path));
                }
            }
        }
        Err(e) => problems.push(TemplateProblem {
            location: dir.display().to_string(),
            reason: format!("cannot list: {e}"),
        }),
    }
    found.sort();
    found.push((locale::FALLBACK.to_owned(), dir.to_path_buf()));
    for (tag, folder) in found {
        for name in NAMES {
            let path = folder.join(format!("{name}.hbs"));
            if !path.is_file() {
                continue;
            }
            let location = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(TemplateProblem {
                        location,
                        reason: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            let slot = (tag.clone(), name.to_owned());
            if let Some(earlier) = sources.get(&slot).filter(|s| s.from_dir) {
                problems.push(TemplateProblem {
                    location,
                    reason: format!(
                        "{} already overrides {tag}/{name}; keep one of the two",
                        earlier.location
                    ),
                });
                continue;
            }
            sources.insert(
                slot,
                Source {
                    text,
                    location,
                    from_dir: true,
                },
            );
        }
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

/// The data every template sees for one invoice.
pub fn view(invoice: &Invoice, biller_id: &str, biller: &BillerConfig, pay_url: &str) -> serde_json::Value {
    View::new(invoice, biller_id, biller, pay_url).data
}

/// One message's template data, with the values channels read themselves
/// as typed fields, so no channel digs them out of the JSON.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// The pay link the message carries (Messenger's button opens it).
    pub pay_url: &'a str,
    /// The locale money and dates are formatted for: the customer's, else
    /// the biller's default, else `en` (WhatsApp's template language).
    pub locale: &'a str,
    /// What templates render from: the same data as [`view`].
    pub data: serde_json::Value,
}

impl<'a> View<'a> {
    pub fn new(invoice: &'a Invoice, biller_id: &str, biller: &'a BillerConfig, pay_url: &'a str) -> View<'a> {
        let customer_locale = invoice.customer.locale.as_deref();
        let biller_locale = biller.default_locale.as_deref();
        let locale = customer_locale.or(biller_locale).unwrap_or(locale::FALLBACK);
        View {
            pay_url,
            locale,
            data: data(invoice, biller_id, biller, pay_url, locale),
        }
    }
}

fn data(invoice: &Invoice, biller_id: &str, biller: &BillerConfig, pay_url: &str, locale: &str) -> serde_json::Value {
    let customer_locale = invoice.customer.locale.as_deref();
    let biller_locale = biller.default_locale.as_deref();
    json!({
        "customer": {"name": invoice.customer.name, "id": invoice.customer.id},
        "biller": {"id": biller_id, "name": biller.name},
        "invoice": {
            "id": invoice.key.invoice_id,
            "revision": invoice.key.revision,
            "description": invoice.description,
            "due_date": format::iso_date(invoice.due_date),
            "due_date_display": date(invoice.due_date, locale),
            "source": invoice.source,
        },
        "amount": {
            "value": invoice.amount.to_decimal_string(),
            "currency": invoice.amount.currency,
            "display": money(&invoice.amount, locale),
            "minor": invoice.amount.minor,
        },
        "pay_url": pay_url,
        "locale": locale,
        "locale_chain": locale::chain(&[customer_locale, biller_locale]),
    })
}

#[cfg(test)]
mod tests;
