//! The `celery.dev/v1alpha1` API: the CeleryResultBackend custom resource and its CRD rendering.

pub mod backends;
pub mod common;
pub mod footprint;
pub mod kinds;
pub mod policy;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use backends::*;
pub use common::*;
pub use kinds::{Backend, BackendKind};
pub use policy::*;

/// API group of every kind this operator serves.
pub const GROUP: &str = "celery.dev";
/// API version of every kind this operator serves.
pub const VERSION: &str = "v1alpha1";

/// Desired state of a Celery result backend: which store, how to reach or provision it,
/// and how workers receive its URI.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "celery.dev",
    version = "v1alpha1",
    kind = "CeleryResultBackend",
    plural = "celeryresultbackends",
    singular = "celeryresultbackend",
    shortname = "crb",
    category = "celery",
    namespaced,
    status = "CeleryResultBackendStatus",
    derive = "PartialEq",
    doc = "A Celery result backend: a store the operator connects to or provisions, whose exact result_backend URI it publishes in a Secret and injects into opted-in workers.",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters: the name is a label value (app.kubernetes.io/instance) on the URI Secret and on provisioned objects"),
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".status.backend","description":"Celery backend kind"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".status.mode","description":"external or managed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"URI Secret is published"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status","description":"Last health check succeeded"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".status.injectedWorkloads","description":"Workloads whose pod template carries the URI"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"Time since creation"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kinds::exactly_one_backend_rule())]
#[x_kube(validation = kinds::result_expires_rule())]
pub struct CeleryResultBackendSpec {
    /// Redis (standalone, TLS, Sentinel or unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisBackend>,
    /// SQL database through SQLAlchemy: PostgreSQL, MySQL/MariaDB or SQLite (`db+` URIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseBackend>,
    /// MongoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<MongoBackend>,
    /// Elasticsearch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchBackend>,
    /// Amazon S3 or an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Backend>,
    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsBackend>,
    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_block_blob: Option<AzureBlockBlobBackend>,
    /// Results sent back as AMQP messages over the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcBackend>,
    /// Memcached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheBackend>,
    /// Apache Cassandra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cassandra: Option<CassandraBackend>,
    /// Amazon DynamoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<DynamoDbBackend>,
    /// Apache CouchDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couchdb: Option<CouchDbBackend>,
    /// Couchbase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couchbase: Option<CouchbaseBackend>,
    /// ArangoDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arangodb: Option<ArangoDbBackend>,
    /// HashiCorp Consul KV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul: Option<ConsulBackend>,
    /// Azure Cosmos DB (SQL API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosmos_db_sql: Option<CosmosDbSqlBackend>,
    /// IronCache (not loadable on Celery 5; accepted and reported Unsupported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iron_cache: Option<IronCacheBackend>,
    /// A shared filesystem directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemBackend>,
    /// How long results live (Celery's result_expires), as a duration such as 24h or 7d; 0 or 0s means never.
    /// Stores with native expiry keep results with it as TTL; for stores without native expiry a cleanup
    /// policy selecting this backend deletes results older than the shorter of this and its retention. Omitted: Celery's default (1 day) for Celery, the policy's retention for cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub result_expires: Option<String>,
    /// Celery's other result settings (the task result backend settings of Celery's configuration reference), rendered into celeryconfig.py: they reach workers only with injection.configModule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_settings: Option<ResultSettings>,
    /// Celery's timezone setting of the workers writing to this backend (an IANA name such as Asia/Shanghai). Rendered into celeryconfig.py; cleanup reads stored times without an offset (MySQL/MariaDB and SQLite task rows, naive date_done strings) in this zone. Omitted: Celery's default (UTC, unless enableUtc is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_+/-]+$"))]
    pub timezone: Option<String>,
    /// Celery's enable_utc setting of the workers writing to this backend (Celery's default true). Rendered into celeryconfig.py. false without timezone means each worker's local time zone, which cleanup cannot know: MySQL/MariaDB and SQLite cleanup then refuses to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_utc: Option<bool>,
    /// Which workers receive the URI, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<InjectionSpec>,
    /// Periodic health checks against the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// Celery's result settings beyond the URI and result_expires (names as in Celery 5.7's
/// `celery.app.defaults`), each rendered into celeryconfig.py under its Celery name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultSettings {
    /// result_extended: also store the task's name, args, kwargs, worker, retries and queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<bool>,
    /// result_serializer: json (Celery's default), pickle, yaml or msgpack. Cleanup reads results as JSON in key-value and document stores: results it cannot read there are kept, never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(json|pickle|yaml|msgpack)$"))]
    pub serializer: Option<String>,
    /// result_compression: gzip, bzip2, zlib or lzma (kombu's built-in codecs). Cleanup cannot read compressed results in key-value and document stores and keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(gzip|bzip2|zlib|lzma)$"))]
    pub compression: Option<String>,
    /// result_accept_content: serializer names or content types a client accepts when reading results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[a-zA-Z0-9][-+./a-zA-Z0-9]*$")
        )
    )]
    pub accept_content: Option<Vec<String>>,
    /// result_chord_join_timeout: how long a chord's join waits for its header results (a duration such as 3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub chord_join_timeout: Option<String>,
    /// result_chord_retry_interval: how long a chord waits before retrying its unlock (a duration such as 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub chord_retry_interval: Option<String>,
    /// result_backend_always_retry: retry recoverable result-backend errors instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_always_retry: Option<bool>,
    /// result_backend_max_retries: how many times (Celery's default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub backend_max_retries: Option<u32>,
    /// result_backend_base_sleep_between_retries_ms, as a duration (e.g. 10ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub backend_base_sleep_between_retries: Option<String>,
    /// result_backend_max_sleep_between_retries_ms, as a duration (e.g. 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub backend_max_sleep_between_retries: Option<String>,
    /// result_cache_max: how many results a client caches (-1: none, Celery's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 1000000))]
    pub cache_max: Option<i64>,
}

