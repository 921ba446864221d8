//! Object stores (Celery's `s3://` and `azureblockblob://` backends) through the `object_store`
//! crate: a listing round trip as the probe, and cleanup of result objects by their `date_done`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use crate::stores::plan::{self, CeleryClock, GroupVerdict, TaskVerdict};
use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

use crate::stores::plan::{GROUP_KEY, TASK_KEY};

/// Azure answers a listing of a container that does not exist with `ContainerNotFound`.
fn container_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("ContainerNotFound")
}

pub struct ObjectClient {
    kind: &'static str,
    /// `s3 at host:port` for an endpoint URL, else the kind: for messages.
    at: String,
    store: Arc<dyn ObjectStore>,
    /// Celery's base path, prepended verbatim to every key (may end in `/` or not).
    base: String,
    /// Why the store expires results itself, if it does (GCS with `gcs_ttl`).
    native: Option<String>,
    /// Celery's `timezone`/`enable_utc` (naive `date_done` strings).
    clock: CeleryClock,
    /// What to add to a certificate failure (see `stores::tls_hint`).
    tls_hint: Option<String>,
}

/// Two retries within 10 s (object_store's default is 10 within 3 minutes): a health check has a
/// few seconds, and a refused certificate or connection should be reported as itself, not as a
/// timeout.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn setting(cfg: &BackendConfig, key: &str) -> Option<String> {
    cfg.settings
        .get(key)
        .and_then(|v| v.as_str())
        .map(String::from)
}

impl ObjectClient {
    /// A failed listing, as the probe and cleanup both report it (see [`probe_error`]).
    fn listing_error(&self, e: &object_store::Error) -> StoreError {
        probe_error(self.kind, &self.at, self.tls_hint.as_deref(), e)
    }

    /// Why the store expires results itself, if it does.
    pub fn native_expiry(&self) -> Option<&str> {
        self.native.as_deref()
    }

    pub fn s3(cfg: &BackendConfig) -> Result<Self, StoreError> {
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_retry(retry())
            .with_bucket_name(setting(cfg, "s3_bucket").unwrap_or_default())
            .with_region(setting(cfg, "s3_region").unwrap_or_else(|| "us-east-1".into()));
        if let Some(e) = setting(cfg, "s3_endpoint_url") {
            b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
        }
        if let (Some(k), Some(s)) = (
            setting(cfg, "s3_access_key_id"),
            setting(cfg, "s3_secret_access_key"),
        ) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        // A private CA (tls.caSecretRef) for an S3-compatible https endpoint, in memory.
        if let Some(pem) = cfg.tls.as_ref().and_then(|t| t.ca_pem.as_deref()) {
            let mut options = object_store::ClientOptions::new();
            for c in object_store::Certificate::from_pem_bundle(pem)
                .map_err(|e| StoreError::tls("s3", e, None))?
            {
                options = options.with_root_certificate(c);
            }
            b = b.with_client_options(options);
        }
        let store = b.build().map_err(|e| StoreError::connect("s3", e))?;
        Ok(ObjectClient {
            at: setting(cfg, "s3_endpoint_url")
                .map(|e| format!("s3 at {}", crate::stores::endpoint_of(&e)))
                .unwrap_or_else(|| "s3".into()),
            kind: "s3",
            store: Arc::new(store),
            base: setting(cfg, "s3_base_path").unwrap_or_default(),
            native: None,
            clock: CeleryClock::from_settings(cfg),
            tls_hint: match &cfg.tls {
                Some(t) => crate::stores::tls_hint(t),
                // An https endpoint without a tls block: the system trust store was used.
                None => Some("the operator verified against the system trust store: for a private CA set spec.s3.external.tls (caSecretRef or caConfigMapRef)".into()),
            },
        })
    }

