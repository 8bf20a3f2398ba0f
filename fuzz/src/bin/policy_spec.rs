//! Fuzz target `policy_spec` (see `switchyard_controller::fuzz_entry`).
fn main() {
    let target = switchyard_controller::fuzz_entry::target("policy_spec");
    afl::fuzz!(|data: &[u8]| target(data));
}
