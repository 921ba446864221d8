//! The release-workloads finalizer: set before the first injection and held while workloads
//! carry one, so deleting a backend first removes exactly what it injected.

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{publish, workloads, Context, Error};
use crate::api::CeleryResultBackend;

pub use crate::api::footprint::FINALIZER;

/// Add or remove [`FINALIZER`] with a JSON patch that first tests the current list, so a
/// concurrent change to another finalizer is never lost (the reconcile is retried instead).
pub(super) async fn set_finalizer(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
    want: bool,
) -> Result<(), kube::Error> {
    let holds = |f: &Option<Vec<String>>| f.iter().flatten().any(|f| f == FINALIZER);
    if holds(&obj.metadata.finalizers) == want {
        return Ok(());
    }
    // The cached object may predate our own last change: decide on the live one.
    let api: Api<CeleryResultBackend> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) = api.get_opt(&obj.name_any()).await? else {
        return Ok(());
    };
    let current = live.metadata.finalizers.clone();
    if holds(&current) == want {
        return Ok(());
    }
    let list = current.clone().unwrap_or_default();
    let ops = match (want, &current) {
        (true, None) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        (true, Some(list)) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
        (false, _) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "replace", "path": "/metadata/finalizers",
             "value": list.iter().filter(|f| *f != FINALIZER).collect::<Vec<_>>()},
        ]),
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

/// Make sure [`FINALIZER`] is held before a first injection. `Ok(false)`: the backend is gone or
/// being deleted (a finalizer can no longer be added), so nothing may be injected.
pub(super) async fn ensure_finalizer(
    ctx: &Context,
    obj: &CeleryResultBackend,
    ns: &str,
) -> Result<bool, kube::Error> {
    let api: Api<CeleryResultBackend> = Api::namespaced(ctx.client.clone(), ns);
    let Some(live) = api.get_opt(&obj.name_any()).await? else {
        return Ok(false);
    };
    if live.metadata.deletion_timestamp.is_some() || live.metadata.uid != obj.metadata.uid {
        return Ok(false);
    }
    match set_finalizer(ctx, &live, ns, true).await {
        Ok(()) => {}
        // Gone, or deleted in between (no new finalizers on an object being deleted).
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 403 | 422) => return Ok(false),
        Err(e) => return Err(e),
    }
    // Deleted after the finalizer landed: the finalizer holds it, and the deletion's reconcile
    // releases; inject nothing now.
    let now = api.get_opt(&obj.name_any()).await?;
    Ok(now.is_some_and(|b| {
        b.metadata.deletion_timestamp.is_none() && b.finalizers().iter().any(|f| f == FINALIZER)
    }))
}

/// A backend being deleted: release the workloads it injected, then let it go.
pub(super) async fn finalize_backend(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
) -> Result<Action, Error> {
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        let report = workloads::sync(ctx, obj, ns, None).await?;
        if !report.released.is_empty() {
            publish(
                ctx,
                &obj.object_ref(&()),
                true,
                "WorkloadsReleased",
                &format!(
                    "backend deleted: removed the injection from {}",
                    report.released.join(", ")
                ),
            )
            .await;
        }
        set_finalizer(ctx, obj, ns, false).await?;
    }
    Ok(Action::await_change())
}
