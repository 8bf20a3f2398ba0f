//! The decision record over the admin API: query, policy events, export (NDJSON) and an
//! all-or-nothing import. Reads run off the async workers after everything submitted so far
//! is written.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::{Admin, AdminError, Answer, Route, body};
use crate::decisions::store::StoreError;
use crate::decisions::{DecisionStore, Query};
use crate::http::json;

/// Largest decision-record import (NDJSON) in one request.
const IMPORT_LIMIT: usize = 256 * 1024 * 1024;

pub(super) async fn handle(admin: &Admin, route: &Route<'_>, request: Request<Incoming>) -> Option<Answer> {
    let query = route.query;
    Some(match (route.method, route.segments.as_slice()) {
        (&Method::GET, ["decisions"]) => {
            let page = from_store(admin, query, |store, params| {
                store
                    .query(&params)
                    .map(|page| (page, store.written(), store.dropped()))
            })
            .await;
            page.map(|(page, written, dropped)| {
                json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "records": page.records,
                        "truncated": page.truncated,
                        "written": written,
                        "dropped": dropped,
                    }),
                )
            })
        }
        (&Method::GET, ["decisions", "events"]) => from_store(admin, query, |store, params| {
            store.events(params.since_ms, params.limit)
        })
        .await
        .map(|events| json(StatusCode::OK, &serde_json::json!({ "events": events }))),
        (&Method::GET, ["decisions", "export"]) => from_store(admin, query, |store, params| {
            let mut out = Vec::new();
            store.export(params.since_ms, &mut out).map(|_| out)
        })
        .await
        .map(|body| {
            crate::http::text(
                StatusCode::OK,
                "application/x-ndjson",
                String::from_utf8(body).unwrap_or_default(),
            )
        }),
        (&Method::POST, ["decisions", "import"]) => import(admin, request).await,
        _ => return None,
    })
}

/// `POST /admin/decisions/import`: all of it, or (naming the first bad line) nothing.
async fn import(admin: &Admin, request: Request<Incoming>) -> Answer {
    let store = admin.decisions.clone().ok_or(AdminError::NoRecord)?;
    let text = body::text(request, IMPORT_LIMIT, "the import (NDJSON)").await?;
    let report = tokio::task::spawn_blocking(move || store.import(&text)).await??;
    Ok(json(StatusCode::OK, &report))
}

/// Run `read` on the decision store off the async workers, after everything submitted so far
/// is written, with the query's parameters.
async fn from_store<T: Send + 'static>(
    admin: &Admin,
    query: &str,
    read: impl FnOnce(&DecisionStore, Query) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AdminError> {
    let store = admin.decisions.clone().ok_or(AdminError::NoRecord)?;
    let params = decisions_params(query).map_err(AdminError::BadRequest)?;
    Ok(tokio::task::spawn_blocking(move || {
        store.flush();
        read(&store, params)
    })
    .await??)
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

fn decisions_params(query: &str) -> Result<Query, String> {
    let mut out = Query {
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
