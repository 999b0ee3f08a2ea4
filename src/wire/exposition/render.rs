//! Rendering of samples' `name{labels}` in the text exposition format: label escaping,
//! and a source's own labels put in front of a sample's (clashing ones renamed
//! `exported_<name>`, as Prometheus renames clashing target labels). Shared by the
//! sources that cache rendered lines (multiproc directories, remote scrapes) and the
//! `/metrics` writer.

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

/// A sample's labels: `head` (the source's), then its own, renamed `exported_<name>`
/// where they clash with the source's.
pub fn sample_labels(out: &mut String, head: &str, own: &[(&str, &str)], s: &Sample) {
    out.clear();
    out.push_str(head);
    for (k, v) in &s.labels {
        if !out.is_empty() {
            out.push(',');
        }
        if own.iter().any(|(o, _)| o == k) {
            out.push_str("exported_");
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
}
