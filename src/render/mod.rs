//! Handlebars templates for every message and the pay page, in the
//! customer's language, with money and dates in the customer's format.
//!
//! # Templates and languages
//! Each template exists once per language, in a folder named by the
//! locale's BCP 47 tag: `templates/<locale>/<name>.hbs`, e.g.
//! `templates/es/email/subject.hbs` or, for a regional variant,
//! `templates/es-MX/sms/body.hbs`. The built-in languages are
//! [`BUILT_IN_LOCALES`] (English, Spanish, Portuguese as written in Brazil,
//! German). The built-ins are compiled into the binary, so payrelay runs
//! anywhere.
//!
//! # Messages
//! A message is a named template ([`Message`]) rendered in parts, one set
//! per channel ([`MESSAGE_PARTS`]: an email's subject, text and HTML, an
//! SMS body, a Messenger text; WhatsApp sends approved templates instead).
//! The first request is `payment_request`, whose parts sit directly in the
//! locale folder (`es/sms/body.hbs`, the layout before journeys, so older
//! overrides keep working) and are named as before ([`NAMES`], with the
//! pay page). Every other message has a folder named by the template:
//! `es/reminder/sms/body.hbs`, registered as `reminder/sms/body`
//! ([`part_name`]). [`BUILT_IN_MESSAGES`] exist in every built-in language;
//! an operator adds any other name ([`check_message_name`]) in the
//! templates dir. Channels render the view's template with
//! [`Templates::render_message`].
//!
//! # Overrides
//! A file under `[templates] dir` with the same relative path overrides
//! that one template in that one language (`<dir>/es/email/subject.hbs`,
//! `<dir>/es/reminder/email/subject.hbs`); a folder for another locale adds
//! that language (`<dir>/fr/...`), one template at a time, and a folder
//! with a new name inside a locale folder adds a message
//! (`<dir>/en/second_reminder/sms/body.hbs`). A file directly under the
//! dir, without a locale folder (`<dir>/email/subject.hbs`, the layout
//! before languages), still overrides the English `payment_request`.
//! Folder names may use any case and `_` (`es_mx` is `es-MX`).
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
//! templates a declared locale lacks with [`Templates::missing_for_locale`]
//! (every built-in message), and those of one message with
//! [`Templates::missing_message`].
//!
//! # Which message
//! Besides the invoice, the data holds `template` (the message's name),
//! `step` (the journey step's name; null for the first request),
//! `days_to_due` (the due date minus today, negative once it has passed),
//! `days_overdue` (today minus the due date when positive, else 0) and the
//! invoice's `metadata` (null when it has none). "Today" is the customer's
//! date, given by the caller. Templates branch on them with handlebars'
//! built-in helpers: `{{#if (eq days_to_due 0)}}due today{{else}}...{{/if}}`.
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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde_json::json;

pub use format::{date, money, money_minor};

use crate::domain::ChannelName;
use crate::invoice::Invoice;
use crate::settings::BillerConfig;

/// The `payment_request` message's parts and the pay page, by name: the
/// templates as they were before journeys added messages.
pub const NAMES: [&str; 7] = [
    "email/subject",
    "email/body.txt",
    "email/body.html",
    "paypage.html",
    "sms/body",
    "messenger/text",
    "unsubscribe.html",
];

/// The first request's message template. The same as the journey config's
/// `FIRST_TEMPLATE` (a test keeps them equal), kept here so rendering does
/// not depend on the config, which depends on the channels.
pub const FIRST_TEMPLATE: &str = "payment_request";

/// Messages with built-in templates on every channel in every built-in
/// language: the first request and the three a journey sends by default.
pub const BUILT_IN_MESSAGES: [&str; 5] = [FIRST_TEMPLATE, "reminder", "overdue", "final_notice", COMBINED_TEMPLATE];

/// The message that lists a customer's open invoices in one
/// (`[billers.<id>] combine`). Besides the first invoice's data (whose
/// `customer` and locale it is in), it has `invoices` (each with `id`,
/// `description`, `amount`, `due_date` and `due_date_display`), `count`,
/// and `total`, which is also its `amount` (see [`add_combined`]).
pub const COMBINED_TEMPLATE: &str = "combined";

