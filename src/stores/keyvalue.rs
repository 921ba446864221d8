//! Redis (probe and cleanup of TTL-less results), CouchDB and filesystem cleanup, plus the simple
//! probes: memcached `version`, the AMQP 0-9-1 handshake, HTTP APIs, a writable directory.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{self, CeleryClock, GroupVerdict, TaskVerdict};
use super::{pace, Expiry, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

pub struct RedisStore {
    uri: String,
    prefix: String,
    /// `result_expires` is a number (keys get a TTL) rather than None (keys live forever).
    ttl: bool,
    /// Celery's `timezone`/`enable_utc`, for naive `date_done` strings.
    clock: CeleryClock,
}

pub(super) const TASK_KEY: &str = "celery-task-meta-";
pub(super) const GROUP_KEY: &str = "celery-taskset-meta-";

/// Suffixes of the chord bookkeeping keys Celery's Redis backend keeps beside a group key
/// (`RedisBackend.on_chord_part_return` and its Lua scripts): `.j` joined results (ZSET, or LIST
/// with `result_chord_ordered: False`), `.t` total counter, `.s` size, `.d` dedupe SET, `.c`
/// claim or "done" marker.
pub const CHORD_SUFFIXES: [&str; 5] = [".j", ".t", ".s", ".d", ".c"];

/// What a Redis key under the result key prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum RedisKey<'a> {
    /// `celery-task-meta-<task id>`.
    Task(&'a str),
    /// `celery-taskset-meta-<group id>`.
    Group(&'a str),
    /// `celery-taskset-meta-<group id>.<j|t|s|d|c>`: a chord's counters and joined results.
    ChordBookkeeping,
    /// Anything else.
    Other,
}

/// `s` as a literal in a Redis glob (SCAN MATCH): `*`, `?`, `[`, `]` and `\\` escaped with a
/// backslash (Redis `stringmatchlen`), so a key prefix such as `team[a]` matches only itself.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Classify a key whose `global_keyprefix` is already removed.
pub fn redis_key(key: &str) -> RedisKey<'_> {
    if let Some(id) = key.strip_prefix(TASK_KEY) {
        return RedisKey::Task(id);
    }
    if let Some(id) = key.strip_prefix(GROUP_KEY) {
        if CHORD_SUFFIXES.iter().any(|s| id.ends_with(s)) {
            return RedisKey::ChordBookkeeping;
        }
        return RedisKey::Group(id);
    }
    RedisKey::Other
}

/// The Redis timestamp rule, in words (for the report).
pub fn redis_time_rule(zone: &Result<(String, TimeZone), String>) -> String {
    match zone {
        Ok((name, _)) => format!("date_done is Celery's ISO-8601 app.now() with its UTC offset (naive strings read in {name})"),
        Err(_) => "date_done is Celery's ISO-8601 app.now() with its UTC offset (naive strings skipped: Celery's time zone is unknown)".into(),
    }
}

/// A key as read for cleanup.
enum Read {
    Missing,
    /// Not a string (a list, set, …): not something the rule can read.
    WrongType,
    Value {
        bytes: Vec<u8>,
        /// The key carries a TTL: Redis expires it itself.
        expiring: bool,
    },
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::protocol("redis", e)
}

/// TYPE and TTL of every key, then GET of the strings: never a command that fails on a key of
/// another type, so an unexpected type is reported instead of aborting the run.
async fn read_keys(
    c: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Result<Vec<Read>, StoreError> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("TYPE").arg(k).cmd("TTL").arg(k);
    }
    let answers: Vec<redis::Value> = pipe.query_async(c).await.map_err(redis_err)?;
    let mut kinds = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let ty: String = answers
            .get(2 * i)
            .cloned()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let ttl: i64 = answers
            .get(2 * i + 1)
            .cloned()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(-2);
        kinds.push((ty, ttl));
    }
    let strings: Vec<&String> = keys
        .iter()
        .zip(&kinds)
        .filter(|(_, (ty, _))| ty == "string")
        .map(|(k, _)| k)
        .collect();
    let mut values: Vec<Option<Vec<u8>>> = vec![];
    if !strings.is_empty() {
        let mut pipe = redis::pipe();
        for k in &strings {
            pipe.cmd("GET").arg(*k);
        }
        match pipe.query_async(c).await {
            Ok(v) => values = v,
            // A key changed type since TYPE: read one by one so only that key is skipped.
            Err(_) => {
                for k in &strings {
                    let v: Result<Option<Vec<u8>>, _> =
                        redis::cmd("GET").arg(*k).query_async(c).await;
                    match v {
                        Ok(v) => values.push(v),
                        Err(e) if e.code() == Some("WRONGTYPE") => values.push(None),
                        Err(e) => return Err(redis_err(e)),
                    }
                }
            }
        }
    }
    let mut values = values.into_iter();
    Ok(kinds
        .into_iter()
        .map(|(ty, ttl)| match ty.as_str() {
            "none" => Read::Missing,
            "string" => match values.next().flatten() {
                Some(bytes) => Read::Value {
                    bytes,
                    expiring: ttl != -1,
                },
                None => Read::Missing,
            },
            _ => Read::WrongType,
        })
        .collect())
}

