//! A fast path for the one payload form every released publisher sends: the v1 msgpack
//! map with known keys, canonical msgpack types and nothing after it.
//!
//! Why: the general serde decoder costs ~550 ns per real frame, most of the per-frame
//! cost of ingestion. This reader walks the bytes once, without a serde visitor per
//! field. It is deliberately strict: anything it is not sure about (an unknown or
//! repeated key, a negative number, a bin or invalid-UTF-8 string, a non-finite float,
//! an array, trailing bytes) makes it give up and the general decoder decides, so the
//! accepted set, the values and every error reason stay exactly those of
//! [`super::decode`]. A property test holds the two to the same answers.

use super::number::MAX_MAGNITUDE;
use super::{
    Count, ForwardPassMetrics, QueuedRequests, Real, ScheduledRequests, SUPPORTED_VERSION,
};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.i)?;
        self.i += 1;
        Some(v)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    #[inline]
    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => Some(u16::from_be_bytes(self.be()?) as usize),
            _ => None,
        }
    }

    #[inline]
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.byte()? as usize,
            0xda => u16::from_be_bytes(self.be()?) as usize,
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return None,
        };
        self.take(len)
    }

    #[inline]
    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.str_bytes()?)
            .ok()
            .map(str::to_owned)
    }

    /// A non-negative integer in any unsigned msgpack form.
    #[inline]
    fn count(&mut self) -> Option<u64> {
        match self.byte()? {
            v @ 0x00..=0x7f => Some(v as u64),
            0xcc => self.byte().map(u64::from),
            0xcd => Some(u16::from_be_bytes(self.be()?) as u64),
            0xce => Some(u32::from_be_bytes(self.be()?) as u64),
            0xcf => Some(u64::from_be_bytes(self.be()?)),
            _ => None,
        }
    }

    /// A float (or unsigned integer) that passes the same policy as [`Real`].
    #[inline]
    fn real(&mut self) -> Option<f64> {
        let v = match *self.b.get(self.i)? {
            0xcb => {
                self.i += 1;
                f64::from_be_bytes(self.be()?)
            }
            0xca => {
                self.i += 1;
                f32::from_be_bytes(self.be()?) as f64
            }
            _ => self.count()? as f64,
        };
        (0.0..=MAX_MAGNITUDE).contains(&v).then_some(v)
    }
}

/// Marks bit `bit` in `seen`; `None` if it was already set (a repeated key).
#[inline]
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    Some(())
}

fn scheduled(r: &mut Reader) -> Option<ScheduledRequests> {
    let mut s = ScheduledRequests::default();
    let mut seen = 0u32;
    for _ in 0..r.map_len()? {
        match r.str_bytes()? {
            b"num_prefill_requests" => {
                once(&mut seen, 0)?;
                s.num_prefill_requests = Count(r.count()?)
            }
            b"sum_prefill_tokens" => {
                once(&mut seen, 1)?;
                s.sum_prefill_tokens = Count(r.count()?)
            }
            b"var_prefill_length" => {
                once(&mut seen, 2)?;
                s.var_prefill_length = Real(r.real()?)
            }
            b"sum_prefill_kv_tokens" => {
                once(&mut seen, 3)?;
                s.sum_prefill_kv_tokens = Count(r.count()?)
            }
            b"num_decode_requests" => {
                once(&mut seen, 4)?;
                s.num_decode_requests = Count(r.count()?)
            }
            b"sum_decode_kv_tokens" => {
                once(&mut seen, 5)?;
                s.sum_decode_kv_tokens = Count(r.count()?)
            }
            b"var_decode_kv_tokens" => {
                once(&mut seen, 6)?;
                s.var_decode_kv_tokens = Real(r.real()?)
            }
            _ => return None,
        }
    }
    Some(s)
}

fn queued(r: &mut Reader) -> Option<QueuedRequests> {
    let mut q = QueuedRequests::default();
    let mut seen = 0u32;
    for _ in 0..r.map_len()? {
        match r.str_bytes()? {
            b"num_prefill_requests" => {
                once(&mut seen, 0)?;
                q.num_prefill_requests = Count(r.count()?)
            }
            b"sum_prefill_tokens" => {
                once(&mut seen, 1)?;
                q.sum_prefill_tokens = Count(r.count()?)
            }
            b"var_prefill_length" => {
                once(&mut seen, 2)?;
                q.var_prefill_length = Real(r.real()?)
            }
            b"num_decode_requests" => {
                once(&mut seen, 3)?;
                q.num_decode_requests = Count(r.count()?)
            }
            b"sum_decode_kv_tokens" => {
                once(&mut seen, 4)?;
                q.sum_decode_kv_tokens = Count(r.count()?)
            }
            b"var_decode_kv_tokens" => {
                once(&mut seen, 5)?;
                q.var_decode_kv_tokens = Real(r.real()?)
            }
            _ => return None,
        }
    }
    Some(q)
}