/// What the email channel renders of a message.
pub const EMAIL_PARTS: [&str; 3] = ["email/subject", "email/body.txt", "email/body.html"];
/// What the SMS channel renders of a message.
pub const SMS_PARTS: [&str; 1] = ["sms/body"];
/// What the Messenger channel renders of a message.
pub const MESSENGER_PARTS: [&str; 1] = ["messenger/text"];
/// Every part of a message, on every channel that renders templates.
pub const MESSAGE_PARTS: [&str; 5] = [
    EMAIL_PARTS[0],
    EMAIL_PARTS[1],
    EMAIL_PARTS[2],
    SMS_PARTS[0],
    MESSENGER_PARTS[0],
];

/// The folders of a message's parts: never a locale, never a message name.
const CHANNEL_FOLDERS: [&str; 4] = ["email", "sms", "messenger", "whatsapp"];

/// Languages with a complete set of built-in templates.
pub const BUILT_IN_LOCALES: [&str; 4] = ["en", "es", "pt", "de"];

/// A built-in template: (locale, name, source).
type BuiltIn = (&'static str, &'static str, &'static str);

macro_rules! built_in {
    ($($locale:literal),*) => {
        [$(
            ($locale, "email/subject", include_str!(concat!("../../templates/", $locale, "/email/subject.hbs"))),
            ($locale, "email/body.txt", include_str!(concat!("../../templates/", $locale, "/email/body.txt.hbs"))),
            ($locale, "email/body.html", include_str!(concat!("../../templates/", $locale, "/email/body.html.hbs"))),
            ($locale, "paypage.html", include_str!(concat!("../../templates/", $locale, "/paypage.html.hbs"))),
            ($locale, "sms/body", include_str!(concat!("../../templates/", $locale, "/sms/body.hbs"))),
            ($locale, "messenger/text", include_str!(concat!("../../templates/", $locale, "/messenger/text.hbs"))),
            ($locale, "unsubscribe.html", include_str!(concat!("../../templates/", $locale, "/unsubscribe.html.hbs"))),
        )*]
    };
}

/// The parts of one message other than `payment_request`, from its folder
/// in each locale.
macro_rules! built_in_message {
    ($message:literal: $($locale:literal),*) => {
        [$(
            ($locale, concat!($message, "/email/subject"), include_str!(concat!("../../templates/", $locale, "/", $message, "/email/subject.hbs"))),
            ($locale, concat!($message, "/email/body.txt"), include_str!(concat!("../../templates/", $locale, "/", $message, "/email/body.txt.hbs"))),
            ($locale, concat!($message, "/email/body.html"), include_str!(concat!("../../templates/", $locale, "/", $message, "/email/body.html.hbs"))),
            ($locale, concat!($message, "/sms/body"), include_str!(concat!("../../templates/", $locale, "/", $message, "/sms/body.hbs"))),
            ($locale, concat!($message, "/messenger/text"), include_str!(concat!("../../templates/", $locale, "/", $message, "/messenger/text.hbs"))),
        )*]
    };
}

/// Built-in templates of `payment_request` and the pay page.
const BUILT_IN: [BuiltIn; 28] = built_in!("en", "es", "pt", "de");
const REMINDER: [BuiltIn; 20] = built_in_message!("reminder": "en", "es", "pt", "de");
const OVERDUE: [BuiltIn; 20] = built_in_message!("overdue": "en", "es", "pt", "de");
const FINAL_NOTICE: [BuiltIn; 20] = built_in_message!("final_notice": "en", "es", "pt", "de");
/// The pages a consumer lands on besides the pay page and the unsubscribe
/// page (in [`NAMES`]): an erased customer's link (410, names the biller,
/// nothing of the invoice); a link that expired, was cancelled or replaced
/// (410, `reason`: `expired`, `cancelled`, `replaced`); and a notice that
/// may name no invoice (`notice`: `not_found`, `throttled`, `unavailable`,
/// `forbidden`, `bad_form`, `not_handled`, `unsubscribed`; `biller` null
/// when no invoice is known, in the browser's language).
pub const PAGES: [&str; 3] = ["erased.html", "gone.html", "notice.html"];

macro_rules! built_in_pages {
    ($($locale:literal),*) => {
        [$(
            ($locale, "erased.html", include_str!(concat!("../../templates/", $locale, "/erased.html.hbs"))),
            ($locale, "gone.html", include_str!(concat!("../../templates/", $locale, "/gone.html.hbs"))),
            ($locale, "notice.html", include_str!(concat!("../../templates/", $locale, "/notice.html.hbs"))),
        )*]
    };
}

const PAGES_BUILT_IN: [BuiltIn; 12] = built_in_pages!("en", "es", "pt", "de");
const COMBINED: [BuiltIn; 20] = built_in_message!("combined": "en", "es", "pt", "de");
/// Every built-in template.
const BUILT_IN_SETS: [&[BuiltIn]; 6] = [
    &BUILT_IN,
    &REMINDER,
    &OVERDUE,
    &FINAL_NOTICE,
    &COMBINED,
    &PAGES_BUILT_IN,
];

/// The name `part` of message `template` is registered and overridden
/// under: the part itself for `payment_request` (`email/subject`, as
/// before journeys), else under the template's folder
/// (`reminder/email/subject`).
pub fn part_name(template: &str, part: &str) -> String {
    registered_name(template, part).into_owned()
}

/// [`part_name`] without a copy for `payment_request`, the most sent.
fn registered_name<'a>(template: &str, part: &'a str) -> Cow<'a, str> {
    if template == FIRST_TEMPLATE {
        Cow::Borrowed(part)
    } else {
        Cow::Owned(format!("{template}/{part}"))
    }
}

