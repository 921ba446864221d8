//! One room per backend family: what changes along the backend axis lives together. Each family
//! builds its backend's Celery `result_backend` URI and settings from the typed spec
//! (`crate::api::Backend`, in the family's `mod.rs` or file) and, where the operator can reach the
//! store, holds its client (`store.rs`, a `crate::stores::StoreClient`). The shared toolkits stay
//! in `crate::uri` (encoding, checks, the collector `Ctx`, errors) and `crate::stores`.

use crate::api::{Backend, BasicAuth, SecretKeyRef};
use crate::uri::{BuildError, Ctx};

mod prelude {
    //! What every backend file uses from the shared toolkit.

    pub(crate) use serde_json::{json, Value};

    pub(crate) use crate::api::*;
    pub(crate) use crate::uri::check::{self, Ipv6Rule};
    pub(crate) use crate::uri::encode::{self, component, host as fmt_host, query, userinfo};
    pub(crate) use crate::uri::{
        basic_credentials, checked_endpoint_url, checked_host, checked_path, checked_url, invalid,
        tls_reqs, BuildError, Ctx,
    };
}

pub mod arangodb;
pub mod cassandra;
pub mod consul;
pub mod cosmosdb;
pub mod couchbase;
pub mod couchdb;
pub mod dynamodb;
pub mod elasticsearch;
pub mod filesystem;
pub mod ironcache;
pub mod memcached;
pub mod mongodb;
pub mod objects;
pub mod redis;
pub mod rpc;
pub mod sql;

/// What every backend family provides (one implementation per backend type, in its file); the
/// defaults fit a backend the operator only connects to and has no client for.
pub(crate) trait Family {
    /// Every Secret reference of the backend, each with the field that names it.
    fn secret_refs(&self, refs: &mut SecretRefs);
    /// Build the backend's Celery URI and settings into `cx`.
    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError>;
    /// The backend's `tls` block, when it has one (enabled or not).
    fn tls(&self) -> Option<&crate::api::TlsConfig> {
        None
    }
    /// Where TLS, as this spec asks for it, reaches Celery when only settings (so
    /// `celeryconfig.py`) carry it, not the URI (e.g. `cassandra_options.ssl_options`): an injected
    /// worker given only the URI would not use TLS. The builder refuses such a spec without
    /// `injection.configModule: true` (see `uri::build`). `None`: the URI carries TLS, or no TLS.
    fn tls_in_settings(&self) -> Option<&'static str> {
        None
    }
    /// The file mode (octal, e.g. `0o640`) the worker's client needs on a mounted private key
    /// (`tls.key` of `clientCertificateSecretRef`), when the Secret volume's default (0644) is not
    /// accepted; `None`: the default. libpq refuses a key that group or others can read unless
    /// root owns it, then allowing 0640 (fe-secure-openssl.c, "has group or world access").
    fn private_key_mode(&self) -> Option<i32> {
        None
    }
    /// The family's own reason to refuse `managed` (`MANAGED_WHY` of its API type), if any;
    /// otherwise the refusal names the backends the operator provisions
    /// (`api::kinds::managed_refusal`).
    fn managed_why(&self) -> Option<&'static str> {
        None
    }
    /// Whether the operator's cleanup reads each stored result (its JSON `date_done`) in this store,
    /// so a result serialized otherwise, or compressed, is unreadable to it and kept.
    fn cleanup_reads_results(&self) -> bool {
        false
    }
    /// Whether the store keeps `result_expires` as a TTL on each result (a 0s value is warned:
    /// results then never expire).
    fn expires_as_ttl(&self) -> bool {
        false
    }
    /// A store-specific limit on `result_expires` in seconds (> 0): the message when it is out.
    fn check_result_expires(&self, _secs: f64) -> Result<(), &'static str> {
        Ok(())
    }
    /// For a backend inside the workers' own filesystem: its path (for messages) and the
    /// directory that must exist in the operator's filesystem for it to be checked and cleaned
    /// (see `stores::not_visible`); `None` for network stores.
    fn worker_local(_cfg: &crate::uri::BackendConfig) -> Option<(String, std::path::PathBuf)>
    where
        Self: Sized,
    {
        None
    }
    /// The operator's store client for a configuration of this family (see [`store_client`]).
    fn store_client(
        _cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>>
    where
        Self: Sized,
    {
        None
    }
}

/// Secret references collected with the field that names each (`spec.redis.external.auth...`).
#[derive(Default)]
pub(crate) struct SecretRefs(pub(crate) Vec<(String, SecretKeyRef)>);

impl SecretRefs {
    /// The username and password references of a basic-auth block at `field`.
    pub(crate) fn auth(&mut self, field: &str, a: &Option<BasicAuth>) {
        if let Some(a) = a {
            self.one(
                &format!("{field}.usernameSecretRef"),
                &a.username_secret_ref,
            );
            self.one(
                &format!("{field}.passwordSecretRef"),
                &a.password_secret_ref,
            );
        }
    }

    /// The keys of a `tls` block at `field`: `caSecretRef`, `caConfigMapRef` (named
    /// `configmap:<name>`, [`crate::api::config_map_source`]), and `tls.crt`/`tls.key` of
    /// `clientCertificateSecretRef`.
    pub(crate) fn tls(&mut self, field: &str, t: &Option<crate::api::TlsConfig>) {
        if let Some(t) = t.as_ref().filter(|t| t.enabled) {
            self.one(&format!("{field}.caSecretRef"), &t.ca_secret_ref);
            if let Some(r) = &t.ca_config_map_ref {
                self.0.push((
                    format!("{field}.caConfigMapRef"),
                    SecretKeyRef {
                        name: crate::api::config_map_source(&r.name),
                        key: r.key.clone(),
                    },
                ));
            }
            if let Some(r) = &t.client_certificate_secret_ref {
                for key in [crate::api::TLS_CERT_KEY, crate::api::TLS_KEY_KEY] {
                    self.0.push((
                        format!("{field}.clientCertificateSecretRef"),
                        SecretKeyRef {
                            name: r.name.clone(),
                            key: key.into(),
                        },
                    ));
                }
            }
        }
    }

