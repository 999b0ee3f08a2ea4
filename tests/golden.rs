//! Decoding every golden frame (captured from the real publisher, or built with
//! msgspec for the variant forms) and every malformed case.

use fpm_exporter::wire::decode::split_message;
use fpm_exporter::wire::encode::encode_payload;
use fpm_exporter::wire::{decode_message, decode_payload, DecodeError, ForwardPassMetrics};
use serde_json::{json, Value};

mod common;

fn golden(name: &str) -> (Vec<u8>, Value) {
    let dir = common::repo_root().join("proto/golden");
    let bytes = common::golden_payload(name);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (bytes, json)
}

/// The decoded frame as JSON, with the defaults the publishers use for absent fields.
fn expected(json: &Value) -> Value {
    let mut e = json.clone();
    let obj = e.as_object_mut().unwrap();
    obj.remove("sequence");
    obj.remove("future_field");
    obj.entry("version").or_insert(json!(1));
    obj.entry("counter_id").or_insert(json!(0));
    let zero_q = json!({"num_prefill_requests": 0, "sum_prefill_tokens": 0, "var_prefill_length": 0.0,
        "num_decode_requests": 0, "sum_decode_kv_tokens": 0, "var_decode_kv_tokens": 0.0});
    obj.entry("queued_requests").or_insert(zero_q);
    e
}

#[test]
fn every_accepted_golden_frame_decodes_to_its_values() {
    let accepted = [
        "v1_heartbeat",
        "v1_prefill",
        "v1_decode",
        "v1_mixed",
        "v1_large",
        "v1_worker_id_unicode",
        "v1_empty_worker",
        "positional_v1",
        "legacy_no_version",
        "vllm_timing_scope",
        "extra_unknown_field",
        "missing_queued",
    ];
    for name in accepted {
        let (bytes, json) = golden(name);
        let seq = json["sequence"].as_u64().unwrap().to_be_bytes();
        let frame = decode_message(&[&b""[..], &seq[..], &bytes[..]])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.sequence, json["sequence"].as_u64().unwrap(), "{name}");
        let got = serde_json::to_value(&frame.metrics).unwrap();
        assert_eq!(got, expected(&json), "{name}");
    }
}

#[test]
fn heartbeat_is_recognised_and_iterations_are_not() {
    assert!(decode_payload(&golden("v1_heartbeat").0)
        .unwrap()
        .is_heartbeat());
    for name in ["v1_prefill", "v1_decode", "v1_mixed"] {
        assert!(
            !decode_payload(&golden(name).0).unwrap().is_heartbeat(),
            "{name}"
        );
    }
}

