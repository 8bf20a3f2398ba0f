//! Supervision of a real runtime: the agent starts llama.cpp's server from its config,
//! reports it running, restarts it with backoff when it is killed, and stops it on exit.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn free_port() -> u16 {
    // The runtime cannot report a port it picked itself, so ask the kernel for one.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn a_supervised_runtime_is_restarted_after_it_is_killed_and_stopped_with_the_agent() {
    let port = free_port();
    let config = format!(
        "node = \"xeon\"\nmax_concurrency = 1\nmax_tokens = 256\ntelemetry_interval_ms = 200\n\
         [runtime]\nkind = \"llama-cpp\"\nbase_url = \"http://127.0.0.1:{port}\"\n\
         command = [{python:?}, \"-m\", \"llama_cpp.server\", \"--model\", {model:?}, \"--model_alias\", \"tiny\", \
                    \"--host\", \"127.0.0.1\", \"--port\", \"{port}\", \"--interrupt_requests\", \"False\", \"--n_threads\", \"1\"]\n\
         [[models]]\nlogical = \"tiny\"\nlocal = \"tiny\"\ncontext_length = 256\n",
        python = python().display().to_string(),
        model = model_dir().join("tiny.gguf").display().to_string(),
    );
    let (mut agent, _dir) = agent(&config);
    let client = reqwest::Client::new();
    let supervisor = || async {
        let t: Value = telemetry(&client, &agent.url).await;
        (
            t["runtime"]["supervisor"].clone(),
            t["runtime"]["healthy"].as_bool() == Some(true),
        )
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            supervisor().await.0["state"] == "running"
        })
        .await,
        "runtime never became healthy; agent log:\n{}",
        agent.log()
    );
    let (state, _) = supervisor().await;
    let first_pid = state["pid"].as_u64().expect("pid") as u32;

    std::process::Command::new("kill")
        .args(["-9", &first_pid.to_string()])
        .status()
        .expect("kill runtime");
    let restarted = eventually(Duration::from_secs(60), || async {
        let (state, healthy) = supervisor().await;
        state["restarts"] == 1
            && state["state"] == "running"
            && healthy
            && state["pid"].as_u64() != Some(first_pid as u64)
    })
    .await;
    assert!(restarted, "not restarted: {:?}\n{}", supervisor().await, agent.log());
    let (state, _) = supervisor().await;
    assert!(
        state["last_exit"].as_str().unwrap_or_default().contains("signal"),
        "{state}"
    );
    let second_pid = state["pid"].as_u64().expect("pid") as u32;

    let status = agent.terminate().expect("agent exits");
    assert!(status.success(), "{status:?}");
    let gone = !std::process::Command::new("kill")
        .args(["-0", &second_pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(gone, "the agent left its runtime (pid {second_pid}) running");
}