    /// One optional reference at `field`.
    pub(crate) fn one(&mut self, field: &str, r: &Option<SecretKeyRef>) {
        if let Some(r) = r {
            self.0.push((field.to_string(), r.clone()));
        }
    }
}

/// Generates the family and store-client dispatch from the rows of `crate::api::kinds`.
macro_rules! family_dispatch {
    ($( $variant:ident ($ty:ident) $field:ident $camel:literal $mode:ident [$($scheme:literal),*]; )*) => {
        impl<'a> Backend<'a> {
            /// The family implementation of this backend.
            pub(crate) fn family(self) -> &'a dyn Family {
                match self {
                    $( Backend::$variant(b) => b, )*
                }
            }

            /// Managed mode, for the rows marked `managed`.
            pub(crate) fn managed_family(self) -> Option<&'a dyn crate::provision::Managed> {
                match self {
                    $( Backend::$variant(b) => family_dispatch!(@managed $mode b), )*
                }
            }

            /// The profile of the store this backend's family provisions, if it does.
            pub(crate) fn managed_profile(self) -> Option<&'static crate::provision::Profile> {
                match self {
                    $( Backend::$variant(_) => family_dispatch!(@profile $mode $ty), )*
                }
            }
        }

        /// The operator's client for a backend `kind` and a built (or hand-written)
        /// configuration: `None` where the operator has none, `Some(Err(why))` where the
        /// configuration cannot make one.
        pub(crate) fn store_client(
            kind: crate::api::BackendKind,
            cfg: &crate::uri::BackendConfig,
            result_expires_set: bool,
        ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
            match kind {
                $( crate::api::BackendKind::$variant => <crate::api::$ty as Family>::store_client(cfg, result_expires_set), )*
            }
        }

        /// The profiles of every store the operator can provision, in the rows' order.
        pub(crate) fn managed_profiles() -> Vec<&'static crate::provision::Profile> {
            [$( family_dispatch!(@profile $mode $ty), )*]
                .into_iter()
                .flatten()
                .collect()
        }

        /// Where a worker-local backend of `kind` lives ([`Family::worker_local`]).
        pub(crate) fn worker_local(
            kind: crate::api::BackendKind,
            cfg: &crate::uri::BackendConfig,
        ) -> Option<(String, std::path::PathBuf)> {
            match kind {
                $( crate::api::BackendKind::$variant => <crate::api::$ty as Family>::worker_local(cfg), )*
            }
        }
    };
    (@managed managed $b:ident) => { Some($b) };
    (@managed external $b:ident) => { { let _ = $b; None } };
    (@profile managed $ty:ident) => {
        Some(<crate::api::$ty as crate::provision::ManagedProfile>::PROFILE)
    };
    (@profile external $ty:ident) => { None };
}

crate::api::kinds::with_backends!(family_dispatch);

impl<'a> Backend<'a> {
    /// The enabled `tls` block of this backend, when its family has one.
    pub fn tls(self) -> Option<&'a crate::api::TlsConfig> {
        self.family().tls().filter(|t| t.enabled)
    }
}

impl crate::api::CeleryResultBackendSpec {
    /// The enabled `tls` block of the chosen backend (Redis, MongoDB, SQL): what injection mounts
    /// into workers.
    pub fn tls(&self) -> Option<&crate::api::TlsConfig> {
        self.backend().ok()?.tls()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The fast middle of the test pyramid: each family file holds a table of its examples
    //! (`examples/<name>.yaml` + `<name>-secret.yaml`) and the URI each must build, checked here
    //! in milliseconds without Python. The oracle (tests/oracle.rs) proves these URIs against
    //! Celery itself.

    fn load(name: &str) -> crate::api::CeleryResultBackend {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        crate::manifests::load_backend(&dir.join(format!("{name}.yaml")))
            .unwrap()
            .0
    }

    /// Each `(example, uri)`: the example builds exactly `uri`; `""`: the family refuses it,
    /// naming its own field.
    pub(crate) fn assert_examples(table: &[(&str, &str)]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut wrong = vec![];
        for (name, want) in table {
            let (backend, mut secrets) =
                crate::manifests::load_backend(&dir.join(format!("{name}.yaml"))).unwrap();
            let secret_file = dir.join(format!("{name}-secret.yaml"));
            if secret_file.exists() {
                crate::manifests::load_secrets(&secret_file, &mut secrets, None).unwrap();
            }
            let field = format!(
                "spec.{}",
                backend
                    .spec
                    .kinds()
                    .first()
                    .map(|k| k.field())
                    .unwrap_or_default()
            );
            let got = match crate::uri::build(&backend.spec, &secrets) {
                Ok(c) => c.uri,
                Err(e) if e.to_string().starts_with(&field) => String::new(),
                Err(e) => format!("refused: {e}"),
            };
            if got != *want {
                wrong.push(format!("{name}: built {got:?}, table {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn every_backend_kind_has_an_example() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut kinds = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".yaml") else {
                continue;
            };
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            if stem.ends_with("-secret") || !text.contains("kind: CeleryResultBackend") {
                continue;
            }
            kinds.extend(load(stem).spec.kinds());
        }
        assert_eq!(
            kinds.len(),
            crate::api::BackendKind::ALL.len(),
            "every backend kind has an example: {kinds:?}"
        );
    }
}
