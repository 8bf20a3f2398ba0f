//! A policy project outside any Switchyard checkout: `switchyard policy new NAME --lang
//! rust|python|js` writes one (the contract, the language's helpers, a starter rule, the
//! seed cluster and fixtures that pass, a policy file and a README of three commands), and
//! `switchyard policy build` runs the language's own toolchain to turn it into the component
//! the policy file names.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::ValueEnum;

/// The languages a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the SDK vendored beside it (cargo and the wasm32-wasip2 target).
    Rust,
    /// Python, built with componentize-py (in a venv).
    Python,
    /// JavaScript, built with jco's componentize (npm).
    Js,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    fn rule_file(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
        }
    }

    /// The one-time set-up of the toolchain, and when it is needed.
    fn setup(self) -> (&'static str, &'static str) {
        match self {
            Lang::Rust => ("the wasm target for cargo", "rustup target add wasm32-wasip2"),
            Lang::Python => (
                "componentize-py in a venv here",
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
            ),
            Lang::Js => ("jco and componentize-js from npm, in node_modules here", "npm install"),
        }
    }

    /// The language of the project in `dir`, from the files `new` writes.
    fn of(dir: &Path) -> Option<Lang> {
        if dir.join("Cargo.toml").is_file() {
            Some(Lang::Rust)
        } else if dir.join("app.py").is_file() {
            Some(Lang::Python)
        } else if dir.join("app.js").is_file() {
            Some(Lang::Js)
        } else {
            None
        }
    }
}

const WIT: &str = include_str!("../../../wit/policy.wit");
/// The shipped least-loaded in each language: a new project's starter rule is a copy.
const LEAST_LOADED_RUST: &str = include_str!("../../../plugins/least-loaded/src/lib.rs");
const LEAST_LOADED_PYTHON: &str = include_str!("../../../plugins/python/least-loaded/app.py");
const LEAST_LOADED_JS: &str = include_str!("../../../plugins/js/least-loaded/app.js");
const SEED_CLUSTER: &str = include_str!("../../../policies/fixtures/seed-cluster.toml");
const CASES: &str = include_str!("../../../policies/fixtures/least-loaded.cases.toml");
const README: &str = include_str!("../../../plugins/templates/project-readme.md");
const POLICY: &str = include_str!("../../../plugins/templates/policy.toml");

const PYTHON: &[(&str, &str)] = &[
    (
        "requirements.txt",
        include_str!("../../../plugins/templates/python/requirements.txt"),
    ),
    (
        "switchyard_policy.py",
        include_str!("../../../plugins/python/switchyard_policy.py"),
    ),
];

const JS: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../../plugins/templates/js/package.json"),
    ),
    (
        "switchyard_policy.js",
        include_str!("../../../plugins/js/switchyard_policy.js"),
    ),
    (
        "bundle.config.mjs",
        include_str!("../../../plugins/templates/js/bundle.config.mjs"),
    ),
    (".gitignore", "/node_modules\n"),
];

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../plugins/templates/rust/Cargo.toml")),
    (".gitignore", "/target\n"),
    (
        "switchyard-policy-sdk/Cargo.toml",
        include_str!("../../../plugins/templates/rust/sdk-Cargo.toml"),
    ),
    (
        "switchyard-policy-sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "switchyard-policy-sdk/src/alloc.rs",
        include_str!("../../../plugins/sdk/src/alloc.rs"),
    ),
    (
        "switchyard-policy-sdk/src/cluster.rs",
        include_str!("../../../plugins/sdk/src/cluster.rs"),
    ),
    (
        "switchyard-policy-sdk/src/decision.rs",
        include_str!("../../../plugins/sdk/src/decision.rs"),
    ),
    (
        "switchyard-policy-sdk/src/memcmp.rs",
        include_str!("../../../plugins/sdk/src/memcmp.rs"),
    ),
];

