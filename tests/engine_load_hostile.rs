//! Hostile and stale load-snapshot files beside a live engine (SGLang's real writer):
//! each is counted by its reason, shown, and changes nothing for the live engine.

mod common;

use common::{sample, Exporter};
use rmpv::Value as V;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SLOT: u32 = 16384;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn payload(ts: f64, rank: i64, running: i64) -> Vec<u8> {
    let m = V::Map(vec![
        (V::from("timestamp"), V::from(ts)),
        (V::from("dp_rank"), V::from(rank)),
        (V::from("num_running_reqs"), V::from(running)),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &m).unwrap();
    out
}

/// A file as SGLang lays it out, with the header's fields given; `None` slots empty,
/// `Err(len)` a slot whose length is `len` over zeros.
fn write(path: &Path, magic: &[u8; 4], version: u16, dp_size: u16, slots: &[Result<Vec<u8>, u32>]) {
    let mut b = Vec::new();
    b.extend_from_slice(magic);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&dp_size.to_le_bytes());
    b.extend_from_slice(&SLOT.to_le_bytes());
    for s in slots {
        let start = b.len();
        match s {
            Ok(p) => {
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                b.extend_from_slice(p);
            }
            Err(len) => b.extend_from_slice(&len.to_le_bytes()),
        }
        b.resize(start + SLOT as usize, 0);
    }
    std::fs::write(path, b).unwrap();
}

fn good(ts: f64, n: u16, running: i64) -> Vec<Result<Vec<u8>, u32>> {
    (0..n).map(|r| Ok(payload(ts, r.into(), running))).collect()
}

