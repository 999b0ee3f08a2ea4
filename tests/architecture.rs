//! The import rule of docs/architecture.md, enforced: every `crate::<folder>` path in
//! src/ (comments aside) must point at a stage its folder may use, and no sink may
//! import a sibling sink except through the shared modules.

use std::path::{Path, PathBuf};

/// Which top-level modules each one may reference (itself always allowed).
const ALLOWED: &[(&str, &[&str])] = &[
    ("address", &[]),
    ("wire", &[]),
    ("source", &["address", "wire", "state"]),
    ("state", &["wire"]),
    // A stage's settings are plain types in config (config never imports the stage).
    ("capture", &["wire", "state", "config"]),
    ("sink", &["address", "wire", "state", "source", "capture"]),
    (
        "http",
        &[
            "address", "wire", "state", "source", "capture", "sink", "config",
        ],
    ),
    ("publisher", &["address", "wire"]),
    // `top` is a client of the HTTP API: it reads the public JSON, nothing internal.
    ("top", &[]),
    ("config", &["address", "wire", "state", "source", "sink"]),
    (
        "app",
        &[
            "address",
            "wire",
            "state",
            "source",
            "capture",
            "sink",
            "http",
            "publisher",
            "config",
        ],
    ),
];

/// Sink modules that several resources share.
const SHARED_SINKS: &[&str] = &["shared_json", "serving"];
/// The sink modules by resource, the targets the sibling rule
/// looks for.
const SINKS: &[&str] = &[
    "loads_model",
    "nats",
    "prometheus",
    "ranks_document",
    "stream",
];
/// Prometheus modules the family writers share.
const SHARED_PROMETHEUS: &[&str] = &["text", "accept", "detail", "stats"];

/// The top-level module names referenced as `crate::<name>` in `code`.
fn crate_refs(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item.trim().chars().take_while(is_ident).collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                out.push((n + 1, rest.chars().take_while(is_ident).collect()));
            }
        }
    }
    out
}

fn is_ident(c: &char) -> bool {
    c.is_ascii_alphanumeric() || *c == '_'
}

/// Module paths `prefix<name>` in code (e.g. `crate::sink::` or `super::`).
fn refs_after(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| is_ident(&c) || c == ':') && prefix == "super::" {
                continue;
            }
            out.push((n + 1, rest.chars().take_while(is_ident).collect()));
        }
    }
    out
}

/// Every violation in the file at `rel` (relative to src/) holding `code`.
fn check(rel: &str, code: &str) -> Vec<String> {
    let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
    let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == top) else {
        return Vec::new(); // lib.rs, main.rs, bin/: the crate root and the binaries
    };
    let mut bad = Vec::new();
    for (line, target) in crate_refs(code) {
        let known = ALLOWED.iter().any(|(m, _)| *m == target);
        let ok = !known || target == top || allowed.contains(&target.as_str());
        if !ok {
            bad.push(format!(
                "src/{rel}:{line}: {top} may not import crate::{target}"
            ));
        }
    }
    if top == "sink" {
        bad.extend(sibling_sinks(rel, code));
    }
    bad
}

/// Sinks import sibling sinks only through the shared modules.
fn sibling_sinks(rel: &str, code: &str) -> Vec<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    let own = parts[1].trim_end_matches(".rs");
    let mut bad = Vec::new();
    if parts.len() == 2 && own == "mod" {
        return bad; // the index re-exports former paths
    }
    let mut refs = refs_after(code, "crate::sink::");
    if parts.len() == 2 {
        refs.extend(refs_after(code, "super::"));
    }
    for (line, target) in refs {
        let shared = SHARED_SINKS.contains(&target.as_str());
        if target != own && SINKS.contains(&target.as_str()) && !shared {
            bad.push(format!(
                "src/{rel}:{line}: sink {own} may not import sink {target}"
            ));
        }
    }
    if own == "prometheus" && parts.len() == 3 {
        let file = parts[2].trim_end_matches(".rs");
        if file == "mod" || SHARED_PROMETHEUS.contains(&file) {
            return bad;
        }
        let mut refs = refs_after(code, "crate::sink::prometheus::");
        refs.extend(refs_after(code, "super::"));
        let writers = [
            "ranks",
            "engines",
            "model",
            "endpoints",
            "exporter",
            "record",
            "nats",
        ];
        for (line, target) in refs {
            let writer = writers.contains(&target.as_str()) || target == "engine_metrics";
            if writer && target != file {
                bad.push(format!(
                    "src/{rel}:{line}: /metrics writer {file} may not import writer {target}"
                ));
            }
        }
    }
    bad
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_follows_the_data_path() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "src/ not found or nearly empty");
    let mut bad = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        bad.extend(check(&rel, &std::fs::read_to_string(&f).unwrap()));
    }
    assert!(
        bad.is_empty(),
        "imports against docs/architecture.md:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_catches_imports_against_the_flow() {
    let state = "use crate::wire::ForwardPassMetrics;\nuse crate::{sink, wire};\n";
    assert_eq!(check("state/registry.rs", state).len(), 1, "state -> sink");
    let top = "use crate::http::AppState;\nuse crate::sink::stream::hub::StreamHub;\n";
    assert_eq!(
        check("top/feed.rs", top).len(),
        2,
        "top -> http internals, sinks"
    );
    let publisher = "fn f() { crate::source::subscriber::run(); }";
    assert_eq!(check("publisher/demo.rs", publisher).len(), 1);
    assert!(check("state/x.rs", "//! see [`crate::sink::ranks_document`]\n").is_empty());
    let sibling = "use crate::sink::ranks_document::RankJson;\nuse crate::sink::shared_json::X;\n";
    assert_eq!(
        check("sink/stream/mod.rs", sibling).len(),
        1,
        "stream -> ranks"
    );
    assert_eq!(
        check("sink/nats.rs", "use super::loads_model::f;\n").len(),
        1
    );
    let writer = "use super::ranks::write_quantiles;\nuse super::stats::write_quantiles;\n";
    assert_eq!(check("sink/prometheus/engines.rs", writer).len(), 1);
    assert!(check("sink/prometheus/stats.rs", "use super::text::Writer;\n").is_empty());
}
