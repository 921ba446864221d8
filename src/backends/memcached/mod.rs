//! memcached through Celery's cache backend (`cache+memcached://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn cache(cx: &mut Ctx, spec: &CacheBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if b.servers.is_empty() {
        return Err(invalid(
            "spec.cache.external.servers",
            "at least one server is required",
        ));
    }
    let mut servers = vec![];
    for (i, s) in b.servers.iter().enumerate() {
        // Celery splits the servers at ';' only; pymemcache's normalize_server_spec reads
        // '[fd00::11]:11211' (measured: Client and HashClient connect to ('fd00::11', 11211)).
        let host = checked_host(
            &format!("spec.cache.external.servers[{i}].host"),
            &s.host,
            Ipv6Rule::Bracketed,
        )?;
        servers.push(format!("{host}:{}", s.port.unwrap_or(11211)));
    }
    cx.out.uri = format!("cache+memcached://{}/", servers.join(";"));
    cx.bind("type", "memcached");
    cx.bind("host", servers.join(","));
    Ok(())
}

impl Family for CacheBackend {
    fn secret_refs(&self, _refs: &mut SecretRefs) {}

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        cache(cx, self)
    }

    fn expires_as_ttl(&self) -> bool {
        true
    }

    fn check_result_expires(&self, secs: f64) -> Result<(), &'static str> {
        if secs > MEMCACHED_TTL_MAX_SECONDS as f64 {
            return Err(MEMCACHED_TTL_MESSAGE);
        }
        Ok(())
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::MemcachedStore::new(&cfg.uri))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[("cache", "cache+memcached://127.0.0.1:11211/")]);
    }
}
