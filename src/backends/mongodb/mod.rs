//! MongoDB (`mongodb://`): URI and settings, following pymongo.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::provision::{ContainerParts, Managed, Profile, Render};

pub(crate) fn mongodb(cx: &mut Ctx, m: &MongoBackend) -> Result<(), BuildError> {
    let b = m.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.mongodb",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.mongodb.external";
    if b.hosts.is_empty() {
        return Err(invalid(
            &format!("{f}.hosts"),
            "at least one host is required",
        ));
    }
    if b.srv && (b.hosts.len() != 1 || b.hosts[0].port.is_some()) {
        return Err(invalid(
            &format!("{f}.hosts"),
            "srv needs exactly one host and no port",
        ));
    }
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let mut nodes = vec![];
    let mut any_ipv6 = false;
    for (i, h) in b.hosts.iter().enumerate() {
        let field = format!("{f}.hosts[{i}].host");
        let form = check::host(&h.host, Ipv6Rule::Bracketed).map_err(|m| invalid(&field, m))?;
        if b.srv && form != check::HostForm::Name {
            return Err(invalid(
                &field,
                "srv needs a DNS name (mongodb+srv looks the servers up in DNS), not an IP address",
            ));
        }
        any_ipv6 |= form == check::HostForm::Ipv6;
        nodes.push(match (b.srv, h.port) {
            (true, _) => fmt_host(&h.host),
            (false, p) => format!("{}:{}", fmt_host(&h.host), p.unwrap_or(27017)),
        });
    }
    let hosts = nodes.join(",");
    let mut q: Vec<(&str, String)> = vec![];
    if let Some(a) = &b.auth_source {
        q.push(("authSource", a.clone()));
    }
    if let Some(r) = &b.replica_set {
        q.push(("replicaSet", r.clone()));
    }
    if let Some(t) = b.tls.as_ref() {
        q.push(("tls", t.enabled.to_string()));
        if t.enabled {
            if t.client_certificate_secret_ref.is_some() {
                return Err(invalid(
                    &format!("{f}.tls.clientCertificateSecretRef"),
                    "MongoDB takes one PEM file with certificate and key (tlsCertificateKeyFile), not a kubernetes.io/tls pair: set certFile",
                ));
            }
            cx.tls(&format!("{f}.tls"), t)?;
            match t.verify.unwrap_or_default() {
                TlsVerify::Required => {}
                TlsVerify::Optional => {
                    // pymongo: tlsAllowInvalidCertificates checks no chain at all (unlike
                    // Optional elsewhere, which verifies a certificate the server presents).
                    cx.warn(format!("{f}.tls.verify is Optional: for MongoDB that is tlsAllowInvalidCertificates, which checks no certificate chain (a CA given is not used); set verify: Required to check the server"));
                    q.push(("tlsAllowInvalidCertificates", "true".into()))
                }
                TlsVerify::None => q.push(("tlsInsecure", "true".into())),
            }
            if let Some(ca) = t.ca_path() {
                q.push(("tlsCAFile", ca));
            }
            match (&t.cert_file, &t.key_file) {
                (Some(c), None) => q.push(("tlsCertificateKeyFile", c.clone())),
                (None, None) => {}
                _ => {
                    return Err(invalid(
                        &format!("{f}.tls.keyFile"),
                        "MongoDB takes one PEM file with certificate and key: set certFile only",
                    ))
                }
            }
        }
    }
    for (k, v) in &b.options {
        q.push((k.as_str(), v.clone()));
    }
    let scheme = if b.srv { "mongodb+srv" } else { "mongodb" };
    let path = b.database.as_deref().map(component).unwrap_or_default();
    let qs = query(q);
    let slash = if path.is_empty() && qs.is_empty() {
        ""
    } else {
        "/"
    };
    cx.out.uri = format!(
        "{scheme}://{}{hosts}{slash}{path}{qs}",
        userinfo(user.as_deref(), pw.as_deref(), component)
    );
    let mut settings = serde_json::Map::new();
    if let Some(c) = &m.taskmeta_collection {
        settings.insert("taskmeta_collection".into(), json!(c));
    }
    if let Some(c) = &m.groupmeta_collection {
        settings.insert("groupmeta_collection".into(), json!(c));
    }
    if any_ipv6 {
        // Celery rebuilds its host list as f'{host}:{port}' from pymongo's nodelist, dropping the
        // brackets, and pymongo then refuses the address; mongo_host in the backend settings
        // replaces that list (celery/backends/mongodb.py __init__), so give it the bracketed form.
        settings.insert("mongo_host".into(), json!(nodes));
        cx.warn("mongodb: an IPv6 host works only with mongodb_backend_settings.mongo_host, a setting: workers need celeryconfig.py (injection.configModule: true); the URI alone fails in pymongo");
    }
    if !settings.is_empty() {
        cx.set("mongodb_backend_settings", Value::Object(settings));
    }
    cx.bind("type", "mongodb");
    cx.bind("host", hosts);
    cx.bind("database", b.database.as_deref().unwrap_or("celery"));
    cx.bind_credentials(&user, &pw);
    Ok(())
}

impl Family for MongoBackend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.auth("spec.mongodb.external.auth", &e.auth);
            refs.tls("spec.mongodb.external.tls", &e.tls);
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        mongodb(cx, self)
    }

    fn tls(&self) -> Option<&TlsConfig> {
        self.external.as_ref()?.tls.as_ref()
    }
    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::MongoStore::new(cfg))))
    }
}

/// Database a managed MongoDB creates for Celery.
pub const DEFAULT_DATABASE: &str = "celery";

/// The store this family provisions in managed mode.
pub(crate) const MANAGED: Profile = crate::provision::Profile {
    store: "mongodb",
    component: "mongodb",
    default_image: "docker.io/library/mongo",
    default_version: "8.0",
    port: 27017,
    port_name: "mongodb",
    uid: 999,
    data_path: "/data/db",
    username: "celery",
    memory: "512Mi",
    read_only_root: true,
};

impl crate::provision::ManagedProfile for MongoBackend {
    const PROFILE: &'static Profile = &MANAGED;
}

impl Managed for MongoBackend {
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)> {
        self.managed.as_ref().map(|m| (&m.common, None))
    }
    fn container(&self, r: &Render) -> ContainerParts {
        ContainerParts {
            command: Value::Null,
            env: vec![
                r.username_env("MONGO_INITDB_ROOT_USERNAME"),
                r.password_env("MONGO_INITDB_ROOT_PASSWORD"),
                json!({"name": "MONGO_INITDB_DATABASE", "value": DEFAULT_DATABASE}),
            ],
            readiness: json!({"exec": {"command": ["mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"]}}),
            post_start: None,
            scratch: vec![],
        }
    }
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec) {
        out.mongodb = Some(MongoBackend {
            external: Some(MongoExternal {
                hosts: vec![HostPort {
                    host: r.host.clone(),
                    port: Some(r.profile.port),
                }],
                database: Some(DEFAULT_DATABASE.into()),
                auth: Some(r.auth(true)),
                auth_source: Some("admin".into()),
                ..Default::default()
            }),
            managed: None,
            taskmeta_collection: self.taskmeta_collection.clone(),
            groupmeta_collection: self.groupmeta_collection.clone(),
        });
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "mongodb",
            "mongodb://celery:mongo%2Bpw%401@127.0.0.1:27017/celery?authSource=admin",
        )]);
    }
}
