//! One union member per Celery result backend: the connection settings each store takes.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;

/// Declares a backend that can only be connected to (no `managed` mode), with a CEL rule that
/// rejects `managed` with the message of [`super::kinds::managed_refusal`] (the same one the
/// builder gives), and the backend's own reason when it has one (`why = "..."`: `MANAGED_WHY`).
macro_rules! external_only {
    ($(#[$doc:meta])* $name:ident, $ext:ty, field = $field:literal) => {
        external_only!(@ $(#[$doc])* $name, $ext, $field, None, None);
    };
    ($(#[$doc:meta])* $name:ident, $ext:ty, field = $field:literal, why = $why:expr) => {
        external_only!(@ $(#[$doc])* $name, $ext, $field, $why, None);
    };
    ($(#[$doc:meta])* $name:ident, $ext:ty, field = $field:literal, result_expires = $re:expr) => {
        external_only!(@ $(#[$doc])* $name, $ext, $field, None, $re);
    };
    ($(#[$doc:meta])* $name:ident, $ext:ty, field = $field:literal, why = $why:expr, result_expires = $re:expr) => {
        external_only!(@ $(#[$doc])* $name, $ext, $field, $why, $re);
    };
    (@ $(#[$doc:meta])* $name:ident, $ext:ty, $field:literal, $why:expr, $re:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
        #[serde(rename_all = "camelCase")]
        #[x_kube(validation = Rule::new("!has(self.managed)").message(kube::core::Message::Message(super::kinds::managed_refusal($field, $why))).field_path(".managed"))]
        pub struct $name {
            /// Connect to an existing store.
            pub external: $ext,
            /// Not supported for this backend (the operator provisions only the backends whose `managed` field has settings): use external.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "unsupported_managed_schema")]
            pub managed: Option<serde_json::Value>,
        }

        impl $name {
            /// Why managed mode is refused for this backend, when it has a reason of its own.
            pub const MANAGED_WHY: Option<&'static str> = $why;
        }

        impl super::kinds::ResultExpiresRule for $name {
            fn result_expires_rule() -> Option<(String, &'static str)> {
                $re
            }
        }
    };
}

// ---------------------------------------------------------------- redis

/// Redis result backend (`redis://`, `rediss://`, `redis+socket://`, `sentinel://`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("set exactly one of external or managed"))]
pub struct RedisBackend {
    /// Connect to an existing Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<RedisExternal>,
    /// Provision a Redis StatefulSet for the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<RedisManaged>,
}

impl super::kinds::ResultExpiresRule for RedisBackend {}

/// An existing Redis server, Sentinel group or unix socket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.host), has(self.sentinel), has(self.unixSocket)].filter(x, x).size() == 1").message("set exactly one of host, sentinel or unixSocket"))]
#[x_kube(validation = Rule::new("!has(self.unixSocket) || !has(self.tls) || !self.tls.enabled").message("tls cannot be used with unixSocket"))]
#[x_kube(validation = Rule::new("has(self.host) || !has(self.port)").message("port is only valid with host"))]
#[x_kube(validation = Rule::new("!has(self.options) || !self.options.exists(k, k.lowerAscii().startsWith('ssl') || k == 'virtual_host')").message("options: ssl, ssl_* and virtual_host are set by the operator from tls, db or unixSocket; use those fields").field_path(".options"))]
pub struct RedisExternal {
    /// Redis server host: DNS name, IPv4 or IPv6 address (no brackets, no port: see port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: Option<String>,
    /// Redis server port (default 6379).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Absolute path of a unix socket inside the worker container (`redis+socket://`); no '..' segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096), regex(pattern = ABS_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub unix_socket: Option<String>,
    /// Redis Sentinel group; the master is looked up by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinel>,
    /// Logical database number (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub db: Option<u32>,
    /// ACL user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// TLS (`rediss://`); verify maps to Celery's ssl_cert_reqs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Extra redis-py connection options passed in the URI query, e.g. socket_timeout: "5"; not ssl or any ssl_* key (ssl_check_hostname, ssl_ca_path, ...) or virtual_host, which come from tls, db and unixSocket: one could turn off what tls asks for, and Celery refuses them in a redis:// URI.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub options: BTreeMap<String, String>,
    /// Prefix for every result key (result_backend_transport_options.global_keyprefix). Celery appends '_' unless it ends in ':', '_', '-' or '.'; cleanup uses the same rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub key_prefix: Option<String>,
}

/// Redis Sentinel settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinel {
    /// Sentinel endpoints (port defaults to 26379).
    #[schemars(length(min = 1, max = 16))]
    pub hosts: Vec<HostPort>,
    /// Name of the monitored master (result_backend_transport_options.master_name).
    #[schemars(length(min = 1, max = 128))]
    pub master_name: String,
    /// Password of the Sentinels themselves (sentinel_kwargs.password), if they require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_password_secret_ref: Option<SecretKeyRef>,
    /// Reach the Sentinels over TLS too, with tls's verification and files (sentinel_kwargs ssl, ssl_cert_reqs, ...). Default: as tls.enabled, so TLS is never silently downgraded for the Sentinel traffic; false only for Sentinels that do not speak TLS (warned: the Sentinel connections, and a Sentinel password, then travel in clear). true needs tls.enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// A Redis that the operator provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisManaged {
    #[serde(flatten)]
    pub common: ManagedCommon,
}

// ---------------------------------------------------------------- database

/// SQL database engines Celery's `db+` backend supports here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseEngine {
    /// PostgreSQL.
    Postgresql,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite file (one worker node only).
    Sqlite,
}

/// SQLAlchemy DBAPI drivers the operator can name explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseDriver {
    /// psycopg2 (PostgreSQL; default for postgresql).
    Psycopg2,
    /// psycopg 3 (PostgreSQL).
    Psycopg,
    /// pg8000 (PostgreSQL).
    Pg8000,
    /// PyMySQL (MySQL/MariaDB; default for mysql).
    Pymysql,
    /// mysqlclient (MySQL/MariaDB).
    Mysqldb,
    /// MySQL Connector/Python.
    Mysqlconnector,
}

/// SQL result backend (Celery's `db+` SQLAlchemy backend).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("set exactly one of external or managed"))]
pub struct DatabaseBackend {
    /// Connect to an existing database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<DatabaseExternal>,
    /// Provision a PostgreSQL StatefulSet for the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<DatabaseManaged>,
    /// Table names (database_table_names); Celery's defaults when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_names: Option<DatabaseTables>,
    /// Table schemas (database_table_schemas), e.g. a PostgreSQL schema name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_schemas: Option<DatabaseTables>,
}

impl super::kinds::ResultExpiresRule for DatabaseBackend {}

/// A name for each of Celery's two result tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTables {
    /// Task results table (default celery_taskmeta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_$]*$")
    )]
    pub task: Option<String>,
    /// Group results table (default celery_tasksetmeta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_$]*$")
    )]
    pub group: Option<String>,
}

/// An existing PostgreSQL, MySQL/MariaDB or SQLite database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.engine == 'sqlite' ? (has(self.path) && !has(self.host) && !has(self.database) && !has(self.auth)) : (has(self.host) && has(self.database) && !has(self.path))").message("postgresql and mysql need host and database (not path); sqlite needs path only"))]
#[x_kube(validation = Rule::new("!has(self.driver) || (self.engine == 'postgresql' && self.driver in ['psycopg2', 'psycopg', 'pg8000']) || (self.engine == 'mysql' && self.driver in ['pymysql', 'mysqldb', 'mysqlconnector'])").message("driver does not belong to engine: postgresql takes psycopg2, psycopg or pg8000; mysql takes pymysql, mysqldb or mysqlconnector; sqlite takes none"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || (self.engine == 'postgresql' && (!has(self.driver) || self.driver != 'pg8000')) || (self.engine == 'mysql' && (!has(self.driver) || self.driver == 'pymysql'))").message("tls is supported for postgresql with psycopg2 or psycopg (libpq's sslmode) and mysql with pymysql; pg8000 takes an ssl_context a URI cannot carry, sqlite is a file"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || !has(self.options) || !self.options.exists(k, k.lowerAscii().startsWith('ssl'))").message("options sslmode, sslrootcert, sslcert, sslkey and ssl_* are set by tls: remove every ssl option from options"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || self.engine != 'mysql' || (has(self.tls.verify) && self.tls.verify == 'None') || has(self.tls.caFile) || has(self.tls.caSecretRef) || has(self.tls.caConfigMapRef)").message("PyMySQL verifies nothing without a CA: set tls.caSecretRef, tls.caConfigMapRef or tls.caFile, or tls.verify: None"))]
pub struct DatabaseExternal {
    /// Database engine.
    pub engine: DatabaseEngine,
    /// SQLAlchemy driver; psycopg2 for postgresql and pymysql for mysql when omitted (always written into the URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DatabaseDriver>,
    /// Server host (postgresql, mysql).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: Option<String>,
    /// Server port (default 5432 for postgresql, 3306 for mysql).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Database name (postgresql, mysql).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub database: Option<String>,
    /// Absolute path of the SQLite file inside the worker container (sqlite); no '..' segments. Percent-encoded in the URI (SQLAlchemy decodes it), so %, ?, # and spaces work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096), regex(pattern = ABS_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub path: Option<String>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// DBAPI options passed in the URI query, e.g. sslmode: require (without tls; with tls the operator sets sslmode, sslrootcert, sslcert and sslkey).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub options: BTreeMap<String, String>,
    /// TLS. postgresql (psycopg2, psycopg; libpq's parameters): verify Required is sslmode=verify-full, Optional verify-ca, None require; the CA becomes sslrootcert, a client certificate sslcert/sslkey. mysql (pymysql; SQLAlchemy's ssl_* keys): Required verifies chain and host name (ssl_ca, ssl_check_hostname=true), Optional the chain only, None neither; a CA is required unless verify is None. Never plain text once enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// A PostgreSQL that the operator provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseManaged {
    #[serde(flatten)]
    pub common: ManagedCommon,
    /// Name of the database created for the results (default celery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub database: Option<String>,
}

// ---------------------------------------------------------------- mongodb

/// MongoDB result backend (`mongodb://`, `mongodb+srv://`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("set exactly one of external or managed"))]
pub struct MongoBackend {
    /// Connect to an existing MongoDB (or MongoDB-wire-compatible server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<MongoExternal>,
    /// Provision a MongoDB StatefulSet for the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<MongoManaged>,
    /// Collection for task results (default celery_taskmeta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120))]
    pub taskmeta_collection: Option<String>,
    /// Collection for group results (default celery_groupmeta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120))]
    pub groupmeta_collection: Option<String>,
}

impl super::kinds::ResultExpiresRule for MongoBackend {}

/// An existing MongoDB deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.srv || (size(self.hosts) == 1 && !has(self.hosts[0].port))").message("srv needs exactly one host and no port (mongodb+srv looks the servers up in DNS)"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || !has(self.tls.clientCertificateSecretRef)").message("MongoDB takes one PEM file with certificate and key (tlsCertificateKeyFile), not a kubernetes.io/tls pair: set certFile").field_path(".tls.clientCertificateSecretRef"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || !has(self.tls.keyFile)").message("MongoDB takes one PEM file with certificate and key: set certFile only").field_path(".tls.keyFile"))]
pub struct MongoExternal {
    /// Servers of the deployment (port defaults to 27017). IPv6 addresses also go into mongodb_backend_settings.mongo_host in brackets, because Celery rebuilds host:port without them: workers then need celeryconfig.py (injection.configModule), the URI alone fails.
    #[schemars(length(min = 1, max = 32))]
    pub hosts: Vec<HostPort>,
    /// Use a `mongodb+srv://` seed list resolved from DNS.
    #[serde(default)]
    pub srv: bool,
    /// Database holding the result collections (default celery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r#"^[^/\\. "$]+$"#))]
    pub database: Option<String>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// Database to authenticate against (authSource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub auth_source: Option<String>,
    /// Replica set name (replicaSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub replica_set: Option<String>,
    /// TLS; verify None maps to tlsInsecure=true, caFile to tlsCAFile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Extra connection-string options, e.g. w: majority.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub options: BTreeMap<String, String>,
}

/// A MongoDB that the operator provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MongoManaged {
    #[serde(flatten)]
    pub common: ManagedCommon,
}

// ---------------------------------------------------------------- elasticsearch

/// Transport scheme of an HTTP API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpScheme {
    /// Plain HTTP (default).
    #[default]
    Http,
    /// HTTPS.
    Https,
}

/// Elasticsearch result backend (`elasticsearch+http(s)://`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("set exactly one of external or managed"))]
pub struct ElasticsearchBackend {
    /// Connect to an existing Elasticsearch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ElasticsearchExternal>,
    /// Provision an Elasticsearch StatefulSet for the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ElasticsearchManaged>,
    /// Index holding the results (default celery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[a-z0-9][a-z0-9_.+-]*$")
    )]
    pub index: Option<String>,
}

impl super::kinds::ResultExpiresRule for ElasticsearchBackend {}

/// An existing Elasticsearch cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchExternal {
    /// Host of one node or load balancer: DNS name or IPv4 address (Celery's elasticsearch backend drops the brackets of an IPv6 address, so IPv6 is refused).
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// HTTP port (default 9200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// http (default) or https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<HttpScheme>,
    /// Basic-auth user name and password: both or neither (Celery sends auth only with both), ASCII only (the client encodes them as ASCII), no ':' in the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// Request timeout in seconds (elasticsearch_timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Retries per request (elasticsearch_max_retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: Option<u32>,
}

