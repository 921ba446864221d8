//! Elasticsearch/OpenSearch (Celery's `elasticsearch://` backend): cleanup of task and group
//! documents by Celery's `@timestamp`, a scroll of ids and `_bulk` deletes one batch at a time.

use std::time::{Duration, Instant};

use super::keyvalue::{authed, http_parts, GROUP_KEY, TASK_KEY};
use super::{pace, PurgeOptions, PurgeReport, StoreError};

/// Elasticsearch/OpenSearch: documents in Celery's index whose `@timestamp` (Celery stamps every
/// task and group document) is before the cutoff, read through a scroll of `batch` ids at a time
/// and deleted with `_bulk`, so no single request touches more than one batch.
pub async fn elasticsearch_purge(url: &str, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
    const KIND: &str = "elasticsearch";
    let (parsed, auth) = http_parts(KIND, url, 1)?;
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
        let hits: Vec<String> = page["hits"]["hits"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|d| d["_id"].as_str().map(String::from))
                    .filter(|id| id.starts_with(TASK_KEY) || id.starts_with(GROUP_KEY))
                    .collect()
            })
            .unwrap_or_default();
        let raw = page["hits"]["hits"].as_array().map_or(0, |h| h.len());
        if raw == 0 {
            break;
        }
        let groups = hits.iter().filter(|id| id.starts_with(GROUP_KEY)).count();
        let t = Instant::now();
        if !opts.dry_run && !hits.is_empty() {
            let mut ndjson = String::new();
            for id in &hits {
                ndjson.push_str(
                    &serde_json::json!({"delete": {"_index": index, "_id": id}}).to_string(),
                );
                ndjson.push('\n');
            }
            let (status, body) = send(
                client
                    .post(at("/_bulk"))
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson),
            )
            .await?;
            if !status.is_success() || body["errors"].as_bool() == Some(true) {
                return Err(StoreError::protocol(
                    KIND,
                    format!("_bulk delete answered {status} with errors"),
                ));
            }
        }
        report.record_mixed(hits.len() - groups, groups, t.elapsed());
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
