//! Checks of the source layout that keep the architecture readable: top-level modules
//! of a crate never import each other in a cycle, and no source file grows past a
//! size a reader can hold. They run with the unit tests (`cargo test`).
#![cfg(test)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use crate::cmd::workspace_root;

/// Longest a source file may be, in lines (the issue says "about 600").
const MAX_LINES: usize = 650;

/// Most files at the top of the agent's `src/` (beside its folders), so that a
/// newcomer sees its parts at a glance.
const MAX_TOP_LEVEL_FILES: usize = 8;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Code without its `//` comments (doc comments name modules without using them).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules of the crate at `src`, each with the top-level modules its
/// files name through `crate::`.
fn module_dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let top: BTreeSet<String> = fs::read_dir(src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .filter(|name| name != "lib" && name != "main")
        .collect();
    let mut dependencies: BTreeMap<String, BTreeSet<String>> = top
        .iter()
        .map(|name| (name.clone(), BTreeSet::new()))
        .collect();
    for file in sources(src) {
        let relative = file.strip_prefix(src).unwrap();
        let Some(module) = relative
            .components()
            .next()
            .and_then(|c| Path::new(c.as_os_str()).file_stem())
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .filter(|m| top.contains(m))
        else {
            continue;
        };
        let text = code(&fs::read_to_string(&file).unwrap());
        let mut used = BTreeSet::new();
        // `crate::name…` anywhere, and `use crate::{name, other::…}` groups.
        for (index, _) in text.match_indices("crate::") {
            let rest = &text[index + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut segment_start = true;
                for (offset, ch) in group.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => segment_start = true,
                        c if segment_start && (c.is_alphanumeric() || c == '_') => {
                            let name: String = group[offset..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            used.insert(name);
                            segment_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                used.insert(
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
        let entry = dependencies.get_mut(&module).unwrap();
        entry.extend(used.into_iter().filter(|u| top.contains(u) && *u != module));
    }
    dependencies
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let current = path.last().cloned().unwrap_or_else(|| start.to_owned());
    for next in &graph[&current] {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_owned());
            return Some(cycle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(graph, start, path) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

fn assert_no_cycles(src: &Path) {
    let graph = module_dependencies(src);
    assert!(graph.len() > 3, "no modules found in {}", src.display());
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = cycle_from(&graph, module, &mut path) {
            panic!(
                "modules of {} import each other in a cycle: {}",
                src.display(),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn modules_of_the_agent_and_of_xtask_have_no_import_cycles() {
    let root = workspace_root();
    assert_no_cycles(&root.join("netiso/src"));
    assert_no_cycles(&root.join("xtask/src"));
}

#[test]
fn the_checker_finds_a_cycle_and_its_path() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let mut path = vec!["a".to_owned()];
    assert_eq!(
        cycle_from(&graph, "a", &mut path),
        Some(
            vec!["a", "b", "c", "a"]
                .into_iter()
                .map(str::to_owned)
                .collect()
        )
    );
    let mut path = vec!["d".to_owned()];
    assert_eq!(cycle_from(&graph, "d", &mut path), None);
}

#[test]
fn no_source_file_is_longer_than_a_reader_can_hold() {
    let root = workspace_root();
    let mut long = Vec::new();
    for dir in [
        "netiso/src",
        "netiso/tests",
        "netiso-ebpf/src",
        "netiso-common/src",
        "tests",
        "xtask/src",
    ] {
        for file in sources(&root.join(dir)) {
            let lines = fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these files (at most {MAX_LINES} lines): {}",
        long.join(", ")
    );
}

#[test]
fn the_agent_keeps_few_files_at_its_top() {
    let src = workspace_root().join("netiso/src");
    let files: Vec<String> = fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
        .collect();
    assert!(
        files.len() <= MAX_TOP_LEVEL_FILES,
        "netiso/src has {} files at its top (at most {MAX_TOP_LEVEL_FILES}): {}; move some into a folder",
        files.len(),
        files.join(", ")
    );
}
