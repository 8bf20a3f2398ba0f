//! NVIDIA GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml` at run time). No
//! driver means no GPUs and one log line, never a failure.

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use switchyard_protocol::GpuTelemetry;

pub struct GpuProbe {
    nvml: Option<Nvml>,
    status: String,
}

impl std::fmt::Debug for GpuProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuProbe").field("status", &self.status).finish()
    }
}

impl GpuProbe {
    /// Initialise NVML once; remember why it is unavailable if it is.
    pub fn new() -> Self {
        match Nvml::init() {
            Ok(nvml) => {
                let driver = nvml.sys_driver_version().unwrap_or_else(|_| "unknown".into());
                let count = nvml.device_count().unwrap_or(0);
                let status = format!(
                    "ok (NVML, driver {driver}, {count} GPU{})",
                    if count == 1 { "" } else { "s" }
                );
                tracing::info!("{status}");
                Self {
                    nvml: Some(nvml),
                    status,
                }
            }
            Err(e) => {
                let status = format!("no NVIDIA GPU visible: NVML unavailable ({e})");
                tracing::info!("{status}");
                Self { nvml: None, status }
            }
        }
    }

    pub fn status(&self) -> &str {
        &self.status
    }

    /// One sample of every GPU. A query that fails leaves its field empty.
    pub fn sample(&self) -> Vec<GpuTelemetry> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let utilization = device.utilization_rates().ok();
            let memory = device.memory_info().ok();
            gpus.push(GpuTelemetry {
                index,
                name: device.name().unwrap_or_else(|_| "unknown".into()),
                uuid: device.uuid().unwrap_or_default(),
                util_pct: utilization.as_ref().map(|u| u.gpu as f32).unwrap_or(0.0),
                mem_util_pct: utilization.as_ref().map(|u| u.memory as f32).unwrap_or(0.0),
                mem_used_mb: memory.as_ref().map(|m| m.used / (1024 * 1024)).unwrap_or(0),
                mem_total_mb: memory.as_ref().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
                temp_c: device.temperature(TemperatureSensor::Gpu).ok().map(|t| t as f32),
                power_w: device.power_usage().ok().map(|mw| mw as f32 / 1000.0),
                power_limit_w: device.enforced_power_limit().ok().map(|mw| mw as f32 / 1000.0),
                sm_clock_mhz: device.clock_info(Clock::SM).ok(),
                mem_clock_mhz: device.clock_info(Clock::Memory).ok(),
                throttle_reasons: device.current_throttle_reasons().map(reason_names).unwrap_or_default(),
                energy_mj: device.total_energy_consumption().ok(),
            });
        }
        gpus
    }
}

impl Default for GpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// NVML's throttle bitmask as names; `gpu_idle` (clocks down because there is no work) is
/// not a throttle and is left out.
pub fn reason_names(reasons: ThrottleReasons) -> Vec<String> {
    let table = [
        (
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks_setting",
        ),
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync_boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
        (ThrottleReasons::DISPLAY_CLOCK_SETTING, "display_clock_setting"),
    ];
    table
        .iter()
        .filter(|(bit, _)| reasons.contains(*bit))
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_not_a_throttle_and_thermal_slowdowns_are_named() {
        let names = reason_names(ThrottleReasons::GPU_IDLE | ThrottleReasons::SW_THERMAL_SLOWDOWN);
        assert_eq!(names, ["sw_thermal_slowdown"]);
        assert!(reason_names(ThrottleReasons::GPU_IDLE).is_empty());
    }

    #[test]
    fn without_a_driver_the_probe_reports_no_gpus_and_says_why() {
        let probe = GpuProbe::new();
        if probe.nvml.is_none() {
            assert!(probe.sample().is_empty());
            assert!(
                probe.status().starts_with("no NVIDIA GPU visible"),
                "{}",
                probe.status()
            );
        } else {
            assert!(probe.status().starts_with("ok (NVML"), "{}", probe.status());
        }
    }
}