/// An Elasticsearch that the operator provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchManaged {
    #[serde(flatten)]
    pub common: ManagedCommon,
}

// ---------------------------------------------------------------- s3

/// S3 result backend (`s3://`; everything is configured by s3_* settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.external) != has(self.managed)").message("set exactly one of external or managed"))]
pub struct S3Backend {
    /// Connect to an existing bucket on AWS S3 or an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<S3External>,
    /// Provision an S3-compatible object store (StatefulSet) and its bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<S3Managed>,
    /// Key prefix for result objects (s3_base_path); end it with `/`, Celery adds no separator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub base_path: Option<String>,
}

impl super::kinds::ResultExpiresRule for S3Backend {}

/// An existing S3 bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.accessKeyIdSecretRef) == has(self.secretAccessKeySecretRef)").message("set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither (then the AWS default credential chain is used)"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || (has(self.endpointUrl) && self.endpointUrl.lowerAscii().startsWith('https://'))").message("tls needs an https endpointUrl (AWS's own endpoints are https with publicly trusted certificates already)").field_path(".tls"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || ((has(self.tls.caSecretRef) || has(self.tls.caConfigMapRef) || has(self.tls.caFile)) && !has(self.tls.clientCertificateSecretRef) && !has(self.tls.certFile) && !has(self.tls.keyFile) && (!has(self.tls.verify) || self.tls.verify == 'Required'))").message("s3 tls takes a CA only (caSecretRef, caConfigMapRef or caFile; botocore reads it from AWS_CA_BUNDLE) and always verifies: no client certificate, verify Required").field_path(".tls"))]
pub struct S3External {
    /// Bucket name (s3_bucket).
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Region (s3_region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. http://minio.storage:9000 (s3_endpoint_url); no credentials in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(NO_URL_CREDENTIALS_RULE).message(NO_URL_CREDENTIALS_MESSAGE))]
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message(HTTP_URL_MESSAGE))]
    pub endpoint_url: Option<String>,
    /// Secret key holding the access key id (s3_access_key_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the secret access key (s3_secret_access_key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeyRef>,
    /// A private CA for an https endpointUrl: botocore reads it from the AWS_CA_BUNDLE environment variable, which the config module sets (os.environ.setdefault; without injection.configModule, injection sets it from the URI Secret), so the CA (caSecretRef or caConfigMapRef, mounted, or caFile) is the only one workers trust for this endpoint; the operator's client adds it to its trust store. Only the CA: verify Required, no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// An S3-compatible store that the operator provisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Managed {
    #[serde(flatten)]
    pub common: ManagedCommon,
    /// Bucket created on first start (default celery-results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: Option<String>,
}

