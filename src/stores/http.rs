//! Toolkit of the stores reached over HTTP (Elasticsearch/OpenSearch, CouchDB, Consul, ArangoDB):
//! URL and credentials from Celery's URI, and the health round trip of a store's status API.

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

/// The HTTP API of a store, as the shared health round trip needs it.
pub struct HttpApi {
    /// The backend's spec field name, for messages.
    pub name: &'static str,
    /// The read-only endpoint of the health round trip (the store's own status API).
    pub health_path: &'static str,
    /// How many times Celery percent-decodes the URI's credentials (CouchDB's backend unquotes
    /// what kombu already unquoted: 2).
    pub decode_passes: usize,
}

/// Celery's URI with its scheme rewritten to `https://` or `http://`.
pub fn http_url(uri: &str, https: bool) -> String {
    let scheme = uri.split("://").next().unwrap_or_default();
    uri.replacen(
        &format!("{scheme}://"),
        if https { "https://" } else { "http://" },
        1,
    )
}

/// An authenticated GET of the store's status API (`api.health_path`).
pub async fn http_probe(api: &HttpApi, url: &str) -> Result<String, StoreError> {
    let kind = api.name;
    let (parsed, auth) = http_parts(kind, url, api.decode_passes)?;
    let path = api.health_path;
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
