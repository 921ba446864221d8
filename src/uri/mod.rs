//! Pure builder: backend spec + resolved credentials -> Celery `result_backend` URI and the settings
//! that cannot live in it. Every encoding rule here follows the parser Celery really uses
//! (kombu's url_to_parts, SQLAlchemy, pymongo, pycouchdb); tests/oracle checks it against Celery.

pub mod check;
pub mod encode;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::*;
use check::Ipv6Rule;
use encode::host as fmt_host;

/// Secret contents the builder may use: Secret name -> key -> value.
pub type SecretValues = BTreeMap<String, BTreeMap<String, String>>;

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
    /// The backend this was built for (set by [`build`]); the store layer chooses its client by
    /// it. `None` only for configurations written by hand (tests), which are read by scheme.
    pub kind: Option<BackendKind>,
    /// TLS material the operator's own clients use (from `caSecretRef` and
    /// `clientCertificateSecretRef`); held in memory, never published or printed.
    pub tls: Option<TlsMaterial>,
}

/// TLS material for the operator's own store clients, read from the Secrets a `tls` block
/// references. `Debug` prints which parts are present, never their bytes.
#[derive(Clone, Default, PartialEq)]
pub struct TlsMaterial {
    /// How strictly the server certificate is verified (Celery's `ssl_cert_reqs` and kin).
    pub verify: TlsVerify,
    /// CA bundle (PEM) from `caSecretRef`; `None`: the system's trust store.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM) from `clientCertificateSecretRef`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// `caFile`: a path inside the worker that the operator cannot read (named in hints when
    /// verification fails).
    pub worker_ca_file: Option<String>,
    /// Where `ca_pem` came from, for hints when verification fails: the field and the object,
    /// e.g. `spec.redis.external.tls.caSecretRef (Secret "ca" key "ca.crt")`.
    pub ca_source: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("verify", &self.verify)
            .field("ca", &self.ca_pem.as_ref().map(|_| "<from Secret>"))
            .field("client", &self.client.as_ref().map(|_| "<redacted>"))
            .field("worker_ca_file", &self.worker_ca_file)
            .finish()
    }
}

/// Why a URI cannot be built. Messages name the field and never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{field}: Secret {secret:?} not found")]
    SecretNotFound { field: String, secret: String },
    #[error("{field}: Secret {secret:?} has no key {key:?} with a text value (missing, or not UTF-8: PEM and passwords are text)")]
    SecretKeyMissing {
        field: String,
        secret: String,
        key: String,
    },
    #[error("{field}: ConfigMap {config_map:?} not found")]
    ConfigMapNotFound { field: String, config_map: String },
    #[error("{field}: ConfigMap {config_map:?} has no key {key:?} in its data (PEM is text: binaryData is not read)")]
    ConfigMapKeyMissing {
        field: String,
        config_map: String,
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
            Self::ConfigMapNotFound { .. } => "ConfigMapNotFound",
            Self::ConfigMapKeyMissing { .. } => "ConfigMapKeyMissing",
            Self::Invalid { .. } => "InvalidSpec",
            Self::Unsupported { .. } => "Unsupported",
        }
    }
}

/// The host as written into a URI (IPv6 in brackets) after [`check::host`] under `rule`; the
/// error names `field`.
pub(crate) fn checked_host(field: &str, host: &str, rule: Ipv6Rule) -> Result<String, BuildError> {
    check::host(host, rule).map_err(|m| invalid(field, m))?;
    Ok(fmt_host(host))
}

/// [`check::path_without_traversal`] on an optional path at `field`.
pub(crate) fn checked_path(field: &str, path: Option<&String>) -> Result<(), BuildError> {
    match path {
        Some(p) => check::path_without_traversal(p).map_err(|m| invalid(field, m)),
        None => Ok(()),
    }
}

/// [`check::path_without_traversal`] on the three files of a TLS block at `field`.
pub(crate) fn checked_tls_paths(field: &str, t: &TlsConfig) -> Result<(), BuildError> {
    checked_path(&format!("{field}.caFile"), t.ca_file.as_ref())?;
    checked_path(&format!("{field}.certFile"), t.cert_file.as_ref())?;
    checked_path(&format!("{field}.keyFile"), t.key_file.as_ref())
}

/// [`check::url_without_credentials`] on an optional URL at `field`.
pub(crate) fn checked_url(field: &str, url: Option<&String>) -> Result<(), BuildError> {
    match url {
        Some(u) => check::url_without_credentials(u).map_err(|m| invalid(field, m)),
        None => Ok(()),
    }
}

/// An endpoint URL (S3, DynamoDB): no credentials and the shape the CRD admits.
pub(crate) fn checked_endpoint_url(field: &str, url: Option<&String>) -> Result<(), BuildError> {
    match url {
        Some(u) => check::url_without_credentials(u)
            .and_then(|()| check::http_url(u))
            .map_err(|m| invalid(field, m)),
        None => Ok(()),
    }
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Every Secret key the spec refers to, with the field that refers to it.
pub fn secret_refs(spec: &CeleryResultBackendSpec) -> Vec<(String, SecretKeyRef)> {
    let mut refs = crate::backends::SecretRefs::default();
    for b in spec.backends() {
        b.family().secret_refs(&mut refs);
    }
    refs.0
}

/// Looks up referenced Secret values and collects output as the builder goes.
pub(crate) struct Ctx<'a> {
    pub(crate) secrets: &'a SecretValues,
    pub(crate) out: BackendConfig,
}

