//! Pure cleanup planning shared by the stores: Celery's clock, task and group verdicts, batches.
//!
//! Each backend file states its own timestamp and group rule and calls these functions; nothing
//! here talks to a store, so every rule is table-tested beside its code.

/// Key prefix of a task result in Celery's key-value layout (`KeyValueStoreBackend.task_keyprefix`):
/// Redis keys, CouchDB/Elasticsearch document ids, object names and file names.
pub const TASK_KEY: &str = "celery-task-meta-";
/// Key prefix of a group result (`KeyValueStoreBackend.group_keyprefix`).
pub const GROUP_KEY: &str = "celery-taskset-meta-";

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::uri::BackendConfig;

/// Celery's clock settings of the workers writing to a backend: `timezone` and `enable_utc`.
///
/// They decide the zone of `app.now()` (Celery's `Celery.timezone`): the `timezone` setting when
/// set, else UTC when `enable_utc` is true (Celery's default), else the workers' local time zone.
/// The operator reads them from the rendered settings (`spec.timezone`, `spec.enableUtc`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CeleryClock {
    /// Celery's `timezone` setting (an IANA name), if set.
    pub timezone: Option<String>,
    /// Celery's `enable_utc` setting (`None`: Celery's default, true).
    pub enable_utc: Option<bool>,
}

impl CeleryClock {
    /// The settings `timezone` and `enable_utc` of a rendered backend configuration.
    pub fn from_settings(cfg: &BackendConfig) -> Self {
        CeleryClock {
            timezone: cfg
                .settings
                .get("timezone")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(String::from),
            enable_utc: cfg.settings.get("enable_utc").and_then(|v| v.as_bool()),
        }
    }

    /// The zone of Celery's `app.now()` and its name. Errors when it is the workers' local zone
    /// (`enable_utc: false` without `timezone`), which the operator cannot know, or when the
    /// name is not in the IANA database.
    pub fn zone(&self) -> Result<(String, TimeZone), String> {
        match (&self.timezone, self.enable_utc) {
            (Some(name), _) => TimeZone::get(name)
                .map(|tz| (name.clone(), tz))
                .map_err(|_| format!("timezone {name:?} is not an IANA time zone name")),
            (None, Some(false)) => Err("enableUtc is false without a timezone: Celery then uses each worker's local time zone, which the operator cannot know; set spec.timezone".into()),
            (None, _) => Ok(("UTC".into(), TimeZone::UTC)),
        }
    }
}

/// Wall-clock time `YYYY-MM-DD HH:MM:SS.ffffff` of a Unix time (seconds) in `tz`: how a naive
/// SQL `DATETIME`/`TIMESTAMP WITHOUT TIME ZONE` column holds that instant when the writer's
/// datetime was in `tz`.
pub fn wall_time(unix: i64, tz: &TimeZone) -> String {
    let ts = Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(tz.clone())
        .datetime()
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// Completion time (Unix seconds) of an ISO-8601 `date_done` as the key-value stores hold it.
/// Celery 5 writes `app.now().isoformat()`, which always carries an offset; a naive string (older
/// or foreign writers) is read in Celery's zone `naive_zone`. `None` when it does not parse, or
/// is naive while Celery's zone is unknown.
pub fn parse_iso(s: &str, naive_zone: Option<&TimeZone>) -> Option<i64> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t.as_second());
    }
    let dt: DateTime = s.parse().ok()?;
    dt.to_zoned(naive_zone?.clone())
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// What a task result meta means for cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskVerdict {
    /// Finished (`date_done` set) before the cutoff: delete.
    Expired,
    /// Finished at or after the cutoff: keep.
    Fresh,
    /// No `date_done` (PENDING, STARTED, RETRY: Celery writes it only for ready states): keep,
    /// and report.
    NoDateDone,
    /// Not a Celery task meta (not JSON, not an object, unparsable `date_done`): skip, report.
    Unrecognised,
}

