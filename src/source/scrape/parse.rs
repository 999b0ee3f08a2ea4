//! A parser of the Prometheus text format 0.0.4 and OpenMetrics 1.0 text into
//! [`MetricFamily`]s, as strict as Prometheus' own scrape (a syntax error fails the
//! whole scrape, as `textparse` does) and as lenient (families that
//! `promtool check metrics` lints, samples that fit no declared family, missing HELP,
//! families split across the document all pass).
//!
//! Why our own: `prometheus-parse` 0.2.5 matches names with `\w+`, so it drops every
//! `sglang:` and `vllm:` sample (colons), cuts label values at the first `}`, and
//! knows no OpenMetrics; `openmetrics-parser` 0.5.1 is LGPL-3.0 (this project is
//! Apache-2.0 and links statically) and fails a whole document on family checks
//! Prometheus does not make. This one is a single pass over bytes with no regex and
//! no per-line allocation beyond the samples kept.
//!
//! Not kept: sample timestamps and exemplars (the fan-in re-exposes at its own scrape
//! time), `# UNIT`. OpenMetrics `info` families become gauges named `<name>_info` and
//! `stateset` families gauges, as `prometheus_client` writes them in text 0.0.4;
//! `gaugehistogram` becomes untyped; `_created` samples become a gauge family
//! `<name>_created`, again as `prometheus_client`'s text output has them (OpenMetrics
//! output leaves such families out: there they would clash with `<name>`).

use super::lexical::{parse_labels, parse_value, split_token, unescape};
use crate::wire::exposition::{valid_metric_name, FamilyType};
use crate::wire::exposition::{MetricFamily, Sample};
use std::collections::{HashMap, HashSet};

/// Why a document was rejected (the whole scrape fails, as in Prometheus).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    /// 1-based line of the fault.
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// A parsed document: its families in first-seen order, and the samples dropped
/// because an earlier one had the same name and labels (Prometheus drops those too,
/// counting them in `prometheus_target_scrapes_sample_duplicate_timestamp_total`).
#[derive(Debug, Default)]
pub struct Parsed {
    /// The families.
    pub families: Vec<MetricFamily>,
    /// Samples left out as duplicates of an earlier series.
    pub duplicates: u64,
    /// Samples kept.
    pub samples: u64,
}

