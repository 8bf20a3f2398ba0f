//! Start the real `switchyard` binary, wait for its readiness line (never a sleep), talk to
//! it, and stop it by PID when the test ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// How long a controller may take to load the shipped policies and bind (debug build).
const READY_WITHIN: Duration = Duration::from_secs(120);

pub struct Controller {
    child: Child,
    pub url: String,
    pub token: String,
    /// Every stderr line so far (the log), filled by a reader thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Controller {
    /// `switchyard demo --listen 127.0.0.1:0 --policies <dir>`.
    pub fn demo(policies: &Path) -> Controller {
        let mut child = Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--policies"])
            .arg(policies)
            .env("SWITCHYARD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchyard demo");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_WITHIN;
        let (mut url, mut token) = (None, None);
        while url.is_none() || token.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "switchyard demo printed no URL and token within {READY_WITHIN:?}; log:\n{}",
                    log.lock().expect("log").join("\n")
                )
            });
            if let Some(rest) = line.strip_prefix("switchyard listening on ") {
                url = Some(rest.trim().to_owned());
            }
            if let Some(at) = line.find("SWITCHYARD_ADMIN_TOKEN=") {
                token = Some(
                    line[at + "SWITCHYARD_ADMIN_TOKEN=".len()..]
                        .trim()
                        .to_owned(),
                );
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Controller {
            child,
            url: url.expect("url"),
            token: token.expect("token"),
            log,
        }
    }

    /// Run the CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SWITCHYARD_CONTROLLER", &self.url)
            .env("SWITCHYARD_ADMIN_TOKEN", &self.token)
            .env("NO_COLOR", "1")
            .output()
            .expect("run switchyard CLI")
    }

    /// Run the CLI and return its stdout, failing the test if it failed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "switchyard {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `GET /admin/policies` as JSON.
    pub fn policies(&self) -> serde_json::Value {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(format!("{}/admin/policies", self.url))
            .output()
            .expect("curl");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "policies JSON: {e}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    pub fn active(&self) -> String {
        self.policies()["active"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Poll `condition` every 100 ms for at most `within`; true if it held.
    pub fn wait_for(&self, within: Duration, mut condition: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if condition(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        condition(self)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Send SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("switchyard did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A private copy of the repository's `policies/` (so tests may edit it).
pub fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    copy_dir(&source, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read policies") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
