//! Pure builder: backend spec + resolved credentials -> Celery `result_backend` URI and the settings
//! that cannot live in it. Every encoding rule here follows the parser Celery really uses
//! (kombu's url_to_parts, SQLAlchemy, pymongo, pycouchdb); tests/oracle checks it against Celery.

pub mod check;
pub mod encode;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::*;
use check::Ipv6Rule;
use encode::{component, host as fmt_host, query, userinfo};

/// Secret contents the builder may use: Secret name -> key -> value.
pub type SecretValues = BTreeMap<String, BTreeMap<String, String>>;

/// A Secret's `data` as text: key -> UTF-8 value; keys whose value is not UTF-8 are left out
/// (the builder then names the field as missing, never printing the bytes).
pub fn secret_text(s: &k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|t| (k.clone(), t)))
        .collect()
}

/// Everything a Celery worker needs to reach the result backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendConfig {
    /// Celery's `result_backend`.
    pub uri: String,
    /// Other Celery settings (lowercase names), e.g. `s3_bucket`, `result_expires`.
    pub settings: BTreeMap<String, Value>,
    /// Environment variables the client library reads itself (e.g. CONSUL_HTTP_TOKEN).
    pub env: BTreeMap<String, String>,
    /// Service Binding keys (`type`, `provider`, `uri`, `host`, `port`, `username`, `password`, ...).
    pub binding: BTreeMap<String, String>,
    /// Facts the user should know (e.g. "results never expire").
    pub warnings: Vec<String>,
}

/// Why a URI cannot be built. Messages name the field and never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{field}: Secret {secret:?} not found")]
    SecretNotFound { field: String, secret: String },
    #[error("{field}: Secret {secret:?} has no key {key:?}")]
    SecretKeyMissing {
        field: String,
        secret: String,
        key: String,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
}

impl BuildError {
    /// A short CamelCase reason, for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::Invalid { .. } => "InvalidSpec",
            Self::Unsupported { .. } => "Unsupported",
        }
    }
}

/// The host as written into a URI (IPv6 in brackets) after [`check::host`] under `rule`; the
/// error names `field`.
fn checked_host(field: &str, host: &str, rule: Ipv6Rule) -> Result<String, BuildError> {
    check::host(host, rule).map_err(|m| invalid(field, m))?;
    Ok(fmt_host(host))
}

/// [`check::path_without_traversal`] on an optional path at `field`.
fn checked_path(field: &str, path: Option<&String>) -> Result<(), BuildError> {
    match path {
        Some(p) => check::path_without_traversal(p).map_err(|m| invalid(field, m)),
        None => Ok(()),
    }
}

/// [`check::path_without_traversal`] on the three files of a TLS block at `field`.
fn checked_tls_paths(field: &str, t: &TlsConfig) -> Result<(), BuildError> {
    checked_path(&format!("{field}.caFile"), t.ca_file.as_ref())?;
    checked_path(&format!("{field}.certFile"), t.cert_file.as_ref())?;
    checked_path(&format!("{field}.keyFile"), t.key_file.as_ref())
}

/// [`check::url_without_credentials`] on an optional URL at `field`.
fn checked_url(field: &str, url: Option<&String>) -> Result<(), BuildError> {
    match url {
        Some(u) => check::url_without_credentials(u).map_err(|m| invalid(field, m)),
        None => Ok(()),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Every Secret key the spec refers to, with the field that refers to it.
pub fn secret_refs(spec: &CeleryResultBackendSpec) -> Vec<(String, SecretKeyRef)> {
    let mut out = vec![];
    let mut auth = |field: String, a: &Option<BasicAuth>| {
        if let Some(a) = a {
            if let Some(r) = &a.username_secret_ref {
                out.push((format!("{field}.usernameSecretRef"), r.clone()));
            }
            if let Some(r) = &a.password_secret_ref {
                out.push((format!("{field}.passwordSecretRef"), r.clone()));
            }
        }
    };
    if let Some(e) = spec.redis.as_ref().and_then(|b| b.external.as_ref()) {
        auth("spec.redis.external.auth".into(), &e.auth);
    }
    if let Some(e) = spec.database.as_ref().and_then(|b| b.external.as_ref()) {
        auth("spec.database.external.auth".into(), &e.auth);
    }
    if let Some(e) = spec.mongodb.as_ref().and_then(|b| b.external.as_ref()) {
        auth("spec.mongodb.external.auth".into(), &e.auth);
    }
    if let Some(e) = spec
        .elasticsearch
        .as_ref()
        .and_then(|b| b.external.as_ref())
    {
        auth("spec.elasticsearch.external.auth".into(), &e.auth);
    }
    if let Some(b) = &spec.cassandra {
        auth("spec.cassandra.external.auth".into(), &b.external.auth);
    }
    if let Some(b) = &spec.couchdb {
        auth("spec.couchdb.external.auth".into(), &b.external.auth);
    }
    if let Some(b) = &spec.couchbase {
        auth("spec.couchbase.external.auth".into(), &b.external.auth);
    }
    if let Some(b) = &spec.arangodb {
        auth("spec.arangodb.external.auth".into(), &b.external.auth);
    }
    let mut one = |field: &str, r: &Option<SecretKeyRef>| {
        if let Some(r) = r {
            out.push((field.to_string(), r.clone()));
        }
    };
    if let Some(s) = spec
        .redis
        .as_ref()
        .and_then(|b| b.external.as_ref())
        .and_then(|e| e.sentinel.as_ref())
    {
        one(
            "spec.redis.external.sentinel.sentinelPasswordSecretRef",
            &s.sentinel_password_secret_ref,
        );
    }
    if let Some(e) = spec.s3.as_ref().and_then(|b| b.external.as_ref()) {
        one(
            "spec.s3.external.accessKeyIdSecretRef",
            &e.access_key_id_secret_ref,
        );
        one(
            "spec.s3.external.secretAccessKeySecretRef",
            &e.secret_access_key_secret_ref,
        );
    }
    if let Some(b) = &spec.dynamodb {
        one(
            "spec.dynamodb.external.accessKeyIdSecretRef",
            &b.external.access_key_id_secret_ref,
        );
        one(
            "spec.dynamodb.external.secretAccessKeySecretRef",
            &b.external.secret_access_key_secret_ref,
        );
    }
    if let Some(b) = &spec.azure_block_blob {
        one(
            "spec.azureBlockBlob.external.connectionStringSecretRef",
            &b.external.connection_string_secret_ref,
        );
    }
    if let Some(b) = &spec.consul {
        one(
            "spec.consul.external.tokenSecretRef",
            &b.external.token_secret_ref,
        );
    }
    if let Some(b) = &spec.cosmos_db_sql {
        one(
            "spec.cosmosDbSql.external.accountKeySecretRef",
            &Some(b.external.account_key_secret_ref.clone()),
        );
    }
    if let Some(b) = &spec.iron_cache {
        one(
            "spec.ironCache.external.tokenSecretRef",
            &Some(b.external.token_secret_ref.clone()),
        );
    }
    out
}

/// Looks up referenced Secret values and collects output as the builder goes.
struct Ctx<'a> {
    secrets: &'a SecretValues,
    out: BackendConfig,
}

impl Ctx<'_> {
    fn secret(&self, field: &str, r: &SecretKeyRef) -> Result<String, BuildError> {
        let data = self
            .secrets
            .get(&r.name)
            .ok_or_else(|| BuildError::SecretNotFound {
                field: field.into(),
                secret: r.name.clone(),
            })?;
        data.get(&r.key)
            .cloned()
            .ok_or_else(|| BuildError::SecretKeyMissing {
                field: field.into(),
                secret: r.name.clone(),
                key: r.key.clone(),
            })
    }

    fn opt_secret(
        &self,
        field: &str,
        r: &Option<SecretKeyRef>,
    ) -> Result<Option<String>, BuildError> {
        r.as_ref().map(|r| self.secret(field, r)).transpose()
    }

    /// Resolve user name and password of a BasicAuth at `field`.
    fn auth(
        &self,
        field: &str,
        a: &Option<BasicAuth>,
    ) -> Result<(Option<String>, Option<String>), BuildError> {
        let Some(a) = a else { return Ok((None, None)) };
        let user = match (&a.username, &a.username_secret_ref) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    field,
                    "set either username or usernameSecretRef, not both",
                ))
            }
            (Some(u), None) => Some(u.clone()),
            (None, r) => self.opt_secret(&format!("{field}.usernameSecretRef"), r)?,
        };
        let password = self.opt_secret(
            &format!("{field}.passwordSecretRef"),
            &a.password_secret_ref,
        )?;
        Ok((user, password))
    }

    fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.out.settings.insert(key.into(), v.into());
    }

    fn set_opt<T: Into<Value>>(&mut self, key: &str, v: Option<T>) {
        if let Some(v) = v {
            self.set(key, v);
        }
    }

    fn bind(&mut self, key: &str, v: impl ToString) {
        self.out.binding.insert(key.into(), v.to_string());
    }

    fn bind_credentials(&mut self, user: &Option<String>, pw: &Option<String>) {
        if let Some(u) = user {
            self.bind("username", u);
        }
        if let Some(p) = pw {
            self.bind("password", p);
        }
    }

    fn bind_endpoint(&mut self, host: &str, port: u16, user: &Option<String>, pw: &Option<String>) {
        self.bind("host", host);
        self.bind("port", port);
        self.bind_credentials(user, pw);
    }

    fn warn(&mut self, w: impl Into<String>) {
        self.out.warnings.push(w.into());
    }
}

