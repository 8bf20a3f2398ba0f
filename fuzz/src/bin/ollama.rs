//! Fuzz target `ollama` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("ollama");
    afl::fuzz!(|data: &[u8]| target(data));
}
