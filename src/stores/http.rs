//! The HTTP stores (Elasticsearch/OpenSearch, CouchDB, Consul, ArangoDB): URL and credentials
//! from Celery's URI, and the health round trip.

use std::time::Duration;

use super::StoreError;

/// User name and optional password for HTTP basic auth.
pub(crate) type BasicCreds = Option<(String, Option<String>)>;

/// Base URL (no credentials) and basic-auth pair of an HTTP store URI. CouchDB URIs carry their
/// credentials percent-encoded twice (pycouchdb decodes twice), so `decode_rounds` is 2 there.
pub(crate) fn http_parts(
    kind: &str,
    url: &str,
    decode_rounds: usize,
) -> Result<(reqwest::Url, BasicCreds), StoreError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| StoreError::connect(kind, e))?;
    let decode = |s: &str| {
        let mut out = s.to_string();
        for _ in 0..decode_rounds {
            out = percent_encoding::percent_decode_str(&out)
                .decode_utf8_lossy()
                .to_string();
        }
        out
    };
    let user = decode(parsed.username());
    let pass = parsed.password().map(decode);
    let mut base = parsed.clone();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let auth = (!user.is_empty() || pass.is_some()).then_some((user, pass));
    Ok((base, auth))
}

pub(crate) fn authed(
    rb: reqwest::RequestBuilder,
    auth: &Option<(String, Option<String>)>,
) -> reqwest::RequestBuilder {
    match auth {
        Some((u, p)) => rb.basic_auth(u, p.clone()),
        None => rb,
    }
}

/// An authenticated GET of the API root (Elasticsearch cluster health, CouchDB, Consul, ArangoDB).
pub async fn http_probe(store: super::HttpStore, url: &str) -> Result<String, StoreError> {
    let kind = store.name();
    let (parsed, auth) = http_parts(kind, url, store.decode_passes())?;
    let path = store.health_path();
    let mut base = parsed.clone();
    base.set_path(path);
    base.set_query(None);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| StoreError::connect(kind, e))?;
    let req = authed(client.get(base.clone()), &auth);
    let at = format!(
        "{kind} at {}:{}",
        base.host_str().unwrap_or_default(),
        base.port_or_known_default().unwrap_or_default()
    );
    let resp = req.send().await.map_err(|e| {
        let e = e.without_url();
        if e.is_timeout() {
            StoreError::connect(&at, "no answer (timed out)")
        } else if super::tls_failure(&super::cause_chain(&e)) {
            StoreError::tls(&at, super::cause_chain(&e), None)
        } else {
            StoreError::connect(&at, super::cause_chain(&e))
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(format!("GET {path} answered {status}"))
    } else {
        let msg = format!("GET {path} answered {status}");
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            Err(StoreError::auth(&at, msg))
        } else {
            Err(StoreError::protocol(&at, msg))
        }
    }
}

/// A store reached over HTTP with Celery's URI rewritten to `http(s)://`: Elasticsearch, CouchDB,
/// Consul, ArangoDB.
pub struct HttpClient {
    store: super::HttpStore,
    url: String,
    /// `result_expires` is explicitly None: Consul sessions get no TTL.
    no_ttl: bool,
    /// Celery's `timezone`/`enable_utc` (naive `date_done` strings).
    clock: super::plan::CeleryClock,
}

impl HttpClient {
    pub fn new(store: super::HttpStore, cfg: &crate::uri::BackendConfig) -> Self {
        let uri = cfg.uri.as_str();
        let scheme = uri.split("://").next().unwrap_or_default();
        // Only Elasticsearch's scheme says https (elasticsearch+https); the others' URIs are
        // rewritten to http.
        let https = store == super::HttpStore::Elasticsearch && scheme.ends_with("https");
        HttpClient {
            store,
            url: uri.replacen(
                &format!("{scheme}://"),
                if https { "https://" } else { "http://" },
                1,
            ),
            no_ttl: store != super::HttpStore::Elasticsearch
                && matches!(
                    cfg.settings.get("result_expires"),
                    Some(serde_json::Value::Null)
                ),
            clock: super::plan::CeleryClock::from_settings(cfg),
        }
    }
}

impl super::StoreClient for HttpClient {
    fn kind(&self) -> String {
        self.store.name().into()
    }
    fn expiry(&self) -> super::Expiry {
        use super::{Expiry, HttpStore};
        match self.store {
            HttpStore::Consul if !self.no_ttl => Expiry::Native("Consul sessions carry result_expires as TTL (Consul may take up to twice the TTL to delete)".into()),
            HttpStore::Couchdb | HttpStore::Elasticsearch => Expiry::Purgeable,
            HttpStore::Consul | HttpStore::Arangodb => Expiry::Unsupported(format!(
                "cleanup of {} is not implemented yet",
                self.store.name()
            )),
        }
    }
    fn probe(&self) -> super::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(http_probe(self.store, &self.url))
    }
    fn purge(
        &self,
        opts: super::PurgeOptions,
    ) -> super::BoxFuture<'_, Result<super::PurgeReport, StoreError>> {
        match self.store {
            super::HttpStore::Elasticsearch => Box::pin(
                crate::backends::elasticsearch::store::elasticsearch_purge(&self.url, opts),
            ),
            super::HttpStore::Couchdb => Box::pin(crate::backends::couchdb::store::couchdb_purge(
                &self.url,
                &self.clock,
                opts,
            )),
            _ => Box::pin(async {
                Err(StoreError::Unsupported(
                    "cleanup is not implemented for this store".into(),
                ))
            }),
        }
    }
}
