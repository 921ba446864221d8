//! Workload injection: server-side apply the URI reference into the pod templates of opted-in
//! Deployments, StatefulSets, DaemonSets and CronJobs; release it on opt-out; find missed Pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Context;

/// Field manager of injected fields. Separate from the operator's main manager, so applying an
/// injection never drops fields the operator applied to the same object for other reasons, and
/// applying an empty injection removes exactly the injected fields.
pub const INJECTOR: &str = "celery-backend-operator-injector";
use crate::api::CeleryResultBackend;
use crate::inject::{self, Injection, CHECKSUM_ANNOTATION, OPT_IN_LABEL, RECORD_ANNOTATION};
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
    /// Opted-in Pods admitted without injection.
    pub missed_pods: Vec<String>,
    /// Workloads whose injection was removed in this pass.
    pub released: Vec<String>,
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

fn recorded_backend(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    let raw = annotations?.get(RECORD_ANNOTATION)?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    v["backend"].as_str().map(String::from)
}

async fn sync_kind<K>(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
    inj: Option<&Injection>,
    report: &mut Report,
) -> Result<(), kube::Error>
where
    K: Templated<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + serde::Serialize,
{
    let name = obj.name_any();
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
        let wants = inject::workload_wants(&name, &obj.spec, &labels);
        let recorded =
            recorded_backend(m.metadata.annotations.as_ref()).as_deref() == Some(name.as_str());
        let label = format!("{}/{wname}", K::KIND);
        match (wants, inj) {
            (true, Some(inj)) => {
                let Some(live) = api.get_opt(&wname).await? else {
                    continue;
                };
                let Some((spec, annotations)) = live.template() else {
                    continue;
                };
                let containers = inject::target_containers(spec, inj);
                if containers.is_empty() {
                    report.skipped.push(label);
                    continue;
                }
                if recorded && inject::template_is_current(spec, annotations, &containers, inj) {
                    report.injected.push(label);
                    continue;
                }
                let body =
                    inject::workload_apply(K::API_VERSION, K::KIND, &wname, ns, &containers, inj);
                if inj.override_existing {
                    let ops = inject::override_patch(K::KIND, spec, inj);
                    if !ops.is_empty() {
                        let patch: json_patch::Patch =
                            serde_json::from_value(serde_json::Value::Array(ops))
                                .map_err(kube::Error::SerdeError)?;
                        let pp = PatchParams {
                            field_manager: Some(INJECTOR.into()),
                            ..Default::default()
                        };
                        if let Err(e) = api.patch(&wname, &pp, &Patch::<()>::Json(patch)).await {
                            match e {
                                kube::Error::Api(s) if s.code == 409 || s.code == 422 => {
                                    count("conflict");
                                    report.failed.push(format!("{label}: {}", s.message));
                                    continue;
                                }
                                e => return Err(e),
                            }
                        }
                        tracing::info!(backend = %name, workload = %label, "replaced the workload's own value of the variable (overrideExisting)");
                    }
                }
                let mut pp = PatchParams::apply(INJECTOR);
                pp.force = inj.override_existing;
                match api.patch(&wname, &pp, &Patch::Apply(&body)).await {
                    Ok(_) => {
                        tracing::info!(backend = %name, workload = %label, checksum = %inj.checksum, "injected the result backend into the pod template");
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
            (false, _) | (true, None) if recorded => {
                // Opted out (or nothing to inject any more): apply nothing, which removes exactly
                // the fields this field manager owns.
                let body = inject::workload_release(K::API_VERSION, K::KIND, &wname, ns);
                api.patch(&wname, &PatchParams::apply(INJECTOR), &Patch::Apply(&body))
                    .await?;
                tracing::info!(backend = %name, workload = %label, "removed the injection from the pod template");
                count("released");
                report.released.push(label);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Inject into (or release) every workload of the namespace for this backend; list missed Pods.
pub async fn sync(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
    inj: Option<&Injection>,
) -> Result<Report, kube::Error> {
    let mut report = Report::default();
    sync_kind::<Deployment>(ctx, obj, ns, inj, &mut report).await?;
    sync_kind::<StatefulSet>(ctx, obj, ns, inj, &mut report).await?;
    sync_kind::<DaemonSet>(ctx, obj, ns, inj, &mut report).await?;
    sync_kind::<CronJob>(ctx, obj, ns, inj, &mut report).await?;
    let pods: Api<PartialObjectMeta<Pod>> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{OPT_IN_LABEL}={}", obj.name_any()));
    for p in pods.list_metadata(&lp).await?.items {
        let stamped = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CHECKSUM_ANNOTATION));
        if !stamped && p.metadata.deletion_timestamp.is_none() && report.missed_pods.len() < 20 {
            report.missed_pods.push(p.name_any());
        }
    }
    report.missed_pods.sort();
    Ok(report)
}
