//! One resolve path from a live backend to its Celery configuration, shared by the controller
//! (which publishes it), the cleanup policies and the CLI's `--backend`: which spec the builder
//! sees (the external-equivalent one for a managed backend) and which Secrets (and CA
//! ConfigMaps) it reads.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};

use crate::api::{CeleryResultBackend, CeleryResultBackendSpec};
use crate::provision::{self, Plan, PlanError};
use crate::uri::{self, BackendConfig, SecretValues};

/// What the builder needs for one backend, before any Secret is read.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The spec the builder sees: the backend's own (external) or the one rendered for the store
    /// the operator provisions (managed).
    pub spec: CeleryResultBackendSpec,
    /// The Secrets it reads (referenced ones, or the generated credentials), and the ConfigMaps
    /// as `configmap:<name>`, sorted.
    pub secrets: Vec<String>,
    /// The provisioning plan (managed backends only).
    pub plan: Option<Plan>,
}

/// The builder's inputs for backend `name` in `namespace`. Pure. `images` only shape the
/// provisioned objects, never the URI, so callers that do not provision may pass the defaults.
///
/// Errors: the spec breaks a rule ([`uri::validate`]), naming the field.
pub fn inputs(
    name: &str,
    namespace: &str,
    spec: &CeleryResultBackendSpec,
    images: &provision::StoreImages,
) -> Result<Inputs, PlanError> {
    uri::validate(spec)?;
    if spec.is_managed() {
        let plan = provision::plan(name, namespace, spec, images)?;
        Ok(Inputs {
            spec: plan.external_spec.clone(),
            secrets: vec![plan.credentials_secret_name.clone()],
            plan: Some(plan),
        })
    } else {
        let names: BTreeSet<String> = uri::secret_refs(spec)
            .into_iter()
            .map(|(_, r)| r.name)
            .collect();
        Ok(Inputs {
            spec: spec.clone(),
            secrets: names.into_iter().collect(),
            plan: None,
        })
    }
}

/// Read the named Secrets of `namespace` as text, and the ConfigMaps among `names`
/// (`configmap:<name>`, [`crate::api::CONFIG_MAP_PREFIX`]: their `data`); missing ones are simply
/// absent (the builder then names the field that refers to them).
pub async fn read_secrets(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<SecretValues, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut values = SecretValues::new();
    for n in names {
        match n.strip_prefix(crate::api::CONFIG_MAP_PREFIX) {
            Some(cm) => {
                if let Some(c) = config_maps.get_opt(cm).await? {
                    values.insert(n.clone(), c.data.unwrap_or_default());
                }
            }
            None => {
                if let Some(s) = secrets.get_opt(n).await? {
                    values.insert(n.clone(), crate::secret_data::secret_text(&s));
                }
            }
        }
    }
    Ok(values)
}

/// The Celery configuration of a live backend, as the controller publishes it (minus the
/// provisioning itself). Errors are messages that name the field or the Secret, never a value.
pub async fn config(client: &Client, obj: &CeleryResultBackend) -> Result<BackendConfig, String> {
    let ns = obj.namespace().unwrap_or_default();
    let inputs = inputs(
        &obj.name_any(),
        &ns,
        &obj.spec,
        &provision::StoreImages::default(),
    )
    .map_err(|e| e.to_string())?;
    let values = read_secrets(client, &ns, &inputs.secrets)
        .await
        .map_err(|e| {
            format!(
                "cannot read the referenced objects {:?}: {e}",
                inputs.secrets
            )
        })?;
    uri::build(&inputs.spec, &values).map_err(|e| e.to_string())
}