// ---------------------------------------------------------------- gcs

/// An existing Google Cloud Storage bucket (`gs://`; credentials come from Application Default Credentials).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsExternal {
    /// Bucket name (gcs_bucket).
    #[schemars(
        length(min = 3, max = 222),
        regex(pattern = r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Google Cloud project (gcs_project, required by Celery).
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-z][-a-z0-9:.]*[a-z0-9]$")
    )]
    pub project: String,
    /// Object prefix (gcs_base_path); slashes at either end are stripped by Celery. Any characters
    /// but control characters: the operator percent-encodes the path, which Celery's url_to_parts
    /// decodes once (spaces, %, ?, #, &, = and + arrive as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\x00-\x1F\x7F]+$"))]
    pub base_path: Option<String>,
    /// Seconds until objects may be deleted by a bucket lifecycle rule on customTime (gcs_ttl); 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds: Option<u64>,
    /// Size of the upload thread pool (gcs_threadpool_maxsize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub threadpool_maxsize: Option<u32>,
    /// Project of the Firestore database used for chord counters (firestore_project); gcs_project when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-z][-a-z0-9:.]*[a-z0-9]$")
    )]
    pub firestore_project: Option<String>,
}

external_only!(
    /// Google Cloud Storage result backend (`gs://`).
    GcsBackend, GcsExternal,
    field = "gcs"
);

