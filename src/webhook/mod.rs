//! The mutating admission webhook for Pods: TLS server (every replica), certificate and
//! MutatingWebhookConfiguration upkeep (leader only). The hot path reads a local cache only.

pub mod certs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

use crate::api::CeleryResultBackend;
use crate::inject::{self, Injection, NAMESPACE_ANNOTATION, OPT_IN_LABEL};
use crate::telemetry::Metrics;
use kube::ResourceExt;

/// How the webhook is exposed and configured.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Where the TLS server listens.
    pub listen: SocketAddr,
    /// How the API server reaches it: a URL (out-of-cluster) or a Service.
    pub endpoint: Endpoint,
    /// Name of the (cluster-scoped) MutatingWebhookConfiguration the leader maintains.
    pub config_name: String,
    /// Namespace and name of the Secret holding the CA and serving certificate.
    pub secret_namespace: String,
    pub secret_name: String,
    /// `Ignore` (default) or `Fail`.
    pub failure_policy: String,
    /// Namespace the operator runs in (never sent to the webhook).
    pub own_namespace: String,
    /// Only this namespace is served (tests, single-namespace installs).
    pub only_namespace: Option<String>,
    /// The leader issues certificates and maintains the configuration (false: an external issuer
    /// such as cert-manager does, and the operator only serves what the Secret holds).
    pub self_managed: bool,
}

#[derive(Clone, Debug)]
pub enum Endpoint {
    Url(String),
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

impl WebhookOptions {
    /// SANs the serving certificate needs.
    pub fn sans(&self) -> Vec<String> {
        match &self.endpoint {
            Endpoint::Url(u) => {
                let host = u
                    .split("://")
                    .nth(1)
                    .unwrap_or(u)
                    .split('/')
                    .next()
                    .unwrap_or_default();
                let host = host
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(host)
                    .trim_matches(['[', ']']);
                vec![host.to_string()]
            }
            Endpoint::Service {
                namespace, name, ..
            } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ],
        }
    }
}

struct WebhookState {
    backends: Store<CeleryResultBackend>,
    client: Client,
    metrics: Metrics,
    /// Namespaces other installations serve (a Pod from one is admitted untouched).
    claims: crate::installation::Claims,
}

/// The MutatingWebhookConfiguration, as applied by the leader: the webhook of installation `me`,
/// which serves its one namespace, or (cluster-wide) every namespace but its own, kube-system and
/// `excluded` (those other installations serve). Either way a namespace labelled
/// `celery.dev/injection: disabled` is never sent.
pub fn webhook_configuration(
    opts: &WebhookOptions,
    me: &crate::installation::Identity,
    ca_bundle: &str,
    excluded: &std::collections::BTreeSet<String>,
) -> serde_json::Value {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_bundle);
    let client_config = match &opts.endpoint {
        Endpoint::Url(u) => {
            json!({"url": format!("{}/mutate-pods", u.trim_end_matches('/')), "caBundle": ca})
        }
        Endpoint::Service {
            namespace,
            name,
            port,
        } => json!({
            "service": {"namespace": namespace, "name": name, "port": port, "path": "/mutate-pods"},
            "caBundle": ca,
        }),
    };
    let opted_out = json!({"key": crate::api::footprint::NAMESPACE_OPT_OUT_LABEL, "operator": "NotIn", "values": ["disabled"]});
    let namespace_selector = match &opts.only_namespace {
        Some(ns) => json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]},
            opted_out,
        ]}),
        None => {
            let mut not_in: std::collections::BTreeSet<&str> =
                excluded.iter().map(String::as_str).collect();
            not_in.insert(&opts.own_namespace);
            not_in.insert("kube-system");
            json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": not_in},
                opted_out,
            ]})
        }
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": opts.config_name,
            "labels": {"app.kubernetes.io/managed-by": crate::api::footprint::FIELD_MANAGER},
            "annotations": {
                crate::installation::INSTALLATION: me.id,
                crate::installation::SCOPE: me.scope.annotation(),
            },
        },
        "webhooks": [{
            "name": format!("pods.{}", crate::api::GROUP),
            "clientConfig": client_config,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": opts.failure_policy,
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "IfNeeded",
            "namespaceSelector": namespace_selector,
            // Only Pods that opt in reach the webhook: labelled by the user, or created from a
            // pod template the operator marked (`checksum.celery.dev/<backend>`).
            "matchConditions": [{"name": "opted-in", "expression": MATCH_CONDITION}],
        }],
    })
}

/// The webhook's CEL match condition (admissionregistration.k8s.io/v1 `matchConditions`): the
/// Pod carries the opt-in label or a pod-template checksum annotation. The chart's cert-manager
/// variant writes the same expression.
pub const MATCH_CONDITION: &str = "(has(object.metadata.labels) && 'celery.dev/result-backend' in object.metadata.labels) || (has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith('checksum.celery.dev/')))";

