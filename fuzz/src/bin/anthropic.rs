//! Fuzz target `anthropic` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("anthropic");
    afl::fuzz!(|data: &[u8]| target(data));
}