// ---------------------------------------------------------------- azure block blob

/// Azure credential classes Celery can use instead of a connection string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AzureCredential {
    /// azure.identity.DefaultAzureCredential (workload identity, environment, managed identity, ...).
    DefaultAzureCredential,
    /// azure.identity.ManagedIdentityCredential.
    ManagedIdentityCredential,
}

/// An existing Azure Storage account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.connectionStringSecretRef) != (has(self.accountUrl) && has(self.credential))").message("set either connectionStringSecretRef, or accountUrl together with credential"))]
#[x_kube(validation = Rule::new("has(self.accountUrl) == has(self.credential)").message("accountUrl and credential go together"))]
pub struct AzureBlockBlobExternal {
    /// Secret key holding the storage account connection string (used verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string_secret_ref: Option<SecretKeyRef>,
    /// Blob service URL, e.g. https://account.blob.core.windows.net, used with credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s@;]+$"))]
    pub account_url: Option<String>,
    /// Azure identity class used with accountUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<AzureCredential>,
    /// Container (azureblockblob_container_name, default celery; created on first use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9](-?[a-z0-9])*$"))]
    pub container: Option<String>,
    /// Blob name prefix (azureblockblob_base_path); end it with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub base_path: Option<String>,
    /// Connection timeout in seconds (azureblockblob_connection_timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub connection_timeout_seconds: Option<u32>,
    /// Read timeout in seconds (azureblockblob_read_timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub read_timeout_seconds: Option<u32>,
}

