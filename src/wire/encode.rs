//! Encoding that reproduces the engines' bytes exactly: a msgpack map keyed by field
//! name in schema order, floats always float64, integers in their smallest form
//! (what msgspec emits). Used by the demo engine, the load generator and replay;
//! tests compare its output with frames captured from the real publisher.

use super::ForwardPassMetrics;

/// Encodes one payload (frame 3) as the released publishers do.
pub fn encode_payload(metrics: &ForwardPassMetrics) -> Vec<u8> {
    let mut buf = Vec::with_capacity(448);
    encode_payload_into(metrics, &mut buf);
    buf
}

/// Encodes one payload into `buf` (cleared first), reusing its allocation.
pub fn encode_payload_into(metrics: &ForwardPassMetrics, buf: &mut Vec<u8>) {
    buf.clear();
    let mut ser = rmp_serde::Serializer::new(&mut *buf).with_struct_map();
    serde::Serialize::serialize(metrics, &mut ser)
        .expect("serializing plain structs into a Vec cannot fail");
}

/// The 8-byte big-endian sequence frame (frame 2).
pub fn encode_sequence(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}
