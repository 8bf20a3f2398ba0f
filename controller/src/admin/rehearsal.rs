//! Rehearsing a candidate over the admin API: a shadow beside the active policy, a canary
//! deciding a share of live requests, and route explanations from any loaded policy.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use switchyard_protocol::{ClusterSnapshot, Decision, RequestInfo};

use super::{Admin, AdminError, Answer, Route, body};
use crate::http::json;

/// The reply to `POST /admin/route/explain`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Explanation {
    pub policy: String,
    pub decision: Decision,
    /// Set when the policy faulted and the built-in fallback decided.
    pub fault: Option<String>,
}

/// `POST /admin/route/explain` takes a request and, optionally, a snapshot to decide on
/// instead of the live node table.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub request: RequestInfo,
    #[serde(default)]
    pub snapshot: Option<ClusterSnapshot>,
    /// A loaded policy (id, or name for its newest version) to ask instead of the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// `{"policy": ID or NAME}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyNamed {
    policy: String,
}

/// `POST /admin/canary`: the candidate, its share, and any rule that differs from `[canary]`.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStart {
    pub policy: String,
    pub percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttft_p95_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_slack_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_faults: Option<u32>,
}

impl CanaryStart {
    /// `defaults` with this start's overrides.
    pub fn rules(&self, defaults: crate::policy::canary::CanaryRules) -> crate::policy::canary::CanaryRules {
        crate::policy::canary::CanaryRules {
            window_s: self.window_s.unwrap_or(defaults.window_s),
            min_requests: self.min_requests.unwrap_or(defaults.min_requests),
            max_error_rate_increase: self.max_error_rate_increase.unwrap_or(defaults.max_error_rate_increase),
            max_ttft_p95_ratio: self.max_ttft_p95_ratio.unwrap_or(defaults.max_ttft_p95_ratio),
            ttft_slack_ms: self.ttft_slack_ms.unwrap_or(defaults.ttft_slack_ms),
            max_faults: self.max_faults.unwrap_or(defaults.max_faults),
        }
    }
}

pub(super) async fn handle(admin: &Admin, route: &Route<'_>, request: Request<Incoming>) -> Option<Answer> {
    let none_running = |what: &str| AdminError::NotFound(format!("no {what} is running"));
    Some(match (route.method, route.segments.as_slice()) {
        (&Method::POST, ["shadow"]) => start_shadow(admin, request).await,
        (&Method::GET, ["shadow"]) => admin
            .rehearsal
            .shadow_report()
            .map(|report| json(StatusCode::OK, &report))
            .ok_or_else(|| none_running("shadow")),
        (&Method::DELETE, ["shadow"]) => admin
            .rehearsal
            .stop_shadow()
            .map(|report| json(StatusCode::OK, &report))
            .ok_or_else(|| none_running("shadow")),
        (&Method::POST, ["canary"]) => start_canary(admin, request).await,
        (&Method::GET, ["canary"]) => Ok(json(StatusCode::OK, &admin.rehearsal.canary_view())),
        (&Method::DELETE, ["canary"]) => admin
            .rehearsal
            .stop_canary()
            .map(|report| json(StatusCode::OK, &report))
            .ok_or_else(|| none_running("canary")),
        (&Method::POST, ["canary", "promote"]) => admin
            .rehearsal
            .promote_canary()
            .map(|report| json(StatusCode::OK, &report))
            .map_err(AdminError::from),
        (&Method::POST, ["route", "explain"]) => explain(admin, request).await,
        _ => return None,
    })
}

async fn start_shadow(admin: &Admin, request: Request<Incoming>) -> Answer {
    let named: PolicyNamed = body::json(request, "send {\"policy\": ID or NAME} (a loaded policy)").await?;
    let report = admin.rehearsal.start_shadow(&named.policy)?;
    Ok(json(StatusCode::CREATED, &report))
}

async fn start_canary(admin: &Admin, request: Request<Incoming>) -> Answer {
    let expected = "send {\"policy\": ID or NAME, \"percent\": 1-100} and any of window_s, min_requests, \
                    max_error_rate_increase, max_ttft_p95_ratio, ttft_slack_ms, max_faults";
    let start: CanaryStart = body::json(request, expected).await?;
    let rules = start.rules(admin.canary_rules);
    let report = admin.rehearsal.start_canary(&start.policy, start.percent, rules)?;
    Ok(json(StatusCode::CREATED, &report))
}

/// `POST /admin/route/explain`: what the active policy (or a named loaded one) decides for a
/// request on the live node table or a given snapshot. Nothing is counted.
async fn explain(admin: &Admin, request: Request<Incoming>) -> Answer {
    let expected = "send {\"request\": {...}} with an optional \"snapshot\" and \"policy\"";
    let query: ExplainQuery = body::json(request, expected).await?;
    let prepared = match query.snapshot {
        Some(snapshot) => Arc::new(crate::policy::PreparedSnapshot::from(snapshot)),
        None => admin.nodes.prepared(),
    };
    // Off the async worker: a policy call may block (a guest that prints).
    let (engine, rehearsal) = (admin.engine.clone(), admin.rehearsal.clone());
    let routed = tokio::task::spawn_blocking(move || match &query.policy {
        Some(policy) => rehearsal.explain_with(policy, &query.request, &prepared),
        None => Ok(engine.explain(&query.request, &prepared)),
    })
    .await??;
    Ok(json(
        StatusCode::OK,
        &Explanation {
            policy: routed.policy_id.to_string(),
            decision: routed.decision,
            fault: routed.fault.map(|f| f.to_string()),
        },
    ))
}
