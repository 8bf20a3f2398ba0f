//! Fuzz target `fixture` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("fixture");
    afl::fuzz!(|data: &[u8]| target(data));
}
