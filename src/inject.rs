//! Pure injection logic: which workloads and Pods opt in, the keyed checksum that rolls workers,
//! the metadata-only server-side-apply body for a workload and the JSON patch for an admitted Pod.
//!
//! Field ownership (README "Who owns which field"): on a workload the operator writes only
//! metadata, one annotation per backend on the workload and on its pod template, each with a field
//! manager of its own per backend; container entries, env, volumes and mounts are written by the
//! Pod webhook into Pods at admission, never into the owner's template. So an owner's `kubectl
//! apply`, `kubectl apply --server-side` or `helm upgrade` can change, rename or remove any
//! container, and two backends never remove each other's fields.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use sha2::Sha256;

pub use crate::api::footprint::{
    CHECKSUM_PREFIX, CONFIG_KEY, CONFIG_MODULE_VAR, CONFIG_MOUNT, CONFIG_VOLUME, INJECTED_PREFIX,
    LEGACY_CHECKSUM_ANNOTATION, LEGACY_RECORD_ANNOTATION, NAMESPACE_ANNOTATION,
    NAMESPACE_OPT_OUT_LABEL, OPT_IN_LABEL, URI_KEY,
};
use crate::api::CeleryResultBackendSpec;

/// `checksum.celery.dev/<backend>`.
pub fn checksum_key(backend: &str) -> String {
    format!("{CHECKSUM_PREFIX}{backend}")
}

/// `injected.celery.dev/<backend>`.
pub fn injected_key(backend: &str) -> String {
    format!("{INJECTED_PREFIX}{backend}")
}

/// Backends named by `checksum.celery.dev/<backend>` annotations, in key order.
pub fn annotated_backends(annotations: Option<&BTreeMap<String, String>>) -> Vec<String> {
    annotations
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix(CHECKSUM_PREFIX))
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect()
}

/// What to inject, derived from the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub backend: String,
    pub secret: String,
    pub env_var: String,
    pub config_module: bool,
    pub override_existing: bool,
    pub checksum: String,
    /// TLS keys to mount (`(source, key)`) at `/etc/celery-backend/tls/<secret>/<key>`, or for a
    /// ConfigMap (`source` = `configmap:<name>`) `/etc/celery-backend/tls-configmaps/<name>/<key>`:
    /// set by [`Injection::with_tls_mounts`] from the status, only where Pods are admitted.
    pub tls: Vec<(String, String)>,
    /// The mode of a mounted private key (`tls.key`) when the worker's client needs one other
    /// than the volume's default 0644 (`Family::private_key_mode`: libpq's 0640).
    pub private_key_mode: Option<i32>,
    /// Environment variables the store's client library reads (`CONSUL_HTTP_TOKEN`,
    /// `AWS_CA_BUNDLE`), each set from the URI Secret's key of the same name: set by
    /// [`Injection::with_client_env`] from the status, only where Pods are admitted.
    pub client_env: Vec<String>,
}

impl Injection {
    pub fn new(
        backend: &str,
        spec: &CeleryResultBackendSpec,
        secret: &str,
        checksum: &str,
    ) -> Self {
        let inj = spec.injection.clone().unwrap_or_default();
        Injection {
            backend: backend.into(),
            secret: secret.into(),
            env_var: inj.env_var.unwrap_or_else(|| URI_KEY.to_string()),
            config_module: inj.config_module.unwrap_or(false),
            override_existing: inj.override_existing.unwrap_or(false),
            checksum: checksum.into(),
            tls: vec![],
            private_key_mode: spec
                .backend()
                .ok()
                .and_then(|b| b.family().private_key_mode()),
            client_env: vec![],
        }
    }

    /// With the client-library variables recorded beside the published URI
    /// (`status.clientEnv`): the keys the published Secret carries, never a later spec's.
    pub fn with_client_env(mut self, names: &[String]) -> Self {
        // Only environment variable names: the status is data, not code.
        self.client_env = names
            .iter()
            .filter(|n| crate::uri::check::env_var_name(n))
            .cloned()
            .collect();
        self
    }

    /// With the TLS keys recorded beside the published URI (`status.tlsMounts`, `<secret>/<key>`
    /// or `configmap:<name>/<key>`): the files the published URI names, never a later spec's.
    pub fn with_tls_mounts(mut self, mounts: &[String]) -> Self {
        self.tls = mounts
            .iter()
            .filter_map(|m| m.split_once('/'))
            .map(|(s, k)| (s.to_string(), k.to_string()))
            .collect();
        self
    }

    /// The environment variables this injection sets in a container.
    pub fn variables(&self) -> Vec<&str> {
        let mut v = vec![self.env_var.as_str()];
        if self.config_module {
            v.push(CONFIG_MODULE_VAR);
        }
        v.extend(self.client_env.iter().map(String::as_str));
        v
    }

    /// Whether two injections would set the same variable (then only one may inject a workload).
    pub fn overlaps(&self, other: &Injection) -> bool {
        !self.shared(other).is_empty()
    }

