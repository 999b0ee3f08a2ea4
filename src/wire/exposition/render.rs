//! Rendering of samples' `name{labels}` in the text exposition format: label escaping,
//! and a source's own labels put in front of a sample's (clashing ones renamed
//! `exported_<name>`, prefixed until free, as Prometheus renames clashing target
//! labels). Shared by the sources that cache rendered lines (multiproc directories,
//! remote scrapes) and the `/metrics` writer.

use super::{MetricFamily, Rendered, Sample};

/// Appends `value` escaped as a label value (backslash, double quote, newline).
pub fn escape_label_value(out: &mut String, value: &str) {
    // Nearly every value needs no escaping: copy it whole instead of char by char.
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` (with a leading comma unless `out` is empty).
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(out, value);
    out.push('"');
}

/// Each sample's `name{labels}` with `own` labels in front, per family.
pub fn render(own: &[(&str, &str)], families: &[MetricFamily]) -> Vec<Rendered> {
    let head = label_head(own);
    let mut labels = String::new();
    families
        .iter()
        .map(|f| {
            let mut r = Rendered {
                text: String::new(),
                ends: Vec::with_capacity(f.samples.len()),
            };
            for s in &f.samples {
                sample_labels(&mut labels, &head, own, s);
                r.text.push_str(&s.name);
                if !labels.is_empty() {
                    r.text.push('{');
                    r.text.push_str(&labels);
                    r.text.push('}');
                }
                r.ends.push(r.text.len() as u32);
            }
            r.text.shrink_to_fit();
            r
        })
        .collect()
}

/// The source's labels rendered once, `k="v",...`.
pub fn label_head(own: &[(&str, &str)]) -> String {
    let mut l = String::new();
    for (k, v) in own {
        push_label(&mut l, k, v);
    }
    l
}

/// A sample's labels: `head` (the source's), then its own; one that clashes with a
/// source label is renamed as Prometheus renames it ([`exported_names`]).
pub fn sample_labels(out: &mut String, head: &str, own: &[(&str, &str)], s: &Sample) {
    out.clear();
    out.push_str(head);
    let clash = s
        .labels
        .iter()
        .any(|(k, _)| own.iter().any(|(o, _)| o == k));
    let renamed = if clash {
        exported_names(own, &s.labels)
    } else {
        Vec::new()
    };
    for (i, (k, v)) in s.labels.iter().enumerate() {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(renamed.get(i).map_or(k.as_str(), String::as_str));
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
}

/// The name each of `labels` takes beside the source's labels `own`, as Prometheus
/// resolves clashing target labels (`honor_labels: false`): a label named like a
/// source label gets `exported_` in front, again and again until the name is neither
/// a sample label, nor a source label, nor taken by an earlier renamed one; shorter
/// names are renamed first. So a sample carrying `worker_addr` and
/// `exported_worker_addr` keeps both, as `exported_exported_worker_addr` and
/// `exported_worker_addr`, instead of writing one label name twice (which makes
/// Prometheus fail the whole scrape: "label name is not unique").
pub fn exported_names(own: &[(&str, &str)], labels: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = labels.iter().map(|(k, _)| k.clone()).collect();
    let mut clashing: Vec<usize> = (0..labels.len())
        .filter(|&i| own.iter().any(|(o, _)| *o == labels[i].0))
        .collect();
    clashing.sort_by_key(|&i| labels[i].0.len());
    let mut taken: Vec<usize> = Vec::with_capacity(clashing.len());
    for i in clashing {
        let mut name = labels[i].0.clone();
        loop {
            name.insert_str(0, "exported_");
            let used = labels.iter().any(|(k, _)| *k == name)
                || own.iter().any(|(o, _)| *o == name)
                || taken.iter().any(|&t| names[t] == name);
            if !used {
                break;
            }
        }
        names[i] = name;
        taken.push(i);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_of(own: &[(&str, &str)], sample: &[(&str, &str)]) -> String {
        let s = Sample {
            name: "m".into(),
            labels: sample
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value: 1.0,
        };
        let mut out = String::new();
        sample_labels(&mut out, &label_head(own), own, &s);
        out
    }

    #[test]
    fn clashing_labels_are_prefixed_until_the_name_is_free_as_prometheus_does() {
        let own = [("engine", "e"), ("worker_addr", "w")];
        // A worker that is itself a fan-in: its samples carry both names already.
        assert_eq!(
            labels_of(
                &own,
                &[
                    ("worker_addr", "a"),
                    ("exported_worker_addr", "b"),
                    ("x", "1")
                ]
            ),
            r#"engine="e",worker_addr="w",exported_exported_worker_addr="a",exported_worker_addr="b",x="1""#
        );
        // Another exporter's /engine_metrics scraped: every added label clashes.
        assert_eq!(
            labels_of(
                &own,
                &[
                    ("engine", "e0"),
                    ("worker_addr", "w0"),
                    ("exported_engine", "e1"),
                    ("exported_worker_addr", "w1"),
                ]
            ),
            r#"engine="e",worker_addr="w",exported_exported_engine="e0",exported_exported_worker_addr="w0",exported_engine="e1",exported_worker_addr="w1""#
        );
        // Prometheus resolves shorter names first: `engine` takes `exported_engine`
        // before `exported_engine` (also a source label here) is considered.
        let own = [("engine", "e"), ("exported_engine", "x")];
        assert_eq!(
            labels_of(&own, &[("exported_engine", "b"), ("engine", "a")]),
            r#"engine="e",exported_engine="x",exported_exported_exported_engine="b",exported_exported_engine="a""#
        );
        assert_eq!(
            labels_of(&own, &[("y", "1")]),
            r#"engine="e",exported_engine="x",y="1""#
        );
    }
}
