//! Payloads no encoder would produce, and the table of hostile messages with the
//! reason each must be counted under.

use super::*;

/// A msgpack value for building payloads the encoder would never produce.
#[derive(Clone)]
pub(crate) enum V {
    U(u64),
    I(i64),
    F(f64),
    S(Vec<u8>),
    Map(Vec<(&'static str, V)>),
}

pub(crate) fn write(v: &V, out: &mut Vec<u8>) {
    match v {
        V::U(n) => {
            rmp::encode::write_uint(out, *n).unwrap();
        }
        V::I(n) => {
            rmp::encode::write_sint(out, *n).unwrap();
        }
        V::F(x) => rmp::encode::write_f64(out, *x).unwrap(),
        V::S(b) => {
            rmp::encode::write_str_len(out, b.len() as u32).unwrap();
            out.extend_from_slice(b);
        }
        V::Map(entries) => {
            rmp::encode::write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                rmp::encode::write_str(out, k).unwrap();
                write(v, out);
            }
        }
    }
}

/// A v1 payload with the given worker_id and overrides of wall_time and
/// scheduled_requests.num_decode_requests.
pub(crate) fn fpm(worker_id: &[u8], wall_time: V, decode_requests: V) -> Vec<u8> {
    let v = V::Map(vec![
        ("version", V::U(1)),
        ("worker_id", V::S(worker_id.to_vec())),
        ("dp_rank", V::U(0)),
        ("counter_id", V::U(0)),
        ("wall_time", wall_time),
        (
            "scheduled_requests",
            V::Map(vec![("num_decode_requests", decode_requests)]),
        ),
    ]);
    let mut out = Vec::new();
    write(&v, &mut out);
    out
}

pub(crate) fn msg(payload: impl Into<Bytes>) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::copy_from_slice(&7u64.to_be_bytes()),
        payload.into(),
    ]
}

pub(crate) fn golden(name: &str) -> Vec<u8> {
    std::fs::read(common::repo_root().join("proto/golden").join(name)).unwrap()
}

pub(crate) fn busy(worker_id: &str, tokens: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        wall_time: Real(0.02),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(8),
            sum_prefill_tokens: Count(tokens),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every hostile case: a name, the multipart message, and the reason it must be counted under.
pub(crate) fn cases() -> Vec<(&'static str, Vec<Bytes>, &'static str)> {
    let good = golden("v1_decode.msgpack");
    let nested = {
        // {"x": [[[[...]]]]}: an unknown key whose value nests 200 levels deep.
        let mut p = vec![0x81, 0xa1, b'x'];
        p.extend(std::iter::repeat_n(0x91u8, 200));
        p.push(0x00);
        p
    };
    let huge_str = {
        // worker_id claims 64 MiB (str32 header) but carries 3 bytes.
        let mut p = vec![0x81, 0xa9];
        p.extend_from_slice(b"worker_id");
        p.push(0xdb);
        p.extend_from_slice(&(64u32 << 20).to_be_bytes());
        p.extend_from_slice(b"abc");
        p
    };
    let huge_array = {
        // A top-level array claiming 2^32-1 elements with one present.
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]
    };
    let mut trailing = good.clone();
    trailing.push(0xc0);
    let seq = Bytes::copy_from_slice(&1u64.to_be_bytes());
    vec![
        ("one frame", vec![Bytes::from(good.clone())], "frame_count"),
        (
            "two frames",
            vec![Bytes::new(), Bytes::from(good.clone())],
            "frame_count",
        ),
        (
            "four frames",
            {
                let mut m = msg(good.clone());
                m.push(Bytes::new());
                m
            },
            "frame_count",
        ),
        (
            "hundred frames",
            vec![Bytes::from_static(b"x"); 100],
            "frame_count",
        ),
        (
            "all frames empty",
            vec![Bytes::new(), Bytes::new(), Bytes::new()],
            "sequence_size",
        ),
        (
            "sequence of 7 bytes",
            vec![
                Bytes::new(),
                Bytes::from_static(&[0; 7]),
                Bytes::from(good.clone()),
            ],
            "sequence_size",
        ),
        (
            "sequence of 9 bytes",
            vec![
                Bytes::new(),
                Bytes::from_static(&[0; 9]),
                Bytes::from(good.clone()),
            ],
            "sequence_size",
        ),
        (
            "empty payload",
            vec![Bytes::new(), seq.clone(), Bytes::new()],
            "empty_payload",
        ),
        ("not msgpack", msg(vec![0xc1, 0xc1, 0xc1]), "malformed"),
        (
            "truncated",
            msg(good[..good.len() / 2].to_vec()),
            "truncated",
        ),
        (
            "a string, not a map",
            msg(vec![0xa3, b'a', b'b', b'c']),
            "wrong_shape",
        ),
        ("a bool, not a map", msg(vec![0xc3]), "wrong_shape"),
        (
            "wall_time is a string",
            msg(fpm(b"h", V::S(b"fast".to_vec()), V::U(1))),
            "wrong_shape",
        ),
        ("deep nesting", msg(nested), "too_deep"),
        ("64 MiB string header", msg(huge_str), "truncated"),
        ("2^32 array header", msg(huge_array), "truncated"),
        (
            "1 MiB worker_id",
            msg(fpm(&vec![b'w'; 1 << 20], V::F(0.01), V::U(1))),
            "oversize",
        ),
        ("trailing bytes", msg(trailing), "trailing_bytes"),
        (
            "NaN wall_time",
            msg(fpm(b"h", V::F(f64::NAN), V::U(1))),
            "invalid_value",
        ),
        (
            "+inf wall_time",
            msg(fpm(b"h", V::F(f64::INFINITY), V::U(1))),
            "invalid_value",
        ),
        (
            "-inf wall_time",
            msg(fpm(b"h", V::F(f64::NEG_INFINITY), V::U(1))),
            "invalid_value",
        ),
        (
            "negative wall_time",
            msg(fpm(b"h", V::F(-0.5), V::U(1))),
            "invalid_value",
        ),
        (
            "negative count",
            msg(fpm(b"h", V::F(0.01), V::I(-3))),
            "invalid_value",
        ),
        (
            "i64::MIN count",
            msg(fpm(b"h", V::F(0.01), V::I(i64::MIN))),
            "invalid_value",
        ),
        (
            "wall_time beyond u64",
            msg(fpm(b"h", V::F(1e30), V::U(1))),
            "invalid_value",
        ),
        (
            "count as a float beyond u64",
            msg(fpm(b"h", V::F(0.01), V::F(1e30))),
            "wrong_shape",
        ),
        (
            "unknown version",
            msg(golden("v2_unknown_version.msgpack")),
            "unsupported_version",
        ),
    ]
}