impl Ctx<'_> {
    /// The text at `r` (a Secret's key, or a ConfigMap's when `r.name` is `configmap:<name>`);
    /// errors name `field` and the object.
    pub(crate) fn secret(&self, field: &str, r: &SecretKeyRef) -> Result<String, BuildError> {
        let config_map = r.name.strip_prefix(crate::api::CONFIG_MAP_PREFIX);
        let Some(data) = self.secrets.get(&r.name) else {
            return Err(match config_map {
                Some(cm) => BuildError::ConfigMapNotFound {
                    field: field.into(),
                    config_map: cm.into(),
                },
                None => BuildError::SecretNotFound {
                    field: field.into(),
                    secret: r.name.clone(),
                },
            });
        };
        data.get(&r.key).cloned().ok_or_else(|| match config_map {
            Some(cm) => BuildError::ConfigMapKeyMissing {
                field: field.into(),
                config_map: cm.into(),
                key: r.key.clone(),
            },
            None => BuildError::SecretKeyMissing {
                field: field.into(),
                secret: r.name.clone(),
                key: r.key.clone(),
            },
        })
    }

    pub(crate) fn opt_secret(
        &self,
        field: &str,
        r: &Option<SecretKeyRef>,
    ) -> Result<Option<String>, BuildError> {
        r.as_ref().map(|r| self.secret(field, r)).transpose()
    }

    /// Resolve user name and password of a BasicAuth at `field`.
    pub(crate) fn auth(
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

    /// Check an enabled `tls` block at `field` and keep its Secret-held material for the
    /// operator's own clients ([`BackendConfig::tls`]). Errors name the field: a key Kubernetes
    /// cannot mount as a file (`.`, `..`), a missing Secret or key, material that is not PEM.
    pub(crate) fn tls(&mut self, field: &str, t: &TlsConfig) -> Result<(), BuildError> {
        checked_tls_paths(field, t)?;
        let ca_sources = [
            t.ca_file.is_some(),
            t.ca_secret_ref.is_some(),
            t.ca_config_map_ref.is_some(),
        ];
        if ca_sources.iter().filter(|s| **s).count() > 1 {
            let at = if t.ca_config_map_ref.is_some() {
                "caConfigMapRef"
            } else {
                "caSecretRef"
            };
            return Err(invalid(
                &format!("{field}.{at}"),
                crate::api::CA_SOURCES_EXCLUSIVE,
            ));
        }
        if t.client_certificate_secret_ref.is_some()
            && (t.cert_file.is_some() || t.key_file.is_some())
        {
            return Err(invalid(
                &format!("{field}.clientCertificateSecretRef"),
                "set either clientCertificateSecretRef or certFile/keyFile, not both",
            ));
        }
        // Kubernetes cannot project `.` or `..*` as a file name (it keeps `..data` for itself).
        for (at, key) in [
            ("caSecretRef", t.ca_secret_ref.as_ref().map(|r| &r.key)),
            (
                "caConfigMapRef",
                t.ca_config_map_ref.as_ref().map(|r| &r.key),
            ),
        ] {
            if key.is_some_and(|k| k == "." || k.starts_with("..")) {
                return Err(invalid(
                    &format!("{field}.{at}.key"),
                    "a key that starts with '..' cannot be mounted as a file",
                ));
            }
        }
        let (ca_pem, ca_source) = match (&t.ca_secret_ref, &t.ca_config_map_ref) {
            (Some(r), _) => {
                let fld = format!("{field}.caSecretRef");
                let object = format!("Secret {:?}", r.name);
                let v = self.secret(&fld, r)?;
                let pem = pem_certificates(&fld, &object, &r.key, v)?;
                (Some(pem), Some(format!("{fld} ({object} key {:?})", r.key)))
            }
            (None, Some(r)) => {
                let fld = format!("{field}.caConfigMapRef");
                let object = format!("ConfigMap {:?}", r.name);
                let source = SecretKeyRef {
                    name: crate::api::config_map_source(&r.name),
                    key: r.key.clone(),
                };
                let v = self.secret(&fld, &source)?;
                let pem = pem_certificates(&fld, &object, &r.key, v)?;
                (Some(pem), Some(format!("{fld} ({object} key {:?})", r.key)))
            }
            (None, None) => (None, None),
        };
        let client = match &t.client_certificate_secret_ref {
            Some(r) => {
                let fld = format!("{field}.clientCertificateSecretRef");
                let key = |k: &str| SecretKeyRef {
                    name: r.name.clone(),
                    key: k.into(),
                };
                let cert = self.secret(&fld, &key(TLS_CERT_KEY))?;
                let pkey = self.secret(&fld, &key(TLS_KEY_KEY))?;
                let pair = (
                    pem_certificates(&fld, &format!("Secret {:?}", r.name), TLS_CERT_KEY, cert)?,
                    pem_private_key(&fld, &r.name, TLS_KEY_KEY, pkey)?,
                );
                key_fits_certificate(&fld, &r.name, &pair.0, &pair.1)?;
                Some(pair)
            }
            None => None,
        };
        if t.verify == Some(TlsVerify::None)
            && (t.ca_file.is_some() || t.ca_secret_ref.is_some() || t.ca_config_map_ref.is_some())
        {
            self.warn(format!(
                "{field}.verify is None: the server's certificate is not checked, so the CA given is not used (set verify: Required to check it against that CA)"
            ));
        }
        self.out.tls = Some(TlsMaterial {
            verify: t.verify.unwrap_or_default(),
            ca_pem,
            client,
            worker_ca_file: t.ca_file.clone(),
            ca_source,
        });
        Ok(())
    }

    pub(crate) fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.out.settings.insert(key.into(), v.into());
    }

    pub(crate) fn set_opt<T: Into<Value>>(&mut self, key: &str, v: Option<T>) {
        if let Some(v) = v {
            self.set(key, v);
        }
    }

    pub(crate) fn bind(&mut self, key: &str, v: impl ToString) {
        self.out.binding.insert(key.into(), v.to_string());
    }

    pub(crate) fn bind_credentials(&mut self, user: &Option<String>, pw: &Option<String>) {
        if let Some(u) = user {
            self.bind("username", u);
        }
        if let Some(p) = pw {
            self.bind("password", p);
        }
    }

    pub(crate) fn bind_endpoint(
        &mut self,
        host: &str,
        port: u16,
        user: &Option<String>,
        pw: &Option<String>,
    ) {
        self.bind("host", host);
        self.bind("port", port);
        self.bind_credentials(user, pw);
    }

    pub(crate) fn warn(&mut self, w: impl Into<String>) {
        self.out.warnings.push(w.into());
    }
}