/// The one backend a spec sets, or a clear error when zero or several are set.
pub fn chosen(spec: &CeleryResultBackendSpec) -> Result<Backend<'_>, BuildError> {
    spec.backend().map_err(|kinds| match kinds.as_slice() {
        [] => invalid("spec", "no backend set: set exactly one of redis, database, mongodb, elasticsearch, s3, gcs, azureBlockBlob, rpc, cache, cassandra, dynamodb, couchdb, couchbase, arangodb, consul, cosmosDbSql, ironCache or filesystem"),
        many => invalid(
            "spec",
            format!(
                "several backends set ({}): set exactly one",
                many.iter().map(|k| k.field()).collect::<Vec<_>>().join(", ")
            ),
        ),
    })
}

/// The rules of the CRD's schema and CEL that the builder sees too, so a spec that reaches the
/// operator some other way (the CLI, an API server without the CRD's validation, an older CRD)
/// is refused the same way, naming the same field: external or managed (exactly one; managed only
/// where the operator provisions), ports 1-65535, Secret reference names (DNS-1123 subdomain) and
/// keys, the injection variable name (a C identifier) and a health-check timeout shorter than
/// its interval. `tests/invalid/` is fed through this by a unit test.
fn spec_rules(spec: &CeleryResultBackendSpec, backend: Backend<'_>) -> Result<(), BuildError> {
    let field = format!("spec.{}", backend.kind().field());
    if backend.managed_set() && !backend.kind().provisionable() {
        let why = match backend.kind() {
            BackendKind::Rpc => "results travel over the broker; use external".to_string(),
            BackendKind::IronCache => "Celery 5 cannot load this backend at all".to_string(),
            BackendKind::Filesystem => "use external with a shared volume claim".to_string(),
            _ => "the operator provisions only redis, database (PostgreSQL), mongodb, elasticsearch and s3; use external".to_string(),
        };
        return Err(invalid(
            &format!("{field}.managed"),
            format!(
                "managed mode is not available for {}: {why}",
                backend.kind().field()
            ),
        ));
    }
    if backend.managed_set() == backend.has_external() {
        return Err(invalid(&field, "set exactly one of external or managed"));
    }
    fn ports(v: &Value, path: &str) -> Result<(), BuildError> {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = format!("{path}.{k}");
                    if k == "port" {
                        if let Some(n) = v.as_i64().filter(|n| !(1..=65535).contains(n)) {
                            return Err(invalid(&p, format!("{n}: must be between 1 and 65535")));
                        }
                    }
                    ports(v, &p)?;
                }
                Ok(())
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| ports(v, &format!("{path}[{i}]"))),
            _ => Ok(()),
        }
    }
    if let Ok(v) = serde_json::to_value(spec) {
        ports(&v, "spec")?;
    }
    let name_re = regex::Regex::new(crate::api::SECRET_NAME_PATTERN)
        .map_err(|e| invalid("spec", e.to_string()))?;
    let key_re = regex::Regex::new(crate::api::SECRET_KEY_PATTERN)
        .map_err(|e| invalid("spec", e.to_string()))?;
    for (f, r) in secret_refs(spec) {
        if r.name.len() > 253 || !name_re.is_match(&r.name) {
            return Err(invalid(
                &format!("{f}.name"),
                format!(
                    "{:?} should match a Secret name (lowercase DNS-1123 subdomain)",
                    r.name
                ),
            ));
        }
        if r.key.len() > 253 || !key_re.is_match(&r.key) {
            return Err(invalid(
                &format!("{f}.key"),
                format!("{:?} should match a Secret key ([-._a-zA-Z0-9]+)", r.key),
            ));
        }
    }
    if let Some(v) = spec.injection.as_ref().and_then(|i| i.env_var.as_deref()) {
        let ok = v.len() <= 128
            && v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(
                "spec.injection.envVar",
                format!(
                    "{v:?} should match ^[A-Za-z_][A-Za-z0-9_]*$ (an environment variable name)"
                ),
            ));
        }
    }
    if let Some(h) = &spec.health_check {
        let secs = |f: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    crate::api::parse_duration(s)
                        .map_err(|e| invalid(&format!("spec.healthCheck.{f}"), e))
                })
                .transpose()
        };
        if let (Some(t), Some(i)) = (secs("timeout", &h.timeout)?, secs("interval", &h.interval)?) {
            if t >= i {
                return Err(invalid(
                    "spec.healthCheck.timeout",
                    "timeout must be shorter than interval",
                ));
            }
        }
    }
    Ok(())
}

/// The one backend set, checked against the spec-wide rules (see `spec_rules`): what both the
/// provisioner and the builder start from.
pub fn validate(spec: &CeleryResultBackendSpec) -> Result<Backend<'_>, BuildError> {
    let backend = chosen(spec)?;
    spec_rules(spec, backend)?;
    Ok(backend)
}

/// The chosen backend kind, or a clear error when zero or several are set.
pub fn kind_of(spec: &CeleryResultBackendSpec) -> Result<BackendKind, BuildError> {
    chosen(spec).map(Backend::kind)
}

