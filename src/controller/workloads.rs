//! Workload injection: mark the pod templates of opted-in Deployments, StatefulSets, DaemonSets
//! and CronJobs for the Pod webhook (metadata only, one field manager per backend), decide
//! conflicts between backends, release on opt-out, and find Pods admitted without injection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Context;

pub use crate::api::footprint::{injector, LEGACY_INJECTOR};

/// At most this many injection writes per workload per [`BUDGET_WINDOW`] by this operator (all
/// backends together): a bound that turns any fight with another writer into a reported
/// `InjectionThrottled` instead of a loop of rollouts.
pub const BUDGET_WRITES: usize = 6;
/// The window of [`BUDGET_WRITES`].
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// Writes per workload (`Kind/namespace/name`) in the last [`BUDGET_WINDOW`].
#[derive(Debug, Default)]
pub struct WriteBudget(Mutex<HashMap<String, VecDeque<Instant>>>);

impl WriteBudget {
    /// Take one write for `workload` at `now`, or refuse when the budget is spent.
    pub fn take(&self, workload: &str, now: Instant) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return true;
        };
        map.retain(|_, q| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= BUDGET_WINDOW)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
        let q = map.entry(workload.to_string()).or_default();
        if q.len() >= BUDGET_WRITES {
            return false;
        }
        q.push_back(now);
        true
    }
}

use crate::api::CeleryResultBackend;
use crate::inject::{self, Injection, OPT_IN_LABEL};
use crate::telemetry::ResultLabel;

/// What injection found for one backend.
#[derive(Debug, Default)]
pub struct Report {
    /// Workloads whose template carries the injection.
    pub injected: Vec<String>,
    /// Workloads that opted in but whose containers all set the variable themselves.
    pub skipped: Vec<String>,
    /// Workload patches the API server refused (name: message).
    pub failed: Vec<String>,
    /// Workloads another backend injects with the same variable (`Kind/name: backend`).
    pub conflicts: Vec<String>,
    /// Workloads left alone because their write budget is spent.
    pub throttled: Vec<String>,
    /// The namespace is labelled `celery.dev/injection: disabled`.
    pub disabled: bool,
    /// Opted-in Pods admitted without injection.
    pub missed_pods: Vec<String>,
    /// Workloads whose injection was removed in this pass.
    pub released: Vec<String>,
    /// The backend is gone or being deleted: nothing was injected (the finalizer could not be
    /// set first).
    pub vanished: bool,
}

/// The other backends of the namespace that opt in `labels`'s workload with an overlapping
/// variable, plus this one: the winner is the oldest (creation time), then the first by name.
fn winner<'a>(
    me: &'a CeleryResultBackend,
    inj: &Injection,
    others: &'a [std::sync::Arc<CeleryResultBackend>],
    labels: &BTreeMap<String, String>,
) -> &'a CeleryResultBackend {
    let key = |b: &CeleryResultBackend| {
        (
            b.metadata.creation_timestamp.clone().map(|t| t.0),
            b.name_any(),
        )
    };
    others
        .iter()
        .map(|b| b.as_ref())
        .filter(|b| b.name_any() != me.name_any() && b.metadata.deletion_timestamp.is_none())
        .filter(|b| inject::workload_wants(&b.name_any(), &b.spec, labels))
        .filter(|b| variables_of(b).overlaps(inj))
        .fold(me, |best, b| if key(b) < key(best) { b } else { best })
}

/// What another backend sets in a Pod, for the conflict rule: its variable, the config module's,
/// and the client-library variables of its published status.
fn variables_of(b: &CeleryResultBackend) -> Injection {
    let published = b.status.as_ref().map(|s| s.client_env.as_slice());
    Injection::new(&b.name_any(), &b.spec, "", "").with_client_env(published.unwrap_or_default())
}

/// The pod template of each supported kind.
trait Templated: Resource + Clone + DeserializeOwned + std::fmt::Debug {
    const API_VERSION: &'static str;
    const KIND: &'static str;
    fn template(&self) -> Option<(&PodSpec, Option<&BTreeMap<String, String>>)>;
}

macro_rules! templated {
    ($t:ty, $api:expr, $kind:expr, |$s:ident| $body:expr) => {
        impl Templated for $t {
            const API_VERSION: &'static str = $api;
            const KIND: &'static str = $kind;
            fn template(&self) -> Option<(&PodSpec, Option<&BTreeMap<String, String>>)> {
                let $s = self;
                $body
            }
        }
    };
}