impl RedisStore {
    pub fn new(cfg: &BackendConfig, result_expires_set: bool) -> Self {
        let prefix = cfg
            .settings
            .get("result_backend_transport_options")
            .and_then(|t| t.get("global_keyprefix"))
            .and_then(|p| p.as_str())
            .map(crate::uri::check::celery_key_prefix)
            .unwrap_or_default();
        let ttl = result_expires_set
            && !matches!(
                cfg.settings.get("result_expires"),
                Some(serde_json::Value::Null)
            );
        // redis-rs reads `redis+unix://`; `sentinel://` needs a Sentinel client (not handled here).
        let uri = cfg.uri.replacen("redis+socket://", "redis+unix://", 1);
        RedisStore {
            uri,
            prefix,
            ttl,
            clock: CeleryClock::from_settings(cfg),
        }
    }

    pub fn expiry(&self) -> Expiry {
        if self.ttl {
            Expiry::Native("Redis keys carry result_expires as TTL".into())
        } else {
            Expiry::Purgeable
        }
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        if self.uri.starts_with("sentinel://") {
            return Err(StoreError::Unsupported(
                "Sentinel deployments are not probed yet".into(),
            ));
        }
        let client =
            redis::Client::open(self.uri.as_str()).map_err(|e| StoreError::connect("redis", e))?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| StoreError::connect("redis", e))
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let mut c = self.conn().await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| StoreError::protocol("redis", e))?;
        Ok(format!("PING answered {pong}"))
    }

    /// One SCAN page of keys matching `<prefix><pattern>*`, without the ones already seen.
    async fn scan_page(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
        pattern: &str,
        cursor: u64,
        count: usize,
        seen: &mut HashSet<String>,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}{pattern}*", glob_escape(&self.prefix)))
            .arg("COUNT")
            .arg(count)
            .query_async(c)
            .await
            .map_err(redis_err)?;
        // SCAN may return a key twice; count it once.
        Ok((
            next,
            keys.into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect(),
        ))
    }

    /// UNLINK (or, in a dry run, only count) the pending keys as one batch.
    async fn flush(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
        pending: &mut Vec<String>,
        is_group: bool,
        opts: &PurgeOptions,
        report: &mut PurgeReport,
        started: Instant,
    ) -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        if !opts.dry_run {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&*pending)
                .query_async(c)
                .await
                .map_err(redis_err)?;
        }
        report.record(is_group, pending.len(), t0.elapsed());
        pending.clear();
        if !opts.dry_run {
            pace(opts.rate, report.tasks + report.groups, started).await;
        }
        Ok(())
    }

    /// Cleanup of TTL-less result keys (keys with a TTL expire by themselves and are left alone).
    ///
    /// - Timestamp rule: a task meta's `date_done` is Celery's `app.now().isoformat()`, which
    ///   carries its UTC offset, so it is compared as an instant; naive strings are read in
    ///   Celery's zone (`CeleryClock`). Metas without `date_done` are kept and counted.
    /// - Group rule: Celery stores no timestamp with a group (`_save_group`), so a group is
    ///   deleted only when every member's task meta is present and expired (`plan::group_verdict`);
    ///   a group whose members are missing (not stored yet, or gone) is kept and counted. Groups
    ///   are decided and removed before the tasks, so an interrupted run cannot leave a group
    ///   whose expiry can no longer be shown.
    /// - Chord bookkeeping (`celery-taskset-meta-<id>.j/.t/.s/.d/.c`) is skipped and counted:
    ///   it has no timestamp, Celery removes it when the chord completes and otherwise expires it
    ///   only through `result_chord_expires`, and a chord still waiting for its header looks
    ///   exactly like an abandoned one. Keys of any other unexpected type or shape are skipped
    ///   and counted too; the run goes on.
    /// - Batches: each kind is deleted in UNLINKs of `batch` keys plus one remainder, in a dry run
    ///   counted the same way.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let mut c = self.conn().await?;
        let zone = self.clock.zone();
        let naive = zone.as_ref().ok().map(|z| &z.1);
        let mut report = PurgeReport::new(&opts);
        report.time_rule = redis_time_rule(&zone);
        report.group_rule = "a group is deleted only when every member result is present and expired (Celery stores no group timestamp in Redis)".into();
        let started = Instant::now();
        let batch = opts.batch.max(1) as usize;
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = vec![];

        // Groups first, while their members are still there.
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self
                .scan_page(&mut c, GROUP_KEY, cursor, batch, &mut seen)
                .await?;
            let mut groups = vec![];
            for k in keys {
                match redis_key(k.strip_prefix(&self.prefix).unwrap_or(&k)) {
                    RedisKey::Group(_) => groups.push(k),
                    RedisKey::ChordBookkeeping => report.skip("chord bookkeeping keys"),
                    _ => report.skip("unrecognised keys"),
                }
            }
            for (k, r) in groups.iter().zip(read_keys(&mut c, &groups).await?) {
                let bytes = match r {
                    Read::Missing | Read::Value { expiring: true, .. } => continue,
                    Read::WrongType => {
                        report.skip("keys of an unexpected type");
                        continue;
                    }
                    Read::Value { bytes, .. } => bytes,
                };
                let Some(members) = plan::group_members(&bytes) else {
                    report.skip("unreadable group results");
                    continue;
                };
                let member_keys: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}{TASK_KEY}{m}", self.prefix))
                    .collect();
                let verdicts: Vec<Option<TaskVerdict>> = read_keys(&mut c, &member_keys)
                    .await?
                    .into_iter()
                    .map(|r| match r {
                        Read::Missing => None,
                        Read::WrongType => Some(TaskVerdict::Unrecognised),
                        Read::Value { bytes, .. } => {
                            Some(plan::task_verdict(&bytes, opts.cutoff_unix, naive))
                        }
                    })
                    .collect();
                match plan::group_verdict(&verdicts) {
                    GroupVerdict::Expired => {
                        pending.push(k.clone());
                        if pending.len() >= batch {
                            self.flush(&mut c, &mut pending, true, &opts, &mut report, started)
                                .await?;
                        }
                    }
                    GroupVerdict::InUse => {}
                    GroupVerdict::Unproven => report.kept_groups_unproven += 1,
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.flush(&mut c, &mut pending, true, &opts, &mut report, started)
            .await?;

        // Then the tasks.
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self
                .scan_page(&mut c, TASK_KEY, cursor, batch, &mut seen)
                .await?;
            for (k, r) in keys.iter().zip(read_keys(&mut c, &keys).await?) {
                let bytes = match r {
                    Read::Missing | Read::Value { expiring: true, .. } => continue,
                    Read::WrongType => {
                        report.skip("keys of an unexpected type");
                        continue;
                    }
                    Read::Value { bytes, .. } => bytes,
                };
                match plan::task_verdict(&bytes, opts.cutoff_unix, naive) {
                    TaskVerdict::Expired => {
                        pending.push(k.clone());
                        if pending.len() >= batch {
                            self.flush(&mut c, &mut pending, false, &opts, &mut report, started)
                                .await?;
                        }
                    }
                    TaskVerdict::Fresh => {}
                    TaskVerdict::NoDateDone => report.kept_without_date_done += 1,
                    TaskVerdict::Unrecognised => report.skip("unreadable task results"),
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.flush(&mut c, &mut pending, false, &opts, &mut report, started)
            .await?;
        Ok(report)
    }
}

/// memcached text protocol `version` on the first server that answers.
pub async fn memcached_version(servers: &[String]) -> Result<String, StoreError> {
    let mut last = StoreError::connect("memcached", "no servers");
    for s in servers {
        match tokio::net::TcpStream::connect(s.as_str()).await {
            Ok(mut sock) => {
                sock.write_all(b"version\r\n")
                    .await
                    .map_err(|e| StoreError::protocol("memcached", e))?;
                let mut buf = [0u8; 128];
                let n = sock
                    .read(&mut buf)
                    .await
                    .map_err(|e| StoreError::protocol("memcached", e))?;
                let line = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                return match line.strip_prefix("VERSION ") {
                    Some(v) => Ok(format!("memcached {v} at {s}")),
                    None => Err(StoreError::protocol(
                        "memcached",
                        format!("unexpected answer {line:?}"),
                    )),
                };
            }
            Err(e) => last = StoreError::connect("memcached", format!("{s}: {e}")),
        }
    }
    Err(last)
}

/// AMQP 0-9-1: send the protocol header and read the broker's Connection.Start frame.
pub async fn amqp_handshake(url: &str) -> Result<String, StoreError> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5672")
    };
    let mut sock = tokio::net::TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| StoreError::connect("AMQP broker", format!("{addr}: {e}")))?;
    sock.write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .map_err(|e| StoreError::protocol("AMQP broker", e))?;
    let mut head = [0u8; 11];
    sock.read_exact(&mut head)
        .await
        .map_err(|e| StoreError::protocol("AMQP broker", e))?;
    // frame type 1 (method), channel 0, class 10 (connection), method 10 (start).
    if head[0] == 1 && head[7..11] == [0, 10, 0, 10] {
        Ok(format!("AMQP 0-9-1 Connection.Start from {addr}"))
    } else {
        Err(StoreError::protocol(
            "AMQP broker",
            format!("{addr} did not answer with Connection.Start"),
        ))
    }
}

