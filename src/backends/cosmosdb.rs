//! Azure Cosmos DB for NoSQL (`cosmosdbsql://`).

use super::prelude::*;
use super::{Family, SecretRefs};

/// Whether `key` is what pydocumentdb can sign with: `base64.b64decode(master_key)` in
/// pydocumentdb/auth.py. Python's decoder skips whitespace, so that is allowed (a Secret value
/// with a trailing newline still works); anything else must be standard base64 with padding.
pub fn base64_key(key: &str) -> Result<(), &'static str> {
    let k: String = key.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = k.trim_end_matches('=');
    let ok = !k.is_empty()
        && k.len().is_multiple_of(4)
        && k.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err("the account key must be base64 (pydocumentdb base64-decodes it to sign every request)")
    }
}

/// IPv6 hosts are refused: Celery (celery/backends/cosmosdbsql.py `_parse_url`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule = Ipv6Rule::Refused(
    "Celery's cosmosdbsql backend builds '{scheme}://{host}:{port}' without brackets",
);

pub(crate) fn cosmos(cx: &mut Ctx, spec: &CosmosDbSqlBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let key = cx.secret(
        "spec.cosmosDbSql.external.accountKeySecretRef",
        &b.account_key_secret_ref,
    )?;
    base64_key(&key).map_err(|m| invalid("spec.cosmosDbSql.external.accountKeySecretRef", m))?;
    let port = b.port.unwrap_or(443);
    let uri_host = checked_host("spec.cosmosDbSql.external.host", &b.host, IPV6)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_keys() {
        for ok in [
            "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
            "YWJj",
            "YQ==\n",
        ] {
            assert!(base64_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b+c==", "p@ss:w/rd#?%", "YWJ", "YQ===", "YW=j"] {
            assert!(base64_key(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[
            ("cosmosdbsql", "cosmosdbsql://:C2y6yDjf5%2FR%2Bob0N8A7Cgv30VRDJIWEHLM%2B4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw%2FJw%3D%3D@myaccount.documents.azure.com:443"),
        ]);
    }
}
