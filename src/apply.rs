//! Generic server-side apply with drift repair (beside the pure `drift` check): skip when nothing changed (applied-hash and no
//! drift), put back drift, and replace lists another manager re-keyed.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::footprint::{APPLIED_HASH, FIELD_MANAGER};

pub fn hash_of(v: &Value) -> String {
    // FNV-1a over the canonical JSON; stable across releases, enough to detect a change.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Apply `desired` unless the live object already carries the same applied-hash *and* still
/// holds every field of `desired` (so a steady state issues reads only, and an edit to a field
/// the operator owns, such as a scaled-down StatefulSet, is put back).
pub async fn apply_if_changed<K>(api: &Api<K>, mut desired: Value) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = hash_of(&desired);
    desired["metadata"]["annotations"][APPLIED_HASH] = json!(hash);
    let mut drifted = false;
    if let Some(live) = api.get_opt(&name).await? {
        if live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH))
            == Some(&hash)
        {
            let live_json = serde_json::to_value(&live).map_err(kube::Error::SerdeError)?;
            match crate::drift::first_drift(&desired, &live_json) {
                None => return Ok(Some(live)),
                Some(path) => {
                    drifted = true;
                    tracing::info!(
                        kind = %desired["kind"].as_str().unwrap_or_default(),
                        name = %name,
                        field = %path,
                        "correcting drift: a field the operator owns was changed"
                    )
                }
            }
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await;
    match applied {
        // An edit re-keyed an element of a list the operator owns (a renumbered Service port):
        // apply cannot remove the element it does not own, so replace those lists, then apply.
        Err(kube::Error::Api(s)) if s.code == 422 && drifted => {
            let Some(live) = api.get_opt(&name).await? else {
                return Err(kube::Error::Api(s));
            };
            let live_json = serde_json::to_value(&live).map_err(kube::Error::SerdeError)?;
            let lists = crate::drift::drifted_lists(&desired, &live_json);
            if lists.is_empty() {
                return Err(kube::Error::Api(s));
            }
            let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion",
                "value": live.meta().resource_version})];
            for (path, value) in &lists {
                tracing::info!(name = %name, field = %path, "replacing a list the operator owns");
                ops.push(json!({"op": "replace", "path": path, "value": value}));
            }
            let patch: json_patch::Patch =
                serde_json::from_value(json!(ops)).map_err(kube::Error::SerdeError)?;
            api.patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::<()>::Json(patch),
            )
            .await?;
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map(Some)
        }
        other => other.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_hash_is_stable_and_sensitive() {
        let a = json!({"a": 1, "b": [1, 2]});
        assert_eq!(hash_of(&a), hash_of(&a.clone()));
        assert_ne!(hash_of(&a), hash_of(&json!({"a": 2, "b": [1, 2]})));
    }
}
