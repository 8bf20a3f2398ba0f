//! Makes sure rustc can build for `wasm32-wasip2` before the policy components are built:
//! rustup does not add a toolchain file's targets by itself where `RUSTUP_AUTO_INSTALL=0`,
//! so the build adds the target with `rustup target add`, and when that cannot work it stops
//! at once with one line that says what to run (no panic, no backtrace, no 9-minute wait).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The target the policy components are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The programs to ask and to run.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `rustc` (cargo's `RUSTC`).
    pub rustc: PathBuf,
    /// `rustup`.
    pub rustup: PathBuf,
    /// The toolchain cargo runs under (`RUSTUP_TOOLCHAIN`), passed to `rustup target add`.
    pub toolchain: Option<String>,
}

impl Toolchain {
    /// The toolchain of the build script that calls this.
    pub fn from_build_env() -> Self {
        Self {
            rustc: std::env::var_os("RUSTC").map_or_else(|| "rustc".into(), PathBuf::from),
            rustup: "rustup".into(),
            toolchain: std::env::var("RUSTUP_TOOLCHAIN").ok(),
        }
    }

    /// Whether rustc has the standard library for the target.
    pub fn has_target(&self) -> bool {
        Command::new(&self.rustc)
            .args(["--print", "target-libdir", "--target", TARGET])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|dir| std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()))
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The target was there already.
    Present,
    /// `rustup target add` added it.
    Added,
}

/// The one line a build prints when the target cannot be had.
pub const CANNOT_ADD: &str = "the policy components need the wasm32-wasip2 target and it could not be added; \
                              run `rustup target add wasm32-wasip2`, then build again";

/// Add the target when it is missing. `Err` is [`CANNOT_ADD`], with rustup's reason when it
/// could not even start.
pub fn ensure(toolchain: &Toolchain) -> Result<Ensured, String> {
    if toolchain.has_target() {
        return Ok(Ensured::Present);
    }
    eprintln!("the {TARGET} target is missing: running `rustup target add {TARGET}`");
    let mut rustup = Command::new(&toolchain.rustup);
    rustup.args(["target", "add", TARGET]);
    if let Some(name) = &toolchain.toolchain {
        rustup.args(["--toolchain", name]);
    }
    match rustup.status() {
        Err(e) => Err(format!("{CANNOT_ADD} (rustup could not start: {e})")),
        Ok(status) if status.success() && toolchain.has_target() => Ok(Ensured::Added),
        Ok(_) => Err(CANNOT_ADD.to_owned()),
    }
}

#[cfg(test)]
mod tests;
