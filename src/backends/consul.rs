//! Consul KV (`consul://`): URI and settings, and the operator's health check.

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::stores::http::{http_probe, http_url, HttpApi};
use crate::stores::{BoxFuture, Expiry, StoreClient, StoreError};

/// Whether `token` can be sent as python-consul2's `X-Consul-Token` header: requests refuses a
/// header value with leading whitespace or a line break (`InvalidHeader`, e.g. a Secret written
/// from a file with a trailing newline) and http.client encodes values as Latin-1. Consul's ACL
/// tokens are UUIDs, so visible ASCII without spaces is required.
fn header_token(token: &str) -> Result<(), &'static str> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("the token must be visible ASCII without spaces or line breaks (it travels as the X-Consul-Token HTTP header; a trailing newline from a file makes every request fail)")
    }
}

/// IPv6 hosts are refused: Celery (celery/backends/python-consul2 `HTTPClient.base_uri`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule =
    Ipv6Rule::Refused("python-consul2 builds 'http://{host}:{port}' without brackets");

/// Consul's status API; the token travels as Celery's does not (the URI has none).
const API: HttpApi = HttpApi {
    name: "consul",
    health_path: "/v1/status/leader",
    decode_passes: 1,
};

/// The operator's Consul client: a health check; results expire by their session TTL.
pub struct ConsulStore {
    url: String,
    /// `result_expires` is explicitly None: Consul sessions get no TTL.
    no_ttl: bool,
}

impl ConsulStore {
    pub fn new(cfg: &crate::uri::BackendConfig) -> Self {
        ConsulStore {
            url: http_url(&cfg.uri, false),
            no_ttl: matches!(cfg.settings.get("result_expires"), Some(Value::Null)),
        }
    }
}

impl StoreClient for ConsulStore {
    fn kind(&self) -> String {
        API.name.into()
    }
    fn expiry(&self) -> Expiry {
        if self.no_ttl {
            Expiry::Unsupported("cleanup of consul is not implemented yet".into())
        } else {
            Expiry::Native("Consul sessions carry result_expires as TTL (Consul may take up to twice the TTL to delete)".into())
        }
    }
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(http_probe(&API, &self.url, None))
    }
}

pub(crate) fn consul(cx: &mut Ctx, spec: &ConsulBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let port = b.port.unwrap_or(8500);
    let prefix = b
        .key_prefix
        .as_deref()
        .map(|p| format!("/{}", encode::path(p)))
        .unwrap_or_default();
    let q = if b.one_client == Some(true) {
        query([("one_client", "1".to_string())])
    } else {
        String::new()
    };
    let uri_host = checked_host("spec.consul.external.host", &b.host, IPV6)?;
    cx.out.uri = format!("consul://{uri_host}:{port}{prefix}{q}");
    if let Some(t) = cx.opt_secret("spec.consul.external.tokenSecretRef", &b.token_secret_ref)? {
        header_token(&t).map_err(|m| invalid("spec.consul.external.tokenSecretRef", m))?;
        cx.out.env.insert("CONSUL_HTTP_TOKEN".into(), t.clone());
        cx.bind("token", t);
    }
    cx.bind("type", "consul");
    cx.bind("host", &b.host);
    cx.bind("port", port);
    Ok(())
}

impl Family for ConsulBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.one(
            "spec.consul.external.tokenSecretRef",
            &self.external.token_secret_ref,
        );
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        consul(cx, self)
    }

    fn expires_as_ttl(&self) -> bool {
        true
    }

    fn check_result_expires(&self, secs: f64) -> Result<(), &'static str> {
        let (min, max) = CONSUL_TTL_SECONDS;
        if !(min as f64..=max as f64).contains(&secs) {
            return Err(CONSUL_TTL_MESSAGE);
        }
        Ok(())
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(ConsulStore::new(cfg))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tokens() {
        assert!(header_token("3f6c1a2e-9b1d-4c7e-8a55-0d2b7c9e1f00").is_ok());
        for bad in ["", "tok\n", " tok", "to k", "tök"] {
            assert!(header_token(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "consul",
            "consul://127.0.0.1:8500/celery/results",
        )]);
    }
}