/// User name and optional password for HTTP basic auth.
type BasicCreds = Option<(String, Option<String>)>;

/// Base URL (no credentials) and basic-auth pair of an HTTP store URI. CouchDB URIs carry their
/// credentials percent-encoded twice (pycouchdb decodes twice), so `decode_rounds` is 2 there.
pub(super) fn http_parts(
    kind: &str,
    url: &str,
    decode_rounds: usize,
) -> Result<(reqwest::Url, BasicCreds), StoreError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| StoreError::connect(kind, e))?;
    let decode = |s: &str| {
        let mut out = s.to_string();
        for _ in 0..decode_rounds {
            out = percent_encoding::percent_decode_str(&out)
                .decode_utf8_lossy()
                .to_string();
        }
        out
    };
    let user = decode(parsed.username());
    let pass = parsed.password().map(decode);
    let mut base = parsed.clone();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let auth = (!user.is_empty() || pass.is_some()).then_some((user, pass));
    Ok((base, auth))
}

pub(super) fn authed(
    rb: reqwest::RequestBuilder,
    auth: &Option<(String, Option<String>)>,
) -> reqwest::RequestBuilder {
    match auth {
        Some((u, p)) => rb.basic_auth(u, p.clone()),
        None => rb,
    }
}

/// A CouchDB database: client, base URL (no credentials) and basic auth.
struct CouchDb {
    client: reqwest::Client,
    base: String,
    auth: BasicCreds,
}

