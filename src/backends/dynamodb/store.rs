//! DynamoDB (Celery's `dynamodb://` backend): DescribeTable as the probe; with `ttl_seconds` the
//! table's own TTL expires items, without it cleanup scans for Celery's `timestamp` attribute and
//! deletes old items in BatchWriteItem batches of at most 25.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use aws_sdk_dynamodb::Client;

use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

const STORE: &str = "dynamodb";
use crate::stores::plan::{GROUP_KEY, TASK_KEY};
/// DynamoDB's limit for one BatchWriteItem call.
const MAX_BATCH: usize = 25;

/// Where and how to reach the table, parsed from the URI as Celery's DynamoDB backend does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub table: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub credentials: Option<(String, String)>,
    pub ttl: bool,
}

/// Celery 5.x stores the item key as Python's `str()` of the key bytes, `b'celery-task-meta-…'`
/// (seen in items a real worker wrote); accept that and the plain form.
pub fn result_key(stored: &str) -> &str {
    stored
        .strip_prefix("b'")
        .and_then(|k| k.strip_suffix('\''))
        .unwrap_or(stored)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parse `dynamodb://[key:secret]@region-or-host[:port]/table?...` plus `dynamodb_endpoint_url`.
pub fn target(cfg: &BackendConfig) -> Target {
    let rest = cfg.uri.trim_start_matches("dynamodb://");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (table, query) = path.split_once('?').unwrap_or((path, ""));
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let credentials = userinfo
        .split_once(':')
        .filter(|(k, s)| !k.is_empty() && !s.is_empty())
        .map(|(k, s)| (decode(k), decode(s)));
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (host, None),
    };
    let local = hostname == "localhost" || hostname.parse::<std::net::Ipv4Addr>().is_ok();
    let (region, mut endpoint) = if local {
        (
            "us-east-1".to_string(),
            Some(format!("http://{hostname}:{}", port.unwrap_or("8000"))),
        )
    } else if hostname.is_empty() {
        ("us-east-1".to_string(), None)
    } else {
        (hostname.to_string(), None)
    };
    if let Some(e) = cfg
        .settings
        .get("dynamodb_endpoint_url")
        .and_then(|v| v.as_str())
    {
        endpoint = Some(e.to_string());
    }
    Target {
        table: if table.is_empty() {
            "celery".into()
        } else {
            decode(table)
        },
        region,
        endpoint,
        credentials,
        ttl: query.split('&').any(|kv| kv.starts_with("ttl_seconds=")),
    }
}

/// A service error with its whole cause chain (the SDK's Display alone says only "service error").
fn service_error(e: impl Into<aws_sdk_dynamodb::Error>) -> StoreError {
    StoreError::protocol(
        STORE,
        aws_sdk_dynamodb::error::DisplayErrorContext(e.into()),
    )
}

pub struct DynamoStore {
    target: Target,
}

impl DynamoStore {
    pub fn new(cfg: &BackendConfig) -> Self {
        DynamoStore {
            target: target(cfg),
        }
    }

    pub fn has_ttl(&self) -> bool {
        self.target.ttl
    }

