//! Redis (`redis://`, `rediss://`, `redis+socket://`, `sentinel://`): URI and settings, following kombu and redis-py.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::provision::{ContainerParts, Managed, Profile, Render};

/// Whether a Redis query option is the builder's own, which the user must not set in
/// `spec.redis.external.options`: every `ssl` and `ssl_*` key (any case), since the tls block
/// decides TLS and one of them (`ssl_check_hostname=false`, `ssl_ca_path`, ...) could weaken it
/// behind its back, Celery's `RedisBackend._params_from_url` raises `ValueError` for `ssl_*` in a
/// `redis://` URI, and redis-py's connection refuses an unknown `ssl`; and `virtual_host`, the
/// database of `db`/`unixSocket`.
pub(crate) fn reserved_option(key: &str) -> bool {
    key.to_ascii_lowercase().starts_with("ssl") || key == "virtual_host"
}

/// The key prefix Celery really writes for `result_backend_transport_options.global_keyprefix`:
/// `_add_global_keyprefix` in celery/backends/base.py appends `_` unless the prefix already ends
/// in one of `:`, `_`, `-`, `.`; an empty prefix means none. Keys are then
/// `<prefix>celery-task-meta-<id>` and so on.
pub fn celery_key_prefix(configured: &str) -> String {
    match configured.chars().last() {
        None => String::new(),
        Some(c) if ":_-.".contains(c) => configured.to_string(),
        Some(_) => format!("{configured}_"),
    }
}

pub(crate) fn redis(cx: &mut Ctx, spec: &RedisBackend) -> Result<(), BuildError> {
    let b = spec.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.redis",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.redis.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let ui = userinfo(user.as_deref(), pw.as_deref(), component);
    let db = b.db.unwrap_or(0);
    let tls = b.tls.as_ref().filter(|t| t.enabled);
    if let Some(t) = tls {
        cx.tls(&format!("{f}.tls"), t)?;
    }
    checked_path(&format!("{f}.unixSocket"), b.unix_socket.as_ref())?;
    if let Some(k) = b.options.keys().find(|k| reserved_option(k)) {
        return Err(invalid(
            &format!("{f}.options.{k}"),
            "ssl, ssl_* and virtual_host are set by the operator from tls, db or unixSocket: use those fields (an ssl option could weaken what tls asks for, and Celery refuses ssl_* in a redis:// URI)",
        ));
    }
    let mut q: Vec<(&str, String)> = b
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut transport = serde_json::Map::new();
    if let Some(p) = &b.key_prefix {
        transport.insert("global_keyprefix".into(), json!(p));
    }
    cx.bind("type", "redis");
    cx.bind("database", db);
    if let Some(socket) = &b.unix_socket {
        if tls.is_some() {
            return Err(invalid(
                &format!("{f}.tls"),
                "tls cannot be used with unixSocket",
            ));
        }
        q.push(("virtual_host", db.to_string()));
        cx.out.uri = format!("redis+socket://{ui}{}{}", encode::path(socket), query(q));
        cx.bind_credentials(&user, &pw);
    } else if let Some(s) = &b.sentinel {
        if s.hosts.is_empty() {
            return Err(invalid(
                &format!("{f}.sentinel.hosts"),
                "at least one Sentinel is required",
            ));
        }
        let qs = query(q);
        let mut uris = vec![];
        for (i, h) in s.hosts.iter().enumerate() {
            // Celery hands each Sentinel to redis-py as a (host, port) tuple: IPv6 works.
            let host = checked_host(
                &format!("{f}.sentinel.hosts[{i}].host"),
                &h.host,
                Ipv6Rule::Bracketed,
            )?;
            uris.push(format!(
                "sentinel://{ui}{host}:{}/{db}{qs}",
                h.port.unwrap_or(26379)
            ));
        }
        cx.out.uri = uris.join(";");
        transport.insert("master_name".into(), json!(s.master_name));
        let mut sentinel_kwargs = serde_json::Map::new();
        if let Some(sp) = cx.opt_secret(
            &format!("{f}.sentinel.sentinelPasswordSecretRef"),
            &s.sentinel_password_secret_ref,
        )? {
            sentinel_kwargs.insert("password".into(), json!(sp));
        }
        if s.tls == Some(true) && tls.is_none() {
            return Err(invalid(
                &format!("{f}.sentinel.tls"),
                "needs tls.enabled: the Sentinels use the same TLS settings as the master",
            ));
        }
        if let Some(t) = tls {
            let mut ssl = serde_json::Map::new();
            ssl.insert("ssl_cert_reqs".into(), json!(tls_reqs(t.verify)));
            let (cert, key) = t.client_paths();
            for (k, v) in [
                ("ssl_ca_certs", t.ca_path()),
                ("ssl_certfile", cert),
                ("ssl_keyfile", key),
            ] {
                if let Some(v) = v {
                    ssl.insert(k.into(), json!(v));
                }
            }
            // Celery hands sentinel_kwargs to redis-py's Sentinel connections: without ssl there
            // the master is reached over TLS but the Sentinels in clear (celery.backends.redis
            // SentinelBackend._get_sentinel_instance).
            if s.tls == Some(false) {
                cx.warn(format!(
                    "{f}.sentinel.tls is false: the Sentinel connections{} travel in clear; only the master connection uses TLS",
                    if sentinel_kwargs.contains_key("password") { " and the Sentinel password" } else { "" }
                ));
            } else {
                sentinel_kwargs.insert("ssl".into(), json!(true));
                sentinel_kwargs.extend(ssl.clone());
            }
            cx.set("redis_backend_use_ssl", Value::Object(ssl));
        }
        if !sentinel_kwargs.is_empty() {
            transport.insert("sentinel_kwargs".into(), Value::Object(sentinel_kwargs));
        }
        cx.bind("sentinel_master", &s.master_name);
        cx.bind_credentials(&user, &pw);
    } else {
        let host = b
            .host
            .as_deref()
            .ok_or_else(|| invalid(f, "set exactly one of host, sentinel or unixSocket"))?;
        // redis-py connects to the host kombu unbrackets: IPv6 works.
        let uri_host = checked_host(&format!("{f}.host"), host, Ipv6Rule::Bracketed)?;
        let port = b.port.unwrap_or(6379);
        let scheme = if let Some(t) = tls {
            q.push(("ssl_cert_reqs", tls_reqs(t.verify).to_string()));
            let (cert, key) = t.client_paths();
            for (k, v) in [
                ("ssl_ca_certs", t.ca_path()),
                ("ssl_certfile", cert),
                ("ssl_keyfile", key),
            ] {
                if let Some(v) = v {
                    // Decoded twice: by parse_qsl in kombu's url_to_parts, then by unquote in
                    // RedisBackend._params_from_url (celery/backends/redis.py), so encode twice
                    // ('/etc/ca%20x.pem' otherwise arrives as '/etc/ca x.pem').
                    q.push((k, component(&v)));
                }
            }
            "rediss"
        } else {
            "redis"
        };
        cx.out.uri = format!("{scheme}://{ui}{uri_host}:{port}/{db}{}", query(q));
        cx.bind_endpoint(host, port, &user, &pw);
        cx.bind("ssl", tls.is_some());
    }
    if !transport.is_empty() {
        cx.set("result_backend_transport_options", Value::Object(transport));
    }
    Ok(())
}

