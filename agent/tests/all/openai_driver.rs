//! The `openai` driver against REAL servers: llama.cpp's (the Xeon's engine) and
//! `mlx_lm.server` (the M4's runtime, on the CPU), each serving the tiny model.

use std::time::Duration;

use futures_util::StreamExt;
use switchyard_agent::config::RuntimeKind;
use switchyard_agent::driver::openai::OpenAiDriver;
use switchyard_agent::driver::{ChatMessage, ChatRequest, CompletionRequest, Event, RuntimeDriver, Sampling, collect};

use crate::support::*;

fn chat(model: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Tell me about routing.".into(),
        }],
        sampling: Sampling {
            max_tokens: Some(max_tokens),
            temperature: Some(0.0),
            ..Default::default()
        },
    }
}

async fn exercise(runtime: &Runtime, kind: RuntimeKind) {
    let driver = OpenAiDriver::new(kind, &runtime.url, Duration::from_secs(60));
    let model = runtime.model();

    let models = driver.models().await.expect("models");
    assert!(models.iter().any(|m| m == &model), "{models:?} lacks {model}");

    // Whole reply: runs to max_tokens (the tiny model never emits its end token).
    let (text, finish, usage) = collect(driver.chat(chat(&model, 12)).await.expect("chat"))
        .await
        .expect("completes");
    assert!(printable(&text), "{text:?}");
    assert_eq!(finish, "length");
    assert_eq!(usage.completion_tokens, 12);

    // Streamed: many deltas, then the end.
    let mut stream = driver.chat(chat(&model, 24)).await.expect("chat stream");
    let mut deltas = 0;
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event.expect("event") {
            Event::Delta(_) => deltas += 1,
            Event::Done { finish_reason, usage } => done = Some((finish_reason, usage)),
        }
    }
    let (finish, usage) = done.expect("a final event");
    assert!(deltas > 5, "{deltas} deltas");
    assert_eq!(finish, "length");
    assert_eq!(usage.completion_tokens, 24);

    // Completions too.
    let completion = CompletionRequest {
        model: model.clone(),
        prompt: "Once upon a time".into(),
        sampling: Sampling {
            max_tokens: Some(8),
            ..Default::default()
        },
    };
    let (text, finish, _) = collect(driver.complete(completion).await.expect("complete"))
        .await
        .expect("completes");
    assert!(printable(&text) && finish == "length", "{text:?} {finish}");

    let probe = driver.probe().await;
    assert!(probe.healthy, "{probe:?}");
    assert!(probe.loaded.iter().any(|m| m.name == model), "{probe:?}");
}

#[tokio::test]
async fn the_openai_driver_chats_and_streams_against_a_real_llama_cpp_server() {
    let runtime = Runtime::start("llama-cpp");
    exercise(&runtime, RuntimeKind::LlamaCpp).await;
}

#[tokio::test]
async fn the_openai_driver_chats_and_streams_against_a_real_mlx_lm_server() {
    let runtime = Runtime::start("mlx");
    exercise(&runtime, RuntimeKind::Mlx).await;
    // mlx_lm.server 404s an unknown model: the driver says which.
    let driver = OpenAiDriver::new(RuntimeKind::Mlx, &runtime.url, Duration::from_secs(60));
    let error = match driver.chat(chat("no-such-model", 4)).await {
        Ok(stream) => collect(stream).await.err(),
        Err(e) => Some(e),
    };
    assert!(
        matches!(error, Some(switchyard_agent::driver::DriverError::ModelNotFound(ref m)) if m == "no-such-model"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stopped_runtime_is_reported_unreachable_and_unhealthy() {
    let runtime = Runtime::start("llama-cpp");
    let url = runtime.url.clone();
    drop(runtime);
    let driver = OpenAiDriver::new(RuntimeKind::LlamaCpp, &url, Duration::from_secs(5));
    let error = driver.chat(chat("tiny", 4)).await.err().expect("fails");
    assert!(error.to_string().contains("unreachable"), "{error}");
    let probe = driver.probe().await;
    assert!(!probe.healthy && probe.error.is_some(), "{probe:?}");
}
