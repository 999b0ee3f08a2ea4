//! `promtool check metrics` on live output of a running exporter fed by the demo
//! engine; its OpenMetrics form through prometheus_client's strict parser.

mod common;

use common::{sample, wait_for, Exporter};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool() {
    let exp = Exporter::start(&["--demo", "--demo-ranks", "3", "--windows", "5s,30s"]).await;
    let body = wait_for(
        "demo ranks with window statistics",
        Duration::from_secs(15),
        || async {
            let m = exp.metrics().await;
            (sample(
                &m,
                "fpm_window_mean",
                &[("engine", "demo"), ("window", "5s")],
            )
            .is_some()
                && sample(&m, "fpm_up", &[("dp_rank", "2")]) == Some(1.0))
            .then_some(m)
        },
    )
    .await;
    // The HTTP side's limit counters are part of what promtool checks.
    for name in [
        "fpm_exporter_scrapes_rejected_total",
        "fpm_exporter_http_write_timeouts_total",
        "fpm_exporter_stream_snapshots_skipped_total",
    ] {
        assert_eq!(sample(&body, name, &[]), Some(0.0), "{name}");
    }
    let (ok, report) = common::promtool_check(&body);
    assert!(ok, "promtool check metrics failed:\n{report}");
    // OpenMetrics when asked for, accepted by a strict OpenMetrics parser (see
    // tests/openmetrics.rs for what else it and a real Prometheus check).
    let om = common::openmetrics_body(&exp.url).await;
    if let Err(e) = common::openmetrics_check(&om) {
        panic!("strict OpenMetrics parser rejected live output: {e}");
    }
    assert!(om.contains("# TYPE fpm_frames counter\n"));
    exp.stop().await;
}

#[test]
fn promtool_rejects_broken_exposition() {
    // Guards the check above: promtool really reads what we give it.
    let (ok, _) = common::promtool_check("# TYPE x_total gauge\nx_total{a=\"b} 1\n");
    assert!(!ok);
}
