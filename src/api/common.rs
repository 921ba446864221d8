//! Shared API building blocks: Secret references, endpoints, TLS, managed-mode storage, durations.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// DNS-1123 subdomain, the form of a Secret name.
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The characters a Secret data key may use.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A DNS name, an IPv4 address or an IPv6 address (without brackets). The IPv6 branch needs two
/// colons (every IPv6 address has them), so `host:port` (`10.0.0.5:6379`, `db:5432`) does not
/// match; the builder then checks the address itself (`uri::check::host`).
pub const HOST_PATTERN: &str = r"^([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9_])?)*\.?|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$";
/// The one duration grammar of the CRDs, the builder and the CLI (`--older-than`): `0`, or a
/// Go-style duration as used across Kubernetes (`30s`, `1h30m`, `1.5h`; units ns, us, µs, ms,
/// s, m, h) optionally preceded by whole days (`7d`, `1d12h`); no sign, no spaces.
/// [`parse_duration`] reads exactly this language (tested on a table), and CEL rules convert it
/// with [`cel_seconds`].
pub const DURATION_PATTERN: &str =
    r"^(0|[0-9]+d([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))*|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// A CEL expression giving the whole seconds of the [`DURATION_PATTERN`] string at `expr` (e.g.
/// `self.resultExpires`) as an int: CEL's `duration()` takes Go durations only, so the days in
/// front are counted separately (`7d12h` -> 7 * 86400 + duration('12h').getSeconds()). Built
/// with indexOf/substring: with split() and string building the API server's cost estimate
/// exceeded its budget more than 100 times.
pub fn cel_seconds(expr: &str) -> String {
    format!(
        "({expr}.contains('d') ? int({expr}.substring(0, {expr}.indexOf('d'))) * 86400 + ({expr}.endsWith('d') ? 0 : duration({expr}.substring({expr}.indexOf('d') + 1)).getSeconds()) : duration({expr}).getSeconds())"
    )
}

/// An absolute filesystem path.
pub const ABS_PATH_PATTERN: &str = r"^/.*$";
/// CEL: a path without `..` segments (no way out of the directory it names).
pub const NO_TRAVERSAL_RULE: &str = r"!self.matches(r'(^|/)\.\.(/|$)')";
/// Message of [`NO_TRAVERSAL_RULE`].
pub const NO_TRAVERSAL_MESSAGE: &str =
    "must not contain '..' segments (path traversal): write the path without them";
/// CEL: an endpoint URL without any `@`. Not just "none before the first `/`": a secret key
/// containing `/` (AWS keys often do) would hide `user:secret@` from that test, and no endpoint
/// URL needs an `@`.
pub const NO_URL_CREDENTIALS_RULE: &str = r"!self.contains('@')";
/// Message of [`NO_URL_CREDENTIALS_RULE`] (a CEL message: the API server does not echo the value).
pub const NO_URL_CREDENTIALS_MESSAGE: &str = "must not contain '@' (no user:password@ in the URL: a secret outside a Secret); use the SecretRef fields";
/// CEL: an http(s) URL with a host, an optional port and path, no spaces, query or fragment.
/// A CEL rule rather than a schema pattern, whose error would print the whole value (and any
/// credentials in it) back.
pub const HTTP_URL_RULE: &str = r"self.matches(r'^https?://[^\s/?#@]+(/[^\s?#]*)?$')";
/// Message of [`HTTP_URL_RULE`].
pub const HTTP_URL_MESSAGE: &str = "must be an http:// or https:// URL (lowercase scheme), a host with an optional port and path, without spaces, query or fragment";

/// A reference to one key of a Secret in the backend's namespace.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the CeleryResultBackend.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data whose value is used.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// A reference to one key of a ConfigMap in the backend's namespace (CA bundles, which are not
/// secret, are often published as ConfigMaps: cert-manager's trust-manager, OpenShift's service
/// CA, kube-root-ca.crt).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace as the CeleryResultBackend.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub name: String,
    /// Key inside the ConfigMap's data (text) whose value is used.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// How a referenced ConfigMap is named where Secrets and ConfigMaps share one namespace of names:
