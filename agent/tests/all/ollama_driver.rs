//! The `ollama` driver (ollama-rs) against a test double that follows Ollama's docs/api.md
//! (tests/runtimes/ollama_double.py cites the section for each shape) and takes its tokens
//! from a real llama.cpp server, so counters and timings are real. Ollama itself has no
//! server package on the registries these machines reach.

use std::time::Duration;

use switchyard_agent::driver::ollama::OllamaDriver;
use switchyard_agent::driver::{
    ChatMessage, ChatRequest, CompletionRequest, DriverError, EmbedRequest, RuntimeDriver, Sampling, collect,
};

use crate::support::*;

fn chat(model: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hello".into(),
        }],
        sampling: Sampling {
            max_tokens: Some(max_tokens),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn the_ollama_driver_chats_generates_lists_embeds_and_reports_loaded_models() {
    let backend = Runtime::start("llama-cpp");
    let double = ollama_double(&backend, &[]);
    let driver = OllamaDriver::new(&double.url, Some("30m".into()), Vec::new(), Duration::from_secs(60));

    // /api/tags through ollama-rs; like Ollama, the double names untagged models `:latest`.
    let models = driver.models().await.expect("tags");
    assert!(models.iter().any(|m| m == "tiny:latest"), "{models:?}");

    // /api/chat, NDJSON stream with the final done object and its counters.
    let (text, finish, usage) = collect(driver.chat(chat("tiny", 10)).await.expect("chat"))
        .await
        .expect("completes");
    assert!(printable(&text), "{text:?}");
    assert_eq!(finish, "length");
    assert_eq!(usage.completion_tokens, 10, "eval_count");
    assert!(usage.prompt_tokens > 0, "prompt_eval_count");

    // /api/generate.
    let completion = CompletionRequest {
        model: "tiny".into(),
        prompt: "Once".into(),
        sampling: Sampling {
            max_tokens: Some(6),
            ..Default::default()
        },
    };
    let (text, finish, usage) = collect(driver.complete(completion).await.expect("generate"))
        .await
        .expect("completes");
    assert!(
        printable(&text) && finish == "length" && usage.completion_tokens == 6,
        "{text:?} {finish} {usage:?}"
    );

    // /api/ps: the model is loaded after a request.
    let probe = driver.probe().await;
    assert!(probe.healthy, "{probe:?}");
    assert!(probe.loaded.iter().any(|m| m.name == "tiny:latest"), "{probe:?}");

    // /api/embed.
    let vectors = driver
        .embed(EmbedRequest {
            model: "tiny".into(),
            input: vec!["a".into(), "b".into()],
        })
        .await
        .expect("embed");
    assert_eq!(vectors.len(), 2);
    assert!(!vectors[0].is_empty());

    // An unknown model is named.
    let error = driver.chat(chat("nope", 4)).await.err().expect("unknown model fails");
    assert!(
        matches!(error, DriverError::ModelNotFound(ref m) if m == "nope"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_missing_catalog_model_is_pulled_on_demand_and_then_served() {
    let backend = Runtime::start("llama-cpp");
    let double = ollama_double(&backend, &["tiny2:1b"]);
    let without_pull = OllamaDriver::new(&double.url, None, Vec::new(), Duration::from_secs(60));
    assert!(matches!(
        without_pull.chat(chat("tiny2:1b", 4)).await,
        Err(DriverError::ModelNotFound(_))
    ));

    let driver = OllamaDriver::new(&double.url, None, vec!["tiny2:1b".into()], Duration::from_secs(60));
    let (text, _, usage) = collect(driver.chat(chat("tiny2:1b", 5)).await.expect("pulled, then chat"))
        .await
        .expect("completes");
    assert!(printable(&text) && usage.completion_tokens == 5, "{text:?}");
    assert!(driver.models().await.expect("tags").iter().any(|m| m == "tiny2:1b"));
}

#[tokio::test]
async fn the_operator_loads_and_unloads_an_ollama_model_through_ollama_rs() {
    let backend = Runtime::start("llama-cpp");
    let double = ollama_double(&backend, &[]);
    let driver = OllamaDriver::new(&double.url, Some("30m".into()), Vec::new(), Duration::from_secs(60));
    let resident = |probe: switchyard_agent::driver::RuntimeProbe| -> Vec<String> {
        probe.loaded.into_iter().map(|m| m.name).collect()
    };
    assert!(resident(driver.probe().await).is_empty(), "nothing loaded yet");
    driver.load_model("tiny").await.expect("load");
    let loaded = resident(driver.probe().await);
    assert!(loaded.iter().any(|m| m.starts_with("tiny")), "{loaded:?}");
    driver.unload_model("tiny").await.expect("unload");
    assert!(resident(driver.probe().await).is_empty(), "keep_alive 0 unloads it");
    let missing = driver.load_model("no-such-model").await.expect_err("unknown model");
    assert_eq!(missing.status(), 404, "{missing}");
}