/// The encoder (demo, load generator, replay) sends what the publishers send.
#[test]
fn encoding_reproduces_the_real_publishers_bytes() {
    for name in common::PUBLISHED_FORMS {
        let bytes = common::golden_payload(name);
        let m: ForwardPassMetrics =
            decode_payload(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(encode_payload(&m), bytes, "{name}: byte-exact re-encoding");
    }
}

#[test]
fn unknown_versions_are_refused_not_guessed() {
    let (bytes, _) = golden("v2_unknown_version");
    assert_eq!(decode_payload(&bytes), Err(DecodeError::UnsupportedVersion));
    // Positional form of another version too.
    let mut pos = golden("positional_v1").0;
    assert_eq!(pos[1], 0x01, "array's first element is the version");
    pos[1] = 0x07;
    assert_eq!(decode_payload(&pos), Err(DecodeError::UnsupportedVersion));
}

fn map_with(field: &str, value: rmpv::Value) -> Vec<u8> {
    let mut m = rmpv::decode::read_value(&mut &golden("v1_mixed").0[..]).unwrap();
    if let rmpv::Value::Map(entries) = &mut m {
        for (k, v) in entries.iter_mut() {
            if k.as_str() == Some(field) {
                *v = value.clone();
            }
        }
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &m).unwrap();
    out
}

#[test]
fn malformed_frames_get_their_reason() {
    let good = golden("v1_mixed").0;
    let seq = 3u64.to_be_bytes();
    let cases: Vec<(&str, Vec<Vec<u8>>, DecodeError)> = vec![
        ("1 frame", vec![good.clone()], DecodeError::FrameCount),
        (
            "2 frames",
            vec![seq.to_vec(), good.clone()],
            DecodeError::FrameCount,
        ),
        (
            "4 frames",
            vec![vec![], seq.to_vec(), good.clone(), vec![]],
            DecodeError::FrameCount,
        ),
        ("100 frames", vec![vec![1]; 100], DecodeError::FrameCount),
        (
            "7-byte sequence",
            vec![vec![], seq[..7].to_vec(), good.clone()],
            DecodeError::SequenceSize,
        ),
        (
            "empty sequence",
            vec![vec![], vec![], good.clone()],
            DecodeError::SequenceSize,
        ),
        (
            "empty payload",
            vec![vec![], seq.to_vec(), vec![]],
            DecodeError::EmptyPayload,
        ),
    ];
    for (what, frames, reason) in cases {
        assert_eq!(decode_message(&frames).unwrap_err(), reason, "{what}");
        // The subscriber frames messages with split_message: same verdict on framing,
        // and the sequence of a well-framed message even when its payload is bad.
        match reason {
            DecodeError::FrameCount | DecodeError::SequenceSize => {
                assert_eq!(split_message(&frames).unwrap_err(), reason, "{what}")
            }
            _ => assert_eq!(split_message(&frames).unwrap().0, 3, "{what}"),
        }
    }
    let payloads: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            DecodeError::Truncated,
        ),
        (
            "not msgpack (reserved marker)",
            vec![0xc1, 0x00],
            DecodeError::Malformed,
        ),
        (
            "JSON text",
            br#"{"version":1}"#.to_vec(),
            DecodeError::WrongShape,
        ),
        ("top-level int", vec![0x05], DecodeError::WrongShape),
        (
            "string count",
            map_with("dp_rank", "zero".into()),
            DecodeError::WrongShape,
        ),
        (
            "float count",
            map_with("dp_rank", 1.5.into()),
            DecodeError::WrongShape,
        ),
        (
            "NaN wall_time",
            map_with("wall_time", f64::NAN.into()),
            DecodeError::InvalidValue,
        ),
        (
            "inf wall_time",
            map_with("wall_time", f64::INFINITY.into()),
            DecodeError::InvalidValue,
        ),
        (
            "negative wall_time",
            map_with("wall_time", (-0.5).into()),
            DecodeError::InvalidValue,
        ),
        (
            "negative dp_rank",
            map_with("dp_rank", (-1i64).into()),
            DecodeError::InvalidValue,
        ),
        (
            "dp_rank beyond u32",
            map_with("dp_rank", (u64::MAX).into()),
            DecodeError::InvalidValue,
        ),
        (
            "64 MiB string header",
            vec![
                0x81, 0xa9, b'w', b'o', b'r', b'k', b'e', b'r', b'_', b'i', b'd', 0xdb, 0x04, 0, 0,
                0, b'x',
            ],
            DecodeError::Truncated,
        ),
        ("oversize", vec![0x91; 70 * 1024], DecodeError::Oversize),
        (
            "trailing bytes",
            [good.clone(), vec![0x00]].concat(),
            DecodeError::TrailingBytes,
        ),
        (
            "deep nesting",
            [
                vec![0x81, 0xa3, b'f', b'o', b'o'],
                vec![0x91; 500],
                vec![0x00],
            ]
            .concat(),
            DecodeError::TooDeep,
        ),
    ];
    for (what, payload, reason) in payloads {
        assert_eq!(decode_payload(&payload), Err(reason), "{what}");
    }
}

#[test]
fn negative_counts_in_nested_maps_are_invalid_values() {
    let mut m = rmpv::decode::read_value(&mut &golden("v1_mixed").0[..]).unwrap();
    let rmpv::Value::Map(entries) = &mut m else {
        panic!()
    };
    let (_, sched) = entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("scheduled_requests"))
        .unwrap();
    let rmpv::Value::Map(fields) = sched else {
        panic!()
    };
    fields[0].1 = (-3i64).into();
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &m).unwrap();
    assert_eq!(decode_payload(&out), Err(DecodeError::InvalidValue));
}

#[test]
fn invalid_utf8_worker_id_is_kept_lossily() {
    // {"version": 1, "worker_id": <str8 of 3 bytes, two of them not UTF-8>}
    let out = [
        &[0x82, 0xa7][..],
        b"version",
        &[0x01, 0xa9],
        b"worker_id",
        &[0xa3, b'w', 0xff, 0xfe],
    ]
    .concat();
    let decoded = decode_payload(&out).unwrap();
    assert_eq!(decoded.worker_id, "w\u{fffd}\u{fffd}");
}