/// the builder's looked-up values ([`crate::uri::SecretValues`]), the controller's index of
/// referenced objects and `status.tlsMounts`. `:` cannot occur in a Secret's name (a DNS-1123
/// subdomain), so `configmap:<name>` never collides with one.
pub const CONFIG_MAP_PREFIX: &str = "configmap:";

/// The shared name of ConfigMap `name` (see [`CONFIG_MAP_PREFIX`]).
pub fn config_map_source(name: &str) -> String {
    format!("{CONFIG_MAP_PREFIX}{name}")
}

/// User name and password for stores that authenticate with both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.username) && has(self.usernameSecretRef))").message("set either username or usernameSecretRef, not both"))]
pub struct BasicAuth {
    /// User name given in plain text (user names are not secret). Mutually exclusive with usernameSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub username: Option<String>,
    /// Secret key holding the user name. Mutually exclusive with username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the password. Any byte sequence is allowed; the operator encodes it for the URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A network endpoint: host and optional port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// DNS name, IPv4 address or IPv6 address (without brackets and without a port: see port). Backends whose Celery code cannot carry IPv6 refuse it, naming the field.
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// TCP port; the backend's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// How strictly a TLS client verifies the server certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsVerify {
    /// Verify the certificate chain and host name (default).
    #[default]
    Required,
    /// Verify when a certificate is presented.
    Optional,
    /// Do not verify (testing only).
    None,
}

/// Where injected TLS material is mounted in workers: `<TLS_MOUNT_ROOT>/<secret name>/<key>`
/// (read-only, a Secret volume with exactly the referenced keys).
pub const TLS_MOUNT_ROOT: &str = "/etc/celery-backend/tls";

/// Where a CA bundle from a ConfigMap is mounted in workers:
/// `<TLS_CONFIG_MAP_MOUNT_ROOT>/<config map name>/<key>` (read-only, a ConfigMap volume with
/// exactly the referenced key). A directory of its own, so a ConfigMap and a Secret of the same
/// name never share a mount path.
pub const TLS_CONFIG_MAP_MOUNT_ROOT: &str = "/etc/celery-backend/tls-configmaps";

/// The key of a `kubernetes.io/tls` Secret holding the certificate chain (PEM).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The key of a `kubernetes.io/tls` Secret holding the private key (PEM).
pub const TLS_KEY_KEY: &str = "tls.key";

/// A Secret of type `kubernetes.io/tls` in the backend's namespace (keys `tls.crt`, `tls.key`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecretRef {
    /// Name of the Secret, in the same namespace as the CeleryResultBackend.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_NAME_PATTERN))]
    pub name: String,
}

/// Why a `tls` block with `enabled: false` and TLS settings is refused: the settings would be
/// dropped without a word (TLS is off), though whoever wrote them meant TLS to be on.
pub const TLS_DISABLED_WITH_SETTINGS: &str = "enabled is false (the default), so verify, caFile, caSecretRef, caConfigMapRef, certFile, keyFile and clientCertificateSecretRef would be ignored and the connection would not use TLS: set enabled: true, or remove them";

/// Why more than one CA source is refused: only one CA bundle can be handed to the client.
pub const CA_SOURCES_EXCLUSIVE: &str = "set at most one of caFile, caSecretRef and caConfigMapRef";

