//! A shared directory (Celery's `file://` backend): probe and cleanup by mtime.

use std::time::Instant;

use crate::stores::plan::{GROUP_KEY, TASK_KEY};
use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};

/// Celery's filesystem backend: the directory exists and is writable.
pub async fn filesystem_probe(path: &str) -> Result<String, StoreError> {
    let probe = std::path::Path::new(path).join(format!(".cbo-probe-{}", std::process::id()));
    tokio::fs::write(&probe, b"ok")
        .await
        .map_err(|e| StoreError::connect("filesystem", format!("{path}: {e}")))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(format!("{path} is writable"))
}

/// Celery's filesystem key prefixes: tasks, groups and the chord counters (`chord-unlock-`).
pub const FILESYSTEM_PREFIXES: [&str; 3] = [TASK_KEY, GROUP_KEY, "chord-unlock-"];

/// The file rule of Celery's `FilesystemBackend.cleanup()`: a file whose name starts with one of
/// `FILESYSTEM_PREFIXES` and whose modification time (Unix seconds) is before the cutoff.
/// Returns whether it is a group-like file (`Some(true)`), a task file (`Some(false)`), or not
/// Celery's (`None`) for the counts.
pub fn filesystem_expired(name: &str, mtime: i64, cutoff: i64) -> Option<(bool, bool)> {
    let i = FILESYSTEM_PREFIXES
        .iter()
        .position(|p| name.starts_with(p))?;
    Some((i != 0, mtime < cutoff))
}

/// Filesystem cleanup, by Celery's own rule (`FilesystemBackend.cleanup`): files named with the
/// task, group or chord prefix whose **modification time** is before the cutoff, whatever their
/// content (Celery rewrites a task's file on every state change, so the mtime is the time of its
/// last state). Unlike Celery, the cutoff is a true Unix time: Celery builds its epoch in the app
/// time zone, which shifts its cutoff by that zone's 1970 UTC offset (none for UTC). Chord
/// counters count as groups. Deleted in batches of `batch` files (a batch is only a unit of
/// pacing here).
pub async fn filesystem_purge(path: &str, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport::new(&opts);
    report.time_rule = "file modification time, as Celery's FilesystemBackend.cleanup() (task, group and chord-unlock files)".into();
    report.group_rule = "group and chord-unlock files by their own modification time".into();
    let started = Instant::now();
    let mut dir = tokio::fs::read_dir(path)
        .await
        .map_err(|e| StoreError::connect("filesystem", format!("{path}: {e}")))?;
    let mut doomed: [Vec<std::path::PathBuf>; 2] = [vec![], vec![]];
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| StoreError::protocol("filesystem", e))?
    {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(mtime) = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
        else {
            continue; // vanished meanwhile
        };
        if let Some((is_group, true)) = filesystem_expired(&name, mtime, opts.cutoff_unix) {
            doomed[usize::from(is_group)].push(entry.path());
        }
    }
    // Groups before tasks, as everywhere.
    for (is_group, files) in [(true, &doomed[1]), (false, &doomed[0])] {
        for chunk in files.chunks(opts.batch.max(1) as usize) {
            let t0 = Instant::now();
            if !opts.dry_run {
                for f in chunk {
                    match tokio::fs::remove_file(f).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::protocol("filesystem", e)),
                    }
                }
            }
            report.record(is_group, chunk.len(), t0.elapsed());
            if !opts.dry_run {
                pace(opts.rate, report.tasks + report.groups, started).await;
            }
        }
    }
    Ok(report)
}

/// Celery's `file://` backend: the directory the URI names (verbatim).
pub struct FilesystemStore {
    path: String,
}

impl FilesystemStore {
    pub fn new(uri: &str) -> Self {
        FilesystemStore {
            path: uri.trim_start_matches("file://").to_string(),
        }
    }
}

impl crate::stores::StoreClient for FilesystemStore {
    fn kind(&self) -> String {
        "filesystem".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        crate::stores::Expiry::Purgeable
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(filesystem_probe(&self.path))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(filesystem_purge(&self.path, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_rule_is_celerys_prefix_and_mtime() {
        let table = [
            ("celery-task-meta-t1", 99, Some((false, true))),
            ("celery-task-meta-t1", 100, Some((false, false))),
            ("celery-taskset-meta-g1", 99, Some((true, true))),
            ("chord-unlock-g1", 99, Some((true, true))),
            (".fs-backend-probe", 1, None),
            ("notes.txt", 1, None),
        ];
        for (name, mtime, want) in table {
            assert_eq!(filesystem_expired(name, mtime, 100), want, "{name}");
        }
    }
}