/// The starter rule of a project named `name`: the shipped least-loaded in `lang` (its tests
/// left out), headed as the project's own.
fn starter_rule(name: &str, lang: Lang) -> String {
    match lang {
        Lang::Rust => {
            let code = LEAST_LOADED_RUST
                .split("\n#[cfg(test)]")
                .next()
                .unwrap_or(LEAST_LOADED_RUST);
            code.replacen(
                "//! `least-loaded`:",
                &format!("//! `{name}` (a copy of `least-loaded`):"),
                1,
            )
            .replace("LeastLoaded", "Rule")
        }
        Lang::Python => LEAST_LOADED_PYTHON.replacen(
            "\"\"\"least-loaded, in Python:",
            &format!("\"\"\"{name} (a copy of least-loaded, in Python):"),
            1,
        ),
        Lang::Js => LEAST_LOADED_JS
            .replacen(
                "// least-loaded, in JavaScript:",
                &format!("// {name} (a copy of least-loaded, in JavaScript):"),
                1,
            )
            .replace("from '../switchyard_policy.js'", "from './switchyard_policy.js'"),
    }
}

/// Every file of a new project in `lang` named `name`, as (path, text).
fn project_files(name: &str, lang: Lang) -> Vec<(String, String)> {
    let (setup_note, setup) = lang.setup();
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{language}}", lang.name())
            .replace("{{rule_file}}", lang.rule_file())
            .replace("{{setup_note}}", setup_note)
            .replace("{{setup}}", setup)
    };
    let cases = CASES.replacen(
        "# switchyard policy test policies/least-loaded.toml policies/fixtures/least-loaded.cases.toml",
        "# switchyard policy test policy.toml {{name}}.cases.toml",
        1,
    );
    let mut files = vec![
        ("README.md".to_owned(), fill(README)),
        ("policy.toml".to_owned(), fill(POLICY)),
        (format!("{name}.cases.toml"), fill(&cases)),
        ("seed-cluster.toml".to_owned(), SEED_CLUSTER.to_owned()),
        ("wit/policy.wit".to_owned(), WIT.to_owned()),
    ];
    let language = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for (path, text) in language {
        let text = fill(text);
        files.push(((*path).to_owned(), text));
    }
    files.push((lang.rule_file().to_owned(), starter_rule(name, lang)));
    if lang == Lang::Rust {
        // The SDK reads the contract from inside its own folder, as when it is published.
        files.push(("switchyard-policy-sdk/wit/policy.wit".to_owned(), WIT.to_owned()));
    }
    files
}

/// `switchyard policy new`: write the project for `name` into `dir` (default `./NAME`),
/// which must not exist or be empty.
pub fn new(name: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<()> {
    switchyard_controller::policy::PolicyName::try_from(name.to_owned()).map_err(anyhow::Error::msg)?;
    if lang == Lang::Rust && name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("invalid policy name {name:?} for Rust: a crate name cannot start with a digit");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!(
            "{} exists and is not empty: choose another folder with --dir",
            dir.display()
        );
    }
    for (path, text) in project_files(name, lang) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let (setup_note, setup) = lang.setup();
    crate::say(&format!(
        "wrote a {} policy in {dir}/ (the rule: {dir}/{rule})\n\
         once ({setup_note}):  cd {dir} && {setup}\n\
         then:  switchyard policy build && switchyard policy test policy.toml {name}.cases.toml",
        lang.name(),
        dir = dir.display(),
        rule = lang.rule_file(),
    ));
    Ok(())
}

/// The policy file's name and the component path it names, from `dir/policy.toml`.
fn component_of(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let file = dir.join("policy.toml");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {} (is this a folder `switchyard policy new` wrote?)",
            file.display()
        )
    })?;
    let spec = switchyard_controller::policy::PolicySpec::parse(&text, &file.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let [stage] = spec.stages.as_slice() else {
        bail!("{}: `policy build` builds a policy of one stage", file.display());
    };
    let component = stage.component.as_str();
    if component.starts_with("builtin:") || component.starts_with("sha256:") {
        bail!("{}: stage 1 names {component}, not a file to build", file.display());
    }
    Ok((spec.name.to_string(), dir.join(component)))
}

/// The project's own copy of a tool (`dir/local`) where it has one, else `name` on `PATH`.
fn program(dir: &Path, local: &str, name: &str) -> std::ffi::OsString {
    let local = dir.join(local);
    if local.is_file() {
        local.into_os_string()
    } else {
        name.into()
    }
}