    /// The variables both injections would set.
    pub fn shared(&self, other: &Injection) -> Vec<&str> {
        let theirs = other.variables();
        self.variables()
            .into_iter()
            .filter(|v| theirs.contains(v))
            .collect()
    }
}

/// The client-library variables (`BackendConfig::env`) injection sets from the URI Secret: all
/// of them without the config module; none with it, since `celeryconfig.py` sets them with
/// `os.environ.setdefault`, so a worker's own value (from its image or `envFrom`) keeps winning
/// and no other container of the Pod gets them.
pub fn client_env(spec: &CeleryResultBackendSpec, cfg: &crate::uri::BackendConfig) -> Vec<String> {
    let module = spec.config_module();
    if module {
        return vec![];
    }
    cfg.env.keys().cloned().collect()
}

/// The Secret keys a worker reads through an injection: the URI always, `celeryconfig.py` only
/// when it is mounted (`configModule`), and the client-library variables (`client_env`, keys
/// of their own names). Only these enter the checksum, so a change elsewhere (a Service Binding
/// key, or `result_expires` for workers that read only the URI) rolls nothing.
pub fn keys_read<'a>(
    config_module: bool,
    client_env: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut k = vec![URI_KEY];
    if config_module {
        k.push(CONFIG_KEY);
    }
    k.extend(client_env);
    k
}

/// Keyed checksum (HMAC-SHA256, RFC 2104, first 16 bytes as 32 hex digits) of what workers read
/// from a backend's Secret: `key` is the installation's secret checksum key (a checksum of a
/// low-entropy password on a pod template must not be open to brute force), `backend_uid` binds
/// it to one backend, `read` are the `(key, value)` pairs of [`keys_read`]. It depends on
/// nothing else, so re-creating the Secret or restarting the operator rolls no worker.
pub fn checksum(key: &[u8], backend_uid: &str, read: &[(&str, &[u8])]) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(&(backend_uid.len() as u64).to_be_bytes());
    mac.update(backend_uid.as_bytes());
    for (k, v) in read {
        mac.update(&(k.len() as u64).to_be_bytes());
        mac.update(k.as_bytes());
        mac.update(&(v.len() as u64).to_be_bytes());
        mac.update(v);
    }
    let digest = mac.finalize().into_bytes();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether `labels` satisfy a Kubernetes label selector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = sel.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    // An empty selector matches nothing here: selecting every workload is never what a user means.
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    !empty && labels_ok && exprs_ok
}

/// Whether a workload with these labels opts in to `backend` (label or the backend's selector).
pub fn workload_wants(
    backend: &str,
    spec: &CeleryResultBackendSpec,
    labels: &BTreeMap<String, String>,
) -> bool {
    labels.get(OPT_IN_LABEL).map(String::as_str) == Some(backend)
        || spec
            .injection
            .as_ref()
            .and_then(|i| i.workload_selector.as_ref())
            .is_some_and(|s| selector_matches(s, labels))
}

fn env_entries(inj: &Injection) -> Vec<Value> {
    let mut env = vec![json!({
        "name": inj.env_var,
        "valueFrom": {"secretKeyRef": {"name": inj.secret, "key": URI_KEY}},
    })];
    if inj.config_module {
        env.push(json!({"name": CONFIG_MODULE_VAR, "value": "celeryconfig"}));
    }
    // Optional: a container restarting after the key left the Secret (token removed) starts
    // without the variable instead of failing with CreateContainerConfigError.
    for name in &inj.client_env {
        env.push(json!({
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": inj.secret, "key": name, "optional": true}},
        }));
    }
    env
}

fn config_volume(inj: &Injection) -> Value {
    json!({"name": CONFIG_VOLUME, "secret": {"secretName": inj.secret, "items": [{"key": CONFIG_KEY, "path": "celeryconfig.py"}]}})
}

/// The Pod volume that carries TLS material from `secret` (a Secret's name, or `configmap:<name>`
/// for a ConfigMap): `cbo-tls-` and 24 hex digits (96 bits) of SHA-256 of it (a DNS label whatever
/// the name), one per source so two backends that share a CA share the volume. A volume of that
/// name for another source is never taken over (see `tls_patch`).
pub fn tls_volume_name(secret: &str) -> String {
    use sha2::Digest;
    let h = Sha256::digest(secret.as_bytes());
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("cbo-tls-{hex}")
}

/// Where TLS material is mounted: a Secret at `/etc/celery-backend/tls/<secret>`, a ConfigMap
/// (`source` = `configmap:<name>`) at `/etc/celery-backend/tls-configmaps/<name>`.
pub fn tls_mount_path(source: &str) -> String {
    match source.strip_prefix(crate::api::CONFIG_MAP_PREFIX) {
        Some(cm) => format!("{}/{cm}", crate::api::TLS_CONFIG_MAP_MOUNT_ROOT),
        None => format!("{}/{source}", crate::api::TLS_MOUNT_ROOT),
    }
}

/// One item of a TLS volume: the key (also its file name) and its mode (`None`: the volume's
/// default, 0644).
type TlsItem = (String, Option<i32>);