/// Decodes a payload in the published map form, or `None` to leave it to the general
/// decoder. Does not check the version (the caller does, for both paths).
pub fn decode_map(payload: &[u8]) -> Option<ForwardPassMetrics> {
    let mut r = Reader { b: payload, i: 0 };
    let mut m = ForwardPassMetrics {
        version: SUPPORTED_VERSION,
        ..Default::default()
    };
    let mut seen = 0u32;
    for _ in 0..r.map_len()? {
        match r.str_bytes()? {
            b"version" => {
                once(&mut seen, 0)?;
                m.version = r.count()?
            }
            b"worker_id" => {
                once(&mut seen, 1)?;
                m.worker_id = r.string()?
            }
            b"dp_rank" => {
                once(&mut seen, 2)?;
                m.dp_rank = r.count().filter(|&v| v <= u32::MAX as u64)?
            }
            b"counter_id" => {
                once(&mut seen, 3)?;
                m.counter_id = r.count()?
            }
            b"timing_scope" => {
                once(&mut seen, 4)?;
                m.timing_scope = Some(r.string()?)
            }
            b"wall_time" => {
                once(&mut seen, 5)?;
                m.wall_time = Real(r.real()?)
            }
            b"scheduled_requests" => {
                once(&mut seen, 6)?;
                m.scheduled_requests = scheduled(&mut r)?
            }
            b"queued_requests" => {
                once(&mut seen, 7)?;
                m.queued_requests = queued(&mut r)?
            }
            _ => return None,
        }
    }
    (r.i == payload.len()).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode::decode_general;
    use crate::wire::encode::encode_payload;
    use proptest::prelude::*;

    fn golden(name: &str) -> Vec<u8> {
        let path = format!("{}/proto/golden/{name}.msgpack", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    /// The fast path takes every captured published frame (otherwise it would be
    /// useless) and agrees with the general decoder on each.
    #[test]
    fn takes_and_agrees_on_published_frames() {
        for name in [
            "v1_heartbeat",
            "v1_prefill",
            "v1_decode",
            "v1_mixed",
            "v1_large",
            "v1_worker_id_unicode",
            "v1_empty_worker",
            "vllm_timing_scope",
            "v2_unknown_version",
        ] {
            let b = golden(name);
            let fast = decode_map(&b).unwrap_or_else(|| panic!("{name}: fast path gave up"));
            assert_eq!(Ok(fast), decode_general(&b), "{name}");
        }
        // Forms it leaves to the general decoder.
        for name in ["positional_v1", "extra_unknown_field"] {
            assert!(decode_map(&golden(name)).is_none(), "{name}");
        }
    }

    fn real() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            0.0..1e6f64,
            0.0..1e18f64,
            (0u64..1000).prop_map(|v| v as f64)
        ]
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..200, 0u64..70_000, 0u64..5_000_000_000, any::<u64>()]
    }

    prop_compose! {
        fn metrics()(
            worker_id in "\\PC{0,40}",
            dp_rank in 0u64..5000,
            counter_id in count(),
            scope in proptest::option::of("[a-z_]{0,20}"),
            wall in real(),
            c in prop::array::uniform10(count()),
            r in prop::array::uniform5(real()),
        ) -> ForwardPassMetrics {
            ForwardPassMetrics {
                version: 1,
                worker_id,
                dp_rank,
                counter_id,
                timing_scope: scope,
                wall_time: Real(wall),
                scheduled_requests: ScheduledRequests {
                    num_prefill_requests: Count(c[0]),
                    sum_prefill_tokens: Count(c[1]),
                    var_prefill_length: Real(r[0]),
                    sum_prefill_kv_tokens: Count(c[2]),
                    num_decode_requests: Count(c[3]),
                    sum_decode_kv_tokens: Count(c[4]),
                    var_decode_kv_tokens: Real(r[1]),
                },
                queued_requests: QueuedRequests {
                    num_prefill_requests: Count(c[5]),
                    sum_prefill_tokens: Count(c[6]),
                    var_prefill_length: Real(r[2]),
                    num_decode_requests: Count(c[7]),
                    sum_decode_kv_tokens: Count(c[8] ^ c[9]),
                    var_decode_kv_tokens: Real(r[3] + r[4]),
                },
            }
        }
    }

    proptest! {
        /// Encoded frames round-trip through the fast path unchanged.
        #[test]
        fn round_trips_encoded_frames(m in metrics()) {
            let b = encode_payload(&m);
            prop_assert_eq!(decode_map(&b), Some(m.clone()));
            prop_assert_eq!(decode_general(&b), Ok(m));
        }

        /// On damaged bytes the fast path either gives up or says exactly what the
        /// general decoder says: it never accepts what the general decoder refuses,
        /// and never reads a value differently.
        #[test]
        fn never_disagrees_with_the_general_decoder(
            m in metrics(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut b = encode_payload(&m);
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len()) + 1);
            }
            if let Some(fast) = decode_map(&b) {
                prop_assert_eq!(decode_general(&b), Ok(fast));
            }
        }
    }
}