/// The message a registered template name belongs to; `None` for the pay
/// page.
fn message_of(name: &str) -> Option<&str> {
    let (folder, _) = name.split_once('/')?;
    Some(if CHANNEL_FOLDERS.contains(&folder) {
        FIRST_TEMPLATE
    } else {
        folder
    })
}

/// The parts of a message `channel` renders from templates; none for
/// WhatsApp, which sends approved templates (see its `templates` config).
pub fn parts_on(channel: ChannelName) -> &'static [&'static str] {
    match channel {
        ChannelName::Email => &EMAIL_PARTS,
        ChannelName::Sms => &SMS_PARTS,
        ChannelName::Messenger => &MESSENGER_PARTS,
        ChannelName::Whatsapp => &[],
    }
}

/// A message template's name, as a journey step, a templates dir folder
/// and the WhatsApp mapping give it: lowercase letters, digits and `_`,
/// starting with a letter, at most 64, and not a channel's folder name.
pub fn check_message_name(name: &str) -> Result<(), String> {
    let shaped = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        Err(format!(
            "\"{name}\" is not a message template name (lowercase letters, digits and _, starting with a letter)"
        ))
    } else if CHANNEL_FOLDERS.contains(&name) {
        Err(format!("\"{name}\" is a channel's folder, not a message template name"))
    } else {
        Ok(())
    }
}

/// Which message to render: its template and the journey step sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message template's name (`payment_request`, `reminder`, ...).
    pub template: String,
    /// The journey step's name; `None` for the first request.
    pub step: Option<String>,
}

impl Message {
    /// The first request of an invoice: `payment_request`, no step.
    pub fn first_request() -> Message {
        Message {
            template: FIRST_TEMPLATE.to_owned(),
            step: None,
        }
    }