/// Build the URI and settings for an external backend. Managed backends are built by the
/// provisioner, which first renders an equivalent external spec for the store it creates.
pub fn build(
    spec: &CeleryResultBackendSpec,
    secrets: &SecretValues,
) -> Result<BackendConfig, BuildError> {
    let backend = validate(spec)?;
    let kind = backend.kind();
    let mut cx = Ctx {
        secrets,
        out: BackendConfig::default(),
    };
    cx.bind("provider", "celery-backend-operator");
    match backend {
        Backend::Redis(b) => redis(&mut cx, b)?,
        Backend::Database(b) => database(&mut cx, b)?,
        Backend::Mongodb(b) => mongodb(&mut cx, b)?,
        Backend::Elasticsearch(b) => elasticsearch(&mut cx, b)?,
        Backend::S3(b) => s3(&mut cx, b)?,
        Backend::Gcs(b) => gcs(&mut cx, b)?,
        Backend::AzureBlockBlob(b) => azure(&mut cx, b)?,
        Backend::Rpc(b) => rpc(&mut cx, b)?,
        Backend::Cache(b) => cache(&mut cx, b)?,
        Backend::Cassandra(b) => cassandra(&mut cx, b)?,
        Backend::Dynamodb(b) => dynamodb(&mut cx, b)?,
        Backend::Couchdb(b) => couchdb(&mut cx, b)?,
        Backend::Couchbase(b) => couchbase(&mut cx, b)?,
        Backend::Arangodb(b) => arangodb(&mut cx, b)?,
        Backend::Consul(b) => consul(&mut cx, b)?,
        Backend::CosmosDbSql(b) => cosmos(&mut cx, b)?,
        Backend::IronCache(_) => {
            return Err(BuildError::Unsupported {
                field: "spec.ironCache".into(),
                message: "Celery 5 cannot load the ironcache backend (it is not in Celery's backend aliases and the iron_celery package does not import on Celery 5); choose another backend".into(),
            })
        }
        Backend::Filesystem(b) => filesystem(&mut cx, b)?,
    }
    result_expires(&mut cx, spec, kind)?;
    celery_clock(&mut cx, spec)?;
    let uri = cx.out.uri.clone();
    cx.bind("uri", uri);
    Ok(cx.out)
}

fn result_expires(
    cx: &mut Ctx,
    spec: &CeleryResultBackendSpec,
    kind: BackendKind,
) -> Result<(), BuildError> {
    let Some(raw) = &spec.result_expires else {
        return Ok(());
    };
    let secs = parse_duration(raw).map_err(|m| invalid("spec.resultExpires", m))?;
    if secs == 0.0 {
        cx.set("result_expires", Value::Null);
        if matches!(
            kind,
            BackendKind::Redis | BackendKind::Cache | BackendKind::Consul
        ) {
            cx.warn("resultExpires is 0s: results are stored without TTL and never expire unless a cleanup policy removes them");
        }
        return Ok(());
    }
    if kind == BackendKind::Consul && !(10.0..=86400.0).contains(&secs) {
        return Err(invalid(
            "spec.resultExpires",
            "consul session TTLs must lie between 10s and 24h (python-consul2 rejects anything else)",
        ));
    }
    if kind == BackendKind::Cache && secs > 2_592_000.0 {
        return Err(invalid(
            "spec.resultExpires",
            "memcached treats TTLs above 30 days as absolute times, which expire at once: use at most 720h",
        ));
    }
    if secs.fract() == 0.0 {
        cx.set("result_expires", secs as u64);
    } else {
        cx.set("result_expires", secs);
    }
    Ok(())
}

/// Celery's `timezone` and `enable_utc` (`spec.timezone`, `spec.enableUtc`), which decide how
/// Celery stamps `date_done` and so how cleanup reads it (`stores::plan::CeleryClock`).
fn celery_clock(cx: &mut Ctx, spec: &CeleryResultBackendSpec) -> Result<(), BuildError> {
    if let Some(tz) = &spec.timezone {
        if jiff::tz::TimeZone::get(tz).is_err() {
            return Err(invalid(
                "spec.timezone",
                "not an IANA time zone name (such as Europe/Berlin or UTC)",
            ));
        }
        cx.set("timezone", tz.as_str());
    }
    if let Some(utc) = spec.enable_utc {
        cx.set("enable_utc", utc);
    }
    Ok(())
}

fn tls_reqs(v: Option<TlsVerify>) -> &'static str {
    match v.unwrap_or_default() {
        TlsVerify::Required => "required",
        TlsVerify::Optional => "optional",
        TlsVerify::None => "none",
    }
}

fn redis(cx: &mut Ctx, spec: &RedisBackend) -> Result<(), BuildError> {
    let b = spec.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.redis",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.redis.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let ui = userinfo(user.as_deref(), pw.as_deref(), component);
    let db = b.db.unwrap_or(0);
    let tls = b.tls.as_ref().filter(|t| t.enabled);
    if let Some(t) = tls {
        checked_tls_paths(&format!("{f}.tls"), t)?;
    }
    checked_path(&format!("{f}.unixSocket"), b.unix_socket.as_ref())?;
    if let Some(k) = b
        .options
        .keys()
        .find(|k| check::REDIS_RESERVED_OPTIONS.contains(&k.as_str()))
    {
        return Err(invalid(
            &format!("{f}.options.{k}"),
            "set by the operator from tls, db or unixSocket: use those fields (Celery refuses ssl_* in a redis:// URI)",
        ));
    }
    let mut q: Vec<(&str, String)> = b
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut transport = serde_json::Map::new();
    if let Some(p) = &b.key_prefix {
        transport.insert("global_keyprefix".into(), json!(p));
    }
    cx.bind("type", "redis");
    cx.bind("database", db);
    if let Some(socket) = &b.unix_socket {
        if tls.is_some() {
            return Err(invalid(
                &format!("{f}.tls"),
                "tls cannot be used with unixSocket",
            ));
        }
        q.push(("virtual_host", db.to_string()));
        cx.out.uri = format!("redis+socket://{ui}{}{}", encode::path(socket), query(q));
        cx.bind_credentials(&user, &pw);
    } else if let Some(s) = &b.sentinel {
        if s.hosts.is_empty() {
            return Err(invalid(
                &format!("{f}.sentinel.hosts"),
                "at least one Sentinel is required",
            ));
        }
        let qs = query(q);
        let mut uris = vec![];
        for (i, h) in s.hosts.iter().enumerate() {
            // Celery hands each Sentinel to redis-py as a (host, port) tuple: IPv6 works.
            let host = checked_host(
                &format!("{f}.sentinel.hosts[{i}].host"),
                &h.host,
                Ipv6Rule::Bracketed,
            )?;
            uris.push(format!(
                "sentinel://{ui}{host}:{}/{db}{qs}",
                h.port.unwrap_or(26379)
            ));
        }
        cx.out.uri = uris.join(";");
        transport.insert("master_name".into(), json!(s.master_name));
        if let Some(sp) = cx.opt_secret(
            &format!("{f}.sentinel.sentinelPasswordSecretRef"),
            &s.sentinel_password_secret_ref,
        )? {
            transport.insert("sentinel_kwargs".into(), json!({ "password": sp }));
        }
        if let Some(t) = tls {
            let mut ssl = serde_json::Map::new();
            ssl.insert("ssl_cert_reqs".into(), json!(tls_reqs(t.verify)));
            for (k, v) in [
                ("ssl_ca_certs", &t.ca_file),
                ("ssl_certfile", &t.cert_file),
                ("ssl_keyfile", &t.key_file),
            ] {
                if let Some(v) = v {
                    ssl.insert(k.into(), json!(v));
                }
            }
            cx.set("redis_backend_use_ssl", Value::Object(ssl));
        }
        cx.bind("sentinel_master", &s.master_name);
        cx.bind_credentials(&user, &pw);
    } else {
        let host = b
            .host
            .as_deref()
            .ok_or_else(|| invalid(f, "set exactly one of host, sentinel or unixSocket"))?;
        // redis-py connects to the host kombu unbrackets: IPv6 works.
        let uri_host = checked_host(&format!("{f}.host"), host, Ipv6Rule::Bracketed)?;
        let port = b.port.unwrap_or(6379);
        let scheme = if let Some(t) = tls {
            q.push(("ssl_cert_reqs", tls_reqs(t.verify).to_string()));
            for (k, v) in [
                ("ssl_ca_certs", &t.ca_file),
                ("ssl_certfile", &t.cert_file),
                ("ssl_keyfile", &t.key_file),
            ] {
                if let Some(v) = v {
                    // Decoded twice: by parse_qsl in kombu's url_to_parts, then by unquote in
                    // RedisBackend._params_from_url (celery/backends/redis.py), so encode twice
                    // ('/etc/ca%20x.pem' otherwise arrives as '/etc/ca x.pem').
                    q.push((k, component(v)));
                }
            }
            "rediss"
        } else {
            "redis"
        };
        cx.out.uri = format!("{scheme}://{ui}{uri_host}:{port}/{db}{}", query(q));
        cx.bind_endpoint(host, port, &user, &pw);
        cx.bind("ssl", tls.is_some());
    }
    if !transport.is_empty() {
        cx.set("result_backend_transport_options", Value::Object(transport));
    }
    Ok(())
}