/// The backends a Pod under review opts in to: its label's, then those of its template's
/// checksum annotations (deduplicated).
fn opted_in(req: &AdmissionRequest<DynamicObject>) -> Vec<String> {
    let Some(obj) = req.object.as_ref() else {
        return vec![];
    };
    let mut out: Vec<String> = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_IN_LABEL))
        .cloned()
        .into_iter()
        .collect();
    for b in inject::annotated_backends(obj.metadata.annotations.as_ref()) {
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

fn published(crb: &CeleryResultBackend) -> bool {
    crb.status
        .as_ref()
        .is_some_and(|s| s.uri_secret_ref.is_some() && s.uri_checksum.is_some())
}

/// The backend a Pod opts in to: from the cache, or, when the cache does not show it published
/// yet, read from the API server. A watch trails the API server by a moment, and a Pod created
/// right after its backend turned Ready (a Job started by the same script) must not miss the URI.
/// The read is bounded well inside the webhook's 5 s timeout; a failed read keeps the cached view.
async fn lookup(s: &WebhookState, ns: &str, backend: &str) -> Option<Arc<CeleryResultBackend>> {
    let cached = s.backends.get(&ObjectRef::new(backend).within(ns));
    if cached.as_deref().is_some_and(published) {
        return cached;
    }
    let api: Api<CeleryResultBackend> = Api::namespaced(s.client.clone(), ns);
    match tokio::time::timeout(Duration::from_secs(2), api.get_opt(backend)).await {
        Ok(Ok(live)) => live.map(Arc::new),
        _ => cached,
    }
}

/// Decide the admission response for one Pod, given the backends it opts in to (name, and the
/// backend when it exists). Backends are applied oldest first (then by name), the rule that picks
/// the winner of a workload; one that sets a variable an earlier one set is left out.
fn admit(
    req: &AdmissionRequest<DynamicObject>,
    found: Vec<(String, Option<Arc<CeleryResultBackend>>)>,
) -> AdmissionResponse {
    let res = AdmissionResponse::from(req);
    let mut warnings: Vec<String> = vec![];
    let Some(obj) = req.object.as_ref() else {
        return res;
    };
    let done = |mut r: AdmissionResponse, warnings: Vec<String>| {
        for w in &warnings {
            tracing::info!(namespace = ?req.namespace, pod = %req.name, "{w}");
        }
        if !warnings.is_empty() {
            r.warnings.get_or_insert_with(Vec::new).extend(warnings);
        }
        r
    };
    let pod: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!(
                "celery-backend-operator: cannot read the Pod ({e}); not injected"
            ));
            return done(res, warnings);
        }
    };
    let ns = req.namespace.clone().unwrap_or_default();
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_IN_LABEL))
        .cloned();
    let other_ns = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NAMESPACE_ANNOTATION))
        .filter(|o| *o != &ns)
        .cloned();
    let mut usable: Vec<Arc<CeleryResultBackend>> = vec![];
    for (backend, crb) in found {
        if let (Some(other), true) = (&other_ns, labelled.as_deref() == Some(backend.as_str())) {
            warnings.push(format!("celery-backend-operator: backend {other}/{backend} is in another namespace; a Pod can only use a backend in its own namespace ({ns}); not injected"));
            continue;
        }
        let Some(crb) = crb else {
            warnings.push(format!("celery-backend-operator: no CeleryResultBackend {backend} in namespace {ns}; not injected"));
            continue;
        };
        if crb.metadata.deletion_timestamp.is_some() {
            warnings.push(format!(
                "celery-backend-operator: backend {backend} is being deleted; not injected"
            ));
            continue;
        }
        if !published(&crb) {
            warnings.push(format!("celery-backend-operator: backend {backend} has not published its URI yet; not injected"));
            continue;
        }
        usable.push(crb);
    }
    usable.sort_by_key(|b| {
        (
            b.metadata.creation_timestamp.clone().map(|t| t.0),
            b.name_any(),
        )
    });
    let injections: Vec<Injection> = usable
        .iter()
        .filter_map(|crb| {
            let status = crb.status.as_ref()?;
            // The TLS files the *published* URI names (a later spec may not have built).
            Some(
                Injection::new(
                    &crb.name_any(),
                    &crb.spec,
                    &status.uri_secret_ref.as_ref()?.name,
                    status.uri_checksum.as_ref()?,
                )
                .with_tls_mounts(&status.tls_mounts)
                .with_client_env(&status.client_env),
            )
        })
        .collect();
    let (ops, left_out) = match inject::pod_patch_all(&pod, &injections) {
        Ok(x) => x,
        Err(e) => {
            warnings.push(format!(
                "celery-backend-operator: internal patch error {e}; not injected"
            ));
            return done(res, warnings);
        }
    };
    for l in left_out {
        warnings.push(format!(
            "celery-backend-operator: backend {l}; not injected"
        ));
    }
    if ops.is_empty() {
        return done(res, warnings);
    }
    let patch: json_patch::Patch = match serde_json::from_value(json!(ops)) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!(
                "celery-backend-operator: internal patch error {e}; not injected"
            ));
            return done(res, warnings);
        }
    };
    match res.clone().with_patch(patch) {
        Ok(r) => done(r, warnings),
        Err(e) => {
            warnings.push(format!(
                "celery-backend-operator: internal patch error {e}; not injected"
            ));
            done(res, warnings)
        }
    }
}

