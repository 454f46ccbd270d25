//! People, not previews: which requests for a pay page are a person opening
//! it, and which are software fetching it on their behalf.
//!
//! Chat apps fetch a link to draw its preview card the moment it is sent or
//! received, and mail scanners fetch every link of a message before anyone
//! reads it. Counted as clicks, those fetches would report an `invoice.clicked`
//! nobody made, credit a payment to a message nobody opened, and tell the
//! journey's escalation that a person saw the request when none did. So a
//! `HEAD`, and a `GET` whose `User-Agent` names one of [`PREVIEWERS`], gets
//! the page and counts as a preview, never as a click.
//!
//! What cannot be told apart: Microsoft's Safe Links (and Defender's
//! sandbox) scans links before delivery with an ordinary desktop Chrome
//! `User-Agent`, from Microsoft's address ranges, and with no header of its
//! own we could rely on; the same holds for other gateways that dress as a
//! browser. Those fetches count as clicks. What Microsoft's Office software
//! fetches under its own name (`ms-office`, `MSOffice`, `Microsoft Office
//! Existence Discovery`, the Office apps checking a link before opening it)
//! is matched below, as is Outlook.com's `BingPreview` and Teams'
//! `SkypeUriPreview`. A request with no `User-Agent` at all counts as a person:
//! every browser sends one, and guessing otherwise would lose real clicks
//! from privacy tools that strip it.

use axum::http::{header, HeaderMap, Method};

/// Case-insensitive fragments of the `User-Agent` of link previewers and
/// mail scanners, each with the name the preview metric counts it under.
/// A fragment must never occur in a browser's own `User-Agent`: the in-app
/// browsers of Facebook and Instagram say `FBAN`/`FB_IAB`, not these.
pub const PREVIEWERS: &[(&str, &str)] = &[
    ("whatsapp", "whatsapp"),
    ("facebookexternalhit", "facebook"),
    ("facebot", "facebook"),
    ("slackbot", "slack"),
    ("slack-imgproxy", "slack"),
    ("telegrambot", "telegram"),
    ("twitterbot", "twitter"),
    ("linkedinbot", "linkedin"),
    ("discordbot", "discord"),
    ("skypeuripreview", "skype"),
    ("googlebot", "google"),
    ("bingbot", "bing"),
    ("bingpreview", "bing"),
    ("applebot", "apple"),
    // Microsoft Office's own fetches, Safe Links' time-of-click check among
    // them; see the module's comment for what is not matched.
    ("ms-office", "microsoft"),
    ("msoffice", "microsoft"),
    ("microsoft office", "microsoft"),
];

/// Who fetched a pay page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visitor {
    Person,
    /// A preview, with the name the metric counts it under.
    Preview(&'static str),
}

/// Whether a request for `/p/{token}` is a person's: not a `HEAD`, and not
/// from a [`PREVIEWERS`] `User-Agent`.
pub fn visitor(method: &Method, headers: &HeaderMap) -> Visitor {
    if method == Method::HEAD {
        return Visitor::Preview("head");
    }
    let Some(agent) = headers.get(header::USER_AGENT) else {
        return Visitor::Person;
    };
    match previewer(agent.as_bytes()) {
        Some(name) => Visitor::Preview(name),
        None => Visitor::Person,
    }
}

/// The [`PREVIEWERS`] name a `User-Agent` matches, if any.
pub fn previewer(agent: &[u8]) -> Option<&'static str> {
    PREVIEWERS
        .iter()
        .find(|(fragment, _)| contains_ignoring_case(agent, fragment.as_bytes()))
        .map(|(_, name)| *name)
}

/// `needle` is lowercase ASCII.
fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_agent(agent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_str(agent).unwrap());
        headers
    }

    #[test]
    fn previewers_and_scanners_are_recognised_whatever_their_case() {
        let cases = [
            ("WhatsApp/2.23.20.0 A", "whatsapp"),
            (
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                "facebook",
            ),
            ("Facebot", "facebook"),
            ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "slack"),
            ("TelegramBot (like TwitterBot)", "telegram"),
            ("Twitterbot/1.0", "twitter"),
            (
                "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
                "linkedin",
            ),
            (
                "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
                "discord",
            ),
            (
                "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
                "skype",
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "google",
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "bing",
            ),
            (
                "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b",
                "bing",
            ),
            (
                "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Applebot/0.1",
                "apple",
            ),
            ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "microsoft"),
            ("Microsoft Office Existence Discovery", "microsoft"),
            ("WHATSAPP/2.2", "whatsapp"),
        ];
        for (agent, name) in cases {
            assert_eq!(
                visitor(&Method::GET, &with_agent(agent)),
                Visitor::Preview(name),
                "{agent}"
            );
        }
    }

    #[test]
    fn browsers_in_app_browsers_and_requests_without_an_agent_are_people() {
        let people = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/470.0;]",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Instagram 337.0",
        ];
        for agent in people {
            assert_eq!(visitor(&Method::GET, &with_agent(agent)), Visitor::Person, "{agent}");
        }
        assert_eq!(visitor(&Method::GET, &HeaderMap::new()), Visitor::Person);
    }

    #[test]
    fn a_head_request_is_never_a_person() {
        let browser = with_agent("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0");
        assert_eq!(visitor(&Method::HEAD, &browser), Visitor::Preview("head"));
        assert_eq!(visitor(&Method::HEAD, &HeaderMap::new()), Visitor::Preview("head"));
    }

    #[test]
    fn a_user_agent_that_is_not_text_is_still_matched() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"Slackbot \xff\xfe").unwrap(),
        );
        assert_eq!(visitor(&Method::GET, &headers), Visitor::Preview("slack"));
    }
}
