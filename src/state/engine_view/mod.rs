//! The typed view of one worker's engine metrics: a few numbers a planner wants
//! (queue, latency quantiles, cache, throughput), computed from its latest scrape
//! and the difference of its last two, as `/v1/engines` serves them. Pure: the
//! scrape cache and the HTTP side call [`engine_view`] and [`fpm::fpm_summary`].

pub mod document;
pub mod fpm;
pub mod names;
pub mod quantile;

use crate::wire::exposition::{Sample, Scrape};
use names::{How, Source, FIELDS, SHARD_LABELS};
use quantile::{bucket_increase, bucket_quantile};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::UNIX_EPOCH;

/// Latency quantiles over the interval between two scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Observations the histogram gained in the interval.
    pub observations: f64,
    /// Median (`histogram_quantile(0.5, ...)`), `null` without observations.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Request queue, outcomes and latencies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Requests {
    /// Requests running now.
    pub running: Option<f64>,
    /// Requests waiting in the queue now.
    pub waiting: Option<f64>,
    /// Requests finished successfully per second over the interval.
    pub success_per_second: Option<f64>,
    /// Requests aborted or failed per second over the interval.
    pub failure_per_second: Option<f64>,
    /// Time to first token.
    pub time_to_first_token_seconds: Option<Latency>,
    /// Time between output tokens.
    pub inter_token_latency_seconds: Option<Latency>,
    /// Request latency from arrival to last token.
    pub e2e_latency_seconds: Option<Latency>,
}

/// Token throughput over the interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tokens {
    /// Prompt (prefill) tokens per second.
    pub prompt_per_second: Option<f64>,
    /// Generated tokens per second.
    pub generation_per_second: Option<f64>,
}

/// KV cache state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cache {
    /// Fraction of the KV pool in use, 0..1.
    pub token_usage: Option<f64>,
    /// Prefix-cache hit rate, 0..1.
    pub hit_rate: Option<f64>,
    /// Tokens the KV pool holds.
    pub kv_capacity_tokens: Option<f64>,
}

/// Engine-reported system numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct System {
    /// Generation throughput the engine reports, tokens/s.
    pub generation_throughput: Option<f64>,
    /// Utilization the engine reports.
    pub utilization: Option<f64>,
}

/// One worker's typed engine view.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineView {
    /// Whose metric names the scrape carries: `sglang` or `vllm`; `null` if neither.
    pub kind: Option<&'static str>,
    /// When the latest scrape completed, Unix ns.
    pub scraped_at_ns: u64,
    /// Seconds between the two scrapes; `null` without a previous one.
    pub interval_seconds: Option<f64>,
    /// Series whose counters went down between the two scrapes (taken as restarts).
    pub counter_resets: u32,
    /// Requests.
    pub requests: Requests,
    /// Tokens.
    pub tokens: Tokens,
    /// Cache.
    pub cache: Cache,
    /// System.
    pub system: System,
    /// For every non-null field, the metric(s) it was read from, as spelled.
    pub sources: BTreeMap<&'static str, Vec<String>>,
}

/// Which engine's names a scrape carries, and how SGLang's are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Sglang,
    Vllm,
}

/// Samples of one scrape by sample name.
struct Index<'a>(HashMap<&'a str, Vec<&'a Sample>>);

impl<'a> Index<'a> {
    fn of(scrape: &'a Scrape) -> Self {
        let mut m: HashMap<&str, Vec<&Sample>> = HashMap::new();
        for s in scrape.families.iter().flat_map(|f| &f.samples) {
            m.entry(s.name.as_str()).or_default().push(s);
        }
        Index(m)
    }