async fn mutate(
    State(s): State<Arc<WebhookState>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = Instant::now();
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e.to_string()).into_review()),
    };
    let res = if req
        .namespace
        .as_ref()
        .is_some_and(|ns| s.claims.borrow().contains(ns))
    {
        // Another installation serves this namespace (its webhook does the work).
        AdmissionResponse::from(&req)
    } else {
        let ns = req.namespace.clone().unwrap_or_default();
        let mut found = vec![];
        for backend in opted_in(&req) {
            let crb = lookup(&s, &ns, &backend).await;
            found.push((backend, crb));
        }
        admit(&req, found)
    };
    let patched = res.patch.is_some();
    s.metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    s.metrics
        .admissions
        .get_or_create(&crate::telemetry::ResultLabel {
            result: if patched { "injected" } else { "unchanged" }.into(),
        })
        .inc();
    Json(res.into_review())
}

fn server_config(data: &BTreeMap<String, String>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = data
        .get(certs::TLS_CERT)
        .ok_or_else(|| anyhow::anyhow!("no {}", certs::TLS_CERT))?;
    let key = data
        .get(certs::TLS_KEY)
        .ok_or_else(|| anyhow::anyhow!("no {}", certs::TLS_KEY))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve the webhook on every replica: wait for the certificate Secret, then serve and reload it
/// whenever it changes.
pub async fn serve(
    client: Client,
    opts: WebhookOptions,
    metrics: Metrics,
    claims: crate::installation::Claims,
) -> anyhow::Result<()> {
    let backends_api: Api<CeleryResultBackend> =
        crate::installation::scoped(&client, &opts.only_namespace);
    let (reader, writer) = reflector::store();
    let stream = watcher(backends_api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "webhook cache watch error");
            }
        }
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.secret_namespace);
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut rustls_cfg: Option<axum_server::tls_rustls::RustlsConfig> = None;
    let ready = metrics.webhook_ready.clone();
    let cache = reader.clone();
    let state = Arc::new(WebhookState {
        backends: reader,
        client: client.clone(),
        metrics,
        claims,
    });
    // Watch the one certificate Secret: a re-issued certificate is served at once, by every
    // replica, without a restart. A deleted Secret keeps the last certificate in service until
    // the leader issues a new one.
    let cert_events = watcher(
        secrets,
        watcher::Config::default().fields(&format!("metadata.name={}", opts.secret_name)),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(cert_events);
    tracing::debug!(secret = %opts.secret_name, "waiting for the webhook certificate Secret");
    while let Some(ev) = cert_events.next().await {
        let s = match ev {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the webhook certificate Secret");
                continue;
            }
        };
        let data = crate::secret_data::secret_text(&s);
        if current.as_ref() == Some(&data) {
            continue;
        }
        match server_config(&data) {
            Ok(cfg) => {
                if let Some(r) = &rustls_cfg {
                    r.reload_from_config(cfg);
                    tracing::info!("webhook certificate reloaded");
                } else {
                    let r = axum_server::tls_rustls::RustlsConfig::from_config(cfg);
                    rustls_cfg = Some(r.clone());
                    let app = Router::new()
                        .route("/mutate-pods", post(mutate))
                        .with_state(state.clone());
                    let addr = opts.listen;
                    tracing::info!(%addr, "serving the Pod webhook over TLS");
                    tokio::spawn(async move {
                        if let Err(e) = axum_server::bind_rustls(addr, r)
                            .serve(app.into_make_service())
                            .await
                        {
                            tracing::error!(error = %e, "webhook server stopped");
                        }
                    });
                    // Ready once serving with a listed cache of backends.
                    let (cache, ready) = (cache.clone(), ready.clone());
                    tokio::spawn(async move {
                        if cache.wait_until_ready().await.is_ok() {
                            ready.store(true, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!("webhook ready");
                        }
                    });
                }
                current = Some(data);
            }
            Err(e) => tracing::warn!(error = %e, "webhook certificate Secret is not usable yet"),
        }
    }
    anyhow::bail!("the webhook certificate watch ended")
}

