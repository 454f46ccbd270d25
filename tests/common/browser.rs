//! A real browser for tests that look at pages as a person does: headless
//! Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them), by the fantoccini client.
//!
//! [`Browser::start`] runs `chromedriver` on a free port and opens a session
//! that shows pages as a phone of the size asked for does (Chrome's mobile
//! emulation: a phone is 360 CSS px wide; a headless window cannot be
//! narrower than 500), asking for pages in the languages given
//! (`Accept-Language`). chromedriver runs in a process group of its own,
//! with the browser it starts: [`Browser::close`] ends the session, and
//! dropping the [`Browser`] (a failed test) kills the whole group, so no
//! browser outlives its test. Without chromedriver the test fails, saying how to install
//! it: a page test that skips itself tests nothing.
//!
//! Screenshots go to `screenshots/` in the target folder
//! (`target/screenshots/<name>.png`), to be looked at.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long chromedriver may take to answer its status after starting.
const DRIVER_START: Duration = Duration::from_secs(20);

/// Device pixels per CSS pixel in screenshots, as on most phones.
const PIXEL_RATIO: f64 = 2.0;

/// A browser window, and the chromedriver it runs under.
pub struct Browser {
    pub client: Client,
    driver: Child,
    width: u32,
}

/// The folder screenshots are saved in: `screenshots/` in the target folder.
pub fn screenshots_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map_or(tmp.clone(), |target| target.join("screenshots"))
}

impl Browser {
    /// A headless Chromium showing pages as a phone `width` x `height` CSS
    /// pixels does, whose requests ask for `languages` (an
    /// `Accept-Language` value, such as `"es-ES,es"`).
    pub async fn start(width: u32, height: u32, languages: &str) -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's {package} \
                 (`apt-get install -y chromium chromium-driver`, as .ci/run does)"
            );
        }
        let port = super::process::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        // Owned from here, so a failure below still kills it.
        let mut browser_driver = DriverGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&url).await;

        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                format!("--window-size={width},{height}"),
                format!("--lang={}", languages.split(',').next().unwrap_or("en")),
            ],
            "prefs": {"intl.accept_languages": languages},
            "mobileEmulation": {
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": PIXEL_RATIO, "mobile": true, "touch": true},
            },
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session from {CHROMEDRIVER} for {CHROMIUM}: {e}"));
        let driver = browser_driver.0.take().expect("the driver is still owned here");
        Browser { client, driver, width }
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("the browser cannot open {url}: {e}"));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {script}: {e}"))
    }

    /// Types `text` into the first field `css` names.
    pub async fn fill(&self, css: &str, text: &str) {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing on the page matches {css}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Clicks the first element `css` names, as a person would (a form's
    /// button posts the form), and waits until the page shows `expected`.
    pub async fn click_and_wait_for(&self, css: &str, expected: &str) -> String {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing on the page matches {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text().await;
            if text.contains(expected) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("after clicking {css}, the page never showed {expected:?}: {text}");
    }

    /// The page's `<html lang>`.
    pub async fn lang(&self) -> String {
        self.run("return document.documentElement.lang;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text a person reads on the page (`innerText`: no markup, no hidden text).
    pub async fn text(&self) -> String {
        self.run("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The viewport: (`innerWidth`, `innerHeight`).
    pub async fn viewport(&self) -> (u64, u64) {
        let size = self.run("return [window.innerWidth, window.innerHeight];").await;
        (size[0].as_u64().unwrap_or(0), size[1].as_u64().unwrap_or(0))
    }

    /// Fails the test if the page does not fit the phone's screen (see
    /// [`Browser::misfit`]).
    pub async fn assert_fits(&self, what: &str) {
        if let Some(problem) = self.misfit().await {
            panic!("{what}: {problem}");
        }
    }

    /// What keeps the page from fitting the phone's screen: no layout for
    /// the phone's width (no `<meta name="viewport">`: a phone shows it
    /// 980 px wide, tiny), or content wider than the screen, which a person
    /// would have to scroll sideways to read (the elements that stick out
    /// are named). `None` when it fits.
    pub async fn misfit(&self) -> Option<String> {
        let found = self
            .run(
                "const wide = [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
                    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
                 return [document.documentElement.scrollWidth, window.innerWidth, wide];",
            )
            .await;
        let (scroll, inner) = (found[0].as_u64().unwrap_or(u64::MAX), found[1].as_u64().unwrap_or(0));
        if inner != u64::from(self.width) {
            return Some(format!(
                "laid out {inner} px wide, not for the phone's {} px",
                self.width
            ));
        }
        (scroll > inner).then(|| format!("{scroll} px wide in a {inner} px screen; sticking out: {}", found[2]))
    }

    /// Saves the whole page, below the fold too, as
    /// `screenshots/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("the screenshot of {name} is not base64: {e}"));
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("the screenshots folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is written");
        path
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver's
    /// `goog/cdp/execute`), for what WebDriver has no command for.
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd} failed: {e}"))
    }

    /// Ends the session (the browser quits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver and every process of its group (the browser it
/// started, which would outlive a killed chromedriver), then reaps it.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--"])
        .arg(format!("-{}", driver.id()))
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

/// A DevTools command, through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// Kills chromedriver if the session could not be opened.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(mut driver) = self.0.take() {
            kill_group(&mut driver);
        }
    }
}

/// Waits until chromedriver at `url` says it is ready.
async fn wait_until_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + DRIVER_START;
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http.get(format!("{url}/status")).send().await {
            if let Ok(status) = response.json::<Value>().await {
                if status["value"]["ready"] == json!(true) {
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{CHROMEDRIVER} did not answer on {url} within {DRIVER_START:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
