//! What it takes to load a model within the memory budget: the pure decision, kept apart
//! from processes so that every case is tested directly. Only idle resident models are ever
//! evicted (least recently used first); a model with requests in flight is never cut.

use std::time::Instant;

/// A resident (or starting, or stopping) model, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub local: String,
    /// What it holds (declared or measured); a model still loading with an unknown need
    /// counts as the whole budget.
    pub memory_mb: u64,
    pub in_flight: u32,
    /// Only `Ready` models may be evicted; loading and stopping ones hold their memory.
    pub evictable: bool,
    pub last_used: Instant,
}

/// What to do to load a model that needs `need_mb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It fits now.
    Fits,
    /// It fits once these idle models are stopped (least recently used first).
    Evict(Vec<String>),
    /// It fits only once busy models finish their requests: wait and plan again.
    Wait,
    /// It can never fit.
    TooLarge { need_mb: u64, budget_mb: u64 },
}

/// Plan the load of a model needing `need_mb` into `budget_mb`, given what is resident.
pub fn plan(need_mb: u64, budget_mb: u64, resident: &[Resident]) -> Plan {
    if need_mb > budget_mb {
        return Plan::TooLarge { need_mb, budget_mb };
    }
    let used: u64 = resident.iter().map(|r| r.memory_mb).sum();
    let free = budget_mb.saturating_sub(used);
    if need_mb <= free {
        return Plan::Fits;
    }
    let mut idle: Vec<&Resident> = resident.iter().filter(|r| r.evictable && r.in_flight == 0).collect();
    idle.sort_by_key(|r| r.last_used);
    let mut freed = free;
    let mut evict = Vec::new();
    for candidate in idle {
        if freed >= need_mb {
            break;
        }
        freed += candidate.memory_mb;
        evict.push(candidate.local.clone());
    }
    if freed >= need_mb {
        Plan::Evict(evict)
    } else {
        Plan::Wait
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn resident(local: &str, memory_mb: u64, in_flight: u32, age_s: u64) -> Resident {
        Resident {
            local: local.into(),
            memory_mb,
            in_flight,
            evictable: true,
            last_used: Instant::now() - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn a_model_that_fits_loads_without_evicting_anything() {
        assert_eq!(plan(400, 1000, &[resident("a", 500, 0, 5)]), Plan::Fits);
        assert_eq!(plan(1000, 1000, &[]), Plan::Fits);
    }

    #[test]
    fn idle_models_are_evicted_least_recently_used_first_and_no_more_than_needed() {
        let resident = [
            resident("recent", 300, 0, 1),
            resident("oldest", 300, 0, 60),
            resident("older", 300, 0, 30),
        ];
        assert_eq!(plan(350, 1000, &resident), Plan::Evict(vec!["oldest".into()]));
        assert_eq!(
            plan(700, 1000, &resident),
            Plan::Evict(vec!["oldest".into(), "older".into()])
        );
    }

    #[test]
    fn busy_models_are_never_evicted_the_load_waits_for_them() {
        let busy = [resident("busy", 800, 1, 60)];
        assert_eq!(plan(400, 1000, &busy), Plan::Wait);
        let mut loading = resident("loading", 800, 0, 0);
        loading.evictable = false;
        assert_eq!(plan(400, 1000, &[loading]), Plan::Wait);
    }

    #[test]
    fn a_model_larger_than_the_budget_is_refused() {
        assert_eq!(
            plan(2000, 1000, &[]),
            Plan::TooLarge {
                need_mb: 2000,
                budget_mb: 1000
            }
        );
    }
}