templated!(Deployment, "apps/v1", "Deployment", |d| d
    .spec
    .as_ref()
    .and_then(|s| s.template.spec.as_ref().map(|p| (
        p,
        s.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
    ))));
templated!(StatefulSet, "apps/v1", "StatefulSet", |d| d
    .spec
    .as_ref()
    .and_then(|s| s.template.spec.as_ref().map(|p| (
        p,
        s.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
    ))));
templated!(DaemonSet, "apps/v1", "DaemonSet", |d| d
    .spec
    .as_ref()
    .and_then(|s| s.template.spec.as_ref().map(|p| (
        p,
        s.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
    ))));
templated!(CronJob, "batch/v1", "CronJob", |d| d
    .spec
    .as_ref()
    .and_then(|s| s.job_template.spec.as_ref())
    .and_then(|j| j.template.spec.as_ref().map(|p| (
        p,
        j.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
    ))));

fn legacy_record(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    let raw = annotations?.get(inject::LEGACY_RECORD_ANNOTATION)?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    v["backend"].as_str().map(String::from)
}

#[allow(clippy::too_many_arguments)]
async fn sync_kind<K>(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
    inj: Option<&Injection>,
    others: &[std::sync::Arc<CeleryResultBackend>],
    finalizer_held: &mut bool,
    report: &mut Report,
) -> Result<(), kube::Error>
where
    K: Templated<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + serde::Serialize,
{
    let name = obj.name_any();
    let manager = injector(&name);
    let meta_api: Api<PartialObjectMeta<K>> = Api::namespaced(ctx.client.clone(), ns);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let count = |result: &str| {
        ctx.metrics
            .injected_workloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    };
    for m in meta_api.list_metadata(&ListParams::default()).await?.items {
        let wname = m.name_any();
        let labels = m.metadata.labels.clone().unwrap_or_default();
        let annotations = m.metadata.annotations.as_ref();
        let wants = inject::workload_wants(&name, &obj.spec, &labels);
        let legacy = legacy_record(annotations).as_deref() == Some(name.as_str());
        let recorded =
            legacy || annotations.is_some_and(|a| a.contains_key(&inject::injected_key(&name)));
        let label = format!("{}/{wname}", K::KIND);
        let budget_key = format!("{}/{ns}/{wname}", K::KIND);
        let release = |legacy: bool| {
            let api = api.clone();
            let (wname, manager) = (wname.clone(), manager.clone());
            async move {
                let body = inject::workload_release(K::API_VERSION, K::KIND, &wname, ns);
                if legacy {
                    api.patch(
                        &wname,
                        &PatchParams::apply(LEGACY_INJECTOR),
                        &Patch::Apply(&body),
                    )
                    .await?;
                }
                api.patch(&wname, &PatchParams::apply(&manager), &Patch::Apply(&body))
                    .await
                    .map(|_| ())
            }
        };
        let inj = match (wants, inj) {
            (true, Some(inj)) => inj,
            (_, _) if recorded => {
                // Opted out (or nothing to inject any more): apply nothing, which removes exactly
                // the fields this backend's field manager owns.
                release(legacy).await?;
                tracing::info!(backend = %name, workload = %label, "removed the injection from the workload");
                count("released");
                report.released.push(label);
                continue;
            }
            _ => continue,
        };
        let first = winner(obj, inj, others, &labels);
        if first.name_any() != name {
            report.conflicts.push(format!(
                "{label}: {} (older) sets {}",
                first.name_any(),
                inj.shared(&variables_of(first)).join(", ")
            ));
            if recorded {
                release(legacy).await?;
                count("released");
                report.released.push(label);
            }
            continue;
        }
        let Some(live) = api.get_opt(&wname).await? else {
            continue;
        };
        let Some((spec, template_annotations)) = live.template() else {
            continue;
        };
        if inject::target_containers(spec, inj).is_empty() {
            report.skipped.push(label);
            continue;
        }
        if !legacy
            && inject::workload_is_current(
                live.meta().annotations.as_ref(),
                template_annotations,
                inj,
            )
        {
            report.injected.push(label);
            continue;
        }
        if !ctx.write_budget.take(&budget_key, Instant::now()) {
            count("throttled");
            report.throttled.push(label);
            continue;
        }
        // The finalizer comes before the first injection: a backend deleted a moment after it
        // was created must still release what it injected.
        if !*finalizer_held {
            if !super::finalizer::ensure_finalizer(ctx, obj, ns).await? {
                report.vanished = true;
                return Ok(());
            }
            *finalizer_held = true;
        }
        if legacy {
            let body = inject::workload_release(K::API_VERSION, K::KIND, &wname, ns);
            api.patch(
                &wname,
                &PatchParams::apply(LEGACY_INJECTOR),
                &Patch::Apply(&body),
            )
            .await?;
        }
        let body = inject::workload_apply(K::API_VERSION, K::KIND, &wname, ns, inj);
        // The keys are this backend's own: take them back from anyone who copied them.
        match api
            .patch(
                &wname,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(backend = %name, workload = %label, checksum = %inj.checksum, "marked the pod template for injection");
                count("injected");
                report.injected.push(label);
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                count("conflict");
                report.failed.push(format!("{label}: {}", s.message));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a namespace has opted out of injection (`celery.dev/injection: disabled`).
async fn namespace_disabled(ctx: &Context, ns: &str) -> Result<bool, kube::Error> {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(ctx.client.clone());
    let found = match api.get_metadata_opt(ns).await {
        Ok(found) => found,
        // Without the right to read Namespaces the webhook's namespaceSelector still keeps the
        // namespace's Pods out; the workloads are then treated as opted in.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            tracing::warn!(namespace = %ns, "cannot read the Namespace to honour celery.dev/injection=disabled on workloads (RBAC: get namespaces)");
            None
        }
        Err(e) => return Err(e),
    };
    Ok(found.is_some_and(|n| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(inject::NAMESPACE_OPT_OUT_LABEL))
            .is_some_and(|v| v == "disabled")
    }))
}

