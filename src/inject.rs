//! Pure injection logic: which workloads and Pods opt in, the checksum that rolls workers, the
//! server-side-apply body for a pod template and the JSON patch for an admitted Pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::CeleryResultBackendSpec;

/// Label naming the backend a workload or Pod wants (opt-in).
pub const OPT_IN_LABEL: &str = "celery.dev/result-backend";
/// Annotation naming the namespace of the wanted backend (only the Pod's own namespace is served).
pub const NAMESPACE_ANNOTATION: &str = "celery.dev/result-backend-namespace";
/// Pod-template annotation with the checksum of the URI Secret's content.
pub const CHECKSUM_ANNOTATION: &str = "celery.dev/result-backend-checksum";
/// Workload annotation recording what was injected (JSON), so opt-out removes exactly that.
pub const RECORD_ANNOTATION: &str = "celery.dev/injected";
/// Name of the volume carrying `celeryconfig.py`.
pub const CONFIG_VOLUME: &str = "celery-result-backend";
/// Where `celeryconfig.py` is mounted.
pub const CONFIG_MOUNT: &str = "/etc/celery-result-backend";
/// Key of the per-Secret random salt mixed into the checksum (a checksum of a low-entropy
/// password could otherwise be brute-forced from a Deployment annotation).
pub const SALT_KEY: &str = "checksum-salt";

/// What to inject, derived from the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub backend: String,
    pub secret: String,
    pub env_var: String,
    pub config_module: bool,
    pub override_existing: bool,
    pub checksum: String,
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
            env_var: inj
                .env_var
                .unwrap_or_else(|| crate::controller::URI_KEY.to_string()),
            config_module: inj.config_module.unwrap_or(false),
            override_existing: inj.override_existing.unwrap_or(false),
            checksum: checksum.into(),
        }
    }
}

/// Checksum of a Secret's data (sorted by key), salted; the salt key itself is excluded.
pub fn checksum(data: &BTreeMap<String, ByteString>) -> String {
    let mut h = Sha256::new();
    if let Some(salt) = data.get(SALT_KEY) {
        h.update(&salt.0);
    }
    for (k, v) in data {
        if k == SALT_KEY {
            continue;
        }
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    let digest = h.finalize();
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
        "valueFrom": {"secretKeyRef": {"name": inj.secret, "key": crate::controller::URI_KEY}},
    })];
    if inj.config_module {
        env.push(json!({"name": "CELERY_CONFIG_MODULE", "value": "celeryconfig"}));
    }
    env
}

fn config_volume(inj: &Injection) -> Value {
    json!({"name": CONFIG_VOLUME, "secret": {"secretName": inj.secret, "items": [{"key": crate::controller::CONFIG_KEY, "path": "celeryconfig.py"}]}})
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

/// JSON patch turning a container's own value of the variable into the reference, for
/// `overrideExisting` on a workload: server-side apply alone would leave the other manager's
/// `value` next to the applied `valueFrom`, which the API server rejects. Each replaced entry is
/// guarded by a `test` of exactly what was read.
pub fn override_patch(kind: &str, spec: &PodSpec, inj: &Injection) -> Vec<Value> {
    let base = format!("/{}/spec/containers", template_path(kind).join("/"));
    let mut ops = vec![];
    for (ci, c) in spec.containers.iter().enumerate() {
        for (ei, e) in c.env.iter().flatten().enumerate() {
            let ours = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == inj.secret);
            if e.name != inj.env_var || (ours && e.value.is_none()) {
                continue;
            }
            let path = format!("{base}/{ci}/env/{ei}");
            ops.push(json!({"op": "test", "path": path, "value": e}));
            ops.push(json!({"op": "replace", "path": path, "value": env_entries(inj)[0]}));
        }
    }
    ops
}

/// Path of the pod template inside a workload kind.
pub fn template_path(kind: &str) -> &'static [&'static str] {
    match kind {
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => &["spec", "template"],
    }
}

/// The server-side-apply body that injects into a workload's pod template: only the fields the
/// operator owns (env entries, optional volume/mount, checksum and record annotations).
pub fn workload_apply(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: &str,
    containers: &[String],
    inj: &Injection,
) -> Value {
    let record = json!({"backend": inj.backend, "containers": containers, "configModule": inj.config_module});
    let mut pod_spec = json!({
        "containers": containers.iter().map(|c| {
            let mut container = json!({"name": c, "env": env_entries(inj)});
            if inj.config_module {
                container["volumeMounts"] = json!([{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": true}]);
            }
            container
        }).collect::<Vec<_>>(),
    });
    if inj.config_module {
        pod_spec["volumes"] = json!([config_volume(inj)]);
    }
    let mut template = json!({
        "metadata": {"annotations": {CHECKSUM_ANNOTATION: inj.checksum}},
        "spec": pod_spec,
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
        "annotations": {RECORD_ANNOTATION: record.to_string()},
    });
    body
}

/// The body that removes everything the operator injected (server-side apply of nothing).
pub fn workload_release(api_version: &str, kind: &str, name: &str, namespace: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}})
}

