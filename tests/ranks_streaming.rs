//! `/v1/ranks` is streamed like `/metrics`: with many ranks the body leaves the
//! exporter in several HTTP chunks (read here off the socket, chunk by chunk), and the
//! document they add up to is the one rendered whole, valid against its schema.

mod common;

use fpm_exporter::config::HttpSettings;
use fpm_exporter::http::{self, AppState};
use fpm_exporter::publisher::sim::FrameModel;
use fpm_exporter::sink::ranks_document as json;
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, RankFilter, Registry, StateConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ranks` ranks fed a few load-model iterations each; windows and liveness long
/// enough that nothing but the clock readings changes while the test reads.
fn registry(ranks: u64) -> Arc<Registry> {
    let reg = Registry::new(
        StateConfig {
            windows: vec![600, 1200],
            stale_after: Duration::from_secs(300),
            expire_after: Duration::from_secs(600),
            ..Default::default()
        },
        vec![EngineInfo {
            name: "big".into(),
            labels: vec![("model".into(), "m\"1".into())],
        }],
    );
    let ep: Arc<str> = "ipc:///big".into();
    for r in 0..ranks {
        let mut model = FrameModel::new("w-\u{e9}", r, 3);
        let mut cache = RankCache::default();
        for seq in 0..8 {
            let ev = if seq == 0 {
                SeqEvent::First
            } else {
                SeqEvent::InOrder
            };
            let m = model.next_iteration().clone();
            assert!(reg.ingest(&mut cache, 0, &ep, seq, ev, m, &reg.now()));
        }
    }
    reg
}

/// GET `path` over HTTP/1.1 on a raw socket: the headers and the chunks of the
/// chunked body, each as the server framed it.
async fn get_chunks(addr: std::net::SocketAddr, path: &str) -> (String, Vec<Vec<u8>>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("response within 60 s")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "not streamed: {head}"
    );
    let mut rest = &raw[split + 4..];
    let mut chunks = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        chunks.push(rest[..size].to_vec());
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk framing");
        rest = &rest[size + 2..];
    }
    (head, chunks)
}

/// The document without what moves with the clock between two renders.
fn steady(mut doc: Value) -> Value {
    doc.as_object_mut().unwrap().remove("generated_at_ns");
    for r in doc["ranks"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("age_ms");
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_ranks_arrive_in_several_chunks_of_the_same_document() {
    let ranks = 300;
    let reg = registry(ranks);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::new(reg.clone(), &HttpSettings::default(), stop_rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = state.clone();
    tokio::spawn(async move {
        http::serve::serve(listener, http::router_for(s.clone(), http::Routes::All), &s).await
    });

    let (head, chunks) = get_chunks(addr, "/v1/ranks").await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    let body: Vec<u8> = chunks.concat();
    eprintln!(
        "{ranks} ranks: {} bytes in {} chunks (largest {} bytes)",
        body.len(),
        chunks.len(),
        chunks.iter().map(Vec::len).max().unwrap()
    );
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    // Bounded pieces: the chunk size plus at most one rank's document.
    assert!(chunks.iter().all(|c| c.len() < (256 << 10) + (64 << 10)));

    let streamed: Value = serde_json::from_slice(&body).expect("the chunks make one JSON");
    assert_eq!(streamed["ranks"].as_array().unwrap().len(), ranks as usize);
    let whole = json::ranks_document(&reg, &reg.snapshot(&RankFilter::default()));
    let whole: Value = serde_json::from_slice(&whole).unwrap();
    assert_eq!(steady(streamed), steady(whole));

    // A filtered and an empty answer are streamed and valid too.
    let (_, one) = get_chunks(addr, "/v1/ranks?dp_rank=7").await;
    let (_, none) = get_chunks(addr, "/v1/ranks?engine=nope").await;
    let one = String::from_utf8(one.concat()).unwrap();
    let none = String::from_utf8(none.concat()).unwrap();
    let v: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(v["ranks"].as_array().unwrap().len(), 1);
    assert_eq!(v["ranks"][0]["dp_rank"], 7);
    let v: Value = serde_json::from_str(&none).unwrap();
    assert!(v["ranks"].as_array().unwrap().is_empty());
    common::validate_json("ranks", &[String::from_utf8(body).unwrap(), one, none]);
}