    pub fn azure(cfg: &BackendConfig) -> Result<Self, StoreError> {
        let conn = cfg.uri.trim_start_matches("azureblockblob://");
        let field = |name: &str| {
            conn.split(';')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(String::from)
        };
        let container =
            setting(cfg, "azureblockblob_container_name").unwrap_or_else(|| "celery".into());
        let account = field("AccountName").ok_or_else(|| {
            StoreError::Unsupported("only connection strings with AccountName/AccountKey are handled (no identity-based access yet)".into())
        })?;
        let mut b = object_store::azure::MicrosoftAzureBuilder::new()
            .with_retry(retry())
            .with_account(account.clone())
            .with_container_name(container);
        if account == "devstoreaccount1" {
            // Azurite's well-known account: object_store's emulator mode (http://127.0.0.1:10000).
            b = b.with_use_emulator(true);
        } else {
            if let Some(k) = field("AccountKey") {
                b = b.with_access_key(k);
            }
            if let Some(e) = field("BlobEndpoint") {
                b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
            }
        }
        let store = b
            .build()
            .map_err(|e| StoreError::connect("azureBlockBlob", e))?;
        Ok(ObjectClient {
            at: "azureBlockBlob".into(),
            kind: "azureBlockBlob",
            store: Arc::new(store),
            base: setting(cfg, "azureblockblob_base_path").unwrap_or_default(),
            native: None,
            clock: CeleryClock::from_settings(cfg),
            tls_hint: None,
        })
    }

