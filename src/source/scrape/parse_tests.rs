use super::*;

fn fams(text: &str, om: bool) -> Vec<MetricFamily> {
    parse(text, om).unwrap().families
}

#[test]
fn text_families_group_by_type_line() {
    let t = "# HELP a_total A \\\\ help\\nx\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
             # TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 0.5\n\
             loose{a=\"q\\\"\\\\\\n\",} -Inf 1700000000000\n";
    let f = fams(t, false);
    assert_eq!(f.len(), 3);
    assert_eq!((f[0].name.as_str(), f[0].kind), ("a", FamilyType::Counter));
    assert_eq!(f[0].help, "A \\ help\nx");
    assert_eq!(f[0].samples[0].name, "a_total");
    assert_eq!((f[1].kind, f[1].samples.len()), (FamilyType::Histogram, 4));
    assert_eq!(
        (f[2].name.as_str(), f[2].kind),
        ("loose", FamilyType::Untyped)
    );
    assert_eq!(f[2].samples[0].labels, vec![("a".into(), "q\"\\\n".into())]);
    assert_eq!(f[2].samples[0].value, f64::NEG_INFINITY);
}

#[test]
fn prometheus_rejections_fail_the_document() {
    for bad in [
        "a b\n",
        "a{x=1} 1\n",
        "a{x=\"1\" 1\n",
        "a{x=\"1\",x=\"2\"} 1\n",
        "a{x=\"\\\"} 1\n",
        "a 1 1.5\n",
        "1a 1\n",
        "a{1x=\"\"} 1\n",
        "# TYPE a bogus\n",
        "a\n",
    ] {
        assert!(parse(bad, false).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn stray_escapes_are_kept_as_prometheus_keeps_them() {
    // Prometheus 2.42 ingests each of these (tests/fan_in_prometheus.rs shows it).
    let t = "# HELP a stray \\t escape\na{path=\"C:\\temp\",q=\"\\q\",e=\"x\\\\\"} 1\n";
    let f = fams(t, false);
    assert_eq!(f[0].help, "stray \\t escape");
    let l = &f[0].samples[0].labels;
    assert_eq!(l[0].1, "C:\\temp");
    assert_eq!(l[1].1, "\\q");
    assert_eq!(l[2].1, "x\\");
    let om = "# TYPE a gauge\n# HELP a say\\thi \\\"q\\\"\na{p=\"C:\\temp\"} 1\n# EOF\n";
    let f = fams(om, true);
    assert_eq!(f[0].help, "say\\thi \"q\"");
    assert_eq!(f[0].samples[0].labels[0].1, "C:\\temp");
}

#[test]
fn openmetrics_samples_spelled_escaped_join_their_declared_family() {
    // prometheus_client 0.26's OpenMetrics for a metric named `sglang:x`.
    let t = "# HELP sglang:t Tokens.\n# TYPE sglang:t counter\nsglang_t_total{m=\"a\"} 3.0\n\
             sglang_t_created{m=\"a\"} 1.7e9\n# TYPE sglang:h histogram\n\
             sglang_h_bucket{le=\"+Inf\"} 1.0\nsglang_h_count 1.0\nsglang_h_sum 0.5\n\
             # TYPE sglang:g gauge\nsglang_g 2.0\n# EOF\n";
    let f = fams(t, true);
    let kinds: Vec<_> = f
        .iter()
        .map(|f| (f.name.as_str(), f.kind, f.samples.len()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("sglang_t", FamilyType::Counter, 1),
            ("sglang_t_created", FamilyType::Gauge, 1),
            ("sglang_h", FamilyType::Histogram, 3),
            ("sglang_g", FamilyType::Gauge, 1)
        ]
    );
    assert_eq!(f[0].help, "Tokens.");
}

#[test]
fn a_series_repeated_with_its_labels_reordered_is_a_duplicate() {
    let p = parse(
        "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\nb{x=\"\"} 1\nb 2\n",
        false,
    )
    .unwrap();
    assert_eq!((p.samples, p.duplicates), (2, 2));
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let p = parse("a{x=\"1\"} 1\na{x=\"1\"} 2\na{x=\"2\"} 3\n", false).unwrap();
    assert_eq!((p.samples, p.duplicates), (2, 1));
    assert_eq!(p.families[0].samples[0].value, 1.0);
}

#[test]
fn openmetrics_needs_eof_and_maps_its_types() {
    assert!(parse("# TYPE a counter\na_total 1\n", true).is_err());
    assert!(parse("a 1\n\n# EOF\n", true).is_err());
    assert!(parse("# EOF\na 1\n", true).is_err());
    let t = "# TYPE a counter\n# HELP a say \\\"hi\\\"\na_total 1 1.5 # {t=\"x\"} 1\na_created 1.7e9\n\
             # TYPE b info\nb_info{v=\"1\"} 1\n# TYPE s stateset\ns{s=\"on\"} 1\n# TYPE g unknown\ng 2\n# EOF\n";
    let f = fams(t, true);
    let kinds: Vec<_> = f.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("a", FamilyType::Counter),
            ("a_created", FamilyType::Gauge),
            ("b_info", FamilyType::Gauge),
            ("s", FamilyType::Gauge),
            ("g", FamilyType::Untyped)
        ]
    );
    assert_eq!(f[0].help, "say \"hi\"");
}

#[test]
fn the_smg_fixture_passes_whole() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smg-engine-metrics-sample.prom"
    ))
    .unwrap();
    let p = parse(&text, false).unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(p.samples as usize, lines);
    assert_eq!(p.duplicates, 0);
    let lint = p
        .families
        .iter()
        .find(|f| f.name == "sglang_routing_key_running_req_count")
        .unwrap();
    assert_eq!(lint.kind, FamilyType::Gauge);
    assert!(lint.samples.iter().all(|s| s.name == lint.name));
}
