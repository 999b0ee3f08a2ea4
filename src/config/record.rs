//! Settings of `--record`: the capture file, its rotation, and the startup check that
//! it overwrites nothing. The recorder (`crate::capture::recorder`) takes them from here.

use super::{ConfigError, RunArgs};
use std::path::{Path, PathBuf};

/// Where and how to record.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// The capture file.
    pub path: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept (FILE.1 .. FILE.keep).
    pub keep: u32,
}

/// Default `--record-max-bytes`: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default `--record-keep`.
pub const DEFAULT_KEEP: u32 = 5;

/// The file FILE.n (n >= 1).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Refuses to record over anything: FILE and FILE.1 .. FILE.keep must not exist.
pub fn check_target(settings: &RecordSettings) -> Result<(), String> {
    let dir = match settings.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--record {}: directory {} does not exist",
            settings.path.display(),
            dir.display()
        ));
    }
    let mut paths = vec![settings.path.clone()];
    paths.extend((1..=settings.keep).map(|n| rotated(&settings.path, n)));
    for p in paths {
        if p.exists() || p.symlink_metadata().is_ok() {
            return Err(format!(
                "--record {}: {} already exists; refusing to overwrite it (move it away or choose another file)",
                settings.path.display(),
                p.display()
            ));
        }
    }
    Ok(())
}

impl RecordSettings {
    /// The flags' values, checked, the target included; `None` without `--record`.
    pub(super) fn resolve(args: &RunArgs) -> Result<Option<Self>, ConfigError> {
        let Some(path) = &args.record else {
            return Ok(None);
        };
        let max_bytes = args.record_max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes < 4096 {
            return Err(ConfigError(
                "--record-max-bytes must be at least 4096".into(),
            ));
        }
        let keep = args.record_keep.unwrap_or(DEFAULT_KEEP);
        if keep > 1000 {
            return Err(ConfigError("--record-keep must be at most 1000".into()));
        }
        let r = RecordSettings {
            path: path.clone(),
            max_bytes,
            keep,
        };
        check_target(&r).map_err(ConfigError)?;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap.jsonl");
        let s = RecordSettings {
            path: path.clone(),
            max_bytes: 100,
            keep: 3,
        };
        assert!(check_target(&s).is_ok());
        std::fs::write(rotated(&path, 3), "old").unwrap();
        let e = check_target(&s).unwrap_err();
        assert!(
            e.contains("cap.jsonl.3") && e.contains("refusing to overwrite"),
            "{e}"
        );
        std::fs::write(&path, "old").unwrap();
        assert!(check_target(&RecordSettings { keep: 0, ..s }).is_err());
        let nowhere = RecordSettings {
            path: dir.path().join("no/such/dir/cap.jsonl"),
            max_bytes: 100,
            keep: 1,
        };
        assert!(check_target(&nowhere)
            .unwrap_err()
            .contains("does not exist"));
    }
}
