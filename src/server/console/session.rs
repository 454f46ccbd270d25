//! Signing in to the console, the session cookie and the forms' CSRF token.
//!
//! One signs in with a bearer token (`[http] admin_token`, or a biller's
//! `api_token`) posted from the sign-in form; it is never put in a URL or
//! a log line. The session is the cookie `payrelay_console`:
//! `<caller>|<expiry>|<mac>`, where the MAC is HMAC-SHA256 over
//! `<caller>|<expiry>` under a key derived from the token that signed in.
//! Nothing is stored, so a session survives restarts and works on every
//! instance; changing a token ends its sessions (their MAC no longer
//! checks), and a session ends after [`SESSION_LIFETIME`] or on sign-out.
//!
//! CSRF: the cookie is `SameSite=Strict`, every POST form carries a token
//! derived from the session's MAC (checked in constant time), and a
//! browser's cross-site POST is refused on its `Origin` /
//! `Sec-Fetch-Site` (see [`cross_site`]).

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::info;

use super::{page, HOME};
use crate::config::Config;
use crate::server::auth::{token_caller, Caller};
use crate::server::{AppError, AppState};

/// The session cookie's name.
pub const COOKIE: &str = "payrelay_console";
/// How long a session lasts after signing in.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;
/// [`SESSION_LIFETIME_SECS`] for people.
pub const SESSION_LIFETIME: &str = "12 hours";

type HmacSha256 = Hmac<Sha256>;

/// A signed-in visitor of the console.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The token every POST form of this session carries.
    pub csrf: String,
}

impl Session {
    /// The biller this session is limited to; `None` for the admin.
    pub fn biller(&self) -> Option<&str> {
        match &self.caller {
            Caller::Admin => None,
            Caller::Biller(id) => Some(id),
        }
    }

    /// What the pages show of who is signed in, and the forms' token.
    pub fn view(&self) -> serde_json::Value {
        json!({
            "who": match &self.caller {
                Caller::Admin => "admin".to_owned(),
                Caller::Biller(id) => format!("biller {id}"),
            },
            "admin": self.caller == Caller::Admin,
            "csrf": self.csrf,
        })
    }

    /// The 403 for a POST that is cross-site or lacks this session's CSRF
    /// token (field `csrf` of the form `body`); `None` lets it through.
    pub fn refuse_form(&self, state: &AppState, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        let offered = form_field(body, "csrf").unwrap_or_default();
        let token_ok = bool::from(offered.as_bytes().ct_eq(self.csrf.as_bytes()));
        if cross_site(&state.config.http.public_base_url, headers) || !token_ok {
            info!("console form refused: cross-site or without its CSRF token");
            return Some(forbidden());
        }
        None
    }
}

/// A browser's POST from another site ([`crate::server::pages::from_another_site`]):
/// the console is ours at `public_base_url`'s origin and at the one the
/// request was sent to (its `Host`: the console may be served on `[http]
/// admin_listen`, whose address is not the public one).
fn cross_site(public_base_url: &url::Url, headers: &HeaderMap) -> bool {
    let public = public_base_url.origin().ascii_serialization();
    // The admin address is often plain HTTP while the public one is not.
    let own: Vec<String> = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(|host| vec![format!("http://{host}"), format!("https://{host}")])
        .unwrap_or_default();
    let mut ours = vec![public.as_str()];
    ours.extend(own.iter().map(String::as_str));
    crate::server::pages::from_another_site(headers, &ours)
}

/// A form's first field `name`, decoded.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn forbidden() -> Response {
    crate::server::message_page(
        StatusCode::FORBIDDEN,
        "Not allowed",
        "This form can only be sent from its own console page. Go back, reload the page and try again.",
    )
}

/// The key a session's MACs are made with: derived from the token that
/// signed in, so a new token ends the old one's sessions. (HMAC takes a
/// key of any length: `None` never happens.)
fn session_key(token: &str) -> Option<Vec<u8>> {
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).ok()?;
    mac.update(b"payrelay console session v1");
    Some(mac.finalize().into_bytes().to_vec())
}