/// The command that builds the project in `dir` (in `dir`), for `lang`.
fn build_command(dir: &Path, lang: Lang, out: &Path) -> Command {
    match lang {
        Lang::Rust => {
            let mut command = Command::new("cargo");
            command.args(["build", "--release", "--target", "wasm32-wasip2"]);
            command
        }
        Lang::Python => {
            let mut command = Command::new(program(dir, ".venv/bin/componentize-py", "componentize-py"));
            command.args(["-d", "wit/policy.wit", "-w", "policy", "componentize", "app", "-o"]);
            command.arg(out);
            command
        }
        Lang::Js => {
            let mut command = Command::new(program(dir, "node_modules/.bin/jco", "jco"));
            command.args([
                "componentize",
                "app.js",
                "--wit",
                "wit/policy.wit",
                "--world-name",
                "policy",
            ]);
            // No WASI features (a policy is granted none it could use), the helpers bundled.
            command.args([
                "--disable",
                "all",
                "--bundle",
                "--bundle-config",
                "bundle.config.mjs",
                "-o",
            ]);
            command.arg(out);
            command
        }
    }
}

/// `switchyard policy build [DIR]`: run the language's toolchain in `dir`; the component
/// lands where `policy.toml` names it.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    let lang = Lang::of(dir).with_context(|| {
        format!(
            "{} holds no Cargo.toml, app.py or app.js: run `switchyard policy build` in a folder `switchyard policy new` wrote",
            dir.display()
        )
    })?;
    let (name, out) = component_of(dir)?;
    let out = std::path::absolute(&out).unwrap_or(out);
    let mut command = build_command(dir, lang, &out);
    let shown = format!("{command:?}");
    let status = command.current_dir(dir).status().map_err(|e| {
        let (setup_note, setup) = lang.setup();
        anyhow::anyhow!("cannot run {shown}: {e} (set up {setup_note} first: {setup})")
    })?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    if lang == Lang::Rust {
        // Where cargo put it: `target/` here, or the operator's CARGO_TARGET_DIR.
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), |t| dir.join(t));
        let built = target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));
        std::fs::copy(&built, &out).with_context(|| format!("cannot copy {} to {}", built.display(), out.display()))?;
    }
    let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    crate::say(&format!("built {} ({bytes} bytes)", out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_project_names_itself_everywhere_and_reads_the_vendored_contract() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let files = project_files("my-rule", lang);
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{path} keeps a placeholder");
            }
            let text = |name: &str| files.iter().find(|(p, _)| p == name).map(|(_, t)| t.as_str());
            assert!(text("policy.toml").is_some_and(|t| t.contains("name = \"my-rule\"")));
            assert!(text("my-rule.cases.toml").is_some_and(|t| t.contains("snapshot = \"seed-cluster.toml\"")));
            assert!(text("wit/policy.wit").is_some_and(
                |t| t.starts_with("package switchyard:policy@") || t.contains("package switchyard:policy@")
            ));
            assert!(text(lang.rule_file()).is_some(), "{lang:?}");
        }
        let rule = |lang| {
            project_files("my-rule", lang)
                .into_iter()
                .find(|(p, _)| p == lang.rule_file())
        };
        assert!(rule(Lang::Rust).is_some_and(|(_, t)| t.contains("pub struct Rule;")
            && t.contains("`my-rule` (a copy of `least-loaded`)")
            && !t.contains("#[cfg(test)]")));
        assert!(rule(Lang::Python).is_some_and(|(_, t)| t.starts_with("\"\"\"my-rule (a copy of least-loaded")));
        assert!(
            rule(Lang::Js).is_some_and(|(_, t)| t.contains("from './switchyard_policy.js'")
                && t.starts_with("// my-rule (a copy of least-loaded"))
        );
        let rust = project_files("my-rule", Lang::Rust);
        let sdk = rust.iter().find(|(p, _)| p == "switchyard-policy-sdk/src/lib.rs");
        assert!(sdk.is_some_and(|(_, t)| t.contains("path: \"wit/policy.wit\"")));
        assert!(
            rust.iter()
                .any(|(p, t)| p == "switchyard-policy-sdk/wit/policy.wit" && t == WIT)
        );
    }
}
