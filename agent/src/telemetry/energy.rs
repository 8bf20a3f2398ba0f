//! Energy: joules the node used since the agent started, and per generated token, from the
//! best source the machine has. NVML's total energy counter where every GPU has one (measured,
//! GPUs only); else NVML's power readings integrated over time; else the operator's
//! `[energy] watts` while the node serves (the seed document's figure for a simulated
//! machine), labelled as such. Joules per token counts only the energy of intervals in which
//! the node was generating, weighted towards the newest.

use std::time::Instant;

use switchyard_protocol::{EnergySource, EnergyTelemetry, GpuTelemetry};

/// Watts assumed when no GPU measures: the operator's declared figure, or the seed's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Declared {
    /// While the node serves.
    pub watts: f32,
    /// While it is idle (counted in the total, never in joules per token).
    pub idle_watts: f32,
    pub source: EnergySource,
    /// Real seconds per second of the machine's time: 1.0, except for a simulated machine
    /// running faster than life (its energy is counted in its own time).
    pub time_scale: f32,
}

/// How much of the previous joules-per-token window each new interval keeps.
const DECAY: f64 = 0.95;

#[derive(Debug, Clone, Copy)]
struct Previous {
    at: Instant,
    counter_mj: Option<u64>,
    tokens_total: u64,
    busy_s: f64,
}

#[derive(Debug, Default)]
pub struct EnergyMeter {
    declared: Option<Declared>,
    previous: Option<Previous>,
    joules_total: f64,
    watts: f32,
    source: Option<EnergySource>,
    /// Decayed sums over generating intervals, for joules per token.
    busy_joules: f64,
    busy_tokens: f64,
}

/// The sum of every GPU's energy counter, when each has one.
fn counter_sum(gpus: &[GpuTelemetry]) -> Option<u64> {
    if gpus.is_empty() {
        return None;
    }
    gpus.iter().map(|g| g.energy_mj).sum()
}

impl EnergyMeter {
    pub fn new(declared: Option<Declared>) -> Self {
        Self {
            declared,
            ..Self::default()
        }
    }

