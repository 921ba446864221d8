//! Elasticsearch/OpenSearch (Celery's `elasticsearch://` backend): cleanup of task and group
//! documents by Celery's `@timestamp`, a scroll of ids and `_bulk` deletes one batch at a time,
//! each conditional on the document being unchanged since it was read (`if_seq_no`).

use std::time::{Duration, Instant};

use crate::stores::http::{authed, http_parts, http_probe, http_url, HttpApi};
use crate::stores::plan::{GROUP_KEY, TASK_KEY};
use crate::stores::{pace, BoxFuture, Expiry, PurgeOptions, PurgeReport, StoreClient, StoreError};

/// Elasticsearch's status API, reached with Celery's credentials (decoded once, by kombu).
const API: HttpApi = HttpApi {
    name: "elasticsearch",
    health_path: "/_cluster/health",
    decode_passes: 1,
};

/// The operator's Elasticsearch/OpenSearch client: Celery's URI as `http(s)://` (https when the
/// scheme is `elasticsearch+https`).
pub struct ElasticsearchStore {
    url: String,
}

impl ElasticsearchStore {
    pub fn new(cfg: &crate::uri::BackendConfig) -> Self {
        let scheme = cfg.uri.split("://").next().unwrap_or_default();
        ElasticsearchStore {
            url: http_url(&cfg.uri, scheme.ends_with("https")),
        }
    }
}

impl StoreClient for ElasticsearchStore {
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
        Box::pin(elasticsearch_purge(&self.url, opts))
    }
}