external_only!(
    /// Azure Blob Storage result backend (`azureblockblob://`).
    AzureBlockBlobBackend, AzureBlockBlobExternal,
    field = "azureBlockBlob"
);

// ---------------------------------------------------------------- rpc

/// The rpc backend: results travel back over the broker (broker_url), so there is nothing to connect to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RpcExternal {
    /// Persistent result messages (result_persistent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

external_only!(
    /// RPC result backend (`rpc://`, results as AMQP messages on the broker).
    RpcBackend, RpcExternal,
    field = "rpc", why = Some("results travel over the broker; use external")
);

// ---------------------------------------------------------------- cache

/// Existing memcached servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheExternal {
    /// memcached servers (port defaults to 11211).
    #[schemars(length(min = 1, max = 64))]
    pub servers: Vec<HostPort>,
}

external_only!(
    /// Memcached result backend (`cache+memcached://`).
    CacheBackend, CacheExternal,
    field = "cache",
    result_expires = Some((
        format!("{} <= {MEMCACHED_TTL_MAX_SECONDS}", cel_seconds("self.resultExpires")),
        MEMCACHED_TTL_MESSAGE
    ))
);

/// The longest TTL memcached reads as relative (30 days, in seconds); longer ones are absolute
/// times, which expire at once: the CEL rule and the builder refuse them.
pub const MEMCACHED_TTL_MAX_SECONDS: u64 = 2_592_000;
/// Why a `resultExpires` above [`MEMCACHED_TTL_MAX_SECONDS`] is refused.
pub const MEMCACHED_TTL_MESSAGE: &str = "memcached treats TTLs above 30 days as absolute times, which expire at once: set resultExpires to at most 720h";

