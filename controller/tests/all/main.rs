//! Integration tests of the controller library, compiled into one binary.

mod support;

mod architecture;
mod hostile_policies;
mod policy_lifecycle;
mod swap_under_load;