/// Injection of the URI into Celery workers.
/// Why `injection.envVar` cannot be `CELERY_CONFIG_MODULE` (CEL and the builder).
pub const ENV_VAR_NOT_CONFIG_MODULE: &str = "CELERY_CONFIG_MODULE is the variable that names celeryconfig.py (injection.configModule); choose another name for the URI";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.envVar) || self.envVar != 'CELERY_CONFIG_MODULE'").message(ENV_VAR_NOT_CONFIG_MODULE).field_path(".envVar"))]
pub struct InjectionSpec {
    /// Workloads in this namespace matching this selector receive the URI, in addition to those
    /// labelled celery.dev/result-backend=<backend name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Environment variable that receives the URI (default CELERY_RESULT_BACKEND).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub env_var: Option<String>,
    /// Also mount celeryconfig.py (settings that cannot live in the URI) in /etc/celery-result-backend and set CELERY_CONFIG_MODULE=celeryconfig; the worker must have that directory on its PYTHONPATH (the operator does not override the image's PYTHONPATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_module: Option<bool>,
    /// Overwrite a value the workload sets itself for the variable (default false: the user's value wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_existing: Option<bool>,
}

/// Health-check schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("!has(self.interval) || !has(self.timeout) || (self.timeout.contains('d') || self.interval.contains('d') ? {} < {} : duration(self.timeout) < duration(self.interval))", cel_seconds("self.timeout"), cel_seconds("self.interval"))).message("timeout must be shorter than interval").field_path(".timeout"))]
pub struct HealthCheckSpec {
    /// Run health checks (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between checks (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Time a check may take (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// Observed state of a Celery result backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeleryResultBackendStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Backend kind in Celery's terms (redis, database, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// external or managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Ready, Provisioned, Healthy and Injected conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Secret and key holding the result_backend URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_secret_ref: Option<SecretKeyRef>,
    /// Service Binding "provisioned service" reference: the Secret holding the binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingRef>,
    /// Outcome of the latest health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<HealthCheckStatus>,
    /// Number of workloads carrying the injected URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_workloads: Option<i32>,
    /// Salted checksum of the URI Secret's content, as stamped on injected pod templates and Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_checksum: Option<String>,
    /// Opted-in Pods that were admitted without the injection (webhook unavailable); at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed_pods: Vec<String>,
    /// TLS keys the published URI names, as `<secret>/<key>` (a Secret) or `configmap:<name>/<key>` (a ConfigMap): injection mounts exactly these, so the mounts always match the published URI, not a later spec that failed to build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_mounts: Vec<String>,
    /// Environment variables the store's client library reads (CONSUL_HTTP_TOKEN, AWS_CA_BUNDLE) that injection sets from keys of the same name in the URI Secret (valueFrom.secretKeyRef, never a plain value); empty with injection.configModule, whose celeryconfig.py sets them instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_env: Vec<String>,
}

