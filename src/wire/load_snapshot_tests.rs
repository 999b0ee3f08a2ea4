use super::*;
use rmpv::Value as V;

fn encode(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn map(pairs: Vec<(&str, V)>) -> V {
    V::Map(pairs.into_iter().map(|(k, v)| (V::from(k), v)).collect())
}

#[test]
fn omitted_fields_take_their_defaults_and_unknown_keys_are_skipped() {
    let payload = encode(&map(vec![
        ("timestamp", V::from(12.5)),
        ("dp_rank", V::from(3)),
        ("field_of_a_newer_sglang", V::Array(vec![V::from(1)])),
        ("token_usage", V::from(1)),
        ("queues", V::Array((1..=6).map(V::from).collect())),
        ("disaggregation", V::Array(vec![V::from("decode")])),
    ]));
    let s = decode(&payload).unwrap();
    assert_eq!(s.core[core::DP_RANK], Scalar::Int(3));
    // A float field takes an int, as msgspec does.
    assert_eq!(s.core[core::TOKEN_USAGE], Scalar::Float(1.0));
    assert_eq!(s.core[core::NUM_USED_TOKENS], Scalar::Int(0));
    // A longer section array (a newer SGLang) keeps the known fields.
    let q = s.sections[4].as_ref().unwrap();
    assert_eq!(q.len(), 5);
    assert_eq!(q[4], Scalar::Int(5));
    // Defaults fill a shorter one past its required fields.
    let d = s.sections[3].as_ref().unwrap();
    assert_eq!(d[0], Scalar::Str("decode".into()));
    assert_eq!(d[7], Scalar::Float(0.0));
    let json = serde_json::to_value(Entry {
        snapshot: &s,
        include: Include::parse(Some("core,queues")).unwrap(),
    })
    .unwrap();
    assert_eq!(json["queues"]["prealloc_ready"], 5);
    assert!(json.get("disaggregation").is_none());
    assert_eq!(json["decode_moments"], serde_json::Value::Null);
    assert_eq!(json.as_object().unwrap().len(), 19);
}

#[test]
fn wrong_types_short_sections_and_trailing_bytes_are_refused() {
    for (bad, why) in [
        (
            map(vec![("num_running_reqs", V::from(1.0))]),
            "expected Int",
        ),
        (
            map(vec![("num_running_reqs", V::Boolean(true))]),
            "expected Int",
        ),
        (map(vec![("dp_rank", V::Nil)]), "expected Int"),
        (
            map(vec![("memory", V::Array(vec![V::from(1.0)]))]),
            "at least 4",
        ),
        (map(vec![("queues", map(vec![]))]), "array_like"),
        (V::Array(vec![]), "map"),
    ] {
        let e = decode(&encode(&bad)).unwrap_err();
        assert!(e.0.contains(why), "{bad}: {e}");
    }
    let mut p = encode(&map(vec![("dp_rank", V::from(1))]));
    p.push(0xc0);
    assert!(decode(&p).unwrap_err().0.contains("after the snapshot"));
    assert!(decode(&[0xde, 0xff]).is_err());
    assert!(decode(&[]).is_err());
}

#[test]
fn include_follows_sglang_to_dict() {
    assert_eq!(Include::parse(None).unwrap(), Include::ALL);
    assert_eq!(Include::parse(Some("")).unwrap(), Include::ALL);
    // `all` wins before the names are checked, as in to_dict.
    assert_eq!(Include::parse(Some("all,bogus")).unwrap(), Include::ALL);
    assert_eq!(
        Include::parse(Some(" spec , disagg")).unwrap().sections,
        [false, true, false, true, false]
    );
    assert_eq!(Include::parse(Some("core")).unwrap().sections, [false; 5]);
    let e = Include::parse(Some("core,")).unwrap_err();
    assert!(e.contains("[\"\"]"), "{e}");
    assert!(Include::parse(Some("memory,cpu"))
        .unwrap_err()
        .contains("cpu"));
}
