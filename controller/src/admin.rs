//! The admin API under `/admin/`, behind the admin bearer token: policies (list, upload,
//! activate, rollback), shadow and canary candidates, components, route explanations, the
//! decision record, the node table (with why a node is unhealthy), and draining a node.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;
use switchyard_protocol::{ClusterSnapshot, Decision, RequestInfo};

use crate::app::App;
use crate::http::{ResponseBody, error_json, json, read_body};
use crate::policy::PolicyError;

/// Largest policy document accepted over HTTP.
const POLICY_LIMIT: usize = 256 * 1024;
/// Largest component accepted over HTTP.
const COMPONENT_LIMIT: usize = 16 * 1024 * 1024;
/// Largest decision-record import (NDJSON) in one request.
const IMPORT_LIMIT: usize = 256 * 1024 * 1024;

/// The reply to `POST /admin/route/explain`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Explanation {
    pub policy: String,
    pub decision: Decision,
    /// Set when the policy faulted and the built-in fallback decided.
    pub fault: Option<String>,
}

/// `GET /admin/nodes`: the snapshot policies see, and every agent link.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NodesView {
    pub snapshot: ClusterSnapshot,
    pub links: Vec<crate::node_table::LinkView>,
    /// Why each unhealthy or drained node takes no new work.
    #[serde(default)]
    pub unhealthy: std::collections::BTreeMap<String, String>,
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

/// The node table, with each node's in-flight count at least what the controller itself has
/// sent there and not yet seen finish.
fn with_admitted(app: &App) -> ClusterSnapshot {
    let mut snapshot = (*app.nodes.snapshot()).clone();
    for node in &mut snapshot.nodes {
        node.in_flight = node.in_flight.max(app.front.admission.in_use(&node.name));
    }
    snapshot
}

