//! Where every typed number comes from: per field, the metric SGLang 0.5.23
//! (`sglang/srt/observability/metrics_collector.py` in its wheel) and vLLM 0.33.0
//! (`vllm/v1/metrics/loggers.py` in its wheel) export for it, and how it is derived.
//! SGLang names are written with `sglang:`; the `sglang_` spelling (gRPC-mode
//! gateways) is looked up too. A field with no metric for an engine is `null` there.

/// How a field is computed from its metric(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Latest gauge value, summed over data-parallel groups.
    GaugeSum,
    /// Latest gauge value, averaged over data-parallel groups.
    GaugeMean,
    /// Counter increase between the two scrapes divided by the time between them.
    Rate,
    /// p50/p90/p99 of the histogram's bucket increase between the two scrapes.
    Quantiles,
    /// Increase of the first counter divided by the increase of the second.
    CounterRatio,
    /// Product of the `num_gpu_blocks` and `block_size` labels of an info gauge.
    BlocksTimesBlockSize,
}

/// One engine's source of a field.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// How the number is derived.
    pub how: How,
    /// Sample names read (counters with `_total`, histograms without `_bucket`).
    pub metrics: &'static [&'static str],
    /// Only samples whose label has one of these values (e.g. `finished_reason`).
    pub only: Option<(&'static str, &'static [&'static str])>,
}

/// One typed field: its path in the document, unit, and per-engine sources.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Dotted path in an engine view, e.g. `requests.running`.
    pub path: &'static str,
    /// Unit of the number.
    pub unit: &'static str,
    /// SGLang's source, if SGLang exports one.
    pub sglang: Option<Source>,
    /// vLLM's source, if vLLM exports one.
    pub vllm: Option<Source>,
}

const fn src(how: How, metrics: &'static [&'static str]) -> Option<Source> {
    Some(Source {
        how,
        metrics,
        only: None,
    })
}

/// vLLM's `finished_reason` values (`FINISH_REASON_STRINGS`) that are not failures.
pub const VLLM_SUCCESS_REASONS: &[&str] = &["stop", "length", "repetition"];
/// vLLM's `finished_reason` values that are failures (client abort, internal error).
pub const VLLM_FAILURE_REASONS: &[&str] = &["abort", "error"];

use How::*;

/// Every typed field and where it comes from, in document order.
pub const FIELDS: &[Field] = &[
    Field {
        path: "requests.running",
        unit: "requests",
        sglang: src(GaugeSum, &["sglang:num_running_reqs"]),
        vllm: src(GaugeSum, &["vllm:num_requests_running"]),
    },
    Field {
        path: "requests.waiting",
        unit: "requests",
        sglang: src(GaugeSum, &["sglang:num_queue_reqs"]),
        vllm: src(GaugeSum, &["vllm:num_requests_waiting"]),
    },
    Field {
        path: "requests.success_per_second",
        unit: "requests/s",
        sglang: src(Rate, &["sglang:num_requests_total"]),
        vllm: Some(Source {
            how: Rate,
            metrics: &["vllm:request_success_total"],
            only: Some(("finished_reason", VLLM_SUCCESS_REASONS)),
        }),
    },
    Field {
        path: "requests.failure_per_second",
        unit: "requests/s",
        sglang: src(Rate, &["sglang:num_aborted_requests_total"]),
        vllm: Some(Source {
            how: Rate,
            metrics: &["vllm:request_success_total"],
            only: Some(("finished_reason", VLLM_FAILURE_REASONS)),
        }),
    },
    Field {
        path: "requests.time_to_first_token_seconds",
        unit: "seconds",
        sglang: src(Quantiles, &["sglang:time_to_first_token_seconds"]),
        vllm: src(Quantiles, &["vllm:time_to_first_token_seconds"]),
    },
    Field {
        path: "requests.inter_token_latency_seconds",
        unit: "seconds",
        sglang: src(Quantiles, &["sglang:inter_token_latency_seconds"]),
        vllm: src(Quantiles, &["vllm:inter_token_latency_seconds"]),
    },
    Field {
        path: "requests.e2e_latency_seconds",
        unit: "seconds",
        sglang: src(Quantiles, &["sglang:e2e_request_latency_seconds"]),
        vllm: src(Quantiles, &["vllm:e2e_request_latency_seconds"]),
    },
    Field {
        path: "tokens.prompt_per_second",
        unit: "tokens/s",
        sglang: src(Rate, &["sglang:prompt_tokens_total"]),
        vllm: src(Rate, &["vllm:prompt_tokens_total"]),
    },
    Field {
        path: "tokens.generation_per_second",
        unit: "tokens/s",
        sglang: src(Rate, &["sglang:generation_tokens_total"]),
        vllm: src(Rate, &["vllm:generation_tokens_total"]),
    },
    Field {
        path: "cache.token_usage",
        unit: "ratio 0..1",
        sglang: src(GaugeMean, &["sglang:token_usage"]),
        vllm: src(GaugeMean, &["vllm:kv_cache_usage_perc"]),
    },
    Field {
        path: "cache.hit_rate",
        unit: "ratio 0..1",
        sglang: src(GaugeMean, &["sglang:cache_hit_rate"]),
        vllm: src(
            CounterRatio,
            &[
                "vllm:prefix_cache_hits_total",
                "vllm:prefix_cache_queries_total",
            ],
        ),
    },
    Field {
        path: "cache.kv_capacity_tokens",
        unit: "tokens",
        sglang: src(GaugeSum, &["sglang:max_total_num_tokens"]),
        vllm: src(BlocksTimesBlockSize, &["vllm:cache_config_info"]),
    },
    Field {
        path: "system.generation_throughput",
        unit: "tokens/s",
        sglang: src(GaugeSum, &["sglang:gen_throughput"]),
        vllm: None,
    },
    Field {
        path: "system.utilization",
        unit: "ratio",
        sglang: src(GaugeMean, &["sglang:utilization"]),
        vllm: None,
    },
];

/// The field at `path` (panics on a path not in [`FIELDS`]: a typo in this module).
pub fn field(path: &str) -> &'static Field {
    FIELDS
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no engine-view field {path}"))
}

/// Labels that only say which tensor/pipeline/expert shard wrote a sample: series
/// differing only in them repeat one number, so they are collapsed (max), not added.
pub const SHARD_LABELS: &[&str] = &["tp_rank", "pp_rank", "moe_ep_rank", "pid"];