/// The certificates (PEM) at `object` (`Secret "name"` or `ConfigMap "name"`) key `key`, parsed
/// up front so broken material is refused naming `field`, not met later as a driver error.
fn pem_certificates(
    field: &str,
    object: &str,
    key: &str,
    v: String,
) -> Result<Vec<u8>, BuildError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let at = format!("{object} key {key:?}");
    if !v.contains("-----BEGIN ") {
        return Err(invalid(field, format!("{at} is not PEM (no -----BEGIN line; a DER file converts with `openssl x509 -inform der -out ca.pem`)")));
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(v.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            invalid(
                field,
                format!("{at}: a PEM block is not valid base64 or not a certificate"),
            )
        })?;
    // webpki parses each certificate when it is added as a trust anchor.
    let parsed = certs
        .iter()
        .all(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok());
    if certs.is_empty() || !parsed {
        return Err(invalid(
            field,
            format!("{at}: no X.509 certificate could be parsed from it"),
        ));
    }
    Ok(v.into_bytes())
}

/// The private key of a `kubernetes.io/tls` Secret, PEM (PKCS#8, PKCS#1 or SEC1).
fn pem_private_key(field: &str, secret: &str, key: &str, v: String) -> Result<Vec<u8>, BuildError> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    PrivateKeyDer::from_pem_slice(v.as_bytes()).map_err(|_| {
        invalid(
            field,
            format!("Secret {secret:?} key {key:?}: no PEM private key could be parsed from it"),
        )
    })?;
    Ok(v.into_bytes())
}

/// Refuse a client certificate whose key is not its own (`tls.crt` and `tls.key` of Secret
/// `secret` at `field`): every TLS client would fail the handshake with it, some only as
/// "KeyMismatch". Compared as rustls does (`CertifiedKey::keys_match`: the certificate's and the
/// key's SubjectPublicKeyInfo); a key type the check cannot judge passes.
fn key_fits_certificate(
    field: &str,
    secret: &str,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(), BuildError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let (Ok(chain), Ok(key)) = (
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>(),
        PrivateKeyDer::from_pem_slice(key_pem),
    ) else {
        return Ok(());
    };
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(invalid(
                field,
                format!("Secret {secret:?}: tls.key is not the key of the certificate in tls.crt"),
            ))
        }
        _ => Ok(()),
    }
}

