//! CPU, memory, swap and load through `sysinfo`, refreshing only what is reported.

use switchyard_protocol::{HostInfo, SystemTelemetry};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

pub struct SystemProbe {
    system: System,
}

impl std::fmt::Debug for SystemProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemProbe").finish_non_exhaustive()
    }
}

fn refresh_kind() -> RefreshKind {
    RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
        .with_memory(MemoryRefreshKind::everything())
}

impl SystemProbe {
    pub fn new() -> Self {
        Self {
            system: System::new_with_specifics(refresh_kind().with_cpu(CpuRefreshKind::everything())),
        }
    }

    /// CPU usage is measured between two refreshes: the first sample after `new` compares
    /// against start-up, later ones against the previous sample.
    pub fn sample(&mut self) -> SystemTelemetry {
        self.system.refresh_specifics(refresh_kind());
        let load = System::load_average();
        let mb = |bytes: u64| bytes / (1024 * 1024);
        SystemTelemetry {
            cpu_util_pct: self.system.global_cpu_usage(),
            mem_used_mb: mb(self.system.used_memory()),
            mem_total_mb: mb(self.system.total_memory()),
            swap_used_mb: mb(self.system.used_swap()),
            swap_total_mb: mb(self.system.total_swap()),
            load_1m: load.one,
            load_5m: load.five,
            load_15m: load.fifteen,
        }
    }

    pub fn host(&self) -> HostInfo {
        let arch = System::cpu_arch();
        let os = System::name().unwrap_or_else(|| std::env::consts::OS.to_owned());
        HostInfo {
            hostname: System::host_name().unwrap_or_default(),
            os_version: System::os_version().unwrap_or_default(),
            apple_silicon: std::env::consts::OS == "macos" && (arch == "arm64" || arch == "aarch64"),
            os,
            arch,
            cpu_brand: self
                .system
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_owned())
                .unwrap_or_default(),
            cpu_cores: self.system.cpus().len() as u32,
        }
    }
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self::new()
    }
}
