//! deploy/ validated offline: core manifests against Kubernetes 1.37's schemas
//! (kubernetes-validate, strict), the Prometheus Operator's kinds structurally and
//! cross-checked with the rest, the PrometheusRule and dashboard ConfigMap identical to
//! dashboards/, the rules through promtool, and the edge's engines.toml and both
//! containers' flags through the exporter's own parser.

mod common;

use clap::Parser;
use common::{repo_root, require_test_deps, venv_python};
use fpm_exporter::config::{Cli, Settings};
use serde_json::Value;
use std::process::Command;

#[test]
fn manifests_validate_and_agree_with_the_exporter() {
    require_test_deps();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/py/check_deploy.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["checked"].as_u64().unwrap() >= 9, "{report}");

    let rules = Command::new("promtool")
        .args(["check", "rules", report["rules"].as_str().unwrap()])
        .output()
        .expect("promtool");
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );

    let args = |key: &str, config: Option<&str>| -> Vec<String> {
        let mut v = vec!["fpm-exporter".to_owned()];
        for a in report[key].as_array().unwrap() {
            let a = a.as_str().unwrap();
            match (a.strip_prefix("--config="), config) {
                (Some(_), Some(c)) => v.push(format!("--config={c}")),
                _ => v.push(a.to_owned()),
            }
        }
        v
    };
    let edge = Cli::try_parse_from(args("edge_args", report["edge_config"].as_str())).unwrap();
    let edge = Settings::from_cli(&edge.run).expect("the edge's engines.toml");
    let nats = edge.nats.expect("edge relays to NATS");
    assert_eq!(nats.publish_url.as_deref(), Some("nats://nats:4222"));
    assert_eq!(nats.kv_bucket.as_deref(), Some("fpm-loads"));
    assert!(edge.demo.is_none());
    assert!(edge
        .endpoints
        .iter()
        .any(|e| e.address.starts_with("ipc:///run/sglang/")));
    let central = Cli::try_parse_from(args("central_args", None)).unwrap();
    let central = Settings::from_cli(&central.run).expect("the central flags");
    let nats = central.nats.expect("central ingests from NATS");
    assert_eq!(nats.ingest_url.as_deref(), Some("nats://nats:4222"));
    assert_eq!(
        nats.ingest_subject,
        "namespace.*.component.*.endpoint.*.forward-pass-metrics"
    );
    assert!(central.demo.is_none() && central.endpoints.is_empty());
    let sidecar = Cli::try_parse_from(args("sidecar_args", None)).unwrap();
    let sidecar = Settings::from_cli(&sidecar.run).expect("the sidecar's flags");
    assert_eq!(sidecar.load_snapshots.len(), 1);
    assert_eq!(
        sidecar.load_snapshots[0].pattern,
        "/dev/shm/sglang_loads_*.shm"
    );
}
