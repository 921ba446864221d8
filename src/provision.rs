//! Pure managed-mode rendering: the StatefulSet, Services and credentials a provisioned store needs,
//! and the external-equivalent spec the URI builder turns into Celery's `result_backend`. What is
//! particular to each store (its `Profile`, container and external spec) lives in its family's
//! file as an implementation of [`Managed`].

use serde_json::{json, Value};

use crate::api::{BasicAuth, CeleryResultBackendSpec, DeletionPolicy, ManagedCommon, SecretKeyRef};

pub mod images;
pub use crate::api::footprint::{BACKEND_LABEL, PASSWORD_KEY, USERNAME_KEY};
pub use images::StoreImages;

/// Everything needed to provision one backend. Pure data; the controller applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The store's key among the operator-wide store images (`redis`, `postgresql`, ...).
    pub store: &'static str,
    /// Name of the StatefulSet (and of the client Service).
    pub statefulset_name: String,
    pub headless_service_name: String,
    pub credentials_secret_name: String,
    pub username: String,
    pub deletion_policy: DeletionPolicy,
    /// Manifests to server-side apply, in order (Services, then StatefulSet). No secret values.
    pub objects: Vec<Value>,
    /// The spec as if the user had written `external` pointing at the provisioned store.
    pub external_spec: CeleryResultBackendSpec,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("spec has no managed backend")]
    NotManaged,
    /// The spec breaks a rule of the CRD's schema (`crate::uri::validate`), naming the field.
    #[error(transparent)]
    Invalid(#[from] crate::uri::BuildError),
}

/// A DNS-1035 label `<name>-<suffix>` of at most 63 characters. Names that are too long or not
/// DNS-1035 (dots, leading digit) are shortened and given a stable hash so they stay unique.
pub fn child_name(name: &str, suffix: &str) -> String {
    child_name_within(name, suffix, 63)
}

/// FNV-1a of `s`, stable across releases (std's hasher is not).
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// A backend name as a label value (at most 63 characters, alphanumeric at both ends:
/// validation.IsValidLabelValue). Names up to 63 characters (all that admission takes now) are
/// used as they are; a longer one, admitted before that rule, is truncated and given a stable
/// hash (`<first 54 characters>-<8 hex digits>`) so its URI Secret can still be written.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let mut base: String = name.chars().take(54).collect();
    while base.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        base.pop();
    }
    format!("{base}-{:08x}", fnv1a(name))
}

/// The longest StatefulSet name whose Pods can be created: the StatefulSet controller labels each
/// Pod `controller-revision-hash: <statefulset name>-<10-character hash>`, and a label value has
/// at most 63 characters (k8s.io/kubernetes pkg/controller/history, validation.IsValidLabelValue).
pub const STATEFULSET_NAME_MAX: usize = 52;

/// [`child_name`] limited to `max` characters (at least `suffix.len() + 12`), e.g.
/// [`STATEFULSET_NAME_MAX`] for StatefulSets.
pub fn child_name_within(name: &str, suffix: &str, max: usize) -> String {
    let plain = format!("{name}-{suffix}");
    let ok = plain.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        return plain;
    }
    let h = fnv1a(name);
    let mut base: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base = format!("b-{base}");
    }
    let keep = max.saturating_sub(suffix.len() + 10).max(1);
    base.truncate(keep);
    let base = base.trim_end_matches('-');
    format!("{base}-{h:08x}-{suffix}")
}

/// What a provisionable store is: its image defaults, port, user, data path and sizing.
/// Each provisionable family declares one (`backends/<family>/mod.rs`).
pub(crate) struct Profile {
    /// The store's key among the operator-wide store images: `storeImages.<key>` in the chart,
    /// `CBO_STORE_IMAGE_<KEY>`, `--store-image <key>=IMAGE`.
    pub(crate) store: &'static str,
    pub(crate) component: &'static str,
    pub(crate) default_image: &'static str,
    pub(crate) default_version: &'static str,
    pub(crate) port: u16,
    pub(crate) port_name: &'static str,
    pub(crate) uid: i64,
    pub(crate) data_path: &'static str,
    pub(crate) username: &'static str,
    pub(crate) memory: &'static str,
    pub(crate) read_only_root: bool,
}

