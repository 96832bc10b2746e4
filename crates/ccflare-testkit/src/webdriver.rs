//! A small WebDriver client for the dashboard's browser tests: Debian's `chromium` driven by
//! `chromedriver` over the W3C WebDriver protocol, which is plain JSON over HTTP, spoken with
//! this crate's own HTTP client ([`crate::http`]). Only what the tests use: a session, navigate,
//! find elements, read text, click, type, run a script, take a screenshot, read the browser's
//! console, run a DevTools command.
//!
//! Chromium runs headless with a throwaway profile, no sandbox (tests run as root), and no
//! background networking (no update checks, no safe browsing: nothing leaves the machine).
//! [`Browser::start`] returns `None` when either program is missing, and panics instead when
//! `CI` is set: CI must run these tests, not skip them.

use crate::{GUARD, PROCESS_GUARD, eventually};
use base64::Engine;
use http::Method;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the two programs.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running headless Chromium and its WebDriver session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish()
    }
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// Whether `chromium` and `chromedriver` are installed. Without them, a test returns early
/// (saying so) unless `CI` is set, where it fails.
pub fn available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present && std::env::var_os("CI").is_some() {
        panic!(
            "CI is set and chromium or chromedriver is missing: apt-get install chromium chromium-driver"
        );
    }
    if !present {
        eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (set CI to make this fail)");
    }
    present
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and opens a session of headless Chromium in the time zone `tz`
    /// (an IANA name: the page must show times in the viewer's zone, so the tests pick one
    /// that is not UTC). `None` when the programs are missing ([`available`]).
    pub async fn start(tz: &str) -> Option<Browser> {
        if !available() {
            return None;
        }
        let profile = tempfile::tempdir().expect("a profile dir");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .env("TZ", tz)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let status = format!("{base}/status");
        eventually(PROCESS_GUARD, "chromedriver answers /status", || {
            let status = status.clone();
            async move {
                let request = crate::http::get(&status);
                let answer = tokio::time::timeout(GUARD, crate::client().request(request))
                    .await
                    .ok()?
                    .ok()?;
                let reply = crate::Reply::read(answer).await;
                (reply.json()["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = browser
            .command(Method::POST, "/session", capabilities)
            .await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a WebDriver session: {answer}"))
            .to_owned();
        Some(browser)
    }

    /// One WebDriver command: its `value`; panics on a WebDriver error.
    async fn command(&self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let body = if method == Method::GET || method == Method::DELETE {
            String::new()
        } else {
            body.to_string()
        };
        let reply = crate::send(crate::http::request(
            method.clone(),
            &url,
            &[("content-type", "application/json")],
            body,
        ))
        .await;
        let value = reply.json()["value"].clone();
        assert!(
            reply.status.is_success(),
            "WebDriver {method} {path}: {}",
            reply.text()
        );
        value
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, &self.at("/url"), json!({"url": url}))
            .await;
    }

    /// The elements matching a CSS selector now (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                Method::POST,
                &self.at("/elements"),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn wait_for(&self, css: &str) -> Element {
        eventually(GUARD, &format!("an element {css}"), || async {
            self.find_all(css).await.into_iter().next()
        })
        .await
    }

    pub async fn text(&self, element: &Element) -> String {
        self.command(
            Method::GET,
            &self.at(&format!("/element/{}/text", element.0)),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn click(&self, element: &Element) {
        self.command(
            Method::POST,
            &self.at(&format!("/element/{}/click", element.0)),
            json!({}),
        )
        .await;
    }

    pub async fn type_text(&self, element: &Element, text: &str) {
        self.command(
            Method::POST,
            &self.at(&format!("/element/{}/value", element.0)),
            json!({"text": text}),
        )
        .await;
    }

    /// Empties an input.
    pub async fn clear(&self, element: &Element) {
        self.command(
            Method::POST,
            &self.at(&format!("/element/{}/clear", element.0)),
            json!({}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            Method::POST,
            &self.at("/execute/sync"),
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// A Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`), e.g.
    /// `Emulation.setEmulatedMedia` to show the page in dark mode.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            Method::POST,
            &self.at("/goog/cdp/execute"),
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self
            .command(Method::GET, &self.at("/screenshot"), Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn save_screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("the screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.screenshot().await).expect("the screenshot saved");
        path
    }

    /// The browser console's messages since the last call: (level, text).
    pub async fn console(&self) -> Vec<(String, String)> {
        let entries = self
            .command(
                Method::POST,
                &self.at("/se/log"),
                json!({"type": "browser"}),
            )
            .await;
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_owned(),
                            e["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let path = self.at("");
        self.command(Method::DELETE, &path, Value::Null).await;
        let _ = self.driver.kill().await;
    }
}