    /// Journey step `step`'s message, rendered from `template`.
    pub fn step(step: impl Into<String>, template: impl Into<String>) -> Message {
        Message {
            template: template.into(),
            step: Some(step.into()),
        }
    }
}

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
        let mut sources: BTreeMap<(String, String), Source> = BUILT_IN_SETS
            .iter()
            .flat_map(|set| set.iter())
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

    /// Renders template `name` (one of [`NAMES`], or a [`part_name`]) in
    /// the first locale of the data's `locale_chain` that has it (see the
    /// module doc).
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

    /// Renders `parts` (of [`MESSAGE_PARTS`]) of the view's message
    /// template, each in the first locale of the chain that has it. A
    /// message with no such part in any locale of the chain is
    /// [`RenderError::Missing`]: it never falls back to another message.
    pub fn render_message<const N: usize>(
        &self,
        view: &View<'_>,
        parts: [&str; N],
    ) -> Result<[String; N], RenderError> {
        let names = parts.map(|part| registered_name(view.template, part));
        self.render_each(names.each_ref().map(|name| name.as_ref()), &view.data)
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
    /// (`es` for `es-MX`) have them: [`NAMES`], [`PAGES`], then the parts
    /// of the other [`BUILT_IN_MESSAGES`]. All of them for a tag that is
    /// not a locale.
    pub fn missing_for_locale(&self, locale: &str) -> Vec<String> {
        let own = locale::lookup(locale);
        let messages = BUILT_IN_MESSAGES.iter().filter(|m| **m != FIRST_TEMPLATE);
        NAMES
            .iter()
            .chain(PAGES.iter())
            .map(|name| (*name).to_owned())
            .chain(messages.flat_map(|m| MESSAGE_PARTS.iter().map(move |part| part_name(m, part))))
            .filter(|name| !own.iter().any(|l| self.has(l, name)))
            .collect()
    }

    /// The parts of message `template` that a customer or biller with
    /// `locale` would get in another language (or not at all), as
    /// registered names ([`part_name`]): empty when the message is
    /// complete in that language. For `payrelay check`'s "a template
    /// missing for a language" of each journey step.
    pub fn missing_message(&self, template: &str, locale: &str) -> Vec<String> {
        self.missing_parts(template, locale, &MESSAGE_PARTS)
    }

    /// [`Templates::missing_message`] for the parts `channel` renders
    /// ([`parts_on`]); always empty for WhatsApp.
    pub fn missing_message_on(&self, template: &str, locale: &str, channel: ChannelName) -> Vec<String> {
        self.missing_parts(template, locale, parts_on(channel))
    }

    fn missing_parts(&self, template: &str, locale: &str, parts: &[&str]) -> Vec<String> {
        let own = locale::lookup(locale);
        parts
            .iter()
            .map(|part| part_name(template, part))
            .filter(|name| !own.iter().any(|l| self.has(l, name)))
            .collect()
    }

    /// Every message template with at least one part in some language,
    /// sorted: the built-in ones and those the templates dir adds.
    pub fn messages(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.variants.iter().filter_map(|(_, name)| message_of(name)).collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// Every locale with at least one template, sorted.
    pub fn locales(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.variants.iter().map(|(l, _)| l).collect();
        set.into_iter().cloned().collect()
    }

    /// Renders every template in every language with a sample invoice, so
    /// `payrelay check` catches a template that names a field that does
    /// not exist. A message's parts are rendered as the first request and
    /// as journey steps before, on and after the due date, so each branch
    /// on `days_to_due` is tried; the first failure of each is reported.
    pub fn check_with_sample(&self) -> Vec<TemplateProblem> {
        let sample = sample_view();
        self.variants
            .iter()
            .filter_map(|(locale, name)| {
                let samples = match name.as_str() {
                    "gone.html" => sample_answers(&sample, "reason", &GONE_REASONS, false),
                    "notice.html" => sample_answers(&sample, "notice", &NOTICES, true),
                    _ => sample_steps(&sample, message_of(name).unwrap_or(FIRST_TEMPLATE)),
                };
                samples
                    .iter()
                    .find_map(|data| self.render_variant(locale, name, data).err())
            })
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
/// for any locale and name, with each message other than `payment_request`
/// in its folder (`<dir>/<locale>/<template>/<part>.hbs`), and
/// `<dir>/<name>.hbs` for English `payment_request` and the pay page.
fn read_overrides(dir: &Path, sources: &mut BTreeMap<(String, String), Source>, problems: &mut Vec<TemplateProblem>) {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                let folder = entry.file_name().to_string_lossy().into_owned();
                // A part's first folder ("email") is no locale.
                if !path.is_dir() || CHANNEL_FOLDERS.contains(&folder.as_str()) {
                    continue;
                }
                if let Some(tag) = locale::canonical(&folder) {
                    found.push((tag, path));
                } else if holds_parts(&path) {
                    // Read as nothing, it would be a silent no-op.
                    problems.push(TemplateProblem {
                        location: path.display().to_string(),
                        reason: format!(
                            "a message's folder goes inside a language folder ({}/en/{folder}/sms/body.hbs)",
                            dir.display()
                        ),
                    });
                }
            }
        }
        Err(e) => problems.push(TemplateProblem {
            location: dir.display().to_string(),
            reason: format!("cannot list: {e}"),
        }),
    }
    found.sort();
    // (locale, registered name, file), in the order they are read.
    let mut files: Vec<(String, String, PathBuf)> = Vec::new();
    for (tag, folder) in &found {
        for name in NAMES.into_iter().chain(PAGES) {
            files.push((tag.clone(), name.to_owned(), folder.join(format!("{name}.hbs"))));
        }
        for (template, template_dir) in message_folders(folder, problems) {
            for part in MESSAGE_PARTS {
                let file = template_dir.join(format!("{part}.hbs"));
                files.push((tag.clone(), part_name(&template, part), file));
            }
        }
    }
    for name in NAMES {
        files.push((
            locale::FALLBACK.to_owned(),
            name.to_owned(),
            dir.join(format!("{name}.hbs")),
        ));
    }
    for (tag, name, path) in files {
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
        let slot = (tag.clone(), name.clone());
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

/// The message folders in a locale folder, sorted: every folder but the
/// channels' whose name is a message template's. A folder holding parts
/// under a name that cannot be one is reported, not skipped silently.
fn message_folders(locale_dir: &Path, problems: &mut Vec<TemplateProblem>) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(locale_dir) else {
        return Vec::new();
    };
    let mut folders = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || CHANNEL_FOLDERS.contains(&name.as_str()) {
            continue;
        }
        let problem = if name == FIRST_TEMPLATE {
            format!(
                "{FIRST_TEMPLATE}'s parts sit directly in the language folder (email/subject.hbs, sms/body.hbs, ...)"
            )
        } else {
            match check_message_name(&name) {
                Ok(()) => {
                    folders.push((name, path));
                    continue;
                }
                Err(e) if holds_parts(&path) => e,
                Err(_) => continue,
            }
        };
        problems.push(TemplateProblem {
            location: path.display().to_string(),
            reason: problem,
        });
    }
    folders.sort();
    folders
}

