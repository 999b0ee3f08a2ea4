//! SGLang's `LoadSnapshot` (`sglang/srt/managers/load_snapshot.py`, class
//! `LoadSnapshot`): the msgpack one scheduler writes per dp rank into its
//! `/dev/shm/sglang_loads_*.shm` slot, and the per-rank dict SGLang's `/v1/loads`
//! serves (`LoadSnapshot.to_dict`). See `proto/load-snapshot.md`.
//!
//! Decoded by msgspec's rules, field by field: the map's unknown keys are skipped (a
//! newer SGLang), an int field refuses a float, a bool or nil, a float field takes an
//! int, a section (`array_like`) may carry more elements than this build knows but
//! not fewer than its required ones, and a field left out (`omit_defaults`) takes its
//! default.

use rmpv::Value;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// msgspec `int`.
    Int,
    /// msgspec `float` (an int is accepted and becomes a float).
    Float,
    /// msgspec `str`.
    Str,
}

/// One decoded scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// An integer (msgspec ints span i64 and u64).
    Int(i128),
    /// A float.
    Float(f64),
    /// A string (only `disaggregation.mode`).
    Str(String),
}

impl Scalar {
    /// The value as a number, if it is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::Str(_) => None,
        }
    }
}

/// The core fields of `LoadSnapshot` in its declaration order (`to_dict`'s order),
/// all but `decode_moments`, which follows them.
pub const CORE: [(&str, Kind); 17] = [
    ("timestamp", Kind::Float),
    ("dp_rank", Kind::Int),
    ("num_running_reqs", Kind::Int),
    ("num_waiting_reqs", Kind::Int),
    ("num_waiting_uncached_tokens", Kind::Int),
    ("num_used_tokens", Kind::Int),
    ("num_total_tokens", Kind::Int),
    ("num_active_tokens", Kind::Int),
    ("num_prealloc_ready_tokens", Kind::Int),
    ("max_total_num_tokens", Kind::Int),
    ("max_running_requests", Kind::Int),
    ("token_usage", Kind::Float),
    ("gen_throughput", Kind::Float),
    ("cache_hit_rate", Kind::Float),
    ("utilization", Kind::Float),
    ("total_prefill_uncached_tokens", Kind::Int),
    ("total_prefill_busy_us", Kind::Int),
];

/// Index of a core field in [`CORE`].
pub mod core {
    /// `timestamp`.
    pub const TIMESTAMP: usize = 0;
    /// `dp_rank`.
    pub const DP_RANK: usize = 1;
    /// `num_used_tokens`.
    pub const NUM_USED_TOKENS: usize = 5;
    /// `max_total_num_tokens`.
    pub const MAX_TOTAL_NUM_TOKENS: usize = 9;
    /// `token_usage`.
    pub const TOKEN_USAGE: usize = 11;
}

/// One optional section: its `to_dict` key, its `include` name, its `format=prometheus`
/// prefix, its fields in order and how many of them have no default.
#[derive(Debug)]
pub struct SectionDef {
    /// Key in the snapshot and in `to_dict`.
    pub field: &'static str,
    /// Name in `?include=`.
    pub include: &'static str,
    /// Prefix of its Prometheus names (`sglang_<prefix>_<field>`).
    pub prefix: &'static str,
    /// Fields in declaration order.
    pub fields: &'static [(&'static str, Kind)],
    /// Fields without a default: an array shorter than this is refused.
    pub required: usize,
}

/// The sections in `to_dict`'s order (`MemoryMetrics`, `SpeculativeMetrics`,
/// `LoRAMetrics`, `DisaggregationMetrics`, `QueueMetrics`).
pub const SECTIONS: [SectionDef; 5] = [
    SectionDef {
        field: "memory",
        include: "memory",
        prefix: "memory",
        fields: &[
            ("weight_gb", Kind::Float),
            ("kv_cache_gb", Kind::Float),
            ("graph_gb", Kind::Float),
            ("token_capacity", Kind::Int),
        ],
        required: 4,
    },
    SectionDef {
        field: "speculative",
        include: "spec",
        prefix: "spec",
        fields: &[("accept_length", Kind::Float), ("accept_rate", Kind::Float)],
        required: 2,
    },
    SectionDef {
        field: "lora",
        include: "lora",
        prefix: "lora",
        fields: &[
            ("slots_used", Kind::Int),
            ("slots_total", Kind::Int),
            ("utilization", Kind::Float),
        ],
        required: 3,
    },
    SectionDef {
        field: "disaggregation",
        include: "disagg",
        prefix: "disagg",
        fields: &[
            ("mode", Kind::Str),
            ("prefill_bootstrap_queue_reqs", Kind::Int),
            ("prefill_inflight_queue_reqs", Kind::Int),
            ("decode_prealloc_queue_reqs", Kind::Int),
            ("decode_transfer_queue_reqs", Kind::Int),
            ("decode_retracted_queue_reqs", Kind::Int),
            ("kv_transfer_speed_gb_s", Kind::Float),
            ("kv_transfer_latency_ms", Kind::Float),
        ],
        required: 1,
    },
    SectionDef {
        field: "queues",
        include: "queues",
        prefix: "queues",
        fields: &[
            ("waiting", Kind::Int),
            ("grammar", Kind::Int),
            ("paused", Kind::Int),
            ("retracted", Kind::Int),
            ("prealloc_ready", Kind::Int),
        ],
        required: 5,
    },
];