/// Verdict for a JSON task meta (`{"status": …, "date_done": "<ISO-8601>" | null, …}`) against
/// `cutoff` (Unix seconds). Source of the layout: Celery's `BaseBackend._get_result_meta`.
pub fn task_verdict(meta: &[u8], cutoff: i64, naive_zone: Option<&TimeZone>) -> TaskVerdict {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(meta) else {
        return TaskVerdict::Unrecognised;
    };
    let Some(obj) = v.as_object() else {
        return TaskVerdict::Unrecognised;
    };
    match obj.get("date_done") {
        None | Some(serde_json::Value::Null) => TaskVerdict::NoDateDone,
        Some(serde_json::Value::String(s)) => match parse_iso(s, naive_zone) {
            Some(t) if t < cutoff => TaskVerdict::Expired,
            Some(_) => TaskVerdict::Fresh,
            None => TaskVerdict::Unrecognised,
        },
        Some(_) => TaskVerdict::Unrecognised,
    }
}

/// Task ids of a key-value group meta (`{"result": [[group_id, parent], [[[task_id, parent],
/// null], …]]}`, Celery's `_save_group` with `GroupResult.as_tuple()`). `None` when the payload
/// has another shape; a nested group member yields its group id (which has no task meta, so the
/// group is never shown to be expired: kept, the safe side).
pub fn group_members(meta: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(meta).ok()?;
    let members = v.get("result")?.get(1)?.as_array()?;
    members
        .iter()
        .map(|m| m.get(0)?.get(0)?.as_str().map(String::from))
        .collect()
}

/// Why a group is kept, or that it expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupVerdict {
    /// Every member result was seen and has expired: delete.
    Expired,
    /// At least one member is fresh or has no `date_done` yet: the group is in use.
    InUse,
    /// A member's result is missing (not stored yet, or already removed): nothing shows the group
    /// expired, so it is kept (never deleted because members are missing).
    Unproven,
}

/// The group rule for stores where Celery writes no group timestamp (Redis, S3, GCS, Azure Blob,
/// CouchDB): a group expired only when it has members and each member's verdict is `Expired`.
/// `members[i]` is the verdict of the i-th member's task meta, `None` when it is absent.
pub fn group_verdict(members: &[Option<TaskVerdict>]) -> GroupVerdict {
    if members.is_empty() || members.iter().any(|m| m.is_none()) {
        return GroupVerdict::Unproven;
    }
    if members.iter().all(|m| *m == Some(TaskVerdict::Expired)) {
        GroupVerdict::Expired
    } else if members.contains(&Some(TaskVerdict::Unrecognised)) {
        GroupVerdict::Unproven
    } else {
        GroupVerdict::InUse
    }
}

/// Number of delete batches for `n` deletions of one kind at `batch` per batch: every store
/// deletes each kind in full batches plus one remainder, so a dry run and the real run that
/// follows report the same number.
pub fn batches(n: u64, batch: u32) -> u64 {
    n.div_ceil(u64::from(batch.max(1)))
}