/// Whether a folder has a channel's folder of message parts in it.
fn holds_parts(dir: &Path) -> bool {
    CHANNEL_FOLDERS.iter().any(|channel| dir.join(channel).is_dir())
}

/// Template data for a made-up invoice, built by [`view`] like a real one,
/// so `payrelay check` can render each template and config snippet once:
/// the first request, three days before its due date. It has no
/// `metadata`, as many invoices do not, so a template must guard what it
/// reads there (`{{#if metadata.contract}}`).
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
            let today = invoice.due_date - time::Duration::days(3);
            let first = Message::first_request();
            let view = View::new(
                &invoice,
                "sample",
                &biller,
                "https://pay.example/p/SAMPLE-TOKEN",
                &first,
                today,
            );
            let mut data = view.data;
            data["status"] = json!("open");
            data["checkout_path"] = json!("/p/SAMPLE-TOKEN/pay");
            // The pay page's "remind me by" form and the unsubscribe page's
            // fields (see `server::debtors`).
            data["saved"] = json!(false);
            let options = json!([{"name": "email", "selected": true}, {"name": "sms", "selected": false}]);
            data["preferences"] = json!({
                "action": "/p/SAMPLE-TOKEN/preferences",
                "show": true,
                "slots": [{"position": 1, "options": options}, {"position": 2, "options": options}],
                "stops": [{"name": "email", "stopped": false}, {"name": "sms", "stopped": true}],
            });
            data["unsubscribed"] = json!(false);
            data["unsubscribe_path"] = json!("/u/SAMPLE-TOKEN");
            // The gone page's and the notice's (see `PAGES`).
            data["reason"] = json!("expired");
            data["notice"] = json!("bad_form");
            data["back_path"] = json!("/p/SAMPLE-TOKEN");
            // Two invoices listed, for the combined message (the others
            // ignore them).
            let mut second = (*invoice).clone();
            second.key.invoice_id = "INV-SAMPLE-2".into();
            second.description = None;
            // Same currency, so this cannot fail.
            let _ = add_list(&mut data, &[&invoice, &second], "en");
            data
        }
        // The sample is fixed text that parses; an empty view would make
        // every template report its fields missing, which says as much.
        _ => json!({}),
    }
}

/// Why a link answers 410 on the gone page: its `reason`.
pub const GONE_REASONS: [&str; 3] = ["expired", "cancelled", "replaced"];

/// The notice page's `notice`s.
pub const NOTICES: [&str; 7] = [
    "not_found",
    "throttled",
    "unavailable",
    "forbidden",
    "bad_form",
    "not_handled",
    "unsubscribed",
];

