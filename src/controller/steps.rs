//! The reconcile of one backend as named steps: resolve (provision or dereference, then build),
//! publish the URI Secret, inject, report status and Events, and choose when to look again. The
//! driver, `reconcile_backend` in mod.rs, calls them in that order.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::finalizer::set_finalizer;
use super::managed::provision;
use super::secrets::{dereference, publish_uri_secret};
use super::status::{self, Outcome, State};
use super::{
    api_failure, backoff, bump_failures, injected_outcome, publish, workloads, Context, Error,
    FIELD_MANAGER,
};
use crate::api::{CeleryResultBackend, CeleryResultBackendStatus};
use crate::provision;
use crate::uri::{self, BackendConfig, BuildError};

/// Step 1, resolve (the one path shared with cleanup policies and the CLI): provision (managed)
/// or dereference (external), then build. Returns the `Provisioned` outcome and the built
/// configuration (or why there is none).
pub(super) async fn resolve(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<(Outcome, Result<BackendConfig, Outcome>), Error> {
    Ok(
        match crate::resolve::inputs(name, ns, &obj.spec, &ctx.store_images) {
            Err(e) => {
                let reason = match &e {
                    provision::PlanError::Invalid(b) => b.reason(),
                    provision::PlanError::NotManaged => "InvalidSpec",
                };
                let o = Outcome::failed(reason, e.to_string());
                (o.clone(), Err(o))
            }
            Ok(crate::resolve::Inputs {
                plan: Some(plan),
                spec,
                ..
            }) => {
                let p = provision(obj, ctx, ns, &plan).await?;
                let built = if p.outcome.state != State::Failed {
                    uri::build(&spec, &p.secrets)
                        .map_err(|e| Outcome::failed(e.reason(), e.to_string()))
                } else {
                    Err(p.outcome.clone())
                };
                (p.outcome, built)
            }
            Ok(crate::resolve::Inputs {
                plan: None,
                spec,
                secrets,
            }) => {
                let values = dereference(ctx, ns, name, &secrets).await?;
                let built = uri::build(&spec, &values)
                    .map_err(|e: BuildError| Outcome::failed(e.reason(), e.to_string()));
                (
                    Outcome {
                        state: State::Ready,
                        reason: "External".into(),
                        message: "external store: nothing to provision".into(),
                    },
                    built,
                )
            }
        },
    )
}

/// Step 2, publish the URI Secret: the `Ready` outcome and the injection checksum (only with a
/// published URI).
pub(super) async fn publish_secret(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
    secret_name: &str,
    built: Result<BackendConfig, Outcome>,
    provisioned: &Outcome,
) -> Result<(Outcome, Option<String>, Option<Outcome>), Error> {
    let mut checksum = None;
    let delivered = built
        .as_ref()
        .ok()
        .map(|cfg| status::config_delivered(&obj.spec, cfg));
    let ready = match built {
        Ok(cfg) => match publish_uri_secret(obj, ctx, ns, secret_name, &cfg).await {
            Ok(sum) => {
                checksum = Some(sum);
                if provisioned.is_ready() {
                    Outcome::ready(secret_name, &cfg.warnings)
                } else {
                    Outcome::pending(
                        "Provisioning",
                        format!(
                            "{}; URI already published in Secret {secret_name}",
                            provisioned.message
                        ),
                    )
                }
            }
            Err(e) => api_failure(&format!("Secret {secret_name}"), e)?,
        },
        Err(failed) => failed,
    };
    Ok((ready, checksum, delivered))
}

/// Step 3, inject into opted-in workloads (only with a published URI: a transient failure must
/// not strip workers of their configuration). Returns the `Injected` outcome and
/// `(injected workloads, missed Pods)`.
#[allow(clippy::type_complexity)]
pub(super) async fn inject(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
    name: &str,
    secret_name: &str,
    checksum: Option<&String>,
    client_env: &[String],
) -> Result<(Option<Outcome>, Option<(i32, Vec<String>)>), Error> {
    let key = (ns.to_string(), name.to_string());
    if let Ok(mut sel) = ctx.selectors.lock() {
        match obj
            .spec
            .injection
            .as_ref()
            .and_then(|i| i.workload_selector.clone())
        {
            Some(s) => {
                sel.insert(key.clone(), s);
            }
            None => {
                sel.remove(&key);
            }
        }
    }
    Ok(match checksum {
        Some(sum) => {
            let inj = crate::inject::Injection::new(name, &obj.spec, secret_name, sum)
                .with_client_env(client_env);
            let r = workloads::sync(ctx, obj, ns, Some(&inj)).await?;
            if !r.vanished {
                // Held while any workload may carry this backend's annotations.
                let holds =
                    !(r.injected.is_empty() && r.throttled.is_empty() && r.failed.is_empty());
                set_finalizer(ctx, obj, ns, holds).await?;
            }
            (
                Some(injected_outcome(name, &r)),
                Some((r.injected.len() as i32, r.missed_pods)),
            )
        }
        None => (None, None),
    })
}

/// Server-side apply the whole status (the operator's field manager owns all of it, so a field
/// left out is removed).
pub(super) async fn write_status(
    obj: &CeleryResultBackend,
    ctx: &Context,
    status: &CeleryResultBackendStatus,
) -> Result<(), Error> {
    let api: Api<CeleryResultBackend> =
        Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": CeleryResultBackend::api_version(&()), "kind": CeleryResultBackend::kind(&()), "status": status});
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Step 4, report: write the status when it changed, publish Events on transitions, and keep
/// the metrics of conditions current.
pub(super) async fn report(
    obj: &CeleryResultBackend,
    ctx: &Context,
    old: &CeleryResultBackendStatus,
    new: &CeleryResultBackendStatus,
    provisioned: &Outcome,
    ready: &Outcome,
) -> Result<(), Error> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let managed = obj.spec.is_managed();
    if new != old {
        tracing::debug!(backend = %name, old = ?old, new = ?new, "status changed");
        write_status(obj, ctx, new).await?;
    }
    let reference = obj.object_ref(&());
    if status::condition_changed(old, new, "Provisioned") && managed {
        publish(
            ctx,
            &reference,
            provisioned.is_ready(),
            &provisioned.reason,
            &provisioned.message,
        )
        .await;
    }
    for type_ in ["Injected", "Healthy", "ConfigDelivered"] {
        if let Some(c) = new.conditions.iter().find(|c| c.type_ == type_) {
            // Not opting in to injection is a normal state, not worth an Event on every backend;
            // settings that reach workers are news only after they did not.
            let was_false = old
                .conditions
                .iter()
                .any(|o| o.type_ == type_ && o.status == "False");
            if status::condition_changed(old, new, type_)
                && c.status != "Unknown"
                && c.reason != "NoOptIn"
                && (type_ != "ConfigDelivered" || c.status == "False" || was_false)
            {
                publish(ctx, &reference, c.status == "True", &c.reason, &c.message).await;
            }
        }
    }
    if status::condition_changed(old, new, "Ready") {
        publish(
            ctx,
            &reference,
            ready.is_ready(),
            &ready.reason,
            &ready.message,
        )
        .await;
    }
    ctx.metrics.set_conditions(
        &format!("{ns}/{name}"),
        Some(
            new.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        ),
    );
    ctx.health
        .retain(|(n, nm)| ctx.store.get(&ObjectRef::new(nm).within(n)).is_some());
    ctx.metrics.retain_backends(|k| {
        let (n, nm) = k.split_once('/').unwrap_or(("", k));
        ctx.store.get(&ObjectRef::new(nm).within(n)).is_some()
    });
    Ok(())
}

/// Step 5, when to look again: ready in 10 minutes, converging in a minute (the StatefulSet watch
/// wakes it sooner), failed with exponential backoff.
pub(super) fn next(ctx: &Context, ready: &Outcome, key: (String, String)) -> Action {
    // Converging (a store rolling out) is not an error.
    if ready.state == State::Failed {
        ctx.metrics
            .errors
            .get_or_create(&crate::telemetry::ReasonLabel {
                reason: ready.reason.clone(),
            })
            .inc();
    }
    if ready.is_ready() {
        if let Ok(mut f) = ctx.failures.lock() {
            f.remove(&key);
        }
        Action::requeue(Duration::from_secs(600))
    } else if ready.state == State::Pending {
        // The StatefulSet watch wakes us when it becomes ready; this is only a safety net.
        Action::requeue(Duration::from_secs(60))
    } else {
        Action::requeue(backoff(bump_failures(ctx, key)))
    }
}
