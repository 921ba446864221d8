//! Apache CouchDB (`couchdb://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn couchdb(cx: &mut Ctx, spec: &CouchDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.couchdb.external.auth", &b.auth)?;
    let port = b.port.unwrap_or(5984);
    let db = b.database.as_deref().unwrap_or("default");
    let uri_host = checked_host("spec.couchdb.external.host", &b.host, check::COUCHDB_IPV6)?;
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