/// Whether a live pod template already carries this injection exactly (then nothing is written).
pub fn template_is_current(
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    containers: &[String],
    inj: &Injection,
) -> bool {
    if annotations.and_then(|a| a.get(CHECKSUM_ANNOTATION)) != Some(&inj.checksum) {
        return false;
    }
    containers.iter().all(|name| {
        spec.containers.iter().any(|c| {
            &c.name == name
                && c.env.as_ref().is_some_and(|env| {
                    env.iter().any(|e| {
                        e.name == inj.env_var
                            && e.value_from
                                .as_ref()
                                .and_then(|v| v.secret_key_ref.as_ref())
                                .is_some_and(|r| {
                                    r.name == inj.secret && r.key == crate::controller::URI_KEY
                                })
                    })
                })
                && (!inj.config_module
                    || c.volume_mounts
                        .as_ref()
                        .is_some_and(|m| m.iter().any(|m| m.name == CONFIG_VOLUME)))
        })
    })
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
    let mut touched = false;
    for (i, c) in spec.containers.iter().enumerate() {
        let existing = c.env.clone().unwrap_or_default();
        let ours = env_entries(inj);
        if existing.is_empty() {
            ops.push(
                json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": ours}),
            );
            touched = true;
        } else {
            for e in ours {
                let name = e["name"].as_str().unwrap_or_default();
                match existing.iter().position(|x| x.name == name) {
                    None => {
                        ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": e}));
                        touched = true;
                    }
                    Some(j) => {
                        let same = serde_json::to_value(&existing[j]).ok() == Some(e.clone());
                        if !same && inj.override_existing {
                            ops.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/env/{j}"), "value": e}));
                            touched = true;
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
                touched = true;
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
            touched = true;
        }
    }
    let annotations = pod.metadata.annotations.clone();
    let has = annotations
        .as_ref()
        .and_then(|a| a.get(CHECKSUM_ANNOTATION));
    if touched || has.is_none() {
        if annotations.is_none() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {CHECKSUM_ANNOTATION: inj.checksum}}));
        } else if has != Some(&inj.checksum) {
            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(CHECKSUM_ANNOTATION)), "value": inj.checksum}));
        }
    }
    ops
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
        }
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
    fn checksum_moves_with_content_only() {
        let mut d: BTreeMap<String, ByteString> = BTreeMap::new();
        d.insert(
            "CELERY_RESULT_BACKEND".into(),
            ByteString(b"redis://x".to_vec()),
        );
        d.insert(SALT_KEY.into(), ByteString(b"salt1".to_vec()));
        let a = checksum(&d);
        assert_eq!(a, checksum(&d.clone()));
        let mut e = d.clone();
        e.insert(
            "CELERY_RESULT_BACKEND".into(),
            ByteString(b"redis://y".to_vec()),
        );
        assert_ne!(a, checksum(&e));
        let mut f = d.clone();
        f.insert(SALT_KEY.into(), ByteString(b"salt2".to_vec()));
        assert_ne!(a, checksum(&f), "the salt changes the checksum");
        assert_eq!(a.len(), 32);
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
            patched.metadata.annotations.as_ref().unwrap()[CHECKSUM_ANNOTATION],
            "abc"
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
    fn workload_body_touches_only_injected_fields() {
        let body = workload_apply(
            "apps/v1",
            "Deployment",
            "w",
            "ns",
            &["worker".into()],
            &inj(),
        );
        let d: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(body.clone()).unwrap();
        let t = d.spec.unwrap().template;
        assert_eq!(
            t.metadata.unwrap().annotations.unwrap()[CHECKSUM_ANNOTATION],
            "abc"
        );
        let c = &t.spec.unwrap().containers[0];
        assert_eq!(c.name, "worker");
        assert!(c.image.is_none(), "nothing else is claimed");
        let cron = workload_apply("batch/v1", "CronJob", "w", "ns", &["worker".into()], &inj());
        assert!(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].is_array());
        let record: Value = serde_json::from_str(
            body["metadata"]["annotations"][RECORD_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(record["backend"], "b");
    }

    #[test]
    fn override_patch_replaces_only_foreign_values() {
        let mut i = inj();
        i.override_existing = true;
        let spec: PodSpec = serde_json::from_value(json!({"containers": [
            {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "CELERY_RESULT_BACKEND", "value": "redis://mine"}]},
            {"name": "b", "env": [{"name": "CELERY_RESULT_BACKEND", "valueFrom": {"secretKeyRef": {"name": i.secret, "key": "CELERY_RESULT_BACKEND"}}}]},
        ]}))
        .unwrap();
        let ops = override_patch("CronJob", &spec, &i);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(
            ops[0]["path"],
            "/spec/jobTemplate/spec/template/spec/containers/0/env/1"
        );
        assert_eq!(ops[0]["op"], "test");
        assert_eq!(ops[0]["value"]["value"], "redis://mine");
        assert_eq!(ops[1]["op"], "replace");
        assert!(ops[1]["value"]["value"].is_null());
        assert_eq!(
            ops[1]["value"]["valueFrom"]["secretKeyRef"]["name"],
            i.secret
        );
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