// ---------------------------------------------------------------- cassandra

/// Cassandra consistency levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CassandraConsistency {
    /// ANY
    Any,
    /// ONE
    One,
    /// TWO
    Two,
    /// THREE
    Three,
    /// QUORUM
    Quorum,
    /// ALL
    All,
    /// LOCAL_QUORUM (Celery's default)
    LocalQuorum,
    /// EACH_QUORUM
    EachQuorum,
    /// LOCAL_ONE
    LocalOne,
}

/// An existing Cassandra cluster (Celery configures it by settings only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || has(self.tls.caFile) || has(self.tls.caSecretRef) || has(self.tls.caConfigMapRef)").message("cassandra-driver loads no default trust store for ssl_options: set tls.caSecretRef, tls.caConfigMapRef or tls.caFile").field_path(".tls"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || !has(self.tls.verify) || self.tls.verify != 'None'").message("tls.verify None is not available for cassandra: cassandra-driver verifies every certificate chain it is given through ssl_options").field_path(".tls"))]
pub struct CassandraExternal {
    /// Contact points (cassandra_servers).
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 253), regex(pattern = HOST_PATTERN)))]
    pub servers: Vec<String>,
    /// Native transport port (cassandra_port, default 9042).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Keyspace (cassandra_keyspace, required).
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub keyspace: String,
    /// Table (cassandra_table, required; Celery creates it).
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub table: String,
    /// Row TTL in seconds (cassandra_entry_ttl); without it rows never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub entry_ttl_seconds: Option<u64>,
    /// Read consistency (cassandra_read_consistency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_consistency: Option<CassandraConsistency>,
    /// Write consistency (cassandra_write_consistency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_consistency: Option<CassandraConsistency>,
    /// User name and password (PlainTextAuthProvider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// TLS to every node (client encryption): cassandra-driver's ssl_options inside the cassandra_options setting, so workers need the config module (injection.configModule). A CA is required (caSecretRef, caConfigMapRef or caFile). verify Required (default) also checks each node's certificate against the address the driver connects to (check_hostname; the operator checks the node's IP address), Optional the chain only; None is refused (the driver always verifies the chain). A client certificate, when the cluster requires one, from clientCertificateSecretRef or certFile/keyFile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

external_only!(
    /// Apache Cassandra result backend (`cassandra://` plus cassandra_* settings).
    CassandraBackend, CassandraExternal,
    field = "cassandra"
);

// ---------------------------------------------------------------- dynamodb

/// An existing DynamoDB table (or DynamoDB Local).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.accessKeyIdSecretRef) == has(self.secretAccessKeySecretRef)").message("set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither (then the AWS default credential chain is used)"))]
#[x_kube(validation = Rule::new("!(has(self.region) && has(self.localEndpoint))").message("set either region or localEndpoint, not both"))]
pub struct DynamoDbExternal {
    /// AWS region, e.g. eu-west-1 (us-east-1 when neither region nor localEndpoint is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// DynamoDB Local reachable at http://host:port. Celery treats `localhost` or an IPv4 address in the URI as a local endpoint; any other host (a DNS name, an IPv6 address in brackets) goes to dynamodb_endpoint_url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<HostPort>,
    /// Endpoint URL override (dynamodb_endpoint_url), e.g. for LocalStack; no credentials in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(NO_URL_CREDENTIALS_RULE).message(NO_URL_CREDENTIALS_MESSAGE))]
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message(HTTP_URL_MESSAGE))]
    pub endpoint_url: Option<String>,
    /// Table name (default celery; Celery creates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 255), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub table: Option<String>,
    /// Provisioned read capacity units when Celery creates the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 40000))]
    pub read_capacity: Option<u32>,
    /// Provisioned write capacity units when Celery creates the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 40000))]
    pub write_capacity: Option<u32>,
    /// Enable DynamoDB TTL on attribute ttl with this many seconds (ttl_seconds); without it items never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<u64>,
    /// Secret key holding the access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeyRef>,
}

external_only!(
    /// Amazon DynamoDB result backend (`dynamodb://`).
    DynamoDbBackend, DynamoDbExternal,
    field = "dynamodb"
);

