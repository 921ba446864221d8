//! Consul KV (`consul://`).

use super::prelude::*;
use super::{Family, SecretRefs};

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
    let uri_host = checked_host("spec.consul.external.host", &b.host, check::CONSUL_IPV6)?;
    cx.out.uri = format!("consul://{uri_host}:{port}{prefix}{q}");
    if let Some(t) = cx.opt_secret("spec.consul.external.tokenSecretRef", &b.token_secret_ref)? {
        check::header_token(&t).map_err(|m| invalid("spec.consul.external.tokenSecretRef", m))?;
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
}
