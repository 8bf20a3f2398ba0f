//! Where compiled policy code is kept across restarts: wasmtime's cache, keyed by a hash of
//! the component and the compiler's settings, so that a large component (a Python policy
//! carries its interpreter: ~19 MB, ~10 s to compile here) is compiled once per machine.

use std::path::{Path, PathBuf};

/// The environment variable that moves (`SWITCHYARD_COMPILE_CACHE=/dir`) or disables
/// (`SWITCHYARD_COMPILE_CACHE=off`) the compile cache.
pub const ENV: &str = "SWITCHYARD_COMPILE_CACHE";

/// The cache folder unless the environment says otherwise: `$XDG_CACHE_HOME/switchyard/
/// policy-code`, else `$HOME/.cache/switchyard/policy-code`; `None` when the environment
/// says `off` or names no home.
pub fn default_dir() -> Option<PathBuf> {
    dir_from(
        std::env::var_os(ENV).map(PathBuf::from),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn dir_from(explicit: Option<PathBuf>, xdg_cache: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(explicit) = explicit {
        return (explicit != Path::new("off")).then_some(explicit);
    }
    let base = xdg_cache
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".cache")))?;
    Some(base.join("switchyard").join("policy-code"))
}

/// wasmtime's cache in `dir` (created when missing), or why not.
pub fn cache(dir: &Path) -> anyhow::Result<wasmtime::Cache> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the policy compile cache {}: {e}", dir.display()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config)
        .map_err(|e| anyhow::anyhow!("cannot use the policy compile cache {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_follows_the_environment() {
        let home = Some(PathBuf::from("/home/me"));
        assert_eq!(
            dir_from(None, None, home.clone()),
            Some(PathBuf::from("/home/me/.cache/switchyard/policy-code"))
        );
        assert_eq!(
            dir_from(None, Some(PathBuf::from("/xdg")), home.clone()),
            Some(PathBuf::from("/xdg/switchyard/policy-code"))
        );
        // A relative XDG_CACHE_HOME is invalid (the spec says to ignore it).
        assert_eq!(
            dir_from(None, Some(PathBuf::from("rel")), home.clone()),
            Some(PathBuf::from("/home/me/.cache/switchyard/policy-code"))
        );
        assert_eq!(
            dir_from(Some(PathBuf::from("/c")), None, home.clone()),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(dir_from(Some(PathBuf::from("off")), None, home), None);
        assert_eq!(dir_from(None, None, None), None);
    }
}
