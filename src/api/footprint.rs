//! The operator's footprint on the cluster in one place: field managers, labels, annotations,
//! Secret keys and the finalizer it writes. Everything else refers to these names.

// ---- Field managers (server-side apply; `metadata.managedFields[].manager`) ----

/// Field manager of every server-side apply the operator makes on objects it owns (URI Secret,
/// provisioned stores, status, webhook configuration); also its `app.kubernetes.io/managed-by`.
pub const FIELD_MANAGER: &str = "celery-backend-operator";
/// Field manager of an installation record's metadata (the webhook maintainer owns `webhooks`).
pub const RECORD_MANAGER: &str = "celery-backend-operator/installation";
/// Field manager of injections made by versions before per-backend managers; its fields are
/// removed the first time a backend injects or releases such a workload.
pub const LEGACY_INJECTOR: &str = "celery-backend-operator-injector";

/// Field manager of backend `backend`'s injection into workloads: one per backend, so two
/// backends injecting one workload (different variables) never remove each other's fields, and
/// applying nothing as this manager removes exactly what this backend injected. At most 96
/// characters for a 63-character backend name (managedFields allow 128).
pub fn injector(backend: &str) -> String {
    format!("{LEGACY_INJECTOR}/{backend}")
}

// ---- Labels ----

/// Label selector matching every object the operator maintains.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=celery-backend-operator";
/// Label naming the backend a workload or Pod wants (opt-in).
pub const OPT_IN_LABEL: &str = "celery.dev/result-backend";
/// Namespace label that turns injection off for the whole namespace (`disabled`), on every path.
pub const NAMESPACE_OPT_OUT_LABEL: &str = "celery.dev/injection";
/// Label on everything the operator provisions for a backend. Deliberately not the opt-in label
/// [`OPT_IN_LABEL`]: a provisioned store must never be injected into.
pub const BACKEND_LABEL: &str = "celery.dev/backend";

// ---- Annotations ----

/// Annotation naming the namespace of the wanted backend (only the Pod's own namespace is served).
pub const NAMESPACE_ANNOTATION: &str = "celery.dev/result-backend-namespace";
/// Prefix of the pod-template annotation `checksum.celery.dev/<backend>`: the keyed checksum of
/// what that backend makes a worker read. The operator writes it on the pod templates of
/// opted-in workloads (a change rolls them) and Pods inherit it from their template; the webhook
/// injects every backend named this way.
pub const CHECKSUM_PREFIX: &str = "checksum.celery.dev/";
/// Prefix of `injected.celery.dev/<backend>`: on a workload, the record of what the backend
/// injects (JSON `{"envVar", "configModule"}`), so opting out removes exactly that; on a Pod, the
/// webhook's stamp (the checksum) that it injected the Pod.
pub const INJECTED_PREFIX: &str = "injected.celery.dev/";
/// Pod-template checksum annotation of earlier versions (one backend per workload); still read so
/// Pods admitted before an upgrade are not reported as missed.
pub const LEGACY_CHECKSUM_ANNOTATION: &str = "celery.dev/result-backend-checksum";
/// Workload record annotation of earlier versions.
pub const LEGACY_RECORD_ANNOTATION: &str = "celery.dev/injected";
/// Annotation with the hash of the manifest last applied to a provisioned object.
pub const APPLIED_HASH: &str = "celery.dev/applied-hash";
/// Annotation naming the installation that owns an object (a record, the webhook certificate
/// Secret, the leader Lease).
pub const INSTALLATION: &str = "celery.dev/installation";
/// Annotation on a record: `*` (the whole cluster) or the one namespace the installation serves.
pub const SCOPE: &str = "celery.dev/scope";

// ---- Secret keys ----

/// Key of the URI in the published Secret (also the default variable name).
pub const URI_KEY: &str = "CELERY_RESULT_BACKEND";
/// Key of the config module in the published Secret.
pub const CONFIG_KEY: &str = "celeryconfig.py";
/// Key of the generated user name in a provisioned store's credentials Secret.
pub const USERNAME_KEY: &str = "username";
/// Key of the generated password in a provisioned store's credentials Secret.
pub const PASSWORD_KEY: &str = "password";
/// Key of the installation's checksum key in its Secret (`<lease-name>-checksum-key`).
pub const CHECKSUM_KEY: &str = "checksum-key";

// ---- Pod injection ----

/// Name of the volume carrying `celeryconfig.py`.
pub const CONFIG_VOLUME: &str = "celery-result-backend";
/// Where `celeryconfig.py` is mounted.
pub const CONFIG_MOUNT: &str = "/etc/celery-result-backend";
/// The variable a `configModule` injection sets (Celery's `config_from_envvar` default name).
pub const CONFIG_MODULE_VAR: &str = "CELERY_CONFIG_MODULE";

// ---- Finalizer ----

/// Set before a backend's first injection and held while workloads may carry it: deleting the
/// backend then first removes exactly what it injected (as the Service Binding spec asks of a
/// deleted binding), so no worker is left referring to a URI Secret that garbage collection is
/// about to remove.
pub const FINALIZER: &str = "celery.dev/release-workloads";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injector_field_managers_are_per_backend_and_fit() {
        assert_eq!(
            injector("orders"),
            "celery-backend-operator-injector/orders"
        );
        assert!(injector(&"b".repeat(63)).len() <= 128);
    }
}