fn policy_error(error: PolicyError) -> Response<ResponseBody> {
    let status = match error {
        PolicyError::Unknown(_) => StatusCode::NOT_FOUND,
        PolicyError::NoPrevious | PolicyError::ComponentInUse { .. } => StatusCode::CONFLICT,
        PolicyError::UnknownComponent(_) => StatusCode::NOT_FOUND,
        PolicyError::TooManyUploads { .. } => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error_json(status, "policy_error", error.to_string())
}

pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<ResponseBody> {
    if !authorized(&app, &request) {
        return error_json(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "the admin API needs `Authorization: Bearer <admin token>` (see `admin.token_file` in the controller config)",
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["policies"]) => json(StatusCode::OK, &app.engine.view()),
        (&Method::POST, ["policies"]) => {
            let body = match read_body(request.into_body(), POLICY_LIMIT).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let Ok(text) = std::str::from_utf8(&body) else {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "the policy document is not UTF-8 TOML",
                );
            };
            let activate = query.split('&').any(|kv| kv == "activate=true" || kv == "activate");
            let engine = app.engine.clone();
            let live = app.nodes.snapshot();
            let text = text.to_owned();
            let loaded = tokio::task::spawn_blocking(move || {
                let policy = engine.load_text(&text, "upload", None, &live)?;
                if activate {
                    engine.activate(&policy.id)?;
                }
                Ok::<_, PolicyError>(policy)
            })
            .await;
            match loaded {
                Ok(Ok(policy)) => json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "id": &*policy.id, "name": policy.name(), "active": activate }),
                ),
                Ok(Err(e)) => policy_error(e),
                Err(e) => error_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    format!("policy load task failed: {e}"),
                ),
            }
        }
        (&Method::POST, ["components"]) => match read_body(request.into_body(), COMPONENT_LIMIT).await {
            Ok(body) => match app.engine.upload_component(body.to_vec()) {
                Ok(reference) => json(StatusCode::CREATED, &serde_json::json!({ "component": reference })),
                Err(e) => policy_error(e),
            },
            Err(reply) => reply,
        },
        (&Method::GET, ["components"]) => json(
            StatusCode::OK,
            &serde_json::json!({ "components": app.engine.uploads() }),
        ),
        (&Method::DELETE, ["components", component]) => match app.engine.delete_upload(component) {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "deleted": component })),
            Err(e) => policy_error(e),
        },
        (&Method::POST, ["policies", id, "activate"]) => match app.engine.activate(id) {
            Ok(policy) => json(StatusCode::OK, &serde_json::json!({ "active": &*policy.id })),
            Err(e) => policy_error(e),
        },
        (&Method::POST, ["shadow"]) => {
            let named: PolicyNamed = match read_json(request, "send {\"policy\": ID or NAME} (a loaded policy)").await {
                Ok(named) => named,
                Err(reply) => return reply,
            };
            match app.engine.start_shadow(&named.policy) {
                Ok(report) => json(StatusCode::CREATED, &report),
                Err(e) => policy_error(e),
            }
        }
        (&Method::GET, ["shadow"]) => match app.engine.shadow_report() {
            Some(report) => json(StatusCode::OK, &report),
            None => error_json(StatusCode::NOT_FOUND, "not_found", "no shadow is running"),
        },
        (&Method::DELETE, ["shadow"]) => match app.engine.stop_shadow() {
            Some(report) => json(StatusCode::OK, &report),
            None => error_json(StatusCode::NOT_FOUND, "not_found", "no shadow is running"),
        },
        (&Method::POST, ["canary"]) => {
            let expected = "send {\"policy\": ID or NAME, \"percent\": 1-100} and any of window_s, min_requests, \
                            max_error_rate_increase, max_ttft_p95_ratio, ttft_slack_ms, max_faults";
            let start: CanaryStart = match read_json(request, expected).await {
                Ok(start) => start,
                Err(reply) => return reply,
            };
            let rules = start.rules(app.canary_rules);
            match app.engine.start_canary(&start.policy, start.percent, rules) {
                Ok(report) => json(StatusCode::CREATED, &report),
                Err(e) => policy_error(e),
            }
        }
        (&Method::GET, ["canary"]) => json(StatusCode::OK, &app.engine.canary_view()),
        (&Method::DELETE, ["canary"]) => match app.engine.stop_canary() {
            Some(report) => json(StatusCode::OK, &report),
            None => error_json(StatusCode::NOT_FOUND, "not_found", "no canary is running"),
        },
        (&Method::POST, ["canary", "promote"]) => match app.engine.promote_canary() {
            Ok(report) => json(StatusCode::OK, &report),
            Err(e) => policy_error(e),
        },
        (&Method::GET, ["decisions", "events"]) => decisions_events(&app, &query).await,
        (&Method::GET, ["decisions"]) => decisions_query(&app, &query).await,
        (&Method::GET, ["decisions", "export"]) => decisions_export(&app, &query).await,
        (&Method::POST, ["decisions", "import"]) => {
            let Some(store) = app.decisions.clone() else {
                return no_record();
            };
            let body = match read_body(request.into_body(), IMPORT_LIMIT).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let text = match String::from_utf8(body.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    return error_json(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the import is not UTF-8 NDJSON",
                    );
                }
            };
            match tokio::task::spawn_blocking(move || store.import(&text)).await {
                Ok(Ok(report)) => json(StatusCode::OK, &report),
                Ok(Err(e @ crate::decisions::store::StoreError::Import { .. })) => error_json(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("{e}; nothing was imported"),
                ),
                Ok(Err(e)) => error_json(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string()),
                Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string()),
            }
        }
        (&Method::POST, ["rollback"]) => match app.engine.rollback() {
            Ok(policy) => json(StatusCode::OK, &serde_json::json!({ "active": &*policy.id })),
            Err(e) => policy_error(e),
        },
        (&Method::POST, ["route", "explain"]) => {
            let expected = "send {\"request\": {...}} with an optional \"snapshot\" and \"policy\"";
            let query: ExplainQuery = match read_json(request, expected).await {
                Ok(query) => query,
                Err(reply) => return reply,
            };
            let prepared = match query.snapshot {
                Some(snapshot) => Arc::new(crate::policy::PreparedSnapshot::from(snapshot)),
                None => app.nodes.prepared(),
            };
            // Off the async worker: a policy call may block (a guest that prints).
            let engine = app.engine.clone();
            let explained = tokio::task::spawn_blocking(move || match &query.policy {
                Some(policy) => engine.explain_with(policy, &query.request, &prepared),
                None => Ok(engine.explain(&query.request, &prepared)),
            })
            .await;
            let routed = match explained {
                Ok(Ok(routed)) => routed,
                Ok(Err(e)) => return policy_error(e),
                Err(e) => {
                    return error_json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        format!("the explanation failed: {e}"),
                    );
                }
            };
            json(
                StatusCode::OK,
                &Explanation {
                    policy: routed.policy_id.to_string(),
                    decision: routed.decision,
                    fault: routed.fault.map(|f| f.to_string()),
                },
            )
        }
        (&Method::GET, ["nodes"]) => json(
            StatusCode::OK,
            &NodesView {
                snapshot: with_admitted(&app),
                links: app.nodes.links(),
                unhealthy: app.nodes.health_reasons(),
            },
        ),
        (&Method::POST, ["nodes", node, "models", action @ ("load" | "unload")]) => {
            let expected = "send {\"model\": NAME} (the logical name or the node's own)";
            let named: ModelNamed = match read_json(request, expected).await {
                Ok(named) => named,
                Err(reply) => return reply,
            };
            let body = serde_json::json!({ "model": named.model });
            match crate::agents::command::post(&app.nodes, node, &format!("/models/{action}"), &body).await {
                Ok((status, answer)) if status.is_success() => json(StatusCode::OK, &answer),
                Ok((status, answer)) => error_json(
                    status,
                    "model_error",
                    answer["error"]["message"]
                        .as_str()
                        .map_or_else(|| format!("node {node} answered {status}"), str::to_owned),
                ),
                Err(e) => error_json(StatusCode::BAD_GATEWAY, "node_error", e.to_string()),
            }
        }
        (&Method::POST, ["nodes", node, action @ ("drain" | "undrain")]) => {
            let drain = *action == "drain";
            match app.nodes.set_drained(node, drain) {
                Ok(()) => {
                    tracing::info!(%node, "{}", if drain { "drained: no new work; in-flight requests finish" } else { "undrained: takes work again" });
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "node": node, "drained": drain, "in_flight": app.front.admission.in_use(node) }),
                    )
                }
                Err(message) => error_json(StatusCode::NOT_FOUND, "not_found", message),
            }
        }
        (&Method::GET, ["certs"]) => {
            let links: Vec<_> = app
                .nodes
                .links()
                .into_iter()
                .map(|l| serde_json::json!({ "node": l.node, "cert": l.cert }))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "nodes": links }))
        }
        _ => error_json(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no admin endpoint {method} {path}"),
        ),
    }
}

