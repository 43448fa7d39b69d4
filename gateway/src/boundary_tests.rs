//! The trust boundary, checked from the sources: which module may use which. Every `use` and
//! every `crate::` path of the gateway's files (tests left out) is resolved to the file it
//! names, and then:
//!
//! - nothing under `root/` uses `front/`, or parses HTTP or FastCGI;
//! - `front/` uses of `root/` only what root hands over at the fork (`root/handover.rs`);
//! - `config/` and `jailfs/` use neither;
//! - no two files use each other, directly or around a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source folder.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file but tests, by its path under `src/`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, files: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, files);
                continue;
            }
            let relative = path
                .strip_prefix(src())
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            let test_only = relative.ends_with("tests.rs") || relative.ends_with("fake_workers.rs");
            if relative.ends_with(".rs")
                && !relative.starts_with("bin/")
                && relative != "main.rs"
                && !test_only
            {
                let text = std::fs::read_to_string(&path).expect("read source");
                files.insert(relative, without_tests_and_comments(&text));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(&src(), &mut files);
    files
}

/// The text up to its test module (it comes last), without `//` comments.
fn without_tests_and_comments(text: &str) -> String {
    let code = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text);
    code.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file: `front/request/mod.rs` is `[front, request]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file a module path names: the longest prefix that is a file.
fn file_of(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    (0..=path.len()).rev().find_map(|len| {
        let prefix = path[..len].join("/");
        let candidates = if len == 0 {
            vec!["lib.rs".to_owned()]
        } else {
            vec![format!("{prefix}.rs"), format!("{prefix}/mod.rs")]
        };
        candidates.into_iter().find(|file| files.contains_key(file))
    })
}

/// The paths a `use` tree names, expanded: `a::{b, c::d}` is `a::b` and `a::c::d`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(|item| {
            expand(item)
                .into_iter()
                .map(move |path| format!("{prefix}{path}"))
        })
        .collect()
}

/// The files `file` uses.
fn uses(file: &str, text: &str, files: &BTreeMap<String, String>) -> BTreeSet<String> {
    let here = module_of(file);
    // The module `super` and `self` are relative to: a `mod.rs` is its folder's module.
    let mut paths: Vec<String> = Vec::new();
    for statement in text.split(';') {
        let statement = statement.trim();
        let tree = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
            .or_else(|| statement.strip_prefix("use "));
        if let Some(tree) = tree {
            paths.extend(expand(tree));
        }
    }
    // Paths written out in code: `crate::front::...`.
    for (at, _) in text.match_indices("crate::") {
        let path: String = text[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(path);
    }
    let mut used = BTreeSet::new();
    for path in paths {
        let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let mut absolute: Vec<String> = match parts.first() {
            Some(&"crate") => Vec::new(),
            Some(&"super") => here[..here.len().saturating_sub(1)].to_vec(),
            Some(&"self") => here.clone(),
            // A sibling module by name (`use listen::Listener` in a mod.rs), else an
            // external crate.
            Some(first)
                if files
                    .keys()
                    .any(|f| module_of(f) == [&here[..], &[first.to_string()]].concat()) =>
            {
                parts.insert(0, "self");
                here.clone()
            }
            _ => continue,
        };
        parts.remove(0);
        while parts.first() == Some(&"super") {
            absolute.pop();
            parts.remove(0);
        }
        absolute.extend(parts.iter().map(|p| p.to_string()));
        if let Some(target) = file_of(&absolute, files) {
            if target != file {
                used.insert(target);
            }
        }
    }
    used
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    files
        .iter()
        .map(|(file, text)| (file.clone(), uses(file, text, &files)))
        .collect()
}

#[test]
fn the_resolver_sees_the_uses_it_must() {
    let graph = graph();
    let used = |file: &str, target: &str| graph[file].contains(target);
    assert!(used("front/http/handler.rs", "front/request/env.rs"));
    assert!(used("front/mod.rs", "root/handover.rs"));
    assert!(used("root/supervisor.rs", "root/workers.rs"));
    assert!(used("front/pool.rs", "front/request/error.rs"));
}

#[test]
fn root_uses_nothing_of_the_front_and_parses_no_request() {
    for (file, text) in sources()
        .iter()
        .filter(|(file, _)| file.starts_with("root/"))
    {
        for word in ["hyper", "http::", "fastcgi::", "crate::front"] {
            assert!(!text.contains(word), "{file} mentions {word}");
        }
    }
    for (file, targets) in graph().iter().filter(|(file, _)| file.starts_with("root/")) {
        for target in targets {
            assert!(
                !target.starts_with("front/") && target != "demo.rs",
                "{file} uses {target}"
            );
        }
    }
}

#[test]
fn the_front_uses_of_root_only_what_is_handed_over() {
    for (file, targets) in graph()
        .iter()
        .filter(|(file, _)| file.starts_with("front/"))
    {
        for target in targets.iter().filter(|target| target.starts_with("root/")) {
            assert_eq!(target, "root/handover.rs", "{file} uses {target}");
        }
    }
}

#[test]
fn shared_modules_use_neither_domain() {
    for (file, targets) in graph()
        .iter()
        .filter(|(file, _)| file.starts_with("config/") || file.starts_with("jailfs/"))
    {
        for target in targets {
            assert!(
                !target.starts_with("front/") && !target.starts_with("root/"),
                "{file} uses {target}"
            );
        }
    }
}

#[test]
fn no_module_import_cycle() {
    let graph = graph();
    // Depth-first search for a back edge; the path to it is the cycle.
    fn visit(
        file: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(file) {
            return;
        }
        if let Some(at) = path.iter().position(|on| on == file) {
            panic!("import cycle: {} -> {file}", path[at..].join(" -> "));
        }
        path.push(file.to_owned());
        for next in graph.get(file).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(file.to_owned());
    }
    let mut done = BTreeSet::new();
    for file in graph.keys() {
        visit(file, &graph, &mut Vec::new(), &mut done);
    }
}
