//! The series budget of `--rank-detail`: series and bytes per rank at each level, from
//! real renders of a registry fed with the load generator's frames, against the
//! numbers docs/series-budget.md states; lean output still passes promtool, leaves
//! out exactly the full-only families, and keeps the engine aggregates whole.
//!
//! `cargo test --test series_budget -- --nocapture` prints the byte figures.

mod common;

use fpm_exporter::publisher::sim::FrameModel;
use fpm_exporter::sink::prometheus::{engines, ranks, render, text::Format};
use fpm_exporter::state::detail::{RankDetail, RankDetails};
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, Registry, StateConfig};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Series one busy rank writes, every window filled. The load model's ranks always
/// decode, so their pure-prefill regression has no fit (no coefficients, no R²): 3
/// series fewer than a rank whose three regressions all fit (174).
const LEAN_SERIES: usize = 57;
const FULL_SERIES: usize = 171;

/// `ranks` busy ranks of engine "bench" (worker_id `bench-engine-0`, as fpm-bench's
/// scrape scenario labels them), each fed `frames` iterations of the load model.
fn fed(detail: RankDetail, ranks: u64, frames: usize) -> Arc<Registry> {
    let reg = Registry::new(
        StateConfig {
            max_ranks: 8192,
            rank_detail: RankDetails {
                default: detail,
                engines: vec![],
            },
            ..Default::default()
        },
        vec![EngineInfo {
            name: "bench".into(),
            labels: vec![],
        }],
    );
    let ep: Arc<str> = "ipc:///bench".into();
    for r in 0..ranks {
        let mut model = FrameModel::new("bench-engine-0", r, 1);
        let mut cache = RankCache::default();
        for seq in 0..frames as u64 {
            let ev = if seq == 0 {
                SeqEvent::First
            } else {
                SeqEvent::InOrder
            };
            let m = model.next_iteration().clone();
            assert!(reg.ingest(&mut cache, 0, &ep, seq, ev, m, &reg.now()));
        }
    }
    reg
}

/// The exposition once every rank's windows and model show its frames (a window
/// shows a second once it has begun, which the poll waits for on a slow machine).
fn settled(reg: &Registry, ranks: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = render(reg, Format::Text, 0.0);
        let with_windows = body
            .lines()
            .filter(|l| l.starts_with("fpm_window_iterations{") && l.contains("window=\"60s\""))
            .filter(|l| !l.ends_with(" 0"))
            .count();
        let model = common::sample(
            &body,
            "fpm_engine_model_samples",
            &[("regression", "aggregated")],
        );
        if with_windows == ranks && model.is_some_and(|n| n > 8.0) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "windows never filled:\n{}",
            &body[..body.len().min(4000)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rank_series(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| !l.starts_with('#') && l.contains("worker_id=\""))
        .collect()
}

fn names(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn one_rank_writes_the_documented_series_at_each_level() {
    let doc = std::fs::read_to_string(common::repo_root().join("docs/series-budget.md"))
        .expect("docs/series-budget.md");
    let mut bytes = Vec::new();
    for (detail, want) in [
        (RankDetail::Lean, LEAN_SERIES),
        (RankDetail::Full, FULL_SERIES),
    ] {
        let reg = fed(detail, 1, 64);
        let body = settled(&reg, 1);
        let series = rank_series(&body);
        assert_eq!(series.len(), want, "{detail:?}:\n{}", series.join("\n"));
        let row = format!("| `{}` | {want} |", detail.as_str());
        assert!(doc.contains(&row), "docs/series-budget.md lacks {row:?}");
        let (ok, report) = common::promtool_check(&body);
        assert!(ok, "promtool at {detail:?}:\n{report}");

        // Which families: lean leaves out exactly the full-only ones.
        let got = names(&series);
        let summary = ranks::WALL_TIME_QUANTILE.name;
        let expect: BTreeSet<String> = ranks::families()
            .iter()
            .chain(&fpm_exporter::sink::prometheus::model::rank_families())
            .filter(|f| {
                detail == RankDetail::Full
                    || !fpm_exporter::sink::prometheus::full_only_families()
                        .iter()
                        .any(|o| o.name == f.name)
            })
            .flat_map(|f| {
                if f.name == summary {
                    vec![
                        summary.to_string(),
                        format!("{summary}_sum"),
                        format!("{summary}_count"),
                    ]
                } else {
                    vec![f.name.to_string()]
                }
            })
            .collect();
        assert_eq!(got, expect, "{detail:?}");
        // Engine aggregates are whole at every level: 14 fields x 2 windows x 4 stats.
        for fam in [engines::MEAN, engines::VARIANCE, engines::MIN, engines::MAX] {
            let n = body
                .lines()
                .filter(|l| l.starts_with(&format!("{}{{", fam.name)))
                .count();
            assert_eq!(n, 28, "{} at {detail:?}", fam.name);
        }
        bytes.push(series.iter().map(|l| l.len() + 1).sum::<usize>());
    }
    eprintln!(
        "sample bytes per rank: lean {} B, full {} B",
        bytes[0], bytes[1]
    );
    assert!(
        bytes[0] * 3 < bytes[1],
        "lean is not a third of full: {bytes:?}"
    );
}

#[test]
fn a_thousand_ranks_at_each_level() {
    let ranks = 1024;
    let mut sizes = Vec::new();
    for detail in [RankDetail::Lean, RankDetail::Full] {
        let reg = fed(detail, ranks, 64);
        let body = settled(&reg, ranks as usize);
        let series = rank_series(&body).len();
        let n = ranks as usize;
        match detail {
            RankDetail::Lean => assert_eq!(series, LEAN_SERIES * n),
            // A few of the simulated ranks do get a pure-prefill fit.
            RankDetail::Full => assert!(
                (FULL_SERIES * n..=(FULL_SERIES + 3) * n).contains(&series),
                "{series}"
            ),
        }
        eprintln!(
            "{} ranks at {:?}: {series} rank series, {} bytes ({:.1} KB per rank)",
            ranks,
            detail,
            body.len(),
            body.len() as f64 / ranks as f64 / 1e3
        );
        sizes.push(body.len());
    }
    // Full is today's ~23 MB; lean a third of it or less.
    assert!((18e6..30e6).contains(&(sizes[1] as f64)), "{sizes:?}");
    assert!(sizes[0] * 3 < sizes[1], "{sizes:?}");
}