fn no_record() -> Response<ResponseBody> {
    error_json(
        StatusCode::NOT_FOUND,
        "not_found",
        "this controller keeps no decision record (`[decisions] enabled = false`)",
    )
}

/// `since=` and `until=`: ms since the epoch, or a span ago (`90s`, `15m`, `2h`, `7d`).
fn parse_time(raw: &str) -> Result<u64, String> {
    if let Ok(ms) = raw.parse::<u64>() {
        return Ok(ms);
    }
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a time: give ms since the epoch or a span ago like 15m, 2h, 7d"))?;
    let unit_ms: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d (e.g. 15m)")),
    };
    let span = number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("{raw:?} is longer than any record could be old; give a span like 7d"))?;
    Ok(crate::clock::now_ms().saturating_sub(span))
}

/// A query value with its `%XX` escapes (and `+` for a space) decoded.
fn percent_decoded(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{raw:?}: `%` must be followed by two hex digits"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} does not decode to UTF-8"))
}

fn decisions_params(query: &str) -> Result<crate::decisions::Query, String> {
    let mut out = crate::decisions::Query {
        limit: 100,
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decoded(value)?;
        match key {
            "since" => out.since_ms = Some(parse_time(&value)?),
            "until" => out.until_ms = Some(parse_time(&value)?),
            "policy" => out.policy = Some(value),
            "node" => out.node = Some(value),
            "limit" => {
                out.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=10_000).contains(l))
                    .ok_or_else(|| format!("limit must be 1-10000, not {value:?}"))?
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: use since, until, policy, node, limit"
                ));
            }
        }
    }
    Ok(out)
}

