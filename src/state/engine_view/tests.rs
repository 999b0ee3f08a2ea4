//! Engine views from hand-built scrapes, with hand-computed expectations.

use super::*;
use crate::wire::exposition::{FamilyType, MetricFamily};
use std::time::{Duration, SystemTime};

fn s(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

/// One untyped family holding every sample: the view reads by sample name only.
fn scrape(at_s: u64, samples: Vec<Sample>) -> Scrape {
    Scrape {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(at_s),
        families: vec![MetricFamily {
            name: "all".into(),
            kind: FamilyType::Gauge,
            help: String::new(),
            samples,
        }],
    }
}

const TP0: (&str, &str) = ("tp_rank", "0");
const TP1: (&str, &str) = ("tp_rank", "1");

fn ttft(p: &str, counts: [f64; 4]) -> Vec<Sample> {
    let name = format!("{p}time_to_first_token_seconds_bucket");
    ["0.1", "0.2", "0.4", "+Inf"]
        .iter()
        .zip(counts)
        .map(|(le, c)| s(&name, &[("is_streaming", "false"), ("le", le)], c))
        .collect()
}

fn sglang(p: &str, at: u64, requests: f64, gen: f64, buckets: [f64; 4]) -> Scrape {
    let n = |m: &str| format!("{p}{m}");
    let mut v = vec![
        // Two TP shards repeat the scheduler's numbers: collapsed, not added.
        s(&n("num_running_reqs"), &[TP0], 3.0),
        s(&n("num_running_reqs"), &[TP1], 3.0),
        s(&n("num_queue_reqs"), &[TP0], 2.0),
        s(&n("token_usage"), &[TP0, ("dp_rank", "0")], 0.2),
        s(&n("token_usage"), &[TP0, ("dp_rank", "1")], 0.4),
        s(&n("max_total_num_tokens"), &[TP0], 410615.0),
        s(&n("cache_hit_rate"), &[TP0], 0.5),
        s(&n("gen_throughput"), &[TP0], 450.5),
        s(
            &n("num_requests_total"),
            &[("is_streaming", "true")],
            requests,
        ),
        s(&n("num_requests_total"), &[("is_streaming", "false")], 1.0),
        s(
            &n("generation_tokens_total"),
            &[("is_streaming", "true")],
            gen,
        ),
    ];
    v.extend(ttft(p, buckets));
    scrape(at, v)
}

#[test]
fn sglang_numbers_from_two_scrapes() {
    for prefix in ["sglang:", "sglang_"] {
        let a = sglang(prefix, 100, 10.0, 1000.0, [1.0, 3.0, 4.0, 4.0]);
        let b = sglang(prefix, 104, 18.0, 3000.0, [3.0, 7.0, 8.0, 10.0]);
        let v = engine_view(Some(&a), &b);
        assert_eq!(v.kind, Some("sglang"));
        assert_eq!(v.interval_seconds, Some(4.0));
        assert_eq!(v.scraped_at_ns, 104_000_000_000);
        assert_eq!(v.requests.running, Some(3.0));
        assert_eq!(v.requests.waiting, Some(2.0));
        // (18 - 10) / 4 s; the is_streaming=false series did not move.
        assert_eq!(v.requests.success_per_second, Some(2.0));
        assert_eq!(v.requests.failure_per_second, None, "not exported");
        assert_eq!(v.tokens.generation_per_second, Some(500.0));
        assert_eq!(v.tokens.prompt_per_second, None);
        assert_eq!(v.cache.token_usage, Some(0.30000000000000004));
        assert_eq!(v.cache.kv_capacity_tokens, Some(410615.0));
        assert_eq!(v.cache.hit_rate, Some(0.5));
        assert_eq!(v.system.generation_throughput, Some(450.5));
        assert_eq!(v.system.utilization, None);
        // Increase: 2, 4, 4, 6 cumulative -> p50 rank 3 in (0.1, 0.2]: 0.1 + 0.1 * 1/2;
        // p90 rank 5.4 above 0.4's 4: the highest finite bound.
        let t = v.requests.time_to_first_token_seconds.unwrap();
        assert_eq!(t.observations, 6.0);
        assert!((t.p50.unwrap() - 0.15).abs() < 1e-12, "{t:?}");
        assert_eq!(t.p90, Some(0.4));
        assert_eq!(t.p99, Some(0.4));
        assert_eq!(v.requests.e2e_latency_seconds, None);
        assert_eq!(v.counter_resets, 0);
        assert_eq!(
            v.sources["requests.running"],
            vec![format!("{prefix}num_running_reqs")]
        );
        assert!(!v.sources.contains_key("requests.failure_per_second"));
    }
}

#[test]
fn two_scrapes_spelled_differently_still_diff() {
    let a = sglang("sglang:", 100, 10.0, 1000.0, [1.0, 3.0, 4.0, 4.0]);
    let b = sglang("sglang_", 104, 18.0, 3000.0, [3.0, 7.0, 8.0, 10.0]);
    let v = engine_view(Some(&a), &b);
    assert_eq!(v.requests.success_per_second, Some(2.0));
    assert_eq!(v.counter_resets, 0);
    let t = v.requests.time_to_first_token_seconds.unwrap();
    assert_eq!(t.observations, 6.0);
    assert_eq!(
        v.sources["requests.time_to_first_token_seconds"],
        vec!["sglang_time_to_first_token_seconds"]
    );
    let c = sglang("sglang:", 108, 26.0, 3000.0, [3.0, 7.0, 8.0, 10.0]);
    let v = engine_view(Some(&b), &c);
    assert_eq!(v.requests.success_per_second, Some(2.0));
    assert_eq!(
        v.sources["requests.time_to_first_token_seconds"],
        vec!["sglang:time_to_first_token_seconds"]
    );
}

#[test]
fn first_scrape_has_gauges_but_no_rates_or_quantiles() {
    let a = sglang("sglang:", 100, 10.0, 1000.0, [1.0, 3.0, 4.0, 4.0]);
    let v = engine_view(None, &a);
    assert_eq!(v.interval_seconds, None);
    assert_eq!(v.requests.running, Some(3.0));
    assert_eq!(v.requests.success_per_second, None);
    assert_eq!(v.requests.time_to_first_token_seconds, None);
    // Same time twice: no interval either, never a division by zero.
    let v = engine_view(Some(&a), &a);
    assert_eq!(v.interval_seconds, None);
    assert_eq!(v.tokens.generation_per_second, None);
}

#[test]
fn a_restart_between_scrapes_counts_the_latest_values_as_the_increase() {
    let a = sglang("sglang:", 100, 50.0, 9000.0, [5.0, 9.0, 9.0, 9.0]);
    let b = sglang("sglang:", 102, 4.0, 100.0, [1.0, 1.0, 2.0, 2.0]);
    let v = engine_view(Some(&a), &b);
    // num_requests_total{true}, generation_tokens_total, the TTFT series.
    assert_eq!(v.counter_resets, 3);
    assert_eq!(v.requests.success_per_second, Some(2.0));
    assert_eq!(v.tokens.generation_per_second, Some(50.0));
    let t = v.requests.time_to_first_token_seconds.unwrap();
    assert_eq!(t.observations, 2.0);
    // rank 1 of (1, 1, 2, 2): first bucket reaching it is le=0.1: 0.1 * 1/1.
    assert_eq!(t.p50, Some(0.1));
}

#[test]
fn no_observations_in_the_interval_give_null_quantiles() {
    let a = sglang("sglang:", 100, 10.0, 1000.0, [1.0, 3.0, 4.0, 4.0]);
    let b = sglang("sglang:", 101, 10.0, 1000.0, [1.0, 3.0, 4.0, 4.0]);
    let t = engine_view(Some(&a), &b)
        .requests
        .time_to_first_token_seconds
        .unwrap();
    assert_eq!(t.observations, 0.0);
    assert_eq!((t.p50, t.p90, t.p99), (None, None, None));
}

fn vllm(at: u64, stop: f64, abort: f64, hits: f64, queries: f64) -> Scrape {
    let e = ("engine", "0");
    scrape(
        at,
        vec![
            s("vllm:num_requests_running", &[e], 5.0),
            s("vllm:num_requests_running", &[("engine", "1")], 2.0),
            s("vllm:num_requests_waiting", &[e], 1.0),
            s("vllm:kv_cache_usage_perc", &[e], 0.25),
            s(
                "vllm:request_success_total",
                &[e, ("finished_reason", "stop")],
                stop,
            ),
            s(
                "vllm:request_success_total",
                &[e, ("finished_reason", "length")],
                2.0,
            ),
            s(
                "vllm:request_success_total",
                &[e, ("finished_reason", "abort")],
                abort,
            ),
            s("vllm:prefix_cache_hits_total", &[e], hits),
            s("vllm:prefix_cache_queries_total", &[e], queries),
            s("vllm:prompt_tokens_total", &[e], queries),
            s(
                "vllm:cache_config_info",
                &[e, ("block_size", "16"), ("num_gpu_blocks", "1000")],
                1.0,
            ),
        ],
    )
}

#[test]
fn vllm_numbers_from_two_scrapes() {
    let v = engine_view(
        Some(&vllm(10, 4.0, 1.0, 100.0, 400.0)),
        &vllm(12, 10.0, 3.0, 250.0, 1000.0),
    );
    assert_eq!(v.kind, Some("vllm"));
    assert_eq!(v.requests.running, Some(7.0), "DP engines add up");
    assert_eq!(v.requests.waiting, Some(1.0));
    assert_eq!(v.requests.success_per_second, Some(3.0));
    assert_eq!(v.requests.failure_per_second, Some(1.0));
    assert_eq!(v.cache.token_usage, Some(0.25));
    assert_eq!(v.cache.hit_rate, Some(0.25));
    assert_eq!(v.cache.kv_capacity_tokens, Some(16000.0));
    assert_eq!(v.tokens.prompt_per_second, Some(300.0));
    assert_eq!(v.system.generation_throughput, None);
    assert_eq!(v.requests.time_to_first_token_seconds, None);
    assert_eq!(
        v.sources["cache.hit_rate"],
        vec![
            "vllm:prefix_cache_hits_total",
            "vllm:prefix_cache_queries_total"
        ]
    );
    // No queries in the interval: no hit rate rather than 0/0.
    let same = vllm(14, 10.0, 3.0, 250.0, 1000.0);
    let v = engine_view(Some(&vllm(12, 10.0, 3.0, 250.0, 1000.0)), &same);
    assert_eq!(v.cache.hit_rate, None);
    assert_eq!(v.requests.success_per_second, Some(0.0));
}

#[test]
fn unknown_or_hostile_expositions_give_an_empty_view() {
    let junk = scrape(
        5,
        vec![
            s("process_cpu_seconds_total", &[], 1.0),
            s("sglang:num_running_reqs", &[], f64::NAN),
            s(
                "sglang:time_to_first_token_seconds_bucket",
                &[("le", "zzz")],
                3.0,
            ),
        ],
    );
    let v = engine_view(Some(&junk), &junk);
    assert_eq!(v.kind, Some("sglang"));
    assert_eq!(v.requests.running, None, "NaN is no number");
    // A counter a broken exporter sends below zero: a reset with no increase.
    let neg = |at, v| scrape(at, vec![s("sglang:generation_tokens_total", &[], v)]);
    let v = engine_view(Some(&neg(1, 5.0)), &neg(2, -3.0));
    assert_eq!(v.tokens.generation_per_second, Some(0.0));
    assert_eq!(v.counter_resets, 1);
    let v = engine_view(None, &scrape(5, vec![s("up", &[], 1.0)]));
    assert_eq!(v.kind, None);
    assert!(v.sources.is_empty());
    let json = serde_json::to_value(&v).unwrap();
    assert!(json["requests"]["running"].is_null());
}

#[test]
fn every_field_is_set_by_some_engine() {
    for f in names::FIELDS {
        assert!(f.sglang.is_some() || f.vllm.is_some(), "{}", f.path);
        let _ = names::field(f.path);
    }
}
