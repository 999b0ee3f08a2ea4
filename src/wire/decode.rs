//! Decoding of the 3-frame ZMQ message `[topic, sequence, payload]` into
//! [`ForwardPassMetrics`], with every failure mapped to a stable, countable reason.
//!
//! Accepted payload forms (all real msgpack):
//! - v1 map keyed by field name, as SGLang and Dynamo release it (the fast path);
//! - the positional (array) form of the same fields;
//! - early-2026 payloads without `version`/`counter_id` (map or array);
//! - vLLM-native payloads with `timing_scope` after `counter_id`.
//!
//! Unknown map keys are ignored, missing fields take the publisher's defaults,
//! and any version other than [`SUPPORTED_VERSION`] is refused, never guessed at.

use super::{Count, DecodeError, ForwardPassMetrics, Real};
use super::{MAX_PAYLOAD_BYTES, SUPPORTED_VERSION};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// Nesting deeper than this is refused (a real payload nests two levels).
const MAX_DEPTH: usize = 16;

/// A message that passed framing and decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedFrame {
    /// The wire sequence number (frame 2).
    pub sequence: u64,
    /// The decoded payload (frame 3).
    pub metrics: ForwardPassMetrics,
}

/// Reads the 8-byte big-endian sequence frame.
pub fn decode_sequence(frame: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = frame.try_into().map_err(|_| DecodeError::SequenceSize)?;
    Ok(u64::from_be_bytes(bytes))
}

/// Checks the framing of a multipart message `[topic, sequence, payload]` and reads
/// its sequence: [`decode_message`] before the payload, for a caller that accounts for
/// the sequence even when the payload turns out bad (the subscriber).
pub fn split_message<B: AsRef<[u8]>>(frames: &[B]) -> Result<(u64, &[u8]), DecodeError> {
    let [_topic, sequence, payload] = frames else {
        return Err(DecodeError::FrameCount);
    };
    Ok((decode_sequence(sequence.as_ref())?, payload.as_ref()))
}

/// Decodes one multipart message `[topic, sequence, payload]`.
pub fn decode_message<B: AsRef<[u8]>>(frames: &[B]) -> Result<DecodedFrame, DecodeError> {
    let (sequence, payload) = split_message(frames)?;
    let metrics = decode_payload(payload)?;
    Ok(DecodedFrame { sequence, metrics })
}

/// Decodes one msgpack payload in any accepted form.
pub fn decode_payload(payload: &[u8]) -> Result<ForwardPassMetrics, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::Oversize);
    }
    let metrics = match super::fast::decode_map(payload) {
        Some(m) => m,
        None => decode_general(payload)?,
    };
    if metrics.version != SUPPORTED_VERSION {
        return Err(DecodeError::UnsupportedVersion);
    }
    Ok(metrics)
}

/// The general decoder: every accepted form, every error reason, but no version check.
pub(crate) fn decode_general(payload: &[u8]) -> Result<ForwardPassMetrics, DecodeError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
    de.set_max_depth(MAX_DEPTH);
    let metrics = FpmSeed
        .deserialize(&mut de)
        .map_err(|e| DecodeError::from_rmp(&e))?;
    if de.position() as usize != payload.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(metrics)
}

/// A string that tolerates invalid UTF-8 (replaced with U+FFFD) instead of failing.
struct LossyStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for LossyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LossyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LossyStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LossyStr(Cow::Owned(v.to_owned())))
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(LossyStr(String::from_utf8_lossy(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(LossyStr(Cow::Owned(
                    String::from_utf8_lossy(v).into_owned(),
                )))
            }
        }
        d.deserialize_str(V)
    }
}

/// One top-level element of the positional form whose meaning depends on its type.
enum Elem<'a> {
    Num(u64),
    Str(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Elem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Elem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Elem::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(Elem::Num)
                    .map_err(|_| E::custom(format_args!("invalid_value: {v} is negative")))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Elem::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Elem::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Elem::Str(String::from_utf8_lossy(v)))
            }
        }
        d.deserialize_any(V)
    }
}

fn expect_num<E: de::Error>(e: Option<Elem>, field: &str) -> Result<u64, E> {
    match e {
        Some(Elem::Num(n)) => Ok(n),
        Some(Elem::Str(_)) => Err(E::custom(format_args!("wrong_shape: {field} is a string"))),
        None => Err(E::custom(format_args!("wrong_shape: {field} missing"))),
    }
}