    /// Account for the interval since the previous sample. `busy_s`: the agent's running
    /// total of seconds with requests in flight.
    pub fn sample(
        &mut self,
        now: Instant,
        gpus: &[GpuTelemetry],
        busy_s: f64,
        tokens_total: u64,
    ) -> Option<EnergyTelemetry> {
        let counter_mj = counter_sum(gpus);
        let previous = self.previous.replace(Previous {
            at: now,
            counter_mj,
            tokens_total,
            busy_s,
        });
        if let Some(previous) = previous {
            let seconds = now.saturating_duration_since(previous.at).as_secs_f64();
            let busy = (busy_s - previous.busy_s).clamp(0.0, seconds);
            let tokens = tokens_total.saturating_sub(previous.tokens_total);
            let generating = busy > 0.0 || tokens > 0;
            let measured_power: Option<f32> = (!gpus.is_empty() && gpus.iter().all(|g| g.power_w.is_some()))
                .then(|| gpus.iter().filter_map(|g| g.power_w).sum());
            let interval = match (counter_mj, previous.counter_mj) {
                // A counter that went backwards (driver reloaded) falls back to power this once.
                (Some(now_mj), Some(then_mj)) if now_mj >= then_mj => {
                    Some(((now_mj - then_mj) as f64 / 1000.0, EnergySource::NvmlCounter))
                }
                _ => match (measured_power, self.declared) {
                    (Some(watts), _) => Some((f64::from(watts) * seconds, EnergySource::NvmlPower)),
                    (None, Some(declared)) if declared.time_scale > 0.0 => {
                        let own_time = 1.0 / f64::from(declared.time_scale);
                        let joules = (f64::from(declared.watts) * busy
                            + f64::from(declared.idle_watts) * (seconds - busy))
                            * own_time;
                        Some((joules, declared.source))
                    }
                    (None, _) => None,
                },
            };
            if let Some((joules, source)) = interval {
                self.joules_total += joules;
                let own_seconds = match (source, self.declared) {
                    (EnergySource::Declared | EnergySource::SeedFigure, Some(d)) => seconds / f64::from(d.time_scale),
                    _ => seconds,
                };
                self.watts = if own_seconds > 0.0 {
                    (joules / own_seconds) as f32
                } else {
                    0.0
                };
                self.source = Some(source);
                if generating {
                    self.busy_joules = self.busy_joules * DECAY + joules;
                    self.busy_tokens = self.busy_tokens * DECAY + tokens as f64;
                }
            }
        } else if counter_mj.is_some() {
            self.source = Some(EnergySource::NvmlCounter);
        } else if gpus.iter().any(|g| g.power_w.is_some()) {
            self.source = Some(EnergySource::NvmlPower);
        } else {
            self.source = self.declared.map(|d| d.source);
        }
        let source = self.source?;
        Some(EnergyTelemetry {
            source,
            joules_total: self.joules_total,
            watts: self.watts,
            tokens_total,
            joules_per_token: (self.busy_tokens >= 1.0).then(|| (self.busy_joules / self.busy_tokens) as f32),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gpu(energy_mj: Option<u64>, power_w: Option<f32>) -> GpuTelemetry {
        GpuTelemetry {
            index: 0,
            name: "gpu".into(),
            uuid: "u".into(),
            util_pct: 0.0,
            mem_util_pct: 0.0,
            mem_used_mb: 0,
            mem_total_mb: 0,
            temp_c: None,
            power_w,
            power_limit_w: None,
            sm_clock_mhz: None,
            mem_clock_mhz: None,
            throttle_reasons: Vec::new(),
            energy_mj,
        }
    }

    #[test]
    fn the_nvml_counter_is_used_where_every_gpu_has_one() {
        let mut meter = EnergyMeter::new(None);
        let t0 = Instant::now();
        let first = meter
            .sample(t0, &[gpu(Some(1_000_000), Some(100.0))], 0.0, 0)
            .expect("energy");
        assert_eq!((first.source, first.joules_total), (EnergySource::NvmlCounter, 0.0));
        // 600 J in 2 s while generating 100 tokens: 300 W, 6 J per token.
        let next = meter
            .sample(
                t0 + Duration::from_secs(2),
                &[gpu(Some(1_600_000), Some(100.0))],
                2.0,
                100,
            )
            .expect("energy");
        assert_eq!(next.source, EnergySource::NvmlCounter);
        assert!((next.joules_total - 600.0).abs() < 1e-9);
        assert!((next.watts - 300.0).abs() < 1e-3);
        assert!((next.joules_per_token.expect("per token") - 6.0).abs() < 1e-4);
    }

    #[test]
    fn power_is_integrated_without_a_counter_and_after_a_counter_reset() {
        let mut meter = EnergyMeter::new(None);
        let t0 = Instant::now();
        meter.sample(t0, &[gpu(None, Some(50.0))], 0.0, 0);
        let e = meter
            .sample(t0 + Duration::from_secs(4), &[gpu(None, Some(50.0))], 0.0, 0)
            .expect("energy");
        assert_eq!(e.source, EnergySource::NvmlPower);
        assert!((e.joules_total - 200.0).abs() < 1e-6);
        assert_eq!(e.joules_per_token, None, "idle energy is not per token");

        let mut meter = EnergyMeter::new(None);
        meter.sample(t0, &[gpu(Some(5_000), Some(10.0))], 0.0, 0);
        let e = meter
            .sample(t0 + Duration::from_secs(1), &[gpu(Some(10), Some(10.0))], 0.0, 0)
            .expect("energy");
        assert_eq!(e.source, EnergySource::NvmlPower);
        assert!((e.joules_total - 10.0).abs() < 1e-6);
    }

    #[test]
    fn declared_watts_count_while_serving_and_idle_watts_while_not() {
        let declared = Declared {
            watts: 30.0,
            idle_watts: 12.0,
            source: EnergySource::SeedFigure,
            time_scale: 1.0,
        };
        let mut meter = EnergyMeter::new(Some(declared));
        let t0 = Instant::now();
        assert_eq!(
            meter.sample(t0, &[], 0.0, 0).expect("energy").source,
            EnergySource::SeedFigure
        );
        let idle = meter.sample(t0 + Duration::from_secs(10), &[], 0.0, 0).expect("energy");
        assert!((idle.joules_total - 120.0).abs() < 1e-6);
        // 10 s, 6 of them generating 180 tokens: 6 x 30 + 4 x 12 = 228 J; per token only the
        // serving intervals' energy counts.
        let busy = meter
            .sample(t0 + Duration::from_secs(20), &[], 6.0, 180)
            .expect("energy");
        assert!((busy.joules_total - 348.0).abs() < 1e-6);
        assert!((busy.joules_per_token.expect("per token") - 228.0 / 180.0).abs() < 1e-4);
    }

    #[test]
    fn a_simulated_machine_counts_energy_in_its_own_time() {
        let declared = Declared {
            watts: 260.0,
            idle_watts: 0.0,
            source: EnergySource::SeedFigure,
            time_scale: 0.1,
        };
        let mut meter = EnergyMeter::new(Some(declared));
        let t0 = Instant::now();
        meter.sample(t0, &[], 0.0, 0);
        // 1 real second busy at a time scale of 0.1: 10 simulated seconds at 260 W.
        let e = meter
            .sample(t0 + Duration::from_secs(1), &[], 1.0, 220)
            .expect("energy");
        assert!((e.joules_total - 2600.0).abs() < 1e-3);
        assert!((e.watts - 260.0).abs() < 1e-3);
        assert!((e.joules_per_token.expect("per token") - 2600.0 / 220.0).abs() < 1e-3);
    }

    #[test]
    fn nothing_measured_and_nothing_declared_reports_no_energy() {
        let mut meter = EnergyMeter::new(None);
        assert_eq!(meter.sample(Instant::now(), &[], 1.0, 5), None);
    }
}
