use super::*;
use serde_json::Value;

fn writer(dir: &Path, max_bytes: u64, keep: u32) -> CaptureWriter {
    let path = dir.join("cap.jsonl");
    CaptureWriter {
        file: create(&path).unwrap(),
        size: 0,
        settings: RecordSettings {
            path,
            max_bytes,
            keep,
        },
        stats: Arc::new(RecordStats::default()),
        last_warning: None,
    }
}

#[test]
fn rotation_keeps_whole_lines_and_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 25, 2);
    // Ten lines of 10 bytes: two per file (a third would make 30 > 25).
    let lines: Vec<String> = (0..10).map(|i| format!("line-{i:03}\n")).collect();
    w.write_chunk(lines[..3].concat().as_bytes()).unwrap();
    w.write_chunk(lines[3..].concat().as_bytes()).unwrap();
    let path = w.settings.path.clone();
    let read = |n: Option<u32>| {
        let p = n.map_or(path.clone(), |n| rotated(&path, n));
        std::fs::read_to_string(p).unwrap()
    };
    assert_eq!(read(None), lines[8..].concat());
    assert_eq!(read(Some(1)), lines[6..8].concat());
    assert_eq!(read(Some(2)), lines[4..6].concat());
    assert!(
        !rotated(&w.settings.path, 3).exists(),
        "only keep=2 rotated files stay"
    );
    assert_eq!(w.stats.rotations.load(Relaxed), 4);
    // A line longer than the limit still gets written, alone.
    let long = format!("{}\n", "x".repeat(40));
    w.write_chunk(long.as_bytes()).unwrap();
    assert_eq!(read(None), long);
    assert_eq!(read(Some(1)), lines[8..].concat());
}

fn frame_event(i: u64) -> Arc<crate::state::Event> {
    let metrics = crate::wire::ForwardPassMetrics {
        version: 1,
        counter_id: i,
        ..Default::default()
    };
    Arc::new(crate::state::Event {
        key: crate::state::rank::RankKey {
            engine: 0,
            worker_id: "w".into(),
            dp_rank: 0,
        },
        kind: EventKind::Frame {
            sequence: i,
            received_at_ns: 1000 + i,
            metrics,
        },
    })
}

#[tokio::test]
async fn a_recorder_that_falls_behind_counts_what_it_lost() {
    // The ring holds 16 events; 40 arrive before the recorder reads any.
    let (events, rx) = tokio::sync::broadcast::channel(16);
    for i in 0..40 {
        events.send(frame_event(i)).unwrap();
    }
    let (tx, chunks) = sync_channel(CHUNKS_QUEUED);
    let stats = Arc::new(RecordStats::default());
    let (_stop, stop_rx) = watch::channel(true);
    collect(rx, tx, stats.clone(), stop_rx).await;
    let lines: Vec<Value> = chunks
        .try_iter()
        .flat_map(|(c, _)| {
            String::from_utf8(c)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect();
    assert_eq!(stats.dropped.load(Relaxed), 24);
    assert_eq!(
        lines.len(),
        16,
        "the newest 16 are still written at shutdown"
    );
    assert_eq!(lines[0]["received_at_ns"], 1024);
    assert_eq!(lines[15]["metrics"]["counter_id"], 39);

    // A full hand-off channel drops the chunk and counts its frames.
    let (tx, _keep) = sync_channel(1);
    tx.try_send((Vec::new(), 0)).unwrap();
    let mut p = Pending {
        buf: Vec::new(),
        frames: 0,
    };
    for i in 0..5 {
        p.push(&frame_event(i));
    }
    p.hand_off(&tx, &stats);
    assert_eq!(stats.dropped.load(Relaxed), 24 + 5);
}
