//! CouchDB (Celery's `couchdb://` backend): cleanup by Celery's `date_done`.

use std::time::{Duration, Instant};

use crate::stores::http::{authed, http_parts, http_probe, http_url, BasicCreds, HttpApi};
use crate::stores::plan::{self, CeleryClock, GroupVerdict, TaskVerdict};
use crate::stores::plan::{GROUP_KEY, TASK_KEY};
use crate::stores::{pace, BoxFuture, Expiry, PurgeOptions, PurgeReport, StoreClient, StoreError};

/// CouchDB's API root; pycouchdb decodes the URI's credentials again after kombu (2 passes).
const API: HttpApi = HttpApi {
    name: "couchdb",
    health_path: "/",
    decode_passes: 2,
};

/// The operator's CouchDB client: Celery's URI as `http://`, and Celery's clock for the naive
/// `date_done` strings.
pub struct CouchDbStore {
    url: String,
    clock: CeleryClock,
}

impl CouchDbStore {
    pub fn new(cfg: &crate::uri::BackendConfig) -> Self {
        CouchDbStore {
            url: http_url(&cfg.uri, false),
            clock: CeleryClock::from_settings(cfg),
        }
    }
}

impl StoreClient for CouchDbStore {
    fn kind(&self) -> String {
        API.name.into()
    }
    fn expiry(&self) -> Expiry {
        Expiry::Purgeable
    }
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(http_probe(&API, &self.url, None))
    }
    fn purge(&self, opts: PurgeOptions) -> BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(couchdb_purge(&self.url, &self.clock, opts))
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
    let (db, auth) = http_parts(API.name, url, API.decode_passes)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| StoreError::connect("couchdb", e))?;
    let zone = clock.zone();
    let naive = zone.as_ref().ok().map(|z| &z.1);
    let mut report = PurgeReport::new(&opts);
    report.time_rule =
        crate::stores::plan::iso_time_rule(&zone).replace("date_done", "value.date_done");
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
