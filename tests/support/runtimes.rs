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
    DIR.get_or_init(|| generate_model("small"))
}

/// Run gen_tiny_model.py for `shape` into a folder of this test process.
fn generate_model(shape: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-{shape}-model-{}", std::process::id()));
    let status = Command::new(python())
        .arg(repo().join("tests/runtimes/gen_tiny_model.py"))
        .arg(&dir)
        .env("TINY_MODEL_SHAPE", shape)
        .stdout(Stdio::null())
        .status()
        .expect("run gen_tiny_model.py");
    assert!(status.success(), "gen_tiny_model.py ({shape}) failed");
    dir
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
        Runtime::start_with(kind, model_dir())
    }

    /// A runtime serving the model generated into `models` (say [`wide_model_dir`]).
    pub fn start_with(kind: &'static str, models: &Path) -> Runtime {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new("bash")
            .arg(repo().join("tests/runtimes/start.sh"))
            .arg(kind)
            .arg(dir.path())
            .arg(models)
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

/// The wider tiny model vLLM's CPU backend serves (head size 64): `tiny-hf/` under the
/// returned folder, generated once per test process.
pub fn wide_model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| generate_model("wide"))
}

/// A free port on 127.0.0.1 (asked of the kernel and released: a small race, fine in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The ports of one vLLM: its HTTP API, and the KV-cache events it publishes (vLLM connects
/// to `events`, which the subscriber binds) and replays (vLLM binds `replay`).
#[derive(Debug, Clone, Copy)]
pub struct VllmPorts {
    pub http: u16,
    pub events: u16,
    pub replay: u16,
}

impl VllmPorts {
    /// The event port lies below Linux's ephemeral range (32768-60999): vLLM keeps trying to
    /// connect to it until the subscriber binds it, and a TCP connect to a free ephemeral
    /// port on the same host can connect to itself and hold the port.
    pub fn free() -> VllmPorts {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = std::process::id() as u64 ^ now;
        let events = (0..200)
            .map(|i| 20_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7_919)) % 12_000) as u16)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .expect("a free port below the ephemeral range");
        VllmPorts {
            http: free_port(),
            events,
            replay: free_port(),
        }
    }
}

/// A real vLLM (CPU) from `.venv-vllm` (tests/runtimes/vllm-setup.sh), serving the wide tiny
/// model as `tiny` with prefix caching, 32-token blocks and KV-cache events; `blocks` caps
/// its cache (to force evictions). Stopped by PID when dropped.
pub struct Vllm {
    child: Child,
    pub url: String,
    pub ports: VllmPorts,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vllm {
    pub const BLOCK_SIZE: u32 = 32;

    pub fn start(ports: VllmPorts, blocks: Option<u32>) -> Vllm {
        let vllm = repo().join(".venv-vllm/bin/vllm");
        assert!(
            vllm.exists(),
            "{} is missing: run tests/runtimes/vllm-setup.sh (tests/run-all.sh does)",
            vllm.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("vllm.log");
        let events = format!(
            r#"{{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://127.0.0.1:{}", "replay_endpoint": "tcp://127.0.0.1:{}", "topic": "kv"}}"#,
            ports.events, ports.replay
        );
        let mut command = Command::new(vllm);
        command
            .arg("serve")
            .arg(wide_model_dir().join("tiny-hf"))
            .args([
                "--served-model-name",
                "tiny",
                "--host",
                "127.0.0.1",
                "--port",
                &ports.http.to_string(),
            ])
            .args(["--max-model-len", "4096", "--block-size", &Self::BLOCK_SIZE.to_string()])
            .args([
                "--enable-prefix-caching",
                "--enable-prompt-tokens-details",
                "--enforce-eager",
            ])
            .args(["--kv-events-config", &events]);
        if let Some(blocks) = blocks {
            command.args(["--num-gpu-blocks-override", &blocks.to_string()]);
        }
        let child = command
            .env("TMPDIR", dir.path())
            .env("VLLM_CACHE_ROOT", dir.path().join("cache"))
            .env("VLLM_TARGET_DEVICE", "cpu")
            .env("VLLM_CPU_KVCACHE_SPACE", "1")
            .env("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            .env("HF_HUB_OFFLINE", "1")
            .env("VLLM_NO_USAGE_STATS", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).expect("log"),
            ))
            .spawn()
            .expect("start vllm");
        let mut vllm = Vllm {
            child,
            url: format!("http://127.0.0.1:{}", ports.http),
            ports,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        while Instant::now() < deadline {
            let ready = Command::new("curl")
                .args([
                    "-fsS",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "2",
                    &format!("{}/health", vllm.url),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return vllm;
            }
            if let Ok(Some(status)) = vllm.child.try_wait() {
                panic!("vllm exited ({status}) before it was ready:\n{}", vllm.log_tail());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        vllm.stop();
        panic!("vllm not ready within 240 s:\n{}", vllm.log_tail());
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 20 s; waits for the exit.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Vllm {
    fn drop(&mut self) {
        self.stop();
    }
}
