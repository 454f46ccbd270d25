//! The layers of the crate, checked: which top-level module may use which.
//!
//! Each file under `src/` (and `channels/`, the `channels` module) belongs
//! to the top-level module of its path; a `crate::<module>` path in it (in a
//! `use` or inline, outside `#[cfg(test)]` code) is an edge from its module
//! to that one. The rules below are the crate doc's layering; a failure
//! names the files that break it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut graph = Graph::new();
    for (dir, fixed) in [("src", None), ("channels", Some("channels"))] {
        let mut files = Vec::new();
        collect(&root.join(dir), &mut files);
        for file in files {
            let relative = file.strip_prefix(root.join(dir)).unwrap();
            let module = match fixed {
                Some(m) => m.to_owned(),
                None => {
                    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
                    first.trim_end_matches(".rs").to_owned()
                }
            };
            // The binary and the crate root wire everything together.
            if module == "main" || module == "lib" || file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            // Code only: test modules and comments (doc links) import nothing.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let edges = graph.entry(module.clone()).or_default();
            for target in code.split("crate::").skip(1) {
                let name: String = target
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    edges.entry(name).or_default().insert(relative.to_owned());
                }
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Modules in a cycle with another (strongly connected components of more than one).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    let names: Vec<&String> = graph.keys().collect();
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut components: Vec<BTreeSet<String>> = Vec::new();
    for a in &names {
        if components.iter().any(|c| c.contains(*a)) {
            continue;
        }
        let from_a = reaches(a);
        let component: BTreeSet<String> = names
            .iter()
            .filter(|b| *b == a || (from_a.contains(**b) && reaches(b).contains(*a)))
            .map(|b| (*b).clone())
            .collect();
        if component.len() > 1 {
            components.push(component);
        }
    }
    components
}

fn uses(graph: &Graph, module: &str) -> BTreeSet<String> {
    graph
        .get(module)
        .map(|e| e.keys().cloned().collect())
        .unwrap_or_default()
}

fn explain(graph: &Graph, module: &str, bad: &BTreeSet<String>) -> String {
    bad.iter()
        .map(|target| format!("{module} -> {target} in {:?}", graph[module][target]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_domain_layer_uses_nothing_of_the_service() {
    let graph = graph();
    let used = uses(&graph, "domain");
    assert!(used.is_empty(), "{}", explain(&graph, "domain", &used));
}

#[test]
fn channel_adapters_reach_none_of_broker_router_store_server_or_dispatcher() {
    let graph = graph();
    let forbidden: BTreeSet<String> = ["broker", "router", "store", "server", "dispatch", "app"]
        .map(String::from)
        .into();
    let bad: BTreeSet<String> = uses(&graph, "channels").intersection(&forbidden).cloned().collect();
    assert!(bad.is_empty(), "{}", explain(&graph, "channels", &bad));
}

#[test]
fn parsing_and_routing_do_no_io() {
    let graph = graph();
    let io: BTreeSet<String> = ["broker", "store", "server", "dispatch", "app", "channels", "metrics"]
        .map(String::from)
        .into();
    for module in ["invoice", "router", "journey", "events"] {
        let bad: BTreeSet<String> = uses(&graph, module).intersection(&io).cloned().collect();
        assert!(bad.is_empty(), "{}", explain(&graph, module, &bad));
    }
}

#[test]
fn the_consumer_loop_leaves_business_rules_to_the_dispatcher() {
    let graph = graph();
    let rules: BTreeSet<String> = ["router", "render", "channels", "paylink", "invoice"]
        .map(String::from)
        .into();
    let bad: BTreeSet<String> = uses(&graph, "broker").intersection(&rules).cloned().collect();
    assert!(bad.is_empty(), "{}", explain(&graph, "broker", &bad));
}

#[test]
fn no_module_imports_in_a_cycle() {
    let graph = graph();
    let found = cycles(&graph);
    let listing = graph
        .iter()
        .map(|(m, e)| format!("{m} -> {}", e.keys().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(found.is_empty(), "modules in a cycle: {found:?}\n\nimports:\n{listing}");
}