/// One dp rank's snapshot, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSnapshot {
    /// The core fields, in [`CORE`]'s order.
    pub core: [Scalar; 17],
    /// `decode_moments`: decode step-time moment sums, or null.
    pub decode_moments: Option<Vec<f64>>,
    /// The sections in [`SECTIONS`]' order, each with every field of its definition.
    pub sections: [Option<Vec<Scalar>>; 5],
}

impl LoadSnapshot {
    /// A core field as a number.
    pub fn number(&self, i: usize) -> f64 {
        self.core[i].number().unwrap_or(0.0)
    }
    /// The writer's `time.time()` at this write (0 for the writer's placeholder).
    pub fn timestamp(&self) -> f64 {
        self.number(core::TIMESTAMP)
    }
}

/// Why a payload is not a `LoadSnapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotDecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SnapshotDecodeError> {
    Err(SnapshotDecodeError(msg.into()))
}

/// Decodes one slot's payload as msgspec's `Decoder(LoadSnapshot)` would.
pub fn decode(payload: &[u8]) -> Result<LoadSnapshot, SnapshotDecodeError> {
    let mut rd = payload;
    // Depth 8: a snapshot nests two levels; deeper input is garbage, not recursion.
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, 8)
        .map_err(|e| SnapshotDecodeError(format!("not msgpack: {e}")))?;
    if !rd.is_empty() {
        return err(format!("{} bytes after the snapshot", rd.len()));
    }
    let Value::Map(entries) = value else {
        return err("a snapshot is a msgpack map");
    };
    let mut snap = LoadSnapshot {
        core: CORE.map(|(_, kind)| match kind {
            Kind::Int => Scalar::Int(0),
            _ => Scalar::Float(0.0),
        }),
        decode_moments: None,
        sections: Default::default(),
    };
    for (k, v) in entries {
        let Value::String(key) = k else {
            return err("a snapshot's keys are strings");
        };
        let Some(key) = key.as_str() else {
            return err("a key is not UTF-8");
        };
        if let Some(i) = CORE.iter().position(|(name, _)| *name == key) {
            snap.core[i] = scalar(&v, CORE[i].1).map_err(|m| at(key, m))?;
        } else if key == "decode_moments" {
            snap.decode_moments = moments(&v).map_err(|m| at(key, m))?;
        } else if let Some(i) = SECTIONS.iter().position(|s| s.field == key) {
            snap.sections[i] = section(&v, &SECTIONS[i]).map_err(|m| at(key, m))?;
        }
    }
    Ok(snap)
}

fn at(key: &str, e: SnapshotDecodeError) -> SnapshotDecodeError {
    SnapshotDecodeError(format!("{key}: {}", e.0))
}

fn scalar(v: &Value, kind: Kind) -> Result<Scalar, SnapshotDecodeError> {
    match (kind, v) {
        (Kind::Int | Kind::Float, Value::Integer(i)) => {
            let n = match (i.as_i64(), i.as_u64()) {
                (Some(n), _) => i128::from(n),
                (None, Some(n)) => i128::from(n),
                _ => return err("integer out of range"),
            };
            Ok(match kind {
                Kind::Int => Scalar::Int(n),
                _ => Scalar::Float(n as f64),
            })
        }
        (Kind::Float, Value::F32(f)) => Ok(Scalar::Float(f64::from(*f))),
        (Kind::Float, Value::F64(f)) => Ok(Scalar::Float(*f)),
        (Kind::Str, Value::String(s)) => match s.as_str() {
            Some(s) => Ok(Scalar::Str(s.to_owned())),
            None => err("a string is not UTF-8"),
        },
        (kind, v) => err(format!("expected {kind:?}, got {v}")),
    }
}

fn moments(v: &Value) -> Result<Option<Vec<f64>>, SnapshotDecodeError> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|x| match scalar(x, Kind::Float)? {
                Scalar::Float(f) => Ok(f),
                _ => err("expected a float"),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => err("expected an array of floats or nil"),
    }
}

