//! The library's module layering, checked from the code's own `use` lines
//! (and every other `crate::`/`super::` path) against the map in
//! `docs/architecture.md`, so that the document and the code cannot drift.
//!
//! - Top-level modules: a module may use only modules of rows above its
//!   own in the document's layer table; so there is no import cycle, the
//!   shared plumbing names no tier, and the tiers (`server`, `relay`) meet
//!   only through the proto and the presence store.
//! - Inside a module folder: calls flow one way. The files form no cycle,
//!   and no file reaches back into its parent `mod.rs` (the wiring).
//!
//! `cargo test --test layering -- --nocapture` prints the map it found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every library source file (binaries excluded) with its module path.
fn sources() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(ROOT).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
                parts.pop();
            }
            (parts, code_of(&std::fs::read_to_string(&p).unwrap()))
        })
        .collect()
}

/// The code of a file without comments and without its unit tests (by
/// this project's convention, the `#[cfg(test)]` module at the end).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split(" // ").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// First path segments after each `prefix` (`crate::x`, `crate::{x, y}`).
fn segments_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The layer rows of `docs/architecture.md`: the table after the marker
/// `<!-- layers -->`, one row per layer, modules in backticks.
fn documented_layers() -> Vec<BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).unwrap();
    let table = doc
        .split("<!-- layers -->")
        .nth(1)
        .expect("docs/architecture.md has a <!-- layers --> table");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let modules = row.split('|').nth(2).unwrap_or_default();
            modules
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn top_level_modules_follow_the_documented_layers() {
    let layers = documented_layers();
    let layer_of = |m: &str| layers.iter().position(|row| row.contains(m));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources() {
        let Some(top) = path.first() else { continue };
        let uses = graph.entry(top.clone()).or_default();
        uses.extend(
            segments_after(&code, "crate::")
                .into_iter()
                .filter(|m| m != top),
        );
    }
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        println!(
            "{module} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let Some(mine) = layer_of(module) else {
            wrong.push(format!("{module} is missing from the layer table"));
            continue;
        };
        for used in uses {
            match layer_of(used) {
                Some(theirs) if theirs < mine => {}
                Some(_) => wrong.push(format!("{module} uses {used}, which is not above it")),
                None => wrong.push(format!(
                    "{used} (used by {module}) is missing from the table"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layering violations:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn files_inside_a_module_call_one_way() {
    let sources = sources();
    let folders: BTreeSet<Vec<String>> = sources
        .iter()
        .filter(|(p, _)| p.len() >= 2)
        .map(|(p, _)| p[..p.len() - 1].to_vec())
        .collect();
    let mut wrong = Vec::new();
    for folder in folders {
        wrong.extend(check_folder(&sources, &folder));
    }
    assert!(
        wrong.is_empty(),
        "one-way violations:\n{}",
        wrong.join("\n")
    );
}

/// One folder: its files form no cycle, and either the children use their
/// `mod.rs` (an interface: it then only declares and re-exports them) or
/// `mod.rs` uses its children (wiring), not both.
fn check_folder(sources: &[(Vec<String>, String)], folder: &[String]) -> Vec<String> {
    let name = folder.join("/");
    let siblings: BTreeMap<String, &String> = sources
        .iter()
        .filter(|(p, _)| p.len() == folder.len() + 1 && p.starts_with(folder))
        .map(|(p, code)| (p.last().unwrap().clone(), code))
        .collect();
    let absolute = format!("crate::{}::", folder.join("::"));
    let mut wrong = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut reach_parent = BTreeSet::new();
    for (file, code) in &siblings {
        let mut used = segments_after(code, "super::");
        used.extend(segments_after(code, &absolute));
        for item in used {
            if siblings.contains_key(&item) {
                edges.entry(file).or_default().insert(item);
            } else {
                reach_parent.insert(format!("{file}.rs uses `{item}`"));
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        wrong.push(format!("{name}: files import each other: {cycle}"));
    }
    let parent = sources.iter().find(|(p, _)| p.as_slice() == folder);
    let wiring = parent.is_some_and(|(_, code)| {
        let calls: String = code
            .lines()
            .filter(|l| !l.starts_with("pub use ") && !l.contains("mod "))
            .collect::<Vec<_>>()
            .join("\n");
        siblings
            .keys()
            .any(|child| !segments_after(&calls, &format!("{child}::")).is_empty())
    });
    if wiring && !reach_parent.is_empty() {
        let what: Vec<_> = reach_parent.into_iter().collect();
        wrong.push(format!(
            "{name}/mod.rs wires its files, yet they reach back into it: {}",
            what.join(", ")
        ));
    }
    wrong
}

/// A cycle in `edges`, as "a -> b -> a", if there is one.
fn find_cycle(edges: &BTreeMap<&str, BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle.join(" -> "));
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}
