//! Redis (probe and cleanup of TTL-less results), plus the simple probes: memcached `version`,
//! the AMQP 0-9-1 handshake, HTTP APIs, and the filesystem backend (probe and cleanup).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{pace, Expiry, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

pub struct RedisStore {
    uri: String,
    prefix: String,
    /// `result_expires` is a number (keys get a TTL) rather than None (keys live forever).
    ttl: bool,
}

pub(super) const TASK_KEY: &str = "celery-task-meta-";
pub(super) const GROUP_KEY: &str = "celery-taskset-meta-";

/// Completion time of a Celery result meta (JSON with an ISO-8601 `date_done`), Unix seconds.
pub fn date_done_unix(meta: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(meta).ok()?;
    let s = v.get("date_done")?.as_str()?;
    if let Ok(t) = s.parse::<k8s_openapi::jiff::Timestamp>() {
        return Some(t.as_second());
    }
    // A naive timestamp is UTC (Celery's default timezone).
    let dt: k8s_openapi::jiff::civil::DateTime = s.parse().ok()?;
    dt.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// Task ids of a group meta (`{"result": [[group_id, parent], [[[task_id, parent], null], ...]]}`).
pub fn group_members(meta: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(meta) else {
        return vec![];
    };
    v["result"][1]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m[0][0].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl RedisStore {
    pub fn new(cfg: &BackendConfig, result_expires_set: bool) -> Self {
        let prefix = cfg
            .settings
            .get("result_backend_transport_options")
            .and_then(|t| t.get("global_keyprefix"))
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_string();
        let ttl = result_expires_set
            && !matches!(
                cfg.settings.get("result_expires"),
                Some(serde_json::Value::Null)
            );
        // redis-rs reads `redis+unix://`; `sentinel://` needs a Sentinel client (not handled here).
        let uri = cfg.uri.replacen("redis+socket://", "redis+unix://", 1);
        RedisStore { uri, prefix, ttl }
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

    /// Scan result keys without a TTL; delete task metas completed before the cutoff, then group
    /// metas none of whose member results remain (Celery stores no timestamp with a group).
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let mut c = self.conn().await?;
        let mut report = PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let started = Instant::now();
        let batch = opts.batch.max(1) as usize;
        let err = |e: redis::RedisError| StoreError::protocol("redis", e);
        let mut doomed_tasks: std::collections::HashSet<String> = Default::default();
        for (pattern, is_group) in [(TASK_KEY, false), (GROUP_KEY, true)] {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}{pattern}*", self.prefix))
                    .arg("COUNT")
                    .arg(batch)
                    .query_async(&mut c)
                    .await
                    .map_err(err)?;
                if !keys.is_empty() {
                    let t0 = Instant::now();
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("TTL").arg(k).cmd("GET").arg(k);
                    }
                    let answers: Vec<redis::Value> = pipe.query_async(&mut c).await.map_err(err)?;
                    let mut delete = vec![];
                    for (i, k) in keys.iter().enumerate() {
                        let ttl: i64 = redis::from_redis_value(answers[2 * i].clone()).unwrap_or(0);
                        let value: Option<Vec<u8>> =
                            redis::from_redis_value(answers[2 * i + 1].clone()).ok();
                        if ttl != -1 {
                            continue; // expires by itself (or vanished)
                        }
                        let Some(value) = value else { continue };
                        let expired = if is_group {
                            let members = group_members(&value);
                            let mut pipe = redis::pipe();
                            for m in &members {
                                pipe.cmd("EXISTS")
                                    .arg(format!("{}{TASK_KEY}{m}", self.prefix));
                            }
                            let exists: Vec<i64> = if members.is_empty() {
                                vec![]
                            } else {
                                pipe.query_async(&mut c).await.map_err(err)?
                            };
                            !members.is_empty()
                                && members
                                    .iter()
                                    .zip(exists)
                                    .all(|(m, e)| e == 0 || doomed_tasks.contains(m))
                        } else {
                            date_done_unix(&value).is_some_and(|t| t < opts.cutoff_unix)
                        };
                        if expired {
                            if !is_group {
                                if let Some(id) =
                                    k.strip_prefix(&format!("{}{TASK_KEY}", self.prefix))
                                {
                                    doomed_tasks.insert(id.to_string());
                                }
                            }
                            delete.push(k.clone());
                        }
                    }
                    if !delete.is_empty() && !opts.dry_run {
                        let _: i64 = redis::cmd("UNLINK")
                            .arg(&delete)
                            .query_async(&mut c)
                            .await
                            .map_err(err)?;
                    }
                    report.record(is_group, delete.len(), t0.elapsed());
                    if !opts.dry_run {
                        pace(opts.rate, report.tasks + report.groups, started).await;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
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

/// CouchDB: documents `celery-task-meta-*` (value: the JSON meta) whose `date_done` is before the
/// cutoff, then `celery-taskset-meta-*` documents none of whose members remain; paged through
/// `_all_docs` by key range and deleted with `_bulk_docs`.
pub async fn couchdb_purge(url: &str, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
    let (db, auth) = http_parts("couchdb", url, 2)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| StoreError::connect("couchdb", e))?;
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let started = Instant::now();
    let err = |e: reqwest::Error| StoreError::protocol("couchdb", e.without_url());
    let mut doomed: std::collections::HashSet<String> = Default::default();
    let base = db.as_str().trim_end_matches('/').to_string();
    for (prefix, is_group) in [(TASK_KEY, false), (GROUP_KEY, true)] {
        let mut start = serde_json::to_string(prefix).unwrap_or_default();
        let end = serde_json::to_string(&format!("{prefix}\u{fff0}")).unwrap_or_default();
        loop {
            let t0 = Instant::now();
            let page: serde_json::Value = authed(
                client.get(format!("{base}/_all_docs")).query(&[
                    ("include_docs", "true"),
                    ("startkey", start.as_str()),
                    ("endkey", end.as_str()),
                    ("limit", &(opts.batch.max(1) + 1).to_string()),
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
            let more = rows.len() > opts.batch.max(1) as usize;
            let next = if more { rows.pop() } else { None };
            let mut delete = vec![];
            for row in &rows {
                let doc = &row["doc"];
                let id = doc["_id"].as_str().unwrap_or_default().to_string();
                let value = doc["value"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec();
                let expired = if is_group {
                    let members = group_members(&value);
                    let mut all_gone = !members.is_empty();
                    for m in &members {
                        if doomed.contains(m) {
                            continue;
                        }
                        let status = authed(client.head(format!("{base}/{TASK_KEY}{m}")), &auth)
                            .send()
                            .await
                            .map_err(err)?
                            .status();
                        if status != reqwest::StatusCode::NOT_FOUND {
                            all_gone = false;
                            break;
                        }
                    }
                    all_gone
                } else {
                    date_done_unix(&value).is_some_and(|t| t < opts.cutoff_unix)
                };
                if expired {
                    if let Some(task) = id.strip_prefix(TASK_KEY) {
                        doomed.insert(task.to_string());
                    }
                    delete.push(
                        serde_json::json!({"_id": id, "_rev": doc["_rev"], "_deleted": true}),
                    );
                }
            }
            if !delete.is_empty() && !opts.dry_run {
                let res: serde_json::Value =
                    authed(client.post(format!("{base}/_bulk_docs")), &auth)
                        .json(&serde_json::json!({"docs": delete}))
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
            report.record(is_group, delete.len(), t0.elapsed());
            if !opts.dry_run {
                pace(opts.rate, report.tasks + report.groups, started).await;
            }
            match next {
                Some(n) => {
                    start = serde_json::to_string(n["key"].as_str().unwrap_or_default())
                        .unwrap_or_default()
                }
                None => break,
            }
        }
    }
    Ok(report)
}

/// An authenticated GET of the API root (Elasticsearch cluster health, CouchDB, Consul, ArangoDB).
pub async fn http_probe(kind: &str, url: &str) -> Result<String, StoreError> {
    let (parsed, auth) = http_parts(kind, url, if kind == "couchdb" { 2 } else { 1 })?;
    let path = match kind {
        "elasticsearch" => "/_cluster/health",
        "consul" => "/v1/status/leader",
        "arangodb" => "/_api/version",
        _ => "/",
    };
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

/// Files `celery-task-meta-*` / `celery-taskset-meta-*` whose `date_done` (tasks) or modification
/// time (groups, which carry no timestamp) is before the cutoff.
pub async fn filesystem_purge(path: &str, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let started = Instant::now();
    let mut dir = tokio::fs::read_dir(path)
        .await
        .map_err(|e| StoreError::connect("filesystem", format!("{path}: {e}")))?;
    while let Some(entry) = dir
        .next_entry()
        .await
        .map_err(|e| StoreError::protocol("filesystem", e))?
    {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_group = name.starts_with(GROUP_KEY);
        if !is_group && !name.starts_with(TASK_KEY) {
            continue;
        }
        let when = if is_group {
            entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
        } else {
            tokio::fs::read(entry.path())
                .await
                .ok()
                .and_then(|b| date_done_unix(&b))
        };
        if when.is_some_and(|t| t < opts.cutoff_unix) {
            if !opts.dry_run {
                tokio::fs::remove_file(entry.path())
                    .await
                    .map_err(|e| StoreError::protocol("filesystem", e))?;
                pace(opts.rate, report.tasks + report.groups + 1, started).await;
            }
            if is_group {
                report.groups += 1;
            } else {
                report.tasks += 1;
            }
        }
    }
    report.batches = 1;
    report.longest_batch = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_meta_parsing() {
        let meta = br#"{"status": "SUCCESS", "result": 5, "date_done": "2026-11-24T03:30:00.123456+00:00"}"#;
        assert_eq!(date_done_unix(meta), Some(1795491000));
        let naive = br#"{"date_done": "2026-11-24T03:30:00.123456"}"#;
        assert_eq!(date_done_unix(naive), Some(1795491000));
        assert_eq!(date_done_unix(br#"{"date_done": null}"#), None);
        let group = br#"{"result": [["g1", null], [[["t1", null], null], [["t2", null], null]]]}"#;
        assert_eq!(group_members(group), vec!["t1", "t2"]);
    }
}
