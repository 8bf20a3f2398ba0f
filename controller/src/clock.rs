//! Wall-clock time as milliseconds since the Unix epoch: what records, events and reports
//! carry (0 on a clock set before 1970).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
