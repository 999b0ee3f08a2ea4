//! SGLang's `GET /v1/loads`, exactly (`sglang/srt/entrypoints/v1_loads.py`,
//! `get_loads` and `_format_loads_prometheus`), from the snapshots the exporter read:
//! the same top-level keys, each rank as `LoadSnapshot.to_dict(include)`, and the same
//! `format=prometheus` text byte for byte (Python's `str()` of each value).

use crate::state::load_snapshots::RankSnapshot;
use crate::wire::load_snapshot::{Entry, Include, Scalar};
use serde::Serialize;

/// What SGLang fills from its own process, given per engine in the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentMeta {
    /// `version`: the SGLang version the engine runs (`"unknown"` unless configured).
    pub version: String,
    /// `accelerator`: the device's name, or null.
    pub accelerator: Option<String>,
    /// `num_accelerators`: accelerators behind one dp rank.
    pub num_accelerators: u64,
}

impl Default for DocumentMeta {
    fn default() -> Self {
        DocumentMeta {
            version: "unknown".into(),
            accelerator: None,
            num_accelerators: 1,
        }
    }
}

/// `datetime.now(timezone.utc).isoformat()`: microseconds and `+00:00`.
pub fn iso_now() -> String {
    let s = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    match s.strip_suffix('Z') {
        Some(t) => format!("{t}+00:00"),
        None => s,
    }
}

/// The JSON document: `{timestamp, version, accelerator, num_accelerators, loads}`.
pub fn document(ranks: &[RankSnapshot], include: Include, meta: &DocumentMeta) -> Vec<u8> {
    #[derive(Serialize)]
    struct Doc<'a> {
        timestamp: String,
        version: &'a str,
        accelerator: Option<&'a str>,
        num_accelerators: u64,
        loads: Vec<Entry<'a>>,
    }
    let doc = Doc {
        timestamp: iso_now(),
        version: &meta.version,
        accelerator: meta.accelerator.as_deref(),
        num_accelerators: meta.num_accelerators,
        loads: ranks
            .iter()
            .map(|r| Entry {
                snapshot: &r.snapshot,
                include,
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("JSON of plain data cannot fail")
}

/// `format=prometheus`: one `# TYPE ... gauge` family per numeric item, in the order
/// first seen over the ranks, each sample labelled with the snapshot's `dp_rank`.
pub fn prometheus(ranks: &[RankSnapshot], include: Include) -> String {
    let mut families: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for r in ranks {
        let snap = &r.snapshot;
        let mut dp_rank = String::new();
        py_str(
            &mut dp_rank,
            &snap.core[crate::wire::load_snapshot::core::DP_RANK],
        );
        for (name, value) in snap.prometheus_items(include) {
            let mut v = String::new();
            py_str(&mut v, value);
            match families.iter_mut().find(|(n, _)| *n == name) {
                Some((_, samples)) => samples.push((dp_rank.clone(), v)),
                None => families.push((name, vec![(dp_rank.clone(), v)])),
            }
        }
    }
    let mut out = String::new();
    for (name, samples) in &families {
        out.push_str("# TYPE ");
        out.push_str(name);
        out.push_str(" gauge\n");
        for (dp_rank, v) in samples {
            out.push_str(name);
            out.push_str("{dp_rank=\"");
            out.push_str(dp_rank);
            out.push_str("\"} ");
            out.push_str(v);
            out.push('\n');
        }
    }
    if out.is_empty() {
        // `"\n".join([]) + "\n"`.
        out.push('\n');
    }
    out
}

/// Python's `str()` of an int or a float.
pub fn py_str(out: &mut String, v: &Scalar) {
    match v {
        Scalar::Int(i) => out.push_str(&i.to_string()),
        Scalar::Float(f) => py_float(out, *f),
        Scalar::Str(s) => out.push_str(s),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for
/// decimal exponents from -4 to 15 (always with a fractional part), else scientific
/// with a signed exponent of at least two digits; `inf`, `-inf`, `nan`.
pub fn py_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            for _ in 0..(exp + 1 - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn floats_print_as_python_repr() {
        // Each pair checked against CPython 3.11's repr().
        for (f, py) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (123456789.0, "123456789.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (1783012345.678901, "1783012345.678901"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-7, "-2.5e-07"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
        ] {
            let mut s = String::new();
            py_float(&mut s, f);
            assert_eq!(s, py, "{f:e}");
        }
    }
}
