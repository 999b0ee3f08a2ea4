//! `Accept` negotiation of `/metrics` (RFC 9110 §12.5.1): each format takes the
//! q-value of the most specific media range that matches it, `q=0` means "not this
//! one", and the higher q wins. Ties go to the more specific match, then to
//! OpenMetrics only if the client named it; with nothing acceptable the classic text
//! format is sent anyway (a scrape answered is better than a 406).

use super::text::Format;

/// One media range of the header, as far as negotiation needs it.
struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: f32,
}

fn parse_range(item: &str) -> Option<Range<'_>> {
    let mut parts = item.split(';').map(str::trim);
    let (kind, subtype) = parts.next()?.split_once('/')?;
    let mut range = Range {
        kind: kind.trim(),
        subtype: subtype.trim(),
        version: None,
        q: 1.0,
    };
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "q" => range.q = parse_q(v)?,
            "version" => range.version = Some(v),
            _ => {}
        }
    }
    Some(range)
}

/// A qvalue: 0 to 1 with at most three decimals; anything else voids its range.
fn parse_q(v: &str) -> Option<f32> {
    let ok = match v.split_once('.') {
        None => v == "0" || v == "1",
        Some((i, d)) => {
            (i == "0" || (i == "1" && d.bytes().all(|b| b == b'0')))
                && d.len() <= 3
                && d.bytes().all(|b| b.is_ascii_digit())
        }
    };
    ok.then(|| v.parse().ok()).flatten()
}

/// How specifically `r` names `format` (0: not at all).
fn specificity(r: &Range, format: Format) -> u8 {
    let (kind, subtype, versions): (&str, &str, &[&str]) = match format {
        Format::Text => ("text", "plain", &["0.0.4"]),
        // 0.0.1 is the draft version Prometheus still offers next to 1.0.0.
        Format::OpenMetrics => ("application", "openmetrics-text", &["1.0.0", "0.0.1"]),
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if r.kind == "*" && r.subtype == "*" {
        1
    } else if eq(r.kind, kind) && r.subtype == "*" {
        2
    } else if eq(r.kind, kind) && eq(r.subtype, subtype) {
        match r.version {
            None => 3,
            Some(v) if versions.contains(&v) => 3,
            Some(_) => 0,
        }
    } else {
        0
    }
}

/// (q, specificity) of `format` under the header's ranges; q 0 when none matches.
fn score(ranges: &[Range], format: Format) -> (f32, u8) {
    ranges.iter().fold((0.0, 0), |best, r| {
        let s = specificity(r, format);
        if s > best.1 || (s == best.1 && s > 0 && r.q > best.0) {
            (r.q, s)
        } else {
            best
        }
    })
}

/// The format to send for an `Accept` header.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let ranges: Vec<Range> = accept.split(',').filter_map(parse_range).collect();
    let (om_q, om_s) = score(&ranges, Format::OpenMetrics);
    let (text_q, text_s) = score(&ranges, Format::Text);
    let openmetrics =
        om_q > 0.0 && (om_q > text_q || (om_q == text_q && om_s == 3 && om_s >= text_s));
    if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Format::{OpenMetrics as Om, Text};

    #[test]
    fn q_values_wildcards_and_versions() {
        let cases: &[(&str, Format)] = &[
            ("", Text),
            ("*/*", Text),
            ("text/plain", Text),
            ("application/openmetrics-text", Om),
            ("application/openmetrics-text;q=0", Text),
            ("application/openmetrics-text; q=0.0, text/plain", Text),
            ("application/openmetrics-text;q=0,*/*", Text),
            ("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.5", Text),
            ("text/plain;q=0.5,application/openmetrics-text;q=0.6", Om),
            ("text/plain;q=0.9,application/openmetrics-text;q=0.6,*/*;q=1", Text),
            ("application/*", Om),
            ("application/*;q=0.5,text/*;q=0.4", Om),
            ("text/plain, application/openmetrics-text", Om),
            ("text/plain, application/*", Text),
            ("application/openmetrics-text;version=2.0.0", Text),
            ("application/openmetrics-text;version=0.0.1", Om),
            ("APPLICATION/OpenMetrics-Text;Q=1", Om),
            ("application/openmetrics-text;q=2", Text),
            ("application/openmetrics-text;q=abc, text/plain;q=0.1", Text),
            ("text/plain;q=0, application/openmetrics-text;q=0", Text),
            // What Prometheus 2.x and 3.x send.
            ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Om),
            ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", Om),
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", Text),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate(Some(header)), *want, "Accept: {header}");
        }
        assert_eq!(negotiate(None), Text);
    }
}
