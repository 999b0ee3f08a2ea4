//! The lexical pieces of the exposition parser: tokens, label sets, values and
//! escapes, each following Prometheus' text parser (and OpenMetrics where it differs).

/// The text up to the next blank, and what follows it.
pub(super) fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// Parses `k="v",...}` from byte `i` of `line`; returns the index after `}`.
pub(super) fn parse_labels(
    line: &str,
    mut i: usize,
    out: &mut Vec<(String, String)>,
) -> Result<usize, &'static str> {
    let b = line.as_bytes();
    let skip = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip(&mut i);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let name = &line[start..i];
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err("invalid label name");
        }
        skip(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err("expected = after a label name");
        }
        i += 1;
        skip(&mut i);
        if b.get(i) != Some(&b'"') {
            return Err("expected a quoted label value");
        }
        i += 1;
        let mut value = String::new();
        let mut run = i;
        loop {
            match b.get(i) {
                None => return Err("unterminated label value"),
                Some(b'"') => break,
                Some(b'\\') => {
                    let unescaped = match b.get(i + 1) {
                        Some(b'\\') => '\\',
                        Some(b'"') => '"',
                        Some(b'n') => '\n',
                        None => return Err("unterminated label value"),
                        // Prometheus' lexer takes a backslash before any other
                        // character and keeps both (`C:\temp` is `C:\temp`).
                        Some(_) => {
                            i += 1;
                            continue;
                        }
                    };
                    value.push_str(&line[run..i]);
                    value.push(unescaped);
                    i += 2;
                    run = i;
                }
                Some(_) => i += 1,
            }
        }
        value.push_str(&line[run..i]);
        i += 1;
        if name == "__name__" {
            return Err("invalid label name");
        }
        if out.iter().any(|(k, _)| k == name) {
            return Err("duplicate label name");
        }
        out.push((name.to_owned(), value));
        skip(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err("expected , or } after a label"),
        }
    }
}

/// A value as Go's `strconv.ParseFloat` reads it (which Prometheus uses).
pub(super) fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    let first = *s.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return None;
    }
    s.parse().ok()
}

/// HELP text unescaped: `\\` and `\n` (OpenMetrics also `\"`); any other backslash
/// stays as written, as Prometheus keeps it in either format.
pub(super) fn unescape(s: &str, om: bool) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if om => out.push('"'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}
