//! Runtime supervision: when the config gives a `command`, the agent starts the runtime,
//! waits until it answers its health probe, restarts it with jittered exponential backoff
//! whenever it exits, and reports its state in telemetry. On shutdown the runtime gets
//! SIGTERM, then SIGKILL after a grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_protocol::{SupervisorPhase, SupervisorState};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::driver::RuntimeDriver;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A runtime healthy this long has its backoff reset.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Supervisor {
    command: Vec<String>,
    driver: Arc<dyn RuntimeDriver>,
    state: watch::Sender<SupervisorState>,
}

impl Supervisor {
    pub fn new(command: Vec<String>, driver: Arc<dyn RuntimeDriver>) -> (Self, watch::Receiver<SupervisorState>) {
        let (state, receiver) = watch::channel(SupervisorState {
            state: SupervisorPhase::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
        });
        (Self { command, driver, state }, receiver)
    }

    fn set(&self, f: impl FnOnce(&mut SupervisorState)) {
        self.state.send_modify(f);
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty runtime command"))?;
        Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(command = ?self.command, "cannot start the runtime: {e}");
                    self.set(|s| {
                        s.state = SupervisorPhase::BackingOff;
                        s.pid = None;
                        s.last_exit = Some(format!("failed to start: {e}"));
                    });
                    if sleep_or_cancel(jitter(backoff), &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let pid = child.id();
            tracing::info!(?pid, command = ?self.command, "runtime started");
            self.set(|s| {
                s.state = SupervisorPhase::Starting;
                s.pid = pid;
            });
            let started = Instant::now();
            let mut healthy_since: Option<Instant> = None;
            let mut probe = tokio::time::interval(Duration::from_millis(250));
            let exit = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        stop(&mut child).await;
                        self.set(|s| { s.state = SupervisorPhase::Stopped; s.pid = None; });
                        return;
                    }
                    status = child.wait() => break status,
                    _ = probe.tick() => {
                        let healthy = self.driver.probe().await.healthy;
                        match (healthy, healthy_since) {
                            (true, None) => {
                                healthy_since = Some(Instant::now());
                                tracing::info!(?pid, after = ?started.elapsed(), "runtime healthy");
                                self.set(|s| s.state = SupervisorPhase::Running);
                            }
                            (true, Some(since)) if since.elapsed() > STABLE_AFTER => backoff = FIRST_BACKOFF,
                            _ => {}
                        }
                    }
                }
            };
            let described = match exit {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            tracing::warn!(?pid, "runtime exited ({described}); restarting in {backoff:?}");
            self.set(|s| {
                s.state = SupervisorPhase::BackingOff;
                s.pid = None;
                s.restarts += 1;
                s.last_exit = Some(described);
            });
            if sleep_or_cancel(jitter(backoff), &shutdown).await {
                self.set(|s| s.state = SupervisorPhase::Stopped);
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Backoff with up to 25% random spread, so that many agents do not retry in step.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let spread = (nanos % 250) as f64 / 1000.0;
    base.mul_f64(1.0 + spread)
}

/// Sleep; true if cancelled first.
async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}