// ---------------------------------------------------------------- couchdb

/// An existing CouchDB server (Celery always speaks plain http to it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchDbExternal {
    /// Server host. DNS name or IPv4 address: Celery's code for this backend writes '{host}:{port}' without brackets, so IPv6 is refused.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// Server port (default 5984).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Database (default default; created when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 238), regex(pattern = r"^[a-z][a-z0-9_$()+-]*$"))]
    pub database: Option<String>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
}

external_only!(
    /// Apache CouchDB result backend (`couchdb://`).
    CouchDbBackend, CouchDbExternal,
    field = "couchdb"
);

// ---------------------------------------------------------------- couchbase

/// An existing Couchbase cluster (Celery connects with couchbase://, no TLS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouchbaseExternal {
    /// Cluster host. DNS name or IPv4 address: Celery's code for this backend writes '{host}:{port}' without brackets, so IPv6 is refused.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// Port (Celery's default 8091).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Bucket (default default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[A-Za-z0-9_.%-]+$"))]
    pub bucket: Option<String>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
}

external_only!(
    /// Couchbase result backend (`couchbase://`).
    CouchbaseBackend, CouchbaseExternal,
    field = "couchbase"
);

// ---------------------------------------------------------------- arangodb

/// Why ArangoDB's `tls` takes no `Optional` and no client certificate: Celery hands pyArango
/// only `verify` (celery/backends/arangodb.py), which requests reads as a CA bundle path, `True`
/// or `False`: the chain and host name, or nothing.
pub const ARANGODB_TLS_LIMITS: &str = "arangodb tls: Celery hands pyArango only `verify` (a CA bundle, or true/false, as requests reads it): verify Required or None, and no client certificate";

/// An existing ArangoDB server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || !has(self.scheme) || self.scheme == 'https'").message("tls needs https: leave scheme out or set it to https").field_path(".tls"))]
#[x_kube(validation = Rule::new("!has(self.tls) || !self.tls.enabled || ((!has(self.tls.verify) || self.tls.verify != 'Optional') && !has(self.tls.clientCertificateSecretRef) && !has(self.tls.certFile) && !has(self.tls.keyFile))").message(ARANGODB_TLS_LIMITS).field_path(".tls"))]
pub struct ArangoDbExternal {
    /// Server host. DNS name or IPv4 address: Celery's code for this backend writes '{host}:{port}' without brackets, so IPv6 is refused.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// Server port (default 8529).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// http (default) or https (arangodb_backend_settings.http_protocol). https verifies the server against requests' default trust store unless tls says otherwise (Celery's own default, verify False, is never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<HttpScheme>,
    /// Database (default celery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub database: Option<String>,
    /// Collection (default celery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub collection: Option<String>,
    /// User name and password, ASCII only and no ':' in the user name (pyArango sends them as HTTP Basic auth through requests, which encodes Latin-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BasicAuth>,
    /// https with a private CA: arangodb_backend_settings gets http_protocol https and verify, the CA bundle path (caSecretRef or caConfigMapRef, mounted, or caFile) for verify Required, true without a CA (requests' default trust store), false for None. Settings, so workers need the config module (injection.configModule). No Optional and no client certificate: Celery hands pyArango nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

external_only!(
    /// ArangoDB result backend (`arangodb://`).
    ArangoDbBackend, ArangoDbExternal,
    field = "arangodb"
);

// ---------------------------------------------------------------- consul

/// An existing Consul agent (Celery always speaks http; the ACL token is read from CONSUL_HTTP_TOKEN).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsulExternal {
    /// Agent host. DNS name or IPv4 address: Celery's code for this backend writes '{host}:{port}' without brackets, so IPv6 is refused.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// HTTP port (default 8500; always written into the URI because Celery needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// KV key prefix, e.g. celery/results: segments separated by single slashes, any characters but
    /// control characters (percent-encoded in the URI; Celery decodes it once and python-consul2
    /// quotes the key again for the HTTP API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[^/\x00-\x1F\x7F]+(/[^/\x00-\x1F\x7F]+)*$")
    )]
    pub key_prefix: Option<String>,
    /// Reuse one client for all requests (one_client=1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_client: Option<bool>,
    /// Secret key holding an ACL token, which python-consul reads from the CONSUL_HTTP_TOKEN environment variable: the URI Secret carries it under that key; celeryconfig.py sets it (os.environ.setdefault, a worker's own value wins), and without injection.configModule injection sets it from that key (valueFrom.secretKeyRef; a container's own env entry wins unless injection.overrideExisting). Visible ASCII without spaces or line breaks (it travels as an HTTP header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

