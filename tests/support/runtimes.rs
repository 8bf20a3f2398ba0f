#![allow(dead_code)]
//! Real runtimes for the tests, shared by the agent's tests and the end-to-end tests
//! (included with `#[path]`): the tiny model (generated once per test process), llama.cpp
//! and MLX servers started by `tests/runtimes/start.sh`, the Ollama double, and child
//! processes that print their URL. Everything listens on 127.0.0.1 and is stopped by PID.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    // The folder with the workspace's Cargo.lock, above whichever crate runs the test.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the test runs inside the repository")
        .canonicalize()
        .expect("repo root")
}

pub fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/runtimes/setup.sh (tests/run-all.sh does)",
        python.display()
    );
    python
}

/// The tiny model's folder (tiny.gguf, tiny-hf/), generated once per test process (well
/// under a second; nextest runs tests as parallel processes, which must not share a folder
/// being written).
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-model-{}", std::process::id()));
        let status = Command::new(python())
            .arg(repo().join("tests/runtimes/gen_tiny_model.py"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("run gen_tiny_model.py");
        assert!(status.success(), "gen_tiny_model.py failed");
        dir
    })
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A real inference server started by start.sh (not our child: stopped by PID).
pub struct Runtime {
    pub url: String,
    pub pid: u32,
    pub kind: &'static str,
    _dir: tempfile::TempDir,
}

impl Runtime {
    pub fn start(kind: &'static str) -> Runtime {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new("bash")
            .arg(repo().join("tests/runtimes/start.sh"))
            .arg(kind)
            .arg(dir.path())
            .arg(model_dir())
            .output()
            .expect("run start.sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "start.sh {kind} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_owned)
                .expect("start.sh output")
        };
        Runtime {
            url: field("url="),
            pid: field("pid=").parse().expect("pid"),
            kind,
            _dir: dir,
        }
    }

    /// The model name requests must use.
    pub fn model(&self) -> String {
        match self.kind {
            "mlx" => model_dir().join("tiny-hf").display().to_string(),
            _ => "tiny".to_owned(),
        }
    }

    pub fn stop(&self) {
        kill(self.pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(self.pid) {
            kill(self.pid, "-KILL");
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process that printed a `url=` or `listening on` line.
pub struct Process {
    child: Child,
    pub url: String,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Spawn `command` and wait (bounded) for the line that names its URL.
    pub fn spawn(mut command: Command, within: Duration) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let url = line
                        .strip_prefix("url=")
                        .map(str::to_owned)
                        .or_else(|| line.split_once(" listening on ").map(|(_, url)| url.trim().to_owned()));
                    if let Some(url) = url {
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Process {
                            child,
                            url,
                            stderr_path,
                            _dir: dir,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no URL line within {within:?}; stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        kill(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), "-TERM");
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Ollama test double in front of a real llama.cpp server.
pub fn ollama_double(backend: &Runtime, pullable: &[&str]) -> Process {
    let mut command = Command::new(python());
    command
        .arg(repo().join("tests/runtimes/ollama_double.py"))
        .args(["--backend", &backend.url, "--model", "tiny=tiny", "--quiet", "--gguf"])
        .arg(model_dir().join("tiny.gguf"));
    for name in pullable {
        command.args(["--pullable", &format!("{name}=tiny")]);
    }
    Process::spawn(command, Duration::from_secs(30))
}
