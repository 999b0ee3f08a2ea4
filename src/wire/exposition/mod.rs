//! Metric families read from outside the exporter, ready to be re-exposed: today the
//! engines' `prometheus_client` multiprocess directories ([`crate::source::multiproc`]); the
//! same model carries samples scraped from remote workers. Labels are ordered pairs
//! so an exposition keeps the order its source gave.

pub mod render;

/// The type of a family, as Prometheus' text format names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// Samples `<name>_total` (the family name has no `_total`).
    Counter,
    /// One sample per label set, named like the family.
    Gauge,
    /// `<name>_bucket{le=...}` (cumulative), `<name>_count`, `<name>_sum`.
    Histogram,
    /// `<name>_count`, `<name>_sum` (and `<name>{quantile=...}` when present).
    Summary,
    /// No `# TYPE` line, `untyped` (text 0.0.4) or `unknown` (OpenMetrics; also the
    /// OpenMetrics-only `gaugehistogram`, which text 0.0.4 cannot express): samples
    /// pass through under their own names.
    Untyped,
}

impl FamilyType {
    /// The word in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
            FamilyType::Summary => "summary",
            FamilyType::Untyped => "untyped",
        }
    }

    /// The word in a `# TYPE` line of `format` (OpenMetrics says `unknown`).
    pub fn word(self, openmetrics: bool) -> &'static str {
        match (self, openmetrics) {
            (FamilyType::Untyped, true) => "unknown",
            _ => self.as_str(),
        }
    }

    /// Whether `sample` is a sample name this family may carry.
    pub fn allows_sample(self, family: &str, sample: &str) -> bool {
        let Some(suffix) = sample.strip_prefix(family) else {
            return false;
        };
        match self {
            FamilyType::Counter => suffix == "_total",
            FamilyType::Gauge => suffix.is_empty(),
            FamilyType::Histogram => matches!(suffix, "_bucket" | "_count" | "_sum"),
            FamilyType::Summary => matches!(suffix, "" | "_count" | "_sum"),
            FamilyType::Untyped => suffix.is_empty(),
        }
    }
}

/// One sample: full name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`<family>_bucket`, `<family>_total`, ...).
    pub name: String,
    /// Label pairs, in exposition order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// One family: name (counters without `_total`), type, help text and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// The family name.
    pub name: String,
    /// Its type.
    pub kind: FamilyType,
    /// Help text, unescaped.
    pub help: String,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// One family's samples as an exposition writes them: `name{labels}` of sample `i`
/// is `text[ends[i - 1]..ends[i]]` (from 0 for the first).
#[derive(Debug, Default)]
pub struct Rendered {
    /// The samples' `name{labels}`, back to back.
    pub text: String,
    /// Where each sample's ends in `text`.
    pub ends: Vec<u32>,
}

impl Rendered {
    /// Sample `i`'s `name{labels}`.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// Whether `name` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed).
pub fn valid_label_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.starts_with("__")
}

/// Formats a float as `prometheus_client`'s `floatToGoString` does (Python's `repr`,
/// switched to an exponent for positive values above 1e6, as Go's formatting would):
/// `le` labels must be spelled exactly as the Python collector spells them.
pub fn go_float_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let s = python_repr(v);
    if v > 0.0 {
        if let Some(dot) = s.find('.') {
            if dot > 6 {
                let m = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
                let m = m.trim_end_matches(['0', '.']);
                return format!("{m}e+{:02}", dot - 1);
            }
        }
    }
    s
}

/// Python's `repr(float)`: the shortest round-trip digits (ryu gives the same digits),
/// positional for decimal exponents from -4 to 16, else `d.ddde+XX`.
fn python_repr(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let mut buf = ryu::Buffer::new();
    let r = buf.format_finite(v.abs());
    let (mant, exp) = match r.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (r, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    // value = 0.DIGITS * 10^decpt
    let decpt = int.len() as i32 - lead as i32 + exp;
    let n = digits.len() as i32;
    let sign = if v < 0.0 { "-" } else { "" };
    if decpt <= -4 || decpt > 16 {
        let rest = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let e = decpt - 1;
        let es = if e < 0 { '-' } else { '+' };
        format!("{sign}{}{rest}e{es}{:02}", &digits[..1], e.abs())
    } else if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (a, b) = digits.split_at(decpt as usize);
        format!("{sign}{a}.{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_like_prometheus_client() {
        // Expected strings from prometheus_client 0.26.0 utils.floatToGoString.
        for (v, s) in [
            (0.005, "0.005"),
            (1.0, "1.0"),
            (10.0, "10.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.0, "123456.0"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (100000000.0, "1e+08"),
            (1e16, "1e+16"),
            (1.2345678901234567e17, "1.2345678901234566e+17"),
            (-2.5, "-2.5"),
            (-1e22, "-1e+22"),
            (0.0, "0.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (0.1 + 0.2, "0.30000000000000004"),
            (2048.0, "2048.0"),
            (1234567890123456.0, "1.234567890123456e+15"),
        ] {
            assert_eq!(go_float_string(v), s, "{v:e}");
        }
    }

    #[test]
    fn names_follow_the_exposition_rules() {
        assert!(valid_metric_name("sglang:time_to_first_token_seconds"));
        assert!(!valid_metric_name("9x") && !valid_metric_name("a-b") && !valid_metric_name(""));
        assert!(valid_label_name("model_name") && !valid_label_name("__x"));
        assert!(!valid_label_name("a:b"));
        assert!(FamilyType::Counter.allows_sample("x", "x_total"));
        assert!(!FamilyType::Counter.allows_sample("x", "x"));
        assert!(FamilyType::Histogram.allows_sample("h", "h_bucket"));
    }
}

/// One read of a worker's metrics (a remote scrape or a multiprocess directory),
/// the unit the engine views diff: families as read, and when they were read.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// When the read completed (wall clock, as the exporter's clock gives it).
    pub at: std::time::SystemTime,
    /// The families read.
    pub families: Vec<MetricFamily>,
}