/// A small JSON body (at most `POLICY_LIMIT` bytes) as `T`; else the 400 that says what it
/// should have been.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    expected: &str,
) -> Result<T, Response<ResponseBody>> {
    let body = read_body(request.into_body(), POLICY_LIMIT).await?;
    serde_json::from_slice(&body).map_err(|e| {
        error_json(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("{e}; {expected}"),
        )
    })
}

/// `{"policy": ID or NAME}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyNamed {
    policy: String,
}

/// `{"model": NAME}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelNamed {
    model: String,
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

/// Run `read` on the decision store off the async workers, after everything submitted so far
/// is written, with the query's parameters; its answer as `200`, or the error's.
async fn from_store<T: Send + 'static>(
    app: &Arc<App>,
    query: &str,
    read: impl FnOnce(
        &crate::decisions::DecisionStore,
        crate::decisions::Query,
    ) -> Result<T, crate::decisions::store::StoreError>
    + Send
    + 'static,
    answer: impl FnOnce(T) -> Response<ResponseBody>,
) -> Response<ResponseBody> {
    let Some(store) = app.decisions.clone() else {
        return no_record();
    };
    let params = match decisions_params(query) {
        Ok(params) => params,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, "invalid_request", e),
    };
    match tokio::task::spawn_blocking(move || {
        store.flush();
        read(&store, params)
    })
    .await
    {
        Ok(Ok(value)) => answer(value),
        Ok(Err(e)) => error_json(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string()),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string()),
    }
}

async fn decisions_events(app: &Arc<App>, query: &str) -> Response<ResponseBody> {
    from_store(
        app,
        query,
        |store, params| store.events(params.since_ms, params.limit),
        |events| json(StatusCode::OK, &serde_json::json!({ "events": events })),
    )
    .await
}

async fn decisions_query(app: &Arc<App>, query: &str) -> Response<ResponseBody> {
    from_store(
        app,
        query,
        |store, params| {
            store
                .query(&params)
                .map(|page| (page, store.written(), store.dropped()))
        },
        |(page, written, dropped)| {
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "records": page.records,
                    "truncated": page.truncated,
                    "written": written,
                    "dropped": dropped,
                }),
            )
        },
    )
    .await
}

async fn decisions_export(app: &Arc<App>, query: &str) -> Response<ResponseBody> {
    from_store(
        app,
        query,
        |store, params| {
            let mut out = Vec::new();
            store.export(params.since_ms, &mut out).map(|_| out)
        },
        |body| {
            crate::http::text(
                StatusCode::OK,
                "application/x-ndjson",
                String::from_utf8(body).unwrap_or_default(),
            )
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_too_long_is_an_error_not_everything_and_query_values_are_percent_decoded() {
        let err = parse_time("18446744073709551615d").expect_err("overflows");
        assert!(err.contains("longer than any record"), "{err}");
        assert!(parse_time("99999999999999999999999h").is_err());
        let week_ago = parse_time("7d").expect("a week");
        let now = crate::clock::now_ms();
        assert!(now - week_ago >= 7 * 86_400_000 && now - week_ago < 7 * 86_400_000 + 60_000);

        let query = decisions_params("policy=seed-rules%40abc%2B1&node=my+node&since=15m").expect("valid");
        assert_eq!(query.policy.as_deref(), Some("seed-rules@abc+1"));
        assert_eq!(query.node.as_deref(), Some("my node"));
        let err = decisions_params("node=%zz").expect_err("bad escape");
        assert!(err.contains("two hex digits"), "{err}");
    }
}
