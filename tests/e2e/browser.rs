//! A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol on a
//! loopback WebSocket: navigate, evaluate JavaScript in the page, take a screenshot. The
//! browser runs with its own throw-away profile and is stopped by its PID.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start and print its DevTools address.
const START_WITHIN: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate;
        }
    }
    panic!("no chromium: tests/run-all.sh installs Debian's `chromium` package (apt-get install chromium)");
}

impl Browser {
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--window-size=1500,1100",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (found, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(address.trim().to_owned());
                }
            }
        });
        let browser_ws = lines
            .recv_timeout(START_WITHIN)
            .expect("chromium printed no DevTools address");
        // ws://127.0.0.1:PORT/devtools/browser/ID -> the first page's own socket.
        let port = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .and_then(|host| host.rsplit(':').next())
            .expect("port")
            .to_owned();
        let deadline = Instant::now() + START_WITHIN;
        let page_ws = loop {
            let out = Command::new("curl")
                .args(["-sS", &format!("http://127.0.0.1:{port}/json/list")])
                .output()
                .expect("curl");
            let targets: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let page = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(page) = page {
                break page;
            }
            assert!(Instant::now() < deadline, "chromium has no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(page_ws.as_str()).expect("connect to the page");
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        };
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Send one DevTools command and wait for its answer (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(message)).expect("send");
        loop {
            let message = self.socket.read().expect("read from chromium");
            let Message::Text(text) = message else { continue };
            let value: Value = serde_json::from_str(text.as_str()).expect("json");
            if value["id"] == id {
                if !value["error"].is_null() {
                    return Err(value["error"].to_string());
                }
                return Ok(value["result"].clone());
            }
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluate `expression` in the page; its value (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
    }

    /// As `eval`, but an exception (or a page still loading) is an error, not a panic.
    fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if !result["exceptionDetails"].is_null() {
            return Err(result["exceptionDetails"].to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Poll `expression` every 50 ms until it is true (a page still loading counts as not
    /// yet); how long that took, or `None`.
    pub fn wait_for(&mut self, within: Duration, expression: &str) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if self.try_eval(expression) == Ok(Value::Bool(true)) {
                return Some(started.elapsed());
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The page as a PNG.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let result = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        decode_base64(result["data"].as_str().expect("data"))
    }
}

/// Standard base64 (DevTools sends binary data so).
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.bytes().filter(|b| *b != b'=' && !b.is_ascii_whitespace()) {
        let value = ALPHABET.iter().position(|a| *a == byte).expect("base64 digit") as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
