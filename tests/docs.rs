//! The docs are checked against the code, so they cannot drift: the metrics reference
//! lists exactly the families the exporter writes (with their types), the configuration
//! reference exactly the flags the CLI has, the README's endpoint table exactly the
//! routes; every relative link and anchor in README.md and docs/ resolves, and no page
//! repeats a heading.

use clap::CommandFactory;
use fpm_exporter::config::Cli;
use fpm_exporter::sink::prometheus::all_families;
use fpm_exporter::sink::prometheus::text::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// README.md and every Markdown page under docs/, as (path relative to the root, text).
fn pages() -> Vec<(PathBuf, String)> {
    let mut v = vec![(PathBuf::from("README.md"), read("README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for p in docs {
        let rel = p.strip_prefix(ROOT).unwrap().to_path_buf();
        let text = std::fs::read_to_string(&p).unwrap();
        v.push((rel, text));
    }
    v
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The cells of a Markdown table row, trimmed; None for anything else.
fn cells(line: &str) -> Option<Vec<&str>> {
    let l = line.trim();
    if !l.starts_with('|') || l.starts_with("|---") {
        return None;
    }
    Some(l.trim_matches('|').split(" | ").map(str::trim).collect())
}

/// The text between the first pair of backticks of `cell`.
fn first_code(cell: &str) -> Option<&str> {
    let a = cell.find('`')? + 1;
    let b = a + cell[a..].find('`')?;
    Some(&cell[a..b])
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn headings(text: &str) -> Vec<String> {
    prose(text)
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect()
}

#[test]
fn metrics_reference_lists_exactly_the_families_with_their_types() {
    let text = read("docs/metrics.md");
    let mut documented = BTreeMap::new();
    for line in prose(&text) {
        let Some(c) = cells(line) else { continue };
        let (Some(name), Some(kind)) = (first_code(c[0]), c.get(1)) else {
            continue;
        };
        if *kind == "type" {
            continue;
        }
        let name = name.split('{').next().unwrap().to_string();
        assert!(
            documented.insert(name.clone(), kind.to_string()).is_none(),
            "docs/metrics.md lists {name} twice"
        );
    }
    let mut code = BTreeMap::new();
    for f in all_families() {
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Summary => "summary",
        };
        code.insert(f.name.to_string(), kind.to_string());
    }
    for (name, kind) in &code {
        match documented.get(name) {
            None => panic!("docs/metrics.md lacks a row for {name}"),
            Some(k) => assert_eq!(k, kind, "docs/metrics.md gives {name} the wrong type"),
        }
    }
    for name in documented.keys() {
        assert!(
            code.contains_key(name),
            "docs/metrics.md documents {name}, which the code does not write"
        );
    }
}

/// Every `--flag` written in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at + 2;
        let prev_ok =
            i + at == 0 || !b[i + at - 1].is_ascii_alphanumeric() && b[i + at - 1] != b'-';
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        if prev_ok && end > start && b[start].is_ascii_lowercase() {
            out.insert(text[start..end].trim_end_matches('-').to_string());
        }
        i = end.max(start);
    }
    out
}

#[test]
fn configuration_reference_lists_exactly_the_flags() {
    let cmd = Cli::command();
    let mut main_flags = BTreeSet::new();
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            main_flags.insert(long.to_string());
        }
    }
    main_flags.remove("help");
    main_flags.remove("version");
    let config = read("docs/configuration.md");
    let documented = flags_in(&prose(&config).collect::<Vec<_>>().join("\n"));
    for f in &main_flags {
        assert!(documented.contains(f), "docs/configuration.md lacks --{f}");
    }
    let mut sub_flags = BTreeSet::new();
    for sub in cmd.get_subcommands() {
        let page = match sub.get_name() {
            "replay" => "docs/capture-replay.md",
            _ => "docs/configuration.md",
        };
        let text = read(page);
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long != "help" {
                    assert!(
                        text.contains(&format!("--{long}")),
                        "{page} lacks --{long} of `{}`",
                        sub.get_name()
                    );
                    sub_flags.insert(long.to_string());
                }
            }
        }
    }
    for f in &documented {
        assert!(
            main_flags.contains(f) || sub_flags.contains(f),
            "docs/configuration.md mentions --{f}, which the exporter does not have"
        );
    }
}

#[test]
fn readme_endpoint_table_lists_exactly_the_routes() {
    let src = read("src/http/mod.rs");
    let mut routes = BTreeSet::new();
    for line in src.lines() {
        // Every `.route("PATH"` of a line, chained on its own line or not.
        for (at, _) in line.match_indices(".route(\"") {
            let rest = &line[at + 8..];
            routes.insert(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    assert!(routes.len() >= 5, "found the routes in src/http/mod.rs");
    let readme = read("README.md");
    let mut table = BTreeSet::new();
    for line in prose(&readme) {
        if let Some(c) = cells(line) {
            if let Some(path) = first_code(c[0]).and_then(|s| s.strip_prefix("GET ")) {
                table.insert(path.to_string());
            }
        }
    }
    assert_eq!(
        table, routes,
        "the README's endpoint table and src/http/mod.rs differ"
    );
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let pages = pages();
    let mut n = 0;
    for (page, text) in &pages {
        let dir = Path::new(ROOT).join(page).parent().unwrap().to_path_buf();
        for line in prose(text) {
            let mut rest = line;
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let Some(end) = after.find(')') else { break };
                let target = &after[..end];
                rest = &after[end..];
                if target.starts_with("http://")
                    || target.starts_with("https://")
                    || target.starts_with("mailto:")
                {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target, None),
                };
                let path = if file.is_empty() {
                    Path::new(ROOT).join(page)
                } else {
                    dir.join(file)
                };
                assert!(
                    path.exists(),
                    "{}: link to {target}: no such file",
                    page.display()
                );
                if let Some(anchor) = anchor {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let slugs: Vec<_> = headings(&text).iter().map(|h| slug(h)).collect();
                    assert!(
                        slugs.iter().any(|s| s == anchor),
                        "{}: link to {target}: no such heading (have {slugs:?})",
                        page.display()
                    );
                }
                n += 1;
            }
        }
    }
    assert!(n >= 20, "links were found ({n})");
}

#[test]
fn no_page_repeats_a_heading_and_the_readme_stays_a_front_door() {
    for (page, text) in pages() {
        let mut seen = BTreeSet::new();
        for h in headings(&text) {
            assert!(
                seen.insert(slug(&h)),
                "{}: heading {h:?} twice",
                page.display()
            );
            assert!(
                !h.contains("(additions)"),
                "{}: heading {h:?}",
                page.display()
            );
        }
    }
    let readme = read("README.md");
    assert!(
        readme.lines().count() <= 250,
        "README.md is a front door of at most 250 lines"
    );
    let first_screen: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        first_screen.contains("cargo run --release")
            && first_screen.contains("bash scripts/test.sh")
    );
    assert!(
        read(".ci/run").contains("bash scripts/test.sh"),
        ".ci/run calls the README's test command"
    );
}
