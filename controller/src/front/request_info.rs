//! What the policy learns about a request: the logical model, streaming, token estimates,
//! and the routing hints (`x-switchyard-task`, `x-switchyard-priority`, the session from
//! `x-switchyard-session` or the coding agents' own headers (see [`super::session`]),
//! OpenAI's `metadata` and `user`). Never the prompt itself.

use http::HeaderMap;
use serde_json::Value;
use switchyard_protocol::RequestInfo;

use super::keys::Grant;

pub use switchyard_protocol::Api;

/// Whose shape a request's answers and errors take.
pub fn client_api(api: Api) -> super::ClientApi {
    if api.is_ollama() {
        super::ClientApi::Ollama
    } else if api == Api::AnthropicMessages {
        super::ClientApi::Anthropic
    } else {
        super::ClientApi::OpenAi
    }
}

/// The endpoints whose requests and answers need more than relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Other,
    /// `/v1/messages/count_tokens`: fills no cache; on a runtime without it, counted by a
    /// one-token generation.
    CountTokens,
    /// `/v1/responses`: may continue a previous response; the answer's response id is
    /// remembered with its node.
    Responses,
}

impl Endpoint {
    pub fn of(path: &str) -> Endpoint {
        match path {
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            "/v1/responses" => Endpoint::Responses,
            _ => Endpoint::Other,
        }
    }
}

