//! Battery and thermal state where the OS exposes them.
//!
//! - macOS: `pmset -g batt` ("Now drawing from 'Battery Power'", "85%") and `pmset -g therm`
//!   (a `CPU_Speed_Limit` below 100 means the OS is throttling for heat).
//! - Linux: `/sys/class/power_supply/*` (a `Battery` whose `status` is `Discharging`, and its
//!   `capacity`).
//! - Elsewhere, or when nothing is exposed: unknown (`None`), never a guess.
//!
//! `SWITCHYARD_POWER_SUPPLY_DIR` points the Linux probe at another folder laid out like
//! `/sys/class/power_supply` (the tests flip a battery's `status` there). Whether the machine
//! is about to sleep is what the operator's hook tells the agent (`POST /power/sleep`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use switchyard_protocol::PowerTelemetry;

#[derive(Debug, Default, Clone)]
pub struct PowerProbe {
    /// Set while the machine is going to sleep (until `POST /power/wake`).
    pub sleeping: Arc<AtomicBool>,
}

impl PowerProbe {
    pub fn sample(&self) -> PowerTelemetry {
        let mut power = self.os_sample();
        power.sleeping = self.sleeping.load(Ordering::Relaxed);
        power
    }

    fn os_sample(&self) -> PowerTelemetry {
        #[cfg(target_os = "macos")]
        {
            let batt = run("pmset", &["-g", "batt"]).unwrap_or_default();
            let therm = run("pmset", &["-g", "therm"]).unwrap_or_default();
            let mut power = parse_pmset_batt(&batt);
            let limit = parse_pmset_speed_limit(&therm);
            power.thermal_throttled = limit.is_some_and(|l| l < 100);
            power.thermal_pressure = limit.map(|l| {
                if l < 100 {
                    format!("cpu speed limit {l}%")
                } else {
                    "nominal".to_owned()
                }
            });
            power.source = "pmset".to_owned();
            power
        }
        #[cfg(target_os = "linux")]
        {
            let root = std::env::var_os("SWITCHYARD_POWER_SUPPLY_DIR").map_or_else(
                || std::path::PathBuf::from("/sys/class/power_supply"),
                std::path::PathBuf::from,
            );
            linux_power_supply(&root)
        }
        #[cfg(not(any(target_os = "macos", target_os = "linux")))]
        {
            PowerTelemetry {
                source: "not exposed on this OS".to_owned(),
                ..Default::default()
            }
        }
    }
}

#[cfg(target_os = "macos")]
fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Parse `pmset -g batt`.
pub fn parse_pmset_batt(text: &str) -> PowerTelemetry {
    let on_battery = if text.contains("'Battery Power'") {
        Some(true)
    } else if text.contains("'AC Power'") {
        Some(false)
    } else {
        None
    };
    let battery_pct = text
        .split(|c: char| c.is_whitespace() || c == ';')
        .find_map(|word| word.strip_suffix('%').and_then(|n| n.parse::<f32>().ok()));
    PowerTelemetry {
        on_battery,
        battery_pct,
        source: "pmset".to_owned(),
        ..Default::default()
    }
}

/// Parse `CPU_Speed_Limit = N` from `pmset -g therm`.
pub fn parse_pmset_speed_limit(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "CPU_Speed_Limit").then(|| value.trim().parse().ok())?
    })
}

/// Read `/sys/class/power_supply`-style folders.
pub fn linux_power_supply(root: &std::path::Path) -> PowerTelemetry {
    let mut power = PowerTelemetry {
        source: root.display().to_string(),
        ..Default::default()
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        power.source = format!("{} (absent)", root.display());
        return power;
    };
    let read = |dir: &std::path::Path, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_owned())
            .ok()
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if read(&dir, "type").as_deref() == Some("Battery") {
            power.on_battery = read(&dir, "status").map(|s| s == "Discharging");
            power.battery_pct = read(&dir, "capacity").and_then(|c| c.parse().ok());
        }
    }
    power
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmset_on_battery_and_on_ac() {
        let batt = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1234)\t85%; discharging; 4:12 remaining present: true\n";
        let power = parse_pmset_batt(batt);
        assert_eq!(power.on_battery, Some(true));
        assert_eq!(power.battery_pct, Some(85.0));
        let ac =
            "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1234)\t100%; charged; 0:00 remaining present: true\n";
        assert_eq!(parse_pmset_batt(ac).on_battery, Some(false));
        assert_eq!(parse_pmset_batt("").on_battery, None);
    }

    #[test]
    fn pmset_speed_limit_below_100_means_thermal_throttling() {
        let therm = "Note: No thermal warning level has been recorded\n\
                     CPU_Scheduler_Limit \t= 100\n CPU_Available_CPUs \t= 12\n CPU_Speed_Limit \t= 72\n";
        assert_eq!(parse_pmset_speed_limit(therm), Some(72));
        assert_eq!(parse_pmset_speed_limit("nothing"), None);
    }

    #[test]
    fn linux_battery_discharging_is_on_battery() {
        let root = tempfile::tempdir().expect("tempdir");
        let bat = root.path().join("BAT0");
        std::fs::create_dir(&bat).expect("mkdir");
        std::fs::write(bat.join("type"), "Battery\n").expect("write");
        std::fs::write(bat.join("status"), "Discharging\n").expect("write");
        std::fs::write(bat.join("capacity"), "41\n").expect("write");
        let ac = root.path().join("AC");
        std::fs::create_dir(&ac).expect("mkdir");
        std::fs::write(ac.join("type"), "Mains\n").expect("write");
        let power = linux_power_supply(root.path());
        assert_eq!(power.on_battery, Some(true));
        assert_eq!(power.battery_pct, Some(41.0));
        let none = linux_power_supply(&root.path().join("missing"));
        assert_eq!(none.on_battery, None);
    }
}