/// What the plan knows when a family renders its container and its external spec.
pub(crate) struct Render {
    /// The profile being rendered.
    pub(crate) profile: &'static Profile,
    /// The client Service's DNS name (`<statefulset>.<namespace>.svc`).
    pub(crate) host: String,
    /// Name of the generated credentials Secret.
    pub(crate) credentials: String,
    /// The database (PostgreSQL) or bucket (S3) the managed block asks for, if any.
    pub(crate) name: Option<String>,
}

impl Render {
    /// An environment variable from the credentials Secret's password.
    pub(crate) fn password_env(&self, var: &str) -> Value {
        secret_env(var, &self.credentials, PASSWORD_KEY)
    }
    /// An environment variable from the credentials Secret's user name.
    pub(crate) fn username_env(&self, var: &str) -> Value {
        secret_env(var, &self.credentials, USERNAME_KEY)
    }
    /// A reference to a key of the credentials Secret.
    pub(crate) fn credential(&self, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: self.credentials.clone(),
            key: key.into(),
        }
    }
    /// Password authentication from the credentials Secret, with the profile's user when
    /// `with_user`.
    pub(crate) fn auth(&self, with_user: bool) -> BasicAuth {
        BasicAuth {
            username: with_user.then(|| self.profile.username.to_string()),
            username_secret_ref: None,
            password_secret_ref: Some(self.credential(PASSWORD_KEY)),
        }
    }
}

/// The store-specific part of a managed StatefulSet's container.
pub(crate) struct ContainerParts {
    /// `command` (`Value::Null`: the image's entrypoint).
    pub(crate) command: Value,
    pub(crate) env: Vec<Value>,
    pub(crate) readiness: Value,
    /// A postStart hook (creating an index or bucket), if any.
    pub(crate) post_start: Option<Value>,
    /// Extra writable emptyDir mounts besides `/tmp` (`(volume, mountPath)`).
    pub(crate) scratch: Vec<(&'static str, &'static str)>,
}

/// What a provisionable backend family contributes to the plan, implemented in its own file:
/// the profile, the container, and the external spec equivalent to the store it provisions.
pub(crate) trait Managed {
    /// The managed block's common settings and the name it asks for (database, bucket); `None`
    /// when the backend is external.
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)>;
    /// Command, environment, probes and hooks of the store's container.
    fn container(&self, r: &Render) -> ContainerParts;
    /// Set the external block of `out` pointing at the provisioned store (the builder makes the
    /// URI from it, exactly as for a store the user runs).
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec);
}

