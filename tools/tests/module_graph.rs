//! No module cycle in the workspace's Rust crates (issue 24): a graph of modules built from the
//! `crate::` and `super::` paths of each crate's sources, outside `#[cfg(test)]` modules, then
//! its strongly connected components. A module naming one of its ancestors is not counted (the
//! parent declares the child, so that edge would close a cycle by construction); a path resolves
//! to the longest module it names (`crate::compress::settings::GapBits` → `compress::settings`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules, by path (`""` the root), each with the source text of its file.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        // A binary's main.rs is a crate of its own; its paths name the library by name, not
        // `crate::`.
        if file.file_name().is_some_and(|n| n == "main.rs") && src.join("lib.rs").exists() {
            continue;
        }
        out.insert(
            parts.join("::"),
            strip_comments_and_strings(&std::fs::read_to_string(&file).unwrap()),
        );
    }
    out
}

/// The text with comments and the contents of string and char literals blanked (paths in docs
/// and messages are not dependencies).
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
            i = end;
        } else if b[i] == b'"' {
            // Raw strings (r"…", r#"…"#) hold no quote the scan would stop on in these sources.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\''
            && i + 2 < b.len()
            && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && b[i + 3..].contains(&b'\'')))
        {
            // A char literal ('x' or '\n'); lifetimes ('a) are left alone.
            let close = text[i + 2..].find('\'').unwrap() + i + 2;
            i = close + 1;
            out.push_str("' '");
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The module paths named in `text` (the module `module`'s source): every `crate::…` and
/// `super::…` path, `use` groups expanded, each as written (not yet resolved).
fn named_paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let tokens = tokenize(text);
    let mut paths = Vec::new();
    // Inline modules (`mod name { … }`) shift what `super` means; `#[cfg(test)]` ones are skipped.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                if cfg_test_before(&tokens, i) {
                    i = skip_block(&tokens, i + 2);
                    continue;
                }
                inline.push((tokens[i + 1].clone(), depth));
            }
            "crate" | "super" if tokens.get(i + 1).is_some_and(|t| t == "::") => {
                let mut base: Vec<String> = here.clone();
                base.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut j = i;
                if t == "crate" {
                    base.clear();
                    j += 2;
                } else {
                    while tokens.get(j).is_some_and(|t| t == "super")
                        && tokens.get(j + 1).is_some_and(|t| t == "::")
                    {
                        base.pop();
                        j += 2;
                    }
                }
                let end = expand(&tokens, j, base, &mut paths);
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Expands the path tail starting at `tokens[at]` (`a::b`, `a::{b, c::d}`, `{…}`) after
/// `prefix`; returns the index after it.
fn expand(
    tokens: &[String],
    mut at: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix;
    loop {
        match tokens.get(at).map(String::as_str) {
            Some("{") => {
                at += 1;
                while tokens.get(at).is_some_and(|t| t != "}") {
                    if tokens[at] == "," {
                        at += 1;
                        continue;
                    }
                    at = expand(tokens, at, path.clone(), out);
                    // Skip an `as name` or anything else up to the separator.
                    while tokens.get(at).is_some_and(|t| t != "," && t != "}") {
                        at += 1;
                    }
                }
                return at + 1;
            }
            Some(t) if is_ident(t) => {
                path.push(t.to_string());
                at += 1;
                if tokens.get(at).is_some_and(|t| t == "::") {
                    at += 1;
                } else {
                    out.push(path);
                    return at;
                }
            }
            _ => {
                out.push(path);
                return at;
            }
        }
    }
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Whether the item at `tokens[at]` carries `#[cfg(test)]` (among its attributes and visibility).
fn cfg_test_before(tokens: &[String], at: usize) -> bool {
    let from = at.saturating_sub(12);
    let before = tokens[from..at].concat();
    let item = before.rsplit([';', '}']).next().unwrap_or("");
    item.contains("#[cfg(test)]")
}

/// The index after the block that opens at `tokens[open]`.
fn skip_block(tokens: &[String], open: usize) -> usize {
    let mut depth = 0;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Identifiers, `::`, and single punctuation characters.
fn tokenize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The dependency graph of a crate's modules: module → the modules it names (ancestors left out).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &mods {
        let edges = g.entry(module.clone()).or_default();
        for path in named_paths(module, text) {
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| mods.contains_key(m))
                .unwrap_or_default();
            let is_ancestor = target.is_empty()
                || *module == target
                || module.starts_with(&format!("{target}::"));
            if !is_ancestor {
                edges.insert(target);
            }
        }
    }
    g
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_crate_of_the_workspace_has_a_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["tools", "core", "bindings"] {
        let g = graph(&root.join(krate).join("src"));
        let edges: usize = g.values().map(BTreeSet::len).sum();
        eprintln!("{krate}: {} modules, {edges} edges", g.len());
        // tools and core have dozens of modules naming each other: a graph without edges would
        // mean the paths were not read (bindings is one module and its tests).
        assert!(
            krate == "bindings" || edges > 5,
            "{krate}: the graph is empty"
        );
        let found = cycles(&g);
        assert!(found.is_empty(), "{krate}: module cycles {found:?}");
    }
}

/// The graph finds a cycle through `super::` and `crate::` paths, and leaves out a child naming
/// its parent and paths inside `#[cfg(test)]` modules and comments.
#[test]
fn the_graph_sees_a_cycle_and_ignores_parents_tests_and_comments() {
    let dir = std::env::temp_dir().join(format!("nnzip-module-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let write = |p: &str, t: &str| std::fs::write(src.join(p), t).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a/mod.rs", "pub mod x;\npub fn f() {}\n");
    write("a/x.rs", "use super::f;\nuse crate::{b::{g, h as k}, c};\n");
    write("b.rs", "pub fn g() { crate::a::x::y(); }\n");
    write(
        "c.rs",
        "// crate::b::g\n#[cfg(test)]\nmod tests { use crate::a::f; }\nconst S: &str = \"crate::b\";\n",
    );
    let g = graph(&src);
    assert_eq!(
        g["a::x"],
        BTreeSet::from(["b".to_string(), "c".to_string()])
    );
    assert!(g["c"].is_empty(), "{:?}", g["c"]);
    assert_eq!(cycles(&g), vec![vec!["a::x".to_string(), "b".to_string()]]);
    std::fs::remove_dir_all(&dir).ok();
}
