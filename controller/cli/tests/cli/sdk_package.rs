//! The Rust SDK can be published on its own: its package carries the contract it generates
//! bindings from (`wit/policy.wit`), not a path into this repository, and its version is the
//! contract's.

use std::process::Command;

use crate::support::repo_path;

#[test]
fn the_sdks_package_carries_its_contract_and_the_contracts_version() {
    let output = Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "-p", "switchyard-policy-sdk"])
        .current_dir(repo_path(""))
        .output()
        .expect("cargo package");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo package --list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["Cargo.toml", "src/lib.rs", "wit/policy.wit"] {
        assert!(listed.lines().any(|l| l == file), "{file} is not packaged:\n{listed}");
    }
    let contract = std::fs::read_to_string(repo_path("wit/policy.wit")).expect("wit/policy.wit");
    let packaged = std::fs::read_to_string(repo_path("plugins/sdk/wit/policy.wit")).expect("the SDK's contract");
    assert_eq!(packaged, contract, "the SDK's contract is the repository's");
    let version = contract
        .lines()
        .find_map(|l| l.strip_prefix("package switchyard:policy@"))
        .map(|v| v.trim_end_matches(';').to_owned())
        .expect("the contract's version");
    let manifest = std::fs::read_to_string(repo_path("plugins/sdk/Cargo.toml")).expect("Cargo.toml");
    assert!(
        manifest.contains(&format!("version = \"{version}\"")),
        "the SDK's version is not the contract's ({version})"
    );
}
