//! Dynamo's event envelope: a MessagePack map `{publisher_id, sequence, published_at,
//! topic, payload}` written by rmp_serde's `to_vec_named` (dynamo-runtime
//! transports/event_plane/codec.rs). The payload is the engine's FPM bytes.

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

/// An envelope, borrowing its topic and payload from the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope<'a> {
    /// The publishing runtime's id (Dynamo masks it to 53 bits).
    pub publisher_id: u64,
    /// Per publisher, from 0.
    pub sequence: u64,
    /// Unix milliseconds at publication.
    pub published_at: u64,
    /// The event topic (`forward-pass-metrics` for FPM).
    pub topic: &'a str,
    /// The FPM msgpack bytes.
    #[serde(serialize_with = "as_bin")]
    pub payload: &'a [u8],
}

fn as_bin<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not a MessagePack map of the envelope's fields with their types.
    Malformed,
    /// A required field is absent.
    MissingField,
}

/// A decoded envelope and how many fields of it this build does not know.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The envelope.
    pub envelope: Envelope<'a>,
    /// Fields ignored (Dynamo's decoder ignores them too).
    pub unknown_fields: u32,
}

/// Encodes an envelope exactly as Dynamo's `MsgpackCodec::encode_envelope_parts`.
pub fn encode(envelope: &Envelope<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    let mut ser = rmp_serde::Serializer::new(&mut *buf).with_struct_map();
    envelope
        .serialize(&mut ser)
        .expect("serializing into a Vec cannot fail");
}

/// Decodes an envelope, borrowing from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, EnvelopeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    match de.deserialize_map(EnvelopeVisitor) {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(EnvelopeError::Malformed),
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Result<Decoded<'de>, EnvelopeError>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event envelope map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut publisher_id, mut sequence, mut published_at) = (None, None, None);
        let (mut topic, mut payload) = (None, None);
        let mut unknown_fields = 0u32;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "publisher_id" => publisher_id = Some(map.next_value::<u64>()?),
                "sequence" => sequence = Some(map.next_value::<u64>()?),
                "published_at" => published_at = Some(map.next_value::<u64>()?),
                "topic" => topic = Some(map.next_value::<&'de str>()?),
                "payload" => payload = Some(map.next_value::<&'de [u8]>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    unknown_fields = unknown_fields.saturating_add(1);
                }
            }
        }
        let (Some(publisher_id), Some(sequence), Some(published_at), Some(topic), Some(payload)) =
            (publisher_id, sequence, published_at, topic, payload)
        else {
            return Ok(Err(EnvelopeError::MissingField));
        };
        Ok(Ok(Decoded {
            envelope: Envelope {
                publisher_id,
                sequence,
                published_at,
                topic,
                payload,
            },
            unknown_fields,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_borrows() {
        let e = Envelope {
            publisher_id: 12345,
            sequence: 42,
            published_at: 1_700_000_000_000,
            topic: "forward-pass-metrics",
            payload: b"\x81\xa1a\x01",
        };
        let mut buf = Vec::new();
        encode(&e, &mut buf);
        let d = decode(&buf).unwrap();
        assert_eq!(d.envelope, e);
        assert_eq!(d.unknown_fields, 0);
        let p = d.envelope.payload.as_ptr() as usize;
        assert!(p >= buf.as_ptr() as usize && p < buf.as_ptr() as usize + buf.len());
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert_eq!(decode(b"").unwrap_err(), EnvelopeError::Malformed);
        assert_eq!(decode(&[0xc1]).unwrap_err(), EnvelopeError::Malformed);
        assert_eq!(
            decode(&[0x93, 1, 2, 3]).unwrap_err(),
            EnvelopeError::Malformed
        );
        // {"publisher_id": 1}
        let mut one = vec![0x81, 0xac];
        one.extend_from_slice(b"publisher_id");
        one.push(1);
        assert_eq!(decode(&one).unwrap_err(), EnvelopeError::MissingField);
        // {"publisher_id": -1}
        let mut neg = vec![0x81, 0xac];
        neg.extend_from_slice(b"publisher_id");
        neg.push(0xff);
        assert_eq!(decode(&neg).unwrap_err(), EnvelopeError::Malformed);
    }
}
