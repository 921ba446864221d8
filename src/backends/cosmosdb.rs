//! Azure Cosmos DB for NoSQL (`cosmosdbsql://`).

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn cosmos(cx: &mut Ctx, spec: &CosmosDbSqlBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let key = cx.secret(
        "spec.cosmosDbSql.external.accountKeySecretRef",
        &b.account_key_secret_ref,
    )?;
    check::base64_key(&key)
        .map_err(|m| invalid("spec.cosmosDbSql.external.accountKeySecretRef", m))?;
    let port = b.port.unwrap_or(443);
    let uri_host = checked_host(
        "spec.cosmosDbSql.external.host",
        &b.host,
        check::COSMOSDB_IPV6,
    )?;
    cx.out.uri = format!("cosmosdbsql://:{}@{}:{port}", component(&key), uri_host);
    cx.set_opt("cosmosdbsql_database_name", b.database.clone());
    cx.set_opt("cosmosdbsql_collection_name", b.collection.clone());
    cx.set_opt(
        "cosmosdbsql_consistency_level",
        b.consistency_level.map(|c| format!("{c:?}")),
    );
    cx.bind("type", "cosmosdb");
    cx.bind("host", &b.host);
    cx.bind("port", port);
    cx.bind("password", key);
    Ok(())
}

impl Family for CosmosDbSqlBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.one(
            "spec.cosmosDbSql.external.accountKeySecretRef",
            &Some(self.external.account_key_secret_ref.clone()),
        );
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        cosmos(cx, self)
    }
}
