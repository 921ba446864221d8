//! Managed mode: create the credentials once, apply the StatefulSet and Services, and report
//! whether the store is ready.

use crate::secret_data::secret_text;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::status::{Outcome, State};
use super::{api_failure, apply_if_changed, publish, Context, Error, FIELD_MANAGER};
use crate::api::CeleryResultBackend;
use crate::provision::{self, Plan};
use crate::uri::SecretValues;

/// Outcome of the provisioning half of a managed reconcile.
pub(super) struct Provisioned {
    pub(super) outcome: Outcome,
    pub(super) secrets: SecretValues,
}

pub(super) async fn provision(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
    plan: &Plan,
) -> Result<Provisioned, Error> {
    let owner = obj
        .controller_owner_ref(&())
        .into_iter()
        .collect::<Vec<_>>();
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let creds_name = &plan.credentials_secret_name;
    // Credentials: created once, never regenerated. Owned by the backend only with Delete.
    let cred_owner: Vec<_> = match plan.deletion_policy {
        crate::api::DeletionPolicy::Delete => owner.clone(),
        crate::api::DeletionPolicy::Retain => vec![],
    };
    let creds = match secrets_api.get_opt(creds_name).await? {
        Some(s) => {
            let current = s.metadata.owner_references.clone().unwrap_or_default();
            if current != cred_owner {
                let patch = json!({"metadata": {"ownerReferences": cred_owner}});
                secrets_api
                    .patch(creds_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            s
        }
        None => {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {
                    "name": creds_name,
                    "namespace": ns,
                    "labels": {
                        "app.kubernetes.io/managed-by": FIELD_MANAGER,
                        "app.kubernetes.io/instance": provision::label_value(&obj.name_any()),
                        provision::BACKEND_LABEL: provision::label_value(&obj.name_any()),
                    },
                    "ownerReferences": cred_owner,
                },
                "type": "Opaque",
                "stringData": {
                    provision::USERNAME_KEY: plan.username,
                    provision::PASSWORD_KEY: provision::generate_password(),
                },
            }))
            .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match secrets_api.create(&pp, &secret).await {
                Ok(s) => {
                    publish(
                        ctx,
                        &obj.object_ref(&()),
                        true,
                        "CredentialsGenerated",
                        &format!("generated credentials in Secret {creds_name}"),
                    )
                    .await;
                    s
                }
                Err(kube::Error::Api(s)) if s.code == 409 => secrets_api.get(creds_name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut secrets = SecretValues::new();
    secrets.insert(creds_name.clone(), secret_text(&creds));
    let has_password = secrets
        .get(creds_name)
        .is_some_and(|d| d.contains_key(provision::PASSWORD_KEY));
    if !has_password {
        return Ok(Provisioned {
            outcome: Outcome::failed(
                "CredentialsInvalid",
                format!("Secret {creds_name} has no key {:?}; restore it (the operator never regenerates credentials, the store keeps the old ones)", provision::PASSWORD_KEY),
            ),
            secrets,
        });
    }
    let mut sts_live = None;
    for o in &plan.objects {
        let mut o = o.clone();
        o["metadata"]["ownerReferences"] = json!(owner);
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let what = format!(
            "{kind} {}",
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        let res = if kind == "StatefulSet" {
            apply_if_changed(&Api::<StatefulSet>::namespaced(ctx.client.clone(), ns), o)
                .await
                .map(|s| sts_live = s)
        } else {
            apply_if_changed(&Api::<Service>::namespaced(ctx.client.clone(), ns), o)
                .await
                .map(|_| ())
        };
        if let Err(e) = res {
            return Ok(Provisioned {
                outcome: api_failure(&what, e)?,
                secrets,
            });
        }
    }
    let (ready, detail) = sts_live
        .as_ref()
        .map(provision::statefulset_ready)
        .unwrap_or((false, "StatefulSet not found".into()));
    let outcome = if ready {
        Outcome {
            state: State::Ready,
            reason: "StoreReady".into(),
            message: format!("StatefulSet {}: {detail}", plan.statefulset_name),
        }
    } else {
        Outcome::pending(
            "Provisioning",
            format!(
                "waiting for StatefulSet {}: {detail}",
                plan.statefulset_name
            ),
        )
    };
    Ok(Provisioned { outcome, secrets })
}