fn database(cx: &mut Ctx, d: &DatabaseBackend) -> Result<(), BuildError> {
    let b = d.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.database",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.database.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let q = query(b.options.iter().map(|(k, v)| (k.as_str(), v.clone())));
    match b.engine {
        DatabaseEngine::Sqlite => {
            let path = b
                .path
                .as_deref()
                .ok_or_else(|| invalid(&format!("{f}.path"), "sqlite needs path"))?;
            if !path.starts_with('/') {
                return Err(invalid(&format!("{f}.path"), "must be an absolute path"));
            }
            checked_path(&format!("{f}.path"), Some(&path.to_string()))?;
            if b.host.is_some() || b.database.is_some() || b.auth.is_some() {
                return Err(invalid(
                    f,
                    "sqlite takes path only (no host, database or auth)",
                ));
            }
            // SQLAlchemy's make_url (and sqlx, for cleanup) percent-decode the database path once:
            // encode it so '%', '?', '#' and spaces arrive as written.
            cx.out.uri = format!("db+sqlite:///{}{q}", encode::path(path));
            cx.bind("type", "sqlite");
            cx.bind("database", path);
            cx.warn("SQLite results live in one file: every worker must share it (one node only)");
        }
        engine => {
            let (name, default_port, default_driver, drivers): (
                &str,
                u16,
                DatabaseDriver,
                &[DatabaseDriver],
            ) = match engine {
                DatabaseEngine::Postgresql => (
                    "postgresql",
                    5432,
                    DatabaseDriver::Psycopg2,
                    &[
                        DatabaseDriver::Psycopg2,
                        DatabaseDriver::Psycopg,
                        DatabaseDriver::Pg8000,
                    ],
                ),
                _ => (
                    "mysql",
                    3306,
                    DatabaseDriver::Pymysql,
                    &[
                        DatabaseDriver::Pymysql,
                        DatabaseDriver::Mysqldb,
                        DatabaseDriver::Mysqlconnector,
                    ],
                ),
            };
            let driver = b.driver.unwrap_or(default_driver);
            if !drivers.contains(&driver) {
                return Err(invalid(
                    &format!("{f}.driver"),
                    format!("{driver:?} is not a {name} driver").to_lowercase(),
                ));
            }
            let host = b
                .host
                .as_deref()
                .ok_or_else(|| invalid(&format!("{f}.host"), format!("{name} needs host")))?;
            let db = b.database.as_deref().ok_or_else(|| {
                invalid(&format!("{f}.database"), format!("{name} needs database"))
            })?;
            // SQLAlchemy keeps the URL (brackets included) and hands the bare address to the DBAPI.
            let uri_host = checked_host(&format!("{f}.host"), host, Ipv6Rule::Bracketed)?;
            let port = b.port.unwrap_or(default_port);
            let driver_name = format!("{driver:?}").to_lowercase();
            cx.out.uri = format!(
                "db+{name}+{driver_name}://{}{uri_host}:{port}/{}{q}",
                userinfo(user.as_deref(), pw.as_deref(), component),
                component(db)
            );
            cx.bind("type", name);
            cx.bind_endpoint(host, port, &user, &pw);
            cx.bind("database", db);
        }
    }
    let tables =
        |t: &Option<DatabaseTables>, task_default: Option<&str>, group_default: Option<&str>| {
            t.as_ref().map(|t| {
                json!({
                    "task": t.task.as_deref().or(task_default),
                    "group": t.group.as_deref().or(group_default),
                })
            })
        };
    let names = tables(
        &d.table_names,
        Some("celery_taskmeta"),
        Some("celery_tasksetmeta"),
    );
    cx.set_opt("database_table_names", names);
    let schemas = tables(&d.table_schemas, None, None);
    cx.set_opt("database_table_schemas", schemas);
    Ok(())
}

