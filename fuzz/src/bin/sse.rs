//! Fuzz target `sse` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("sse");
    afl::fuzz!(|data: &[u8]| target(data));
}
