//! Amazon DynamoDB (`dynamodb://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn dynamodb(cx: &mut Ctx, spec: &DynamoDbBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let f = "spec.dynamodb.external";
    let key = cx.opt_secret(
        &format!("{f}.accessKeyIdSecretRef"),
        &b.access_key_id_secret_ref,
    )?;
    let secret = cx.opt_secret(
        &format!("{f}.secretAccessKeySecretRef"),
        &b.secret_access_key_secret_ref,
    )?;
    let ui = match (&key, &secret) {
        (Some(k), Some(s)) => format!("{}:{}@", component(k), component(s)),
        (None, None) => "@".to_string(),
        _ => {
            return Err(invalid(
                f,
                "set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither",
            ))
        }
    };
    checked_endpoint_url(&format!("{f}.endpointUrl"), b.endpoint_url.as_ref())?;
    if b.region.is_some() && b.local_endpoint.is_some() {
        return Err(invalid(f, "set either region or localEndpoint, not both"));
    }
    let mut endpoint_url = b.endpoint_url.clone();
    let authority = match (&b.region, &b.local_endpoint) {
        (Some(r), _) => r.clone(),
        (None, Some(l)) => {
            let port = l.port.unwrap_or(8000);
            // An IPv6 endpoint goes to dynamodb_endpoint_url in brackets (botocore reads it).
            let form = check::host(&l.host, Ipv6Rule::Bracketed)
                .map_err(|m| invalid(&format!("{f}.localEndpoint.host"), m))?;
            let ipv4 = form == check::HostForm::Ipv4;
            if (l.host == "localhost" || ipv4) && endpoint_url.is_none() {
                // Celery turns localhost or an IPv4 address into http://host:port.
                format!("{}:{port}", l.host)
            } else {
                endpoint_url.get_or_insert_with(|| format!("http://{}:{port}", fmt_host(&l.host)));
                "us-east-1".into()
            }
        }
        (None, None) => "us-east-1".into(),
    };
    let table = b.table.as_deref().unwrap_or("celery");
    let mut q: Vec<(&str, String)> = vec![];
    if let Some(r) = b.read_capacity {
        q.push(("read", r.to_string()));
    }
    if let Some(w) = b.write_capacity {
        q.push(("write", w.to_string()));
    }
    if let Some(t) = b.ttl_seconds {
        q.push(("ttl_seconds", t.to_string()));
    } else {
        cx.warn("dynamodb: without ttlSeconds items never expire (Celery does not apply result_expires here)");
    }
    cx.out.uri = format!(
        "dynamodb://{ui}{authority}/{}{}",
        component(table),
        query(q)
    );
    cx.set_opt("dynamodb_endpoint_url", endpoint_url.clone());
    cx.bind("type", "dynamodb");
    cx.bind("table", table);
    if let Some(r) = &b.region {
        cx.bind("region", r);
    }
    if let Some(e) = endpoint_url {
        cx.bind("endpoint", e);
    }
    if let Some(k) = key {
        cx.bind("access_key_id", k);
    }
    if let Some(s) = secret {
        cx.bind("secret_access_key", s);
    }
    Ok(())
}

impl Family for DynamoDbBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.one(
            "spec.dynamodb.external.accessKeyIdSecretRef",
            &self.external.access_key_id_secret_ref,
        );
        refs.one(
            "spec.dynamodb.external.secretAccessKeySecretRef",
            &self.external.secret_access_key_secret_ref,
        );
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        dynamodb(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::DynamoStore::new(cfg))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "dynamodb",
            "dynamodb://AKIAEXAMPLE:abc%2Fdef%2Bghi@localhost:8000/celery?ttl_seconds=86400",
        )]);
    }
}