/// The sample with `field` set to each of `values`; with `unknown`, each
/// also as a page that knows no invoice: `biller` null, like a 404's.
fn sample_answers(sample: &serde_json::Value, field: &str, values: &[&str], unknown: bool) -> Vec<serde_json::Value> {
    let mut samples = Vec::new();
    for value in values {
        let mut data = sample.clone();
        data[field] = json!(value);
        if unknown {
            let mut bare = json!({"notice": value, "biller": null, "locale": "en", "locale_chain": ["en"]});
            bare[field] = json!(value);
            samples.push(bare);
        }
        samples.push(data);
    }
    samples
}

/// The sample as message `template` at the first request and at journey
/// steps from three days before the due date to five days after it: every
/// branch the built-in templates take on the days.
fn sample_steps(sample: &serde_json::Value, template: &str) -> Vec<serde_json::Value> {
    [
        (None, 3),
        (Some("sample_step"), 1),
        (Some("sample_step"), 0),
        (Some("sample_step"), -1),
        (Some("sample_step"), -5),
    ]
    .into_iter()
    .map(|(step, days_to_due): (Option<&str>, i64)| {
        let mut data = sample.clone();
        data["template"] = json!(template);
        data["step"] = json!(step);
        data["days_to_due"] = json!(days_to_due);
        data["days_overdue"] = json!((-days_to_due).max(0));
        data
    })
    .collect()
}

/// The sum of invoices of one currency, as an amount of that currency:
/// what a combined message and its pay page ask for.
pub fn total_of(invoices: &[&Invoice]) -> Result<crate::domain::money::Amount, String> {
    let first = invoices.first().ok_or("no invoice to add up")?;
    let currency = &first.amount.currency;
    let mut minor: i64 = 0;
    for invoice in invoices {
        if invoice.amount.currency != *currency {
            return Err(format!(
                "invoices in {currency} and {} cannot be added up",
                invoice.amount.currency
            ));
        }
        minor = minor
            .checked_add(invoice.amount.minor)
            .ok_or("the total is too large")?;
    }
    let mut total = crate::domain::money::Amount {
        minor,
        currency: currency.clone(),
        text: String::new(),
    };
    total.text = total.to_decimal_string();
    Ok(total)
}

/// Adds what a combined message lists to a view's data: `invoices`,
/// `count` and `total` (also as `amount`, so a template or a WhatsApp
/// parameter that shows `amount.display` shows the total), formatted for
/// `locale`.
pub fn add_combined(data: &mut serde_json::Value, invoices: &[&Invoice], locale: &str) -> Result<(), String> {
    add_list(data, invoices, locale)?;
    if let Some(fields) = data.as_object_mut() {
        fields.insert("amount".into(), fields.get("total").cloned().unwrap_or_default());
    }
    Ok(())
}

/// `invoices`, `count` and `total` of [`add_combined`], `amount` untouched.
pub fn add_list(data: &mut serde_json::Value, invoices: &[&Invoice], locale: &str) -> Result<(), String> {
    let total = total_of(invoices)?;
    let listed: Vec<serde_json::Value> = invoices
        .iter()
        .map(|invoice| {
            json!({
                "id": invoice.key.invoice_id,
                "description": invoice.description,
                "due_date": format::iso_date(invoice.due_date),
                "due_date_display": date(invoice.due_date, locale),
                "amount": amount_data(&invoice.amount, locale),
            })
        })
        .collect();
    if let Some(fields) = data.as_object_mut() {
        fields.insert("invoices".into(), json!(listed));
        fields.insert("count".into(), json!(invoices.len()));
        fields.insert("total".into(), amount_data(&total, locale));
    }
    Ok(())
}

fn amount_data(amount: &crate::domain::money::Amount, locale: &str) -> serde_json::Value {
    json!({
        "value": amount.to_decimal_string(),
        "currency": amount.currency,
        "display": money(amount, locale),
        "minor": amount.minor,
    })
}

