//! warren's layers, as README.md's table states them (once), checked
//! against the code: every `crate::` path in a module of `src/` must name
//! a module in a row above its own (or its own), the pure modules (I/O:
//! none) must not use glommio, `std::fs` or the clock, and only the runtime
//! (`shard`, and `cluster`, its Raft adapters) uses glommio. Test code (`tests` modules) may reach higher layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (module, pure) in the table's order, lowest first.
fn layers() -> Vec<(String, bool)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("### Layers")
        .nth(1)
        .expect("README.md has a Layers section");
    let mut out = Vec::new();
    for line in section.lines().skip_while(|l| !l.starts_with("| module")).skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let module = cells[0].trim_matches('`').to_string();
        let pure = cells.last().is_some_and(|io| *io == "none");
        out.push((module, pure));
    }
    assert!(out.len() > 10, "the layer table was not found: {out:?}");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments and its `#[cfg(test)]` module
/// bodies (a rough cut: enough for `mod tests { ... }` at the end).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        if skip_depth.is_none() && code.trim() == "#[cfg(test)]" {
            pending_cfg_test = true;
            continue;
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        if pending_cfg_test {
            pending_cfg_test = false;
            if code.trim_start().starts_with("mod ") && opens > 0 {
                skip_depth = Some(depth);
            }
            if code.trim_start().starts_with("mod ") {
                depth += opens - closes;
                continue;
            }
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

#[test]
fn imports_follow_the_layer_table() {
    let layers = layers();
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, (m, _))| (m.as_str(), i))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if top == "bin" || top == "lib" {
            continue;
        }
        // Test code may use anything below the crate root.
        if rel.contains("/tests/") || rel.ends_with("/tests.rs") || rel.ends_with("proptests.rs") {
            continue;
        }
        let Some(&mine) = rank.get(top.as_str()) else {
            problems.push(format!("{rel}: module `{top}` is not in README.md's layer table"));
            continue;
        };
        seen.insert(top.clone());
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        for (i, _) in code.match_indices("crate::") {
            let used: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            match rank.get(used.as_str()) {
                Some(&r) if r > mine => {
                    problems.push(format!("{rel}: `{top}` uses `{used}`, a layer above it"));
                }
                Some(_) => {}
                None => problems.push(format!("{rel}: uses `crate::{used}`, not in the layer table")),
            }
        }
        let pure = layers[mine].1;
        let forbidden: &[&str] = if pure {
            &["glommio", "std::fs", "SystemTime::now", "Instant::now"]
        } else if top != "shard" && top != "cluster" {
            &["glommio"]
        } else {
            &[]
        };
        for word in forbidden {
            if code.contains(word) {
                problems.push(format!(
                    "{rel}: `{top}` is pure (or not the runtime) but uses `{word}`"
                ));
            }
        }
    }
    for (m, _) in &layers {
        if !seen.contains(m) {
            problems.push(format!(
                "README.md's layer table names `{m}`, which src/ does not have"
            ));
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "layering problems:\n{}", problems.join("\n"));
}