fn dp_rank_from<E: de::Error>(v: u64) -> Result<u64, E> {
    if v > u32::MAX as u64 {
        return Err(E::custom(format_args!(
            "invalid_value: dp_rank {v} out of range"
        )));
    }
    Ok(v)
}

struct FpmSeed;

impl<'de> DeserializeSeed<'de> for FpmSeed {
    type Value = ForwardPassMetrics;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(FpmVisitor)
    }
}

struct FpmVisitor;

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Version,
    WorkerId,
    DpRank,
    CounterId,
    TimingScope,
    WallTime,
    ScheduledRequests,
    QueuedRequests,
    #[serde(other)]
    Unknown,
}

impl<'de> Visitor<'de> for FpmVisitor {
    type Value = ForwardPassMetrics;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("wrong_shape: a ForwardPassMetrics map or array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = ForwardPassMetrics {
            version: SUPPORTED_VERSION,
            ..Default::default()
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Version => m.version = map.next_value::<Count>()?.0,
                Key::WorkerId => m.worker_id = map.next_value::<LossyStr>()?.0.into_owned(),
                Key::DpRank => m.dp_rank = dp_rank_from(map.next_value::<Count>()?.0)?,
                Key::CounterId => m.counter_id = map.next_value::<Count>()?.0,
                Key::TimingScope => {
                    m.timing_scope = Some(map.next_value::<LossyStr>()?.0.into_owned())
                }
                Key::WallTime => m.wall_time = map.next_value::<Real>()?,
                Key::ScheduledRequests => m.scheduled_requests = map.next_value()?,
                Key::QueuedRequests => m.queued_requests = map.next_value()?,
                Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut m = ForwardPassMetrics {
            version: SUPPORTED_VERSION,
            ..Default::default()
        };
        match seq.next_element::<Elem>()? {
            // Early-2026 layout: [worker_id, dp_rank, wall_time, scheduled, queued].
            Some(Elem::Str(worker_id)) => {
                m.worker_id = worker_id.into_owned();
                m.dp_rank = dp_rank_from(expect_num(seq.next_element()?, "dp_rank")?)?;
            }
            // v1 layout: [version, worker_id, dp_rank, counter_id, (timing_scope,) wall_time, ...].
            Some(Elem::Num(version)) => {
                m.version = version;
                m.worker_id = seq
                    .next_element::<LossyStr>()?
                    .map(|s| s.0.into_owned())
                    .unwrap_or_default();
                m.dp_rank = dp_rank_from(seq.next_element::<Count>()?.unwrap_or_default().0)?;
                m.counter_id = seq.next_element::<Count>()?.unwrap_or_default().0;
                if version != SUPPORTED_VERSION {
                    // Field layout of other versions is unknown: stop here, the caller refuses it.
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(m);
                }
            }
            None => return Ok(m),
        }
        // wall_time, possibly preceded by vLLM's timing_scope string.
        match seq.next_element::<WallOrScope>()? {
            Some(WallOrScope::Scope(s)) => {
                m.timing_scope = Some(s);
                m.wall_time = seq.next_element::<Real>()?.unwrap_or_default();
            }
            Some(WallOrScope::Wall(w)) => m.wall_time = w,
            None => return Ok(m),
        }
        m.scheduled_requests = seq.next_element()?.unwrap_or_default();
        m.queued_requests = seq.next_element()?.unwrap_or_default();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(m)
    }
}

enum WallOrScope {
    Wall(Real),
    Scope(String),
}

impl<'de> Deserialize<'de> for WallOrScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WallOrScope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("wall_time or timing_scope")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Real::deserialize(de::value::F64Deserializer::<E>::new(v)).map(WallOrScope::Wall)
            }
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<Self::Value, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WallOrScope::Scope(v.to_owned()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(WallOrScope::Scope(String::from_utf8_lossy(v).into_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A [`ForwardPassMetrics`] read from any self-describing serde format (the JSON of a
/// capture) by the same rules as the msgpack payload: unknown keys ignored, missing
/// fields defaulted, invalid numbers refused.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyFormat(pub ForwardPassMetrics);

impl<'de> Deserialize<'de> for AnyFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FpmSeed.deserialize(d).map(AnyFormat)
    }
}