/// TLS settings for a client connection. TLS material comes from Secrets (`caSecretRef`,
/// `clientCertificateSecretRef`) or, for a CA bundle, a ConfigMap (`caConfigMapRef`): the operator
/// uses it in memory for its own checks and cleanup, and injection mounts it read-only into workers
/// under `/etc/celery-backend/tls/<secret>/<key>` (`tls-configmaps/<configmap>/<key>`), the path
/// the URI names. The `*File` fields are the alternative for images that bring their
/// own files: paths inside the worker container, which the operator cannot read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.caFile), has(self.caSecretRef), has(self.caConfigMapRef)].filter(x, x).size() <= 1").message(CA_SOURCES_EXCLUSIVE))]
#[x_kube(validation = Rule::new("!has(self.clientCertificateSecretRef) || !(has(self.certFile) || has(self.keyFile))").message("set either clientCertificateSecretRef or certFile/keyFile, not both"))]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || (!self.caSecretRef.key.startsWith('..') && self.caSecretRef.key != '.')").message("caSecretRef.key cannot be mounted as a file: it must not be '.' or start with '..'"))]
#[x_kube(validation = Rule::new("!has(self.caConfigMapRef) || (!self.caConfigMapRef.key.startsWith('..') && self.caConfigMapRef.key != '.')").message("caConfigMapRef.key cannot be mounted as a file: it must not be '.' or start with '..'"))]
#[x_kube(validation = Rule::new("self.enabled || !(has(self.verify) || has(self.caFile) || has(self.caSecretRef) || has(self.caConfigMapRef) || has(self.certFile) || has(self.keyFile) || has(self.clientCertificateSecretRef))").message(TLS_DISABLED_WITH_SETTINGS))]
pub struct TlsConfig {
    /// Connect with TLS. Default false; the other fields take effect only with enabled: true (a block that sets them with enabled false is refused).
    #[serde(default)]
    pub enabled: bool,
    /// Certificate verification level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<TlsVerify>,
    /// Absolute path of a CA bundle inside the worker container; no '..' segments. Any other characters work: Redis decodes the value twice and the operator encodes it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096), regex(pattern = ABS_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub ca_file: Option<String>,
    /// Absolute path of a client certificate inside the worker container; no '..' segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096), regex(pattern = ABS_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub cert_file: Option<String>,
    /// Absolute path of the client certificate's key inside the worker container; no '..' segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096), regex(pattern = ABS_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(NO_TRAVERSAL_RULE).message(NO_TRAVERSAL_MESSAGE))]
    pub key_file: Option<String>,
    /// CA bundle (PEM) that verifies the server, from a key of a Secret in the backend's namespace. Mounted into workers at /etc/celery-backend/tls/<name>/<key>; the operator's own checks use it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// CA bundle (PEM) that verifies the server, from a key of a ConfigMap in the backend's namespace (for CAs published as ConfigMaps, such as trust-manager bundles). Mounted into workers at /etc/celery-backend/tls-configmaps/<name>/<key>; the operator's own checks use it too. At most one of caFile, caSecretRef and caConfigMapRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<ConfigMapKeyRef>,
    /// Client certificate and key for stores that require one (mutual TLS): a Secret of type kubernetes.io/tls (keys tls.crt and tls.key). Mounted into workers at /etc/celery-backend/tls/<name>/; the operator's own checks present it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<TlsSecretRef>,
}

impl TlsConfig {
    /// Whether anything beyond `enabled` is set (verification, CA, client certificate): such a
    /// block with `enabled: false` is refused ([`TLS_DISABLED_WITH_SETTINGS`]).
    pub fn has_settings(&self) -> bool {
        self.verify.is_some()
            || self.ca_file.is_some()
            || self.ca_secret_ref.is_some()
            || self.ca_config_map_ref.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_certificate_secret_ref.is_some()
    }

    /// The CA bundle path workers read: the mounted `caSecretRef` or `caConfigMapRef`, else
    /// `caFile`.
    pub fn ca_path(&self) -> Option<String> {
        match (&self.ca_secret_ref, &self.ca_config_map_ref) {
            (Some(r), _) => Some(format!("{TLS_MOUNT_ROOT}/{}/{}", r.name, r.key)),
            (None, Some(r)) => Some(format!("{TLS_CONFIG_MAP_MOUNT_ROOT}/{}/{}", r.name, r.key)),
            (None, None) => self.ca_file.clone(),
        }
    }

    /// Whether a CA is named, by any of `caFile`, `caSecretRef` or `caConfigMapRef`.
    pub fn has_ca(&self) -> bool {
        self.ca_path().is_some()
    }

    /// The client certificate and key paths workers read: the mounted
    /// `clientCertificateSecretRef`, else `certFile`/`keyFile`.
    pub fn client_paths(&self) -> (Option<String>, Option<String>) {
        match &self.client_certificate_secret_ref {
            Some(r) => (
                Some(format!("{TLS_MOUNT_ROOT}/{}/{TLS_CERT_KEY}", r.name)),
                Some(format!("{TLS_MOUNT_ROOT}/{}/{TLS_KEY_KEY}", r.name)),
            ),
            None => (self.cert_file.clone(), self.key_file.clone()),
        }
    }

