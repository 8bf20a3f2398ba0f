//! Fuzz target `telemetry` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("telemetry");
    afl::fuzz!(|data: &[u8]| target(data));
}
