//! The CeleryResultBackend controller: dereference Secrets (external) or provision the store
//! (managed) -> build the URI (pure) -> server-side apply the URI Secret -> status and Events.
//!
//! Here: the watches and the reconcile driver. Its steps live in `steps`, `secrets` (credentials
//! in, URI Secret out), `managed` (provisioning), `workloads` (injection), `finalizer`, `status`
//! (conditions) and `health` (probe tasks). The process runner (`crate::runner`) starts it; the
//! cleanup policies have their own controller (`crate::policy_controller`).

mod finalizer;
pub mod health;
mod managed;
mod secrets;
pub mod status;
mod steps;
pub mod workloads;

pub use crate::apply::apply_if_changed;
use finalizer::finalize_backend;
pub use finalizer::FINALIZER;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{BindingRef, CeleryResultBackend, CeleryResultBackendStatus, SecretKeyRef};
use crate::installation::scoped;
use crate::provision;
use crate::telemetry::Metrics;
use crate::uri::{self};
use status::{Outcome, Report, State};

pub use crate::api::footprint::{APPLIED_HASH, CONFIG_KEY, FIELD_MANAGER, MANAGED_BY, URI_KEY};

type Guarded = DeserializeGuard<CeleryResultBackend>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ClientError",
            Error::NoNamespace => "NoNamespace",
        }
    }
}

/// Which backends refer to which Secret (namespace, secret name), so a Secret change
/// re-reconciles exactly those backends without caching Secret data.
type SecretIndex = Arc<Mutex<HashMap<(String, String), HashSet<(String, String)>>>>;

type SelectorIndex = Arc<
    Mutex<HashMap<(String, String), k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>>,
>;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    index: SecretIndex,
    /// Health-check tasks, one per backend.
    pub health: health::Registry,
    /// Wakes a backend's reconcile when its health changes.
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Guarded>>,
    /// Workload selectors of backends (namespace, name), so workload events find their backends.
    selectors: SelectorIndex,
    /// Consecutive failures per backend, for exponential backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    store: Store<Guarded>,
    /// Operator-wide images and pull secrets for the stores this operator provisions.
    pub store_images: provision::StoreImages,
    /// Namespaces other (namespace-scoped) installations serve: left alone.
    pub claims: crate::installation::Claims,
    /// The installation's secret key for pod-template checksums.
    checksum_key: Vec<u8>,
    /// Injection writes per workload in the last minute.
    write_budget: workloads::WriteBudget,
    /// Backends (namespace, name) reconciled and not deleted, so a Namespace's label change (the
    /// injection opt-out) reaches the backends of that namespace.
    known: Arc<Mutex<HashSet<(String, String)>>>,
}

/// Name of the Secret holding the URI for a backend (fits 253 characters).
pub fn uri_secret_name(backend: &str) -> String {
    let suffix = "-celery-result-backend";
    let keep = 253 - suffix.len();
    format!("{}{suffix}", &backend[..backend.len().min(keep)])
}

/// Backoff after `n` consecutive failures: 5s, 10s, 20s, ... capped at 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.min(6)).min(300))
}

