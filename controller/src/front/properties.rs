//! Property tests, with shrinking, for the parsers that face clients: the model splice,
//! the policy's view of a request, the Ollama translation both ways. Each property holds for
//! every input proptest generates; a failure is shrunk to the smallest input that breaks it.

use bytes::Bytes;
use http::HeaderMap;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::keys::Grant;
use super::model_field::replace_model;
use super::ollama::{NdjsonTranslator, SchemaStyle, to_openai_chat};
use super::request_info::{Api, MAX_MODEL_BYTES, MAX_SESSION_BYTES, MAX_TASK_BYTES, request_info};

/// Any JSON value, a few levels deep, with strings that include quotes, escapes and
/// non-ASCII.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A JSON object with a string `model` somewhere among other fields.
fn body_with_model() -> impl Strategy<Value = (Map<String, Value>, String)> {
    (
        prop::collection::btree_map(
            "[a-z_]{1,8}".prop_filter("not model", |k| k != "model"),
            json_value(),
            0..6,
        ),
        any::<String>(),
    )
        .prop_map(|(fields, model)| (fields.into_iter().collect(), model))
}

/// `object` written with the model at `position` and `space` between tokens.
fn write_with(object: &Map<String, Value>, model: &str, position: usize, space: &str) -> String {
    let mut parts: Vec<String> = object
        .iter()
        .map(|(k, v)| format!("{}{space}:{space}{}", Value::String(k.clone()), v))
        .collect();
    let at = position % (parts.len() + 1);
    parts.insert(
        at,
        format!("\"model\"{space}:{space}{}", Value::String(model.to_owned())),
    );
    format!("{{{space}{}{space}}}", parts.join(&format!(",{space}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// The splice changes the model and nothing else, wherever the field is and however the
    /// body is spaced.
    #[test]
    fn the_model_splice_changes_the_model_and_only_the_model(
        (object, model) in body_with_model(),
        local in any::<String>(),
        position in any::<usize>(),
        space in prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t")],
    ) {
        let text = write_with(&object, &model, position, space);
        let spliced = replace_model(&Bytes::from(text.clone()), &local).expect("a body with one model");
        let mut expected: Value = serde_json::from_str(&text).expect("valid JSON");
        expected["model"] = Value::String(local.clone());
        let got: Value = serde_json::from_slice(&spliced).expect("still valid JSON");
        prop_assert_eq!(got, expected);
        // The bytes before the model's value are the client's, as sent.
        let quoted = Value::String(model).to_string();
        let at = text.find(&format!("\"model\"{space}:{space}{quoted}")).expect("model field");
        prop_assert_eq!(&spliced[..at], &text.as_bytes()[..at]);
    }

    /// Any bytes at all: an answer or an error, never a panic.
    #[test]
    fn the_model_splice_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), local in ".{0,8}") {
        let _ = replace_model(&Bytes::from(bytes), &local);
    }

    /// Whatever a client sends, the policy's view is bounded: a model, task and session the
    /// record, the log and the policy can hold; a priority of 0-9; a bounded set of tags.
    #[test]
    fn the_policys_view_of_any_request_is_bounded(
        body in json_value(),
        extra in prop::collection::btree_map(prop_oneof![Just("model".to_owned()), Just("user".to_owned()), Just("metadata".to_owned()), Just("stream".to_owned()), Just("max_tokens".to_owned())], json_value(), 0..5),
        task in prop::option::of("[ -~]{0,100}"),
        session in prop::option::of("[ -~]{0,300}"),
        priority in prop::option::of("[0-9a-z]{0,3}"),
    ) {
        let mut body = match body { Value::Object(map) => map, _ => Map::new() };
        body.extend(extra);
        let body = Value::Object(body);
        let mut headers = HeaderMap::new();
        for (name, value) in [("x-switchyard-task", &task), ("x-switchyard-session", &session), ("x-switchyard-priority", &priority)] {
            if let Some(value) = value.as_deref().and_then(|v| http::HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        }
        for api in [Api::OpenAiChat, Api::OllamaChat, Api::OllamaGenerate, Api::OpenAiOther] {
            if let Ok(info) = request_info(api, "r", &headers, &body, &Grant::open()) {
                prop_assert!(!info.model.is_empty() && info.model.len() <= MAX_MODEL_BYTES);
                prop_assert!(info.task.as_ref().is_none_or(|t| t.len() <= MAX_TASK_BYTES));
                prop_assert!(info.session.as_ref().is_none_or(|s| s.len() <= MAX_SESSION_BYTES));
                prop_assert!(info.priority <= 9);
                prop_assert!(info.tags.len() <= 19);
                prop_assert!(info.tags.iter().all(|(k, v)| k.len() <= 64 && v.len() <= 256));
            }
        }
    }

    /// An Ollama chat or generate body of any shape translates to an OpenAI chat request for
    /// the node's model, never a panic.
    #[test]
    fn any_ollama_body_translates_to_an_openai_chat_for_the_nodes_model(body in json_value(), generate in any::<bool>(), llama in any::<bool>()) {
        let style = if llama { SchemaStyle::LlamaCpp } else { SchemaStyle::OpenAi };
        let translated = to_openai_chat(&body, "local-model", generate, style);
        prop_assert_eq!(&translated["model"], &Value::String("local-model".to_owned()));
        prop_assert!(translated["messages"].is_array(), "{}", translated);
    }

    /// Any sequence of SSE payloads, well formed or not, gives Ollama lines or an error,
    /// never a panic; a stream that ends with [DONE] after content is finished.
    #[test]
    fn the_stream_translation_takes_any_events(events in prop::collection::vec(prop_oneof![json_value().prop_map(|v| v.to_string()), ".{0,40}"], 0..8), generate in any::<bool>()) {
        let mut translator = NdjsonTranslator::new("logical", generate, std::time::Instant::now());
        for event in &events {
            if translator.event(event).is_err() {
                return Ok(());
            }
        }
        let done = translator.done(true);
        prop_assert_eq!(&done["model"], &Value::String("logical".to_owned()));
    }
}
