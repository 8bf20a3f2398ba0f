//! Where a policy's components come from and what they become: builtins, uploads and files
//! (bounded, regular, inside the policy's folder), hashed into the policy's identity and
//! compiled once per content.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::PolicyError;
use super::spec::{ComponentRef, PolicySpec};
use super::stage::compile_component;
use super::state::Shared;

/// One stage's component: its bytes and their SHA-256.
pub(super) type StageComponent = (Arc<[u8]>, [u8; 32]);

/// Each stage's component bytes with their digest, and the policy's hash (over the
/// document and every component).
pub(super) fn stage_components(
    shared: &Shared,
    text: &str,
    spec: &PolicySpec,
    origin: &str,
    base: Option<&Path>,
) -> Result<(Vec<StageComponent>, String), PolicyError> {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    let mut components = Vec::with_capacity(spec.stages.len());
    for (index, stage) in spec.stages.iter().enumerate() {
        let bytes = component_bytes(shared, &stage.component, origin, index, base)?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        hasher.update(digest);
        components.push((bytes, digest));
    }
    Ok((components, hex::encode(&hasher.finalize()[..6])))
}

/// The compiled component for `bytes`, compiled once per digest.
pub(super) fn compiled(
    shared: &Shared,
    bytes: &[u8],
    digest: &[u8; 32],
) -> Result<wasmtime::component::Component, String> {
    if let Some(component) = shared.versions().compiled.get(digest).cloned() {
        return Ok(component);
    }
    let component = compile_component(&shared.sandbox, bytes)?;
    shared.versions().compiled.insert(*digest, component.clone());
    Ok(component)
}

fn component_bytes(
    shared: &Shared,
    raw: &str,
    origin: &str,
    stage: usize,
    base: Option<&Path>,
) -> Result<Arc<[u8]>, PolicyError> {
    let invalid = |message: String| PolicyError::Invalid {
        origin: origin.to_owned(),
        field: format!("stage[{stage}].component"),
        message,
    };
    match ComponentRef::parse(raw, base).map_err(invalid)? {
        ComponentRef::Builtin(name) => switchyard_policy_artifacts::builtin(&name)
            .map(Arc::from)
            .ok_or_else(|| {
                let known: Vec<_> = switchyard_policy_artifacts::builtin_names().collect();
                invalid(format!(
                    "no builtin component {name:?}; builtins are {}",
                    known.join(", ")
                ))
            }),
        ComponentRef::Uploaded(hex) => shared.versions().uploads.get(&hex).cloned().ok_or_else(|| {
            invalid(format!(
                "no component sha256:{hex} was uploaded to this controller; POST it to /admin/components first"
            ))
        }),
        ComponentRef::File(path) => {
            read_component_file(&path, base)
                .map(Arc::from)
                .map_err(|source| PolicyError::ComponentRead {
                    origin: origin.to_owned(),
                    stage,
                    component: raw.to_owned(),
                    source,
                })
        }
    }
}

/// Largest component a policy may use, from a policy folder or uploaded: room for the
/// interpreters a Python (componentize-py, ~19 MB) or JavaScript (StarlingMonkey, ~12 MB)
/// policy carries, and still a bound.
pub const MAX_COMPONENT_BYTES: usize = 48 * 1024 * 1024;
const COMPONENT_FILE_LIMIT: u64 = MAX_COMPONENT_BYTES as u64;

/// Read a component file that must be a regular file of bounded size inside `base` (after
/// following links): never a device, a FIFO or a file elsewhere a link points to.
fn read_component_file(path: &Path, base: Option<&Path>) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let real = path.canonicalize()?;
    if let Some(base) = base
        && !real.starts_with(base.canonicalize()?)
    {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("it resolves to {}, outside the policy's folder", real.display()),
        ));
    }
    // Before opening: opening a FIFO waits for a writer, which would wedge the caller.
    if !std::fs::metadata(&real)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a regular file"));
    }
    let file = std::fs::File::open(&real)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a regular file"));
    }
    if metadata.len() > COMPONENT_FILE_LIMIT {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, over the {COMPONENT_FILE_LIMIT}-byte limit",
                metadata.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(COMPONENT_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_named_as_a_component_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("policy.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let (done, answer) = std::sync::mpsc::channel();
        let (path, base) = (fifo.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let _ = done.send(
                read_component_file(&path, Some(&base))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let read = answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO must not wait for a writer");
        let error = read.expect_err("a FIFO is no component");
        assert!(error.contains("not a regular file"), "{error}");
    }
}