/// Service Binding reference (servicebinding.io provisioned service).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BindingRef {
    /// Name of the Secret holding the binding.
    pub name: String,
}

/// Outcome of one health check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    /// When the check ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Round-trip latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// What the check found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CeleryResultBackendSpec {
    /// Whether injection mounts `celeryconfig.py` (`injection.configModule`, default false).
    pub fn config_module(&self) -> bool {
        self.injection
            .as_ref()
            .and_then(|i| i.config_module)
            .unwrap_or(false)
    }

    /// The one backend set, or the kinds set when that is not exactly one (empty: none).
    pub fn backend(&self) -> Result<Backend<'_>, Vec<BackendKind>> {
        match self.backends().as_slice() {
            [b] => Ok(*b),
            many => Err(many.iter().map(|b| b.kind()).collect()),
        }
    }

    /// The kinds that are set; a valid spec has exactly one.
    pub fn kinds(&self) -> Vec<BackendKind> {
        self.backends().iter().map(|b| b.kind()).collect()
    }

    /// Whether the chosen backend is provisioned by the operator.
    pub fn is_managed(&self) -> bool {
        self.backends().iter().any(|b| b.is_managed())
    }
}

/// Every CRD this operator serves, as multi-document YAML (what `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    let crds = [CeleryResultBackend::crd(), CeleryResultCleanupPolicy::crd()];
    for crd in &crds {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths of schema properties without a description (they would show blank in `kubectl explain`).
    fn undocumented(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").is_none() {
                    out.push(p.clone());
                }
                undocumented(v, &p, out);
            }
        }
        if let Some(items) = node.get("items") {
            undocumented(items, &format!("{path}[]"), out);
        }
        if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
            undocumented(ap, &format!("{path}{{}}"), out);
        }
    }

    #[test]
    fn every_field_has_a_description() {
        let mut missing = vec![];
        for crd in [
            serde_json::to_value(CeleryResultBackend::crd()).unwrap(),
            serde_json::to_value(CeleryResultCleanupPolicy::crd()).unwrap(),
        ] {
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            undocumented(
                &schema["properties"]["spec"],
                &format!("{kind}.spec"),
                &mut missing,
            );
            undocumented(
                &schema["properties"]["status"],
                &format!("{kind}.status"),
                &mut missing,
            );
        }
        assert!(
            missing.is_empty(),
            "fields without description: {missing:#?}"
        );
    }

    #[test]
    fn kinds_cover_every_spec_backend_field() {
        let crd = serde_json::to_value(CeleryResultBackend::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        for k in BackendKind::ALL {
            assert!(spec.get(k.field()).is_some(), "spec.{} missing", k.field());
        }
        assert_eq!(
            BackendKind::ALL
                .iter()
                .filter(|k| k.provisionable())
                .count(),
            5
        );
        // And the other way round: every spec field is a backend row or a shared setting.
        let shared = [
            "resultExpires",
            "resultSettings",
            "timezone",
            "enableUtc",
            "injection",
            "healthCheck",
        ];
        for field in spec.as_object().unwrap().keys() {
            assert!(
                shared.contains(&field.as_str())
                    || BackendKind::ALL.iter().any(|k| k.field() == field),
                "spec.{field} is neither a row of with_backends! nor a shared setting"
            );
        }
    }
}