    /// Google Cloud Storage with Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
    /// or the metadata server on GKE), like Celery's client. `STORAGE_EMULATOR_HOST` in the
    /// operator's environment points it at an emulator instead, as it does Google's own clients.
    pub fn gcs(cfg: &BackendConfig) -> Result<Self, StoreError> {
        let rest = cfg.uri.trim_start_matches("gs://");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = authority.split('?').next().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let base_path = percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .trim_matches('/')
            .to_string();
        let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_retry(retry())
            .with_bucket_name(bucket);
        if let Ok(host) = std::env::var("STORAGE_EMULATOR_HOST") {
            let base_url = if host.contains("://") {
                host
            } else {
                format!("http://{host}")
            };
            let key = serde_json::json!({
                "gcs_base_url": base_url.trim_end_matches('/'),
                "disable_oauth": true,
                "client_email": "",
                "private_key": "",
                "private_key_id": "",
            });
            b = b
                .with_service_account_key(key.to_string())
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_allow_http(base_url.starts_with("http://")),
                );
        }
        let store = b.build().map_err(|e| StoreError::connect("gcs", e))?;
        // With gcs_ttl Celery stamps each object's custom_time with its expiry and refuses to
        // start unless the bucket has a Delete lifecycle rule: GCS itself removes the results.
        let ttl = rest
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("gcs_ttl="))
            .map(String::from)
            .or_else(|| {
                cfg.settings
                    .get("gcs_ttl")
                    .map(|v| v.to_string().trim_matches('"').to_string())
            })
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| *t > 0.0);
        Ok(ObjectClient {
            at: "gcs".into(),
            kind: "gcs",
            native: ttl.map(|t| format!("gcs_ttl ({t} s): Celery sets each object's custom_time to its expiry and requires a Delete lifecycle rule on the bucket, so GCS deletes expired results")),
            store: Arc::new(store),
            clock: CeleryClock::from_settings(cfg),
            tls_hint: None,
            // Celery writes `<base_path>/<key>` when a base path is set, else `<key>`.
            base: if base_path.is_empty() {
                String::new()
            } else {
                format!("{base_path}/")
            },
        })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The directory to list: the part of the base path up to its last `/`.
    fn list_prefix(&self) -> Option<Path> {
        self.base.rfind('/').map(|i| Path::from(&self.base[..i]))
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let listed = match self
            .store
            .list_with_delimiter(self.list_prefix().as_ref())
            .await
        {
            Ok(l) => l,
            // Celery's Azure backend creates its container on first use; the account answered.
            Err(e) if self.kind == "azureBlockBlob" && container_missing(&e) => {
                return Ok("the account answered; the container does not exist yet (Celery creates it on first write)".into());
            }
            Err(e) => return Err(self.listing_error(&e)),
        };
        Ok(format!(
            "listing answered ({} objects, {} prefixes at the base path)",
            listed.objects.len(),
            listed.common_prefixes.len()
        ))
    }

    /// The body of an object, `None` when it vanished meanwhile.
    async fn body(&self, p: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.get(p).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => Ok(Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(StoreError::protocol(self.kind, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::protocol(self.kind, e)),
        }
    }

    /// Cleanup of result objects under the base path (Celery's `cleanup()` is the empty base
    /// method for S3, GCS and Azure Blob; each key is one object holding the JSON meta).
    ///
    /// - Timestamp rule: as Redis (`date_done` is ISO-8601 with its UTC offset; naive strings in
    ///   Celery's zone). Task objects without `date_done` are kept and counted.
    /// - Group rule: Celery writes no group timestamp; a group object is deleted only when every
    ///   member's task object is present and expired (`plan::group_verdict`). All objects are
    ///   read before anything is deleted, groups are deleted before tasks.
    /// - Other objects under the prefix (chord counters, foreign files) are left alone; unreadable
    ///   result objects are skipped and counted.
    /// - Deleted in batches of `batch` per kind; a dry run counts the same batches.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let err = |e: object_store::Error| StoreError::protocol(self.kind, e);
        let zone = self.clock.zone();
        let naive = zone.as_ref().ok().map(|z| &z.1);
        let mut report = PurgeReport::new(&opts);
        report.time_rule = crate::stores::plan::iso_time_rule(&zone);
        report.group_rule = "a group is deleted only when every member result is present and expired (Celery stores no group timestamp in object stores)".into();
        let started = Instant::now();
        let prefix = self.list_prefix();
        let names: Vec<Path> = match self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| m.location)
            .try_collect()
            .await
        {
            Ok(n) => n,
            Err(e) if self.kind == "azureBlockBlob" && container_missing(&e) => vec![],
            // The listing meets what a probe meets (no bucket, TLS, credentials): said the same way.
            Err(e) => return Err(self.listing_error(&e)),
        };
        let task_prefix = format!("{}{TASK_KEY}", self.base);
        let group_prefix = format!("{}{GROUP_KEY}", self.base);
        let t0 = Instant::now();
        let mut tasks: HashMap<String, (Path, TaskVerdict)> = HashMap::new();
        for p in names
            .iter()
            .filter(|p| p.as_ref().starts_with(&task_prefix))
        {
            let id = p.as_ref()[task_prefix.len()..].to_string();
            let Some(body) = self.body(p).await? else {
                continue;
            };
            let v = plan::task_verdict(&body, opts.cutoff_unix, naive);
            match v {
                TaskVerdict::NoDateDone => report.kept_without_date_done += 1,
                TaskVerdict::Unrecognised => report.skip("unreadable task results"),
                _ => {}
            }
            tasks.insert(id, (p.clone(), v));
        }
        let mut groups: Vec<Path> = vec![];
        for p in names
            .iter()
            .filter(|p| p.as_ref().starts_with(&group_prefix))
        {
            let Some(body) = self.body(p).await? else {
                continue;
            };
            let Some(members) = plan::group_members(&body) else {
                report.skip("unreadable group results");
                continue;
            };
            let verdicts: Vec<Option<TaskVerdict>> =
                members.iter().map(|m| tasks.get(m).map(|t| t.1)).collect();
            match plan::group_verdict(&verdicts) {
                GroupVerdict::Expired => groups.push(p.clone()),
                GroupVerdict::InUse => {}
                GroupVerdict::Unproven => report.kept_groups_unproven += 1,
            }
        }
        let mut expired: Vec<Path> = tasks
            .into_values()
            .filter(|(_, v)| *v == TaskVerdict::Expired)
            .map(|(p, _)| p)
            .collect();
        expired.sort();
        report.longest_batch = t0.elapsed();
        for (is_group, list) in [(true, &groups), (false, &expired)] {
            for chunk in list.chunks(opts.batch.max(1) as usize) {
                let t = Instant::now();
                if !opts.dry_run {
                    let locations = futures::stream::iter(chunk.iter().cloned().map(Ok)).boxed();
                    for r in self
                        .store
                        .delete_stream(locations)
                        .collect::<Vec<_>>()
                        .await
                    {
                        match r {
                            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(err(e)),
                        }
                    }
                }
                report.record(is_group, chunk.len(), t.elapsed());
                if !opts.dry_run {
                    pace(opts.rate, report.tasks + report.groups, started).await;
                }
            }
        }
        Ok(report)
    }
}