/// Leader only: keep the certificate Secret fresh and the MutatingWebhookConfiguration's caBundle
/// current. Runs at once, whenever either object changes (a deleted Secret, an edited
/// caBundle), and hourly for expiry; its own writes cause one more pass that finds nothing to do.
pub async fn maintain(
    client: Client,
    opts: WebhookOptions,
    me: crate::installation::Identity,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    mut claims: crate::installation::Claims,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.secret_namespace);
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let secret_changes = watcher(
        secrets.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", opts.secret_name)),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let config_changes = watcher(
        mwcs.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", opts.config_name)),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let mut changes = Box::pin(futures::stream::select(secret_changes, config_changes));
    loop {
        let excluded = claims.borrow_and_update().clone();
        let wait = match upkeep(&secrets, &mwcs, &opts, &me, owner.as_ref(), &excluded).await {
            Ok(()) => 3600,
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate upkeep failed; retrying");
                10
            }
        };
        tokio::select! {
            next = changes.next() => {
                if next.is_none() {
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                // Let a burst of events (our own write, the watch's initial list) settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while futures::FutureExt::now_or_never(changes.next()).flatten().is_some() {}
            }
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            // Another installation came or went: the namespaces to leave out changed.
            changed = claims.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        }
    }
}

/// One pass: re-issue the certificate if it is missing, expiring or made for other names, then
/// make the configuration trust the current CA bundle.
async fn upkeep(
    secrets: &Api<Secret>,
    mwcs: &Api<MutatingWebhookConfiguration>,
    opts: &WebhookOptions,
    me: &crate::installation::Identity,
    owner: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    excluded: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    let live = secrets.get_opt(&opts.secret_name).await?;
    let mut data = live
        .as_ref()
        .map(crate::secret_data::secret_text)
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    if let Some(next) = certs::next_bundle(&data, &opts.sans(), now, certs::Lifetimes::default())? {
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": opts.secret_name,
                "namespace": opts.secret_namespace,
                "labels": {"app.kubernetes.io/managed-by": crate::api::footprint::FIELD_MANAGER},
                "annotations": {crate::installation::INSTALLATION: me.id},
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "type": "Opaque",
            "data": next.iter().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect::<BTreeMap<_, _>>(),
        });
        secrets
            .patch(
                &opts.secret_name,
                &PatchParams::apply(crate::api::footprint::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        tracing::info!(secret = %opts.secret_name, "issued the webhook serving certificate");
        data = next;
    }
    let desired = webhook_configuration(opts, me, &certs::ca_bundle(&data), excluded);
    crate::apply::apply_if_changed(mwcs, desired).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_safe_by_default() {
        let opts = WebhookOptions {
            listen: "127.0.0.1:9443".parse().unwrap(),
            endpoint: Endpoint::Service {
                namespace: "cbo".into(),
                name: "cbo-webhook".into(),
                port: 443,
            },
            config_name: "cbo".into(),
            secret_namespace: "cbo".into(),
            secret_name: "tls".into(),
            failure_policy: "Ignore".into(),
            own_namespace: "cbo".into(),
            only_namespace: None,
            self_managed: true,
        };
        let me = crate::installation::Identity {
            id: "cbo.cbo".into(),
            scope: crate::installation::Scope::Cluster,
            record: "cbo".into(),
        };
        let c = webhook_configuration(&opts, &me, "PEM", &["demo".to_string()].into());
        let w = &c["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["timeoutSeconds"], 5);
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["matchConditions"][0]["expression"], MATCH_CONDITION);
        assert!(
            MATCH_CONDITION.contains(OPT_IN_LABEL)
                && MATCH_CONDITION.contains(inject::CHECKSUM_PREFIX)
        );
        let ns = serde_json::to_string(&w["namespaceSelector"]).unwrap();
        assert!(ns.contains("NotIn") && ns.contains("\"cbo\""), "{ns}");
        // Namespaces other installations serve are left out; opted-out ones too.
        assert!(ns.contains("\"demo\"") && ns.contains("disabled"), "{ns}");
        assert_eq!(
            c["metadata"]["annotations"]["celery.dev/installation"],
            "cbo.cbo"
        );
        assert_eq!(w["clientConfig"]["service"]["path"], "/mutate-pods");
        let _: MutatingWebhookConfiguration = serde_json::from_value(c).unwrap();
        assert_eq!(
            opts.sans(),
            vec!["cbo-webhook.cbo.svc", "cbo-webhook.cbo.svc.cluster.local"]
        );
        let url = WebhookOptions {
            endpoint: Endpoint::Url("https://127.0.0.1:18443".into()),
            ..opts
        };
        assert_eq!(url.sans(), vec!["127.0.0.1"]);
        assert_eq!(
            webhook_configuration(&url, &me, "x", &Default::default())["webhooks"][0]
                ["clientConfig"]["url"],
            "https://127.0.0.1:18443/mutate-pods"
        );
    }
}