/// One deletion batch for CouchDB: `_bulk_docs` with `_deleted` stubs (nothing in a dry run).
async fn couchdb_flush(
    db: &CouchDb,
    pending: &mut Vec<serde_json::Value>,
    is_group: bool,
    opts: &PurgeOptions,
    report: &mut PurgeReport,
    started: Instant,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let err = |e: reqwest::Error| StoreError::protocol("couchdb", e.without_url());
    let t0 = Instant::now();
    if !opts.dry_run {
        let res: serde_json::Value =
            authed(db.client.post(format!("{}/_bulk_docs", db.base)), &db.auth)
                .json(&serde_json::json!({"docs": pending}))
                .send()
                .await
                .map_err(err)?
                .error_for_status()
                .map_err(err)?
                .json()
                .await
                .map_err(err)?;
        if let Some(bad) = res
            .as_array()
            .and_then(|a| a.iter().find(|r| r.get("error").is_some()))
        {
            return Err(StoreError::protocol(
                "couchdb",
                format!("_bulk_docs refused a deletion: {bad}"),
            ));
        }
    }
    report.record(is_group, pending.len(), t0.elapsed());
    pending.clear();
    if !opts.dry_run {
        pace(opts.rate, report.tasks + report.groups, started).await;
    }
    Ok(())
}

