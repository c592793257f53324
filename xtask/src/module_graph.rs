//! The module-graph check: within each crate of the project, no module imports, directly or
//! through others, a module that imports it back. Types are leaves, logic sits above them.
//!
//! An edge `a -> b` is a path in `a`'s file (outside its `#[cfg(test)]` modules) that names
//! module `b` through `crate::`, `super::` or `self::`. Declaring a child (`mod b;`) is not an
//! edge; re-exporting from it (`pub use b::X`) is. The reader is lexical (comments, strings and
//! test modules are skipped), which is enough for code formatted by rustfmt.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::workspace_root;

/// The crates checked, by the folder of their sources.
const SOURCE_DIRS: [&str; 12] = [
    "firewall-common/src",
    "firewall-diagnostic/src",
    "firewall-rules/src",
    "firewall-dataplane/src",
    "firewall-contracts/src",
    "firewall-grants/src",
    "firewall-user/src",
    "firewall-ebpf/src",
    "testbed/src",
    "benches",
    "xtask/src",
    "integration-tests/tests",
];

/// Module path (`a::b`, empty for the crate root) → the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every import cycle of every crate, one line each (`crate: a -> b -> a`).
pub fn cycles() -> Result<Vec<String>> {
    let root = workspace_root();
    let mut found = Vec::new();
    for dir in SOURCE_DIRS {
        let graph = crate_graph(&root.join(dir))?;
        for cycle in strongly_connected(&graph) {
            found.push(format!("{dir}: {}", cycle.join(" <-> ")));
        }
    }
    Ok(found)
}

/// The module graph of the crate whose sources are in `dir`.
fn crate_graph(dir: &Path) -> Result<Graph> {
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files)?;
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, path) in &files {
        let text = fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let code = without_tests(&strip(&text));
        let edges = graph.entry(module.clone()).or_default();
        for named in paths(&code, module, &modules) {
            if let Some(target) = longest_module(&named, &modules)
                && target != *module
            {
                edges.insert(target);
            }
        }
    }
    Ok(graph)
}

/// Source files below `dir` by module path: `lib.rs`/`main.rs`/`mod.rs` name their folder.
fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                collect(root, &path, files)?;
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
        let mut parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("lib" | "main" | "mod")
        ) {
            parts.pop();
        }
        files.insert(parts.join("::"), path);
    }
    Ok(())
}

/// The text with comments, string and char literals blanked out.
fn strip(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(bytes.len(), |n| i + n + 2);
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(bytes.len(), |n| i + body + n + close.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && is_char_literal(rest) {
            let end = rest[1..].find('\'').map_or(bytes.len(), |n| i + n + 2);
            out.push_str("' '");
            i = end;
        } else {
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `'a'` or `'\n'`, not a lifetime `'a`.
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest.chars().skip(1);
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// The code without `#[cfg(test)] mod NAME { ... }` blocks.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find(['{', ';']) else {
            rest = "";
            break;
        };
        if after.as_bytes()[open] == b';' {
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every path the code names from `crate::`, `super::` or `self::`, made absolute (segments
/// from the crate root), with `{...}` groups expanded.
fn paths(code: &str, module: &str, modules: &BTreeSet<String>) -> Vec<Vec<String>> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    };
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("::") {
        let start = code[..at]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |n| n + 1);
        // Only the first segment of a path starts one (`a::b::c` is read once, at `a`).
        if start > 0 && bytes[start - 1] == b':' {
            continue;
        }
        let head = &code[start..at];
        let (base, rest) = match head {
            "crate" => (Vec::new(), &code[at + 2..]),
            "super" => (
                here[..here.len().saturating_sub(1)].to_vec(),
                &code[at + 2..],
            ),
            "self" => (here.clone(), &code[at + 2..]),
            // A path relative to this module: `child::X`.
            _ if modules.contains(&child(&here, head)) => (here.clone(), &code[start..]),
            _ => continue,
        };
        expand(rest, base, &mut found);
    }
    found
}

/// The module path of `name` below `here`.
fn child(here: &[String], name: &str) -> String {
    if here.is_empty() {
        name.to_string()
    } else {
        format!("{}::{name}", here.join("::"))
    }
}

/// Reads the path (or `{...}` group) at the start of `text` onto `base`.
fn expand(text: &str, base: Vec<String>, found: &mut Vec<Vec<String>>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        for item in top_level_items(group) {
            // rustfmt's trailing comma leaves an empty last item.
            if !item.trim().is_empty() {
                expand(item, base.clone(), found);
            }
        }
        return;
    }
    let mut path = base;
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let segment = &rest[..end];
        if segment.is_empty() {
            break;
        }
        if segment != "self" {
            path.push(segment.to_string());
        }
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(next) if next.trim_start().starts_with('{') => {
                expand(next, path, found);
                return;
            }
            Some(next) => rest = next,
            None => break,
        }
    }
    found.push(path);
}

/// The comma-separated items of a group whose `{` was just read, up to its `}`.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (k, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..k]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

/// The groups of two or more modules that reach each other (Tarjan's algorithm), each sorted.
fn strongly_connected(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, node: &'a str) {
        let n = s.index.len();
        s.index.insert(node, n);
        s.low.insert(node, n);
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut group = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                group.push(if top.is_empty() { "(root)" } else { top }.to_string());
                if top == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.groups.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(files: &[(&str, &str)]) -> Graph {
        let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.to_string()).collect();
        let mut graph = Graph::new();
        for (module, text) in files {
            let code = without_tests(&strip(text));
            let edges = graph.entry(module.to_string()).or_default();
            for named in paths(&code, module, &modules) {
                if let Some(target) = longest_module(&named, &modules)
                    && target != *module
                {
                    edges.insert(target);
                }
            }
        }
        graph
    }

    #[test]
    fn finds_a_cycle_through_groups_and_super_but_not_through_tests_or_comments() {
        let graph = graph_of(&[
            ("", "mod a; mod b; mod c;"),
            ("a", "use crate::{b::{X, Y}, c,};"),
            ("b", "use super::c::Z; // crate::a"),
            (
                "c",
                "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::b; }",
            ),
        ]);
        assert_eq!(
            strongly_connected(&graph),
            [vec!["a".to_string(), "b".into(), "c".into()]]
        );
        let acyclic = graph_of(&[
            ("a", "use crate::b;"),
            (
                "b",
                "const S: &str = \"crate::a\";\n#[cfg(test)]\nmod tests { use crate::a; }",
            ),
        ]);
        assert!(strongly_connected(&acyclic).is_empty());
    }

    /// The project's own crates: a failure names each cycle.
    #[test]
    fn no_crate_of_the_project_has_a_module_import_cycle() {
        let cycles = cycles().unwrap();
        assert!(
            cycles.is_empty(),
            "module import cycles:\n{}",
            cycles.join("\n")
        );
    }
}
