//! One model's runtime process: started from the catalog's `command` with the port filled
//! in, waited for until it answers `GET /v1/models`, measured (resident memory of it and its
//! children, plus their GPU memory from NVML where there is a GPU), and stopped with
//! SIGTERM, then SIGKILL after a grace period. On Linux a runtime also gets SIGTERM when the
//! agent dies without stopping it (SIGKILL, a crash): no runtime outlives its agent holding
//! GPU memory that a restarted agent would need.

use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How long a stopped runtime gets to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A started, ready runtime.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub pid: Option<u32>,
    pub port: u16,
    /// From spawn to the first good readiness answer.
    pub ready_after: Duration,
}

/// Why a runtime did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the runtime exited before it was ready ({0})")]
    Exited(String),
    #[error("the runtime was not ready within {0:?} (GET /v1/models on its port never answered 200)")]
    Timeout(Duration),
    #[error("no free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
}

/// A port that is free now. The runtimes (vLLM, `mlx_lm.server`, llama.cpp's server) cannot
/// listen on port 0 and report the port, so the agent asks the kernel for a free one and
/// hands it over; the small race with other processes is covered by one retry of the start.
fn free_port() -> Result<u16, StartError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(StartError::Port)?;
    Ok(listener.local_addr().map_err(StartError::Port)?.port())
}

/// `command` with every `{port}` replaced.
pub fn fill_port(command: &[String], port: u16) -> Vec<String> {
    command
        .iter()
        .map(|arg| arg.replace("{port}", &port.to_string()))
        .collect()
}

/// Start `command` on a free port and wait until it answers, for at most `timeout`.
pub async fn start(command: &[String], timeout: Duration, client: &reqwest::Client) -> Result<Running, StartError> {
    let mut last = None;
    for _ in 0..2 {
        match start_once(command, timeout, client).await {
            Ok(running) => return Ok(running),
            // Exiting at once is what losing the port race looks like: try another port.
            Err(e @ StartError::Exited(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(StartError::Timeout(timeout)))
}

async fn start_once(command: &[String], timeout: Duration, client: &reqwest::Client) -> Result<Running, StartError> {
    let port = free_port()?;
    let filled = fill_port(command, port);
    let (program, args) = filled.split_first().ok_or_else(|| StartError::Spawn {
        program: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    die_with_the_agent(&mut command);
    let mut child = command.spawn().map_err(|source| StartError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    let url = format!("http://127.0.0.1:{port}/v1/models");
    let deadline = started + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartError::Exited(status.to_string()));
        }
        let ready = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(Running {
                child,
                pid,
                port,
                ready_after: started.elapsed(),
            });
        }
        if Instant::now() >= deadline {
            stop(&mut child).await;
            return Err(StartError::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ask the kernel to send the runtime SIGTERM when the thread that started it ends: the
/// agent's async workers live as long as the agent, so in effect when the agent dies.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_the_agent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
    // is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_the_agent(_command: &mut Command) {}

/// SIGTERM, then SIGKILL after the grace period.
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Memory the process `pid` and its descendants hold, in MB: resident memory, plus GPU
/// memory where NVML reports processes.
pub fn memory_of_tree(pid: u32) -> u64 {
    measure_tree(pid).total_mb()
}

/// What a process tree holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TreeMemory {
    /// The processes of the tree (not their threads).
    pub processes: usize,
    pub resident_bytes: u64,
    /// GPU memory NVML attributes to the tree's processes (0 without a driver).
    pub gpu_bytes: u64,
}

impl TreeMemory {
    pub fn total_mb(&self) -> u64 {
        (self.resident_bytes + self.gpu_bytes) / (1024 * 1024)
    }
}

/// Measure the process `pid` and its descendants.
pub fn measure_tree(pid: u32) -> TreeMemory {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    let root = Pid::from_u32(pid);
    let in_tree = |mut current: Pid| -> bool {
        for _ in 0..64 {
            if current == root {
                return true;
            }
            match system.process(current).and_then(|p| p.parent()) {
                Some(parent) => current = parent,
                None => return false,
            }
        }
        false
    };
    // sysinfo lists each thread of a process as well (a task, with the process's memory):
    // only processes count, or a runtime with 18 threads is measured 19 times over.
    let pids: Vec<u32> = system
        .processes()
        .iter()
        .filter(|(_, process)| process.thread_kind().is_none())
        .map(|(pid, _)| *pid)
        .filter(|p| in_tree(*p))
        .map(|p| p.as_u32())
        .collect();
    let resident: u64 = pids
        .iter()
        .filter_map(|p| system.process(Pid::from_u32(*p)))
        .map(|p| p.memory())
        .sum();
    TreeMemory {
        processes: pids.len(),
        resident_bytes: resident,
        gpu_bytes: gpu_memory_of(&pids),
    }
}

/// GPU memory (bytes) NVML attributes to `pids`; 0 without a driver.
fn gpu_memory_of(pids: &[u32]) -> u64 {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return 0;
    };
    let count = nvml.device_count().unwrap_or(0);
    let mut total = 0;
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        for process in device.running_compute_processes().unwrap_or_default() {
            if pids.contains(&process.pid)
                && let UsedGpuMemory::Used(bytes) = process.used_gpu_memory
            {
                total += bytes;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_goes_wherever_the_command_says() {
        let command: Vec<String> = ["server", "--port", "{port}", "--url=http://127.0.0.1:{port}/"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            fill_port(&command, 8123),
            ["server", "--port", "8123", "--url=http://127.0.0.1:8123/"]
        );
    }

    #[test]
    fn a_process_tree_is_measured() {
        // This test process holds some resident memory.
        assert!(memory_of_tree(std::process::id()) > 0);
    }

    #[test]
    fn a_multithreaded_child_holding_known_memory_is_measured_once() {
        use std::io::BufRead;
        // A child with 16 threads holding 200 MiB it has touched, and a grandchild holding 50.
        let script = r#"
import subprocess, sys, threading, time
held = bytearray(200 * 1024 * 1024)
for i in range(0, len(held), 4096): held[i] = 1
GRANDCHILD = "b = bytearray(50 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\nimport sys; sys.stdin.read()"
child = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
child.stdout.readline()
for _ in range(16): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready");
        let tree = measure_tree(child.id());
        assert_eq!(tree.processes, 2, "two processes, whatever their threads: {tree:?}");
        let measured = tree.total_mb();
        // Closing its input ends the child, and so the grandchild's input and it.
        drop(child.stdin.take());
        let _ = child.wait();
        // 250 MiB held, plus two interpreters' own few MiB each.
        assert!(
            (250..=330).contains(&measured),
            "measured {measured} MiB for a tree holding 250 MiB across 18 threads"
        );
    }
}