/// The volume source carrying `items` of `source` (a Secret's name, or `configmap:<name>`).
fn tls_volume_source(source: &str, items: &[TlsItem]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(k, mode)| match mode {
            Some(m) => json!({"key": k, "path": k, "mode": m}),
            None => json!({"key": k, "path": k}),
        })
        .collect();
    match source.strip_prefix(crate::api::CONFIG_MAP_PREFIX) {
        Some(cm) => json!({"configMap": {"name": cm, "items": items}}),
        None => json!({"secret": {"secretName": source, "items": items}}),
    }
}

/// The items an existing volume `v` of `source` carries (`None`: `v` carries another source,
/// which is never taken over).
fn tls_volume_keys(v: &k8s_openapi::api::core::v1::Volume, source: &str) -> Option<Vec<TlsItem>> {
    let keys = |items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>| {
        items
            .map(|i| i.iter().map(|i| (i.key.clone(), i.mode)).collect())
            .unwrap_or_default()
    };
    match source.strip_prefix(crate::api::CONFIG_MAP_PREFIX) {
        Some(cm) => v
            .config_map
            .as_ref()
            .filter(|c| c.name == cm)
            .map(|c| keys(c.items.as_ref())),
        None => v
            .secret
            .as_ref()
            .filter(|s| s.secret_name.as_deref() == Some(source))
            .map(|s| keys(s.items.as_ref())),
    }
}

/// The TLS Secrets of an injection with the keys each must carry, sorted by Secret.
fn tls_secrets(inj: &Injection) -> BTreeMap<&str, Vec<&str>> {
    let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (secret, key) in &inj.tls {
        let keys = m.entry(secret.as_str()).or_default();
        if !keys.contains(&key.as_str()) {
            keys.push(key.as_str());
        }
    }
    m
}

/// JSON patch operations mounting an injection's TLS Secrets and CA ConfigMaps, read-only, in
/// every container: a Secret (ConfigMap) volume with exactly the referenced keys (an existing
/// volume of the same source, from another backend, gains the missing keys), mounted at
/// [`tls_mount_path`].
fn tls_patch(spec: &PodSpec, inj: &Injection) -> Vec<Value> {
    let mut ops = vec![];
    let mut vols = spec.volumes.clone().unwrap_or_default();
    let mut vols_added = spec.volumes.is_some();
    let mut has_mounts: Vec<bool> = spec
        .containers
        .iter()
        .map(|c| c.volume_mounts.is_some())
        .collect();
    for (secret, keys) in tls_secrets(inj) {
        let name = tls_volume_name(secret);
        let volume = |items: &[TlsItem]| {
            let mut v = tls_volume_source(secret, items);
            v["name"] = json!(name);
            v
        };
        // A private key gets the mode its client needs (the stricter one wins when backends
        // share the Secret); nothing else does.
        let wanted: Vec<TlsItem> = keys
            .iter()
            .map(|k| {
                let mode = inj
                    .private_key_mode
                    .filter(|_| *k == crate::api::TLS_KEY_KEY);
                (k.to_string(), mode)
            })
            .collect();
        match vols.iter().position(|v| v.name == name) {
            Some(j) => {
                // Fail closed: a volume of this name that carries another Secret or ConfigMap is
                // not ours to change, and its mount path is not this source's.
                let Some(have) = tls_volume_keys(&vols[j], secret) else {
                    continue;
                };
                let mut merged = have.clone();
                for (k, mode) in &wanted {
                    match merged.iter_mut().find(|(h, _)| h == k) {
                        Some((_, m)) => {
                            if let Some(want) = mode {
                                *m = Some(m.map_or(*want, |have| have & *want));
                            }
                        }
                        None => merged.push((k.clone(), *mode)),
                    }
                }
                if merged != have {
                    ops.push(json!({"op": "replace", "path": format!("/spec/volumes/{j}"), "value": volume(&merged)}));
                }
            }
            None => {
                let v = volume(&wanted);
                if vols_added {
                    ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
                } else {
                    ops.push(json!({"op": "add", "path": "/spec/volumes", "value": [v]}));
                    vols_added = true;
                }
                if let Ok(v) = serde_json::from_value(v) {
                    vols.push(v);
                }
            }
        }
        for (i, c) in spec.containers.iter().enumerate() {
            let mounts = c.volume_mounts.clone().unwrap_or_default();
            if mounts.iter().any(|m| m.name == name) {
                continue;
            }
            let m = json!({"name": name, "mountPath": tls_mount_path(secret), "readOnly": true});
            if !has_mounts[i] {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/volumeMounts"), "value": [m]}));
                has_mounts[i] = true;
            } else {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/volumeMounts/-"), "value": m}));
            }
        }
    }
    ops
}

/// Whether a container already sets the variable some other way (not from our Secret).
pub fn foreign_value(c: &Container, inj: &Injection) -> bool {
    c.env.as_ref().is_some_and(|env| {
        env.iter().any(|e| {
            e.name == inj.env_var
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .is_none_or(|r| r.name != inj.secret)
        })
    })
}

