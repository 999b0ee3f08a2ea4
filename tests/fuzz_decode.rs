//! A bounded fuzz of the decoder in the normal suite: 20,000 inputs, random and
//! mutated from the golden frames, through both the payload and the full-message
//! decoders. It must never panic, and whatever it accepts must be a frame the
//! statistics can take (finite, non-negative, supported version).

use fpm_exporter::wire::{
    decode_message, decode_payload, ForwardPassMetrics, MAX_PAYLOAD_BYTES, SUPPORTED_VERSION,
};
use proptest::prelude::*;
use std::sync::OnceLock;

fn goldens() -> &'static [Vec<u8>] {
    static G: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    G.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/golden");
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "msgpack"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        out.sort();
        assert!(out.len() >= 10, "golden frames missing");
        out
    })
}

/// One way of damaging a frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Overwrite 4 bytes with a big-endian length (attacks length headers).
    Length {
        at: usize,
        len: u32,
    },
    Splice {
        other: usize,
        from: usize,
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), any::<u32>()).prop_map(|(at, len)| Mutation::Length { at, len }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(other, from, at)| Mutation::Splice { other, from, at }),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let n = buf.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if !buf.is_empty() {
                buf[at % n] ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if !buf.is_empty() {
                buf[at % n] = *byte;
            }
        }
        Mutation::Truncate { at } => buf.truncate(at % n),
        Mutation::Insert { at, bytes } => {
            let at = at % (buf.len() + 1);
            buf.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(buf.len());
            if at < end {
                buf.drain(at..end);
            }
        }
        Mutation::Length { at, len } => {
            let at = at % n;
            for (i, b) in len.to_be_bytes().into_iter().enumerate() {
                if let Some(x) = buf.get_mut(at + i) {
                    *x = b;
                }
            }
        }
        Mutation::Splice { other, from, at } => {
            let g = &goldens()[other % goldens().len()];
            let from = from % g.len();
            let at = at % n;
            let tail = g[from..].to_vec();
            buf.truncate(at);
            buf.extend_from_slice(&tail);
        }
    }
}

/// What an accepted frame must satisfy, whatever the input was.
fn check_accepted(m: &ForwardPassMetrics) {
    assert_eq!(m.version, SUPPORTED_VERSION);
    let s = &m.scheduled_requests;
    let q = &m.queued_requests;
    for x in [
        m.wall_time.0,
        s.var_prefill_length.0,
        s.var_decode_kv_tokens.0,
        q.var_prefill_length.0,
        q.var_decode_kv_tokens.0,
    ] {
        assert!(x.is_finite() && x >= 0.0, "accepted {x}");
    }
    assert!(m.dp_rank <= u32::MAX as u64);
}

fn decode_all(payload: &[u8]) {
    if let Ok(m) = decode_payload(payload) {
        check_accepted(&m);
    }
    let seq = 5u64.to_be_bytes();
    let frames: [&[u8]; 3] = [b"", &seq, payload];
    if let Ok(f) = decode_message(&frames) {
        assert_eq!(f.sequence, 5);
        check_accepted(&f.metrics);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 15_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_golden_frames_never_panic(seed in any::<usize>(), muts in proptest::collection::vec(mutation(), 1..6)) {
        let mut buf = goldens()[seed % goldens().len()].clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        decode_all(&buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
    }
}

#[test]
fn golden_frames_still_decode() {
    // The seeds themselves: every v1 golden is accepted (v2 and nothing else refused).
    let mut accepted = 0;
    for g in goldens() {
        if let Ok(m) = decode_payload(g) {
            check_accepted(&m);
            accepted += 1;
        }
    }
    assert_eq!(
        accepted,
        goldens().len() - 1,
        "all but v2_unknown_version decode"
    );
}

#[test]
fn oversize_and_edge_lengths() {
    // Exactly at the limit: refused only for shape, not size; one past: oversize.
    let at_limit = vec![0x90u8; MAX_PAYLOAD_BYTES];
    assert_ne!(decode_payload(&at_limit).unwrap_err().as_str(), "oversize");
    let past = vec![0x90u8; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(decode_payload(&past).unwrap_err().as_str(), "oversize");
    // Length headers claiming up to 4 GiB with nothing behind them.
    for header in [
        [0xdbu8, 0xff, 0xff, 0xff, 0xff],
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdf, 0xff, 0xff, 0xff, 0xff],
        [0xc6, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert_eq!(
            decode_payload(&header).unwrap_err().as_str(),
            "truncated",
            "{header:02x?}"
        );
    }
}
