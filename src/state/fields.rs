//! The numeric fields of a frame that get rolling statistics, in one fixed order.

use crate::wire::ForwardPassMetrics;

/// How many numeric fields each iteration contributes to the statistics.
pub const FIELD_COUNT: usize = 14;

/// Index of `wall_time` in [`FIELDS`].
pub const WALL_TIME: usize = 0;

/// One statistic-bearing field: its wire path and its group in the wire's nesting.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The wire path, e.g. `scheduled_requests.sum_prefill_tokens` (the `field` label value).
    pub path: &'static str,
    /// `None` for top-level fields, else `scheduled_requests` or `queued_requests`.
    pub group: Option<&'static str>,
    /// The field's own name within its group.
    pub name: &'static str,
}

const fn top(name: &'static str) -> Field {
    Field {
        path: name,
        group: None,
        name,
    }
}
const fn sched(path: &'static str, name: &'static str) -> Field {
    Field {
        path,
        group: Some("scheduled_requests"),
        name,
    }
}
const fn queued(path: &'static str, name: &'static str) -> Field {
    Field {
        path,
        group: Some("queued_requests"),
        name,
    }
}

/// Every statistic-bearing field, in the order of [`values`].
pub const FIELDS: [Field; FIELD_COUNT] = [
    top("wall_time"),
    sched(
        "scheduled_requests.num_prefill_requests",
        "num_prefill_requests",
    ),
    sched(
        "scheduled_requests.sum_prefill_tokens",
        "sum_prefill_tokens",
    ),
    sched(
        "scheduled_requests.var_prefill_length",
        "var_prefill_length",
    ),
    sched(
        "scheduled_requests.sum_prefill_kv_tokens",
        "sum_prefill_kv_tokens",
    ),
    sched(
        "scheduled_requests.num_decode_requests",
        "num_decode_requests",
    ),
    sched(
        "scheduled_requests.sum_decode_kv_tokens",
        "sum_decode_kv_tokens",
    ),
    sched(
        "scheduled_requests.var_decode_kv_tokens",
        "var_decode_kv_tokens",
    ),
    queued(
        "queued_requests.num_prefill_requests",
        "num_prefill_requests",
    ),
    queued("queued_requests.sum_prefill_tokens", "sum_prefill_tokens"),
    queued("queued_requests.var_prefill_length", "var_prefill_length"),
    queued("queued_requests.num_decode_requests", "num_decode_requests"),
    queued(
        "queued_requests.sum_decode_kv_tokens",
        "sum_decode_kv_tokens",
    ),
    queued(
        "queued_requests.var_decode_kv_tokens",
        "var_decode_kv_tokens",
    ),
];

/// The frame's numeric values in [`FIELDS`] order.
pub fn values(m: &ForwardPassMetrics) -> [f64; FIELD_COUNT] {
    let s = &m.scheduled_requests;
    let q = &m.queued_requests;
    [
        m.wall_time.0,
        s.num_prefill_requests.0 as f64,
        s.sum_prefill_tokens.0 as f64,
        s.var_prefill_length.0,
        s.sum_prefill_kv_tokens.0 as f64,
        s.num_decode_requests.0 as f64,
        s.sum_decode_kv_tokens.0 as f64,
        s.var_decode_kv_tokens.0,
        q.num_prefill_requests.0 as f64,
        q.sum_prefill_tokens.0 as f64,
        q.var_prefill_length.0,
        q.num_decode_requests.0 as f64,
        q.sum_decode_kv_tokens.0 as f64,
        q.var_decode_kv_tokens.0,
    ]
}
