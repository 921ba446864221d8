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

/// The operator's ArangoDB client: a health check (over https when the settings say so, with
/// the `tls` block's CA in memory); cleanup is not implemented.
pub struct ArangoDbStore {
    url: String,
    tls: Option<crate::uri::TlsMaterial>,
}

impl ArangoDbStore {
    pub fn new(cfg: &crate::uri::BackendConfig) -> Self {
        let https = cfg
            .settings
            .get(SETTINGS)
            .and_then(|s| s.get("http_protocol"))
            .and_then(|p| p.as_str())
            == Some("https");
        ArangoDbStore {
            url: http_url(&cfg.uri, https),
            // https without a tls block: requests' default trust store (verify true).
            tls: cfg.tls.clone().or_else(|| https.then(Default::default)),
        }
    }
}

/// Celery's ArangoDB settings dict (celery/backends/arangodb.py reads `http_protocol` and
/// `verify` from it).
const SETTINGS: &str = "arangodb_backend_settings";

impl StoreClient for ArangoDbStore {
    fn kind(&self) -> String {
        API.name.into()
    }
    fn expiry(&self) -> Expiry {
        Expiry::Unsupported("cleanup of arangodb is not implemented yet".into())
    }
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(http_probe(&API, &self.url, self.tls.as_ref()))
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
    let field = "spec.arangodb.external.tls";
    let tls = b.tls.as_ref().filter(|t| t.enabled);
    if let Some(t) = tls {
        if b.scheme == Some(HttpScheme::Http) {
            return Err(invalid(
                field,
                "tls needs https: leave scheme out or set it to https",
            ));
        }
        let client = t.client_certificate_secret_ref.is_some()
            || t.cert_file.is_some()
            || t.key_file.is_some();
        if t.verify == Some(TlsVerify::Optional) || client {
            return Err(invalid(field, crate::api::ARANGODB_TLS_LIMITS));
        }
        cx.tls(field, t)?;
    }
    // Celery's default is verify False: https without a word would check nothing. requests reads
    // `verify` as a CA bundle path, True (its default store) or False.
    let verify = match tls {
        Some(t) if t.verify == Some(TlsVerify::None) => Some(json!(false)),
        Some(t) => Some(t.ca_path().map_or(json!(true), |p| json!(p))),
        None if b.scheme == Some(HttpScheme::Https) => Some(json!(true)),
        None => None,
    };
    if let Some(verify) = verify {
        cx.set(
            SETTINGS,
            json!({"http_protocol": "https", "verify": verify}),
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
        refs.tls("spec.arangodb.external.tls", &self.external.tls);
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        arangodb(cx, self)
    }

    fn tls(&self) -> Option<&crate::api::TlsConfig> {
        self.external.tls.as_ref()
    }

    /// https is `http_protocol` in `arangodb_backend_settings`; without it Celery speaks http.
    fn tls_in_settings(&self) -> Option<&'static str> {
        (self.external.tls.as_ref().is_some_and(|t| t.enabled)
            || self.external.scheme == Some(HttpScheme::Https))
        .then_some("arangodb_backend_settings (http_protocol, verify)")
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(ArangoDbStore::new(cfg))))
    }
}

#[cfg(test)]
mod tls_tests {
    use serde_json::json;

    fn build(external: serde_json::Value) -> Result<crate::uri::BackendConfig, String> {
        let spec = serde_json::from_value(json!({"arangodb": {"external": external},
            "injection": {"configModule": true}}))
        .unwrap();
        let mut values = crate::uri::SecretValues::new();
        values
            .entry(crate::api::config_map_source("trust-bundle"))
            .or_default()
            .insert("ca.pem".into(), crate::uri::tests::test_pem().0);
        crate::uri::build(&spec, &values).map_err(|e| e.to_string())
    }

    /// Celery's default (`verify` False) is never what https means here: `arangodb_backend_settings`
    /// always carries `verify`, the CA path when there is one.
    #[test]
    fn https_always_verifies_unless_told_not_to() {
        let settings =
            |ext| build(ext).map(|c| c.settings.get("arangodb_backend_settings").cloned());
        for (ext, want) in [
            (json!({"host": "a"}), None),
            (json!({"host": "a", "scheme": "http"}), None),
            (
                json!({"host": "a", "scheme": "https"}),
                Some(json!({"http_protocol": "https", "verify": true})),
            ),
            (
                json!({"host": "a", "tls": {"enabled": true}}),
                Some(json!({"http_protocol": "https", "verify": true})),
            ),
            (
                json!({"host": "a", "tls": {"enabled": true, "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}}),
                Some(
                    json!({"http_protocol": "https", "verify": "/etc/celery-backend/tls-configmaps/trust-bundle/ca.pem"}),
                ),
            ),
            (
                json!({"host": "a", "scheme": "https", "tls": {"enabled": true, "caFile": "/etc/ssl/a.pem"}}),
                Some(json!({"http_protocol": "https", "verify": "/etc/ssl/a.pem"})),
            ),
            (
                json!({"host": "a", "tls": {"enabled": true, "verify": "None"}}),
                Some(json!({"http_protocol": "https", "verify": false})),
            ),
        ] {
            assert_eq!(settings(ext.clone()), Ok(want), "{ext}");
        }
        let cfg = build(json!({"host": "a", "tls": {"enabled": true, "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}})).unwrap();
        assert!(cfg.tls.is_some_and(|t| t.ca_pem.is_some()));
        // https lives in a setting: a worker given only the URI would speak http, Basic auth in
        // clear. Refused without the config module.
        let bare = serde_json::from_value(
            json!({"arangodb": {"external": {"host": "a", "scheme": "https"}}}),
        )
        .unwrap();
        let e = crate::uri::build(&bare, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.injection.configModule: arangodb's TLS reaches Celery only through arangodb_backend_settings (http_protocol, verify)"),
            "{e}"
        );
    }

    #[test]
    fn what_pyarango_cannot_be_handed_is_refused_naming_the_field() {
        for (ext, want) in [
            (
                json!({"host": "a", "scheme": "http", "tls": {"enabled": true}}),
                "spec.arangodb.external.tls: tls needs https",
            ),
            (
                json!({"host": "a", "tls": {"enabled": true, "verify": "Optional"}}),
                "spec.arangodb.external.tls: arangodb tls: Celery hands pyArango only",
            ),
            (
                json!({"host": "a", "tls": {"enabled": true, "certFile": "/c.pem", "keyFile": "/k.pem"}}),
                "spec.arangodb.external.tls: arangodb tls: Celery hands pyArango only",
            ),
        ] {
            let e = build(ext.clone()).unwrap_err();
            assert!(e.starts_with(want), "{ext}: {e}");
        }
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
