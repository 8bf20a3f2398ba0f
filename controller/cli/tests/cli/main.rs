//! The `switchyard` binary, run as the operator runs it: its messages against the reviewed
//! text, and `policy check` finding a planted bug.

#[allow(dead_code)]
#[path = "../../../tests/all/support.rs"]
mod support;

mod interpreted_policies;
mod messages;
mod policy_check;
mod sdk_package;
