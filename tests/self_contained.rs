//! The repository is whole by itself: nothing in src/, tests/, tools/ or scripts/
//! reads a path outside it (a user's clone has nothing beside it; a fixture a test
//! needs lives in tests/fixtures/).
//!
//! A path climbs with `..` components from a base: a string literal that starts with
//! `/..` (or a format string's `{}/..`) is appended to a package's manifest directory; any other relative path is
//! taken from the file's own folder or the package root, whichever is deeper (the
//! lenient reading: `#[path]`, `dirname "$0"`, `__file__` and Cargo's working
//! directory all lead there). Absolute paths into the development machine's `/work`
//! tree are refused outright.

use std::path::{Path, PathBuf};

/// The folders checked, relative to the repository root.
const CHECKED: &[&str] = &["src", "tests", "tools", "scripts"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Depth of the package that holds `rel` (a path relative to the root): `tools/` is a
/// package of its own, everything else belongs to the root package.
fn package_depth(rel: &str) -> usize {
    usize::from(rel.starts_with("tools/"))
}

/// Every escape from the repository in file `rel` with contents `text`.
fn escapes(rel: &str, text: &str) -> Vec<String> {
    let dir_depth = rel.matches('/').count();
    let pkg = package_depth(rel);
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.contains("/work/") {
            bad.push(format!("{rel}:{}: absolute path into /work: {line}", n + 1));
        }
        let b = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("..").map(|p| p + i) {
            let before = at.checked_sub(1).map(|p| b[p]);
            let starts = matches!(
                before,
                None | Some(b'/' | b'"' | b'\'' | b' ' | b'=' | b'(' | b'\\')
            );
            // Count the consecutive `..` components from here.
            let mut climb = 0;
            let mut j = at;
            while line[j..].starts_with("..")
                && matches!(
                    b.get(j + 2),
                    None | Some(b'/' | b'"' | b'\'' | b' ' | b')' | b'\\')
                )
            {
                climb += 1;
                j += 2;
                if b.get(j) == Some(&b'/') {
                    j += 1;
                }
            }
            if starts && climb > 0 {
                let from_manifest = at >= 2 && matches!(&line[at - 2..at], "\"/" | "}/");
                let base = if from_manifest {
                    pkg
                } else {
                    pkg.max(dir_depth)
                };
                if climb > base {
                    bad.push(format!(
                        "{rel}:{}: path climbs {climb} folder(s) above {}: {}",
                        n + 1,
                        if from_manifest {
                            "its package"
                        } else {
                            "its folder"
                        },
                        line.trim()
                    ));
                }
            }
            i = j.max(at + 2);
        }
    }
    bad
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| ["rs", "py", "sh", "toml", "md"].contains(&e.to_str().unwrap_or("")))
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_reads_outside_the_repository() {
    let root = root();
    let mut all = Vec::new();
    for d in CHECKED {
        files(&root.join(d), &mut all);
    }
    assert!(
        all.len() > 100,
        "src/, tests/, tools/, scripts/ nearly empty"
    );
    let mut bad = Vec::new();
    for f in &all {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "tests/self_contained.rs" {
            continue; // its own examples below
        }
        bad.extend(escapes(&rel, &std::fs::read_to_string(f).unwrap()));
    }
    assert!(
        bad.is_empty(),
        "paths outside the repository:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_paths_that_leave_and_passes_paths_that_stay() {
    let manifest = "    let t = concat!(env!(\"CARGO_MANIFEST_DIR\"),\n        \"/../shared/fixtures/x.prom\");";
    assert_eq!(
        escapes("src/source/scrape/parse_tests.rs", manifest).len(),
        1
    );
    let fmt = "format!(\"{}/../shared/fixtures/x.prom\", env!(\"CARGO_MANIFEST_DIR\"))";
    assert_eq!(escapes("tests/scrape.rs", fmt).len(), 1);
    assert_eq!(escapes("tests/x.rs", "read(\"/work/shared/x\")").len(), 1);
    assert_eq!(
        escapes("scripts/x.sh", "cd \"$(dirname \"$0\")/../..\"").len(),
        1
    );
    // Inside: tools/ up to the root, scripts/ up to the root, a #[path] sibling.
    assert!(escapes(
        "tools/tests/x.rs",
        "concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../proto\")"
    )
    .is_empty());
    assert!(escapes("scripts/x.sh", "cd \"$(dirname \"$0\")/..\"").is_empty());
    assert!(escapes("src/a/b.rs", "#[path = \"../c.rs\"]").is_empty());
    assert!(escapes("src/a.rs", "let r = 0..n; let s = &x[..]; a...b").is_empty());
}
