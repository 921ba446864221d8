//! Elasticsearch/OpenSearch (`elasticsearch+http(s)://`): URI and settings, following elasticsearch-py.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn elasticsearch(cx: &mut Ctx, e: &ElasticsearchBackend) -> Result<(), BuildError> {
    let b = e.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.elasticsearch",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.elasticsearch.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let uri_host = checked_host(&format!("{f}.host"), &b.host, check::ELASTICSEARCH_IPV6)?;
    es_credentials(f, b.auth.as_ref(), &user, &pw)?;
    let scheme = match b.scheme.unwrap_or_default() {
        HttpScheme::Http => "http",
        HttpScheme::Https => "https",
    };
    let port = b.port.unwrap_or(9200);
    let index = e.index.as_deref().unwrap_or("celery");
    cx.out.uri = format!(
        "elasticsearch+{scheme}://{}{uri_host}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        component(index)
    );
    cx.set_opt("elasticsearch_timeout", b.timeout_seconds);
    cx.set_opt("elasticsearch_max_retries", b.max_retries);
    cx.bind("type", "elasticsearch");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("index", index);
    cx.warn("Celery's elasticsearch backend needs elasticsearch-py 8.x in the worker image (9.x removed the timeout argument Celery passes)");
    Ok(())
}

/// [`basic_credentials`], and refuse a user without password: Celery's elasticsearch backend sends
/// Basic auth only with both.
pub(crate) fn es_credentials(
    f: &str,
    auth: Option<&BasicAuth>,
    user: &Option<String>,
    pw: &Option<String>,
) -> Result<(), BuildError> {
    basic_credentials(f, auth, user, pw)?;
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if empty(user) != empty(pw) {
        return Err(invalid(
            &format!("{f}.auth"),
            "set both a user name and a non-empty password: Celery's elasticsearch backend sends Basic auth only when it has both (celery/backends/elasticsearch.py _get_server)",
        ));
    }
    Ok(())
}

impl Family for ElasticsearchBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.auth("spec.elasticsearch.external.auth", &e.auth);
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        elasticsearch(cx, self)
    }
}