fn errors(m: &str, engine: &str, reason: &str) -> f64 {
    sample(
        m,
        "fpm_load_snapshot_errors_total",
        &[("engine", engine), ("reason", reason)],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_stale_files_are_counted_shown_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_writers, files) = common::snapshots::Writers::start(&d.join("."), 1, 2, 20, 120.0);
    let live_id = files.as_object().unwrap().keys().next().unwrap().clone();
    for sub in ["bad", "old", "trunc"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    // Header faults, one file each.
    write(&d.join("bad/magic.shm"), b"SLNX", 2, 1, &good(now(), 1, 1));
    write(
        &d.join("bad/version.shm"),
        b"SLNS",
        3,
        1,
        &good(now(), 1, 1),
    );
    write(&d.join("bad/size.shm"), b"SLNS", 2, 4, &good(now(), 2, 1));
    std::fs::write(d.join("bad/small.shm"), b"SLNS").unwrap();
    // Slot faults beside a good slot.
    let garbage = vec![0xc1, 0xff, 0x00];
    write(
        &d.join("slots.shm"),
        b"SLNS",
        2,
        3,
        &[Err(SLOT), Ok(garbage), Ok(payload(now(), 2, 7))],
    );
    // A dead engine's file (30 s old) and 2,000 from long ago.
    write(
        &d.join("stale.shm"),
        b"SLNS",
        2,
        1,
        &good(now() - 30.0, 1, 3),
    );
    for i in 0..2000 {
        write(
            &d.join(format!("old/sglang_loads_{i:012x}_0badf00d.shm")),
            b"SLNS",
            2,
            1,
            &good(now() - 3600.0, 1, 1),
        );
    }
    write(
        &d.join("swap.shm"),
        b"SLNS",
        2,
        1,
        &good(now() + 60.0, 1, 5),
    );
    write(
        &d.join("trunc/t.shm"),
        b"SLNS",
        2,
        2,
        &good(now() + 60.0, 2, 4),
    );
    let mut toml = String::new();
    for (name, pattern) in [
        (
            "live",
            format!("{}/sglang_loads_{live_id}_*.shm", d.display()),
        ),
        ("bad", format!("{}/bad/*.shm", d.display())),
        ("slots", format!("{}/slots.shm", d.display())),
        ("stale", format!("{}/stale.shm", d.display())),
        ("old", format!("{}/old/sglang_loads_*.shm", d.display())),
        ("swap", format!("{}/swap.shm", d.display())),
        ("trunc", format!("{}/trunc/*.shm", d.display())),
    ] {
        toml += &format!("[[engine]]\nname = \"{name}\"\nload_snapshot = \"{pattern}\"\n");
    }
    std::fs::write(d.join("e.toml"), toml).unwrap();
    let exp = Exporter::start(&["--config", d.join("e.toml").to_str().unwrap()]).await;
    let loads = |v: &str| serde_json::from_str::<serde_json::Value>(v).unwrap()["loads"].clone();

    // The live engine answers in full, whatever else is on the node.
    let t = std::time::Instant::now();
    let (s, body) = exp.get("/engines/live/v1/loads").await;
    assert_eq!(
        (s, loads(&body).as_array().unwrap().len()),
        (200, 2),
        "{body}"
    );
    let (s, body) = exp.get("/engines/slots/v1/loads").await;
    let l = loads(&body);
    assert_eq!(
        (s, l.as_array().unwrap().len(), &l[0]["dp_rank"]),
        (200, 1, &2.into()),
        "{body}"
    );
    assert_eq!(
        loads(&exp.get("/engines/stale/v1/loads").await.1),
        serde_json::json!([])
    );
    assert_eq!(exp.get("/engines/stale/health").await.0, 503);
    assert_eq!(exp.get("/engines/live/health").await.0, 200);
    assert_eq!(
        loads(&exp.get("/engines/old/v1/loads").await.1),
        serde_json::json!([])
    );
    let first_pass = t.elapsed();

    // A file replaced by another engine's: its slots start afresh.
    assert_eq!(
        loads(&exp.get("/engines/swap/v1/loads").await.1)[0]["num_running_reqs"],
        5
    );
    write(
        &d.join("swap.new"),
        b"SLNS",
        2,
        2,
        &good(now() + 60.0, 2, 9),
    );
    std::fs::rename(d.join("swap.new"), d.join("swap.shm")).unwrap();
    let l = loads(&exp.get("/engines/swap/v1/loads").await.1);
    assert_eq!(
        (
            l[0]["num_running_reqs"].clone(),
            l[1]["num_running_reqs"].clone()
        ),
        (9.into(), 9.into())
    );

    // A file truncated and restored while read: never a crash, never a torn answer.
    let path = d.join("trunc/t.shm");
    let whole = std::fs::read(&path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, path, whole) = (stop.clone(), path.clone(), whole.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(100).unwrap();
                f.set_len(whole.len() as u64).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &whole, 0).unwrap();
            }
        })
    };
    for _ in 0..100 {
        let (s, body) = exp.get("/engines/trunc/v1/loads").await;
        assert_eq!(s, 200);
        for e in loads(&body).as_array().unwrap() {
            assert_eq!(e["num_running_reqs"], 4, "{body}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();

    // Every fault counted by its reason; slot faults once, not once per read.
    exp.get("/engines/slots/v1/loads").await;
    let m = exp.metrics().await;
    for reason in ["magic", "version", "size", "too_small"] {
        assert_eq!(errors(&m, "bad", reason), 1.0, "{reason}");
    }
    assert_eq!(
        sample(
            &m,
            "fpm_load_snapshot_files",
            &[("engine", "bad"), ("state", "rejected")]
        ),
        Some(4.0)
    );
    assert_eq!(
        (
            errors(&m, "slots", "slot_length"),
            errors(&m, "slots", "decode")
        ),
        (1.0, 1.0)
    );
    assert_eq!(errors(&m, "swap", "replaced"), 1.0);
    let trunc: f64 = ["size", "truncated", "too_small", "decode"]
        .iter()
        .map(|r| errors(&m, "trunc", r))
        .sum();
    assert!(trunc >= 1.0, "the truncations were seen");
    assert_eq!(
        sample(
            &m,
            "fpm_load_snapshot_ranks",
            &[("engine", "stale"), ("state", "stale")]
        ),
        Some(1.0)
    );
    assert!(sample(&m, "fpm_load_snapshot_age_seconds", &[("engine", "stale")]).unwrap() >= 30.0);
    assert!(
        sample(
            &m,
            "fpm_load_snapshot_num_running_reqs",
            &[("engine", "stale")]
        )
        .is_none(),
        "stale load is not live load"
    );
    assert_eq!(
        sample(
            &m,
            "fpm_load_snapshot_files",
            &[("engine", "old"), ("state", "expired")]
        ),
        Some(2000.0)
    );
    for r in [
        "magic",
        "size",
        "decode",
        "slot_length",
        "replaced",
        "truncated",
        "permission",
    ] {
        assert_eq!(errors(&m, "live", r), 0.0, "{r}");
    }
    assert_eq!(
        sample(
            &m,
            "fpm_load_snapshot_ranks",
            &[("engine", "live"), ("state", "live")]
        ),
        Some(2.0)
    );

    // Set aside, the 2,000 expired files cost nothing per request.
    let t = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(exp.get("/engines/old/v1/loads").await.0, 200);
    }
    let per_request = t.elapsed() / 20;
    assert!(
        per_request < first_pass.max(Duration::from_millis(50)),
        "{per_request:?} vs first pass {first_pass:?}"
    );
    exp.stop().await;
}
