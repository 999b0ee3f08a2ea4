//! PromQL as text: the metric names an expression reads, and Grafana's variable
//! substitution.

use super::RATE_INTERVAL;
use std::collections::{BTreeMap, BTreeSet};

/// Aggregation operators: calls even when `by (...)` or `without (...)` comes first.
const AGGREGATORS: [&str; 12] = [
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];
const KEYWORDS: [&str; 10] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
];

/// Metric names an expression reads: identifiers outside strings, label matchers and
/// range brackets that are neither functions, keywords, nor labels in a grouping clause.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // label_values(selector, label): only the selector names a metric.
    let expr = match expr.strip_prefix("label_values(") {
        Some(rest) => rest.rsplit_once(',').map(|(sel, _)| sel).unwrap_or(rest),
        None => expr,
    };
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '{' || ch == '[' {
            let close = if ch == '{' { '}' } else { ']' };
            while i < c.len() && c[i] != close {
                if c[i] == '"' {
                    i += 1;
                    while i < c.len() && c[i] != '"' {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let call = c.get(j) == Some(&'(');
            if KEYWORDS.contains(&word.as_str()) {
                // by (...), on (...) and the like list labels, not metrics.
                if call && !matches!(word.as_str(), "and" | "or" | "unless" | "bool") {
                    while i < c.len() && c[i] != ')' {
                        i += 1;
                    }
                }
            } else if !call && !AGGREGATORS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Grafana's rendering of a multi-value variable for Prometheus: `(a|b)`, regex-escaped.
pub fn regex_of(values: &[String]) -> String {
    let esc = |v: &String| {
        v.chars()
            .flat_map(|ch| {
                let special = "\\.+*?()|[]{}^$".contains(ch);
                special
                    .then_some('\\')
                    .into_iter()
                    .chain(std::iter::once(ch))
            })
            .collect::<String>()
    };
    format!("({})", values.iter().map(esc).collect::<Vec<_>>().join("|"))
}

pub fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut e = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "2s");
    // Longest names first, so $dp_rank is not read as $dp.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        e = e
            .replace(&format!("${{{n}}}"), &vars[n])
            .replace(&format!("${n}"), &vars[n]);
    }
    assert!(!e.contains('$'), "unsubstituted variable in {e}");
    e
}