    /// The keys injection mounts, as `(source, key)` in a stable order: `source` is a Secret's
    /// name, or `configmap:<name>` for a ConfigMap ([`config_map_source`]).
    pub fn mounted_keys(&self) -> Vec<(String, String)> {
        let mut v = vec![];
        if let Some(r) = &self.ca_secret_ref {
            v.push((r.name.clone(), r.key.clone()));
        }
        if let Some(r) = &self.ca_config_map_ref {
            v.push((config_map_source(&r.name), r.key.clone()));
        }
        if let Some(r) = &self.client_certificate_secret_ref {
            v.push((r.name.clone(), TLS_CERT_KEY.into()));
            v.push((r.name.clone(), TLS_KEY_KEY.into()));
        }
        v
    }
}

/// What happens to provisioned data when the CeleryResultBackend is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the volume claims and the generated credentials (default).
    #[default]
    Retain,
    /// Delete the volume claims and the generated credentials with the backend.
    Delete,
}

/// Persistent storage for a provisioned store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested volume size as a Kubernetes quantity, for example `5Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: Option<String>,
    /// StorageClass of the volume claim; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// Settings every provisioned (managed) store shares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedCommon {
    /// Container image; the operator's default image for the store when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Store version, used as the image tag when image is omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub version: Option<String>,
    /// Persistent volume for the store's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// CPU and memory requests and limits of the store container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Retain (default) keeps volumes and credentials when the backend is deleted; Delete removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
}

/// Schema for the `managed` field of backends the operator cannot provision: any value is rejected by CEL.
pub fn unsupported_managed_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Not supported for this backend: use external."
    })
}

/// Parse a [`DURATION_PATTERN`] duration (`0`, `90s`, `1h30m`, `1.5h`, `7d`, `1d12h`) into
/// seconds. Errors say what is expected (never more than the value itself, which is not secret).
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let err = || {
        format!("invalid duration {s:?}: expected whole days and/or numbers with a unit (ns, us, ms, s, m, h), e.g. 30s, 15m, 24h, 7d or 1d12h")
    };
    if s == "0" {
        return Ok(0.0);
    }
    let (days, rest) = match s.split_once('d') {
        Some((d, r)) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
            (d.parse::<f64>().map_err(|_| err())?, r)
        }
        Some(_) => return Err(err()),
        None if s.is_empty() => return Err(err()),
        None => (0.0, s),
    };
    let mut total = days * 86400.0;
    let mut rest = rest;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if int_len == 0 {
            return Err(err());
        }
        let mut num_len = int_len;
        if rest[int_len..].starts_with('.') {
            let frac = rest[int_len + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(err)?;
            if frac == 0 {
                return Err(err());
            }
            num_len = int_len + 1 + frac;
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_like_go_plus_days() {
        assert_eq!(parse_duration("30s"), Ok(30.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("7d"), Ok(604800.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert_eq!(parse_duration("0"), Ok(0.0));
        for bad in ["", "-1h", "h", "10", "1x", "1h-", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_duration("1d12h"), Ok(129600.0));
        assert_eq!(parse_duration("1µs"), Ok(1e-6));
    }

    /// The CRD pattern (what admission accepts) and the Rust parser (builder, controller, CLI
    /// `--older-than`) accept and refuse the same strings.
    #[test]
    fn crd_pattern_and_parser_agree() {
        let re = regex::Regex::new(super::DURATION_PATTERN).unwrap();
        let table = [
            "0", "0s", "30s", "90s", "15m", "24h", "168h", "1h30m", "1.5h", "0.5s", "300ms",
            "10us", "10µs", "5ns", "7d", "1d", "30d", "1d12h", "2d3h4m5s", "1d0.5h", "", "d", "7",
            "10", "-1h", "+1h", "1h-", "h", "1.h", ".5h", "1..5h", "1.5d", "1h7d", "7d7d", "1w",
            "1y", "7D", " 7d", "7d ", "1 h", "1H", "1hh", "abc", "1d-1h", "00", "0d", "0h0m",
        ];
        for s in table {
            assert_eq!(
                re.is_match(s),
                parse_duration(s).is_ok(),
                "{s:?}: pattern {} but parser {:?}",
                re.is_match(s),
                parse_duration(s)
            );
        }
    }
}
