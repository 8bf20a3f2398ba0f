//! The policy file: a TOML document naming one or more components (a chain) and their
//! params, plus the sandbox limits. Parsing and validation only; nothing is compiled here.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::PolicyError;

/// A parsed `policies/*.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Lowercase letters, digits and `-`; the name operators activate.
    pub name: PolicyName,
    /// One line for `switchyard policy list`.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub limits: Limits,
    /// Whether a stream this policy routed continues on another node when its node is lost
    /// mid-answer (default true; `[limits] max_continuations` and the key may still forbid it).
    #[serde(default = "continue_streams")]
    pub continue_streams: bool,
    /// Components called in order; each later stage sees only the targets the previous
    /// stage chose (a router narrows and maps models, a balancer orders).
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
}

fn continue_streams() -> bool {
    true
}

/// One component of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// `builtin:<name>` (shipped in the binary), `sha256:<hex>` (uploaded through the admin
    /// API), or a path to a `.wasm` component, relative to the policy file.
    pub component: String,
    /// Passed to the component's `configure` as JSON.
    #[serde(default)]
    pub params: toml::Table,
}

/// Hard limits for every call into the policy's components.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget for one `route` or `configure` call (default 50 ms: a decision
    /// takes microseconds; the margin absorbs a host thread being descheduled).
    pub deadline_ms: u32,
    /// Linear memory cap per instance (default 32 MiB, at most 256).
    pub memory_mib: u32,
    /// Configured instances kept warm for reuse (default 16).
    pub warm_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline_ms: 50,
            memory_mib: 32,
            warm_instances: 16,
        }
    }
}

/// A validated policy name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PolicyName(String);

impl TryFrom<String> for PolicyName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if ok {
            Ok(Self(name))
        } else {
            Err(format!(
                "invalid policy name {name:?}: use 1-64 lowercase letters, digits and '-', e.g. \"seed-rules\""
            ))
        }
    }
}

impl PolicyName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most memory the active policy's warm instances may hold together, MiB.
pub const MEMORY_BUDGET_MIB: u64 = 2048;

/// Where a stage's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentRef {
    Builtin(String),
    Uploaded(String),
    File(PathBuf),
}

impl ComponentRef {
    /// Parse `component = "..."`. A file is named relative to `base` (the policy file's
    /// folder) and must stay inside it: no absolute paths, no `..`. A policy uploaded over
    /// HTTP has no folder and names uploaded components by hash. (The controller never
    /// reads a file a policy author points it at elsewhere: no existence oracle, no
    /// `/dev/zero`, no FIFO.)
    pub fn parse(raw: &str, base: Option<&Path>) -> Result<Self, String> {
        if let Some(name) = raw.strip_prefix("builtin:") {
            return Ok(Self::Builtin(name.to_owned()));
        }
        if let Some(hex) = raw.strip_prefix("sha256:") {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{raw:?} is not sha256: followed by 64 hex digits"));
            }
            return Ok(Self::Uploaded(hex.to_ascii_lowercase()));
        }
        let path = Path::new(raw);
        let outside = path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        match base {
            Some(_) if outside => Err(format!(
                "{raw:?} is outside the policy's folder: name a component file relative to the policy file, \
                 inside its folder (no absolute path, no `..`), or upload it and use sha256:<hex>"
            )),
            Some(base) => Ok(Self::File(base.join(path))),
            None => Err(format!(
                "{raw:?} is a file path, but this policy was not read from a file: upload the \
                 component first (POST /admin/components, or `switchyard policy upload`, which does it for you) \
                 and refer to it as sha256:<hex>"
            )),
        }
    }
}

impl PolicySpec {
    /// Parse and check a policy document. `origin` names it in errors (a path or "upload").
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let spec: PolicySpec = toml::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |field: String, message: String| PolicyError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        if spec.stages.is_empty() {
            return Err(invalid(
                "stage".into(),
                "a policy needs at least one [[stage]] with a component".into(),
            ));
        }
        if spec.stages.len() > 4 {
            return Err(invalid("stage".into(), "at most 4 stages may be chained".into()));
        }
        let limits = spec.limits;
        if !(1..=1000).contains(&limits.deadline_ms) {
            return Err(invalid(
                "limits.deadline_ms".into(),
                "must be between 1 and 1000".into(),
            ));
        }
        if !(1..=super::sandbox::MAX_MEMORY_MIB).contains(&limits.memory_mib) {
            return Err(invalid(
                "limits.memory_mib".into(),
                format!("must be between 1 and {}", super::sandbox::MAX_MEMORY_MIB),
            ));
        }
        if !(1..=256).contains(&limits.warm_instances) {
            return Err(invalid(
                "limits.warm_instances".into(),
                "must be between 1 and 256".into(),
            ));
        }
        // Only the active version keeps instances warm; this bounds what it may hold.
        let most = u64::from(limits.warm_instances) * spec.stages.len() as u64 * u64::from(limits.memory_mib);
        if most > MEMORY_BUDGET_MIB {
            return Err(invalid(
                "limits.warm_instances".into(),
                format!(
                    "{} warm instances x {} stages x {} MiB could hold {most} MiB, over the {MEMORY_BUDGET_MIB} MiB a policy may keep; \
                     lower warm_instances or memory_mib",
                    limits.warm_instances,
                    spec.stages.len(),
                    limits.memory_mib
                ),
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod generated_tests {
    use super::*;

    #[test]
    fn mutated_policy_files_are_accepted_or_refused_with_their_origin_never_a_panic() {
        let shipped = [
            include_str!("../../../policies/seed-rules.toml"),
            include_str!("../../../policies/least-loaded.toml"),
            include_str!("../../../policies/seed-then-thermal.toml"),
        ];
        let mut rng = crate::generated::Rng::new(0x0070_11c7);
        for case in 0..3000 {
            let text = rng.mutate(shipped[case % shipped.len()]);
            if let Err(error) = PolicySpec::parse(&text, "mutated.toml") {
                assert!(error.to_string().starts_with("mutated.toml"), "case {case}: {error}");
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::PolicySpec;
    use proptest::prelude::*;

    /// Lines a policy document could be made of, valid or not.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("name = \"p\"".to_owned()),
            Just("[[stage]]".to_owned()),
            Just("component = \"builtin:least-loaded\"".to_owned()),
            Just("[limits]".to_owned()),
            Just("deadline_ms = 50".to_owned()),
            Just("memory_mib = 16".to_owned()),
            Just("[stage.params]".to_owned()),
            "[a-z_]{1,10} = [0-9]{1,12}".prop_map(|s| s),
            "[a-z_]{1,10} = \"[^\"\\\\]{0,10}\"".prop_map(|s| s),
            ".{0,30}".prop_map(|s| s),
        ]
    }

    proptest! {
        /// Any document: a spec or an error naming where it came from, never a panic.
        #[test]
        fn any_policy_document_parses_or_is_refused_with_its_origin(lines in prop::collection::vec(line(), 0..12)) {
            let text = lines.join("\n");
            if let Err(error) = PolicySpec::parse(&text, "generated.toml") {
                prop_assert!(error.to_string().contains("generated.toml"), "{}", error);
            }
        }
    }
}