    /// Samples named `name` (written with `sglang:`), or, when there are none, those
    /// named with the `sglang_` spelling: so two scrapes spelled differently still diff.
    fn get(&self, name: &str, only: Option<(&str, &[&str])>) -> Vec<&'a Sample> {
        let all = match self.0.get(name) {
            Some(v) => v.as_slice(),
            None => self
                .0
                .get(underscored(name).as_str())
                .map_or(&[][..], Vec::as_slice),
        };
        all.iter()
            .copied()
            .filter(|s| {
                only.is_none_or(|(k, vals)| {
                    s.labels
                        .iter()
                        .any(|(lk, lv)| lk == k && vals.contains(&lv.as_str()))
                })
            })
            .collect()
    }

    /// How this scrape spells `name`.
    fn spelling(&self, name: &str) -> String {
        if self.0.contains_key(name) || self.0.contains_key(format!("{name}_bucket").as_str()) {
            name.to_string()
        } else {
            underscored(name)
        }
    }

    fn flavor(&self) -> Option<Flavor> {
        let has = |p: &str| self.0.keys().any(|n| n.starts_with(p));
        if has("sglang:") || has("sglang_") {
            Some(Flavor::Sglang)
        } else if has("vllm:") {
            Some(Flavor::Vllm)
        } else {
            None
        }
    }
}

/// `sglang:x` as `sglang_x` (what gRPC-mode gateways and prometheus_client's
/// OpenMetrics output write); other names unchanged.
fn underscored(name: &str) -> String {
    match name.strip_prefix("sglang:") {
        Some(rest) => format!("sglang_{rest}"),
        None => name.to_string(),
    }
}

/// A sample's labels without the shard labels: series with equal keys repeat a number.
fn group_key(s: &Sample) -> Vec<(&str, &str)> {
    s.labels
        .iter()
        .filter(|(k, _)| !SHARD_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Per group, the largest value (NaN samples skipped).
fn groups<'a>(samples: &[&'a Sample]) -> HashMap<Vec<(&'a str, &'a str)>, f64> {
    let mut m: HashMap<Vec<(&str, &str)>, f64> = HashMap::new();
    for s in samples.iter().filter(|s| !s.value.is_nan()) {
        let v = m.entry(group_key(s)).or_insert(f64::NEG_INFINITY);
        *v = v.max(s.value);
    }
    m
}

/// Increase of a counter over the interval, summed over groups; a group lower than
/// before restarted, and its latest value is its increase (counted in `resets`).
fn increase(prev: &[&Sample], latest: &[&Sample], resets: &mut u32) -> Option<f64> {
    if latest.is_empty() {
        return None;
    }
    let before = groups(prev);
    let mut total = 0.0;
    for (k, v) in groups(latest) {
        let p = before.get(&k).copied().unwrap_or(0.0);
        if v < p {
            *resets += 1;
            // A counter below 0 only comes from a broken exporter: no increase.
            total += v.max(0.0);
        } else {
            total += v - p;
        }
    }
    Some(total)
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One field's value: a number or latency quantiles.
enum Value {
    Number(f64),
    Latency(Latency),
}

struct Ctx<'a> {
    latest: Index<'a>,
    prev: Option<Index<'a>>,
    dt: Option<f64>,
    resets: u32,
}

impl Ctx<'_> {
    fn compute(&mut self, src: &Source, names: &[&str]) -> Option<Value> {
        let latest = |i: usize| self.latest.get(names[i], src.only);
        match src.how {
            How::GaugeSum | How::GaugeMean => {
                let g = groups(&latest(0));
                if g.is_empty() {
                    return None;
                }
                let sum: f64 = g.values().sum();
                Some(Value::Number(if src.how == How::GaugeSum {
                    sum
                } else {
                    sum / g.len() as f64
                }))
            }
            How::Rate => {
                let (prev, dt) = (self.prev.as_ref()?, self.dt?);
                let p = prev.get(names[0], src.only);
                let inc = increase(&p, &latest(0), &mut self.resets)?;
                Some(Value::Number(inc / dt))
            }
            How::CounterRatio => {
                let prev = self.prev.as_ref()?;
                let (ph, pq) = (prev.get(names[0], None), prev.get(names[1], None));
                let hits = increase(&ph, &latest(0), &mut self.resets)?;
                let queries = increase(&pq, &latest(1), &mut self.resets)?;
                (queries > 0.0).then(|| Value::Number(hits / queries))
            }
            How::BlocksTimesBlockSize => {
                let l = latest(0);
                let cap: Vec<f64> = l
                    .iter()
                    .filter_map(|s| {
                        let blocks: f64 = label(s, "num_gpu_blocks")?.parse().ok()?;
                        let size: f64 = label(s, "block_size")?.parse().ok()?;
                        Some(blocks * size)
                    })
                    .collect();
                (!cap.is_empty()).then(|| Value::Number(cap.iter().sum()))
            }
            How::Quantiles => {
                let bucket = format!("{}_bucket", names[0]);
                let l = self.latest.get(&bucket, None);
                // (`sglang_x_bucket` is found from `sglang:x_bucket` the same way.)
                if l.is_empty() {
                    return None;
                }
                let p = self.prev.as_ref()?.get(&bucket, None);
                let inc = bucket_increase(&p, &l);
                self.resets += inc.resets;
                let observations: f64 = inc
                    .buckets
                    .iter()
                    .filter(|b| b.upper_bound == f64::INFINITY)
                    .map(|b| b.count)
                    .sum();
                let q = |x: f64| {
                    let v = bucket_quantile(x, &mut inc.buckets.clone());
                    v.is_finite().then_some(v)
                };
                Some(Value::Latency(Latency {
                    observations,
                    p50: q(0.5),
                    p90: q(0.9),
                    p99: q(0.99),
                }))
            }
        }
    }
}

