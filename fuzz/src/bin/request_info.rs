//! Fuzz target `request_info` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("request_info");
    afl::fuzz!(|data: &[u8]| target(data));
}