/// Containers of a pod spec that get the variable (those without a foreign value, unless the
/// backend overrides).
pub fn target_containers(spec: &PodSpec, inj: &Injection) -> Vec<String> {
    spec.containers
        .iter()
        .filter(|c| inj.override_existing || !foreign_value(c, inj))
        .map(|c| c.name.clone())
        .collect()
}

/// Path of the pod template inside a workload kind.
pub fn template_path(kind: &str) -> &'static [&'static str] {
    match kind {
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => &["spec", "template"],
    }
}

/// The record a backend keeps on a workload it injects (value of [`injected_key`]).
pub fn record(inj: &Injection) -> String {
    json!({"envVar": inj.env_var, "configModule": inj.config_module}).to_string()
}

/// The server-side-apply body with which backend `inj.backend` (its own field manager) injects a
/// workload: metadata only, the record on the workload and the checksum on its pod template. The
/// webhook does the rest in each Pod, so the owner keeps every container field to itself.
pub fn workload_apply(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: &str,
    inj: &Injection,
) -> Value {
    let mut template = json!({
        "metadata": {"annotations": {checksum_key(&inj.backend): inj.checksum}},
    });
    for key in template_path(kind).iter().rev() {
        template = json!({ *key: template });
    }
    let mut body = template;
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    body["metadata"] = json!({
        "name": name,
        "namespace": namespace,
        "annotations": {injected_key(&inj.backend): record(inj)},
    });
    body
}

/// The body that removes everything a field manager injected (server-side apply of nothing).
pub fn workload_release(api_version: &str, kind: &str, name: &str, namespace: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}})
}

/// Whether a live workload already carries this injection exactly (then nothing is written).
pub fn workload_is_current(
    workload_annotations: Option<&BTreeMap<String, String>>,
    template_annotations: Option<&BTreeMap<String, String>>,
    inj: &Injection,
) -> bool {
    template_annotations.and_then(|a| a.get(&checksum_key(&inj.backend))) == Some(&inj.checksum)
        && workload_annotations.and_then(|a| a.get(&injected_key(&inj.backend)))
            == Some(&record(inj))
}

fn escape(p: &str) -> String {
    p.replace('~', "~0").replace('/', "~1")
}

/// JSON patch operations injecting into an admitted Pod. Idempotent: an already injected Pod
/// yields no operations. A user's own value wins unless the backend overrides.
pub fn pod_patch(pod: &Pod, inj: &Injection) -> Vec<Value> {
    let mut ops = vec![];
    let Some(spec) = pod.spec.as_ref() else {
        return ops;
    };
    for (i, c) in spec.containers.iter().enumerate() {
        let existing = c.env.clone().unwrap_or_default();
        let ours = env_entries(inj);
        if existing.is_empty() {
            ops.push(
                json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": ours}),
            );
        } else {
            for e in ours {
                let name = e["name"].as_str().unwrap_or_default();
                match existing.iter().position(|x| x.name == name) {
                    None => {
                        ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": e}));
                    }
                    Some(j) => {
                        let same = serde_json::to_value(&existing[j]).ok() == Some(e.clone());
                        if !same && inj.override_existing {
                            ops.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/env/{j}"), "value": e}));
                        }
                    }
                }
            }
        }
        if inj.config_module {
            let mounts = c.volume_mounts.clone().unwrap_or_default();
            if !mounts.iter().any(|m| m.name == CONFIG_VOLUME) {
                let m = json!({"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": true});
                if mounts.is_empty() {
                    ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/volumeMounts"), "value": [m]}));
                } else {
                    ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/volumeMounts/-"), "value": m}));
                }
            }
        }
    }
    if inj.config_module {
        let vols = spec.volumes.clone().unwrap_or_default();
        if !vols.iter().any(|v| v.name == CONFIG_VOLUME) {
            if vols.is_empty() {
                ops.push(
                    json!({"op": "add", "path": "/spec/volumes", "value": [config_volume(inj)]}),
                );
            } else {
                ops.push(
                    json!({"op": "add", "path": "/spec/volumes/-", "value": config_volume(inj)}),
                );
            }
        }
    }
    if !inj.tls.is_empty() {
        // Applied after the ops above in one document: compute on the Pod as they leave it.
        let mut doc = serde_json::to_value(pod).unwrap_or_default();
        let applied = serde_json::from_value::<json_patch::Patch>(Value::Array(ops.clone()))
            .ok()
            .and_then(|p| json_patch::patch(&mut doc, &p).ok())
            .and_then(|()| serde_json::from_value::<Pod>(doc).ok());
        if let Some(spec) = applied.as_ref().and_then(|p| p.spec.as_ref()) {
            ops.extend(tls_patch(spec, inj));
        }
    }
    // The stamp: this Pod went through the webhook for this backend (missed-Pod reports read it).
    let stamp = injected_key(&inj.backend);
    let annotations = pod.metadata.annotations.clone();
    let has = annotations.as_ref().and_then(|a| a.get(&stamp));
    if annotations.is_none() {
        ops.push(
            json!({"op": "add", "path": "/metadata/annotations", "value": {stamp: inj.checksum}}),
        );
    } else if has != Some(&inj.checksum) {
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(&stamp)), "value": inj.checksum}));
    }
    ops
}