/// CouchDB cleanup (Celery's `couchdb://` backend: one document `{"_id": key, "value": "<JSON
/// meta>"}` per key; Celery's own `cleanup()` is the empty base method).
///
/// - Timestamp rule: as Redis (the ISO-8601 `date_done` inside `value`, with its offset).
/// - Group rule: as Redis (no group timestamp): a `celery-taskset-meta-*` document is deleted
///   only when every member's task document is present and expired; groups are decided and
///   deleted first. Documents of another shape are skipped and counted.
/// - Paged through `_all_docs` by key range, deleted with `_bulk_docs` in batches of `batch`.
pub async fn couchdb_purge(
    url: &str,
    clock: &CeleryClock,
    opts: PurgeOptions,
) -> Result<PurgeReport, StoreError> {
    let (db, auth) = http_parts("couchdb", url, 2)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| StoreError::connect("couchdb", e))?;
    let zone = clock.zone();
    let naive = zone.as_ref().ok().map(|z| &z.1);
    let mut report = PurgeReport::new(&opts);
    report.time_rule = redis_time_rule(&zone).replace("date_done", "value.date_done");
    report.group_rule = "a group is deleted only when every member result is present and expired (Celery stores no group timestamp in CouchDB)".into();
    let started = Instant::now();
    let err = |e: reqwest::Error| StoreError::protocol("couchdb", e.without_url());
    let base = db.as_str().trim_end_matches('/').to_string();
    let couch = CouchDb {
        client: client.clone(),
        base: base.clone(),
        auth: auth.clone(),
    };
    let batch = opts.batch.max(1) as usize;
    let value_of = |doc: &serde_json::Value| -> Option<Vec<u8>> {
        doc.get("value")?.as_str().map(|s| s.as_bytes().to_vec())
    };
    let mut pending: Vec<serde_json::Value> = vec![];
    for (prefix, is_group) in [(GROUP_KEY, true), (TASK_KEY, false)] {
        let mut start = serde_json::to_string(prefix).unwrap_or_default();
        let end = serde_json::to_string(&format!("{prefix}\u{fff0}")).unwrap_or_default();
        loop {
            let page: serde_json::Value = authed(
                client.get(format!("{base}/_all_docs")).query(&[
                    ("include_docs", "true"),
                    ("startkey", start.as_str()),
                    ("endkey", end.as_str()),
                    ("limit", &(batch + 1).to_string()),
                ]),
                &auth,
            )
            .send()
            .await
            .map_err(err)?
            .error_for_status()
            .map_err(err)?
            .json()
            .await
            .map_err(err)?;
            let mut rows = page["rows"].as_array().cloned().unwrap_or_default();
            let more = rows.len() > batch;
            let next = if more { rows.pop() } else { None };
            for row in &rows {
                let doc = &row["doc"];
                let Some(id) = doc["_id"].as_str() else {
                    continue;
                };
                let Some(value) = value_of(doc) else {
                    report.skip("documents of another shape");
                    continue;
                };
                let stub = serde_json::json!({"_id": id, "_rev": doc["_rev"], "_deleted": true});
                if is_group {
                    let Some(members) = plan::group_members(&value) else {
                        report.skip("unreadable group results");
                        continue;
                    };
                    let keys: Vec<String> =
                        members.iter().map(|m| format!("{TASK_KEY}{m}")).collect();
                    let found: serde_json::Value = authed(
                        client
                            .post(format!("{base}/_all_docs"))
                            .query(&[("include_docs", "true")]),
                        &auth,
                    )
                    .json(&serde_json::json!({ "keys": keys }))
                    .send()
                    .await
                    .map_err(err)?
                    .error_for_status()
                    .map_err(err)?
                    .json()
                    .await
                    .map_err(err)?;
                    let found = found["rows"].as_array().cloned().unwrap_or_default();
                    let verdicts: Vec<Option<TaskVerdict>> = keys
                        .iter()
                        .map(|k| {
                            let doc = found
                                .iter()
                                .find(|r| r["key"].as_str() == Some(k.as_str()))
                                .map(|r| &r["doc"])
                                .filter(|d| d.is_object())?;
                            Some(match value_of(doc) {
                                Some(v) => plan::task_verdict(&v, opts.cutoff_unix, naive),
                                None => TaskVerdict::Unrecognised,
                            })
                        })
                        .collect();
                    match plan::group_verdict(&verdicts) {
                        GroupVerdict::Expired => pending.push(stub),
                        GroupVerdict::InUse => {}
                        GroupVerdict::Unproven => report.kept_groups_unproven += 1,
                    }
                } else {
                    match plan::task_verdict(&value, opts.cutoff_unix, naive) {
                        TaskVerdict::Expired => pending.push(stub),
                        TaskVerdict::Fresh => {}
                        TaskVerdict::NoDateDone => report.kept_without_date_done += 1,
                        TaskVerdict::Unrecognised => report.skip("unreadable task results"),
                    }
                }
                if pending.len() >= batch {
                    couchdb_flush(&couch, &mut pending, is_group, &opts, &mut report, started)
                        .await?;
                }
            }
            match next {
                Some(n) => {
                    start = serde_json::to_string(n["key"].as_str().unwrap_or_default())
                        .unwrap_or_default()
                }
                None => break,
            }
        }
        couchdb_flush(&couch, &mut pending, is_group, &opts, &mut report, started).await?;
    }
    Ok(report)
}

