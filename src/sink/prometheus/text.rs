//! The exposition writer: Prometheus text format 0.0.4 (the default) and OpenMetrics
//! 1.0 (when the scraper asks for it), written straight into one buffer.
//!
//! Why not a client library: the exporter renders ~150 series per rank from a
//! snapshot at scrape time, for up to thousands of ranks, in both formats;
//! `prometheus-client` writes OpenMetrics only and the `prometheus` crate the classic
//! format only, both through per-series allocations. This writer keeps the rules that
//! matter (grouped families, HELP/TYPE, label escaping, `_total` handling, `# EOF`)
//! in one small file that the tests lint with `promtool`.

use std::fmt::Write;

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the format from an HTTP `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        super::accept::negotiate(accept)
    }

    /// The response's Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A monotonically increasing total; its name ends in `_total`.
    Counter,
    /// Quantile samples plus `_sum` and `_count`.
    Summary,
}

/// One metric family: name (counters with `_total`), type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Full sample name (counters end in `_total`).
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Help text: what it measures, in which unit.
    pub help: &'static str,
}

impl Family {
    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Gauge,
            help,
        }
    }
    /// A counter family (`name` must end in `_total`).
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Counter,
            help,
        }
    }
    /// A summary family; samples are written with [`Writer::sample_suffixed`].
    pub const fn summary(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Summary,
            help,
        }
    }
}

pub use crate::wire::exposition::render::{escape_label_value, push_label};

/// Receives the exposition piece by piece when rendering is streamed.
pub type ChunkSink = Box<dyn FnMut(String) + Send>;

/// Gives a streaming writer its next empty buffer (a recycled one, say).
pub type BufferSource = Box<dyn FnMut() -> String + Send>;

/// Writes families and samples into one buffer, or, when streaming, hands the buffer
/// to a [`ChunkSink`] each time it reaches the chunk size.
pub struct Writer {
    out: String,
    format: Format,
    chunk: usize,
    sink: Option<ChunkSink>,
    fresh: Option<BufferSource>,
}

impl Writer {
    /// A writer with a capacity hint.
    pub fn new(format: Format, capacity: usize) -> Self {
        Writer {
            out: String::with_capacity(capacity),
            format,
            chunk: usize::MAX,
            sink: None,
            fresh: None,
        }
    }

    /// A writer that passes pieces of about `chunk` bytes to `sink` as it goes, so a
    /// large exposition never sits in memory whole; [`Writer::finish`] returns the rest.
    pub fn streaming(format: Format, chunk: usize, sink: ChunkSink) -> Self {
        Writer {
            out: String::with_capacity(chunk + 4096),
            format,
            chunk,
            sink: Some(sink),
            fresh: None,
        }
    }

    /// The same writer taking each next buffer from `fresh` instead of allocating it,
    /// so the pages of a multi-MB exposition are not faulted in again every scrape.
    pub fn with_buffers(mut self, mut fresh: BufferSource) -> Self {
        self.out = fresh();
        self.fresh = Some(fresh);
        self
    }

    #[inline]
    fn maybe_flush(&mut self) {
        if self.out.len() >= self.chunk {
            if let Some(sink) = self.sink.as_mut() {
                let next = match self.fresh.as_mut() {
                    Some(fresh) => fresh(),
                    None => String::with_capacity(self.chunk + 4096),
                };
                sink(std::mem::replace(&mut self.out, next));
            }
        }
    }

    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, f: &Family) {
        let name = match (self.format, f.kind) {
            (Format::OpenMetrics, Kind::Counter) => f.name.strip_suffix("_total").unwrap_or(f.name),
            _ => f.name,
        };
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Summary => "summary",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", f.help);
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Starts a family known only at run time (re-exposed engine metrics): `help` is
    /// escaped as the format requires.
    pub fn family_dynamic(&mut self, name: &str, kind: &str, help: &str) {
        let out = &mut self.out;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '"' if self.format == Format::OpenMetrics => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
    }

    /// Writes one sample line with a run-time name and rendered, escaped labels.
    pub fn sample_dynamic(&mut self, name: &str, labels: &str, value: f64) {
        let out = &mut self.out;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            out.push_str(labels);
            out.push('}');
        }
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.maybe_flush();
    }

    /// Writes one sample from its pre-rendered `name{labels}` and its value.
    pub fn sample_prerendered(&mut self, prefix: &str, value: f64) {
        let out = &mut self.out;
        out.push_str(prefix);
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.maybe_flush();
    }

    /// Writes one sample whose `name{labels}` `prefix` appends, and its value.
    #[inline]
    pub fn sample_with(&mut self, prefix: impl FnOnce(&mut String), value: f64) {
        let out = &mut self.out;
        prefix(out);
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.maybe_flush();
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes one sample of family `f`: pre-rendered `labels`, extra label pairs, value.
    #[inline]
    pub fn sample(&mut self, f: &Family, labels: &str, extra: &[(&str, &str)], value: f64) {
        self.sample_suffixed(f, "", labels, extra, value);
    }

    /// Writes one sample whose name is the family's plus `suffix` (`_sum`, `_count`).
    #[inline]
    pub fn sample_suffixed(
        &mut self,
        f: &Family,
        suffix: &str,
        labels: &str,
        extra: &[(&str, &str)],
        value: f64,
    ) {
        let out = &mut self.out;
        out.push_str(f.name);
        out.push_str(suffix);
        if !labels.is_empty() || !extra.is_empty() {
            out.push('{');
            out.push_str(labels);
            let mut first = labels.is_empty();
            for (k, v) in extra {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(k);
                out.push_str("=\"");
                escape_label_value(out, v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.maybe_flush();
    }

    /// Writes one sample whose extra labels are already rendered and escaped
    /// (`k="v",...`): for label sets repeated on every rank, escaping them once per
    /// scrape instead of once per sample.
    #[inline]
    pub fn sample_rendered(&mut self, f: &Family, labels: &str, extra: &str, value: f64) {
        let out = &mut self.out;
        out.push_str(f.name);
        if !labels.is_empty() || !extra.is_empty() {
            out.push('{');
            out.push_str(labels);
            if !labels.is_empty() && !extra.is_empty() {
                out.push(',');
            }
            out.push_str(extra);
            out.push('}');
        }
        out.push(' ');
        push_value(out, value);
        out.push('\n');
        self.maybe_flush();
    }

    /// Finishes the exposition and returns it.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Formats a sample value: integers exactly, floats shortest round-trip, special values
/// as the formats spell them.
#[inline]
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(ryu::Buffer::new().format_finite(v));
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