/// Elasticsearch/OpenSearch: documents in Celery's index whose `@timestamp` (Celery stamps every
/// task and group document) is before the cutoff, read through a scroll of `batch` ids at a time
/// and deleted with `_bulk`, so no single request touches more than one batch.
pub async fn elasticsearch_purge(url: &str, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
    const KIND: &str = API.name;
    let (parsed, auth) = http_parts(KIND, url, API.decode_passes)?;
    let index = parsed
        .path_segments()
        .and_then(|mut s| s.next().map(String::from))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "celery".into());
    let mut base = parsed.clone();
    base.set_query(None);
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let at = |path: &str| {
        let mut u = base.clone();
        u.set_path(path);
        u
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| StoreError::connect(KIND, e))?;
    let send = |rb: reqwest::RequestBuilder| async {
        let resp = authed(rb, &auth)
            .send()
            .await
            .map_err(|e| StoreError::connect(KIND, e.without_url()))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| StoreError::protocol(KIND, e.without_url()))?;
        Ok::<_, StoreError>((status, body))
    };
    let mut report = PurgeReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    report.time_rule =
        "elasticsearch: Celery's @timestamp (UTC, milliseconds): no time zone involved".into();
    report.group_rule =
        "group documents by their own @timestamp (Celery stamps every document it writes)".into();
    let started = Instant::now();
    let query = serde_json::json!({
        "size": opts.batch.max(1),
        "_source": false,
        "seq_no_primary_term": true,
        "query": {"range": {"@timestamp": {"lt": opts.cutoff_unix.saturating_mul(1000), "format": "epoch_millis"}}},
    });
    let (status, mut page) = send(
        client
            .post(at(&format!("/{index}/_search")))
            .query(&[("scroll", "2m")])
            .json(&query),
    )
    .await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        // No index yet: Celery creates it on first write.
        return Ok(report);
    }
    if !status.is_success() {
        return Err(StoreError::protocol(
            KIND,
            format!("search answered {status}: {}", page["error"]["type"]),
        ));
    }
    loop {
        // (id, seq_no, primary_term): a delete only applies to the document as it was read.
        let hits: Vec<(String, serde_json::Value, serde_json::Value)> = page["hits"]["hits"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|d| {
                        let id = d["_id"].as_str()?;
                        (id.starts_with(TASK_KEY) || id.starts_with(GROUP_KEY)).then(|| {
                            (
                                id.to_string(),
                                d["_seq_no"].clone(),
                                d["_primary_term"].clone(),
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw = page["hits"]["hits"].as_array().map_or(0, |h| h.len());
        if raw == 0 {
            break;
        }
        let t = Instant::now();
        let (mut tasks, mut groups) = (0, 0);
        if opts.dry_run {
            groups = hits
                .iter()
                .filter(|(id, ..)| id.starts_with(GROUP_KEY))
                .count();
            tasks = hits.len() - groups;
        } else if !hits.is_empty() {
            let mut pending = hits;
            for attempt in 0..4 {
                let mut ndjson = String::new();
                for (id, seq_no, primary_term) in &pending {
                    let mut action = serde_json::json!({"_index": index, "_id": id});
                    if seq_no.is_u64() && primary_term.is_u64() {
                        action["if_seq_no"] = seq_no.clone();
                        action["if_primary_term"] = primary_term.clone();
                    }
                    ndjson.push_str(&serde_json::json!({ "delete": action }).to_string());
                    ndjson.push('\n');
                }
                let (status, body) = send(
                    client
                        .post(at("/_bulk"))
                        .header("content-type", "application/x-ndjson")
                        .body(ndjson),
                )
                .await?;
                if !status.is_success() {
                    return Err(StoreError::protocol(
                        KIND,
                        format!("_bulk delete answered {status}: {}", body["error"]["type"]),
                    ));
                }
                let items = body["items"].as_array().cloned().unwrap_or_default();
                let mut retry = vec![];
                for (item, hit) in items.iter().zip(pending) {
                    let d = &item["delete"];
                    match d["status"].as_u64().unwrap_or(0) {
                        200..=299 => {
                            if hit.0.starts_with(GROUP_KEY) {
                                groups += 1;
                            } else {
                                tasks += 1;
                            }
                        }
                        // Deleted by someone else in between (Celery's own cleanup, a retry).
                        404 => report.skip("already gone"),
                        // Rewritten since it was read (the result is in use again): kept.
                        409 => report.skip("changed since it was read (kept)"),
                        // The store is busy (rejected execution): retried with a backoff.
                        429 | 503 => retry.push(hit),
                        _ => {
                            return Err(StoreError::protocol(
                                KIND,
                                format!(
                                    "_bulk delete of a result failed: {} {}",
                                    d["error"]["type"].as_str().unwrap_or("unknown"),
                                    d["error"]["reason"].as_str().unwrap_or_default()
                                ),
                            ))
                        }
                    }
                }
                if retry.is_empty() {
                    break;
                }
                if attempt == 3 {
                    return Err(StoreError::protocol(
                        KIND,
                        format!("_bulk delete: the store kept rejecting {} deletes as busy (429/503) after 3 retries", retry.len()),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                pending = retry;
            }
        }
        report.record_mixed(tasks, groups, t.elapsed());
        if !opts.dry_run {
            pace(opts.rate, report.tasks + report.groups, started).await;
        }
        let Some(scroll_id) = page["_scroll_id"].as_str().map(String::from) else {
            break;
        };
        let (status, next) = send(
            client
                .post(at("/_search/scroll"))
                .json(&serde_json::json!({"scroll": "2m", "scroll_id": scroll_id})),
        )
        .await?;
        if !status.is_success() {
            return Err(StoreError::protocol(
                KIND,
                format!("scroll answered {status}"),
            ));
        }
        page = next;
    }
    if let Some(id) = page["_scroll_id"].as_str() {
        let _ = send(
            client
                .delete(at("/_search/scroll"))
                .json(&serde_json::json!({"scroll_id": id})),
        )
        .await;
    }
    if !opts.dry_run {
        // Make the deletions visible to searches at once (Celery reads by id, which is realtime).
        let _ = send(client.post(at(&format!("/{index}/_refresh")))).await;
    }
    Ok(report)
}