/// The rule for the ISO-8601 `date_done` Celery's key-value backends store (Redis, CouchDB, the
/// object stores), in words for the cleanup report.
pub fn iso_time_rule(zone: &Result<(String, jiff::tz::TimeZone), String>) -> String {
    match zone {
        Ok((name, _)) => format!("date_done is Celery's ISO-8601 app.now() with its UTC offset (naive strings read in {name})"),
        Err(_) => "date_done is Celery's ISO-8601 app.now() with its UTC offset (naive strings skipped: Celery's time zone is unknown)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn celery_clock_zone_follows_celery_timezone_property() {
        let c = |tzname: Option<&str>, utc: Option<bool>| CeleryClock {
            timezone: tzname.map(String::from),
            enable_utc: utc,
        };
        let table = [
            (c(None, None), Ok("UTC")),
            (c(None, Some(true)), Ok("UTC")),
            (c(Some("Asia/Shanghai"), Some(false)), Ok("Asia/Shanghai")),
            // Celery uses `timezone` whatever enable_utc says.
            (
                c(Some("America/Los_Angeles"), Some(true)),
                Ok("America/Los_Angeles"),
            ),
            (c(None, Some(false)), Err("local time zone")),
            (c(Some("Mars/Olympus"), None), Err("not an IANA")),
        ];
        for (clock, want) in table {
            match (clock.zone(), want) {
                (Ok((name, _)), Ok(w)) => assert_eq!(name, w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{clock:?}: {:?} vs {want:?}", got.map(|g| g.0)),
            }
        }
    }

    #[test]
    fn wall_times_and_iso_parsing() {
        // 2026-01-15T12:00:00Z
        let t = 1_768_478_400;
        assert_eq!(wall_time(t, &TimeZone::UTC), "2026-01-15 12:00:00.000000");
        assert_eq!(
            wall_time(t, &tz("America/Los_Angeles")),
            "2026-01-15 04:00:00.000000"
        );
        assert_eq!(
            wall_time(t, &tz("Asia/Shanghai")),
            "2026-01-15 20:00:00.000000"
        );
        let table = [
            (
                "2026-01-15T12:00:00.123456+00:00",
                Some(TimeZone::UTC),
                Some(t),
            ),
            ("2026-01-15T20:00:00+08:00", Some(TimeZone::UTC), Some(t)),
            (
                "2026-01-15T04:00:00-08:00",
                Some(tz("Asia/Shanghai")),
                Some(t),
            ),
            ("2026-01-15T04:00:00-08:00", None, Some(t)),
            // naive: Celery's zone, or unreadable when it is unknown
            ("2026-01-15T12:00:00", Some(TimeZone::UTC), Some(t)),
            (
                "2026-01-15T04:00:00",
                Some(tz("America/Los_Angeles")),
                Some(t),
            ),
            ("2026-01-15T04:00:00", None, None),
            ("yesterday", Some(TimeZone::UTC), None),
        ];
        for (s, zone, want) in table {
            assert_eq!(parse_iso(s, zone.as_ref()), want, "{s}");
        }
    }

    #[test]
    fn task_verdicts() {
        let cutoff = 1_768_478_400;
        let table: [(&[u8], TaskVerdict); 8] = [
            (
                br#"{"status":"SUCCESS","date_done":"2026-01-15T11:59:59+00:00"}"#,
                TaskVerdict::Expired,
            ),
            (
                br#"{"status":"SUCCESS","date_done":"2026-01-15T12:00:00+00:00"}"#,
                TaskVerdict::Fresh,
            ),
            (
                br#"{"status":"STARTED","date_done":null}"#,
                TaskVerdict::NoDateDone,
            ),
            (br#"{"status":"RETRY"}"#, TaskVerdict::NoDateDone),
            (br#"{"date_done": 12}"#, TaskVerdict::Unrecognised),
            (br#"{"date_done": "soon"}"#, TaskVerdict::Unrecognised),
            (b"3", TaskVerdict::Unrecognised),
            (b"\x80\x04pickle", TaskVerdict::Unrecognised),
        ];
        for (meta, want) in table {
            assert_eq!(
                task_verdict(meta, cutoff, Some(&TimeZone::UTC)),
                want,
                "{}",
                String::from_utf8_lossy(meta)
            );
        }
    }

    #[test]
    fn group_members_and_verdicts() {
        let g = br#"{"result": [["g1", null], [[["t1", null], null], [["t2", null], null]]]}"#;
        assert_eq!(group_members(g), Some(vec!["t1".into(), "t2".into()]));
        assert_eq!(group_members(br#"{"result": 3}"#), None);
        assert_eq!(group_members(b"7"), None);
        use GroupVerdict as G;
        use TaskVerdict as T;
        let table: [(&[Option<TaskVerdict>], GroupVerdict); 7] = [
            (&[Some(T::Expired), Some(T::Expired)], G::Expired),
            // Members not stored yet: the issue's case (a group whose tasks still run).
            (&[None, None], G::Unproven),
            (&[Some(T::Expired), None], G::Unproven),
            (&[], G::Unproven),
            (&[Some(T::Expired), Some(T::Fresh)], G::InUse),
            (&[Some(T::Expired), Some(T::NoDateDone)], G::InUse),
            (&[Some(T::Expired), Some(T::Unrecognised)], G::Unproven),
        ];
        for (members, want) in table {
            assert_eq!(group_verdict(members), want, "{members:?}");
        }
    }

    #[test]
    fn batch_counts() {
        for (n, b, want) in [
            (0, 2, 0),
            (1, 2, 1),
            (4, 2, 2),
            (5, 2, 3),
            (4, 0, 4),
            (3, 500, 1),
        ] {
            assert_eq!(batches(n, b), want, "{n}/{b}");
        }
    }
}
