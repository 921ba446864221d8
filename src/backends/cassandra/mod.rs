//! Apache Cassandra (`cassandra://`, settings `cassandra_*`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn cassandra(cx: &mut Ctx, spec: &CassandraBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if b.servers.is_empty() {
        return Err(invalid(
            "spec.cassandra.external.servers",
            "at least one server is required",
        ));
    }
    for (i, s) in b.servers.iter().enumerate() {
        // cassandra-driver takes each contact point as a bare address: IPv6 works.
        check::host(s, Ipv6Rule::Bracketed)
            .map_err(|m| invalid(&format!("spec.cassandra.external.servers[{i}]"), m))?;
    }
    let (user, pw) = cx.auth("spec.cassandra.external.auth", &b.auth)?;
    // Celery ignores the URL; cassandra is configured by settings only.
    cx.out.uri = "cassandra://".into();
    cx.set("cassandra_servers", json!(b.servers));
    cx.set_opt("cassandra_port", b.port);
    cx.set("cassandra_keyspace", b.keyspace.as_str());
    cx.set("cassandra_table", b.table.as_str());
    cx.set_opt("cassandra_entry_ttl", b.entry_ttl_seconds);
    let cl =
        |c: Option<CassandraConsistency>| c.map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    cx.set_opt("cassandra_read_consistency", cl(b.read_consistency));
    cx.set_opt("cassandra_write_consistency", cl(b.write_consistency));
    if let Some(t) = b.tls.as_ref().filter(|t| t.enabled) {
        ssl_options(cx, t)?;
    }
    if user.is_some() || pw.is_some() {
        cx.set("cassandra_auth_provider", "PlainTextAuthProvider");
        cx.set(
            "cassandra_auth_kwargs",
            json!({"username": user.clone().unwrap_or_default(), "password": pw.clone().unwrap_or_default()}),
        );
    }
    cx.bind("type", "cassandra");
    cx.bind("host", b.servers.join(","));
    cx.bind("port", b.port.unwrap_or(9042));
    cx.bind("keyspace", &b.keyspace);
    cx.bind_credentials(&user, &pw);
    if b.entry_ttl_seconds.is_none() {
        cx.warn("cassandra: without entryTtlSeconds rows never expire (Celery does not apply result_expires here)");
    }
    Ok(())
}

/// TLS as cassandra-driver 3.30 reads it from `Cluster(ssl_options=...)` (Celery passes the
/// `cassandra_options` setting to `Cluster` as keyword arguments): `_build_ssl_context_from_options`
/// makes an `SSLContext(PROTOCOL_TLS_CLIENT)`, which verifies every chain and loads no default
/// CA (so a CA is required and verify None cannot be expressed), checks host names only with
/// `check_hostname`, and loads `certfile`/`keyfile` as the client certificate.
fn ssl_options(cx: &mut Ctx, t: &TlsConfig) -> Result<(), BuildError> {
    let f = "spec.cassandra.external.tls";
    let check_hostname = match t.verify.unwrap_or_default() {
        TlsVerify::Required => true,
        TlsVerify::Optional => false,
        TlsVerify::None => {
            return Err(invalid(
                &format!("{f}.verify"),
                "None is not available for cassandra: cassandra-driver verifies every certificate chain it is given through ssl_options",
            ))
        }
    };
    let Some(ca) = t.ca_path() else {
        return Err(invalid(
            f,
            "cassandra-driver loads no default trust store for ssl_options: set caSecretRef, caConfigMapRef or caFile",
        ));
    };
    cx.tls(f, t)?;
    let mut ssl = serde_json::Map::new();
    ssl.insert("ca_certs".into(), json!(ca));
    ssl.insert("check_hostname".into(), json!(check_hostname));
    match t.client_paths() {
        (Some(cert), Some(key)) => {
            ssl.insert("certfile".into(), json!(cert));
            ssl.insert("keyfile".into(), json!(key));
        }
        (Some(cert), None) => {
            ssl.insert("certfile".into(), json!(cert));
        }
        (None, Some(_)) => return Err(invalid(&format!("{f}.keyFile"), "keyFile needs certFile")),
        (None, None) => {}
    }
    cx.set("cassandra_options", json!({ "ssl_options": ssl }));
    Ok(())
}

impl Family for CassandraBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.auth("spec.cassandra.external.auth", &self.external.auth);
        refs.tls("spec.cassandra.external.tls", &self.external.tls);
    }

    fn tls(&self) -> Option<&TlsConfig> {
        self.external.tls.as_ref()
    }

    /// TLS is `ssl_options` inside the `cassandra_options` setting.
    fn tls_in_settings(&self) -> Option<&'static str> {
        self.external
            .tls
            .as_ref()
            .is_some_and(|t| t.enabled)
            .then_some("cassandra_options.ssl_options")
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        cassandra(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::CassandraStore::new(cfg))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[("cassandra", "cassandra://")]);
    }
}
