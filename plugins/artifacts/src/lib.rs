//! The policy components built from `plugins/`: their paths on disk (for tests and
//! benchmarks) and the bytes of those the controller ships as `builtin:<name>`.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The bytes of the builtin component `name` (e.g. `seed-rules`), if there is one.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of every builtin component.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}
