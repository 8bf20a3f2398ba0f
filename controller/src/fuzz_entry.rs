//! One entry point per parser that faces the outside, each taking any bytes, for the
//! coverage-guided fuzz targets in `fuzz/` (cargo-afl) and for the test that replays their
//! committed corpora (`fuzz/corpus/`). Each checks the parser's invariants and panics only
//! when one breaks: a panic here is a bug found.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::front::keys::Grant;
use crate::front::request_info::{Api, MAX_MODEL_BYTES, MAX_SESSION_BYTES, MAX_TASK_BYTES, request_info};

/// A fuzz target: any bytes in; a panic is an invariant broken.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the names of `fuzz/`'s binaries and corpus folders).
pub const TARGETS: [(&str, Target); 8] = [
    ("model_splice", model_splice),
    ("request_info", request_metadata),
    ("ollama", ollama_translation),
    ("anthropic", anthropic_translation),
    ("sse", sse_framing),
    ("telemetry", telemetry),
    ("policy_spec", policy_spec),
    ("fixture", fixture_file),
];

/// The target named `name` (one of [`TARGETS`]).
pub fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {name:?}"))
}

/// The top-level `model` of a JSON body spliced: the result parses to the same object with
/// only `model` changed.
pub fn model_splice(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let Ok(spliced) = crate::front::model_field::replace_model(&body, "local/model\"x") else {
        return;
    };
    if let Ok(Value::Object(mut before)) = serde_json::from_slice::<Value>(data) {
        let after: Value = serde_json::from_slice(&spliced).expect("a spliced valid body stays valid JSON");
        before.insert("model".to_owned(), Value::String("local/model\"x".to_owned()));
        assert_eq!(after, Value::Object(before), "the splice changed more than the model");
    }
}

/// The first line as a header block (`name: value` pairs split by `;`), the rest as the
/// body: the policy's view is bounded whatever arrives.
fn request_metadata(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or(("", &text));
    let mut headers = HeaderMap::new();
    for pair in head.split(';') {
        if let Some((name, value)) = pair.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.insert(name, value);
        }
    }
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return;
    };
    for api in [
        Api::OpenAiChat,
        Api::OpenAiCompletions,
        Api::OllamaChat,
        Api::OllamaGenerate,
    ] {
        if let Ok(info) = request_info(api, "fuzz", &headers, &body, &Grant::open()) {
            assert!(info.model.len() <= MAX_MODEL_BYTES);
            assert!(info.task.as_ref().is_none_or(|t| t.len() <= MAX_TASK_BYTES));
            assert!(info.session.as_ref().is_none_or(|s| s.len() <= MAX_SESSION_BYTES));
            assert!(info.priority <= 9);
        }
    }
}

/// An Ollama request translated for an OpenAI runtime, and the runtime's SSE events (the
/// input's lines) translated back.
fn ollama_translation(data: &[u8]) {
    use crate::front::ollama::{NdjsonTranslator, SchemaStyle, to_openai_chat};
    let text = String::from_utf8_lossy(data);
    if let Ok(body) = serde_json::from_str::<Value>(&text) {
        for (generate, style) in [(false, SchemaStyle::OpenAi), (true, SchemaStyle::LlamaCpp)] {
            let translated = to_openai_chat(&body, "local", generate, style);
            assert_eq!(translated["model"], "local");
        }
    }
    let mut translator = NdjsonTranslator::new("logical", false, std::time::Instant::now());
    for line in text.lines() {
        if translator.event(line).is_err() {
            return;
        }
    }
    let _ = translator.done(true);
}

/// An Anthropic Messages request translated for an OpenAI runtime (the model replaced, every
/// message with a role, every tool a function), and the runtime's SSE events (the input's
/// lines) translated back: the events come in Anthropic's order, and the whole message's
/// blocks are the ones the stream opened.
fn anthropic_translation(data: &[u8]) {
    use crate::front::anthropic::{AnthropicTranslator, to_openai_chat};
    let text = String::from_utf8_lossy(data);
    if let Ok(body) = serde_json::from_str::<Value>(&text) {
        let translated = to_openai_chat(&body, "local");
        assert_eq!(translated["model"], "local");
        for message in translated["messages"].as_array().into_iter().flatten() {
            assert!(message["role"].is_string(), "a message without a role: {message}");
        }
        for tool in translated["tools"].as_array().into_iter().flatten() {
            assert_eq!(tool["type"], "function");
        }
    }
    let mut translator = AnthropicTranslator::new("logical", "fuzz", 7);
    let mut events = String::new();
    for line in text.lines() {
        match translator.event(line) {
            Ok(more) => events.push_str(&more),
            Err(_) => return,
        }
    }
    events.push_str(&translator.end());
    let names: Vec<&str> = events.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{events}");
    assert_eq!(names.last(), Some(&"message_stop"), "{events}");
    let opened = names.iter().filter(|n| **n == "content_block_start").count();
    let closed = names.iter().filter(|n| **n == "content_block_stop").count();
    assert_eq!(opened, closed, "every block opened is closed: {events}");
    let message = translator.message();
    assert_eq!(message["content"].as_array().map_or(0, Vec::len), opened);
}

/// SSE decoded whole and cut at every split the first byte picks: the same events.
fn sse_framing(data: &[u8]) {
    use switchyard_protocol::sse::SseDecoder;
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let mut whole = SseDecoder::default();
    let expected = whole.push(stream);
    let mut cut = SseDecoder::default();
    let mut got = Vec::new();
    for chunk in stream.chunks(usize::from(step).max(1)) {
        got.extend(cut.push(chunk));
    }
    assert_eq!(got, expected, "the events depend on how the bytes were cut");
    assert_eq!(cut.finish(), whole.finish());
}

/// Telemetry as an agent's link carries it: lines, each parsed and clamped.
fn telemetry(data: &[u8]) {
    use crate::agents::telemetry_bounds::{LineReader, MAX_CONCURRENCY, MAX_MODELS, clamp};
    let mut reader = LineReader::default();
    let Ok(lines) = reader.push(data) else {
        return;
    };
    for line in lines {
        if let Ok(mut sample) = serde_json::from_slice::<switchyard_protocol::AgentTelemetry>(&line) {
            clamp(&mut sample);
            assert!(sample.models.len() <= MAX_MODELS);
            assert!(sample.limits.max_concurrency <= MAX_CONCURRENCY);
        }
    }
}

/// A policy document: a spec, or an error naming its origin.
fn policy_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = crate::policy::PolicySpec::parse(&text, "fuzz.toml") {
        assert!(error.to_string().contains("fuzz.toml"), "{error}");
    }
}

/// A fixture file (`policy test`): parsed or refused, never a panic.
fn fixture_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = toml::from_str::<crate::fixtures::FixtureFile>(&text);
    let _ = toml::from_str::<switchyard_protocol::ClusterSnapshot>(&text);
}

#[cfg(test)]
mod tests {
    use super::TARGETS;

    /// Every committed corpus input (and every crash found and fixed, kept as a regression
    /// case) passes its target.
    #[test]
    fn every_committed_fuzz_input_passes_its_target() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut ran = 0;
        for (name, target) in TARGETS {
            let folder = corpus.join(name);
            let entries = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
            for entry in entries {
                let path = entry.expect("entry").path();
                let data = std::fs::read(&path).expect("input");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} breaks the target", path.display());
                ran += 1;
            }
        }
        assert!(ran >= TARGETS.len(), "the corpora are empty");
    }
}