/// Inject into (or release) every workload of the namespace for this backend; list missed Pods.
/// `inj: None` releases everything the backend injected. In a namespace labelled
/// `celery.dev/injection: disabled` everything is released and no Pod counts as missed.
pub async fn sync(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
    inj: Option<&Injection>,
) -> Result<Report, kube::Error> {
    let mut report = Report::default();
    let disabled = inj.is_some() && namespace_disabled(ctx, ns).await?;
    report.disabled = disabled;
    let inj = inj.filter(|_| !disabled);
    let others: Vec<std::sync::Arc<CeleryResultBackend>> = ctx
        .store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok().cloned())
        .filter(|b| b.namespace().as_deref() == Some(ns))
        .map(std::sync::Arc::new)
        .collect();
    let mut held = obj
        .finalizers()
        .iter()
        .any(|f| f == super::finalizer::FINALIZER);
    sync_kind::<Deployment>(ctx, obj, ns, inj, &others, &mut held, &mut report).await?;
    sync_kind::<StatefulSet>(ctx, obj, ns, inj, &others, &mut held, &mut report).await?;
    sync_kind::<DaemonSet>(ctx, obj, ns, inj, &others, &mut held, &mut report).await?;
    sync_kind::<CronJob>(ctx, obj, ns, inj, &others, &mut held, &mut report).await?;
    if disabled {
        return Ok(report);
    }
    let name = obj.name_any();
    let pods: Api<PartialObjectMeta<Pod>> = Api::namespaced(ctx.client.clone(), ns);
    for p in pods.list_metadata(&ListParams::default()).await?.items {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        let by_label = labels.get(OPT_IN_LABEL) == Some(&name);
        let wants = by_label || annotations.contains_key(&inject::checksum_key(&name));
        let stamped = annotations.contains_key(&inject::injected_key(&name))
            || (by_label && annotations.contains_key(inject::LEGACY_CHECKSUM_ANNOTATION));
        if wants
            && !stamped
            && p.metadata.deletion_timestamp.is_none()
            && report.missed_pods.len() < 20
        {
            report.missed_pods.push(p.name_any());
        }
    }
    report.missed_pods.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_budget_refuses_the_seventh_write_in_a_minute() {
        let b = WriteBudget::default();
        let t0 = Instant::now();
        for i in 0..BUDGET_WRITES {
            assert!(
                b.take("Deployment/ns/w", t0 + Duration::from_secs(i as u64)),
                "{i}"
            );
        }
        assert!(!b.take("Deployment/ns/w", t0 + Duration::from_secs(30)));
        assert!(
            b.take("Deployment/ns/other", t0 + Duration::from_secs(30)),
            "per workload"
        );
        assert!(
            b.take(
                "Deployment/ns/w",
                t0 + BUDGET_WINDOW + Duration::from_secs(1)
            ),
            "a minute later"
        );
    }
}