/// The profile of the store a provisionable family runs (rows marked `managed` in
/// `api::kinds` must implement it: `backends::managed_profiles` and `Backend::managed_profile`
/// are generated from them).
pub(crate) trait ManagedProfile {
    const PROFILE: &'static Profile;
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// Render the plan for a managed backend. `None`-free: every default is filled in here.
///
/// `images` are the operator-wide image settings: the container image follows the precedence in
/// [`images`] (the backend's `managed.image`, then the operator's per-store image, then the
/// registry prefix applied to the default image, then the default), and `images.pull_secrets`
/// become the Pod template's `imagePullSecrets` (left out when empty, so `StoreImages::default()`
/// renders exactly what the operator rendered before these settings existed).
pub fn plan(
    name: &str,
    namespace: &str,
    spec: &CeleryResultBackendSpec,
    images: &StoreImages,
) -> Result<Plan, PlanError> {
    let backend = crate::uri::validate(spec)?;
    let family = backend.managed_family().ok_or(PlanError::NotManaged)?;
    let profile = backend.managed_profile().ok_or(PlanError::NotManaged)?;
    let (common, extra) = family.managed().ok_or(PlanError::NotManaged)?;
    let sts = child_name_within(name, profile.component, STATEFULSET_NAME_MAX);
    let headless = child_name(name, &format!("{}-hl", profile.component));
    let creds = child_name(name, "credentials");
    let host = format!("{sts}.{namespace}.svc");
    let image = images.resolve(
        profile.store,
        common.image.as_deref(),
        common.version.as_deref(),
        profile.default_image,
        profile.default_version,
    );
    let labels = json!({
        "app.kubernetes.io/name": profile.component,
        "app.kubernetes.io/instance": label_value(name),
        "app.kubernetes.io/component": "result-backend",
        "app.kubernetes.io/managed-by": crate::api::footprint::FIELD_MANAGER,
        BACKEND_LABEL: label_value(name),
    });
    let selector = json!({
        "app.kubernetes.io/name": profile.component,
        "app.kubernetes.io/instance": label_value(name),
    });
    let render = Render {
        profile,
        host,
        credentials: creds.clone(),
        name: extra,
    };

    // Store-specific container details (the family's file). Scripts read credentials from the
    // environment, never argv literals.
    let ContainerParts {
        command,
        env,
        readiness,
        post_start,
        scratch,
    } = family.container(&render);
    let mut tmp_mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"})];
    let mut volumes = vec![json!({"name": "tmp", "emptyDir": {}})];
    for (volume, path) in scratch {
        tmp_mounts.push(json!({"name": volume, "mountPath": path}));
        volumes.push(json!({"name": volume, "emptyDir": {}}));
    }
    let mut mounts = vec![json!({"name": "data", "mountPath": profile.data_path})];
    mounts.extend(tmp_mounts);
    let resources = match &common.resources {
        Some(r) => serde_json::to_value(r).unwrap_or(Value::Null),
        None => json!({"requests": {"cpu": "100m", "memory": profile.memory}}),
    };
    let mut container = json!({
        "name": profile.component,
        "image": image,
        "ports": [{"name": profile.port_name, "containerPort": profile.port, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        "readinessProbe": merge(readiness.clone(), json!({"periodSeconds": 10, "timeoutSeconds": 5})),
        "livenessProbe": {"tcpSocket": {"port": profile.port}, "initialDelaySeconds": 30, "periodSeconds": 20},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": profile.read_only_root,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if !command.is_null() {
        container["command"] = command;
    }
    if let Some(cmd) = post_start {
        container["lifecycle"] = json!({"postStart": {"exec": {"command": cmd}}});
    }
    let storage = common.storage.clone().unwrap_or_default();
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size.clone().unwrap_or_else(|| "1Gi".into())}},
    });
    if let Some(class) = &storage.storage_class_name {
        claim_spec["storageClassName"] = json!(class);
    }
    let policy = common.deletion_policy.unwrap_or_default();
    let when_deleted = match policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": profile.uid,
            "runAsGroup": profile.uid,
            "fsGroup": profile.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    });
    if !images.pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = images
            .pull_secrets
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
    }
    let statefulset = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": sts, "namespace": namespace, "labels": labels},
        "spec": {
            "serviceName": headless,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data", "labels": selector},
                "spec": claim_spec,
            }],
        },
    });
    let port = json!([{"name": profile.port_name, "port": profile.port, "targetPort": profile.port_name, "protocol": "TCP"}]);
    let client_svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": sts, "namespace": namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": selector, "ports": port},
    });
    let headless_svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": headless, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector, "ports": port},
    });

    let mut external = CeleryResultBackendSpec {
        result_expires: spec.result_expires.clone(),
        timezone: spec.timezone.clone(),
        enable_utc: spec.enable_utc,
        injection: spec.injection.clone(),
        health_check: spec.health_check.clone(),
        ..Default::default()
    };
    family.external(&render, &mut external);
    Ok(Plan {
        store: profile.store,
        statefulset_name: sts,
        headless_service_name: headless,
        credentials_secret_name: creds,
        username: profile.username.into(),
        deletion_policy: policy,
        objects: vec![headless_svc, client_svc, statefulset],
        external_spec: external,
    })
}

/// Shallow merge of two JSON objects (b wins).
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(ao), Value::Object(bo)) = (a.as_object_mut(), b) {
        for (k, v) in bo {
            ao.insert(k, v);
        }
    }
    a
}

