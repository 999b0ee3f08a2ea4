//! EACCES: SGLang's writer creates its load-snapshot file 0600, so an exporter that does
//! not run as the engine's uid cannot read it. The exporter binary runs here as the
//! unprivileged uid 65534 (`setpriv`, util-linux) against root's files: a 0600 file, a
//! 0700 directory (by glob and by path) and, beside them, a file it may read. Each
//! unreadable one is a counted reason on `/metrics` and a WARN in the log; the readable
//! engine is served as if nothing else were there.

mod common;

use common::snapshots::Writers;
use common::{free_port_range, sample, wait_for};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NOBODY: &str = "65534";

struct Unprivileged(Child);

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_are_counted_and_logged_when_not_the_engines_uid() {
    if !Command::new("setpriv")
        .arg("--version")
        .status()
        .is_ok_and(|s| s.success())
    {
        panic!("setpriv (util-linux) is needed: apt-get install util-linux");
    }
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let (good, file_dir, locked_dir) = (
        root.path().join("good"),
        root.path().join("files"),
        root.path().join("locked"),
    );
    let (mut writers, files) = Writers::start(root.path(), 3, 2, 100, 1.0);
    let paths: Vec<std::path::PathBuf> = files
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_str().unwrap().into())
        .collect();
    // Moved under the writers' open descriptors: they keep writing the same files.
    let mut moved = Vec::new();
    for (p, (dir, mode)) in
        paths
            .iter()
            .zip([(&good, 0o755), (&file_dir, 0o755), (&locked_dir, 0o700)])
    {
        std::fs::create_dir_all(dir).unwrap();
        chmod(dir, mode);
        let to = dir.join(p.file_name().unwrap());
        std::fs::rename(p, &to).unwrap();
        moved.push(to);
    }
    // The writer made each file 0600, root's: only the good one is opened up.
    assert_eq!(
        std::fs::metadata(&moved[1]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    chmod(&moved[0], 0o644);
    writers.next(Duration::from_secs(60)); // the last snapshots are written

    let config = root.path().join("engines.toml");
    let glob = |dir: &std::path::Path| format!("{}/sglang_loads_*.shm", dir.display());
    std::fs::write(
        &config,
        format!(
            "stale_after = \"60s\"\n\
             [[engine]]\nname = \"good\"\nload_snapshot = \"{}\"\n\
             [[engine]]\nname = \"file0600\"\nload_snapshot = \"{}\"\n\
             [[engine]]\nname = \"dir0700\"\nload_snapshot = \"{}\"\n\
             [[engine]]\nname = \"path0700\"\nload_snapshot = \"{}\"\n",
            glob(&good),
            glob(&file_dir),
            glob(&locked_dir),
            moved[2].display(),
        ),
    )
    .unwrap();
    let log = root.path().join("exporter.log");
    let port = free_port_range(1);
    let url = format!("http://127.0.0.1:{port}");
    let _exporter = Unprivileged(
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                env!("CARGO_BIN_EXE_fpm-exporter"),
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv runs the exporter"),
    );
    wait_for(
        "the exporter answering",
        Duration::from_secs(10),
        || async {
            reqwest::get(format!("{url}/healthz"))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let pid = std::fs::read_to_string(format!("/proc/{}/status", _exporter.0.id())).unwrap();
    assert!(
        pid.lines()
            .any(|l| l.starts_with("Uid:") && l.contains(NOBODY)),
        "{pid}"
    );

    // The readable engine is served whole.
    let (s, body) = get(&format!("{url}/engines/good/v1/loads")).await;
    assert_eq!(s, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["loads"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(get(&format!("{url}/engines/good/health")).await.0, 200);

    // The others: nothing served, each counted by its reason, with a WARN.
    for e in ["file0600", "dir0700", "path0700"] {
        let (s, body) = get(&format!("{url}/engines/{e}/v1/loads")).await;
        assert_eq!(s, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["loads"],
            Value::Array(vec![])
        );
        assert_eq!(get(&format!("{url}/engines/{e}/health")).await.0, 503);
    }
    let (_, metrics) = get(&format!("{url}/metrics")).await;
    let errors = |engine: &str, reason: &str| {
        sample(
            &metrics,
            "fpm_load_snapshot_errors_total",
            &[("engine", engine), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(errors("file0600", "permission") >= 1.0, "{metrics}");
    assert!(errors("dir0700", "directory") >= 1.0, "{metrics}");
    assert!(errors("path0700", "permission") >= 1.0, "{metrics}");
    assert_eq!(
        errors("path0700", "missing"),
        0.0,
        "EACCES is not a missing file"
    );
    for reason in ["permission", "directory", "missing", "io"] {
        assert_eq!(errors("good", reason), 0.0, "{reason}");
    }
    assert_eq!(
        sample(
            &metrics,
            "fpm_load_snapshot_files",
            &[("engine", "file0600"), ("state", "rejected")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "fpm_load_snapshot_ranks",
            &[("engine", "good"), ("state", "live")]
        ),
        Some(2.0)
    );

    let raw = std::fs::read_to_string(&log).unwrap();
    // The log may be coloured: drop the escape sequences.
    let mut text = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            text.push(c);
        }
    }
    for (engine, reason) in [
        ("file0600", "permission"),
        ("dir0700", "directory"),
        ("path0700", "permission"),
    ] {
        assert!(
            text.lines().any(|l| l.contains("WARN")
                && l.contains(engine)
                && l.contains(&format!("reason=\"{reason}\""))
                && l.contains("Permission denied")
                && l.contains("run the exporter as the engine's uid")),
            "no WARN for {engine}: {text}"
        );
    }
}
