//! The router's view of a rank: how loaded it is right now, from its latest frame of
//! any kind. An iteration frame says what ran and what waits; a heartbeat says the
//! rank is idle with nothing scheduled or queued, so it must reset the load, even
//! though it never replaces the latest iteration kept for `/v1/ranks`.

use crate::wire::ForwardPassMetrics;

/// The load carried by one frame (heartbeats included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// Requests executed in the iteration: scheduled prefill plus decode.
    pub running_requests: u64,
    /// Requests waiting: queued prefill plus decode.
    pub waiting_requests: u64,
    /// KV tokens in use: scheduled decode KV context plus prefill KV read.
    pub kv_tokens: u64,
    /// Prompt tokens of the queued prefill requests.
    pub queued_prefill_tokens: u64,
    /// Whether the frame was a heartbeat.
    pub heartbeat: bool,
}

impl LoadSample {
    /// The load a frame reports.
    #[inline]
    pub fn of(m: &ForwardPassMetrics) -> Self {
        let s = &m.scheduled_requests;
        let q = &m.queued_requests;
        LoadSample {
            running_requests: s
                .num_prefill_requests
                .0
                .saturating_add(s.num_decode_requests.0),
            waiting_requests: q
                .num_prefill_requests
                .0
                .saturating_add(q.num_decode_requests.0),
            kv_tokens: s
                .sum_decode_kv_tokens
                .0
                .saturating_add(s.sum_prefill_kv_tokens.0),
            queued_prefill_tokens: q.sum_prefill_tokens.0,
            heartbeat: m.is_heartbeat(),
        }
    }
}
