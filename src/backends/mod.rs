//! One file per backend family: what changes along the backend axis lives together. Each file
//! builds its backend's Celery `result_backend` URI and settings from the typed spec
//! (`crate::api::Backend`); the shared toolkit (encoding, checks, the collector `Ctx`, errors)
//! stays in `crate::uri`, the store clients in `crate::stores`.

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
pub mod memcached;
pub mod mongodb;
pub mod objects;
pub mod redis;
pub mod rpc;
pub mod sql;