/// The data every template sees for an invoice's first request, as of
/// today in UTC: the pay page's. Messages use [`View::new`], with the
/// customer's date.
pub fn view(invoice: &Invoice, biller_id: &str, biller: &BillerConfig, pay_url: &str) -> serde_json::Value {
    let first = Message::first_request();
    let today = time::OffsetDateTime::now_utc().date();
    View::new(invoice, biller_id, biller, pay_url, &first, today).data
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
    /// The message template the parts are rendered from (WhatsApp maps it
    /// to an approved template).
    pub template: &'a str,
    /// The journey step sending it; `None` for the first request.
    pub step: Option<&'a str>,
    /// The due date minus today: negative once it has passed.
    pub days_to_due: i64,
    /// Today minus the due date when positive, else 0.
    pub days_overdue: i64,
    /// What templates render from: the same data as [`view`].
    pub data: serde_json::Value,
}

impl<'a> View<'a> {
    /// The view of `message` for `invoice`, as of `today`: the customer's
    /// date (in their time zone, else the biller's), which the caller
    /// knows and this does not.
    pub fn new(
        invoice: &'a Invoice,
        biller_id: &str,
        biller: &'a BillerConfig,
        pay_url: &'a str,
        message: &'a Message,
        today: time::Date,
    ) -> View<'a> {
        let customer_locale = invoice.customer.locale.as_deref();
        let biller_locale = biller.default_locale.as_deref();
        let locale = customer_locale.or(biller_locale).unwrap_or(locale::FALLBACK);
        let days_to_due = (invoice.due_date - today).whole_days();
        let days_overdue = (-days_to_due).max(0);
        let mut data = data(invoice, biller_id, biller, pay_url, locale);
        if let Some(fields) = data.as_object_mut() {
            fields.insert("template".into(), json!(message.template));
            fields.insert("step".into(), json!(message.step));
            fields.insert("days_to_due".into(), json!(days_to_due));
            fields.insert("days_overdue".into(), json!(days_overdue));
            fields.insert("metadata".into(), invoice.metadata.clone().unwrap_or_default());
        }
        View {
            pay_url,
            locale,
            template: &message.template,
            step: message.step.as_deref(),
            days_to_due,
            days_overdue,
            data,
        }
    }
}

fn data(invoice: &Invoice, biller_id: &str, biller: &BillerConfig, pay_url: &str, locale: &str) -> serde_json::Value {
    let customer_locale = invoice.customer.locale.as_deref();
    let biller_locale = biller.default_locale.as_deref();
    json!({
        "customer": {"name": invoice.customer.name, "id": invoice.customer.id},
        "biller": biller_data(biller_id, biller),
        "checkout_host": crate::paylink::checkout_host(&biller.checkout_url, biller_id),
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

/// The accent of a biller without `brand_color`.
pub const DEFAULT_COLOR: &str = "#0b6bcb";

/// What templates know of the biller: `id`, `name`, `support`, `color`
/// (`brand_color`, else [`DEFAULT_COLOR`]), `color_text` (white or near
/// black, whichever reads better on `color`), and `logo` (the path payrelay
/// serves it at, or null).
fn biller_data(biller_id: &str, biller: &BillerConfig) -> serde_json::Value {
    let color = biller.brand_color.as_deref().unwrap_or(DEFAULT_COLOR);
    let logo = biller
        .logo
        .as_ref()
        .map(|logo| format!("/brand/{biller_id}/logo?v={}", logo.version));
    json!({
        "id": biller_id,
        "name": biller.name,
        "support": biller.support,
        "color": color,
        "color_text": text_color_on(color),
        "logo": logo,
    })
}

/// White or near black (`#1f2933`, the pages' text), whichever has the
/// higher WCAG contrast on `background` (`#rrggbb`): a light brand colour
/// gets dark text on its button, a dark one white.
pub fn text_color_on(background: &str) -> &'static str {
    let channel = |i: usize| {
        let value = background
            .get(1 + 2 * i..3 + 2 * i)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        let c = f64::from(value) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = |r: f64, g: f64, b: f64| 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let background = luminance(channel(0), channel(1), channel(2));
    let contrast = |a: f64, b: f64| (a.max(b) + 0.05) / (a.min(b) + 0.05);
    // #1f2933's relative luminance.
    let dark = luminance(0.0137, 0.0222, 0.0331);
    if contrast(1.0, background) >= contrast(background, dark) {
        "#ffffff"
    } else {
        "#1f2933"
    }
}

#[cfg(test)]
mod tests;