/// A random password of 32 characters from `[A-Za-z0-9]`: URI-safe, shell-safe, about 190 bits.
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Whether a StatefulSet has caught up with its spec and has all replicas ready.
pub fn statefulset_ready(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> (bool, String) {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let gen = sts.metadata.generation.unwrap_or(0);
    let Some(st) = &sts.status else {
        return (false, format!("0/{want} replicas ready"));
    };
    let ready = st.ready_replicas.unwrap_or(0);
    let observed = st.observed_generation.unwrap_or(0);
    if observed < gen {
        return (
            false,
            format!("StatefulSet controller has not observed generation {gen} yet"),
        );
    }
    (ready >= want, format!("{ready}/{want} replicas ready"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CeleryResultBackend;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;

    fn spec(yaml: &str) -> CeleryResultBackendSpec {
        let crb: CeleryResultBackend = serde_norway::from_str(yaml).unwrap();
        crb.spec
    }

    fn all_kinds() -> Vec<(&'static str, CeleryResultBackendSpec)> {
        vec![
            ("redis", spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {redis: {managed: {}}}")),
            ("postgresql", spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {database: {managed: {database: results}}}")),
            ("mongodb", spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {mongodb: {managed: {}}}")),
            ("elasticsearch", spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {elasticsearch: {managed: {}}}")),
            ("minio", spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {s3: {managed: {bucket: my-bucket}}}")),
        ]
    }

    #[test]
    fn every_store_renders_typed_objects_with_a_restrictive_security_context() {
        for (component, s) in all_kinds() {
            let p = plan("results", "team-a", &s, &StoreImages::default()).unwrap();
            assert_eq!(p.statefulset_name, format!("results-{component}"));
            let sts: StatefulSet = serde_json::from_value(p.objects[2].clone()).unwrap();
            let _: Service = serde_json::from_value(p.objects[0].clone()).unwrap();
            let _: Service = serde_json::from_value(p.objects[1].clone()).unwrap();
            let spec = sts.spec.unwrap();
            assert_eq!(
                spec.service_name.as_deref(),
                Some(p.headless_service_name.as_str())
            );
            let pod = spec.template.spec.unwrap();
            let psc = pod.security_context.unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
            let c = &pod.containers[0];
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
            assert!(c.resources.as_ref().unwrap().requests.is_some());
            assert!(c.readiness_probe.is_some());
            // Credentials only by reference: no literal value of a password-ish variable.
            for e in c.env.clone().unwrap_or_default() {
                if e.name.contains("PASSWORD") {
                    assert!(
                        e.value.is_none(),
                        "{component}: {} must come from the Secret",
                        e.name
                    );
                    assert_eq!(
                        e.value_from.unwrap().secret_key_ref.unwrap().name,
                        p.credentials_secret_name
                    );
                }
            }
            assert_eq!(
                spec.volume_claim_templates.unwrap()[0]
                    .metadata
                    .name
                    .as_deref(),
                Some("data")
            );
            let rendered = serde_json::to_string(&p.objects).unwrap();
            assert!(!rendered.contains("password\":\""), "{component}");
        }
    }

    #[test]
    fn external_equivalent_builds_a_uri_pointing_at_the_service() {
        for (component, s) in all_kinds() {
            let p = plan("results", "team-a", &s, &StoreImages::default()).unwrap();
            let mut secrets = crate::uri::SecretValues::new();
            secrets.insert(
                p.credentials_secret_name.clone(),
                [
                    (USERNAME_KEY.to_string(), p.username.clone()),
                    (PASSWORD_KEY.to_string(), "Secr3t".to_string()),
                ]
                .into(),
            );
            let cfg = crate::uri::build(&p.external_spec, &secrets).unwrap();
            let host = format!("results-{component}.team-a.svc");
            let expect = match component {
                "redis" => format!("redis://:Secr3t@{host}:6379/0"),
                "postgresql" => {
                    format!("db+postgresql+psycopg2://celery:Secr3t@{host}:5432/results")
                }
                "mongodb" => {
                    format!("mongodb://celery:Secr3t@{host}:27017/celery?authSource=admin")
                }
                "elasticsearch" => {
                    format!("elasticsearch+http://elastic:Secr3t@{host}:9200/celery")
                }
                _ => "s3://".to_string(),
            };
            assert_eq!(cfg.uri, expect, "{component}");
            if component == "minio" {
                let settings = format!("{:?}", cfg.settings);
                assert!(settings.contains("my-bucket"), "{settings}");
                assert!(
                    settings.contains(&format!("http://{host}:9000")),
                    "{settings}"
                );
            }
        }
    }

    #[test]
    fn provisioned_stores_never_opt_in_to_injection() {
        for (_, s) in all_kinds() {
            let p = plan("results", "ns", &s, &StoreImages::default()).unwrap();
            for o in &p.objects {
                let labels: std::collections::BTreeMap<String, String> =
                    serde_json::from_value(o["metadata"]["labels"].clone()).unwrap();
                assert!(
                    !crate::inject::workload_wants("results", &s, &labels),
                    "{labels:?}"
                );
            }
        }
    }

    #[test]
    fn deletion_policy_maps_to_claim_retention() {
        let s = spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {redis: {managed: {deletionPolicy: Delete, storage: {size: 3Gi, storageClassName: fast}}}}");
        let p = plan("r", "ns", &s, &StoreImages::default()).unwrap();
        assert_eq!(p.deletion_policy, DeletionPolicy::Delete);
        let sts = &p.objects[2]["spec"];
        assert_eq!(
            sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Delete"
        );
        assert_eq!(
            sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "3Gi"
        );
        assert_eq!(
            sts["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        let d = plan("r", "ns", &all_kinds()[0].1, &StoreImages::default()).unwrap();
        assert_eq!(
            d.objects[2]["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
    }

    #[test]
    fn image_and_version() {
        let s = spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {database: {managed: {version: '16'}}}");
        let p = plan("r", "ns", &s, &StoreImages::default()).unwrap();
        assert_eq!(
            p.objects[2]["spec"]["template"]["spec"]["containers"][0]["image"],
            "docker.io/library/postgres:16"
        );
        let s = spec("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec: {redis: {managed: {image: 'registry.local/redis:7', version: '6'}}}");
        let p = plan("r", "ns", &s, &StoreImages::default()).unwrap();
        assert_eq!(
            p.objects[2]["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.local/redis:7"
        );
    }

    fn image_of(p: &Plan) -> &str {
        p.objects[2]["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
    }

    #[test]
    fn operator_wide_images_follow_the_precedence() {
        let m = |body: &str| {
            spec(&format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: r}}\nspec: {body}"))
        };
        let prefix = StoreImages {
            registry: Some("registry.corp/mirror".into()),
            ..Default::default()
        };
        let per_store = StoreImages {
            registry: Some("registry.corp/mirror".into()),
            images: [
                ("redis", "cbo.local/redis:7.0-abc"),
                ("postgresql", "cbo.local/postgres:15-def"),
                ("mongodb", "cbo.local/ferretdb:1.24"),
                ("elasticsearch", "cbo.local/opensearch:2.19"),
                ("s3", "cbo.local/s3:1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            pull_secrets: vec![],
        };
        let none = StoreImages::default();
        #[rustfmt::skip]
        let table: Vec<(&str, &StoreImages, &str)> = vec![
            // 1. the backend's own image wins over everything.
            ("{redis: {managed: {image: 'mine/redis:6', version: '5'}}}", &per_store, "mine/redis:6"),
            ("{redis: {managed: {image: 'mine/redis:6'}}}", &prefix, "mine/redis:6"),
            // 2. then the operator's per-store image, as is (version does not retag it).
            ("{redis: {managed: {}}}", &per_store, "cbo.local/redis:7.0-abc"),
            ("{redis: {managed: {version: '6.2'}}}", &per_store, "cbo.local/redis:7.0-abc"),
            ("{database: {managed: {}}}", &per_store, "cbo.local/postgres:15-def"),
            ("{mongodb: {managed: {}}}", &per_store, "cbo.local/ferretdb:1.24"),
            ("{elasticsearch: {managed: {}}}", &per_store, "cbo.local/opensearch:2.19"),
            ("{s3: {managed: {}}}", &per_store, "cbo.local/s3:1"),
            // 3. then the registry prefix on the default image, tagged with the version if given.
            ("{redis: {managed: {}}}", &prefix, "registry.corp/mirror/redis:7.4"),
            ("{redis: {managed: {version: '6.2'}}}", &prefix, "registry.corp/mirror/redis:6.2"),
            ("{database: {managed: {version: '16'}}}", &prefix, "registry.corp/mirror/postgres:16"),
            ("{mongodb: {managed: {}}}", &prefix, "registry.corp/mirror/mongo:8.0"),
            ("{elasticsearch: {managed: {}}}", &prefix, "registry.corp/mirror/elasticsearch:8.19.3"),
            ("{s3: {managed: {}}}", &prefix, "registry.corp/mirror/minio:RELEASE.2025-09-07T16-13-09Z"),
            // 4. then the default.
            ("{redis: {managed: {}}}", &none, "docker.io/library/redis:7.4"),
            ("{database: {managed: {}}}", &none, "docker.io/library/postgres:17"),
            ("{mongodb: {managed: {version: '7.0'}}}", &none, "docker.io/library/mongo:7.0"),
            ("{elasticsearch: {managed: {}}}", &none, "docker.elastic.co/elasticsearch/elasticsearch:8.19.3"),
            ("{s3: {managed: {}}}", &none, "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"),
        ];
        for (body, images, want) in table {
            let p = plan("r", "ns", &m(body), images).unwrap();
            assert_eq!(image_of(&p), want, "{body} with {images:?}");
        }
    }

    #[test]
    fn pull_secrets_go_on_every_store_pod_template_and_are_drift() {
        let images = StoreImages {
            pull_secrets: vec!["corp-pull".into(), "mirror-pull".into()],
            ..Default::default()
        };
        for (component, s) in all_kinds() {
            let p = plan("results", "ns", &s, &images).unwrap();
            let sts: StatefulSet = serde_json::from_value(p.objects[2].clone()).unwrap();
            let pod = sts.spec.unwrap().template.spec.unwrap();
            let names: Vec<String> = pod
                .image_pull_secrets
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(names, ["corp-pull", "mirror-pull"], "{component}");
            // Without pull secrets the field is absent: the manifest (and its applied-hash) is
            // what it was before the setting existed.
            let d = plan("results", "ns", &s, &StoreImages::default()).unwrap();
            let tpl = &d.objects[2]["spec"]["template"]["spec"];
            assert!(tpl.get("imagePullSecrets").is_none(), "{component}");
            // Drift detection sees a pull secret removed from the live object, and does not
            // mistake the API server's extra fields for drift.
            let desired = &p.objects[2];
            let mut live = desired.clone();
            live["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
            assert_eq!(crate::drift::first_drift(desired, &live), None);
            live["spec"]["template"]["spec"]["imagePullSecrets"] = json!([{"name": "corp-pull"}]);
            assert_eq!(
                crate::drift::first_drift(desired, &live).as_deref(),
                Some("/spec/template/spec/imagePullSecrets/1")
            );
            // ... and an image changed by hand.
            let mut live = desired.clone();
            live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:1");
            assert_eq!(
                crate::drift::first_drift(desired, &live).as_deref(),
                Some("/spec/template/spec/containers/0")
            );
        }
    }

    #[test]
    fn label_values_fit_whatever_the_name() {
        assert_eq!(label_value("results"), "results");
        let n63 = "a".repeat(63);
        assert_eq!(label_value(&n63), n63);
        for n in [
            "a".repeat(64),
            format!("{}.b", "a".repeat(60)),
            format!("{}-{}", "a".repeat(53), "b".repeat(100)),
            "x".repeat(253),
        ] {
            let v = label_value(&n);
            assert!(v.len() <= 63, "{v}");
            assert!(
                v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{v}"
            );
            assert!(v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        }
        assert_ne!(label_value(&"x".repeat(64)), label_value(&"x".repeat(65)));
    }

    #[test]
    fn child_names_are_dns_labels() {
        assert_eq!(child_name("abc", "redis"), "abc-redis");
        for n in ["a.b.c", "9lives", &"x".repeat(253)] {
            let c = child_name(n, "credentials");
            assert!(c.len() <= 63, "{c}");
            assert!(c.starts_with(|ch: char| ch.is_ascii_lowercase()), "{c}");
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
                "{c}"
            );
            assert!(c.ends_with("-credentials"));
        }
        assert_ne!(
            child_name(&"x".repeat(100), "s"),
            child_name(&"x".repeat(101), "s")
        );
        // A 60-character backend: the StatefulSet name leaves room for the revision-hash label.
        let n60 = "b".repeat(60);
        let sts = child_name_within(&n60, "postgresql", STATEFULSET_NAME_MAX);
        assert!(sts.len() <= STATEFULSET_NAME_MAX, "{sts}");
        assert!(format!("{sts}-0123456789").len() <= 63);
        assert_eq!(child_name_within("abc", "redis", 52), "abc-redis");
    }

    #[test]
    fn generated_passwords_are_long_and_uri_safe() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn readiness_follows_the_statefulset_status() {
        let mut sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "x", "generation": 2},
            "spec": {"replicas": 1, "serviceName": "x", "selector": {}, "template": {}},
        }))
        .unwrap();
        assert!(!statefulset_ready(&sts).0);
        sts.status = serde_json::from_value(
            json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 1}),
        )
        .unwrap();
        assert!(!statefulset_ready(&sts).0, "stale generation");
        sts.status = serde_json::from_value(
            json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 2}),
        )
        .unwrap();
        assert!(statefulset_ready(&sts).0);
    }
}