    async fn client(&self) -> Client {
        let t = &self.target;
        // rustls with ring, the provider the rest of the operator uses (the SDK's default client
        // would bring aws-lc-rs, and two providers leave rustls unable to pick one).
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(t.region.clone()));
        if let Some((k, s)) = &t.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::from_keys(
                k.clone(),
                s.clone(),
                None,
            ));
        }
        if let Some(e) = &t.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        Client::new(&loader.load().await)
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let res = self
            .client()
            .await
            .describe_table()
            .table_name(&self.target.table)
            .send()
            .await;
        let at = format!(
            "{STORE} at {}",
            self.target
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("region {}", self.target.region))
        );
        let res = match res {
            // Never reached the service: name the cause, not the SDK's debug rendering.
            Err(aws_sdk_dynamodb::error::SdkError::DispatchFailure(d)) => {
                let cause = d
                    .as_connector_error()
                    .map(|c| crate::stores::cause_chain(c))
                    .unwrap_or_else(|| "the request could not be sent".into());
                return Err(if cause.contains("loading credentials") {
                    StoreError::NoCredentials {
                        store: at,
                        message: format!("{cause} (set the backend's access key Secret references, or give the operator's Pod AWS credentials)"),
                    }
                } else if d.is_timeout() {
                    StoreError::connect(&at, format!("no answer (timed out): {cause}"))
                } else {
                    StoreError::connect(&at, cause)
                });
            }
            Err(aws_sdk_dynamodb::error::SdkError::TimeoutError(_)) => {
                return Err(StoreError::connect(&at, "no answer (timed out)"));
            }
            Err(e @ aws_sdk_dynamodb::error::SdkError::ConstructionFailure(_)) => {
                let cause = std::error::Error::source(&e)
                    .map(crate::stores::cause_chain)
                    .unwrap_or_else(|| "the request could not be built".into());
                // Without credentials the SDK cannot sign the request.
                return Err(StoreError::auth(
                    &at,
                    format!("no AWS credentials found or usable: {cause}"),
                ));
            }
            other => other,
        };
        match res.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(out) => {
                let status = out
                    .table()
                    .and_then(|t| t.table_status())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into());
                Ok(format!("DynamoDB table {} is {status}", self.target.table))
            }
            // Celery creates its table at start-up; the service answered.
            Err(aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) => Ok(format!(
                "the service answered; table {} does not exist yet (Celery creates it at start-up)",
                self.target.table
            )),
            Err(e) => {
                use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                let what = match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ => crate::stores::cause_chain(&e),
                };
                if matches!(
                    e.code(),
                    Some(
                        "UnrecognizedClientException"
                            | "InvalidSignatureException"
                            | "AccessDeniedException"
                            | "MissingAuthenticationToken"
                    )
                ) {
                    Err(StoreError::auth(&at, what))
                } else {
                    Err(StoreError::protocol(&at, what))
                }
            }
        }
    }

    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let client = self.client().await;
        let mut report = PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        report.time_rule = "dynamodb: Celery's timestamp attribute (Unix seconds, time.time()): no time zone involved".into();
        report.group_rule =
            "group items by their own timestamp (Celery stamps every item it writes)".into();
        let started = Instant::now();
        let batch = (opts.batch.max(1) as usize).min(MAX_BATCH);
        let mut start_key: Option<HashMap<String, AttributeValue>> = None;
        loop {
            // A paged scan that returns only the keys of items Celery stamped before the cutoff.
            let page = client
                .scan()
                .table_name(&self.target.table)
                .projection_expression("#id")
                .filter_expression("#ts < :cutoff")
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#ts", "timestamp")
                .expression_attribute_values(
                    ":cutoff",
                    AttributeValue::N(opts.cutoff_unix.to_string()),
                )
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(aws_sdk_dynamodb::Error::from);
            let page = match page {
                Ok(p) => p,
                Err(aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) => break,
                Err(e) => return Err(service_error(e)),
            };
            let keys: Vec<String> = page
                .items()
                .iter()
                .filter_map(|i| i.get("id").and_then(|v| v.as_s().ok()).cloned())
                .filter(|k| {
                    let k = result_key(k);
                    k.starts_with(TASK_KEY) || k.starts_with(GROUP_KEY)
                })
                .collect();
            for chunk in keys.chunks(batch) {
                let groups = chunk
                    .iter()
                    .filter(|k| result_key(k).starts_with(GROUP_KEY))
                    .count();
                if opts.dry_run {
                    // The same chunks the real run deletes: the same batch count.
                    report.record_mixed(chunk.len() - groups, groups, Default::default());
                    continue;
                }
                let t = Instant::now();
                let mut requests: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|k| {
                        DeleteRequest::builder()
                            .key("id", AttributeValue::S(k.clone()))
                            .build()
                            .map(|d| WriteRequest::builder().delete_request(d).build())
                            .map_err(|e| StoreError::protocol(STORE, e))
                    })
                    .collect::<Result<_, _>>()?;
                // Unprocessed items (throttling) are retried until none are left.
                while !requests.is_empty() {
                    let out = client
                        .batch_write_item()
                        .request_items(&self.target.table, requests)
                        .send()
                        .await
                        .map_err(service_error)?;
                    requests = out
                        .unprocessed_items()
                        .and_then(|m| m.get(&self.target.table))
                        .cloned()
                        .unwrap_or_default();
                    if !requests.is_empty() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
                report.record_mixed(chunk.len() - groups, groups, t.elapsed());
                pace(opts.rate, report.tasks + report.groups, started).await;
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start_key = Some(k.clone()),
                _ => break,
            }
        }
        Ok(report)
    }
}

impl crate::stores::StoreClient for DynamoStore {
    fn kind(&self) -> String {
        "dynamodb".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        if self.has_ttl() {
            crate::stores::Expiry::Native("DynamoDB TTL (ttl_seconds) expires items".into())
        } else {
            crate::stores::Expiry::Purgeable
        }
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(DynamoStore::probe(self))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(DynamoStore::purge(self, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(uri: &str) -> BackendConfig {
        BackendConfig {
            uri: uri.into(),
            ..Default::default()
        }
    }

    #[test]
    fn stored_keys_are_read_in_both_forms() {
        assert_eq!(result_key("b'celery-task-meta-1'"), "celery-task-meta-1");
        assert_eq!(result_key("celery-taskset-meta-2"), "celery-taskset-meta-2");
        assert_eq!(result_key("b'chord-unlock"), "b'chord-unlock");
    }

    #[test]
    fn targets_follow_celerys_reading_of_the_uri() {
        let t = target(&cfg(
            "dynamodb://AK:s%2Fk%40@localhost:28000/results?ttl_seconds=60",
        ));
        assert_eq!(t.table, "results");
        assert_eq!(t.endpoint.as_deref(), Some("http://localhost:28000"));
        assert_eq!(t.credentials, Some(("AK".into(), "s/k@".into())));
        assert!(t.ttl);
        let t = target(&cfg("dynamodb://@eu-west-1/celery"));
        assert_eq!(
            (t.region.as_str(), t.endpoint, t.credentials, t.ttl),
            ("eu-west-1", None, None, false)
        );
        let mut c = cfg("dynamodb://@us-east-1/t?read=5");
        c.settings.insert(
            "dynamodb_endpoint_url".into(),
            serde_json::json!("http://ddb.local:8000"),
        );
        assert_eq!(
            target(&c).endpoint.as_deref(),
            Some("http://ddb.local:8000")
        );
        assert_eq!(
            target(&cfg("dynamodb://k:s@127.0.0.1/t"))
                .endpoint
                .as_deref(),
            Some("http://127.0.0.1:8000")
        );
    }
}
