//! The controller's shape, checked: its modules (one per file) form no import cycle; none
//! of them names the composition root (`app`), which only the `switchyard` binary's crate
//! (`controller/cli`) uses; the controller library does not depend on the agent crate. A
//! module's edges are the `crate::...` and `super::...` paths in its code
//! (tests excluded), each resolved to the deepest module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Module {
    file: PathBuf,
    /// Whether the file is a folder's `mod.rs`.
    is_folder: bool,
    code: String,
}

fn modules() -> BTreeMap<String, Module> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src").with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let is_folder = parts.last().is_some_and(|p| p == "mod");
            if is_folder {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            // Tests may reach anywhere.
            let code = match text.find("#[cfg(test)]") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            out.insert(
                parts.join("::"),
                Module {
                    file: path,
                    is_folder,
                    code,
                },
            );
        }
    }
    out
}

/// The paths after `prefix` (`crate::`, `super::`) in `code`, as `a::b::c`.
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':');
        (!path.is_empty()).then(|| path.to_owned())
    })
}

/// The deepest module `path` names.
fn resolve(modules: &BTreeMap<String, Module>, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    while !parts.is_empty() {
        let name = parts.join("::");
        if modules.contains_key(&name) {
            return Some(name);
        }
        parts.pop();
    }
    None
}

fn edges(modules: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (name, module) in modules {
        let mut to = BTreeSet::new();
        for path in paths_after(&module.code, "crate::") {
            to.extend(resolve(modules, &path));
        }
        // `super::` from a file is its folder's module; from a folder's mod.rs, the parent's.
        let mut parent: Vec<&str> = name.split("::").collect();
        parent.pop();
        if module.is_folder {
            parent.pop();
        }
        for path in paths_after(&module.code, "super::") {
            let mut full = parent.clone();
            full.extend(path.split("::"));
            to.extend(resolve(modules, &full.join("::")));
        }
        to.remove(name);
        out.insert(name.clone(), to);
    }
    out
}

/// Strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for to in &state.graph[node] {
            let to = to.as_str();
            if !state.index.contains_key(to) {
                visit(state, to);
                let low = state.low[to].min(state.low[node]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.index[to].min(state.low[node]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn the_controllers_modules_form_no_import_cycle() {
    let modules = modules();
    assert!(modules.len() > 50, "found only {} modules", modules.len());
    let found = cycles(&edges(&modules));
    assert!(found.is_empty(), "modules that import each other: {found:?}");
}

#[test]
fn a_planted_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}

#[test]
fn no_module_names_the_composition_root() {
    for (name, module) in modules() {
        if name == "app" {
            continue;
        }
        assert!(
            !paths_after(&module.code, "crate::").any(|p| p == "app" || p.starts_with("app::")),
            "{} names the composition root (crate::app): take the handles you need instead",
            module.file.display()
        );
    }
}

#[test]
fn the_controller_library_does_not_link_the_agent() {
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&manifest_path)
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let names = manifest.get(section).and_then(toml::Value::as_table);
        assert!(
            names.is_none_or(|deps| !deps.contains_key("switchyard-agent")),
            "{} [{section}] names switchyard-agent: the controller library must not link the agent \
             (the `switchyard` binary's crate, controller/cli, may: its demo runs agents)",
            manifest_path.display()
        );
    }
    for (_, module) in modules() {
        assert!(
            !module.code.contains("switchyard_agent"),
            "{} names the agent crate",
            module.file.display()
        );
    }
}
