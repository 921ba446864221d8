//! External credentials in, URI Secret out: read referenced Secrets (indexing who refers to
//! which), and server-side apply the URI Secret; its keyed checksum of what workers read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error, CONFIG_KEY, FIELD_MANAGER, URI_KEY};
use crate::api::CeleryResultBackend;
use crate::provision;
use crate::uri::{self, SecretValues};

/// Read every referenced Secret; missing ones are simply absent (the builder names the field).
pub(super) async fn dereference(
    ctx: &Context,
    ns: &str,
    name: &str,
    names: &[String],
) -> Result<SecretValues, Error> {
    if let Ok(mut index) = ctx.index.lock() {
        let me = (ns.to_string(), name.to_string());
        for set in index.values_mut() {
            set.remove(&me);
        }
        index.retain(|_, set| !set.is_empty());
        for n in names {
            index
                .entry((ns.to_string(), n.clone()))
                .or_default()
                .insert(me.clone());
        }
    }
    Ok(crate::resolve::read_secrets(&ctx.client, ns, names).await?)
}

/// Server-side apply the URI Secret unless its content is already exactly right.
pub(super) async fn publish_uri_secret(
    obj: &CeleryResultBackend,
    ctx: &Context,
    ns: &str,
    secret_name: &str,
    cfg: &uri::BackendConfig,
) -> Result<String, kube::Error> {
    let name = obj.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let live = api.get_opt(secret_name).await?;
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put(URI_KEY, &cfg.uri);
    put(CONFIG_KEY, &uri::config_module(cfg));
    for (k, v) in &cfg.binding {
        put(k, v);
    }
    for (k, v) in &cfg.env {
        put(k, v);
    }
    let owner = obj
        .controller_owner_ref(&())
        .into_iter()
        .collect::<Vec<_>>();
    let type_ = format!(
        "servicebinding.io/{}",
        cfg.binding
            .get("type")
            .map(String::as_str)
            .unwrap_or("celery")
    );
    // Keyed by the installation's secret key and bound to this backend; only what workers read.
    let config_module = obj.spec.config_module();
    let client_env = crate::inject::client_env(&obj.spec, cfg);
    let read: Vec<(&str, &[u8])> =
        crate::inject::keys_read(config_module, client_env.iter().map(String::as_str))
            .into_iter()
            .filter_map(|k| data.get(k).map(|v| (k, v.0.as_slice())))
            .collect();
    let checksum = crate::inject::checksum(
        &ctx.checksum_key,
        obj.metadata.uid.as_deref().unwrap_or_default(),
        &read,
    );
    if let Some(live) = &live {
        let same = live.data.as_ref() == Some(&data)
            && live.type_.as_deref() == Some(type_.as_str())
            && live.metadata.owner_references.as_ref() == Some(&owner);
        if same {
            return Ok(checksum);
        }
    }
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
                "app.kubernetes.io/instance": provision::label_value(&name),
                provision::BACKEND_LABEL: provision::label_value(&name),
            },
            "ownerReferences": owner,
        },
        "type": type_,
        "data": data,
    });
    api.patch(
        secret_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await?;
    Ok(checksum)
}
