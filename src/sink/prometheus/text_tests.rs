use super::*;

const G: Family = Family::gauge("fpm_test", "A test gauge.");
const C: Family = Family::counter("fpm_things_total", "Things seen.");

#[test]
fn escapes_hostile_label_values() {
    let mut labels = String::new();
    push_label(&mut labels, "worker_id", "a\"b\\c\nd");
    assert_eq!(labels, r#"worker_id="a\"b\\c\nd""#);
}

#[test]
fn classic_and_openmetrics_counters() {
    let mut w = Writer::new(Format::Text, 0);
    w.family(&C);
    w.sample(&C, "engine=\"e\"", &[], 3.0);
    assert_eq!(
        w.finish(),
        "# HELP fpm_things_total Things seen.\n# TYPE fpm_things_total counter\nfpm_things_total{engine=\"e\"} 3\n"
    );
    let mut w = Writer::new(Format::OpenMetrics, 0);
    w.family(&C);
    w.sample(&C, "", &[("reason", "x")], 0.5);
    w.family(&G);
    w.sample(&G, "", &[], f64::INFINITY);
    assert_eq!(
        w.finish(),
        "# HELP fpm_things Things seen.\n# TYPE fpm_things counter\nfpm_things_total{reason=\"x\"} 0.5\n\
         # HELP fpm_test A test gauge.\n# TYPE fpm_test gauge\nfpm_test +Inf\n# EOF\n"
    );
}

#[test]
fn streaming_hands_over_bounded_pieces_that_add_up() {
    let pieces = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = pieces.clone();
    let mut w = Writer::streaming(
        Format::Text,
        100,
        Box::new(move |p| sink.lock().unwrap().push(p)),
    );
    let mut whole = Writer::new(Format::Text, 0);
    for x in [&mut w, &mut whole] {
        x.family(&G);
        for i in 0..50 {
            x.sample(
                &G,
                "engine=\"e\"",
                &[("dp_rank", &i.to_string())],
                i as f64 * 0.5,
            );
        }
    }
    let rest = w.finish();
    let pieces = pieces.lock().unwrap();
    assert!(pieces.len() >= 10, "{} pieces", pieces.len());
    assert!(
        pieces.iter().all(|p| p.len() < 100 + 64),
        "a piece far beyond the chunk size"
    );
    assert_eq!(pieces.concat() + &rest, whole.finish());
}

#[test]
fn pre_rendered_labels_write_the_same_line() {
    let mut a = Writer::new(Format::Text, 0);
    let mut b = Writer::new(Format::Text, 0);
    let mut extra = String::new();
    push_label(&mut extra, "field", "a\"b");
    push_label(&mut extra, "window", "10s");
    for labels in ["engine=\"e\"", ""] {
        a.sample(&G, labels, &[("field", "a\"b"), ("window", "10s")], 1.5);
        b.sample_rendered(&G, labels, &extra, 1.5);
    }
    a.sample(&G, "", &[], 2.0);
    b.sample_rendered(&G, "", "", 2.0);
    assert_eq!(a.finish(), b.finish());
}

#[test]
fn negotiates_openmetrics_only_when_asked() {
    assert_eq!(Format::negotiate(None), Format::Text);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4")),
        Format::Text
    );
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )),
        Format::OpenMetrics
    );
}