/// Run the CeleryResultBackend controller until shutdown (called by the process runner).
pub(crate) async fn run_controller(
    client: Client,
    namespace: Option<String>,
    metrics: Metrics,
    store_images: provision::StoreImages,
    claims: crate::installation::Claims,
    checksum_key: Vec<u8>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store::<Guarded>();
    // Only spec changes (generation) trigger: the operator's own status writes do not.
    let backends = watcher(
        scoped::<Guarded>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    // Spec changes and the start of a deletion (which also bumps the generation of an object
    // with finalizers; the deletion timestamp is included to not depend on that).
    .predicate_filter(
        |o: &Guarded| {
            predicates::generation(o).map(|g| {
                g.wrapping_mul(2)
                    .wrapping_add(u64::from(o.meta().deletion_timestamp.is_some()))
            })
        },
        Default::default(),
    );
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: crate::conditions::recorder(&client),
        metrics,
        index: SecretIndex::default(),
        failures: Mutex::default(),
        selectors: SelectorIndex::default(),
        health: health::Registry::default(),
        wake: wake_tx,
        store: reader.clone(),
        store_images,
        checksum_key,
        write_budget: workloads::WriteBudget::default(),
        known: Arc::default(),
        claims,
    });
    let index = ctx.index.clone();
    // A namespace another installation gave back is reconciled at once, not at the next retry.
    {
        let (mut claims, store, wake) = (ctx.claims.clone(), reader.clone(), ctx.wake.clone());
        tokio::spawn(async move {
            let mut before = claims.borrow_and_update().clone();
            while claims.changed().await.is_ok() {
                let now = claims.borrow_and_update().clone();
                for ns in before.difference(&now) {
                    for b in store.state() {
                        if b.namespace().as_deref() == Some(ns.as_str()) {
                            let _ = wake.unbounded_send(ObjectRef::from_obj(&*b));
                        }
                    }
                }
                before = now;
            }
        });
    }
    // Secrets: metadata only, so memory does not grow with Secret data; mapped through the index.
    let secret_changes = watcher(
        scoped::<PartialObjectMeta<Secret>>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    // ConfigMaps (CA bundles, `caConfigMapRef`): metadata only too, mapped through the same
    // index under `configmap:<name>`.
    let config_map_changes = watcher(
        scoped::<PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    // The backends that refer to a Secret (`name`) or ConfigMap (`configmap:<name>`) in `ns`.
    let referrers = move |ns: String, name: String| {
        index
            .lock()
            .map(|i| i.get(&(ns, name)).cloned().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|(ns, name)| ObjectRef::<Guarded>::new(&name).within(&ns))
    };
    let config_map_referrers = referrers.clone();
    // Namespaces (metadata only, label changes only): `celery.dev/injection: disabled` turned on
    // or off reaches the namespace's backends at once. A scoped installation watches its one.
    let known = ctx.known.clone();
    let ns_config = match &namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let namespace_changes = watcher(
        Api::<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>>::all(client.clone()),
        ns_config,
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(predicates::labels, Default::default());
    let selectors = ctx.selectors.clone();
    // Workloads and Pods (metadata only) map to the backends they opt in to, are matched by, or
    // carry an injection record of.
    let to_backends = move |meta: &kube::api::ObjectMeta| {
        let ns = meta.namespace.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let mut out: Vec<ObjectRef<Guarded>> = vec![];
        if let Some(b) = labels.get(crate::inject::OPT_IN_LABEL) {
            out.push(ObjectRef::new(b).within(&ns));
        }
        for key in annotations.keys() {
            if let Some(b) = key.strip_prefix(crate::inject::INJECTED_PREFIX) {
                out.push(ObjectRef::new(b).within(&ns));
            }
        }
        if let Some(raw) = annotations.get(crate::inject::LEGACY_RECORD_ANNOTATION) {
            if let Some(b) = serde_json::from_str::<Value>(raw)
                .ok()
                .and_then(|v| v["backend"].as_str().map(String::from))
            {
                out.push(ObjectRef::new(&b).within(&ns));
            }
        }
        // Backends selecting workloads by label selector (indexed during reconcile; reading the
        // reflector store from inside a mapper stalled the controller's start-up).
        if let Ok(sel) = selectors.lock() {
            for ((bns, bname), selector) in sel.iter() {
                if bns == &ns && crate::inject::selector_matches(selector, &labels) {
                    out.push(ObjectRef::new(bname).within(&ns));
                }
            }
        }
        out
    };
    fn meta_stream<K>(
        client: &Client,
        namespace: &Option<String>,
        cfg: watcher::Config,
    ) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        watcher(scoped::<PartialObjectMeta<K>>(client, namespace), cfg)
            .default_backoff()
            .touched_objects()
    }
    let (f1, f2, f3, f4, f5) = (
        to_backends.clone(),
        to_backends.clone(),
        to_backends.clone(),
        to_backends.clone(),
        to_backends,
    );
    let all = watcher::Config::default();
    let opted_pods = watcher::Config::default().labels(crate::inject::OPT_IN_LABEL);
    Controller::for_stream(backends, reader)
        .watches_stream(
            meta_stream::<k8s_openapi::api::apps::v1::Deployment>(&client, &namespace, all.clone()),
            move |o| f1(&o.metadata),
        )
        .watches_stream(
            meta_stream::<StatefulSet>(&client, &namespace, all.clone()),
            move |o| f2(&o.metadata),
        )
        .watches_stream(
            meta_stream::<k8s_openapi::api::apps::v1::DaemonSet>(&client, &namespace, all.clone()),
            move |o| f3(&o.metadata),
        )
        .watches_stream(
            meta_stream::<k8s_openapi::api::batch::v1::CronJob>(&client, &namespace, all),
            move |o| f4(&o.metadata),
        )
        .watches_stream(
            meta_stream::<k8s_openapi::api::core::v1::Pod>(&client, &namespace, opted_pods),
            move |o| f5(&o.metadata),
        )
        .owns(
            scoped::<Secret>(&client, &namespace),
            watcher::Config::default().labels(MANAGED_BY),
        )
        .owns(
            scoped::<StatefulSet>(&client, &namespace),
            watcher::Config::default().labels(MANAGED_BY),
        )
        .owns(
            scoped::<Service>(&client, &namespace),
            watcher::Config::default().labels(MANAGED_BY),
        )
        .watches_stream(namespace_changes, move |n| {
            let ns = n.name_any();
            known
                .lock()
                .map(|k| {
                    k.iter()
                        .filter(|(bns, _)| bns == &ns)
                        .map(|(bns, name)| ObjectRef::<Guarded>::new(name).within(bns))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .watches_stream(secret_changes, move |s| {
            referrers(s.namespace().unwrap_or_default(), s.name_any())
        })
        .watches_stream(config_map_changes, move |c| {
            config_map_referrers(
                c.namespace().unwrap_or_default(),
                crate::api::config_map_source(&c.name_any()),
            )
        })
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(backend = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    ctx.health.stop_all();
}

fn key_of(obj: &Guarded) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

fn error_policy(obj: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = bump_failures(&ctx, key_of(&obj));
    ctx.metrics
        .errors
        .get_or_create(&crate::telemetry::ReasonLabel {
            reason: err.reason().into(),
        })
        .inc();
    let delay = backoff(n);
    tracing::warn!(backend = %key_of(&obj).1, error = %err, retry_in = ?delay, "reconcile error");
    Action::requeue(delay)
}

fn bump_failures(ctx: &Context, key: (String, String)) -> u32 {
    ctx.failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key).or_insert(0);
            let now = *n;
            *n = n.saturating_add(1);
            now
        })
        .unwrap_or(0)
}

async fn reconcile(guard: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(obj) => reconcile_backend(obj, &ctx).await,
        Err(invalid) => {
            // One malformed object must not stall the others: report it and wait for an edit.
            let meta = &invalid.metadata;
            tracing::warn!(namespace = ?meta.namespace, name = ?meta.name, error = %invalid.error, "cannot parse CeleryResultBackend");
            let reference = ObjectReference {
                api_version: Some(CeleryResultBackend::api_version(&()).into_owned()),
                kind: Some("CeleryResultBackend".into()),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                ..Default::default()
            };
            publish(
                &ctx,
                &reference,
                false,
                "InvalidSpec",
                &format!("the operator cannot read this object: {}", invalid.error),
            )
            .await;
            Ok(Action::await_change())
        }
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .get_or_create(&crate::telemetry::ResultLabel {
            result: if result.is_ok() { "ok" } else { "error" }.into(),
        })
        .inc();
    result
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    normal: bool,
    reason: &str,
    note: &str,
) {
    let ev = Event {
        type_: if normal {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

fn api_failure(what: &str, e: kube::Error) -> Result<Outcome, Error> {
    match e {
        // The API server refused the object: the user can act on its message.
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Ok(Outcome::failed(
                "ApplyRejected",
                format!("the API server rejected {what}: {}", s.message),
            ))
        }
        other => Err(Error::Kube(other)),
    }
}

async fn reconcile_backend(obj: &CeleryResultBackend, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let name = obj.name_any();
    if ctx.claims.borrow().contains(&ns) {
        // Another installation serves this namespace: no writes, no health check; look again
        // later in case it leaves.
        let key = (ns.clone(), name.clone());
        ctx.health.retain(|k| k != &key);
        tracing::debug!(namespace = %ns, backend = %name, "served by another installation; left alone");
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if let Ok(mut k) = ctx.known.lock() {
        if obj.metadata.deletion_timestamp.is_some() {
            k.remove(&(ns.clone(), name.clone()));
        } else {
            k.insert((ns.clone(), name.clone()));
        }
    }
    if obj.metadata.deletion_timestamp.is_some() {
        return finalize_backend(obj, ctx, &ns).await;
    }
    let kind = uri::kind_of(&obj.spec).ok().map(|k| k.field().to_string());
    let secret_name = uri_secret_name(&name);
    let managed = obj.spec.is_managed();

    // 1. Resolve and build.
    let (provisioned, built) = steps::resolve(obj, ctx, &ns, &name).await?;

    // Health: a task per backend probes the store; we only read its latest result here.
    let key = (ns.clone(), name.clone());
    let healthy = ctx.health.ensure(
        obj,
        key.clone(),
        built
            .as_ref()
            .ok()
            .filter(|_| !managed || provisioned.is_ready()),
        ctx.wake.clone(),
        ctx.metrics.clone(),
    );
    let last_health_check = healthy
        .as_ref()
        .filter(|h| h.state != State::Unknown)
        .and_then(|_| ctx.health.latest_check(&key));

    // 2. Publish the URI Secret.
    let client_env: Vec<String> = built
        .as_ref()
        .map(|cfg| crate::inject::client_env(&obj.spec, cfg))
        .unwrap_or_default();
    let (ready, checksum, config_delivered) =
        steps::publish_secret(obj, ctx, &ns, &secret_name, built, &provisioned).await?;
    let old = obj.status.clone().unwrap_or_default();
    let report = |injected: Option<Outcome>,
                  injection: Option<(i32, Vec<String>)>,
                  config_delivered: Option<Outcome>| {
        status::next(
            &old,
            &Report {
                generation: obj.metadata.generation,
                kind: kind.clone(),
                mode: if managed { "managed" } else { "external" },
                ready: ready.clone(),
                provisioned: provisioned.clone(),
                healthy: healthy.clone(),
                injected,
                config_delivered,
                secret: secret_name.clone(),
                // Recorded with the URI it belongs to: the webhook mounts these, never a later
                // spec's.
                tls_mounts: checksum.as_ref().map(|_| {
                    obj.spec
                        .tls()
                        .map(|t| {
                            t.mounted_keys()
                                .into_iter()
                                .map(|(s, k)| format!("{s}/{k}"))
                                .collect()
                        })
                        .unwrap_or_default()
                }),
                // Likewise the variables it sets from the published Secret.
                client_env: checksum.as_ref().map(|_| client_env.clone()),
                uri_checksum: checksum.clone(),
                injection,
                last_health_check: last_health_check.clone(),
            },
        )
    };

    // 2b. What the webhook admits rolled Pods from (the URI Secret, its checksum, the TLS mounts
    // and variables) is in the status before step 3 rolls any workload to it: a Pod of that
    // roll admitted from the previous status would miss them, stamped as injected.
    let early = report(None, None, None);
    if (
        &early.uri_secret_ref,
        &early.uri_checksum,
        &early.tls_mounts,
        &early.client_env,
    ) != (
        &old.uri_secret_ref,
        &old.uri_checksum,
        &old.tls_mounts,
        &old.client_env,
    ) {
        steps::write_status(obj, ctx, &early).await?;
    }

    // 3. Inject.
    let (injected, injection) = steps::inject(
        obj,
        ctx,
        &ns,
        &name,
        &secret_name,
        checksum.as_ref(),
        &client_env,
    )
    .await?;
    let config_delivered = config_delivered.map(|d| status::unless_no_opt_in(d, injected.as_ref()));

    // 4. Status (only when it changed) and Events (only on transitions).
    let new = report(injected, injection, config_delivered);
    steps::report(obj, ctx, &old, &new, &provisioned, &ready).await?;

    // 5. When to look again.
    Ok(steps::next(ctx, &ready, key))
}

/// The Injected condition from what workload sync found.
fn injected_outcome(name: &str, r: &workloads::Report) -> Outcome {
    if r.disabled {
        return Outcome::failed(
            "NamespaceOptedOut",
            "the namespace is labelled celery.dev/injection=disabled: nothing is injected here"
                .to_string(),
        );
    }
    if !r.conflicts.is_empty() {
        return Outcome::failed(
            "BackendConflict",
            format!(
                "another backend of this namespace injects the same variable and wins (the oldest, then the first by name); give this backend another injection.envVar or opt the workload out: {}",
                r.conflicts.join("; ")
            ),
        );
    }
    if !r.throttled.is_empty() {
        return Outcome::failed(
            "InjectionThrottled",
            format!(
                "more than {} injection writes in {} s to {}: is another controller rewriting the pod template? Retrying when the budget allows",
                workloads::BUDGET_WRITES,
                workloads::BUDGET_WINDOW.as_secs(),
                r.throttled.join(", ")
            ),
        );
    }
    if !r.failed.is_empty() {
        return Outcome::failed(
            "InjectionConflict",
            format!(
                "the API server refused injecting into {}",
                r.failed.join("; ")
            ),
        );
    }
    if !r.missed_pods.is_empty() {
        return Outcome::failed(
            "PodsMissed",
            format!(
                "{} opted-in Pod(s) were admitted without the result backend (was the webhook unavailable?): {}; Pods of patched workloads are replaced by their rollout, bare Pods must be re-created",
                r.missed_pods.len(),
                r.missed_pods.join(", ")
            ),
        );
    }
    if r.injected.is_empty() {
        let skipped = if r.skipped.is_empty() {
            String::new()
        } else {
            format!(
                " ({} set the variable themselves: {})",
                r.skipped.len(),
                r.skipped.join(", ")
            )
        };
        return Outcome::failed(
            "NoOptIn",
            format!("no workload opts in{skipped}: label a Deployment, StatefulSet, DaemonSet, CronJob or Pod with celery.dev/result-backend={name}"),
        );
    }
    Outcome {
        state: State::Ready,
        reason: "Injected".into(),
        message: format!(
            "{} workload(s) carry the URI: {}",
            r.injected.len(),
            r.injected.join(", ")
        ),
    }
}

/// The status fields that point at the published Secret.
pub fn uri_secret_ref(secret_name: &str) -> (SecretKeyRef, BindingRef) {
    (
        SecretKeyRef {
            name: secret_name.into(),
            key: URI_KEY.into(),
        },
        BindingRef {
            name: secret_name.into(),
        },
    )
}

/// Re-exported for the status module.
pub type Status = CeleryResultBackendStatus;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(6), Duration::from_secs(300));
        assert_eq!(backoff(60), Duration::from_secs(300));
    }
}
