//! A policy written outside this repository, the way its author would: `switchyard policy
//! new` in an empty folder, `policy build` with the language's own toolchain, `policy test`
//! with the fixtures it came with, uploaded to a running demo, rehearsed as a shadow and as a
//! canary, promoted, and a request routed by it. For each language whose toolchain installs here: Rust (cargo and
//! the wasm32-wasip2 target), Python (componentize-py, installed into the test venv by
//! tests/runtimes/setup.sh) and JavaScript (jco, which setup.sh installs with npm).

use std::path::Path;
use std::process::Command;

use crate::process::{BIN, Controller, curl_with_key, policies_copy};
use crate::runtimes::repo;

fn switchyard_in(dir: &Path, args: &[&str], env: &[(&str, std::ffi::OsString)]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "switchyard {args:?} in {}:\n{text}",
        dir.display()
    );
    text
}

/// The whole flow for one language; `env` is what its toolchain needs found.
fn an_author_writes_builds_tests_and_swaps_in(lang: &str, name: &str, env: &[(&str, std::ffi::OsString)]) {
    let work = tempfile::tempdir().expect("tempdir");
    let wrote = switchyard_in(work.path(), &["policy", "new", name, "--lang", lang], env);
    assert!(wrote.contains("wrote a "), "{wrote}");
    let project = work.path().join(name);

    let built = switchyard_in(&project, &["policy", "build"], env);
    assert!(
        built.contains(&format!("built {}", project.join(format!("{name}.wasm")).display())),
        "{built}"
    );
    let tested = switchyard_in(
        &project,
        &["policy", "test", "policy.toml", &format!("{name}.cases.toml")],
        env,
    );
    assert!(tested.contains(" passed, 0 failed"), "{tested}");

    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let policy_file = project.join("policy.toml");
    let uploaded = demo.cli_ok(&["policy", "upload", policy_file.to_str().expect("utf-8")]);
    assert!(uploaded.contains(&format!("{name}@")), "{uploaded}");

    let key = demo.api_key.clone().expect("the demo's key");
    let body = r#"{"model": "qwen25-coder-7b", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}"#;
    let ask = || {
        let (status, text) = curl_with_key(&format!("{}/v1/chat/completions", demo.url), &key, &["-d", body]);
        assert_eq!(status, 200, "{text}");
        text
    };
    // Rehearsed beside the active policy: as a shadow (every request, off the path)...
    demo.cli_ok(&["policy", "shadow", name]);
    for _ in 0..4 {
        ask();
    }
    // The shadow decides off the request path: wait (bounded) until it has compared all four.
    let compared_all = demo.wait_for(std::time::Duration::from_secs(20), |demo| {
        demo.cli_ok(&["policy", "shadow", "--report"]).contains(": 4 compared")
    });
    let shadow = demo.cli_ok(&["policy", "shadow", "--stop"]);
    assert!(compared_all, "{shadow}");
    assert!(
        shadow.contains(&format!("shadow {name}@")) && !shadow.contains(" 0 compared") && !shadow.contains("faults"),
        "{shadow}"
    );
    // ...then as a canary deciding every request, and promoted.
    demo.cli_ok(&["policy", "canary", name, "--percent", "100"]);
    for _ in 0..3 {
        ask();
    }
    let promoted = demo.cli_ok(&["policy", "canary", "--promote"]);
    assert!(
        promoted.contains("promoted to active") && promoted.contains("decided 3 by the canary"),
        "{promoted}"
    );
    assert!(demo.active().starts_with(&format!("{name}@")), "{}", demo.active());

    let text = ask();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix(name)
                    .map(|_| l[name.len()..].trim().to_owned())
            })
            .unwrap_or_default()
    };
    assert!(
        header("x-switchyard-policy: ").starts_with(&format!("{name}@")),
        "{text}"
    );
    assert!(header("x-switchyard-reason: ").contains("least loaded:"), "{text}");
}

/// `PATH` with `dir` first.
fn path_with(dir: std::path::PathBuf) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("PATH")
}

#[test]
fn a_python_policy_from_an_empty_folder_is_built_tested_and_routes_live() {
    // componentize-py comes from the test venv (the project's README has its author make
    // one with `pip install -r requirements.txt`).
    let path = path_with(repo().join(".venv/bin"));
    an_author_writes_builds_tests_and_swaps_in("python", "py-rule", &[("PATH", path)]);
}

#[test]
fn a_javascript_policy_from_an_empty_folder_is_built_tested_and_routes_live() {
    // jco comes from the toolchain setup.sh installed (the project's README has its author
    // run `npm install` in the project instead).
    let path = path_with(repo().join("tests/runtimes/js/node_modules/.bin"));
    an_author_writes_builds_tests_and_swaps_in("js", "js-rule", &[("PATH", path)]);
}
#[test]
fn a_rust_policy_from_an_empty_folder_is_built_tested_and_routes_live() {
    // A target folder kept between runs (the project's own dependencies build once).
    let target = repo().join("target/policy-projects");
    an_author_writes_builds_tests_and_swaps_in("rust", "rust-rule", &[("CARGO_TARGET_DIR", target.into_os_string())]);
}
