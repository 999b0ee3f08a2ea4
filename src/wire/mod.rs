//! The formats on the wire: FPM frames (the schema engines publish, v1, and its
//! msgpack encoding) and, in [`exposition`], the Prometheus exposition model that
//! scraped and multiprocess engine metrics are read into and rendered from.
//!
//! The field names, order and types mirror SGLang's `ForwardPassMetrics`
//! (`sglang/srt/observability/forward_pass_metrics.py`) and Dynamo's consumer.
//! See `proto/wire-schema.md` for the schema in words.

pub mod decode;
pub mod encode;
mod error;
pub mod exposition;
mod fast;
pub mod load_snapshot;
mod number;

use serde::{Deserialize, Serialize};

pub use decode::{decode_message, decode_payload, DecodedFrame};
pub use error::DecodeError;
pub use number::{Count, Real};

/// The only schema version this build understands.
pub const SUPPORTED_VERSION: u64 = 1;

/// Payloads larger than this are refused before decoding (a real v1 frame is ~410 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Requests executed in one scheduler iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduledRequests {
    /// Prefill requests (or prefill chunks) computed this iteration.
    pub num_prefill_requests: Count,
    /// Prompt tokens computed this iteration (the chunk size for chunked prefill).
    pub sum_prefill_tokens: Count,
    /// Population variance of the full prompt lengths of those requests.
    pub var_prefill_length: Real,
    /// KV tokens read but not computed: prefix-cache hits and earlier chunks.
    pub sum_prefill_kv_tokens: Count,
    /// Decode requests executed this iteration.
    pub num_decode_requests: Count,
    /// Total KV context of the decoding requests.
    pub sum_decode_kv_tokens: Count,
    /// Population variance of the decoding requests' KV context.
    pub var_decode_kv_tokens: Real,
}

/// Requests waiting, not scheduled, at the end of one iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuedRequests {
    /// Prefill requests waiting.
    pub num_prefill_requests: Count,
    /// Prompt tokens of the waiting prefill requests.
    pub sum_prefill_tokens: Count,
    /// Population variance of the waiting prompts' lengths.
    pub var_prefill_length: Real,
    /// Decode requests waiting (preempted, or transfer/prealloc queues in disaggregated decode).
    pub num_decode_requests: Count,
    /// KV context of the waiting decode requests.
    pub sum_decode_kv_tokens: Count,
    /// Population variance of that KV context.
    pub var_decode_kv_tokens: Real,
}

/// One forward-pass-metrics message, as the engines send it (schema v1).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ForwardPassMetrics {
    /// Schema version (1 today; absent in early-2026 payloads, which default to 1).
    pub version: u64,
    /// Engine instance id ("" when the engine was launched alone).
    pub worker_id: String,
    /// Data-parallel rank of the publishing scheduler.
    pub dp_rank: u64,
    /// The publisher's sequence number, stamped just before sending.
    pub counter_id: u64,
    /// vLLM-native only: which timer produced `wall_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing_scope: Option<String>,
    /// Seconds the iteration took; 0.0 marks an idle heartbeat.
    pub wall_time: Real,
    /// Requests executed in this iteration.
    pub scheduled_requests: ScheduledRequests,
    /// Requests waiting at the end of this iteration.
    pub queued_requests: QueuedRequests,
}

impl ForwardPassMetrics {
    /// A heartbeat carries nothing but identity: wall_time 0 and nothing scheduled.
    pub fn is_heartbeat(&self) -> bool {
        self.wall_time.0 == 0.0
            && self.scheduled_requests.num_prefill_requests.0 == 0
            && self.scheduled_requests.num_decode_requests.0 == 0
    }
}
