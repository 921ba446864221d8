//! One file per backend family: what changes along the backend axis lives together. Each file
//! builds its backend's Celery `result_backend` URI and settings from the typed spec
//! (`crate::api::Backend`); the shared toolkit (encoding, checks, the collector `Ctx`, errors)
//! stays in `crate::uri`, the store clients in `crate::stores`.

use crate::api::{Backend, BasicAuth, SecretKeyRef};
use crate::uri::{BuildError, Ctx};

mod prelude {
    //! What every backend file uses from the shared toolkit.

    pub(crate) use serde_json::{json, Value};

    pub(crate) use crate::api::*;
    pub(crate) use crate::uri::check::{self, Ipv6Rule};
    pub(crate) use crate::uri::encode::{self, component, host as fmt_host, query, userinfo};
    pub(crate) use crate::uri::{
        basic_credentials, checked_host, checked_path, checked_tls_paths, checked_url,
        double_component, invalid, tls_reqs, BuildError, Ctx,
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

/// What every backend family provides (one implementation per backend type, in its file).
pub(crate) trait Family {
    /// Every Secret reference of the backend, each with the field that names it.
    fn secret_refs(&self, refs: &mut SecretRefs);
    /// Build the backend's Celery URI and settings into `cx`.
    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError>;
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

    /// One optional reference at `field`.
    pub(crate) fn one(&mut self, field: &str, r: &Option<SecretKeyRef>) {
        if let Some(r) = r {
            self.0.push((field.to_string(), r.clone()));
        }
    }
}

impl<'a> Backend<'a> {
    /// The family implementation of this backend (an exhaustive match: a new backend must name
    /// its file here).
    pub(crate) fn family(self) -> &'a dyn Family {
        match self {
            Backend::Redis(b) => b,
            Backend::Database(b) => b,
            Backend::Mongodb(b) => b,
            Backend::Elasticsearch(b) => b,
            Backend::S3(b) => b,
            Backend::Gcs(b) => b,
            Backend::AzureBlockBlob(b) => b,
            Backend::Rpc(b) => b,
            Backend::Cache(b) => b,
            Backend::Cassandra(b) => b,
            Backend::Dynamodb(b) => b,
            Backend::Couchdb(b) => b,
            Backend::Couchbase(b) => b,
            Backend::Arangodb(b) => b,
            Backend::Consul(b) => b,
            Backend::CosmosDbSql(b) => b,
            Backend::IronCache(b) => b,
            Backend::Filesystem(b) => b,
        }
    }
}