/// Parses `text` as OpenMetrics 1.0 when `openmetrics`, else as text 0.0.4.
pub fn parse(text: &str, openmetrics: bool) -> Result<Parsed, ParseError> {
    let mut p = Parser {
        om: openmetrics,
        out: Parsed::default(),
        by_name: HashMap::new(),
        seen: HashSet::new(),
        key: String::new(),
        last_decl: None,
    };
    let mut eof = false;
    let lines = text.split('\n').count();
    for (i, line) in text.split('\n').enumerate() {
        let err = |what| ParseError { line: i + 1, what };
        if eof {
            if line.is_empty() && i + 1 == lines {
                break;
            }
            return Err(err("content after # EOF"));
        }
        let line = if openmetrics {
            line
        } else {
            line.strip_suffix('\r').unwrap_or(line)
        };
        if line.is_empty() {
            if openmetrics && i + 1 != lines {
                return Err(err("blank line (OpenMetrics forbids them)"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            if openmetrics && rest == " EOF" {
                eof = true;
                continue;
            }
            p.comment(rest).map_err(err)?;
        } else {
            p.sample(line).map_err(err)?;
        }
    }
    if openmetrics && !eof {
        return Err(ParseError {
            line: lines,
            what: "no # EOF at the end",
        });
    }
    p.out.families.retain(|f| !f.samples.is_empty());
    Ok(p.out)
}

struct Parser {
    om: bool,
    out: Parsed,
    /// Family (and accepted sample) names to family index.
    by_name: HashMap<String, usize>,
    /// `name{labels}` of every kept sample, to drop duplicates.
    seen: HashSet<String>,
    key: String,
    /// The family of the latest `# TYPE` line.
    last_decl: Option<usize>,
}

impl Parser {
    fn comment(&mut self, rest: &str) -> Result<(), &'static str> {
        // Text 0.0.4: `#` then blanks; anything but HELP/TYPE is a comment.
        let body = rest.trim_start_matches([' ', '\t']);
        if self.om && !rest.starts_with(' ') {
            return Err("a comment must start with \"# \"");
        }
        let (kw, tail) = split_token(body);
        match kw {
            "HELP" | "TYPE" | "UNIT" => {}
            _ if self.om => return Err("unknown # line"),
            _ => return Ok(()),
        }
        let (name, tail) = split_token(tail);
        if !valid_metric_name(name) {
            return Err("invalid metric name in # line");
        }
        match kw {
            "HELP" => {
                let help = unescape(tail, self.om);
                let i = self.family_for_decl(name, None);
                self.out.families[i].help = help;
            }
            "TYPE" => {
                let word = tail.trim_end_matches([' ', '\t']);
                let kind = match (word, self.om) {
                    ("counter", _) => Decl::Plain(FamilyType::Counter),
                    ("gauge", _) => Decl::Plain(FamilyType::Gauge),
                    ("histogram", _) => Decl::Plain(FamilyType::Histogram),
                    ("summary", _) => Decl::Plain(FamilyType::Summary),
                    ("untyped", false) | ("unknown", true) => Decl::Plain(FamilyType::Untyped),
                    ("gaugehistogram", true) => Decl::Plain(FamilyType::Untyped),
                    ("info", true) => Decl::Info,
                    ("stateset", true) => Decl::Plain(FamilyType::Gauge),
                    _ => return Err("invalid metric type"),
                };
                self.last_decl = Some(self.family_for_decl(name, Some(kind)));
            }
            _ => {}
        }
        Ok(())
    }

    /// The family a HELP or TYPE line of `name` speaks of, created if new.
    fn family_for_decl(&mut self, name: &str, kind: Option<Decl>) -> usize {
        let (fam, kind) = match kind {
            Some(Decl::Info) => (format!("{name}_info"), Some(FamilyType::Gauge)),
            Some(Decl::Plain(FamilyType::Counter)) if !self.om => (
                name.strip_suffix("_total").unwrap_or(name).to_owned(),
                Some(FamilyType::Counter),
            ),
            Some(Decl::Plain(k)) => (name.to_owned(), Some(k)),
            None => (name.to_owned(), None),
        };
        // A text-format HELP of a counter comes before its TYPE, under `x_total`.
        let lookup = self
            .by_name
            .get(&fam)
            .or_else(|| self.by_name.get(name))
            .copied();
        if let Some(i) = lookup {
            let f = &mut self.out.families[i];
            if let Some(k) = kind {
                if f.samples.is_empty() {
                    f.kind = k;
                    f.name = fam.clone();
                    self.by_name.insert(fam, i);
                }
            }
            return i;
        }
        let i = self.out.families.len();
        self.out.families.push(MetricFamily {
            name: fam.clone(),
            kind: kind.unwrap_or(FamilyType::Untyped),
            help: String::new(),
            samples: Vec::new(),
        });
        self.by_name.insert(name.to_owned(), i);
        self.by_name.insert(fam, i);
        i
    }

    fn sample(&mut self, line: &str) -> Result<(), &'static str> {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
            i += 1;
        }
        let name = &line[..i];
        if !valid_metric_name(name) {
            return Err("invalid metric name");
        }
        let mut labels = Vec::new();
        if b.get(i) == Some(&b'{') {
            i = parse_labels(line, i + 1, &mut labels)?;
        }
        let rest = &line[i..];
        if !rest.starts_with([' ', '\t']) || (self.om && !rest.starts_with(' ')) {
            return Err("expected a blank before the value");
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (value, rest) = split_token(rest);
        let value = parse_value(value).ok_or("invalid value")?;
        let rest = rest.trim_start_matches([' ', '\t']);
        let (ts, rest) = split_token(rest);
        if !ts.is_empty() {
            let ok = if self.om {
                ts != "#" && ts.parse::<f64>().is_ok_and(f64::is_finite)
            } else {
                ts.parse::<i64>().is_ok()
            };
            if self.om && ts == "#" {
                // An exemplar, not kept; its syntax is not checked further.
            } else if !ok {
                return Err("invalid timestamp");
            } else {
                let rest = rest.trim_start_matches([' ', '\t']);
                if !(rest.is_empty() || self.om && rest.starts_with('#')) {
                    return Err("unexpected text after the timestamp");
                }
            }
        }
        let fi = self.family_of(name);
        // One series whatever the order of its labels, and an empty label is no
        // label: Prometheus' identity of a series.
        self.key.clear();
        self.key.push_str(name);
        let mut order: Vec<&(String, String)> =
            labels.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !order.windows(2).all(|w| w[0].0 <= w[1].0) {
            order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        for (k, v) in order {
            self.key.push('\u{0}');
            self.key.push_str(k);
            self.key.push('\u{1}');
            self.key.push_str(v);
        }
        if !self.seen.insert(self.key.clone()) {
            self.out.duplicates += 1;
            return Ok(());
        }
        self.out.samples += 1;
        self.out.families[fi].samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
        Ok(())
    }

    /// The family sample `name` belongs to: the declared family it names, or a new
    /// untyped family of its own.
    fn family_of(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            let f = &self.out.families[i];
            let own = f.name == name && f.kind != FamilyType::Histogram;
            if own || f.kind.allows_sample(&f.name, name) {
                return i;
            }
        }
        for suffix in ["_total", "_bucket", "_count", "_sum", "_created"] {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if let Some(&i) = self.by_name.get(base) {
                let f = &self.out.families[i];
                if suffix != "_created" && f.kind.allows_sample(&f.name, name) {
                    self.by_name.insert(name.to_owned(), i);
                    return i;
                }
            }
        }
        if let Some(i) = self.escaped_family(name) {
            return i;
        }
        // OpenMetrics `X_created`: a gauge with X's help, as prometheus_client's text has it.
        let parent = name
            .strip_suffix("_created")
            .filter(|_| self.om)
            .and_then(|b| self.by_name.get(b))
            .map(|&i| self.out.families[i].help.clone());
        let kind = match parent {
            Some(_) => FamilyType::Gauge,
            None => FamilyType::Untyped,
        };
        let i = self.out.families.len();
        self.out.families.push(MetricFamily {
            name: name.to_owned(),
            kind,
            help: parent.unwrap_or_default(),
            samples: Vec::new(),
        });
        self.by_name.insert(name.to_owned(), i);
        i
    }
}

impl Parser {
    /// The family just declared when `name` is one of its samples with the name
    /// escaped: prometheus_client 0.26 writes OpenMetrics with `# TYPE sglang:x` over
    /// samples `sglang_x` (it escapes sample names with the label-name alphabet). The
    /// family takes the samples' spelling, which is what Prometheus stores.
    fn escaped_family(&mut self, name: &str) -> Option<usize> {
        let d = self.last_decl.filter(|_| self.om)?;
        let f = &self.out.families[d];
        let legal = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if !f.samples.is_empty() || f.name.chars().all(legal) {
            return None;
        }
        let escaped: String = f
            .name
            .chars()
            .map(|c| if legal(c) { c } else { '_' })
            .collect();
        if !f.kind.allows_sample(&escaped, name) || self.by_name.contains_key(&escaped) {
            return None;
        }
        self.out.families[d].name = escaped.clone();
        self.by_name.insert(escaped, d);
        self.by_name.insert(name.to_owned(), d);
        Some(d)
    }
}

#[derive(Clone, Copy)]
enum Decl {
    Plain(FamilyType),
    Info,
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
