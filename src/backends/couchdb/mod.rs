//! Apache CouchDB (`couchdb://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

/// pycouchdb decodes the credentials a second time after Celery re-embeds them raw.
fn double_component(s: &str) -> String {
    component(&component(s))
}

/// IPv6 hosts are refused: Celery (celery/backends/couchdb.py `_get_connection`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule = Ipv6Rule::Refused(
    "Celery's couchdb backend builds 'http://{host}:{port}' without brackets for pycouchdb",
);

pub(crate) fn couchdb(cx: &mut Ctx, spec: &CouchDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.couchdb.external.auth", &b.auth)?;
    let port = b.port.unwrap_or(5984);
    let db = b.database.as_deref().unwrap_or("default");
    let uri_host = checked_host("spec.couchdb.external.host", &b.host, IPV6)?;
    cx.out.uri = format!(
        "couchdb://{}{}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), double_component),
        uri_host,
        component(db)
    );
    cx.bind("type", "couchdb");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("database", db);
    Ok(())
}

impl Family for CouchDbBackend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.auth("spec.couchdb.external.auth", &self.external.auth);
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        couchdb(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::CouchDbStore::new(cfg))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "couchdb",
            "couchdb://admin:couch%2540pw%252F1@127.0.0.1:5984/celery",
        )]);
    }
}
