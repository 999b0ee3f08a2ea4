//! `fpm-nats-bench` runs end to end (briefly) and prints both paths side by side with
//! the sizing line, ingesting what was offered at a low rate, and the central's scrape
//! at both `--nats-relayed-series` settings over a small relayed fleet.

use std::process::Command;

#[test]
fn nats_bench_prints_both_paths_and_a_sizing() {
    let out = Command::new(env!("CARGO_BIN_EXE_fpm-nats-bench"))
        .args([
            "--ranks",
            "8",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--fleet",
            "4x2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in ["| ZMQ direct | 8 |", "| edge -> NATS -> central | 8 |"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(path))
            .unwrap_or_else(|| panic!("{path} in {text}"));
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let (offered, ingested): (f64, f64) = (cols[3].parse().unwrap(), cols[4].parse().unwrap());
        assert!(offered > 100.0, "{line}");
        assert_eq!(offered, ingested, "nothing lost at 160 frames/s: {line}");
    }
    assert!(text.contains("sizing: 10000 ranks x 50 frames/s"), "{text}");
    // Every rank at the central, then the default (the edges serve relayed ranks): both
    // ingest the whole fleet, the default renders none of its ranks.
    let series = |cell: &str| -> u64 {
        let before = cell.split(" series").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for prefix in ["| 8 |", "| 8 (4 x 2), 160 |"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {text}"));
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let (all, default) = (series(cols[2]), series(cols[3]));
        assert!(all > 8 * 30 && default < 100, "{line}");
        assert!(all - default > 8 * 30, "{line}");
    }
    let fleet = text.lines().find(|l| l.starts_with("| 8 (4 x 2)")).unwrap();
    assert_eq!(fleet.matches("(8 ranks tracked)").count(), 2, "{fleet}");
}
