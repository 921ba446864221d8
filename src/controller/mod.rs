//! The CeleryResultBackend controller: dereference Secrets -> build (pure) -> server-side apply the
//! URI Secret -> status conditions and Events. This slice handles external mode; managed mode
//! reports `ManagedNotImplemented` until the provisioner lands.

pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{BindingRef, CeleryResultBackend, CeleryResultBackendStatus, SecretKeyRef};
use crate::uri::{self, BuildError, SecretValues};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "celery-backend-operator";
/// Key of the URI in the published Secret.
pub const URI_KEY: &str = "CELERY_RESULT_BACKEND";
/// Key of the config module in the published Secret.
pub const CONFIG_KEY: &str = "celeryconfig.py";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no namespace")]
    NoNamespace,
}

/// Which backends refer to which Secret (namespace, secret name), so a Secret change
/// re-reconciles exactly those backends without caching Secret data.
type SecretIndex = Arc<Mutex<HashMap<(String, String), HashSet<ObjectRef<CeleryResultBackend>>>>>;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    index: SecretIndex,
}

/// Name of the Secret holding the URI for a backend (fits 253 characters).
pub fn uri_secret_name(backend: &str) -> String {
    let suffix = "-celery-result-backend";
    let keep = 253 - suffix.len();
    format!("{}{suffix}", &backend[..backend.len().min(keep)])
}

/// Run the controller until SIGTERM/Ctrl-C.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let backends: Api<CeleryResultBackend> = Api::all(client.clone());
    if let Err(e) = backends
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        anyhow::bail!("cannot list CeleryResultBackends ({e}); are the CRDs installed? kubectl apply -f crds/");
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        index: SecretIndex::default(),
    });
    let index = ctx.index.clone();
    // Secrets: metadata only, so memory does not grow with Secret data; mapped through the index.
    let secret_changes = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    Controller::new(backends, watcher::Config::default().any_semantic())
        .owns(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default()
                .labels("app.kubernetes.io/managed-by=celery-backend-operator"),
        )
        .watches_stream(secret_changes, move |s| {
            let key = (s.namespace().unwrap_or_default(), s.name_any());
            index
                .lock()
                .map(|i| i.get(&key).cloned().unwrap_or_default())
                .unwrap_or_default()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(backend = %obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

fn error_policy(_obj: Arc<CeleryResultBackend>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile error; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// Read every referenced Secret; missing ones are simply absent (the builder names the field).
async fn dereference(
    ctx: &Context,
    ns: &str,
    obj: &CeleryResultBackend,
) -> Result<SecretValues, Error> {
    let refs = uri::secret_refs(&obj.spec);
    let names: HashSet<String> = refs.iter().map(|(_, r)| r.name.clone()).collect();
    if let Ok(mut index) = ctx.index.lock() {
        let me = ObjectRef::from_obj(obj);
        for set in index.values_mut() {
            set.remove(&me);
        }
        for n in &names {
            index
                .entry((ns.to_string(), n.clone()))
                .or_default()
                .insert(me.clone());
        }
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut values = SecretValues::new();
    for n in names {
        if let Some(s) = api.get_opt(&n).await? {
            let mut data = BTreeMap::new();
            for (k, v) in s.data.unwrap_or_default() {
                if let Ok(text) = String::from_utf8(v.0) {
                    data.insert(k, text);
                }
            }
            values.insert(n, data);
        }
    }
    Ok(values)
}

async fn reconcile(obj: Arc<CeleryResultBackend>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let name = obj.name_any();
    let secrets = dereference(&ctx, &ns, &obj).await?;
    let kind = uri::kind_of(&obj.spec).ok().map(|k| k.field().to_string());
    let mode = if obj.spec.is_managed() {
        "managed"
    } else {
        "external"
    };
    let built = if obj.spec.is_managed() {
        Err(status::Outcome::failed(
            "ManagedNotImplemented",
            "managed mode is not implemented in this version of the operator; use external".into(),
        ))
    } else {
        uri::build(&obj.spec, &secrets)
            .map_err(|e: BuildError| status::Outcome::failed(e.reason(), e.to_string()))
    };
    let secret_name = uri_secret_name(&name);
    let outcome = match built {
        Ok(cfg) => {
            let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
            let mut put = |k: &str, v: &str| {
                data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
            };
            put(URI_KEY, &cfg.uri);
            put(CONFIG_KEY, &uri::config_module(&cfg));
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
            let secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret_name,
                    "namespace": ns,
                    "labels": {
                        "app.kubernetes.io/managed-by": FIELD_MANAGER,
                        "app.kubernetes.io/instance": name,
                        "celery.dev/result-backend": name,
                    },
                    "ownerReferences": owner,
                },
                "type": format!("servicebinding.io/{}", cfg.binding.get("type").map(String::as_str).unwrap_or("celery")),
                "data": data,
            });
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            api.patch(
                &secret_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
            status::Outcome::ready(&secret_name)
        }
        Err(failed) => failed,
    };
    let old = obj.status.clone().unwrap_or_default();
    let new = status::next(
        &old,
        obj.metadata.generation,
        kind,
        mode,
        &outcome,
        &secret_name,
    );
    if new != old {
        let api: Api<CeleryResultBackend> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"apiVersion": "celery.dev/v1alpha1", "kind": "CeleryResultBackend", "status": new});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    if status::ready_changed(&old, &new) {
        let ev = Event {
            type_: if outcome.ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: outcome.reason.clone(),
            note: Some(outcome.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
    Ok(if outcome.ready {
        Action::requeue(Duration::from_secs(600))
    } else {
        Action::requeue(Duration::from_secs(30))
    })
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