/// Text the prompt is made of, for the token estimate (about 4 bytes a token).
fn prompt_bytes(body: &Value) -> usize {
    let mut bytes = 0;
    if let Some(messages) = body["messages"].as_array() {
        for m in messages {
            bytes += match &m["content"] {
                Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
        }
    }
    for key in ["prompt", "system", "input"] {
        bytes += match &body[key] {
            Value::String(s) => s.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        };
    }
    bytes
}

/// The longest model name a request may give (a longer one is a client error): real names,
/// paths included, are far shorter, and the name is kept in logs and the decision record.
pub const MAX_MODEL_BYTES: usize = 256;
/// The longest `x-switchyard-task` (or `metadata.task`) a request may give.
pub const MAX_TASK_BYTES: usize = 64;
use super::clip::clip;
pub use super::session::MAX_SESSION_BYTES;
use super::session::header;

/// Build the policy's view of a request. `Err` is a client error message (400).
pub fn request_info(
    api: Api,
    id: &str,
    headers: &HeaderMap,
    body: &Value,
    grant: &Grant,
) -> Result<RequestInfo, String> {
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or("the request needs a `model`")?
        .to_owned();
    if model.len() > MAX_MODEL_BYTES {
        return Err(format!(
            "`model` is {} bytes; a model name is at most {MAX_MODEL_BYTES} (GET /v1/models lists them)",
            model.len()
        ));
    }
    let stream = body["stream"].as_bool().unwrap_or(api.streams_by_default());
    let max_tokens = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .or_else(|| body["options"]["num_predict"].as_u64())
        .map(|n| n.min(u64::from(u32::MAX)) as u32);
    let priority = match header(headers, "x-switchyard-priority") {
        Some(raw) => raw.parse::<u8>().ok().filter(|p| *p <= 9).ok_or_else(|| {
            format!("x-switchyard-priority must be a number from 0 (lowest) to 9 (highest), got {raw:?}")
        })?,
        None => switchyard_protocol::RequestInfo::for_model("").priority,
    }
    .min(grant.max_priority);
    let mut tags: Vec<(String, String)> = vec![("api-key".to_owned(), grant.name.clone())];
    if let Some(metadata) = body["metadata"].as_object() {
        for (key, value) in metadata.iter().take(16) {
            if let Some(text) = value.as_str() {
                tags.push((clip(key, 64).to_owned(), clip(text, 256).to_owned()));
            }
        }
    }
    let task = header(headers, "x-switchyard-task")
        .map(str::to_owned)
        .or_else(|| body["metadata"]["task"].as_str().map(str::to_owned));
    if let Some(task) = &task
        && task.len() > MAX_TASK_BYTES
    {
        return Err(format!(
            "the task (x-switchyard-task or metadata.task) is {} bytes; a task is at most {MAX_TASK_BYTES}, e.g. `development` or `batch`",
            task.len()
        ));
    }
    let session = super::session::session_of(headers, body);
    if let Some(found) = &session {
        tags.push(("session-source".to_owned(), found.source.as_str().to_owned()));
        if let Some(parent) = &found.parent {
            tags.push(("session-parent".to_owned(), parent.clone()));
        }
    }
    let session = session.map(|s| s.key);
    Ok(RequestInfo {
        id: id.to_owned(),
        api,
        model,
        stream,
        prompt_tokens: (prompt_bytes(body) / 4) as u32,
        max_tokens,
        priority,
        task,
        session,
        tags,
        cached: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_from_headers_and_openai_fields_and_the_key_caps_priority() {
        let mut headers = HeaderMap::new();
        headers.insert("x-switchyard-task", "batch".parse().expect("header"));
        headers.insert("x-switchyard-priority", "9".parse().expect("header"));
        let body = serde_json::json!({
            "model": "qwen25-coder-7b", "max_tokens": 64, "user": "alice",
            "metadata": {"team": "eval"}, "messages": [{"role": "user", "content": "x".repeat(400)}],
        });
        let grant = Grant {
            name: "ci".into(),
            models: vec!["*".into()],
            max_priority: 6,
            weight: 1,
            continue_streams: true,
        };
        let info = request_info(Api::OpenAiChat, "r1", &headers, &body, &grant).expect("valid");
        assert_eq!(info.task.as_deref(), Some("batch"));
        assert_eq!(info.priority, 6, "capped by the key");
        assert_eq!(info.session.as_deref(), Some("alice"));
        assert!(
            info.tags.contains(&("session-source".into(), "openai-user".into())),
            "{:?}",
            info.tags
        );
        assert_eq!(info.max_tokens, Some(64));
        assert_eq!(info.prompt_tokens, 100);
        assert!(!info.stream);
        assert!(info.tags.contains(&("team".into(), "eval".into())));
        assert!(info.tags.contains(&("api-key".into(), "ci".into())));
    }

    #[test]
    fn generated_bodies_and_hint_headers_give_metadata_or_a_client_error_never_a_panic() {
        let mut rng = crate::generated::Rng::new(0x01f0_cafe);
        let apis = [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiOther,
            Api::OllamaChat,
            Api::OllamaGenerate,
        ];
        for case in 0..3000 {
            let mut body = match rng.value(0) {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            for key in [
                "model",
                "stream",
                "max_tokens",
                "messages",
                "metadata",
                "user",
                "options",
                "prompt",
            ] {
                if rng.below(2) == 0 {
                    body.insert(key.to_owned(), rng.value(1));
                }
            }
            let mut headers = HeaderMap::new();
            for name in ["x-switchyard-task", "x-switchyard-priority", "x-switchyard-session"] {
                if let Ok(value) = http::HeaderValue::from_str(&rng.text().replace(['\n', '\u{1}'], "")) {
                    headers.insert(name, value);
                }
            }
            let api = apis[rng.below(apis.len() as u64) as usize];
            let body = serde_json::Value::Object(body);
            match request_info(api, "r", &headers, &body, &Grant::open()) {
                Ok(info) => {
                    assert_eq!(Some(info.model.as_str()), body["model"].as_str(), "case {case}");
                    assert!(info.priority <= 9, "case {case}");
                }
                Err(message) => assert!(!message.is_empty(), "case {case}"),
            }
        }
    }

    #[test]
    fn ollama_streams_by_default_and_bad_hints_are_client_errors() {
        let body = serde_json::json!({ "model": "m", "options": { "num_predict": 12 } });
        let info = request_info(Api::OllamaChat, "r", &HeaderMap::new(), &body, &Grant::open()).expect("valid");
        assert!(info.stream);
        assert_eq!(info.max_tokens, Some(12));
        let mut headers = HeaderMap::new();
        headers.insert("x-switchyard-priority", "urgent".parse().expect("header"));
        let err = request_info(Api::OpenAiChat, "r", &headers, &body, &Grant::open()).expect_err("invalid");
        assert!(err.contains("0 (lowest) to 9"), "{err}");
        let err = request_info(
            Api::OpenAiChat,
            "r",
            &HeaderMap::new(),
            &serde_json::json!({}),
            &Grant::open(),
        )
        .expect_err("no model");
        assert!(err.contains("`model`"), "{err}");
    }

    #[test]
    fn client_chosen_strings_are_bounded_a_long_session_stays_distinct_and_long_names_are_refused() {
        let body = |extra: serde_json::Value| {
            let mut body = serde_json::json!({ "model": "m" });
            for (k, v) in extra.as_object().expect("object") {
                body[k] = v.clone();
            }
            body
        };
        let info =
            |body: &serde_json::Value| request_info(Api::OpenAiChat, "r", &HeaderMap::new(), body, &Grant::open());

        let long_a = format!("{}a", "u".repeat(900 * 1024));
        let long_b = format!("{}b", "u".repeat(900 * 1024));
        let a = info(&body(serde_json::json!({ "user": long_a })))
            .expect("valid")
            .session
            .expect("session");
        let b = info(&body(serde_json::json!({ "user": long_b })))
            .expect("valid")
            .session
            .expect("session");
        assert!(
            a.len() <= MAX_SESSION_BYTES && b.len() <= MAX_SESSION_BYTES,
            "{} {}",
            a.len(),
            b.len()
        );
        assert_ne!(a, b, "two long sessions that differ only at the end stay apart");
        let short = info(&body(serde_json::json!({ "user": "alice" }))).expect("valid");
        assert_eq!(
            short.session.as_deref(),
            Some("alice"),
            "a normal session is kept as sent"
        );

        let err = info(&body(serde_json::json!({ "model": "m".repeat(900 * 1024) }))).expect_err("refused");
        assert!(err.contains("at most 256") && err.len() < 200, "{}", clip(&err, 300));
        let err = info(&body(serde_json::json!({ "metadata": { "task": "t".repeat(65) } }))).expect_err("refused");
        assert!(err.contains("at most 64"), "{err}");
        let mut headers = HeaderMap::new();
        headers.insert("x-switchyard-task", "t".repeat(4096).parse().expect("header"));
        assert!(
            request_info(
                Api::OpenAiChat,
                "r",
                &headers,
                &body(serde_json::json!({})),
                &Grant::open()
            )
            .is_err()
        );

        let tags = info(&body(
            serde_json::json!({ "metadata": { "k".repeat(300): "é".repeat(300) } }),
        ))
        .expect("valid")
        .tags;
        assert!(tags.iter().all(|(k, v)| k.len() <= 64 && v.len() <= 256), "{tags:?}");
    }
}