fn mac_hex(key: &[u8], parts: &[&str]) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(parts.join("|").as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// The caller as the cookie names it.
fn caller_name(caller: &Caller) -> String {
    match caller {
        Caller::Admin => "admin".to_owned(),
        Caller::Biller(id) => format!("biller:{id}"),
    }
}

/// The token of the caller a cookie names, as configured now.
fn token_of<'a>(config: &'a Config, name: &str) -> Option<(Caller, &'a str)> {
    if name == "admin" {
        let token = config.http.admin_token.as_ref()?;
        return Some((Caller::Admin, token.expose()));
    }
    let id = name.strip_prefix("biller:")?;
    let token = config.billers.get(id)?.api_token.as_ref()?;
    Some((Caller::Biller(id.to_owned()), token.expose()))
}

/// The cookie's value for `caller`, signed in with `token`, until `expiry`
/// (Unix seconds).
fn cookie_value(caller: &Caller, token: &str, expiry: i64) -> Option<String> {
    let name = caller_name(caller);
    let expiry = expiry.to_string();
    let mac = mac_hex(&session_key(token)?, &[&name, &expiry])?;
    Some(format!("{name}|{expiry}|{mac}"))
}

/// The session a cookie value stands for, if its MAC checks under the
/// caller's current token and it has not expired at `now_secs`.
fn session_of(config: &Config, value: &str, now_secs: i64) -> Option<Session> {
    let mut parts = value.splitn(3, '|');
    let (name, expiry, offered) = (parts.next()?, parts.next()?, parts.next()?);
    if expiry.parse::<i64>().ok()? <= now_secs {
        return None;
    }
    let (caller, token) = token_of(config, name)?;
    let key = session_key(token)?;
    let expected = mac_hex(&key, &[name, expiry])?;
    if !bool::from(expected.as_bytes().ct_eq(offered.as_bytes())) {
        return None;
    }
    let csrf = mac_hex(&key, &["csrf", &expected])?;
    Some(Session { caller, csrf })
}

/// The `Set-Cookie` value of a new session, or (`value` empty) the one
/// that ends it.
fn set_cookie(config: &Config, value: &str, max_age: i64) -> String {
    let secure = if config.http.public_base_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// The session cookie's value among the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The request's session, if it has a valid one.
pub fn current(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let now_secs = state.clock.now_ms() / 1000;
    session_of(&state.config, cookie(headers)?, now_secs)
}

/// A page that needs a session sends a visitor without one to sign in.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Session, Response> {
        current(state, &parts.headers).ok_or_else(|| Redirect::to(HOME).into_response())
    }
}

/// The sign-in page; `problem` says why the last try failed.
pub fn sign_in_page(code: StatusCode, problem: Option<&str>) -> Result<Response, AppError> {
    page(
        code,
        "sign_in",
        "Sign in",
        json!({"problem": problem, "lifetime": SESSION_LIFETIME}),
    )
}

/// `POST /console/sign-in`: a token that belongs to the admin or a biller
/// starts a session; any other answers the sign-in page again with 401.
pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    if cross_site(&state.config.http.public_base_url, &headers) {
        info!("console sign-in posted from another site; refused");
        return Ok(forbidden());
    }
    let token = form_field(&body, "token").unwrap_or_default();
    let token = token.trim();
    let Some(caller) = token_caller(&state.config, token) else {
        info!("console sign-in with a token that is not known here");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not known here: use [http] admin_token, or a biller's api_token."),
        );
    };
    let expiry = state.clock.now_ms() / 1000 + SESSION_LIFETIME_SECS;
    let Some(value) = cookie_value(&caller, token, expiry) else {
        return Err(AppError("could not sign a console session".into()));
    };
    info!(who = %caller_name(&caller), "console sign-in");
    let cookie = set_cookie(&state.config, &value, SESSION_LIFETIME_SECS);
    Ok(see_other_with_cookie(HOME, &cookie))
}

/// `POST /console/sign-out`: clears the cookie (with the CSRF token, so
/// another site cannot sign one out).
pub async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if let Some(refused) = session.refuse_form(&state, &headers, &body) {
        return Ok(refused);
    }
    Ok(see_other_with_cookie(HOME, &set_cookie(&state.config, "", 0)))
}

