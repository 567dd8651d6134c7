//! "Dependencies point down, test-time included … No cycles" (DESIGN.md, rules of the house):
//! no workspace package may reach itself through dependencies on other workspace packages,
//! counting normal, build AND dev dependencies (a dev-dependency on a crate above is a cycle
//! cargo accepts, but it puts the crate's tests above the crate that depends on it).
//!
//! The graph comes from `cargo metadata --format-version 1 --no-deps`: every workspace package
//! and the dependencies its manifest declares (all kinds, all targets, optional ones included).
//! A dependency is on a workspace package when its `path` is that package's folder. A package's
//! dev-dependency on itself (the idiom for turning on its own test features) is not a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Edges from a package to the workspace packages it depends on, each with the kinds
/// (`normal`, `build`, `dev`) that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("running {cargo:?} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("cargo metadata printed no JSON: {e}"))
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("cargo metadata: no {field:?} in {value}"))
}

/// The workspace's dependency graph among its own packages, from `cargo metadata`.
fn workspace_graph(metadata: &Value) -> Graph {
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap_or_else(|| panic!("cargo metadata: no workspace_members"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages: Vec<&Value> = metadata["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("cargo metadata: no packages"))
        .iter()
        .filter(|p| members.contains(text(p, "id")))
        .collect();
    // A package's folder → its name.
    let folders: BTreeMap<PathBuf, String> = packages
        .iter()
        .map(|p| {
            let manifest = Path::new(text(p, "manifest_path"));
            let folder = manifest.parent().unwrap_or(manifest).to_path_buf();
            (folder, text(p, "name").to_owned())
        })
        .collect();
    let mut graph = Graph::new();
    for package in packages {
        let name = text(package, "name").to_owned();
        let edges = graph.entry(name.clone()).or_default();
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let Some(path) = dep["path"].as_str() else {
                continue; // from a registry or git: not a workspace package
            };
            let Some(target) = folders.get(Path::new(path)) else {
                continue; // a path dependency outside the workspace
            };
            if *target == name {
                continue; // a dev-dependency on itself, for its own test features
            }
            let kind = dep["kind"].as_str().unwrap_or("normal").to_owned();
            edges.entry(target.clone()).or_default().insert(kind);
        }
    }
    graph
}

/// Every cycle found by a depth-first search (one per back edge), each as the packages along
/// it, first repeated at the end.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(node.to_owned(), Mark::OnPath);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::New => visit(graph, next, marks, path, found),
                Mark::OnPath => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(graph, node, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

/// `a → b (dev) → a (normal)`: each step with the kinds of the edge it takes.
fn describe(graph: &Graph, cycle: &[String]) -> String {
    let mut text = cycle[0].clone();
    for pair in cycle.windows(2) {
        let kinds = graph
            .get(&pair[0])
            .and_then(|edges| edges.get(&pair[1]))
            .map(|k| k.iter().cloned().collect::<Vec<_>>().join("+"))
            .unwrap_or_default();
        text.push_str(&format!(" → {} ({kinds})", pair[1]));
    }
    text
}

#[test]
fn no_workspace_package_depends_on_itself_through_others_normal_build_or_dev() {
    let graph = workspace_graph(&metadata());
    // The graph was read: the server depends on the store (were this empty, no cycle could be
    // found and the test would prove nothing).
    assert!(
        graph
            .get("spike-server")
            .is_some_and(|edges| edges.contains_key("spike-store")),
        "cargo metadata did not show spike-server → spike-store: {graph:?}"
    );
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "dependency cycles among workspace packages (dependencies point down, test-time \
         included):\n{}",
        found
            .iter()
            .map(|c| format!("  {}", describe(&graph, c)))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_cycle_search_finds_and_names_a_dev_dependency_cycle() {
    let edge = |kinds: &[&str]| kinds.iter().map(|k| (*k).to_owned()).collect();
    let mut graph = Graph::new();
    graph.insert(
        "server".into(),
        BTreeMap::from([("store".into(), edge(&["normal"]))]),
    );
    graph.insert(
        "store".into(),
        BTreeMap::from([
            ("server".into(), edge(&["dev"])),
            ("key".into(), edge(&["normal"])),
        ]),
    );
    graph.insert("key".into(), BTreeMap::new());
    let found = cycles(&graph);
    assert_eq!(found, [vec!["server", "store", "server"]]);
    assert_eq!(
        describe(&graph, &found[0]),
        "server → store (normal) → server (dev)"
    );
    if let Some(edges) = graph.get_mut("store") {
        edges.remove("server");
    }
    assert!(cycles(&graph).is_empty());
}