external_only!(
    /// HashiCorp Consul KV result backend (`consul://`).
    ConsulBackend, ConsulExternal,
    field = "consul",
    result_expires = Some((
        format!(
            "!self.resultExpires.matches('[1-9]') || ({d} >= {} && {d} <= {})",
            CONSUL_TTL_SECONDS.0,
            CONSUL_TTL_SECONDS.1,
            d = cel_seconds("self.resultExpires")
        ),
        CONSUL_TTL_MESSAGE
    ))
);

/// The session TTLs python-consul2 accepts, in seconds (it asserts 10 <= ttl <= 86400): the CEL
/// rule and the builder check `resultExpires` against them (0s, never, is allowed).
pub const CONSUL_TTL_SECONDS: (u64, u64) = (10, 86400);
/// Why a `resultExpires` outside [`CONSUL_TTL_SECONDS`] is refused.
pub const CONSUL_TTL_MESSAGE: &str = "consul session TTLs must lie between 10s and 24h (python-consul2 rejects anything else): set resultExpires in that range, or 0s for never";

// ---------------------------------------------------------------- cosmosdbsql

/// Cosmos DB consistency levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CosmosConsistency {
    /// Strong
    Strong,
    /// BoundedStaleness
    BoundedStaleness,
    /// Session (Celery's default)
    Session,
    /// Eventual
    Eventual,
}

/// An existing Azure Cosmos DB account (SQL API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CosmosDbSqlExternal {
    /// Account host, e.g. myaccount.documents.azure.com. DNS name or IPv4 address: Celery's code for this backend writes '{host}:{port}' without brackets, so IPv6 is refused.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// Port (default 443, which makes Celery use https; any other port means http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Secret key holding the account master key: base64, as Azure issues it (pydocumentdb base64-decodes it to sign requests; anything else is refused).
    pub account_key_secret_ref: SecretKeyRef,
    /// Database (cosmosdbsql_database_name, default celerydb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub database: Option<String>,
    /// Collection (cosmosdbsql_collection_name, default celerycol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub collection: Option<String>,
    /// Consistency level (cosmosdbsql_consistency_level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_level: Option<CosmosConsistency>,
}

external_only!(
    /// Azure Cosmos DB (SQL API) result backend (`cosmosdbsql://`).
    CosmosDbSqlBackend, CosmosDbSqlExternal,
    field = "cosmosDbSql"
);

// ---------------------------------------------------------------- ironcache

/// IronCache settings as documented by Celery (the backend cannot be loaded on Celery 5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IronCacheExternal {
    /// Iron.io project id.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9]+$"))]
    pub project_id: String,
    /// Secret key holding the Iron.io token.
    pub token_secret_ref: SecretKeyRef,
    /// Cache name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub cache: Option<String>,
}

external_only!(
    /// IronCache result backend. Accepted for completeness but reported Unsupported: Celery 5 cannot load it.
    IronCacheBackend, IronCacheExternal,
    field = "ironCache", why = Some("Celery 5 cannot load this backend at all")
);

// ---------------------------------------------------------------- filesystem

/// A directory shared by all workers (for example an NFS or other ReadWriteMany volume).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemExternal {
    /// Absolute path of the results directory inside the worker container (used verbatim by Celery); no '..' segments, ? or #.
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/[^?#]*$"))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub path: String,
    /// PersistentVolumeClaim that holds the directory (ReadWriteMany for several nodes). Recorded only: the operator does not mount it; give the workers a volume for this claim mounted at path (`celery-backend-operator uri` prints this as a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub claim_name: Option<String>,
}

external_only!(
    /// Filesystem result backend (`file://`).
    FilesystemBackend, FilesystemExternal,
    field = "filesystem", why = Some("use external with a shared volume claim")
);