fn see_other_with_cookie(location: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(location).into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(admin: &str, acme: &str) -> Config {
        let toml = format!(
            "[http]\nadmin_token = \"{admin}\"\npublic_base_url = \"https://pay.example\"\n\
             [billers.acme]\ncheckout_url = \"https://a.example/{{token}}\"\napi_token = \"{acme}\"\n\
             [channels.email]\ntransport = \"file\"\n"
        );
        Config::from_toml(&toml, Path::new("/srv/payrelay"), &|_| None).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_session_names_its_caller_until_it_expires() {
        let config = config("root-token", "acme-token");
        let admin = cookie_value(&Caller::Admin, "root-token", NOW + 60).unwrap();
        assert_eq!(session_of(&config, &admin, NOW).unwrap().caller, Caller::Admin);
        let acme = cookie_value(&Caller::Biller("acme".into()), "acme-token", NOW + 60).unwrap();
        let session = session_of(&config, &acme, NOW).unwrap();
        assert_eq!(session.biller(), Some("acme"));
        assert!(session_of(&config, &acme, NOW + 60).is_none(), "expired");
    }

    #[test]
    fn a_changed_mac_caller_or_expiry_is_no_session() {
        let config = config("root-token", "acme-token");
        let acme = cookie_value(&Caller::Biller("acme".into()), "acme-token", NOW + 60).unwrap();
        let tampered = [
            acme.replacen("biller:acme", "admin", 1),
            acme.replacen(&(NOW + 60).to_string(), &(NOW + 6000).to_string(), 1),
            format!("{}0", &acme[..acme.len() - 1]),
            cookie_value(&Caller::Admin, "acme-token", NOW + 60).unwrap(),
            String::new(),
            "admin".into(),
        ];
        for value in tampered {
            assert!(session_of(&config, &value, NOW).is_none(), "{value}");
        }
    }

    #[test]
    fn a_new_token_ends_the_old_ones_sessions() {
        let before = config("root-token", "acme-token");
        let value = cookie_value(&Caller::Admin, "root-token", NOW + 60).unwrap();
        assert!(session_of(&before, &value, NOW).is_some());
        assert!(session_of(&config("new-root-token", "acme-token"), &value, NOW).is_none());
    }

    #[test]
    fn each_session_has_its_own_csrf_token() {
        let config = config("root-token", "acme-token");
        let one = session_of(
            &config,
            &cookie_value(&Caller::Admin, "root-token", NOW + 60).unwrap(),
            NOW,
        )
        .unwrap();
        let two = session_of(
            &config,
            &cookie_value(&Caller::Admin, "root-token", NOW + 61).unwrap(),
            NOW,
        )
        .unwrap();
        assert_eq!(one.csrf.len(), 64);
        assert_ne!(one.csrf, two.csrf);
    }

    #[test]
    fn a_post_is_cross_site_unless_from_the_public_origin_or_the_one_it_was_sent_to() {
        let public = url::Url::parse("https://pay.example/").unwrap();
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        let same = [
            vec![],
            vec![("origin", "https://pay.example"), ("sec-fetch-site", "same-origin")],
            vec![("origin", "http://10.0.0.5:9090"), ("host", "10.0.0.5:9090")],
            // A browser posting a page to itself under `no-referrer`.
            vec![("origin", "null"), ("sec-fetch-site", "same-origin")],
        ];
        for pairs in same {
            assert!(!cross_site(&public, &headers(&pairs)), "{pairs:?}");
        }
        let cross = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "https://evil.example"), ("host", "pay.example")],
            vec![("origin", "null")],
            vec![("origin", "https://pay.example"), ("sec-fetch-site", "cross-site")],
        ];
        for pairs in cross {
            assert!(cross_site(&public, &headers(&pairs)), "{pairs:?}");
        }
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let cookie = set_cookie(&config("r", "a"), "v", 10);
        assert_eq!(
            cookie,
            "payrelay_console=v; Path=/console; Max-Age=10; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
