//! Policies written in Python (componentize-py, from the test venv) and JavaScript (jco,
//! from tests/runtimes/js) are policies like any other: the ports of `least-loaded` pass the
//! Rust one's fixtures unchanged and `policy check` on 1,000 generated clusters; a hostile
//! JavaScript policy (throws, spins, allocates without bound) and a hostile Python policy (raises, spins,
//! allocates without bound, prints without end) is contained as a compiled one is: the
//! fallback answers, the fault is counted, and repeated faults revert to the last good one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_controller::policy::FaultKind;
use switchyard_protocol::Decision;

use crate::support::{cluster, policies, repo_path, request, trigger};

/// Build `plugins/js/<app>/app.js` (with the helpers, bundled) into `dir/<app>.wasm`.
fn build_js(app: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{app}.wasm"));
    let output = Command::new(repo_path("tests/runtimes/js/node_modules/.bin/jco"))
        .arg("componentize")
        .arg(format!("plugins/js/{app}/app.js"))
        .args([
            "--wit",
            "wit/policy.wit",
            "--world-name",
            "policy",
            "--disable",
            "all",
            "--bundle",
        ])
        .args(["--bundle-config", "plugins/templates/js/bundle.config.mjs", "-o"])
        .arg(&out)
        .current_dir(repo_path(""))
        .output()
        .expect("jco (tests/runtimes/setup.sh installs it)");
    assert!(
        output.status.success(),
        "jco: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Build `plugins/python/<app>/app.py` (with the helpers) into `dir/<app>.wasm`.
fn build(app: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{app}.wasm"));
    let output = Command::new(repo_path(".venv/bin/componentize-py"))
        .args([
            "-d",
            "wit/policy.wit",
            "-w",
            "policy",
            "componentize",
            "-p",
            "plugins/python",
            "-p",
        ])
        .arg(format!("plugins/python/{app}"))
        .arg("app")
        .arg("-o")
        .arg(&out)
        .current_dir(repo_path(""))
        .output()
        .expect("componentize-py (tests/runtimes/setup.sh installs it)");
    assert!(
        output.status.success(),
        "componentize-py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn switchyard(args: &[&str], dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "switchyard {args:?}:\n{text}");
    text
}

/// The port in `dir/least-loaded.wasm` passes every least-loaded fixture and the check.
fn passes_the_fixtures_and_the_check(dir: &Path, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\n[[stage]]\ncomponent = \"least-loaded.wasm\"\n"),
    )
    .expect("policy file");
    let fixtures = repo_path("policies/fixtures/least-loaded.cases.toml");
    let cases = std::fs::read_to_string(&fixtures)
        .expect("fixtures")
        .matches("[[case]]")
        .count();
    let policy = format!("{name}.toml");
    let tested = switchyard(&["policy", "test", &policy, fixtures.to_str().expect("utf-8")], dir);
    assert!(tested.contains(&format!("{cases} passed, 0 failed")), "{tested}");
    let checked = switchyard(&["policy", "check", &policy, "--cases", "1000"], dir);
    assert!(
        checked.contains("1000 generated case(s) checked (seed 1), 0 failing"),
        "{checked}"
    );
}

#[test]
fn the_python_least_loaded_passes_the_rust_ones_fixtures_and_the_property_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    build("least-loaded", dir.path());
    passes_the_fixtures_and_the_check(dir.path(), "least-loaded-py");
}

#[test]
fn the_javascript_least_loaded_passes_the_rust_ones_fixtures_and_the_property_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_js("least-loaded", dir.path());
    passes_the_fixtures_and_the_check(dir.path(), "least-loaded-js");
}

fn hostile_text(mode: &str) -> String {
    format!(
        "name = \"hostile-{mode}\"\n[limits]\ndeadline_ms = 100\nmemory_mib = 48\n\
         [[stage]]\ncomponent = \"hostile.wasm\"\n[stage.params]\nmode = \"{mode}\"\n"
    )
}

/// `mode` misbehaves on the tagged request: the fallback decides within a bound, the fault
/// is counted as `expected`, and the policy still answers an ordinary request itself.
fn contained(dir: &Path, mode: &str, expected: &[FaultKind]) {
    let policies = policies();
    let policy = policies
        .registry
        .load_text(&hostile_text(mode), "hostile policy", Some(dir), &cluster())
        .unwrap_or_else(|e| panic!("hostile {mode} should pass validation: {e}"));
    policies.registry.activate(&policy.id).expect("activate");
    let started = Instant::now();
    let routed = policies.engine.decide_snapshot(&trigger(), &cluster());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{mode}: {:?}",
        started.elapsed()
    );
    let fault = routed.fault.unwrap_or_else(|| panic!("{mode}: expected a fault"));
    assert!(expected.contains(&fault.kind()), "{mode}: {fault}");
    match &routed.decision {
        Decision::Route(route) => assert!(route.reason.starts_with("fallback least-loaded"), "{}", route.reason),
        Decision::Reject(r) => panic!("{mode}: the fallback should route, got {r:?}"),
    }
    let view = policies.registry.view();
    assert_eq!(view.fallback_decisions, 1, "{mode}");
    assert_eq!(view.policies[0].stats.faults.values().sum::<u64>(), 1, "{mode}");
    let routed = policies.engine.decide_snapshot(&request(Some("batch")), &cluster());
    assert!(routed.fault.is_none(), "{mode}: {:?}", routed.fault);
    match &routed.decision {
        Decision::Route(route) => assert!(
            route.reason.starts_with(&format!("hostile ({mode}) behaving")),
            "{mode}: {route:?}"
        ),
        Decision::Reject(r) => panic!("{mode}: {r:?}"),
    }
}

#[test]
fn a_hostile_python_policy_is_contained_and_reverted() {
    let dir = tempfile::tempdir().expect("tempdir");
    build("hostile", dir.path());
    contained(dir.path(), "raise", &[FaultKind::Trap]);
    contained(dir.path(), "spin", &[FaultKind::Deadline]);
    contained(dir.path(), "allocate", &[FaultKind::Memory, FaultKind::Trap]);
    contained(dir.path(), "print", &[FaultKind::Deadline, FaultKind::Trap]);

    // Repeated faults put the previous policy back.
    let policies = policies();
    let good = policies
        .registry
        .load_text(
            "name = \"least-loaded\"\n[[stage]]\ncomponent = \"builtin:least-loaded\"\n",
            "good",
            None,
            &cluster(),
        )
        .expect("least-loaded");
    policies.registry.activate(&good.id).expect("activate");
    let bad = policies
        .registry
        .load_text(&hostile_text("raise"), "hostile python", Some(dir.path()), &cluster())
        .expect("hostile");
    policies.registry.activate(&bad.id).expect("activate");
    for _ in 0..5 {
        policies.engine.decide_snapshot(&trigger(), &cluster());
    }
    assert_eq!(policies.registry.view().active.as_deref(), Some(&*good.id));
    assert_eq!(policies.registry.view().reverts, 1);
}

#[test]
fn a_hostile_javascript_policy_is_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let built = build_js("hostile", dir.path());
    assert!(built.ends_with("hostile.wasm"));
    contained(dir.path(), "raise", &[FaultKind::Trap]);
    contained(dir.path(), "spin", &[FaultKind::Deadline]);
    contained(dir.path(), "allocate", &[FaultKind::Memory, FaultKind::Trap]);
}