/// The one backend a spec sets, or a clear error when zero or several are set.
pub fn chosen(spec: &CeleryResultBackendSpec) -> Result<Backend<'_>, BuildError> {
    spec.backend().map_err(|kinds| match kinds.as_slice() {
        [] => invalid(
            "spec",
            format!(
                "no backend set: set exactly one of {}",
                crate::api::kinds::backend_list()
            ),
        ),
        many => invalid(
            "spec",
            format!(
                "several backends set ({}): set exactly one",
                many.iter()
                    .map(|k| k.field())
                    .collect::<Vec<_>>()
                    .join(", ")
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
        return Err(invalid(
            &format!("{field}.managed"),
            crate::api::kinds::managed_refusal(
                backend.kind().field(),
                backend.family().managed_why(),
            ),
        ));
    }
    if backend.managed_set() == backend.has_external() {
        return Err(invalid(&field, "set exactly one of external or managed"));
    }
    if backend
        .family()
        .tls()
        .is_some_and(|t| !t.enabled && t.has_settings())
    {
        return Err(invalid(
            &format!("{field}.external.tls"),
            crate::api::TLS_DISABLED_WITH_SETTINGS,
        ));
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
        // Only a caConfigMapRef names a ConfigMap (`configmap:<name>`); a Secret's name never
        // takes the prefix, so `configmap:x` in a Secret reference cannot read a ConfigMap.
        let (object, name) = match r.name.strip_prefix(crate::api::CONFIG_MAP_PREFIX) {
            Some(cm) if f.ends_with(".caConfigMapRef") => ("ConfigMap", cm),
            _ => ("Secret", r.name.as_str()),
        };
        if name.len() > 253 || !name_re.is_match(name) {
            return Err(invalid(
                &format!("{f}.name"),
                format!("{name:?} should match a {object} name (lowercase DNS-1123 subdomain)"),
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
        let ok = v.len() <= 128 && check::env_var_name(v);
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
    backend.family().build(&mut cx)?;
    tls_reaches_workers(spec, backend)?;
    result_expires(&mut cx, spec, backend)?;
    result_settings(&mut cx, spec, backend)?;
    celery_clock(&mut cx, spec)?;
    settings_reach_workers(&mut cx, spec);
    if let Some(v) = spec.injection.as_ref().and_then(|i| i.env_var.as_deref()) {
        if v == crate::api::footprint::CONFIG_MODULE_VAR {
            return Err(invalid(
                "spec.injection.envVar",
                crate::api::ENV_VAR_NOT_CONFIG_MODULE,
            ));
        }
        if cx.out.env.contains_key(v) {
            return Err(invalid(
                "spec.injection.envVar",
                format!("{v} is the variable the client library reads for this backend, which injection sets itself; choose another name for the URI"),
            ));
        }
    }
    let uri = cx.out.uri.clone();
    cx.bind("uri", uri);
    cx.out.kind = Some(kind);
    Ok(cx.out)
}

/// `spec.resultSettings` under Celery's names; durations in Celery's units (seconds, or
/// milliseconds for the retry sleeps).
fn result_settings(
    cx: &mut Ctx,
    spec: &CeleryResultBackendSpec,
    backend: Backend<'_>,
) -> Result<(), BuildError> {
    let Some(r) = &spec.result_settings else {
        return Ok(());
    };
    let secs = |field: &str, v: &Option<String>| -> Result<Option<f64>, BuildError> {
        v.as_deref()
            .map(|d| {
                parse_duration(d).map_err(|m| invalid(&format!("spec.resultSettings.{field}"), m))
            })
            .transpose()
    };
    cx.set_opt("result_extended", r.extended);
    cx.set_opt("result_serializer", r.serializer.clone());
    cx.set_opt("result_compression", r.compression.clone());
    cx.set_opt("result_accept_content", r.accept_content.clone());
    cx.set_opt(
        "result_chord_join_timeout",
        secs("chordJoinTimeout", &r.chord_join_timeout)?,
    );
    cx.set_opt(
        "result_chord_retry_interval",
        secs("chordRetryInterval", &r.chord_retry_interval)?,
    );
    cx.set_opt("result_backend_always_retry", r.backend_always_retry);
    cx.set_opt("result_backend_max_retries", r.backend_max_retries);
    let ms = |v: Option<f64>| v.map(|s| (s * 1000.0).round() as u64);
    cx.set_opt(
        "result_backend_base_sleep_between_retries_ms",
        ms(secs(
            "backendBaseSleepBetweenRetries",
            &r.backend_base_sleep_between_retries,
        )?),
    );
    cx.set_opt(
        "result_backend_max_sleep_between_retries_ms",
        ms(secs(
            "backendMaxSleepBetweenRetries",
            &r.backend_max_sleep_between_retries,
        )?),
    );
    cx.set_opt("result_cache_max", r.cache_max);
    if (r.serializer.as_deref().is_some_and(|s| s != "json") || r.compression.is_some())
        && backend.family().cleanup_reads_results()
    {
        cx.warn("result_serializer other than json, or result_compression: cleanup policies read each stored result's date_done in this store and cannot read such results, so they keep them; rely on result_expires here");
    }
    Ok(())
}

fn result_expires(
    cx: &mut Ctx,
    spec: &CeleryResultBackendSpec,
    backend: Backend<'_>,
) -> Result<(), BuildError> {
    let Some(raw) = &spec.result_expires else {
        return Ok(());
    };
    let secs = parse_duration(raw).map_err(|m| invalid("spec.resultExpires", m))?;
    if secs == 0.0 {
        cx.set("result_expires", Value::Null);
        if backend.family().expires_as_ttl() {
            cx.warn("resultExpires is 0s: results are stored without TTL and never expire unless a cleanup policy removes them");
        }
        return Ok(());
    }
    backend
        .family()
        .check_result_expires(secs)
        .map_err(|m| invalid("spec.resultExpires", m))?;
    if secs.fract() == 0.0 {
        cx.set("result_expires", secs as u64);
    } else {
        cx.set("result_expires", secs);
    }
    Ok(())
}

/// Celery's `timezone` and `enable_utc` (`spec.timezone`, `spec.enableUtc`), which decide how
/// Settings that cannot live in the URI reach injected workers only through `celeryconfig.py`
/// (`injection.configModule: true`): without it a worker keeps Celery's defaults for them (a
/// 1-day `result_expires`, no Sentinel master name, no bucket) and nothing would say so. Warned,
/// naming the settings.
fn settings_reach_workers(cx: &mut Ctx, spec: &CeleryResultBackendSpec) {
    let module = spec.config_module();
    let keys = module_only(&cx.out);
    if module || keys.is_empty() {
        return;
    }
    cx.warn(format!(
        "injected workers get only the URI; these settings reach them only through celeryconfig.py: {}. Set injection.configModule: true (and put /etc/celery-result-backend on the worker's PYTHONPATH) or set them in the worker's own configuration",
        keys.join(", ")
    ));
}

/// TLS never downgraded by injection: where a backend's TLS lives only in settings (Sentinel's
/// `redis_backend_use_ssl`/`sentinel_kwargs`, Cassandra's `ssl_options`, ArangoDB's
/// `http_protocol`), a worker given only the URI would connect in clear, password included. Such
/// a spec needs `injection.configModule: true`; workers that configure themselves are unaffected
/// by it (nothing is mounted where no workload opts in) and read `celeryconfig.py` from the URI
/// Secret.
fn tls_reaches_workers(
    spec: &CeleryResultBackendSpec,
    backend: Backend<'_>,
) -> Result<(), BuildError> {
    let module = spec.config_module();
    let Some(settings) = backend.family().tls_in_settings().filter(|_| !module) else {
        return Ok(());
    };
    Err(invalid(
        "spec.injection.configModule",
        format!(
            "{}'s TLS reaches Celery only through {settings}, which only celeryconfig.py carries: a worker given only the URI would not use TLS (and could send its password in clear): set injection.configModule: true",
            backend.kind().field(),
        ),
    ))
}

/// What reaches injected workers only through `celeryconfig.py`: the settings. The environment
/// variables the client library reads (`CONSUL_HTTP_TOKEN`, `AWS_CA_BUNDLE`) are injected from
/// the URI Secret by reference (`status.clientEnv`), and the module also sets them with
/// `os.environ.setdefault` for workers that load it themselves.
pub fn module_only(cfg: &BackendConfig) -> Vec<String> {
    cfg.settings.keys().cloned().collect()
}

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

pub(crate) fn tls_reqs(v: Option<TlsVerify>) -> &'static str {
    match v.unwrap_or_default() {
        TlsVerify::Required => "required",
        TlsVerify::Optional => "optional",
        TlsVerify::None => "none",
    }
}

/// Refuse Basic-auth credentials the client cannot send ([`check::basic_auth_part`]), naming the
/// field they came from.
pub(crate) fn basic_credentials(
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
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A real self-signed certificate and its key (the builder parses TLS material).
    pub(crate) fn test_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["test.invalid".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn broken_tls_material_is_refused_naming_the_secret_and_key() {
        let (cert, key) = test_pem();
        let (_, other_key) = test_pem();
        let spec = spec(
            json!({"redis": {"external": {"host": "r", "tls": {"enabled": true,
            "caSecretRef": {"name": "ca", "key": "ca.crt"},
            "clientCertificateSecretRef": {"name": "client"}}}}}),
        );
        let with = |ca: &str, crt: &str, k: &str| {
            let mut s = SecretValues::new();
            s.entry("ca".into())
                .or_default()
                .insert("ca.crt".into(), ca.into());
            let c = s.entry("client".into()).or_default();
            c.insert("tls.crt".into(), crt.into());
            c.insert("tls.key".into(), k.into());
            build(&spec, &s).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(with(&cert, &cert, &key), Ok(()));
        let junk = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        for (ca, crt, k, want) in [
            (
                junk,
                cert.as_str(),
                key.as_str(),
                "spec.redis.external.tls.caSecretRef: Secret \"ca\" key \"ca.crt\"",
            ),
            (
                "MIIB",
                cert.as_str(),
                key.as_str(),
                "is not PEM (no -----BEGIN line",
            ),
            (
                key.as_str(),
                cert.as_str(),
                key.as_str(),
                "no X.509 certificate could be parsed",
            ),
            (
                cert.as_str(),
                cert.as_str(),
                cert.as_str(),
                "Secret \"client\" key \"tls.key\": no PEM private key",
            ),
            (
                cert.as_str(),
                cert.as_str(),
                other_key.as_str(),
                "spec.redis.external.tls.clientCertificateSecretRef: Secret \"client\": tls.key is not the key of the certificate in tls.crt",
            ),
        ] {
            let e = with(ca, crt, k).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("BEGIN PRIVATE"), "{e}");
        }
        // TLS settings with enabled false (the default) would be dropped: refused.
        let off = crate::api::CeleryResultBackendSpec {
            ..serde_json::from_value(json!({"redis": {"external": {"host": "r",
                "tls": {"caSecretRef": {"name": "ca", "key": "ca.crt"}}}}}))
            .unwrap()
        };
        let e = build(&off, &SecretValues::new()).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.redis.external.tls: enabled is false"),
            "{e}"
        );
        // enabled false alone stays valid (MongoDB writes tls=false, e.g. to turn off SRV's TLS).
        assert!(build(
            &serde_json::from_value(json!({"mongodb": {"external": {"hosts": [{"host": "m"}], "tls": {"enabled": false}}}})).unwrap(),
            &SecretValues::new()
        )
        .is_ok_and(|c| c.uri.contains("tls=false")));
    }

    #[test]
    fn a_ca_from_a_config_map_is_mounted_for_workers_and_kept_for_the_operator() {
        let (ca, _) = test_pem();
        let spec = spec(
            json!({"mongodb": {"external": {"hosts": [{"host": "m.example"}], "tls": {"enabled": true,
            "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}}}}),
        );
        let mut values = SecretValues::new();
        // A Secret of the same name is not the ConfigMap.
        values
            .entry("trust-bundle".into())
            .or_default()
            .insert("ca.pem".into(), ca.clone());
        let e = build(&spec, &values).unwrap_err();
        assert_eq!(e.reason(), "ConfigMapNotFound");
        assert_eq!(
            e.to_string(),
            "spec.mongodb.external.tls.caConfigMapRef: ConfigMap \"trust-bundle\" not found"
        );
        let cm = values
            .entry(crate::api::config_map_source("trust-bundle"))
            .or_default();
        cm.insert("other.pem".into(), ca.clone());
        let e = build(&spec, &values).unwrap_err();
        assert_eq!(e.reason(), "ConfigMapKeyMissing");
        assert!(
            e.to_string().starts_with(
                "spec.mongodb.external.tls.caConfigMapRef: ConfigMap \"trust-bundle\" has no key \"ca.pem\""
            ),
            "{e}"
        );
        let cm_key = crate::api::config_map_source("trust-bundle");
        values
            .get_mut(&cm_key)
            .unwrap()
            .insert("ca.pem".into(), "not a certificate".into());
        let e = build(&spec, &values).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.mongodb.external.tls.caConfigMapRef: ConfigMap \"trust-bundle\" key \"ca.pem\" is not PEM"),
            "{e}"
        );
        values
            .get_mut(&cm_key)
            .unwrap()
            .insert("ca.pem".into(), ca.clone());
        let cfg = build(&spec, &values).unwrap();
        assert!(
            cfg.uri.contains(
                "tlsCAFile=%2Fetc%2Fcelery-backend%2Ftls-configmaps%2Ftrust-bundle%2Fca.pem"
            ),
            "{}",
            cfg.uri
        );
        let t = cfg.tls.unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(ca.as_bytes()));
        assert_eq!(
            t.ca_source.as_deref(),
            Some("spec.mongodb.external.tls.caConfigMapRef (ConfigMap \"trust-bundle\" key \"ca.pem\")")
        );
        // Read as `configmap:<name>`, and mounted from there.
        assert_eq!(
            secret_refs(&spec),
            [(
                "spec.mongodb.external.tls.caConfigMapRef".to_string(),
                SecretKeyRef {
                    name: "configmap:trust-bundle".into(),
                    key: "ca.pem".into()
                }
            )]
        );
        assert_eq!(
            spec.tls().unwrap().mounted_keys(),
            [("configmap:trust-bundle".to_string(), "ca.pem".to_string())]
        );
        // A Secret reference cannot reach a ConfigMap through the prefix.
        let sneaky = super::tests::spec(
            json!({"redis": {"external": {"host": "r", "auth": {"passwordSecretRef": {"name": "configmap:trust-bundle", "key": "ca.pem"}}}}}),
        );
        let e = build(&sneaky, &values).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.redis.external.auth.passwordSecretRef.name: \"configmap:trust-bundle\" should match a Secret name"),
            "{e}"
        );
        // One CA source only.
        let both = super::tests::spec(
            json!({"mongodb": {"external": {"hosts": [{"host": "m.example"}], "tls": {"enabled": true,
            "caSecretRef": {"name": "ca", "key": "ca.crt"},
            "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}}}}),
        );
        assert_eq!(
            build(&both, &values).unwrap_err().to_string(),
            format!(
                "spec.mongodb.external.tls.caConfigMapRef: {}",
                crate::api::CA_SOURCES_EXCLUSIVE
            )
        );
    }

    #[test]
    fn tls_material_from_secrets_is_mounted_for_workers_and_kept_for_the_operator() {
        let mut secrets = SecretValues::new();
        let (ca, key) = test_pem();
        let ca = ca.as_str();
        secrets
            .entry("redis-ca".into())
            .or_default()
            .insert("ca.crt".into(), ca.into());
        let client = secrets.entry("redis-client".into()).or_default();
        client.insert("tls.crt".into(), ca.into());
        client.insert("tls.key".into(), key.clone());
        let cfg = build(
            &spec(
                json!({"redis": {"external": {"host": "r.example", "tls": {"enabled": true,
                "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
                "clientCertificateSecretRef": {"name": "redis-client"}}}}}),
            ),
            &secrets,
        )
        .unwrap();
        assert_eq!(
            cfg.uri,
            "rediss://r.example:6379/0?ssl_cert_reqs=required\
             &ssl_ca_certs=%252Fetc%252Fcelery-backend%252Ftls%252Fredis-ca%252Fca.crt\
             &ssl_certfile=%252Fetc%252Fcelery-backend%252Ftls%252Fredis-client%252Ftls.crt\
             &ssl_keyfile=%252Fetc%252Fcelery-backend%252Ftls%252Fredis-client%252Ftls.key"
        );
        let t = cfg.tls.clone().unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(ca.as_bytes()));
        assert!(t.client.is_some());
        // Never printed: the published config has paths only, and Debug hides the bytes.
        let shown = format!("{cfg:?}");
        let body = |pem: &str| pem.lines().nth(1).unwrap_or_default().to_string();
        assert!(
            !shown.contains(&body(ca)) && !shown.contains(&body(&key)),
            "{shown}"
        );
        assert!(!config_module(&cfg).contains("BEGIN"));
        // Material that is not PEM is refused naming the field, without echoing it.
        secrets
            .get_mut("redis-ca")
            .unwrap()
            .insert("ca.crt".into(), "hunter2".into());
        let e = build(
            &spec(
                json!({"redis": {"external": {"host": "r.example", "tls": {"enabled": true,
                "caSecretRef": {"name": "redis-ca", "key": "ca.crt"}}}}}),
            ),
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.redis.external.tls.caSecretRef") && !e.contains("hunter2"),
            "{e}"
        );
        // The operator reads the references (and only enabled TLS blocks' ones).
        let refs = secret_refs(&spec(
            json!({"redis": {"external": {"host": "r", "tls": {"enabled": true,
            "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
            "clientCertificateSecretRef": {"name": "redis-client"}}}}}),
        ));
        let keys: Vec<_> = refs
            .iter()
            .map(|(_, r)| format!("{}/{}", r.name, r.key))
            .collect();
        assert_eq!(
            keys,
            [
                "redis-ca/ca.crt",
                "redis-client/tls.crt",
                "redis-client/tls.key"
            ]
        );
    }

    #[test]
    fn the_uri_variable_cannot_take_a_client_library_variable() {
        let mut secrets = SecretValues::new();
        secrets
            .entry("t".into())
            .or_default()
            .insert("token".into(), "tok".into());
        let e = build(
            &spec(json!({"consul": {"external": {"host": "c",
                "tokenSecretRef": {"name": "t", "key": "token"}}},
                "injection": {"envVar": "CONSUL_HTTP_TOKEN"}})),
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("spec.injection.envVar: CONSUL_HTTP_TOKEN is the variable"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_that_verify_none_ignores_is_warned() {
        let warned = |verify: &str| {
            build(
                &spec(json!({"redis": {"external": {"host": "r",
                    "tls": {"enabled": true, "verify": verify, "caFile": "/ca.pem"}}}})),
                &SecretValues::new(),
            )
            .unwrap()
            .warnings
            .iter()
            .any(|w| {
                w.contains("spec.redis.external.tls.verify is None")
                    && w.contains("CA given is not used")
            })
        };
        assert!(warned("None"));
        assert!(!warned("Required"));
        // MongoDB's Optional is tlsAllowInvalidCertificates: no chain is checked either.
        let mongo = build(
            &spec(json!({"mongodb": {"external": {"hosts": [{"host": "m"}],
                "tls": {"enabled": true, "verify": "Optional", "caFile": "/ca.pem"}}}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(
            mongo.uri.contains("tlsAllowInvalidCertificates=true"),
            "{}",
            mongo.uri
        );
        assert!(
            mongo
                .warnings
                .iter()
                .any(|w| w.contains("tls.verify is Optional")),
            "{:?}",
            mongo.warnings
        );
        // libpq would verify against an sslrootcert even with sslmode=require: None leaves it out.
        let pg = |verify: &str| {
            build(
                &spec(json!({"database": {"external": {"engine": "postgresql", "host": "p", "database": "d",
                    "tls": {"enabled": true, "verify": verify, "caFile": "/ca.pem"}}}})),
                &SecretValues::new(),
            )
            .unwrap()
            .uri
        };
        assert!(pg("None").contains("sslmode=require") && !pg("None").contains("sslrootcert"));
        assert!(
            pg("Required").contains("sslrootcert=%2Fca.pem"),
            "{}",
            pg("Required")
        );
    }

    #[test]
    fn sentinel_tls_follows_the_master_and_an_opt_out_is_warned() {
        let sentinel = |extra: Value| {
            let mut s = json!({"masterName": "m", "hosts": [{"host": "s0"}]});
            if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            s
        };
        // TLS lives in settings: refused unless the config module is injected.
        let e = build(
            &spec(json!({"redis": {"external": {"sentinel": sentinel(json!({})), "tls": {"enabled": true}}}})),
            &SecretValues::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("spec.injection.configModule: redis's TLS reaches Celery only through redis_backend_use_ssl and result_backend_transport_options.sentinel_kwargs"),
            "{e}"
        );
        let on = build(
            &spec(json!({"redis": {"external": {"sentinel": sentinel(json!({})), "tls": {"enabled": true}}},
                "injection": {"configModule": true}})),
            &SecretValues::new(),
        )
        .unwrap();
        let kw = &on.settings["result_backend_transport_options"]["sentinel_kwargs"];
        assert_eq!(kw["ssl"], true, "{kw}");
        assert!(on.warnings.iter().all(|w| !w.contains("in clear")));
        let off = build(
            &spec(json!({"redis": {"external": {"sentinel": sentinel(json!({"tls": false})), "tls": {"enabled": true}}},
                "injection": {"configModule": true}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(off.settings["result_backend_transport_options"]["sentinel_kwargs"].is_null());
        assert!(
            off.warnings.iter().any(|w| w.contains("travel in clear")),
            "{:?}",
            off.warnings
        );
        let e = build(
            &spec(json!({"redis": {"external": {"sentinel": sentinel(json!({"tls": true}))}}})),
            &SecretValues::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("spec.redis.external.sentinel.tls"),
            "{e}"
        );
    }

    #[test]
    fn result_settings_use_celerys_names_and_units() {
        let cfg = build(
            &spec(json!({"redis": {"external": {"host": "r"}}, "injection": {"configModule": true},
                "resultSettings": {"extended": true, "serializer": "json", "acceptContent": ["json"],
                    "chordJoinTimeout": "3s", "chordRetryInterval": "1500ms", "backendAlwaysRetry": true,
                    "backendMaxRetries": 5, "backendBaseSleepBetweenRetries": "10ms",
                    "backendMaxSleepBetweenRetries": "10s", "cacheMax": -1}})),
            &SecretValues::new(),
        )
        .unwrap();
        let s = &cfg.settings;
        assert_eq!(s["result_extended"], true);
        assert_eq!(s["result_serializer"], "json");
        assert_eq!(s["result_accept_content"], json!(["json"]));
        assert_eq!(s["result_chord_join_timeout"], 3.0);
        assert_eq!(s["result_chord_retry_interval"], 1.5);
        assert_eq!(s["result_backend_always_retry"], true);
        assert_eq!(s["result_backend_max_retries"], 5);
        assert_eq!(s["result_backend_base_sleep_between_retries_ms"], 10);
        assert_eq!(s["result_backend_max_sleep_between_retries_ms"], 10000);
        assert_eq!(s["result_cache_max"], -1);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let module = config_module(&cfg);
        assert!(module.contains("result_extended = True\n"), "{module}");
        let pickle = build(
            &spec(json!({"redis": {"external": {"host": "r"}}, "resultSettings": {"serializer": "pickle"}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(pickle
            .warnings
            .iter()
            .any(|w| w.contains("cannot read such results")));
        // SQL cleanup reads the date_done column, never the result: no warning there.
        let sql = build(
            &spec(
                json!({"database": {"external": {"engine": "sqlite", "path": "/r.db"}},
                "resultSettings": {"serializer": "pickle"}}),
            ),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(
            !sql.warnings
                .iter()
                .any(|w| w.contains("cannot read such results")),
            "{:?}",
            sql.warnings
        );
    }

    #[test]
    fn settings_outside_the_uri_are_warned_unless_the_config_module_is_injected() {
        let without = build(
            &spec(json!({"redis": {"external": {"host": "r"}}, "resultExpires": "10m"})),
            &SecretValues::new(),
        )
        .unwrap();
        assert_eq!(without.settings["result_expires"], 600);
        assert!(
            without
                .warnings
                .iter()
                .any(|w| w.contains("celeryconfig.py: result_expires.")),
            "{:?}",
            without.warnings
        );
        let with = build(
            &spec(json!({"redis": {"external": {"host": "r"}}, "resultExpires": "10m", "injection": {"configModule": true}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(with.warnings.iter().all(|w| !w.contains("celeryconfig.py")));
        let plain = build(
            &spec(json!({"redis": {"external": {"host": "r"}}})),
            &SecretValues::new(),
        )
        .unwrap();
        assert!(
            plain.warnings.is_empty(),
            "nothing to warn: {:?}",
            plain.warnings
        );
    }

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
                        // The builder names the same field (or one inside it); a value serde
                        // refuses (an enum, an unknown field) is refused before any field rule.
                        // An unknown field is pruned by the API server: the builder then refuses
                        // the object that lacked it.
                        let pruned = text.contains("# expect: unknown field")
                            && f.rsplit_once('.').is_some_and(|(p, _)| msg.starts_with(p));
                        if !msg.contains(&f) && !msg.starts_with("types:") && !pruned {
                            drift.push(format!("{}: expected {f}, got {msg}", path.display()));
                        }
                    } else {
                        drift.push(format!("{}: no `# expect: spec...` line", path.display()));
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
