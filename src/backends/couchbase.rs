//! Couchbase (`couchbase://`).

use super::prelude::*;
use super::{Family, SecretRefs};

/// IPv6 hosts are refused: Celery (celery/backends/couchbase.py `_get_connection`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule = Ipv6Rule::Refused(
    "Celery's couchbase backend builds 'couchbase://{host}:{port}' without brackets",
);

pub(crate) fn couchbase(cx: &mut Ctx, spec: &CouchbaseBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let (user, pw) = cx.auth("spec.couchbase.external.auth", &b.auth)?;
    let port = b.port.unwrap_or(8091);
    let bucket = b.bucket.as_deref().unwrap_or("default");
    let uri_host = checked_host("spec.couchbase.external.host", &b.host, IPV6)?;
    cx.out.uri = format!(
        "couchbase://{}{}:{port}/{}",
        userinfo(user.as_deref(), pw.as_deref(), component),
        uri_host,
        component(bucket)
    );
    cx.bind("type", "couchbase");
    cx.bind_endpoint(&b.host, port, &user, &pw);
    cx.bind("bucket", bucket);
    cx.warn("couchbase: Celery 5.7 passes ttl= to the SDK, which couchbase 4.x rejects; set resultExpires to 0s or results cannot be stored");
    Ok(())
}

impl Family for CouchbaseBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.auth("spec.couchbase.external.auth", &self.external.auth);
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        couchbase(cx, self)
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "couchbase",
            "couchbase://celery:cb%3Apw@127.0.0.1:11210/celery",
        )]);
    }
}