fn mongodb(cx: &mut Ctx, m: &MongoBackend) -> Result<(), BuildError> {
    let b = m.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.mongodb",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.mongodb.external";
    if b.hosts.is_empty() {
        return Err(invalid(
            &format!("{f}.hosts"),
            "at least one host is required",
        ));
    }
    if b.srv && (b.hosts.len() != 1 || b.hosts[0].port.is_some()) {
        return Err(invalid(
            &format!("{f}.hosts"),
            "srv needs exactly one host and no port",
        ));
    }
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let mut nodes = vec![];
    let mut any_ipv6 = false;
    for (i, h) in b.hosts.iter().enumerate() {
        let field = format!("{f}.hosts[{i}].host");
        let form = check::host(&h.host, Ipv6Rule::Bracketed).map_err(|m| invalid(&field, m))?;
        if b.srv && form != check::HostForm::Name {
            return Err(invalid(
                &field,
                "srv needs a DNS name (mongodb+srv looks the servers up in DNS), not an IP address",
            ));
        }
        any_ipv6 |= form == check::HostForm::Ipv6;
        nodes.push(match (b.srv, h.port) {
            (true, _) => fmt_host(&h.host),
            (false, p) => format!("{}:{}", fmt_host(&h.host), p.unwrap_or(27017)),
        });
    }
    let hosts = nodes.join(",");
    let mut q: Vec<(&str, String)> = vec![];
    if let Some(a) = &b.auth_source {
        q.push(("authSource", a.clone()));
    }
    if let Some(r) = &b.replica_set {
        q.push(("replicaSet", r.clone()));
    }
    if let Some(t) = b.tls.as_ref() {
        checked_tls_paths(&format!("{f}.tls"), t)?;
        q.push(("tls", t.enabled.to_string()));
        if t.enabled {
            match t.verify.unwrap_or_default() {
                TlsVerify::Required => {}
                TlsVerify::Optional => q.push(("tlsAllowInvalidCertificates", "true".into())),
                TlsVerify::None => q.push(("tlsInsecure", "true".into())),
            }
            if let Some(ca) = &t.ca_file {
                q.push(("tlsCAFile", ca.clone()));
            }
            match (&t.cert_file, &t.key_file) {
                (Some(c), None) => q.push(("tlsCertificateKeyFile", c.clone())),
                (None, None) => {}
                _ => {
                    return Err(invalid(
                        &format!("{f}.tls.keyFile"),
                        "MongoDB takes one PEM file with certificate and key: set certFile only",
                    ))
                }
            }
        }
    }
    for (k, v) in &b.options {
        q.push((k.as_str(), v.clone()));
    }
    let scheme = if b.srv { "mongodb+srv" } else { "mongodb" };
    let path = b.database.as_deref().map(component).unwrap_or_default();
    let qs = query(q);
    let slash = if path.is_empty() && qs.is_empty() {
        ""
    } else {
        "/"
    };
    cx.out.uri = format!(
        "{scheme}://{}{hosts}{slash}{path}{qs}",
        userinfo(user.as_deref(), pw.as_deref(), component)
    );
    let mut settings = serde_json::Map::new();
    if let Some(c) = &m.taskmeta_collection {
        settings.insert("taskmeta_collection".into(), json!(c));
    }
    if let Some(c) = &m.groupmeta_collection {
        settings.insert("groupmeta_collection".into(), json!(c));
    }
    if any_ipv6 {
        // Celery rebuilds its host list as f'{host}:{port}' from pymongo's nodelist, dropping the
        // brackets, and pymongo then refuses the address; mongo_host in the backend settings
        // replaces that list (celery/backends/mongodb.py __init__), so give it the bracketed form.
        settings.insert("mongo_host".into(), json!(nodes));
        cx.warn("mongodb: an IPv6 host works only with mongodb_backend_settings.mongo_host, a setting: workers need celeryconfig.py (injection.configModule: true); the URI alone fails in pymongo");
    }
    if !settings.is_empty() {
        cx.set("mongodb_backend_settings", Value::Object(settings));
    }
    cx.bind("type", "mongodb");
    cx.bind("host", hosts);
    cx.bind("database", b.database.as_deref().unwrap_or("celery"));
    cx.bind_credentials(&user, &pw);
    Ok(())
}

fn elasticsearch(cx: &mut Ctx, e: &ElasticsearchBackend) -> Result<(), BuildError> {
    let b = e.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.elasticsearch",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.elasticsearch.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let uri_host = checked_host(&format!("{f}.host"), &b.host, check::ELASTICSEARCH_IPV6)?;
    es_credentials(f, b.auth.as_ref(), &user, &pw)?;
    let scheme = match b.scheme.unwrap_or_default() {
        HttpScheme::Http => "http",
        HttpScheme::Https => "https",
    };
    let port = b.port.unwrap_or(9200);
    let index = e.index.as_deref().unwrap_or("celery");
    cx.out.uri = format!(
        "elasticsearch+{scheme}://{}{uri_host}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        component(index)
    );
    cx.set_opt("elasticsearch_timeout", b.timeout_seconds);
    cx.set_opt("elasticsearch_max_retries", b.max_retries);
    cx.bind("type", "elasticsearch");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("index", index);
    cx.warn("Celery's elasticsearch backend needs elasticsearch-py 8.x in the worker image (9.x removed the timeout argument Celery passes)");
    Ok(())
}

/// Refuse Basic-auth credentials the client cannot send ([`check::basic_auth_part`]), naming the
/// field they came from.
fn basic_credentials(
    f: &str,
    auth: Option<&BasicAuth>,
    user: &Option<String>,
    pw: &Option<String>,
) -> Result<(), BuildError> {
    let user_field = match auth {
        Some(a) if a.username.is_some() => format!("{f}.auth.username"),
        _ => format!("{f}.auth.usernameSecretRef"),
    };
    if let Some(u) = user {
        check::basic_auth_part(u, true).map_err(|m| invalid(&user_field, m))?;
    }
    if let Some(p) = pw {
        check::basic_auth_part(p, false)
            .map_err(|m| invalid(&format!("{f}.auth.passwordSecretRef"), m))?;
    }
    Ok(())
}

/// [`basic_credentials`], and refuse a user without password: Celery's elasticsearch backend sends
/// Basic auth only with both.
fn es_credentials(
    f: &str,
    auth: Option<&BasicAuth>,
    user: &Option<String>,
    pw: &Option<String>,
) -> Result<(), BuildError> {
    basic_credentials(f, auth, user, pw)?;
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if empty(user) != empty(pw) {
        return Err(invalid(
            &format!("{f}.auth"),
            "set both a user name and a non-empty password: Celery's elasticsearch backend sends Basic auth only when it has both (celery/backends/elasticsearch.py _get_server)",
        ));
    }
    Ok(())
}

fn s3(cx: &mut Ctx, s: &S3Backend) -> Result<(), BuildError> {
    let b = s.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.s3",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.s3.external";
    let key = cx.opt_secret(
        &format!("{f}.accessKeyIdSecretRef"),
        &b.access_key_id_secret_ref,
    )?;
    let secret = cx.opt_secret(
        &format!("{f}.secretAccessKeySecretRef"),
        &b.secret_access_key_secret_ref,
    )?;
    if key.is_some() != secret.is_some() {
        return Err(invalid(
            f,
            "set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither",
        ));
    }
    checked_url(&format!("{f}.endpointUrl"), b.endpoint_url.as_ref())?;
    // Celery ignores everything after s3://; the bucket and the rest are settings.
    cx.out.uri = "s3://".into();
    cx.set("s3_bucket", b.bucket.as_str());
    cx.set_opt("s3_base_path", s.base_path.clone());
    cx.set_opt("s3_endpoint_url", b.endpoint_url.clone());
    cx.set_opt("s3_region", b.region.clone());
    cx.set_opt("s3_access_key_id", key.clone());
    cx.set_opt("s3_secret_access_key", secret.clone());
    cx.bind("type", "s3");
    cx.bind("bucket", &b.bucket);
    if let Some(e) = &b.endpoint_url {
        cx.bind("endpoint", e);
    }
    if let Some(r) = &b.region {
        cx.bind("region", r);
    }
    if let Some(k) = key {
        cx.bind("access_key_id", k);
    }
    if let Some(s) = secret {
        cx.bind("secret_access_key", s);
    }
    if s.base_path.as_deref().is_some_and(|p| !p.ends_with('/')) {
        cx.warn(
            "s3 basePath does not end with '/': Celery joins it to the key without a separator",
        );
    }
    Ok(())
}

