//! `switchyard policy check`, the real binary: the shipped policies keep the properties on
//! generated clusters, and a planted bug (the hostile component's `unhealthy-when-crowded`:
//! with more than five candidates it routes to an unhealthy one) is found, shrunk, and
//! written as a fixture that `switchyard policy test` then fails on.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::repo_path;

fn switchyard(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("switchyard")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_shipped_policies_keep_every_property_on_generated_clusters() {
    let dir = tempfile::tempdir().expect("tempdir");
    // seed-rules (and the chain built on it) refuse batch work rather than send it to the
    // laptop, by design; the other properties hold for them too.
    for (policy, refuses_by_design) in [
        ("seed-rules", true),
        ("seed-then-thermal", true),
        ("least-loaded", false),
        ("thermal-guard", false),
        ("session-affinity", false),
        ("finish-time", true),
        ("round-robin", false),
        ("lowest-cost", false),
    ] {
        let path = repo_path(&format!("policies/{policy}.toml"));
        let mut args = vec![
            "policy",
            "check",
            path.to_str().expect("utf-8"),
            "--cases",
            "400",
            "--seed",
            "7",
        ];
        if refuses_by_design {
            let strict = switchyard(&args, dir.path());
            assert!(
                !strict.status.success(),
                "{policy} refuses some work by design:\n{}",
                text(&strict)
            );
            assert!(
                text(&strict).contains("although m4 could serve it"),
                "{}",
                text(&strict)
            );
            args.push("--allow-reject");
        }
        let out = switchyard(&args, dir.path());
        assert!(out.status.success(), "{policy}:\n{}", text(&out));
        assert!(
            text(&out).contains("400 generated case(s) checked (seed 7), 0 failing"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn a_planted_bug_is_found_and_written_as_a_fixture_that_policy_test_fails_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(switchyard_policy_artifacts::HOSTILE, dir.path().join("hostile.wasm")).expect("component");
    std::fs::write(
        dir.path().join("crowded.toml"),
        "name = \"crowded\"\n[[stage]]\ncomponent = \"hostile.wasm\"\n[stage.params]\nmode = \"unhealthy-when-crowded\"\n",
    )
    .expect("policy");
    let out = switchyard(
        &["policy", "check", "crowded.toml", "--cases", "300", "--out", "failures"],
        dir.path(),
    );
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("property violation(s)"), "{report}");
    assert!(
        report.contains("is not healthy") || report.contains("unhealthy"),
        "{report}"
    );
    // Shrunk: the bug needs more than five candidates, so no fewer than six nodes remain.
    assert!(report.contains("(6 node(s) after shrinking)"), "{report}");

    let fixture = std::fs::read_dir(dir.path().join("failures"))
        .expect("failures written")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".cases.toml"))
        .expect("a cases file");
    let test = switchyard(
        &["policy", "test", "crowded.toml", fixture.to_str().expect("utf-8")],
        dir.path(),
    );
    assert!(
        !test.status.success(),
        "policy test must fail on the fixture:\n{}",
        text(&test)
    );
    assert!(text(&test).contains("FAIL"), "{}", text(&test));

    // The same fixture passes under a correct policy.
    let fine = switchyard(
        &[
            "policy",
            "test",
            repo_path("policies/least-loaded.toml").to_str().expect("utf-8"),
            fixture.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    assert!(fine.status.success(), "{}", text(&fine));
}