fn section(v: &Value, def: &SectionDef) -> Result<Option<Vec<Scalar>>, SnapshotDecodeError> {
    let items = match v {
        Value::Nil => return Ok(None),
        Value::Array(items) => items,
        _ => return err("a section is an array (msgspec array_like) or nil"),
    };
    if items.len() < def.required {
        return err(format!(
            "{} elements, at least {} expected",
            items.len(),
            def.required
        ));
    }
    def.fields
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| match items.get(i) {
            Some(x) => scalar(x, *kind).map_err(|e| at(name, e)),
            None => Ok(match kind {
                Kind::Int => Scalar::Int(0),
                Kind::Float => Scalar::Float(0.0),
                Kind::Str => Scalar::Str(String::new()),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Which sections `?include=` asks for, by `LoadSnapshot.to_dict`'s rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Include {
    /// Per [`SECTIONS`] entry, whether it is included (when present).
    pub sections: [bool; 5],
}

impl Include {
    /// Every section (no `include`, or one naming `all`).
    pub const ALL: Include = Include {
        sections: [true; 5],
    };

    /// Parses `?include=` as SGLang's `/v1/loads` does: comma-separated, each name
    /// stripped; empty or absent means all; a list naming `all` is all whatever else
    /// it names (the check comes after); any other unknown name is an error naming it.
    pub fn parse(include: Option<&str>) -> Result<Include, String> {
        let Some(raw) = include.filter(|s| !s.is_empty()) else {
            return Ok(Include::ALL);
        };
        let names: Vec<&str> = raw.split(',').map(|s| s.trim()).collect();
        if names.contains(&"all") {
            return Ok(Include::ALL);
        }
        let valid = |n: &str| n == "core" || SECTIONS.iter().any(|s| s.include == n);
        let mut bad: Vec<&str> = names.iter().copied().filter(|n| !valid(n)).collect();
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup();
            return Err(format!(
                "Invalid include sections: {bad:?}. Valid options: [\"all\", \"core\", \"disagg\", \"lora\", \"memory\", \"queues\", \"spec\"]"
            ));
        }
        Ok(Include {
            sections: SECTIONS.map(|s| names.contains(&s.include)),
        })
    }
}

/// `LoadSnapshot.to_dict(include)` as JSON: every core field, then each section that
/// is present and included, as an object. Non-finite floats (which SGLang's own
/// endpoint cannot encode) are written as null.
pub struct Entry<'a> {
    /// The snapshot.
    pub snapshot: &'a LoadSnapshot,
    /// The sections asked for.
    pub include: Include,
}

struct Num<'a>(&'a Scalar);

impl Serialize for Num<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Int(i) => match i64::try_from(*i) {
                Ok(n) => s.serialize_i64(n),
                Err(_) => s.serialize_u64(*i as u64),
            },
            Scalar::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Scalar::Float(_) => s.serialize_none(),
            Scalar::Str(v) => s.serialize_str(v),
        }
    }
}

struct SectionJson<'a>(&'a SectionDef, &'a [Scalar]);

impl Serialize for SectionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.1.len()))?;
        for ((name, _), v) in self.0.fields.iter().zip(self.1) {
            m.serialize_entry(name, &Num(v))?;
        }
        m.end()
    }
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let snap = self.snapshot;
        let mut m = s.serialize_map(None)?;
        for ((name, _), v) in CORE.iter().zip(&snap.core) {
            m.serialize_entry(name, &Num(v))?;
        }
        let moments = snap.decode_moments.as_ref().map(|v| {
            v.iter()
                .map(|f| f.is_finite().then_some(*f))
                .collect::<Vec<_>>()
        });
        m.serialize_entry("decode_moments", &moments)?;
        for (i, def) in SECTIONS.iter().enumerate() {
            if let (Some(values), true) = (&snap.sections[i], self.include.sections[i]) {
                m.serialize_entry(def.field, &SectionJson(def, values))?;
            }
        }
        m.end()
    }
}

impl LoadSnapshot {
    /// The numeric items of `to_dict(include)` but `dp_rank`, named as SGLang's
    /// `format=prometheus` names them (`sglang_<field>`, `sglang_<prefix>_<field>`), in
    /// its order; strings and `decode_moments` are not numbers and are left out.
    pub fn prometheus_items(&self, include: Include) -> Vec<(String, &Scalar)> {
        let mut out = Vec::with_capacity(40);
        for (i, (name, _)) in CORE.iter().enumerate() {
            if i != core::DP_RANK {
                out.push((format!("sglang_{name}"), &self.core[i]));
            }
        }
        for (i, def) in SECTIONS.iter().enumerate() {
            if let (Some(values), true) = (&self.sections[i], include.sections[i]) {
                for ((name, _), v) in def.fields.iter().zip(values) {
                    if v.number().is_some() {
                        out.push((format!("sglang_{}_{name}", def.prefix), v));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "load_snapshot_tests.rs"]
mod tests;
