//! The admin API under `/admin/`, behind the admin bearer token, split by area: policies and
//! components (`policies.rs`), rehearsal of a candidate: shadow, canary and route
//! explanations (`rehearsal.rs`), the decision record (`decisions.rs`), and the nodes: the
//! node table, models, draining, certificates (`nodes.rs`). Every endpoint answers
//! `Result<Response, AdminError>`; the error becomes an answer in one place (`error.rs`).

mod body;
mod decisions;
mod error;
mod nodes;
mod policies;
mod rehearsal;

use std::sync::Arc;

use http::{Method, Request, Response, header};
use hyper::body::Incoming;

pub use error::AdminError;
pub use nodes::NodesView;
pub use rehearsal::{CanaryStart, ExplainQuery, Explanation};

use crate::decisions::DecisionStore;
use crate::front::admission::Admission;
use crate::http::ResponseBody;
use crate::node_table::NodeTable;
use crate::policy::canary::CanaryRules;
use crate::policy::{PolicyEngine, PolicyRegistry, Rehearsal};

/// The admin API and the handles it uses, handed to it by the composition root (`app.rs`).
#[derive(Debug)]
pub struct Admin {
    /// The bearer token every admin request must carry.
    pub token: String,
    pub registry: PolicyRegistry,
    pub engine: PolicyEngine,
    pub rehearsal: Rehearsal,
    pub nodes: Arc<NodeTable>,
    /// The front door's admission (what the controller has in flight on each node).
    pub admission: Arc<Admission>,
    /// Moves a drained node's answers off it when its deadline passes.
    pub handover: Arc<crate::front::handover::Handover>,
    /// The decision record, when kept.
    pub decisions: Option<Arc<DecisionStore>>,
    /// A canary's rollback rules unless its start says otherwise (`[canary]`).
    pub canary_rules: CanaryRules,
}

/// What an endpoint answers.
type Answer = Result<Response<ResponseBody>, AdminError>;

/// One admin request, once authorized: its method, its path below `/admin/` in segments, and
/// its query string.
struct Route<'a> {
    method: &'a Method,
    segments: Vec<&'a str>,
    query: &'a str,
}

pub async fn handle(admin: Arc<Admin>, request: Request<Incoming>) -> Response<ResponseBody> {
    if !authorized(&admin, &request) {
        return AdminError::Unauthorized.into_response();
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let route = Route {
        method: &method,
        segments: path.trim_start_matches("/admin/").split('/').collect(),
        query: &query,
    };
    let answer = match route.segments.first().copied() {
        Some("policies" | "components" | "rollback") => policies::handle(&admin, &route, request).await,
        Some("shadow" | "canary" | "route") => rehearsal::handle(&admin, &route, request).await,
        Some("decisions") => decisions::handle(&admin, &route, request).await,
        Some("nodes" | "certs") => nodes::handle(&admin, &route, request).await,
        _ => None,
    };
    match answer {
        Some(Ok(response)) => response,
        Some(Err(error)) => error.into_response(),
        None => AdminError::NotFound(format!("no admin endpoint {method} {path}")).into_response(),
    }
}

fn authorized(admin: &Admin, request: &Request<Incoming>) -> bool {
    let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    constant_time_eq(token.trim().as_bytes(), admin.token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
