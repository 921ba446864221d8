//! Object stores (Celery's `s3://` and `azureblockblob://` backends) through the `object_store`
//! crate: a listing round trip as the probe, and cleanup of result objects by their `date_done`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use super::keyvalue::{date_done_unix, group_members};
use super::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

const TASK_KEY: &str = "celery-task-meta-";
const GROUP_KEY: &str = "celery-taskset-meta-";

/// Azure answers a listing of a container that does not exist with `ContainerNotFound`.
fn container_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("ContainerNotFound")
}

pub struct ObjectClient {
    kind: &'static str,
    store: Arc<dyn ObjectStore>,
    /// Celery's base path, prepended verbatim to every key (may end in `/` or not).
    base: String,
    /// Why the store expires results itself, if it does (GCS with `gcs_ttl`).
    native: Option<String>,
}

fn setting(cfg: &BackendConfig, key: &str) -> Option<String> {
    cfg.settings
        .get(key)
        .and_then(|v| v.as_str())
        .map(String::from)
}

impl ObjectClient {
    /// Why the store expires results itself, if it does.
    pub fn native_expiry(&self) -> Option<&str> {
        self.native.as_deref()
    }

    pub fn s3(cfg: &BackendConfig) -> Result<Self, StoreError> {
        let mut b = object_store::aws::AmazonS3Builder::new()
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
        let store = b.build().map_err(|e| StoreError::connect("s3", e))?;
        Ok(ObjectClient {
            kind: "s3",
            store: Arc::new(store),
            base: setting(cfg, "s3_base_path").unwrap_or_default(),
            native: None,
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
            kind: "azureBlockBlob",
            store: Arc::new(store),
            base: setting(cfg, "azureblockblob_base_path").unwrap_or_default(),
            native: None,
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
        let mut b = object_store::gcp::GoogleCloudStorageBuilder::new().with_bucket_name(bucket);
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
            kind: "gcs",
            native: ttl.map(|t| format!("gcs_ttl ({t} s): Celery sets each object's custom_time to its expiry and requires a Delete lifecycle rule on the bucket, so GCS deletes expired results")),
            store: Arc::new(store),
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
            Err(e) => return Err(StoreError::connect(self.kind, e)),
        };
        Ok(format!(
            "listing answered ({} objects, {} prefixes at the base path)",
            listed.objects.len(),
            listed.common_prefixes.len()
        ))
    }

    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let err = |e: object_store::Error| StoreError::protocol(self.kind, e);
        let mut report = PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
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
            Err(e) => return Err(err(e)),
        };
        let task_prefix = format!("{}{TASK_KEY}", self.base);
        let group_prefix = format!("{}{GROUP_KEY}", self.base);
        let mut remaining: HashSet<String> = HashSet::new();
        let mut delete: Vec<Path> = vec![];
        let t0 = Instant::now();
        for p in names
            .iter()
            .filter(|p| p.as_ref().starts_with(&task_prefix))
        {
            let id = p.as_ref()[task_prefix.len()..].to_string();
            let body = self
                .store
                .get(p)
                .await
                .map_err(err)?
                .bytes()
                .await
                .map_err(err)?;
            if date_done_unix(&body).is_some_and(|t| t < opts.cutoff_unix) {
                delete.push(p.clone());
            } else {
                remaining.insert(id);
            }
        }
        report.tasks = delete.len() as u64;
        for p in names
            .iter()
            .filter(|p| p.as_ref().starts_with(&group_prefix))
        {
            let body = self
                .store
                .get(p)
                .await
                .map_err(err)?
                .bytes()
                .await
                .map_err(err)?;
            let members = group_members(&body);
            if !members.is_empty() && members.iter().all(|m| !remaining.contains(m)) {
                delete.push(p.clone());
                report.groups += 1;
            }
        }
        report.longest_batch = t0.elapsed();
        if !opts.dry_run {
            for chunk in delete.chunks(opts.batch.max(1) as usize) {
                let t = Instant::now();
                let locations = futures::stream::iter(chunk.iter().cloned().map(Ok)).boxed();
                self.store
                    .delete_stream(locations)
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(err)?;
                report.batches += 1;
                report.longest_batch = report.longest_batch.max(t.elapsed());
                pace(opts.rate, report.batches * chunk.len() as u64, started).await;
            }
        }
        Ok(report)
    }
}
