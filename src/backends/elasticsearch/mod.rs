//! Elasticsearch/OpenSearch (`elasticsearch+http(s)://`): URI and settings, following elasticsearch-py.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::provision::{ContainerParts, Managed, Profile, Render};

/// IPv6 hosts are refused: Celery (celery/backends/elasticsearch.py `_get_server`) formats `{host}:{port}`
/// without brackets and the client cannot parse it.
const IPV6: Ipv6Rule = Ipv6Rule::Refused("Celery's elasticsearch backend builds '{scheme}://{host}:{port}' without brackets and the client cannot parse it");

pub(crate) fn elasticsearch(cx: &mut Ctx, e: &ElasticsearchBackend) -> Result<(), BuildError> {
    let b = e.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.elasticsearch",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.elasticsearch.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let uri_host = checked_host(&format!("{f}.host"), &b.host, IPV6)?;
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
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.auth("spec.elasticsearch.external.auth", &e.auth);
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        elasticsearch(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::ElasticsearchStore::new(cfg))))
    }
}

/// Default index a managed Elasticsearch creates (Celery's default index).
pub const DEFAULT_INDEX: &str = "celery";

/// The store this family provisions in managed mode.
pub(crate) const MANAGED: Profile = crate::provision::Profile {
    store: "elasticsearch",
    component: "elasticsearch",
    default_image: "docker.elastic.co/elasticsearch/elasticsearch",
    default_version: "8.19.3",
    port: 9200,
    port_name: "http",
    uid: 1000,
    data_path: "/usr/share/elasticsearch/data",
    username: "elastic",
    memory: "1Gi",
    // Elasticsearch writes its keystore under config/ at start-up.
    read_only_root: false,
};

impl crate::provision::ManagedProfile for ElasticsearchBackend {
    const PROFILE: &'static Profile = &MANAGED;
}

impl Managed for ElasticsearchBackend {
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)> {
        self.managed.as_ref().map(|m| (&m.common, None))
    }
    fn container(&self, r: &Render) -> ContainerParts {
        ContainerParts {
            command: Value::Null,
            env: vec![
                r.password_env("ELASTIC_PASSWORD"),
                json!({"name": "discovery.type", "value": "single-node"}),
                json!({"name": "xpack.security.enabled", "value": "true"}),
                json!({"name": "xpack.security.http.ssl.enabled", "value": "false"}),
                json!({"name": "ES_JAVA_OPTS", "value": "-Xms512m -Xmx512m"}),
                json!({"name": "CELERY_INDEX", "value": self.index_name()}),
            ],
            readiness: json!({"exec": {"command": ["sh", "-c", "curl -fsS -u \"elastic:$ELASTIC_PASSWORD\" 'http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=1s' >/dev/null"]}}),
            // Create Celery's index once the node answers (400 = already exists).
            post_start: Some(json!(["sh", "-c", "for i in $(seq 1 120); do code=$(curl -s -o /dev/null -w '%{http_code}' -u \"elastic:$ELASTIC_PASSWORD\" -X PUT \"http://127.0.0.1:9200/$CELERY_INDEX\"); case $code in 200|400) exit 0;; esac; sleep 2; done; exit 0"])),
            scratch: vec![],
        }
    }
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec) {
        out.elasticsearch = Some(ElasticsearchBackend {
            external: Some(ElasticsearchExternal {
                host: r.host.clone(),
                port: Some(r.profile.port),
                scheme: Some(HttpScheme::Http),
                auth: Some(r.auth(true)),
                timeout_seconds: None,
                max_retries: None,
            }),
            managed: None,
            index: Some(self.index_name()),
        });
    }
}

impl ElasticsearchBackend {
    /// The index Celery writes to: `index`, else Celery's default.
    fn index_name(&self) -> String {
        self.index
            .clone()
            .unwrap_or_else(|| DEFAULT_INDEX.to_string())
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "elasticsearch",
            "elasticsearch+http://elastic:elastic%3Apw@127.0.0.1:9200/celery-results",
        )]);
    }
}
