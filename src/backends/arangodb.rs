//! ArangoDB (`arangodb://`): URI and settings, and the operator's health check.

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::stores::http::{http_probe, http_url, HttpApi};
use crate::stores::{BoxFuture, Expiry, StoreClient, StoreError};

/// IPv6 hosts are refused: Celery (celery/backends/arangodb.py `arangodb_url`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule = Ipv6Rule::Refused(
    "Celery's arangodb backend builds '{protocol}://{host}:{port}' without brackets for pyArango",
);

/// ArangoDB's version API, reached with Celery's credentials (decoded once, by kombu).
const API: HttpApi = HttpApi {
    name: "arangodb",
    health_path: "/_api/version",
    decode_passes: 1,
};

/// The operator's ArangoDB client: a health check; cleanup is not implemented.
pub struct ArangoDbStore {
    url: String,
}

impl ArangoDbStore {
    pub fn new(cfg: &crate::uri::BackendConfig) -> Self {
        ArangoDbStore {
            url: http_url(&cfg.uri, false),
        }
    }
}

impl StoreClient for ArangoDbStore {
    fn kind(&self) -> String {
        API.name.into()
    }
    fn expiry(&self) -> Expiry {
        Expiry::Unsupported("cleanup of arangodb is not implemented yet".into())
    }
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(http_probe(&API, &self.url))
    }
}

pub(crate) fn arangodb(cx: &mut Ctx, spec: &ArangoDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.arangodb.external.auth", &b.auth)?;
    // pyArango authenticates through requests' Basic auth (Latin-1).
    basic_credentials("spec.arangodb.external", b.auth.as_ref(), &user, &pw)?;
    let port = b.port.unwrap_or(8529);
    let db = b.database.as_deref().unwrap_or("celery");
    let coll = b.collection.as_deref().unwrap_or("celery");
    let uri_host = checked_host("spec.arangodb.external.host", &b.host, IPV6)?;
    cx.out.uri = format!(
        "arangodb://{}{}:{port}/{}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        uri_host,
        component(db),
        component(coll)
    );
    if b.scheme == Some(HttpScheme::Https) {
        cx.set(
            "arangodb_backend_settings",
            json!({"http_protocol": "https"}),
        );
    }
    cx.bind("type", "arangodb");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("database", db);
    cx.warn("arangodb: Celery's own cleanup (celery beat's backend_cleanup) deletes every document in the collection, fresh ones too; disable it and use a cleanup policy");
    Ok(())
}

impl Family for ArangoDbBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.auth("spec.arangodb.external.auth", &self.external.auth);
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        arangodb(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(ArangoDbStore::new(cfg))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "arangodb",
            "arangodb://root:arango%23pw@127.0.0.1:8529/celery/results",
        )]);
    }
}