fn gcs(cx: &mut Ctx, spec: &GcsBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let mut q: Vec<(&str, String)> = vec![("gcs_project", b.project.clone())];
    if let Some(t) = b.ttl_seconds {
        q.push(("gcs_ttl", t.to_string()));
    }
    if let Some(t) = b.threadpool_maxsize {
        q.push(("gcs_threadpool_maxsize", t.to_string()));
    }
    if let Some(p) = &b.firestore_project {
        q.push(("firestore_project", p.clone()));
    }
    let base = b
        .base_path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| format!("/{}", encode::path(p)))
        .unwrap_or_default();
    cx.out.uri = format!("gs://{}{base}{}", b.bucket, query(q));
    cx.bind("type", "gcs");
    cx.bind("bucket", &b.bucket);
    cx.bind("project", &b.project);
    cx.warn("Celery's gs:// backend needs google-cloud-firestore and a Firestore TTL policy on collection group 'celery' (field expires_at) at start-up");
    Ok(())
}

fn azure(cx: &mut Ctx, spec: &AzureBlockBlobBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let f = "spec.azureBlockBlob.external";
    cx.out.uri = match (
        &b.connection_string_secret_ref,
        &b.account_url,
        b.credential,
    ) {
        (Some(r), None, None) => {
            let cs = cx.secret(&format!("{f}.connectionStringSecretRef"), r)?;
            cx.bind("connection_string", &cs);
            // Celery takes everything after the scheme verbatim.
            format!("azureblockblob://{}", cs.trim())
        }
        (None, Some(url), Some(cred)) => {
            checked_url(&format!("{f}.accountUrl"), Some(url))?;
            cx.bind("account_url", url);
            format!("azureblockblob://{cred:?}@{url}")
        }
        _ => {
            return Err(invalid(
                f,
                "set either connectionStringSecretRef, or accountUrl together with credential",
            ))
        }
    };
    cx.set_opt("azureblockblob_container_name", b.container.clone());
    cx.set_opt("azureblockblob_base_path", b.base_path.clone());
    cx.set_opt(
        "azureblockblob_connection_timeout",
        b.connection_timeout_seconds,
    );
    cx.set_opt("azureblockblob_read_timeout", b.read_timeout_seconds);
    cx.bind("type", "azure-blob");
    cx.bind("container", b.container.as_deref().unwrap_or("celery"));
    Ok(())
}

fn rpc(cx: &mut Ctx, spec: &RpcBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    cx.out.uri = "rpc://".into();
    cx.set_opt("result_persistent", b.persistent);
    cx.bind("type", "rpc");
    cx.warn("rpc results travel over the broker (broker_url): only the client that sent a task can read its result, once");
    Ok(())
}

fn cache(cx: &mut Ctx, spec: &CacheBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if b.servers.is_empty() {
        return Err(invalid(
            "spec.cache.external.servers",
            "at least one server is required",
        ));
    }
    let mut servers = vec![];
    for (i, s) in b.servers.iter().enumerate() {
        // Celery splits the servers at ';' only; pymemcache's normalize_server_spec reads
        // '[fd00::11]:11211' (measured: Client and HashClient connect to ('fd00::11', 11211)).
        let host = checked_host(
            &format!("spec.cache.external.servers[{i}].host"),
            &s.host,
            Ipv6Rule::Bracketed,
        )?;
        servers.push(format!("{host}:{}", s.port.unwrap_or(11211)));
    }
    cx.out.uri = format!("cache+memcached://{}/", servers.join(";"));
    cx.bind("type", "memcached");
    cx.bind("host", servers.join(","));
    Ok(())
}

fn cassandra(cx: &mut Ctx, spec: &CassandraBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if b.servers.is_empty() {
        return Err(invalid(
            "spec.cassandra.external.servers",
            "at least one server is required",
        ));
    }
    for (i, s) in b.servers.iter().enumerate() {
        // cassandra-driver takes each contact point as a bare address: IPv6 works.
        check::host(s, Ipv6Rule::Bracketed)
            .map_err(|m| invalid(&format!("spec.cassandra.external.servers[{i}]"), m))?;
    }
    let (user, pw) = cx.auth("spec.cassandra.external.auth", &b.auth)?;
    // Celery ignores the URL; cassandra is configured by settings only.
    cx.out.uri = "cassandra://".into();
    cx.set("cassandra_servers", json!(b.servers));
    cx.set_opt("cassandra_port", b.port);
    cx.set("cassandra_keyspace", b.keyspace.as_str());
    cx.set("cassandra_table", b.table.as_str());
    cx.set_opt("cassandra_entry_ttl", b.entry_ttl_seconds);
    let cl =
        |c: Option<CassandraConsistency>| c.map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    cx.set_opt("cassandra_read_consistency", cl(b.read_consistency));
    cx.set_opt("cassandra_write_consistency", cl(b.write_consistency));
    if user.is_some() || pw.is_some() {
        cx.set("cassandra_auth_provider", "PlainTextAuthProvider");
        cx.set(
            "cassandra_auth_kwargs",
            json!({"username": user.clone().unwrap_or_default(), "password": pw.clone().unwrap_or_default()}),
        );
    }
    cx.bind("type", "cassandra");
    cx.bind("host", b.servers.join(","));
    cx.bind("port", b.port.unwrap_or(9042));
    cx.bind("keyspace", &b.keyspace);
    cx.bind_credentials(&user, &pw);
    if b.entry_ttl_seconds.is_none() {
        cx.warn("cassandra: without entryTtlSeconds rows never expire (Celery does not apply result_expires here)");
    }
    Ok(())
}

fn dynamodb(cx: &mut Ctx, spec: &DynamoDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let f = "spec.dynamodb.external";
    let key = cx.opt_secret(
        &format!("{f}.accessKeyIdSecretRef"),
        &b.access_key_id_secret_ref,
    )?;
    let secret = cx.opt_secret(
        &format!("{f}.secretAccessKeySecretRef"),
        &b.secret_access_key_secret_ref,
    )?;
    let ui = match (&key, &secret) {
        (Some(k), Some(s)) => format!("{}:{}@", component(k), component(s)),
        (None, None) => "@".to_string(),
        _ => {
            return Err(invalid(
                f,
                "set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither",
            ))
        }
    };
    checked_url(&format!("{f}.endpointUrl"), b.endpoint_url.as_ref())?;
    if b.region.is_some() && b.local_endpoint.is_some() {
        return Err(invalid(f, "set either region or localEndpoint, not both"));
    }
    let mut endpoint_url = b.endpoint_url.clone();
    let authority = match (&b.region, &b.local_endpoint) {
        (Some(r), _) => r.clone(),
        (None, Some(l)) => {
            let port = l.port.unwrap_or(8000);
            // An IPv6 endpoint goes to dynamodb_endpoint_url in brackets (botocore reads it).
            let form = check::host(&l.host, Ipv6Rule::Bracketed)
                .map_err(|m| invalid(&format!("{f}.localEndpoint.host"), m))?;
            let ipv4 = form == check::HostForm::Ipv4;
            if (l.host == "localhost" || ipv4) && endpoint_url.is_none() {
                // Celery turns localhost or an IPv4 address into http://host:port.
                format!("{}:{port}", l.host)
            } else {
                endpoint_url.get_or_insert_with(|| format!("http://{}:{port}", fmt_host(&l.host)));
                "us-east-1".into()
            }
        }
        (None, None) => "us-east-1".into(),
    };
    let table = b.table.as_deref().unwrap_or("celery");
    let mut q: Vec<(&str, String)> = vec![];
    if let Some(r) = b.read_capacity {
        q.push(("read", r.to_string()));
    }
    if let Some(w) = b.write_capacity {
        q.push(("write", w.to_string()));
    }
    if let Some(t) = b.ttl_seconds {
        q.push(("ttl_seconds", t.to_string()));
    } else {
        cx.warn("dynamodb: without ttlSeconds items never expire (Celery does not apply result_expires here)");
    }
    cx.out.uri = format!(
        "dynamodb://{ui}{authority}/{}{}",
        component(table),
        query(q)
    );
    cx.set_opt("dynamodb_endpoint_url", endpoint_url.clone());
    cx.bind("type", "dynamodb");
    cx.bind("table", table);
    if let Some(r) = &b.region {
        cx.bind("region", r);
    }
    if let Some(e) = endpoint_url {
        cx.bind("endpoint", e);
    }
    if let Some(k) = key {
        cx.bind("access_key_id", k);
    }
    if let Some(s) = secret {
        cx.bind("secret_access_key", s);
    }
    Ok(())
}