/// An authenticated GET of the API root (Elasticsearch cluster health, CouchDB, Consul, ArangoDB).
pub async fn http_probe(store: super::HttpStore, url: &str) -> Result<String, StoreError> {
    let kind = store.name();
    let (parsed, auth) = http_parts(kind, url, store.decode_passes())?;
    let path = store.health_path();
    let mut base = parsed.clone();
    base.set_path(path);
    base.set_query(None);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StoreError::connect(kind, e))?;
    let req = authed(client.get(base.clone()), &auth);
    let resp = req
        .send()
        .await
        .map_err(|e| StoreError::connect(kind, e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        Ok(format!("GET {path} answered {status}"))
    } else {
        Err(StoreError::protocol(
            kind,
            format!("GET {path} answered {status}"),
        ))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob_escape_keeps_prefixes_literal() {
        assert_eq!(glob_escape("team-a:"), "team-a:");
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn redis_store_uses_the_prefix_celery_writes() {
        let cfg = |p: &str| BackendConfig {
            uri: "redis://h:6379/0".into(),
            settings: [(
                "result_backend_transport_options".to_string(),
                serde_json::json!({ "global_keyprefix": p }),
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(RedisStore::new(&cfg("teama"), false).prefix, "teama_");
        assert_eq!(RedisStore::new(&cfg("team-a:"), false).prefix, "team-a:");
    }

    #[test]
    fn redis_keys_are_classified() {
        let table = [
            ("celery-task-meta-t1", RedisKey::Task("t1")),
            ("celery-taskset-meta-g1", RedisKey::Group("g1")),
            ("celery-taskset-meta-g1.j", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.t", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.s", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.d", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.c", RedisKey::ChordBookkeeping),
            ("chord-unlock-g1", RedisKey::Other),
            ("unacked", RedisKey::Other),
        ];
        for (key, want) in table {
            assert_eq!(redis_key(key), want, "{key}");
        }
    }

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
