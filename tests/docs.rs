//! The README and docs/ document every metric family, HTTP endpoint and flag the code has.

use clap::CommandFactory;
use fpm_exporter::config::Cli;
use fpm_exporter::sink::prometheus::all_families;

/// The README followed by every Markdown file under docs/.
fn readme() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut docs: Vec<_> = std::fs::read_dir(format!("{root}/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for p in docs {
        text.push_str(&std::fs::read_to_string(p).unwrap());
    }
    text
}

#[test]
fn every_metric_family_is_documented() {
    let text = readme();
    for f in all_families() {
        assert!(
            text.contains(&format!("`{}", f.name)),
            "README lacks metric {}",
            f.name
        );
    }
}

#[test]
fn every_flag_is_documented() {
    let text = readme();
    let cmd = Cli::command();
    let subs = cmd.get_subcommands().flat_map(|s| s.get_arguments());
    for arg in cmd.get_arguments().chain(subs) {
        if let Some(long) = arg.get_long() {
            if long == "help" || long == "version" {
                continue;
            }
            assert!(
                text.contains(&format!("--{long}")),
                "README lacks flag --{long}"
            );
        }
    }
}

#[test]
fn every_http_endpoint_is_documented() {
    let text = readme();
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs")).unwrap();
    let mut n = 0;
    for line in src.lines() {
        if let Some(rest) = line.trim().strip_prefix(".route(\"") {
            let path = &rest[..rest.find('"').unwrap()];
            assert!(
                text.contains(&format!("`GET {path}")),
                "README lacks endpoint {path}"
            );
            n += 1;
        }
    }
    assert!(n >= 5, "found the routes in src/http/mod.rs");
}
