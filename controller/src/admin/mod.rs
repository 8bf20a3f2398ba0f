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

use crate::app::App;
use crate::http::ResponseBody;

/// What an endpoint answers.
type Answer = Result<Response<ResponseBody>, AdminError>;

/// One admin request, once authorized: its method, its path below `/admin/` in segments, and
/// its query string.
struct Route<'a> {
    method: &'a Method,
    segments: Vec<&'a str>,
    query: &'a str,
}

pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<ResponseBody> {
    if !authorized(&app, &request) {
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
        Some("policies" | "components" | "rollback") => policies::handle(&app, &route, request).await,
        Some("shadow" | "canary" | "route") => rehearsal::handle(&app, &route, request).await,
        Some("decisions") => decisions::handle(&app, &route, request).await,
        Some("nodes" | "certs") => nodes::handle(&app, &route, request).await,
        _ => None,
    };
    match answer {
        Some(Ok(response)) => response,
        Some(Err(error)) => error.into_response(),
        None => AdminError::NotFound(format!("no admin endpoint {method} {path}")).into_response(),
    }
}

fn authorized(app: &App, request: &Request<Incoming>) -> bool {
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
    constant_time_eq(token.trim().as_bytes(), app.admin_token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