fn unix_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The typed view of a worker from its `latest` scrape and the one before it
/// (`None` for the first: rates, hit ratios and quantiles are then `null`).
pub fn engine_view(previous: Option<&Scrape>, latest: &Scrape) -> EngineView {
    let dt = previous
        .and_then(|p| latest.at.duration_since(p.at).ok())
        .map(|d| d.as_secs_f64())
        .filter(|&d| d > 0.0);
    let mut ctx = Ctx {
        latest: Index::of(latest),
        prev: previous.filter(|_| dt.is_some()).map(Index::of),
        dt,
        resets: 0,
    };
    let flavor = ctx.latest.flavor();
    let mut view = EngineView {
        kind: flavor.map(|f| match f {
            Flavor::Sglang => "sglang",
            Flavor::Vllm => "vllm",
        }),
        scraped_at_ns: unix_ns(latest.at),
        interval_seconds: dt,
        ..EngineView::default()
    };
    let Some(flavor) = flavor else {
        return view;
    };
    for f in FIELDS {
        let src = match flavor {
            Flavor::Sglang => f.sglang,
            Flavor::Vllm => f.vllm,
        };
        let Some(src) = src else { continue };
        let Some(value) = ctx.compute(&src, src.metrics) else {
            continue;
        };
        let spelled = src.metrics.iter().map(|m| ctx.latest.spelling(m));
        set(&mut view, f.path, value);
        view.sources.insert(f.path, spelled.collect());
    }
    view.counter_resets = ctx.resets;
    view
}

fn set(v: &mut EngineView, path: &str, value: Value) {
    match value {
        Value::Number(x) => {
            let slot = match path {
                "requests.running" => &mut v.requests.running,
                "requests.waiting" => &mut v.requests.waiting,
                "requests.success_per_second" => &mut v.requests.success_per_second,
                "requests.failure_per_second" => &mut v.requests.failure_per_second,
                "tokens.prompt_per_second" => &mut v.tokens.prompt_per_second,
                "tokens.generation_per_second" => &mut v.tokens.generation_per_second,
                "cache.token_usage" => &mut v.cache.token_usage,
                "cache.hit_rate" => &mut v.cache.hit_rate,
                "cache.kv_capacity_tokens" => &mut v.cache.kv_capacity_tokens,
                "system.generation_throughput" => &mut v.system.generation_throughput,
                "system.utilization" => &mut v.system.utilization,
                _ => unreachable!("numeric field {path} missing from set()"),
            };
            *slot = Some(x);
        }
        Value::Latency(l) => {
            let slot = match path {
                "requests.time_to_first_token_seconds" => {
                    &mut v.requests.time_to_first_token_seconds
                }
                "requests.inter_token_latency_seconds" => {
                    &mut v.requests.inter_token_latency_seconds
                }
                "requests.e2e_latency_seconds" => &mut v.requests.e2e_latency_seconds,
                _ => unreachable!("latency field {path} missing from set()"),
            };
            *slot = Some(l);
        }
    }
}

#[cfg(test)]
mod tests;
