//! The policy registry: loads and validates policy documents and uploaded components, keeps
//! the loaded versions and the rollback chain, and makes one version active (atomically: a
//! request deciding finishes on the policy it started with).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use sha2::{Digest, Sha256};
use switchyard_protocol::ClusterSnapshot;

use super::components;
use super::error::PolicyError;
use super::loaded::{LoadedPolicy, PolicyStats, StatsView};
use super::smoke;
use super::spec::PolicySpec;
use super::stage::Stage;
use super::state::Shared;

/// Components that may be uploaded at once (each up to `MAX_COMPONENT_BYTES`, together up
/// to `MAX_UPLOAD_BYTES`).
pub const MAX_UPLOADS: usize = 32;

/// Bytes all uploaded components may take together (they are kept in memory): a handful of
/// interpreted ones, dozens of compiled ones.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// One uploaded component, for `GET /admin/components`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UploadView {
    pub component: String,
    pub bytes: usize,
    pub used_by: Vec<String>,
}

/// How many loaded versions and activations are remembered.
const HISTORY: usize = 32;

/// A summary of one loaded policy for `list`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub description: String,
    pub origin: String,
    pub components: Vec<String>,
    pub active: bool,
    pub stats: StatsView,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EngineView {
    pub active: Option<String>,
    /// Rollback chain, most recent first.
    pub previous: Vec<String>,
    pub policies: Vec<PolicyView>,
    pub fallback_decisions: u64,
    pub reverts: u64,
}

/// Loads, uploads, activates and rolls back; the admin API and the policy folder's watcher
/// hold one.
#[derive(Debug, Clone)]
pub struct PolicyRegistry {
    shared: Arc<Shared>,
}

impl PolicyRegistry {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Store an uploaded component; returns its `sha256:<hex>` reference.
    pub fn upload_component(&self, bytes: Vec<u8>) -> Result<String, PolicyError> {
        let hex = hex::encode(Sha256::digest(&bytes));
        let mut versions = self.shared.versions();
        if !versions.uploads.contains_key(&hex) {
            if versions.uploads.len() >= MAX_UPLOADS {
                return Err(PolicyError::TooManyUploads { limit: MAX_UPLOADS });
            }
            let would = versions.uploads.values().map(|b| b.len()).sum::<usize>() + bytes.len();
            if would > MAX_UPLOAD_BYTES {
                return Err(PolicyError::UploadsTooLarge {
                    would,
                    limit: MAX_UPLOAD_BYTES,
                });
            }
        }
        versions.uploads.insert(hex.clone(), Arc::from(bytes));
        Ok(format!("sha256:{hex}"))
    }

    /// The uploaded components, with their size and the loaded policies that use them.
    pub fn uploads(&self) -> Vec<UploadView> {
        let versions = self.shared.versions();
        let mut views: Vec<UploadView> = versions
            .uploads
            .iter()
            .map(|(hex, bytes)| {
                let component = format!("sha256:{hex}");
                UploadView {
                    used_by: users(&versions.loaded, &component),
                    component,
                    bytes: bytes.len(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.component.cmp(&b.component));
        views
    }

    /// Forget an uploaded component (and its compiled code) no loaded policy uses.
    pub fn delete_upload(&self, component: &str) -> Result<(), PolicyError> {
        let hex = component
            .strip_prefix("sha256:")
            .unwrap_or(component)
            .to_ascii_lowercase();
        let reference = format!("sha256:{hex}");
        let mut versions = self.shared.versions();
        if !versions.uploads.contains_key(&hex) {
            return Err(PolicyError::UnknownComponent(reference));
        }
        let policies = users(&versions.loaded, &reference);
        if !policies.is_empty() {
            return Err(PolicyError::ComponentInUse {
                component: reference,
                policies,
            });
        }
        versions.uploads.remove(&hex);
        if let Ok(digest) = <[u8; 32]>::try_from(hex::decode(&hex).unwrap_or_default()) {
            versions.compiled.remove(&digest);
        }
        Ok(())
    }

    /// Load and validate the policy file at `path` (components resolve against its folder).
    pub fn load_file(&self, path: &Path, live: &ClusterSnapshot) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        // A bare file name's folder is the current one (`Path::parent` says "").
        let base = match path.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => Path::new("."),
        };
        self.load_text(&text, &origin, Some(base), live)
    }

    /// Load and validate a policy document. It is compiled, instantiated, configured and
    /// smoke-tested; only then is it added to the loaded set (not activated).
    pub fn load_text(
        &self,
        text: &str,
        origin: &str,
        base: Option<&Path>,
        live: &ClusterSnapshot,
    ) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let spec = PolicySpec::parse(text, origin)?;
        let (components, hash) = components::stage_components(&self.shared, text, &spec, origin, base)?;
        let id: Arc<str> = Arc::from(format!("{}@{hash}", spec.name));
        {
            // The same document again (a file edited back): it becomes the newest version
            // of its name, the one `activate NAME` picks.
            let mut versions = self.shared.versions();
            if let Some(position) = versions.loaded.iter().position(|p| p.id == id) {
                let existing = versions.loaded.remove(position);
                versions.loaded.push(existing.clone());
                return Ok(existing);
            }
        }

        let mut stages = Vec::with_capacity(components.len());
        for (index, (stage, (bytes, digest))) in spec.stages.iter().zip(&components).enumerate() {
            let params_json = serde_json::to_string(&stage.params).map_err(|e| PolicyError::Invalid {
                origin: origin.to_owned(),
                field: format!("stage[{index}].params"),
                message: e.to_string(),
            })?;
            let compile_error = |message| PolicyError::Compile {
                origin: origin.to_owned(),
                stage: index,
                component: stage.component.clone(),
                message,
            };
            let component = components::compiled(&self.shared, bytes, digest).map_err(compile_error)?;
            let compiled = Stage::compile(&self.shared.sandbox, &component, params_json, spec.limits, id.clone())
                .map_err(compile_error)?;
            compiled.configure_check().map_err(|message| PolicyError::Configure {
                origin: match super::params_line::params_line(text, index, &message) {
                    Some(line) => format!("{origin}:{line}"),
                    None => origin.to_owned(),
                },
                stage: index,
                message,
            })?;
            stages.push(compiled);
        }
        let policy = Arc::new(LoadedPolicy {
            spec,
            id,
            hash,
            origin: origin.to_owned(),
            stages,
            stats: PolicyStats::default(),
        });
        smoke::check(&policy, live).map_err(|message| PolicyError::Smoke {
            origin: origin.to_owned(),
            message,
        })?;
        let mut versions = self.shared.versions();
        // Not active yet: it keeps no instances warm until it is.
        policy.retire();
        versions.loaded.push(policy.clone());
        let active = self.shared.active.load_full();
        trim_history(&mut versions.loaded, active.as_ref());
        tracing::info!(policy = %policy.id, %origin, "policy loaded and validated");
        Ok(policy)
    }