impl Family for RedisBackend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    /// Sentinel: TLS to the master is `redis_backend_use_ssl`, to the Sentinels `sentinel_kwargs`
    /// (`sentinel://` URIs carry neither).
    fn tls_in_settings(&self) -> Option<&'static str> {
        self.external
            .as_ref()
            .is_some_and(|e| e.sentinel.is_some() && e.tls.as_ref().is_some_and(|t| t.enabled))
            .then_some("redis_backend_use_ssl and result_backend_transport_options.sentinel_kwargs")
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.auth("spec.redis.external.auth", &e.auth);
            refs.tls("spec.redis.external.tls", &e.tls);
            if let Some(s) = &e.sentinel {
                refs.one(
                    "spec.redis.external.sentinel.sentinelPasswordSecretRef",
                    &s.sentinel_password_secret_ref,
                );
            }
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        redis(cx, self)
    }

    fn tls(&self) -> Option<&TlsConfig> {
        self.external.as_ref()?.tls.as_ref()
    }
    fn expires_as_ttl(&self) -> bool {
        true
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::RedisStore::new(
            cfg,
            result_expires_set,
        ))))
    }
}

/// The store this family provisions in managed mode.
pub(crate) const MANAGED: Profile = crate::provision::Profile {
    store: "redis",
    component: "redis",
    default_image: "docker.io/library/redis",
    default_version: "7.4",
    port: 6379,
    port_name: "redis",
    uid: 999,
    data_path: "/data",
    username: "default",
    memory: "128Mi",
    read_only_root: true,
};

impl crate::provision::ManagedProfile for RedisBackend {
    const PROFILE: &'static Profile = &MANAGED;
}

impl Managed for RedisBackend {
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)> {
        self.managed.as_ref().map(|m| (&m.common, None))
    }
    fn container(&self, r: &Render) -> ContainerParts {
        ContainerParts {
            command: json!([
                "sh",
                "-c",
                "exec redis-server --dir /data --appendonly yes --requirepass \"$REDIS_PASSWORD\""
            ]),
            env: vec![r.password_env("REDIS_PASSWORD")],
            readiness: json!({"exec": {"command": ["sh", "-c", "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli ping | grep -q PONG"]}}),
            post_start: None,
            scratch: vec![],
        }
    }
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec) {
        out.redis = Some(RedisBackend {
            external: Some(RedisExternal {
                host: Some(r.host.clone()),
                port: Some(r.profile.port),
                db: Some(0),
                auth: Some(r.auth(false)),
                ..Default::default()
            }),
            managed: None,
        });
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn key_prefix_follows_celery_add_global_keyprefix() {
        for (configured, effective) in [
            ("", ""),
            ("team-a:", "team-a:"),
            ("team-a_", "team-a_"),
            ("team-a-", "team-a-"),
            ("team-a.", "team-a."),
            ("team-a", "team-a_"),
            ("team/a", "team/a_"),
            ("é", "é_"),
        ] {
            assert_eq!(celery_key_prefix(configured), effective, "{configured:?}");
        }
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[
            ("redis-sentinel", "sentinel://:master%20pw@sentinel-0.sentinel:26379/1;sentinel://:master%20pw@sentinel-1.sentinel:26379/1"),
            ("redis-tls", "rediss://celery:s3cr3t%2Fwith%2Bplus@redis.example.internal:6380/0?ssl_cert_reqs=required&ssl_ca_certs=%252Fetc%252Fssl%252Fredis%252Fca.crt"),
            ("redis", "redis://:p%40ss%3Aw%2Frd%23%3F%25%20%2B%26@127.0.0.1:6379/2"),
        ]);
    }
}