/// Apply several injections, in order, to an admitted Pod: one JSON patch from the Pod as
/// admitted to the Pod with every injection. An earlier injection's variable is a foreign value
/// to a later one (which then skips it unless it overrides), so the order decides a conflict.
///
/// Returns the patch and the backends left out because an earlier one sets the same variable
/// (`overrideExisting` overrides the owner's value, never another backend's).
pub fn pod_patch_all(
    pod: &Pod,
    injections: &[Injection],
) -> Result<(Vec<Value>, Vec<String>), String> {
    let before = serde_json::to_value(pod).map_err(|e| e.to_string())?;
    let mut doc = before.clone();
    let mut current = pod.clone();
    let mut applied: Vec<&Injection> = vec![];
    let mut left_out = vec![];
    for inj in injections {
        if let Some(first) = applied.iter().find(|a| a.overlaps(inj)) {
            left_out.push(format!(
                "{} (sets {} like {}, which comes first)",
                inj.backend,
                inj.shared(first).join(", "),
                first.backend
            ));
            continue;
        }
        applied.push(inj);
        let ops = pod_patch(&current, inj);
        if ops.is_empty() {
            continue;
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops)).map_err(|e| e.to_string())?;
        json_patch::patch(&mut doc, &patch).map_err(|e| e.to_string())?;
        current = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    }
    let diff = json_patch::diff(&before, &doc);
    let ops = serde_json::to_value(diff)
        .map_err(|e| e.to_string())?
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((ops, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inj() -> Injection {
        Injection {
            backend: "b".into(),
            secret: "b-celery-result-backend".into(),
            env_var: "CELERY_RESULT_BACKEND".into(),
            config_module: false,
            override_existing: false,
            checksum: "abc".into(),
            tls: vec![],
            private_key_mode: None,
            client_env: vec![],
        }
    }

    #[test]
    fn tls_secrets_are_mounted_read_only_once_per_secret() {
        let a = Injection {
            tls: vec![
                ("redis-ca".into(), "ca.crt".into()),
                ("client".into(), "tls.crt".into()),
                ("client".into(), "tls.key".into()),
            ],
            ..inj()
        };
        let b = Injection {
            backend: "other".into(),
            env_var: "OTHER_BACKEND".into(),
            tls: vec![("redis-ca".into(), "bundle.pem".into())],
            ..inj()
        };
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}));
        let (ops, left_out) = pod_patch_all(&p, &[a.clone(), b.clone()]).unwrap();
        assert!(left_out.is_empty());
        let patched = apply(&p, &ops);
        let spec = patched.spec.as_ref().unwrap();
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 3, "data + one volume per Secret: {vols:?}");
        let ca = vols
            .iter()
            .find(|v| v.name == tls_volume_name("redis-ca"))
            .unwrap();
        let keys: Vec<_> = ca
            .secret
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["ca.crt", "bundle.pem"],
            "the shared Secret gains the second key"
        );
        for c in &spec.containers {
            let m: Vec<_> = c
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.name.starts_with("cbo-tls-"))
                .map(|m| (m.mount_path.as_str(), m.read_only))
                .collect();
            assert_eq!(
                m,
                [
                    ("/etc/celery-backend/tls/client", Some(true)),
                    ("/etc/celery-backend/tls/redis-ca", Some(true))
                ],
                "{}",
                c.name
            );
        }
        // Fail closed: a volume of the same name carrying another Secret is neither changed nor
        // mounted at this Secret's path.
        let squatter = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": tls_volume_name("redis-ca"), "secret": {"secretName": "evil", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}),
        );
        let ops = pod_patch(&squatter, &b);
        assert!(
            ops.iter()
                .all(|o| !o.to_string().contains("redis-ca") && o["op"] != "replace"),
            "{ops:?}"
        );
        // Idempotent: a Pod already carrying everything gets no TLS operation.
        let again = pod_patch(&patched, &a);
        assert!(
            again.iter().all(|o| !o.to_string().contains("cbo-tls")),
            "{again:?}"
        );
        // From the status, as the webhook reads it.
        let from_status =
            inj().with_tls_mounts(&["redis-ca/ca.crt".into(), "client/tls.key".into()]);
        assert_eq!(
            from_status.tls,
            [
                ("redis-ca".to_string(), "ca.crt".to_string()),
                ("client".to_string(), "tls.key".to_string())
            ]
        );
        // The paths are the ones the URI names.
        let t: crate::api::TlsConfig = serde_json::from_value(json!({"enabled": true,
            "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
            "clientCertificateSecretRef": {"name": "client"}}))
        .unwrap();
        assert_eq!(
            t.ca_path().unwrap(),
            format!("{}/ca.crt", tls_mount_path("redis-ca"))
        );
        assert_eq!(
            t.client_paths().1.unwrap(),
            format!("{}/tls.key", tls_mount_path("client"))
        );
    }

    /// libpq refuses a client key that group or others can read unless root owns it (then 0640):
    /// a PostgreSQL backend's `tls.key` is mounted 0640, other keys and backends keep 0644, and
    /// a volume shared with another backend is tightened, never loosened.
    #[test]
    fn a_postgresql_client_key_is_mounted_with_the_mode_libpq_accepts() {
        let spec = |engine: &str| -> CeleryResultBackendSpec {
            serde_json::from_value(json!({"database": {"external": {"engine": engine,
                "host": "db", "database": "celery", "tls": {"enabled": true,
                "clientCertificateSecretRef": {"name": "client"}}}}}))
            .unwrap()
        };
        let pg = Injection::new("pg", &spec("postgresql"), "pg-uri", "c")
            .with_tls_mounts(&["client/tls.crt".into(), "client/tls.key".into()]);
        assert_eq!(pg.private_key_mode, Some(0o640));
        let my = Injection::new("my", &spec("mysql"), "my-uri", "c")
            .with_tls_mounts(&["client/tls.crt".into(), "client/tls.key".into()]);
        assert_eq!(my.private_key_mode, None);
        let modes = |p: &Pod| -> Vec<(String, Option<i32>)> {
            p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0]
                .secret
                .as_ref()
                .unwrap()
                .items
                .as_ref()
                .unwrap()
                .iter()
                .map(|i| (i.key.clone(), i.mode))
                .collect()
        };
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        );
        let with_pg = apply(&p, &pod_patch(&p, &pg));
        assert_eq!(
            modes(&with_pg),
            [("tls.crt".into(), None), ("tls.key".into(), Some(0o640))]
        );
        // MySQL first (0644), then PostgreSQL shares the Secret: tightened in place.
        let with_my = apply(&p, &pod_patch(&p, &my));
        assert_eq!(
            modes(&with_my),
            [("tls.crt".into(), None), ("tls.key".into(), None)]
        );
        let both = apply(&with_my, &pod_patch(&with_my, &pg));
        assert_eq!(modes(&both), modes(&with_pg));
        // ...and never loosened again, nor patched twice.
        assert!(pod_patch(&both, &my).iter().all(|o| o["op"] != "replace"));
        assert!(pod_patch(&both, &pg).iter().all(|o| o["op"] != "replace"));
    }

    #[test]
    fn a_ca_config_map_is_mounted_as_a_config_map_volume_at_its_own_path() {
        let cm = "configmap:trust-bundle";
        let a = Injection {
            tls: vec![
                (cm.into(), "ca.pem".into()),
                ("client".into(), "tls.crt".into()),
            ],
            ..inj()
        };
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
        );
        let patched = apply(&p, &pod_patch(&p, &a));
        let spec = patched.spec.as_ref().unwrap();
        let vol = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == tls_volume_name(cm))
            .unwrap();
        assert!(vol.secret.is_none());
        let c = vol.config_map.as_ref().unwrap();
        assert_eq!(c.name, "trust-bundle");
        assert_eq!(c.items.as_ref().unwrap()[0].key, "ca.pem");
        assert_ne!(tls_volume_name(cm), tls_volume_name("trust-bundle"));
        let mounts: Vec<_> = spec.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert!(
            mounts.contains(&(
                "/etc/celery-backend/tls-configmaps/trust-bundle",
                Some(true)
            )) && mounts.contains(&("/etc/celery-backend/tls/client", Some(true))),
            "{mounts:?}"
        );
        // The path the URI names.
        let t: crate::api::TlsConfig = serde_json::from_value(json!({"enabled": true,
            "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}))
        .unwrap();
        assert_eq!(
            t.ca_path().unwrap(),
            format!("{}/ca.pem", tls_mount_path(cm))
        );
        // As recorded in the status and read back by the webhook.
        assert_eq!(
            inj()
                .with_tls_mounts(&["configmap:trust-bundle/ca.pem".into()])
                .tls,
            [(cm.to_string(), "ca.pem".to_string())]
        );
        // Idempotent, and a Secret volume squatting the name is not taken over.
        assert!(pod_patch(&patched, &a)
            .iter()
            .all(|o| !o.to_string().contains("cbo-tls")));
        let squatter = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": tls_volume_name(cm), "secret": {"secretName": "trust-bundle"}}]}}),
        );
        assert!(pod_patch(&squatter, &a)
            .iter()
            .all(|o| !o.to_string().contains("trust-bundle") && o["op"] != "replace"));
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn apply(p: &Pod, ops: &[Value]) -> Pod {
        let mut doc = serde_json::to_value(p).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(json!(ops)).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn checksum_moves_with_what_workers_read_only() {
        let uri: &[u8] = b"redis://x";
        let a = checksum(b"key-1", "uid-1", &[("CELERY_RESULT_BACKEND", uri)]);
        assert_eq!(a.len(), 32);
        assert_eq!(
            a,
            checksum(b"key-1", "uid-1", &[("CELERY_RESULT_BACKEND", uri)]),
            "stable: no salt of the Secret object's life"
        );
        for (what, other) in [
            (
                "content",
                checksum(
                    b"key-1",
                    "uid-1",
                    &[("CELERY_RESULT_BACKEND", b"redis://y")],
                ),
            ),
            (
                "key",
                checksum(b"key-2", "uid-1", &[("CELERY_RESULT_BACKEND", uri)]),
            ),
            (
                "backend",
                checksum(b"key-1", "uid-2", &[("CELERY_RESULT_BACKEND", uri)]),
            ),
            (
                "the config module, when read",
                checksum(
                    b"key-1",
                    "uid-1",
                    &[("CELERY_RESULT_BACKEND", uri), ("celeryconfig.py", b"x")],
                ),
            ),
        ] {
            assert_ne!(a, other, "{what} moves the checksum");
        }
        // Length-prefixed: moving bytes between key and value changes it.
        assert_ne!(
            checksum(b"k", "u", &[("ab", b"c")]),
            checksum(b"k", "u", &[("a", b"bc")])
        );
        assert_eq!(keys_read(false, []), ["CELERY_RESULT_BACKEND"]);
        assert_eq!(
            keys_read(true, []),
            ["CELERY_RESULT_BACKEND", "celeryconfig.py"]
        );
        assert_eq!(
            keys_read(false, ["CONSUL_HTTP_TOKEN"]),
            ["CELERY_RESULT_BACKEND", "CONSUL_HTTP_TOKEN"]
        );
    }

    #[test]
    fn pod_patch_injects_once_and_respects_user_values() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "env": [{"name": "OTHER", "value": "1"}]},
            {"name": "c", "image": "x", "env": [{"name": "CELERY_RESULT_BACKEND", "value": "mine"}]},
        ]}}));
        let ops = pod_patch(&p, &inj());
        let patched = apply(&p, &ops);
        let env = |i: usize| {
            patched.spec.as_ref().unwrap().containers[i]
                .env
                .clone()
                .unwrap()
        };
        assert_eq!(
            env(0)[0]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "b-celery-result-backend"
        );
        assert_eq!(env(1).len(), 2);
        assert_eq!(
            env(2)[0].value.as_deref(),
            Some("mine"),
            "the user's value wins"
        );
        assert_eq!(
            patched.metadata.annotations.as_ref().unwrap()["injected.celery.dev/b"],
            "abc",
            "stamped"
        );
        assert!(pod_patch(&patched, &inj()).is_empty(), "idempotent");
        let over = Injection {
            override_existing: true,
            ..inj()
        };
        let forced = apply(&patched, &pod_patch(&patched, &over));
        assert!(forced.spec.unwrap().containers[2].env.as_ref().unwrap()[0]
            .value
            .is_none());
    }

    #[test]
    fn client_library_variables_are_injected_by_reference() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "env": [{"name": "CONSUL_HTTP_TOKEN", "value": "own"}]},
        ]}}));
        let i = inj().with_client_env(&["CONSUL_HTTP_TOKEN".into()]);
        let patched = apply(&p, &pod_patch(&p, &i));
        let env = |c: usize| {
            patched.spec.as_ref().unwrap().containers[c]
                .env
                .clone()
                .unwrap()
        };
        let token = env(0)
            .into_iter()
            .find(|e| e.name == "CONSUL_HTTP_TOKEN")
            .unwrap();
        assert!(token.value.is_none(), "never a plain value");
        let r = token.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("b-celery-result-backend", "CONSUL_HTTP_TOKEN")
        );
        // A container's own value wins, unless the backend overrides.
        assert_eq!(env(1)[0].value.as_deref(), Some("own"));
        assert!(pod_patch(&patched, &i).is_empty(), "idempotent");
        let over = Injection {
            override_existing: true,
            ..i.clone()
        };
        let forced = apply(&patched, &pod_patch(&patched, &over));
        assert!(forced.spec.unwrap().containers[1].env.as_ref().unwrap()[0]
            .value
            .is_none());
        // Two backends setting the same variable cannot both inject one workload.
        let other = Injection {
            backend: "c".into(),
            env_var: "OTHER_BACKEND".into(),
            ..inj()
        }
        .with_client_env(&["CONSUL_HTTP_TOKEN".into()]);
        assert!(i.overlaps(&other));
        assert!(!inj().overlaps(&other));
    }

    #[test]
    fn pod_patch_with_config_module_mounts_the_file() {
        let p = pod(
            json!({"metadata": {"name": "p", "annotations": {"x": "y"}}, "spec": {"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "v", "emptyDir": {}}]}}),
        );
        let i = Injection {
            config_module: true,
            ..inj()
        };
        let patched = apply(&p, &pod_patch(&p, &i));
        let spec = patched.spec.clone().unwrap();
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 2);
        assert_eq!(
            spec.containers[0].volume_mounts.as_ref().unwrap()[0].mount_path,
            CONFIG_MOUNT
        );
        assert_eq!(
            spec.containers[0].env.as_ref().unwrap()[1].value.as_deref(),
            Some("celeryconfig")
        );
        assert_eq!(patched.metadata.annotations.as_ref().unwrap()["x"], "y");
        assert!(pod_patch(&patched, &i).is_empty());
    }

    #[test]
    fn workload_body_is_metadata_only() {
        let body = workload_apply("apps/v1", "Deployment", "w", "ns", &inj());
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "w", "namespace": "ns", "annotations": {
                    "injected.celery.dev/b": "{\"envVar\":\"CELERY_RESULT_BACKEND\",\"configModule\":false}"}},
                "spec": {"template": {"metadata": {"annotations": {"checksum.celery.dev/b": "abc"}}}},
            }),
            "no container entry, env, volume or mount: those are the owner's"
        );
        let cron = workload_apply("batch/v1", "CronJob", "w", "ns", &inj());
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
                ["checksum.celery.dev/b"],
            "abc"
        );
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(body).unwrap();
        let t = d.spec.unwrap().template;
        assert!(workload_is_current(
            d.metadata.annotations.as_ref(),
            t.metadata.as_ref().and_then(|m| m.annotations.as_ref()),
            &inj()
        ));
        let rotated = Injection {
            checksum: "def".into(),
            ..inj()
        };
        assert!(!workload_is_current(
            d.metadata.annotations.as_ref(),
            t.metadata.as_ref().and_then(|m| m.annotations.as_ref()),
            &rotated
        ));
    }

    #[test]
    fn two_backends_inject_side_by_side_and_the_first_wins_a_shared_variable() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "CELERY_RESULT_BACKEND", "value": "mine"}]},
        ]}}));
        let a = Injection {
            override_existing: true,
            ..inj()
        };
        let b = Injection {
            backend: "c".into(),
            secret: "c-celery-result-backend".into(),
            env_var: "CELERY_RESULT_BACKEND_B".into(),
            checksum: "ccc".into(),
            ..inj()
        };
        let (ops, left_out) = pod_patch_all(&p, &[a.clone(), b.clone()]).unwrap();
        assert!(left_out.is_empty());
        let patched = apply(&p, &ops);
        let env = patched.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["CELERY_RESULT_BACKEND", "CELERY_RESULT_BACKEND_B"]);
        assert!(
            env[0].value.is_none(),
            "overrideExisting replaced the owner's value in the Pod"
        );
        let ann = patched.metadata.annotations.clone().unwrap();
        assert_eq!(
            (
                ann["injected.celery.dev/b"].as_str(),
                ann["injected.celery.dev/c"].as_str()
            ),
            ("abc", "ccc")
        );
        assert!(
            pod_patch_all(&patched, &[a.clone(), b])
                .unwrap()
                .0
                .is_empty(),
            "idempotent"
        );
        // Same variable: the later one is left out, even with overrideExisting.
        let rival = Injection {
            backend: "d".into(),
            secret: "d-celery-result-backend".into(),
            override_existing: true,
            ..inj()
        };
        let (ops, left_out) = pod_patch_all(&p, &[a, rival]).unwrap();
        assert_eq!(left_out.len(), 1, "{left_out:?}");
        assert!(left_out[0].starts_with("d "), "{left_out:?}");
        let patched = apply(&p, &ops);
        let env = patched.spec.unwrap().containers[0].env.clone().unwrap();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "b-celery-result-backend"
        );
        // configModule injections overlap on CELERY_CONFIG_MODULE.
        let m1 = Injection {
            config_module: true,
            ..inj()
        };
        let m2 = Injection {
            backend: "e".into(),
            env_var: "OTHER".into(),
            config_module: true,
            ..inj()
        };
        assert!(m1.overlaps(&m2));
        assert_eq!(m1.shared(&m2), ["CELERY_CONFIG_MODULE"]);
        // A status naming something that is not a variable is not injected.
        let odd = inj().with_client_env(&["CONSUL_HTTP_TOKEN".into(), "a-b".into(), "".into()]);
        assert_eq!(odd.client_env, ["CONSUL_HTTP_TOKEN"]);
    }

    #[test]
    fn annotated_backends_come_from_checksum_keys() {
        let a: BTreeMap<String, String> = [
            ("checksum.celery.dev/orders".to_string(), "1".to_string()),
            ("checksum.celery.dev/".into(), "x".into()),
            ("injected.celery.dev/other".into(), "2".into()),
            ("celery.dev/result-backend-checksum".into(), "3".into()),
        ]
        .into();
        assert_eq!(annotated_backends(Some(&a)), ["orders"]);
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "worker".to_string()),
            ("tier".into(), "celery".into()),
        ]
        .into();
        let sel: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "worker"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["celery"]}, {"key": "skip", "operator": "DoesNotExist"}]})).unwrap();
        assert!(selector_matches(&sel, &labels));
        let no: LabelSelector = serde_json::from_value(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["celery"]}]})).unwrap();
        assert!(!selector_matches(&no, &labels));
        assert!(
            !selector_matches(&LabelSelector::default(), &labels),
            "empty selects nothing"
        );
    }
}