    /// Make the loaded policy `id_or_name` active (an exact `name@hash`, or a name for its
    /// newest version). Requests already deciding finish on the policy they started with.
    /// A canary or shadow running this very policy ends: it would only compare the active
    /// policy with itself.
    pub fn activate(&self, id_or_name: &str) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let mut versions = self.shared.versions();
        let policy = versions.find(id_or_name)?;
        policy.revive();
        let old = self.shared.active.swap(Some(policy.clone()));
        if let Some(old) = old
            && !Arc::ptr_eq(&old, &policy)
        {
            self.shared.retire_unless_used(&old);
            versions.previous.push(old);
            let excess = versions.previous.len().saturating_sub(HISTORY);
            versions.previous.drain(..excess);
        }
        drop(versions);
        policy.stats.clear_faults();
        tracing::info!(policy = %policy.id, "policy activated");
        self.shared
            .canaries
            .end_if_runs(&policy, "activated directly: it decides every request now");
        if self
            .shared
            .shadow
            .load()
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.policy, &policy))
        {
            self.shared.shadow.store(None);
            tracing::info!(policy = %policy.id, "shadow stopped: it is the active policy now");
        }
        Ok(policy)
    }

    /// Re-activate the policy that was active before the current one.
    pub fn rollback(&self) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let mut versions = self.shared.versions();
        let previous = versions.previous.pop().ok_or(PolicyError::NoPrevious)?;
        previous.stats.clear_faults();
        previous.revive();
        if let Some(current) = self.shared.active.swap(Some(previous.clone())) {
            self.shared.retire_unless_used(&current);
        }
        tracing::info!(policy = %previous.id, "rolled back");
        Ok(previous)
    }

    pub fn active(&self) -> Option<Arc<LoadedPolicy>> {
        self.shared.active.load_full()
    }

    pub fn view(&self) -> EngineView {
        let versions = self.shared.versions();
        let active = self.shared.active.load_full();
        EngineView {
            active: active.as_ref().map(|p| p.id.to_string()),
            previous: versions.previous.iter().rev().map(|p| p.id.to_string()).collect(),
            policies: versions
                .loaded
                .iter()
                .map(|p| PolicyView {
                    id: p.id.to_string(),
                    name: p.name().to_owned(),
                    hash: p.hash.clone(),
                    description: p.spec.description.clone(),
                    origin: p.origin.clone(),
                    components: p.spec.stages.iter().map(|s| s.component.clone()).collect(),
                    active: active.as_ref().is_some_and(|a| Arc::ptr_eq(a, p)),
                    stats: p.stats.view(),
                })
                .collect(),
            fallback_decisions: self.shared.fallback_decisions.load(Ordering::Relaxed),
            reverts: self.shared.reverts.load(Ordering::Relaxed),
        }
    }

    /// Total faults per kind across all loaded policies, for `/metrics`.
    pub fn fallback_decisions(&self) -> u64 {
        self.shared.fallback_decisions.load(Ordering::Relaxed)
    }

    pub fn reverts(&self) -> u64 {
        self.shared.reverts.load(Ordering::Relaxed)
    }
}

/// The ids of the loaded policies whose stages use `component`.
fn users(loaded: &[Arc<LoadedPolicy>], component: &str) -> Vec<String> {
    loaded
        .iter()
        .filter(|p| p.spec.stages.iter().any(|s| s.component == component))
        .map(|p| p.id.to_string())
        .collect()
}

/// Forget the oldest loaded versions beyond `HISTORY`, never the active one.
fn trim_history(loaded: &mut Vec<Arc<LoadedPolicy>>, active: Option<&Arc<LoadedPolicy>>) {
    while loaded.len() > HISTORY {
        let Some(position) = loaded.iter().position(|p| !active.is_some_and(|a| Arc::ptr_eq(a, p))) else {
            return;
        };
        loaded.remove(position);
    }
}
