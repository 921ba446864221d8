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

/// An HTTP client for a store, with TLS as `tls` says: `None` or `Required` without a CA is
/// reqwest's default (webpki roots, chain and host name); otherwise the rustls configuration of
/// [`super::tls::client_config`] (the CA in memory, `Optional` chain only, `None` nothing, a
/// client certificate when there is one).
pub(crate) fn http_client(
    kind: &str,
    tls: Option<&crate::uri::TlsMaterial>,
) -> Result<reqwest::Client, StoreError> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(t) = tls.filter(|t| {
        t.ca_pem.is_some() || t.client.is_some() || t.verify != crate::api::TlsVerify::Required
    }) {
        let config = super::tls::client_config(t).map_err(|e| StoreError::tls(kind, e, None))?;
        b = b.use_preconfigured_tls(config);
    }
    b.build().map_err(|e| StoreError::connect(kind, e))
}

/// An authenticated GET of the store's status API (`api.health_path`), over TLS as `tls` says
/// (see [`http_client`]).
pub async fn http_probe(
    api: &HttpApi,
    url: &str,
    tls: Option<&crate::uri::TlsMaterial>,
) -> Result<String, StoreError> {
    let kind = api.name;
    let (parsed, auth) = http_parts(kind, url, api.decode_passes)?;
    let path = api.health_path;
    let mut base = parsed.clone();
    base.set_path(path);
    base.set_query(None);
    let client = http_client(kind, tls)?;
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
            let hint = tls.and_then(super::tls_hint);
            StoreError::tls(&at, super::cause_chain(&e), hint.as_deref())
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
