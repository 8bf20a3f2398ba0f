//! Every bad agent config in `agent/tests/ui/*.toml` is refused with the message in its
//! `.err` file (reviewed like code; `BLESS=1` rewrites them).

use std::path::Path;

use switchyard_agent::config::AgentConfig;

#[test]
fn bad_agent_configs_are_refused_with_the_reviewed_message() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&ui)
        .expect("tests/ui")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "{cases:?}");
    let mut mismatches = Vec::new();
    for case in cases {
        let shown = format!(
            "tests/ui/{}",
            case.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        );
        let text = std::fs::read_to_string(&case).expect("read");
        let error = match AgentConfig::parse(&text, &shown) {
            Ok(_) => panic!("{shown} was accepted"),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &error).expect("bless");
        } else if std::fs::read_to_string(&expected_path).unwrap_or_default() != error {
            mismatches.push(format!("{shown}: {error}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "messages changed (BLESS=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn the_shipped_example_configs_for_the_seed_machines_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-config");
    for name in ["m4", "ryzen", "xeon"] {
        let config = AgentConfig::load(&dir.join(format!("{name}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.node, name);
    }
}