/// pycouchdb decodes the credentials a second time after Celery re-embeds them raw.
fn double_component(s: &str) -> String {
    component(&component(s))
}

fn couchdb(cx: &mut Ctx, spec: &CouchDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.couchdb.external.auth", &b.auth)?;
    let port = b.port.unwrap_or(5984);
    let db = b.database.as_deref().unwrap_or("default");
    let uri_host = checked_host("spec.couchdb.external.host", &b.host, check::COUCHDB_IPV6)?;
    cx.out.uri = format!(
        "couchdb://{}{}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), double_component),
        uri_host,
        component(db)
    );
    cx.bind("type", "couchdb");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("database", db);
    Ok(())
}

fn couchbase(cx: &mut Ctx, spec: &CouchbaseBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.couchbase.external.auth", &b.auth)?;
    let port = b.port.unwrap_or(8091);
    let bucket = b.bucket.as_deref().unwrap_or("default");
    let uri_host = checked_host(
        "spec.couchbase.external.host",
        &b.host,
        check::COUCHBASE_IPV6,
    )?;
    cx.out.uri = format!(
        "couchbase://{}{}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        uri_host,
        component(bucket)
    );
    cx.bind("type", "couchbase");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("bucket", bucket);
    cx.warn("couchbase: Celery 5.7 passes ttl= to the SDK, which couchbase 4.x rejects; set resultExpires to 0s or results cannot be stored");
    Ok(())
}

fn arangodb(cx: &mut Ctx, spec: &ArangoDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.arangodb.external.auth", &b.auth)?;
    // pyArango authenticates through requests' Basic auth (Latin-1).
    basic_credentials("spec.arangodb.external", b.auth.as_ref(), &user, &pw)?;
    let port = b.port.unwrap_or(8529);
    let db = b.database.as_deref().unwrap_or("celery");
    let coll = b.collection.as_deref().unwrap_or("celery");
    let uri_host = checked_host("spec.arangodb.external.host", &b.host, check::ARANGODB_IPV6)?;
    cx.out.uri = format!(
        "arangodb://{}{}:{port}/{}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        uri_host,
        component(db),
        component(coll)
    );
    if b.scheme == Some(HttpScheme::Https) {
        cx.set(
            "arangodb_backend_settings",
            json!({"http_protocol": "https"}),
        );
    }
    cx.bind("type", "arangodb");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("database", db);
    cx.warn("arangodb: Celery's own cleanup (celery beat's backend_cleanup) deletes every document in the collection, fresh ones too; disable it and use a cleanup policy");
    Ok(())
}

fn consul(cx: &mut Ctx, spec: &ConsulBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let port = b.port.unwrap_or(8500);
    let prefix = b
        .key_prefix
        .as_deref()
        .map(|p| format!("/{}", encode::path(p)))
        .unwrap_or_default();
    let q = if b.one_client == Some(true) {
        query([("one_client", "1".to_string())])
    } else {
        String::new()
    };
    let uri_host = checked_host("spec.consul.external.host", &b.host, check::CONSUL_IPV6)?;
    cx.out.uri = format!("consul://{uri_host}:{port}{prefix}{q}");
    if let Some(t) = cx.opt_secret("spec.consul.external.tokenSecretRef", &b.token_secret_ref)? {
        check::header_token(&t).map_err(|m| invalid("spec.consul.external.tokenSecretRef", m))?;
        cx.out.env.insert("CONSUL_HTTP_TOKEN".into(), t.clone());
        cx.bind("token", t);
    }
    cx.bind("type", "consul");
    cx.bind("host", &b.host);
    cx.bind("port", port);
    Ok(())
}

fn cosmos(cx: &mut Ctx, spec: &CosmosDbSqlBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let key = cx.secret(
        "spec.cosmosDbSql.external.accountKeySecretRef",
        &b.account_key_secret_ref,
    )?;
    check::base64_key(&key)
        .map_err(|m| invalid("spec.cosmosDbSql.external.accountKeySecretRef", m))?;
    let port = b.port.unwrap_or(443);
    let uri_host = checked_host(
        "spec.cosmosDbSql.external.host",
        &b.host,
        check::COSMOSDB_IPV6,
    )?;
    cx.out.uri = format!("cosmosdbsql://:{}@{}:{port}", component(&key), uri_host);
    cx.set_opt("cosmosdbsql_database_name", b.database.clone());
    cx.set_opt("cosmosdbsql_collection_name", b.collection.clone());
    cx.set_opt(
        "cosmosdbsql_consistency_level",
        b.consistency_level.map(|c| format!("{c:?}")),
    );
    cx.bind("type", "cosmosdb");
    cx.bind("host", &b.host);
    cx.bind("port", port);
    cx.bind("password", key);
    Ok(())
}

fn filesystem(cx: &mut Ctx, spec: &FilesystemBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if !b.path.starts_with('/') || b.path.contains(['?', '#']) {
        return Err(invalid(
            "spec.filesystem.external.path",
            "must be an absolute path without ? or #",
        ));
    }
    checked_path("spec.filesystem.external.path", Some(&b.path))?;
    // Celery uses the path verbatim (no percent-decoding).
    cx.out.uri = format!("file://{}", b.path);
    if let Some(claim) = &b.claim_name {
        cx.warn(format!(
            "filesystem: the operator does not mount claim {claim:?}: give the workers a volume for it mounted at {}",
            b.path
        ));
    }
    cx.bind("type", "filesystem");
    cx.bind("path", &b.path);
    Ok(())
}

