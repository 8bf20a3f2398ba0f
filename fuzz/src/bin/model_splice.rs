//! Fuzz target `model_splice` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("model_splice");
    afl::fuzz!(|data: &[u8]| target(data));
}