/// What a failed listing means: no credentials at all (a token request to the cloud's metadata
/// address failed: nothing in the backend, no Application Default Credentials, no instance
/// identity), refused credentials (401/403 from the store), or an unreachable store.
fn probe_error(
    kind: &str,
    at: &str,
    tls_hint: Option<&str>,
    e: &object_store::Error,
) -> StoreError {
    let text = crate::stores::cause_chain(e);
    if crate::stores::tls_failure(&text) {
        // From the TLS cause on: object_store's request and retry bookkeeping before it
        // ("Error performing GET … after 2 retries …") says nothing about the certificate.
        let parts: Vec<&str> = text.split(": ").collect();
        let cause = parts
            .iter()
            .position(|p| {
                [
                    "invalid peer certificate",
                    "received corrupt message",
                    "peer is incompatible",
                    "received fatal alert",
                ]
                .iter()
                .any(|k| p.to_ascii_lowercase().starts_with(k))
            })
            .map(|i| parts[i..].join(": "))
            .unwrap_or(text);
        return StoreError::tls(at, cause, tls_hint);
    }
    if text.contains("token request") || text.contains("169.254.169.254") {
        let how = match kind {
            "gcs" => "Celery and the operator use Application Default Credentials: give the operator's Pod GOOGLE_APPLICATION_CREDENTIALS or a workload identity",
            "s3" => "set the access key Secret references, or give the operator's Pod AWS credentials",
            _ => "set the credentials Secret references, or give the operator's Pod a cloud identity",
        };
        return StoreError::NoCredentials {
            store: kind.into(),
            message: format!("none found in the backend or the operator's environment, and the cloud metadata service gave no token; {how}"),
        };
    }
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return StoreError::auth(at, text);
    }
    // The store answered: the bucket is not there (S3's NoSuchBucket comes as a generic error
    // with the XML body). Celery's S3 and GCS backends write into an existing bucket only.
    if matches!(e, object_store::Error::NotFound { .. })
        || text.contains("NoSuchBucket")
        || text.contains("bucket does not exist")
    {
        return StoreError::protocol(
            at,
            format!("the bucket does not exist (spec.{kind}.external.bucket); Celery's {kind} backend does not create it"),
        );
    }
    // An https-only endpoint drops a plain-http client that way.
    if text.contains("Connection reset by peer") && text.contains("GET http://") {
        return StoreError::connect(
            at,
            format!("{} (the endpoint closed the connection: if it speaks https, use https:// in spec.{kind}.external.endpointUrl)", text.rsplit(": ").next().unwrap_or(&text)),
        );
    }
    StoreError::connect(at, text)
}

impl crate::stores::StoreClient for ObjectClient {
    fn kind(&self) -> String {
        ObjectClient::kind(self).into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        match self.native_expiry() {
            Some(why) => crate::stores::Expiry::Native(why.to_string()),
            None => crate::stores::Expiry::Purgeable,
        }
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(ObjectClient::probe(self))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(ObjectClient::purge(self, opts))
    }
}