/// Render `celeryconfig.py`: `result_backend` plus every setting, as Python literals.
pub fn config_module(cfg: &BackendConfig) -> String {
    let mut out = String::from(
        "# Generated by celery-backend-operator. Do not edit: changes are overwritten.\n",
    );
    if !cfg.env.is_empty() {
        out.push_str("import os\n\n");
        for (k, v) in &cfg.env {
            out.push_str(&format!(
                "os.environ.setdefault({}, {})\n",
                encode::python_str(k),
                encode::python_str(v)
            ));
        }
    }
    out.push_str(&format!(
        "result_backend = {}\n",
        encode::python_str(&cfg.uri)
    ));
    for (k, v) in &cfg.settings {
        out.push_str(&format!("{k} = {}\n", encode::python_literal(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> CeleryResultBackendSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn binding_keys_follow_the_service_binding_convention() {
        let mut secrets = SecretValues::new();
        secrets
            .entry("creds".into())
            .or_default()
            .insert("pw".into(), "p@ss".into());
        let cfg = build(
            &spec(
                json!({"redis": {"external": {"host": "r", "port": 6380, "db": 2,
                "auth": {"username": "u", "passwordSecretRef": {"name": "creds", "key": "pw"}}}}}),
            ),
            &secrets,
        )
        .unwrap();
        let b = &cfg.binding;
        assert_eq!(b["type"], "redis");
        assert_eq!(b["provider"], "celery-backend-operator");
        assert_eq!(b["uri"], cfg.uri);
        assert_eq!(
            (
                b["host"].as_str(),
                b["port"].as_str(),
                b["database"].as_str()
            ),
            ("r", "6380", "2")
        );
        assert_eq!(
            (b["username"].as_str(), b["password"].as_str()),
            ("u", "p@ss")
        );

        let cfg = build(
            &spec(json!({"redis": {"external": {"sentinel": {"masterName": "m", "hosts": [{"host": "s"}]},
                "auth": {"passwordSecretRef": {"name": "creds", "key": "pw"}}}}})),
            &secrets,
        )
        .unwrap();
        assert_eq!(cfg.binding["password"], "p@ss");
        assert_eq!(cfg.binding["sentinel_master"], "m");
        assert!(!cfg.binding.contains_key("username"));
    }

    #[test]
    fn celery_timezone_settings_are_rendered_and_checked() {
        let secrets = SecretValues::new();
        let fs = |extra: serde_json::Value| {
            let mut v = json!({"filesystem": {"external": {"path": "/r"}}});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            build(&spec(v), &secrets)
        };
        let cfg = fs(json!({"timezone": "Asia/Shanghai", "enableUtc": false})).unwrap();
        assert_eq!(cfg.settings["timezone"], "Asia/Shanghai");
        assert_eq!(cfg.settings["enable_utc"], false);
        let cfg = fs(json!({})).unwrap();
        assert!(!cfg.settings.contains_key("timezone") && !cfg.settings.contains_key("enable_utc"));
        let e = fs(json!({"timezone": "Mars/Olympus"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.timezone") && e.contains("IANA"), "{e}");
    }

    /// An IPv6 MongoDB host needs the mongo_host setting, and the build says that the URI alone
    /// is not enough.
    #[test]
    fn mongodb_ipv6_needs_the_config_module_and_the_build_says_so() {
        let cfg = build(
            &spec(json!({"mongodb": {"external": {"hosts": [{"host": "fd00::3", "port": 27018}, {"host": "m1"}]}}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert_eq!(cfg.uri, "mongodb://[fd00::3]:27018,m1:27017");
        assert_eq!(
            cfg.settings["mongodb_backend_settings"]["mongo_host"],
            json!(["[fd00::3]:27018", "m1:27017"])
        );
        assert!(cfg.warnings.iter().any(|w| w.contains("configModule")));
        let plain = build(
            &spec(json!({"mongodb": {"external": {"hosts": [{"host": "m0"}]}}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(!plain.settings.contains_key("mongodb_backend_settings"));
    }

    /// claimName is recorded, not mounted (injection adds only the variable): the build says so.
    #[test]
    fn filesystem_claim_is_not_mounted_and_the_build_says_so() {
        let cfg = build(
            &spec(json!({"filesystem": {"external": {"path": "/results", "claimName": "shared"}}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert_eq!(cfg.uri, "file:///results");
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("does not mount") && w.contains("\"shared\"")),
            "{:?}",
            cfg.warnings
        );
        let crd = serde_json::to_string(
            &<crate::api::CeleryResultBackend as kube::CustomResourceExt>::crd(),
        )
        .unwrap();
        assert!(crd.contains("Recorded only: the operator does not mount it"));
    }

    #[test]
    fn build_errors_name_the_field_and_never_the_value() {
        let mut secrets = SecretValues::new();
        secrets
            .entry("creds".into())
            .or_default()
            .insert("other".into(), "hunter2".into());
        let err = build(
            &spec(json!({"mongodb": {"external": {"hosts": [{"host": "m"}],
                "auth": {"passwordSecretRef": {"name": "creds", "key": "pw"}}}}})),
            &secrets,
        )
        .unwrap_err();
        assert_eq!(err.reason(), "SecretKeyMissing");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.mongodb.external.auth.passwordSecretRef") && msg.contains("\"pw\""),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[cfg(test)]
mod invalid_manifests {
    //! Every `tests/invalid/*.yaml` backend the API server refuses is refused by the builder too,
    //! naming the same field: the CEL rules and the builder cannot drift apart.
    use super::*;

    /// A value every referenced Secret key gets: ASCII, base64, a valid token.
    const FILLER: &str = "c2VjcmV0";

    /// `Err(message)` when the operator would refuse the backend (types, plan or builder).
    pub(super) fn refusal(doc: &serde_json::Value) -> Result<(), String> {
        let crb: CeleryResultBackend =
            serde_json::from_value(doc.clone()).map_err(|e| format!("types: {e}"))?;
        let name = crb.metadata.name.clone().unwrap_or_default();
        if name.len() > 63 {
            return Err(format!(
                "metadata.name: {name:?} is longer than 63 characters"
            ));
        }
        let spec = if crb.spec.is_managed() {
            crate::provision::plan(
                &name,
                "ns",
                &crb.spec,
                &crate::provision::StoreImages::default(),
            )
            .map_err(|e| e.to_string())?
            .external_spec
        } else {
            crb.spec.clone()
        };
        let mut secrets = SecretValues::new();
        for (_, r) in secret_refs(&spec) {
            secrets
                .entry(r.name.clone())
                .or_default()
                .insert(r.key.clone(), FILLER.into());
        }
        build(&spec, &secrets)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_invalid_backend_manifest_is_refused_by_the_builder_naming_the_field() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/invalid");
        let mut checked = 0;
        let mut drift = vec![];
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains("kind: CeleryResultBackend") {
                continue;
            }
            let field = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect: "))
                .find(|e| e.starts_with("spec") || e.starts_with("metadata"))
                .map(|e| e.split([' ', ':']).next().unwrap_or_default().to_string());
            let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
            checked += 1;
            match refusal(&doc) {
                Ok(()) => drift.push(format!("{}: accepted", path.display())),
                Err(msg) => {
                    if let Some(f) = field {
                        // The builder may name the field or a part of it more precisely.
                        let parent = f.rsplit_once('.').map(|(p, _)| p).unwrap_or(&f);
                        if !msg.contains(&f) && !msg.contains(parent) && !msg.starts_with("types:")
                        {
                            drift.push(format!("{}: expected {f}, got {msg}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(checked >= 30, "only {checked} backend manifests");
        assert!(
            drift.is_empty(),
            "the builder and the API server disagree:\n{}",
            drift.join("\n")
        );
    }
}
