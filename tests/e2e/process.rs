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
    /// Where agents link in (`serve` with `[agents]`).
    pub agents: Option<String>,
    /// The prompt API key the demo printed.
    pub api_key: Option<String>,
    /// Stdout after the readiness lines.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every stderr line so far (the log), filled by a reader thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A child process whose stdout lines and stderr log are collected by reader threads.
struct Spawned {
    child: Child,
    stdout: mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn spawn(mut command: Command) -> Spawned {
    let mut child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start process");
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
    Spawned { child, stdout: rx, log }
}

impl Spawned {
    /// Read stdout until every prefix has been seen once; returns what followed each.
    fn wait_for_lines(&mut self, prefixes: &[&str], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stdout.recv_timeout(left) else {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "no {prefixes:?} on stdout within {within:?}; log:\n{}",
                    self.log.lock().expect("log").join("\n")
                );
            };
            for (i, prefix) in prefixes.iter().enumerate() {
                if found[i].is_none()
                    && let Some(at) = line.find(prefix)
                {
                    found[i] = Some(line[at + prefix.len()..].trim().to_owned());
                }
            }
        }
        found.into_iter().map(|f| f.unwrap_or_default()).collect()
    }

    /// Keep draining stdout so the child never blocks on a full pipe.
    fn drain(&mut self) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        let (_, rx) = mpsc::channel();
        let stdout = std::mem::replace(&mut self.stdout, rx);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            while let Ok(line) = stdout.recv() {
                sink.lock().expect("stdout").push(line);
            }
        });
        lines
    }
}

/// Send SIGTERM to `child` and wait (bounded) for its exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within 20 s of SIGTERM", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Controller {
    /// `switchyard demo --listen 127.0.0.1:0 --policies <dir>`.
    pub fn demo(policies: &Path) -> Controller {
        Self::demo_with(policies, &[])
    }

    /// The demo with more arguments (`--local-runtime URL ...`).
    pub fn demo_with(policies: &Path, extra: &[&str]) -> Controller {
        let mut command = Command::new(BIN);
        command
            .args(["demo", "--listen", "127.0.0.1:0", "--policies"])
            .arg(policies)
            .args(extra)
            .env_remove("SWITCHYARD_LOG"); // as a user runs it: the demo's own log settings
        let mut spawned = spawn(command);
        let found = spawned.wait_for_lines(
            &[
                "switchyard listening on ",
                "SWITCHYARD_ADMIN_TOKEN=",
                "OPENAI_API_KEY=",
                "Requests as they are routed",
            ],
            READY_WITHIN,
        );
        let stdout = spawned.drain();
        let word = |s: &str| s.split_whitespace().next().unwrap_or_default().to_owned();
        Controller {
            stdout,
            child: spawned.child,
            url: found[0].clone(),
            token: word(&found[1]),
            api_key: Some(word(&found[2])),
            agents: None,
            log: spawned.log,
        }
    }

    /// `switchyard serve --config <config> --listen 127.0.0.1:0 [--agents-listen <addr>]`;
    /// the admin token is read from `token_file`.
    pub fn serve(config: &Path, token: &str, agents_listen: &str) -> Controller {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--agents-listen",
                agents_listen,
                "--config",
            ])
            .arg(config)
            .env("SWITCHYARD_LOG", "info");
        let mut spawned = spawn(command);
        let found = spawned.wait_for_lines(&["switchyard listening on ", "agents link to "], READY_WITHIN);
        let stdout = spawned.drain();
        let agents = found[1].split_whitespace().next().map(str::to_owned);
        Controller {
            stdout,
            child: spawned.child,
            url: found[0].clone(),
            token: token.to_owned(),
            api_key: None,
            agents,
            log: spawned.log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn active_id(&self) -> String {
        self.admin("/admin/policies")["active"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `GET` an admin endpoint as JSON.
    pub fn admin(&self, path: &str) -> serde_json::Value {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("curl");
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&output.stdout)))
    }

    /// Whether the node table lists `node` as healthy (`None`: not listed).
    pub fn node_healthy(&self, node: &str) -> Option<bool> {
        let nodes = self.admin("/admin/nodes");
        nodes["snapshot"]["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["healthy"].as_bool())
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
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("policies JSON: {e}: {}", String::from_utf8_lossy(&output.stdout)))
    }

    pub fn active(&self) -> String {
        self.policies()["active"].as_str().unwrap_or_default().to_owned()
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

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().expect("stdout").join("\n")
    }

    /// Send SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SIGTERM first: a demo stops its agent processes on the way out.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A private copy of the repository's `policies/` (so tests may edit it).
pub fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = crate::runtimes::repo().join("policies");
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

/// The agent binary, built beside `switchyard` by the workspace build.
pub fn agent_bin() -> std::path::PathBuf {
    let path = Path::new(BIN).with_file_name("switchyard-agent");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p switchyard-agent`",
        path.display()
    );
    path
}

/// A real `switchyard-agent run` process.
pub struct Agent {
    child: Child,
    /// The agent's local API.
    #[allow(dead_code)]
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Agent {
    /// Start the agent with `config`, optionally inside a network namespace.
    pub fn start(config: &Path, netns: Option<&str>) -> Agent {
        Self::start_with_env(config, netns, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, netns: Option<&str>, env: &[(&str, &str)]) -> Agent {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        command
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().copied());
        let mut spawned = spawn(command);
        let found = spawned.wait_for_lines(&[" listening on "], Duration::from_secs(60));
        let _ = spawned.drain();
        Agent {
            child: spawned.child,
            url: found[0].clone(),
            log: spawned.log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `condition` every 50 ms for at most `within`; true as soon as it holds.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// `curl -i` against `url` with a bearer `key`; returns the status and the whole response
/// (headers and body) as text.
pub fn curl_with_key(url: &str, key: &str, args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "30",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// The node that served an answer, from its `x-switchyard-node` header (`curl -i` text).
pub fn served_by(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("x-switchyard-node: "))
        .unwrap_or("none")
        .trim()
        .to_owned()
}
