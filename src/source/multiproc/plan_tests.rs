use super::super::{MultiprocDir, MultiprocSettings};

fn db(entries: &[(&str, f64)]) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    for (key, v) in entries {
        let k = key.as_bytes();
        b.extend((k.len() as i32).to_ne_bytes());
        b.extend(k);
        b.resize(b.len() + 8 - (k.len() + 4) % 8, b' ');
        b.extend(v.to_ne_bytes());
        b.extend(0f64.to_ne_bytes());
    }
    let used = b.len() as i32;
    b[..4].copy_from_slice(&used.to_ne_bytes());
    b
}

#[test]
fn steady_scrapes_refresh_values_and_new_series_rebuild() {
    let dir = std::env::temp_dir().join(format!("fpm-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("counter_1.db");
    let a = r#"["c", "c_total", {}, "h"]"#;
    let b = r#"["c", "c_total", {"x": "y"}, "h"]"#;
    let settings = MultiprocSettings {
        pid_check: false,
        ..Default::default()
    };
    let d = MultiprocDir::new("e", &[], dir.clone(), settings);
    let values = |f: &[crate::wire::exposition::MetricFamily]| -> Vec<f64> {
        f.iter()
            .flat_map(|f| f.samples.iter().map(|s| s.value))
            .collect()
    };
    std::fs::write(&file, db(&[(a, 1.0)])).unwrap();
    let (f1, g1) = d.collect();
    assert_eq!(values(&f1), [1.0]);
    drop(f1);
    std::fs::write(&file, db(&[(a, 2.0)])).unwrap();
    let (f2, g2) = d.collect();
    assert_eq!(
        (values(&f2), g2),
        (vec![2.0], g1),
        "same series: values refreshed"
    );
    drop(f2);
    std::fs::write(&file, db(&[(a, 3.0), (b, 4.0)])).unwrap();
    let (f3, g3) = d.collect();
    assert_eq!(values(&f3), [3.0, 4.0], "a new key is merged");
    assert_ne!(g3, g1);
    drop(f3);
    // A series that leaves and comes back must not write through the position
    // it had in an older merge's output.
    std::fs::write(&file, db(&[(b, 5.0)])).unwrap();
    assert_eq!(values(&d.collect().0), [5.0], "a's series left");
    std::fs::write(&file, db(&[(a, 6.0), (b, 7.0)])).unwrap();
    assert_eq!(values(&d.collect().0), [6.0, 7.0], "a came back");
    std::fs::write(&file, db(&[(a, 8.0), (b, 9.0)])).unwrap();
    assert_eq!(values(&d.collect().0), [8.0, 9.0], "steady again");
    std::fs::remove_file(&file).unwrap();
    let (f4, _) = d.collect();
    assert!(values(&f4).is_empty(), "a vanished file's series are gone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scrapes_write_values_into_one_kept_layout() {
    let dir = std::env::temp_dir().join(format!("fpm-plan-x-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("counter_1.db");
    let a = r#"["c", "c_total", {"q": "a\"b"}, "h"]"#;
    let b = r#"["c", "c_total", {"x": "y"}, "h"]"#;
    let settings = MultiprocSettings {
        pid_check: false,
        ..Default::default()
    };
    let d = MultiprocDir::new("e", &[], dir.clone(), settings);
    let head = crate::wire::exposition::render::label_head(&d.own_labels());
    let lines = |e: &super::super::exposed::Exposed| -> Vec<String> {
        let l = &e.layout;
        (0..l.families.len())
            .flat_map(|f| {
                let head = &head;
                (0..l.family_len(f))
                    .map(move |i| format!("{} {}", l.prefix(head, f, i), e.family_values(f)[i]))
            })
            .collect()
    };
    std::fs::write(&file, db(&[(a, 1.0)])).unwrap();
    let e1 = d.collect_exposed();
    assert_eq!(
        lines(&e1),
        [r#"c_total{engine="e",worker_addr="DIR",q="a\"b"} 1"#
            .replace("DIR", &dir.to_string_lossy())]
    );
    std::fs::write(&file, db(&[(a, 2.0)])).unwrap();
    let e2 = d.collect_exposed();
    assert_eq!(e2.values, [2.0], "same series: value refreshed");
    assert_eq!(e1.values, [1.0], "a held scrape keeps its values");
    assert!(
        std::sync::Arc::ptr_eq(&e1.layout, &e2.layout),
        "same series: the rendered layout is kept, not rebuilt"
    );
    // The owned families of a full merge agree and leave the layout in place.
    let (f, _) = d.collect();
    assert_eq!(f[0].samples[0].value, 2.0);
    let e3 = d.collect_exposed();
    assert!(std::sync::Arc::ptr_eq(&e1.layout, &e3.layout));
    std::fs::write(&file, db(&[(a, 3.0), (b, 4.0)])).unwrap();
    let e4 = d.collect_exposed();
    assert_eq!(e4.values, [3.0, 4.0], "a new key is merged");
    assert_eq!(e4.layout.family_len(0), 2);
    std::fs::write(&file, db(&[(b, 5.0)])).unwrap();
    assert_eq!(d.collect_exposed().values, [5.0], "a's series left");
    std::fs::write(&file, db(&[(a, 6.0), (b, 7.0)])).unwrap();
    assert_eq!(d.collect_exposed().values, [6.0, 7.0], "a came back");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        d.collect_exposed().samples(),
        0,
        "a vanished file's series are gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of `files` (name, entries), read by a fresh `MultiprocDir` with `labels`.
fn dir_of(
    tag: &str,
    labels: &[(String, String)],
    files: &[(&str, Vec<u8>)],
) -> (MultiprocDir, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("fpm-plan-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let settings = MultiprocSettings {
        pid_check: false,
        ..Default::default()
    };
    (MultiprocDir::new("e", labels, dir.clone(), settings), dir)
}

/// Every sample line of the scrape's layout and values.
fn text(d: &MultiprocDir) -> Vec<String> {
    let e = d.collect_exposed();
    let head = crate::wire::exposition::render::label_head(&d.own_labels());
    let l = &e.layout;
    let mut out = Vec::new();
    for f in 0..l.families.len() {
        for i in 0..l.family_len(f) {
            out.push(format!(
                "{} {}",
                l.prefix(&head, f, i),
                e.family_values(f)[i]
            ));
        }
    }
    out
}

#[test]
fn compiled_scrapes_equal_full_merges_for_histograms_and_gauges() {
    let h = |le: &str| format!(r#"["h", "h_bucket", {{"le": "{le}", "m": "x"}}, "h"]"#);
    let (b1, b2, binf) = (h("1.0"), h("2.5"), h("+Inf"));
    let sum = r#"["h", "h_sum", {"m": "x"}, "h"]"#;
    let g = r#"["g", "g", {"a": "1", "z": "2"}, "g"]"#;
    let files = |k: f64| {
        vec![
            (
                "histogram_1.db",
                db(&[(&b2, 2.0 * k), (&b1, k), (&binf, 1.0), (sum, 9.5 * k)]),
            ),
            ("histogram_2.db", db(&[(&b1, 3.0), (&binf, k), (sum, 0.25)])),
            ("gauge_all_7.db", db(&[(g, k)])),
            ("gauge_max_8.db", db(&[])),
        ]
    };
    let (d, dir) = dir_of("prog", &[("le".into(), "cfg".into())], &files(1.0));
    let first = text(&d);
    // `le` is the directory's label here, so the samples' one is renamed.
    assert!(
        first.contains(
            &r#"h_bucket{engine="e",le="cfg",worker_addr="DIR",exported_le="1.0",m="x"} 4"#
                .replace("DIR", &dir.to_string_lossy())
        ),
        "{first:#?}"
    );
    for k in [2.0, 3.0, 0.5] {
        for (name, bytes) in files(k) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let runs = d.cache.lock().plan.steady_runs;
        let steady = d.collect_exposed();
        assert_eq!(
            d.cache.lock().plan.steady_runs,
            runs + 1,
            "the compiled program ran"
        );
        let layout = steady.layout.clone();
        let lines = text(&d);
        // A full merge of the same files (the `/v1/engines` path) agrees value for value.
        let (full, _) = d.collect();
        let full: Vec<f64> = full
            .iter()
            .flat_map(|f| f.samples.iter().map(|s| s.value))
            .collect();
        assert_eq!(steady.values, full, "k = {k}");
        assert!(std::sync::Arc::ptr_eq(&layout, &d.collect_exposed().layout));
        assert_eq!(lines.len(), first.len());
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("pid=\"7\",z=\"2\"}} {k}"))),
            "{lines:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mostrecent_gauge_that_gets_a_timestamp_is_a_new_series() {
    let key = r#"["g", "g", {}, "g"]"#;
    let entry = |v: f64, ts: f64| {
        let mut b = db(&[(key, v)]);
        let at = b.len() - 8;
        b[at..].copy_from_slice(&ts.to_ne_bytes());
        b
    };
    let (d, dir) = dir_of("recent", &[], &[("gauge_mostrecent_1.db", entry(5.0, 0.0))]);
    assert!(text(&d).is_empty(), "no timestamp beat 0.0 yet");
    std::fs::write(dir.join("gauge_mostrecent_1.db"), entry(6.0, 10.0)).unwrap();
    assert_eq!(text(&d).len(), 1);
    assert!(text(&d)[0].ends_with(" 6"), "{:?}", text(&d));
    std::fs::write(dir.join("gauge_mostrecent_1.db"), entry(7.0, 0.0)).unwrap();
    assert!(text(&d).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_thread_reads_equal_one_thread_reads_and_new_keys_fall_back() {
    let key = |i: usize| format!(r#"["c", "c_total", {{"n": "{i}"}}, "h"]"#);
    let shared = r#"["s", "s_total", {}, "h"]"#;
    let file = |i: usize, extra: bool| {
        let (k, k2) = (key(i), key(1000 + i));
        let mut e = vec![(shared, 0.1 * i as f64), (k.as_str(), i as f64)];
        if extra {
            e.push((k2.as_str(), 7.0));
        }
        db(&e)
    };
    let names: Vec<String> = (0..40).map(|i| format!("counter_{i}.db")).collect();
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), file(i, false)))
        .collect();
    let (d, dir) = dir_of("scan", &[], &files);
    let first = text(&d);
    assert_eq!(first.len(), 41);
    let runs = d.cache.lock().plan.steady_runs;
    assert_eq!(
        text(&d),
        first,
        "the second scrape reads on two threads, same result"
    );
    assert_eq!(d.cache.lock().plan.steady_runs, runs + 1);
    // A new key in a file of the second half: neither thread knows it.
    std::fs::write(dir.join(&names[35]), file(35, true)).unwrap();
    let third = text(&d);
    assert_eq!(third.len(), 42, "{third:#?}");
    assert_eq!(
        d.cache.lock().scratch.parallel,
        (1, 1),
        "a new key: one thread again"
    );
    assert!(third
        .iter()
        .any(|l| l.contains(r#"n="1035""#) && l.ends_with(" 7")));
    let (full, _) = d.collect();
    let full: Vec<f64> = full
        .iter()
        .flat_map(|f| f.samples.iter().map(|s| s.value))
        .collect();
    assert_eq!(d.collect_exposed().values, full);
    // The shared counter sums 40 files in directory order on either path.
    assert_eq!(d.errors(super::super::Reason::BadKey), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
