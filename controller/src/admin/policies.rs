//! Policies and components over the admin API: list, upload (and activate), activate,
//! roll back; upload, list and delete components.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::{Admin, AdminError, Answer, Route, body};
use crate::http::json;
use crate::policy::PolicyError;

/// Largest component accepted over HTTP.
const COMPONENT_LIMIT: usize = crate::policy::MAX_COMPONENT_BYTES;

pub(super) async fn handle(admin: &Admin, route: &Route<'_>, request: Request<Incoming>) -> Option<Answer> {
    Some(match (route.method, route.segments.as_slice()) {
        (&Method::GET, ["policies"]) => Ok(json(StatusCode::OK, &admin.registry.view())),
        (&Method::POST, ["policies"]) => upload(admin, route.query, request).await,
        (&Method::POST, ["policies", id, "activate"]) => admin
            .registry
            .activate(id)
            .map(|policy| json(StatusCode::OK, &serde_json::json!({ "active": &*policy.id })))
            .map_err(AdminError::from),
        (&Method::POST, ["rollback"]) => admin
            .registry
            .rollback()
            .map(|policy| json(StatusCode::OK, &serde_json::json!({ "active": &*policy.id })))
            .map_err(AdminError::from),
        (&Method::POST, ["components"]) => upload_component(admin, request).await,
        (&Method::GET, ["components"]) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "components": admin.registry.uploads() }),
        )),
        (&Method::DELETE, ["components", component]) => admin
            .registry
            .delete_upload(component)
            .map(|()| json(StatusCode::OK, &serde_json::json!({ "deleted": component })))
            .map_err(AdminError::from),
        _ => return None,
    })
}

/// `POST /admin/policies[?activate]`: a policy document, loaded (compiled off the async
/// workers) and activated when asked.
async fn upload(admin: &Admin, query: &str, request: Request<Incoming>) -> Answer {
    let text = body::text(request, body::SMALL_LIMIT, "the policy document (TOML)").await?;
    let activate = query.split('&').any(|kv| kv == "activate=true" || kv == "activate");
    let registry = admin.registry.clone();
    let live = admin.nodes.snapshot();
    let policy = tokio::task::spawn_blocking(move || {
        let policy = registry.load_text(&text, "upload", None, &live)?;
        if activate {
            registry.activate(&policy.id)?;
        }
        Ok::<_, PolicyError>(policy)
    })
    .await??;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": &*policy.id, "name": policy.name(), "active": activate }),
    ))
}

async fn upload_component(admin: &Admin, request: Request<Incoming>) -> Answer {
    let bytes = body::bytes(request, COMPONENT_LIMIT).await?;
    let reference = admin.registry.upload_component(bytes.to_vec())?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "component": reference }),
    ))
}
